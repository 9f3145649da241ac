"""Local servers and deployments: ``certs``, ``up`` (``--detach``), ``status``, ``down``, ``demo``."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer
from rich.table import Table

from .common import (
    JSON_OPT,
    console,
    fail,
    note,
    print_json,
    quiet_stdout,
    sdk_errors,
    user_config_path,
    warn,
)

DEFAULT_ROOT = Path("trivault-cluster")
ROOT_OPT = typer.Option(DEFAULT_ROOT, "--root", help="cluster folder (certificates, configs, data, logs, pid file)")
MARKER = "# written by `trivault up` for "


def certs(out: Path = typer.Option(Path("certs"), "--out", "-o", help="directory for the CA and certificates"),
          client: list[str] = typer.Option(["owner"], "--client", help="client certificate names"),
          dns: list[str] = typer.Option([], "--dns", help="extra DNS names for the server certificates")) -> None:
    """Certificates for a real deployment (a CA, three servers, clients), e.g. `--out docker/certs`.

    Local servers do not need this: `trivault up` makes its own in ROOT/certs."""
    from ..certs import make_deployment

    with sdk_errors():
        paths = make_deployment(out, tuple(client), tuple(dns))
    console.print(f"CA: {paths.ca}")
    for i in range(3):
        console.print(f"server {i}: {paths.server(i)[0]}")
    for c in client:
        console.print(f"client {c}: {paths.client(c)[0]}")


def install_user_config(client_config: Path) -> None:
    """Make the user config (``~/.config/trivault/client.toml``) point at this cluster, unless
    the user wrote their own there."""
    dest = user_config_path()
    if dest.exists() and not dest.read_text().startswith(MARKER):
        note(f"{dest} is your own config: left as is; use --config {client_config} for these servers")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"{MARKER}{client_config.parent}\n" + client_config.read_text())
    console.print(f"client config: {dest} (a copy of {client_config})")


def up(root: Path = ROOT_OPT,
       detach: bool = typer.Option(False, "--detach", "-d", help="return once the servers listen "
                                                                  "(stop them with `trivault down`)"),
       security: str | None = typer.Option(None, "--security", help="the query protocol: malicious (security with "
                                           "abort) or semi_honest (fast); default: the deployment default, "
                                           "or what ROOT's cluster.toml already says")) -> None:
    """Start three local servers on 127.0.0.1 (certificates made once in ROOT/certs)."""
    from ..local_cluster import ClusterRunning, LocalCluster

    try:
        lc = LocalCluster(root, security=security)
        with quiet_stdout():
            lc.start()
    except ClusterRunning as exc:
        fail(str(exc), f"stop them first with `trivault down --root {root}`, or see `trivault status --root {root}`")
    except (RuntimeError, OSError) as exc:
        fail(str(exc).splitlines()[0], f"server logs are in {Path(root) / 'logs'}")
    except ValueError as exc:
        fail(str(exc), "use --security malicious or --security semi_honest")
    console.print(f"three servers up on 127.0.0.1 ports {lc.ports} ({lc.security} mode); logs in {lc.root / 'logs'}")
    if lc.security == "malicious":
        console.print("malicious mode: every result is proved before release; an image query takes minutes (one "
                      "image per session, one session at a time), a feature query about a second (docs/SECURITY.md)")
    install_user_config(lc.client_config)
    if detach:
        console.print(f"running in the background: `trivault status` / `trivault down --root {root}`")
        return
    console.print("press Ctrl-C to stop")
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    try:
        while not stop["flag"] and all(p.poll() is None for p in lc.procs.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lc.stop()
        console.print("servers stopped")


def _health(root: Path) -> list[dict]:
    """Per server: address, pid, process alive, answering, images, index version."""
    from ..config import ClientConfig
    from ..local_cluster import running_servers
    from ..transport import Fanout

    cfg = ClientConfig.load(root / "client-owner.toml")
    alive = running_servers(root)
    fan = Fanout(cfg)
    try:
        with quiet_stdout():
            infos = fan.infos(tolerate=True)
    except Exception:  # noqa: BLE001 -- status reports, never fails on a server's answer
        infos = [None, None, None]
    finally:
        fan.close()
    rows = []
    for i in range(3):
        x = infos[i]
        rows.append({"server": i, "address": cfg.servers[i], "pid": alive.get(i), "running": i in alive,
                     "answering": x is not None,
                     "images": None if x is None else len(x["image_ids"]),
                     "index_version": None if x is None else x["index_version"]})
    return rows


def status(root: Path = ROOT_OPT, as_json: bool = JSON_OPT) -> None:
    """Each local server's health (process, answering over mTLS, images, index version).

    Exit 1 unless all three answer."""
    if not (root / "client-owner.toml").exists():
        fail(f"no cluster in {root}", "start one with `trivault up --detach` (or pass --root)")
    rows = _health(root)
    if as_json:
        print_json(rows)
    else:
        t = Table("server", "address", "pid", "process", "answering", "images", "index version")
        for r in rows:
            t.add_row(str(r["server"]), r["address"], str(r["pid"] or "-"), "running" if r["running"] else "stopped",
                      "yes" if r["answering"] else "[red]no[/red]", str(r["images"] if r["answering"] else "-"),
                      str(r["index_version"] if r["answering"] else "-"))
        console.print(t)
    if not all(r["answering"] for r in rows):
        fail("not every server answers", "start them with `trivault up --detach`; logs in "
                                         f"{root / 'logs'}")


def down(root: Path = ROOT_OPT) -> None:
    """Stop the servers `trivault up --detach` started from ROOT (SIGTERM, then SIGKILL after 15 s)."""
    from ..local_cluster import stop_servers

    stopped = stop_servers(root)
    if not stopped:
        warn(f"no running servers recorded in {root}")
        return
    console.print(f"stopped servers {sorted(stopped)} (pids {', '.join(map(str, stopped.values()))})")


def demo(root: Path | None = typer.Option(None, help="cluster directory (default: a fresh temporary one)"),
         copies: int = typer.Option(4, help="augmented copies per bundled photo"),
         queries: int = typer.Option(3, help="number of secure queries"),
         model: str = typer.Option("auto", help="auto, efficientnet or tiny"),
         resolution: int = typer.Option(64, help="model input resolution"),
         dim: int = typer.Option(32, help="feature dimension"),
         nprobe: int = typer.Option(2, help="index buckets probed per query")) -> None:
    """Start three local servers, upload bundled photos, run secure queries, retrieve one, stop."""
    from ..demo import run_demo

    with sdk_errors(quiet=False):
        run_demo(root, copies, queries, model, resolution, dim, console, nprobe)


def register_commands(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    for fn in (certs, up, status, down, demo):
        app.command()(fn)
