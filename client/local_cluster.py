"""Start and stop three local server processes on 127.0.0.1 (``trivault up``, demo, tests).

``LocalCluster(root)`` makes certificates (once), picks free ephemeral ports, writes
``cluster.toml`` (servers) and ``client.toml`` (SDK), and runs
``python -m servers --id i --config cluster.toml`` for i = 0, 1, 2 with logs in
``root/logs``. Servers can be killed (SIGKILL) and restarted on the same port.

``security`` is the servers' ``[security] mode`` (``servers.config``: ``"malicious"`` or
``"semi_honest"``); None writes ``wire.security_mode.DEFAULT_SECURITY_MODE``, the deployment default.
``query_timeout_s`` (the SDK's RPC timeout) None: 60 s, or :data:`MALICIOUS_QUERY_TIMEOUT_S` in malicious
mode (the checked CNN of the default model takes minutes).

``root/servers.pid`` records the running servers' process ids (``trivault up --detach``,
``status`` and ``down`` read it); starting all three while another set runs from the same
folder raises :class:`ClusterRunning`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from wire.security_mode import DEFAULT_SECURITY_MODE, security_mode

from .certs import make_deployment

QUERY_TIMEOUT_S = 60.0
MALICIOUS_QUERY_TIMEOUT_S = 900.0
"""The SDK's timeout written for a malicious-mode cluster: an image query of the default 96 px model was
measured at 194 s with three in-process parties on 2 cores (docs/SECURITY.md)."""

REPO_ROOT = Path(__file__).resolve().parents[1]


PID_FILE = "servers.pid"


class PortInUse(RuntimeError):
    """A server could not bind its configured port."""


class ClusterRunning(RuntimeError):
    """Servers started from this cluster folder are still running."""


def _is_server(pid: int, config_path: Path) -> bool:
    """True if ``pid`` is alive and is a server started with ``config_path``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid
    return str(config_path) in cmd


def running_servers(root: str | Path) -> dict[int, int]:
    """Server id -> pid of the servers started from ``root`` that are still alive."""
    root = Path(root).resolve()
    try:
        pids = {int(k): int(v) for k, v in json.loads((root / PID_FILE).read_text()).items()}
    except (OSError, ValueError):
        return {}
    return {i: p for i, p in pids.items() if _is_server(p, root / "cluster.toml")}


