"""Server configuration: a TOML file (``python -m servers --id N --config FILE``).

Example::

    data_root = "/var/lib/trivault"        # server i uses data_root/server{i}
    ca = "certs/ca.pem"
    query_timeout_s = 60
    owner_identity = "owner.json"          # optional: the owner's public identity (else first use)
    [servers.0]
    listen = "127.0.0.1:50051"
    address = "127.0.0.1:50051"              # how peers and clients reach it
    peer_addresses = { "1" = "127.0.0.1:60001" }  # optional: how THIS server reaches a peer
                                           # (overrides that peer's address, e.g. via a WAN proxy)
    cert = "certs/server0.pem"
    key = "certs/server0.key"
    [shards]                               # optional: this server as a Ray cluster (servers.shards)
    workers = 2                            # shard actors holding the IVF buckets (0: in-process, default)
    address = "ray://ray-head0:10001"      # optional: join this trust domain's Ray cluster instead
    timeout_s = 30                         # bound on every call to a shard
    worker_cpus = 1                        # CPUs each shard actor reserves
    [security]                             # optional
    mode = "semi_honest"                   # or "malicious" (see SECURITY_MODES, DEFAULT_SECURITY_MODE)

``[shards]`` applies to every server of the file; a ``[servers.i.shards]`` table overrides
it for server ``i`` (each server runs or joins its own Ray cluster, never a peer's).

``[security] mode`` chooses the query protocol of the whole deployment (all three servers must
use the same mode: each refuses a search whose client expects another, and the client checks
that the three agree before it sends a query):

* ``"semi_honest"``: the fast protocol (``protocols.nn`` / ``protocols.search``); secure against
  one server that follows the protocol but looks at everything it sees. A corrupted message
  inside the query can change the result undetected (docs/SECURITY.md).
* ``"malicious"``: security with abort against one deviating server. Every product and AND gate
  of the query is recorded (``protocols.dzk.ProductLog``) and proved (``verify_products``) before
  any result share leaves a server; a failed proof aborts the query at every honest server and
  the client is told which server pair disagreed (``client.errors.MaliciousServerError``).

:data:`DEFAULT_SECURITY_MODE` is the mode of a config without ``[security]`` and of the configs
``client.local_cluster`` writes (``trivault up``, demo, tests). Issue 14 wants ``"malicious"``
for deployments; it is ``"semi_honest"`` for now because the checked CNN is about a hundred times
slower than the semi-honest one: at the default 96 px model, 194 s against 1.7 s with three in-process
parties on 2 cores (docs/SECURITY.md), too slow for a default deployment's interactive queries. A
malicious-mode server runs image queries to models up to :data:`MALICIOUS_MAX_IMAGE_SIDE` px,
:data:`MALICIOUS_IMAGE_SESSIONS` at a time (memory), and refuses larger models (before they run for
tens of minutes); its clients need a timeout of minutes (``client.local_cluster`` writes 900 s in
malicious mode). Benchmarks and tests that need speed pass ``"semi_honest"``.

Relative paths are resolved against the config file's directory. Environment variables
``TRIVAULT_DATA_ROOT`` and ``TRIVAULT_LISTEN`` override the matching entries (containers).
"""

from __future__ import annotations

import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path

from wire.security_mode import DEFAULT_SECURITY_MODE, security_mode
from wire.security_mode import SECURITY_MODES as SECURITY_MODES  # re-exported: the config's choices

MALICIOUS_MAX_IMAGE_SIDE = 96
"""Largest model input (px) a malicious-mode server runs the checked CNN on: the default model's, measured to
finish (194 s, 18 GB for three in-process parties on 2 cores; docs/SECURITY.md)."""
MALICIOUS_IMAGE_SESSIONS = 1
"""Checked-CNN image queries a malicious-mode server runs at once (one at 96 px holds about 6 GB of proof
vectors and logs); another is refused with ``RESOURCE_EXHAUSTED`` until it ends."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything one server needs to start."""

    server_id: int
    listen: str
    data_dir: Path
    ca: Path
    cert: Path
    key: Path
    peers: dict[int, str]  # id -> address, all three servers
    query_timeout_s: float = 60.0
    peer_timeout_s: float = 30.0
    max_sessions: int = 8
    owner_identity: Path | None = None  # the deployment owner's public identity.json (ACL bootstrap)
    shard_workers: int = 0  # Ray shard actors (0: the in-process index, the default)
    ray_address: str | None = None  # an existing Ray cluster of this server's trust domain
    shard_timeout_s: float = 30.0
    shard_worker_cpus: float = 1.0
    security: str = DEFAULT_SECURITY_MODE  # "malicious" or "semi_honest" (module docstring)


def _path(base: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else (base / q).resolve()


def load_config(path: str | Path, server_id: int) -> ServerConfig:
    """Read the cluster TOML file and return server ``server_id``'s configuration."""
    path = Path(path)
    base = path.resolve().parent
    raw = tomllib.loads(path.read_text())
    servers = raw.get("servers", {})
    if server_id not in (0, 1, 2):
        raise ValueError(f"server id must be 0, 1 or 2, got {server_id}")
    if sorted(servers) != ["0", "1", "2"]:
        raise ValueError("config must define [servers.0], [servers.1] and [servers.2]")
    me = servers[str(server_id)]
    shards = dict(raw.get("shards", {})) | dict(me.get("shards", {}))
    workers = int(shards.get("workers", 0))
    if workers < 0:
        raise ValueError(f"[shards] workers must be >= 0, got {workers}")
    if shards.get("address") and workers == 0:
        raise ValueError("[shards] address needs workers >= 1 (how many shard actors to run there)")
    sec = raw.get("security", {})
    if not isinstance(sec, dict) or set(sec) - {"mode"}:
        raise ValueError('[security] takes one setting: mode = "malicious" or "semi_honest"')
    mode = security_mode(sec.get("mode", DEFAULT_SECURITY_MODE))
    if mode == "malicious" and workers:
        raise ValueError('[security] mode = "malicious" does not run on [shards] workers yet: '
                         "the checked search holds the index in the server process (set workers = 0)")
    root = os.environ.get("TRIVAULT_DATA_ROOT") or raw.get("data_root", "data")
    return ServerConfig(
        server_id=server_id,
        listen=os.environ.get("TRIVAULT_LISTEN") or me.get("listen", me["address"]),
        data_dir=_path(base, root) / f"server{server_id}",
        ca=_path(base, raw["ca"]),
        cert=_path(base, me["cert"]),
        key=_path(base, me["key"]),
        peers={int(k): v["address"] for k, v in servers.items()}
        | {int(k): str(a) for k, a in me.get("peer_addresses", {}).items()},
        query_timeout_s=float(raw.get("query_timeout_s", 60.0)),
        peer_timeout_s=float(raw.get("peer_timeout_s", 30.0)),
        max_sessions=int(raw.get("max_sessions", 8)),
        owner_identity=_path(base, raw["owner_identity"]) if raw.get("owner_identity") else None,
        shard_workers=workers,
        ray_address=str(shards["address"]) if shards.get("address") else None,
        shard_timeout_s=float(shards.get("timeout_s", 30.0)),
        shard_worker_cpus=float(shards.get("worker_cpus", 1.0)),
        security=mode,
    )