def stop_servers(root: str | Path, timeout_s: float = 15.0) -> dict[int, int]:
    """SIGTERM the servers recorded in ``root``'s pid file (SIGKILL after ``timeout_s``); removes it.
    Returns the server ids and pids that were running."""
    root = Path(root).resolve()
    alive = running_servers(root)
    for pid in alive.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_is_server(p, root / "cluster.toml") for p in alive.values()):
        time.sleep(0.1)
    for pid in alive.values():
        if _is_server(pid, root / "cluster.toml"):
            os.kill(pid, signal.SIGKILL)
    (root / PID_FILE).unlink(missing_ok=True)
    return alive


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (ephemeral range)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """Three ``python -m servers`` processes sharing one certificate directory."""

    def __init__(self, root: str | Path, txn_timeout_s: float = 60.0, peer_timeout_s: float = 30.0,
                 query_timeout_s: float | None = None, env: dict[str, str] | None = None,
                 security: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.security = security_mode(security or DEFAULT_SECURITY_MODE, "security")
        self.certs = make_deployment(self.root / "certs", clients=("owner", "querier"))
        self.txn_timeout_s = txn_timeout_s
        self.procs: dict[int, subprocess.Popen] = {}
        self.env = env or {}
        # per server id, a command that replaces ``python -m servers`` (tests start a corrupted server)
        self.commands: dict[int, list[str]] = {}
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "cluster.toml"
        self._timeouts = (peer_timeout_s, query_timeout_s)
        self._fresh = not self.config_path.exists()  # ports may still move until the first start
        if self._fresh:
            self._write_configs([free_port() for _ in range(3)])
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10
                import tomli as tomllib

            raw = tomllib.loads(self.config_path.read_text())
            self.ports = [int(raw["servers"][str(i)]["address"].rsplit(":", 1)[1]) for i in range(3)]
            on_file = raw.get("security", {}).get("mode", DEFAULT_SECURITY_MODE)
            if security is None:
                self.security = security_mode(on_file, f"{self.config_path}: [security] mode")
            elif on_file != self.security:
                self.set_security(self.security)  # the same ports, the mode asked for

    def set_security(self, mode: str) -> None:
        """Rewrite cluster.toml with ``[security] mode = mode`` (same ports); each server reads it
        when it next starts (a server started in between runs another mode: its peers refuse)."""
        self.security = security_mode(mode, "security")
        self._write_configs(self.ports)

    def _write_configs(self, ports: list[int]) -> None:
        """Write cluster.toml (servers) and client-<name>.toml (SDK) for ``ports``."""
        self.ports = ports
        peer_timeout_s, query_timeout_s = self._timeouts
        if query_timeout_s is None:
            query_timeout_s = MALICIOUS_QUERY_TIMEOUT_S if self.security == "malicious" else QUERY_TIMEOUT_S
        owner_pub = self.owner_identity_dir / "identity.json"
        if not owner_pub.exists():  # the deployment owner's identity; servers register it as the admin
            from .identity import Identity

            Identity.create().save(self.owner_identity_dir)
        lines = ['data_root = "data"', 'ca = "certs/ca.pem"', f"peer_timeout_s = {peer_timeout_s}",
                 f"query_timeout_s = {query_timeout_s}", f'owner_identity = "{owner_pub}"', ""]
        for i, p in enumerate(ports):
            lines += [f"[servers.{i}]", f'address = "127.0.0.1:{p}"', f'cert = "certs/server{i}.pem"',
                      f'key = "certs/server{i}.key"', ""]
        lines += ["[security]", f'mode = "{self.security}"', ""]
        self.config_path.write_text("\n".join(lines))
        addrs = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
        for name in ("owner", "querier"):
            c, k = self.certs.client(name)
            (self.root / f"client-{name}.toml").write_text(
                f'ca = "{self.certs.ca}"\ncert = "{c}"\nkey = "{k}"\nowner_dir = "{self.root / "owner"}"\n'
                f"timeout_s = {query_timeout_s}\nservers = [{addrs}]\n")

    @property
    def owner_identity_dir(self) -> Path:
        """The owner's identity directory (the SDK's default: ``owner_dir/identity``)."""
        return self.root / "owner" / "identity"

    @property
    def client_config(self) -> Path:
        """The data owner's SDK config file."""
        return self.root / "client-owner.toml"

    def start(self, i: int | None = None, timeout_s: float = 60.0) -> None:
        """Start server ``i`` (or all three) and wait until each listens.

        Free ports are picked before the servers bind them, so another process may take one
        in between: a fresh cluster then moves to new ports (up to three attempts)."""
        if i is None and (alive := running_servers(self.root)):
            raise ClusterRunning(f"servers from {self.root} are already running (pids "
                                 f"{', '.join(map(str, alive.values()))})")
        for attempt in range(3):
            try:
                self._start(i, timeout_s)
                self._fresh = False
                return
            except PortInUse:
                self.stop(i)
                if attempt == 2 or not (self._fresh and i is None):
                    raise
                self._write_configs([free_port() for _ in range(3)])

    def _start(self, i: int | None, timeout_s: float) -> None:
        ids = [i] if i is not None else [0, 1, 2]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env)
        for j in ids:
            log = self.log_path(j)
            with open(log, "ab") as f:
                f.write(f"--- start {time.time():.3f}\n".encode())
                self.procs[j] = subprocess.Popen(
                    self.commands.get(j, [sys.executable, "-m", "servers"])
                    + ["--id", str(j), "--config", str(self.config_path), "--txn-timeout", str(self.txn_timeout_s)],
                    stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env, start_new_session=True)
        self._write_pids()
        for j in ids:
            self._wait_ready(j, timeout_s)

    def _write_pids(self) -> None:
        pids = {str(j): p.pid for j, p in self.procs.items() if p.poll() is None}
        tmp = self.root / (PID_FILE + ".tmp")
        tmp.write_text(json.dumps(pids))
        os.replace(tmp, self.root / PID_FILE)

    def log_path(self, i: int) -> Path:
        """Server ``i``'s log file."""
        return self.root / "logs" / f"server{i}.log"

    def _wait_ready(self, i: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        log = self.log_path(i)
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            last = text.rsplit("--- start", 1)[-1]
            if "TRIVAULT_READY" in last:
                return
            if self.procs[i].poll() is not None:
                if "Failed to bind" in last:
                    raise PortInUse(f"server {i}: port {self.ports[i]} is taken")
                raise RuntimeError(f"server {i} exited with code {self.procs[i].returncode}:\n{last[-2000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"server {i} did not become ready within {timeout_s} s")

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (simulates a crash)."""
        p = self.procs.get(i)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def pause(self, i: int) -> None:
        """SIGSTOP server ``i`` (a hung peer)."""
        self.procs[i].send_signal(signal.SIGSTOP)

    def stop(self, i: int | None = None, timeout_s: float = 15.0) -> None:
        """Stop server ``i`` (or all) gracefully with SIGTERM, SIGKILL if it does not exit."""
        ids = [i] if i is not None else list(self.procs)
        for j in ids:
            p = self.procs.get(j)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for j in ids:
            p = self.procs.get(j)
            if p is None:
                continue
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait(5)
        if not any(p.poll() is None for p in self.procs.values()):
            (self.root / PID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
