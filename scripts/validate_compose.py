#!/usr/bin/env python
"""Validate docker/compose.yaml's structure without a docker engine (exit 1 on any problem).

Checks: three services server0..2 built from docker/Dockerfile; each has its id in the
environment, its own named data volume at /var/lib/trivault, the shared cluster config,
the CA and ONLY its own certificate and key (read-only); ports published on 127.0.0.1
only and distinct; the cluster config parses for every id and names the services; the
Dockerfile pins torch==2.13.0 and runs ``python -m servers``. The ``ray`` profile (if
present) has one Ray head and workers per trust domain on that domain's own network, which
only that server joins, mounting only that server's data volume read-only and no key.
"""

from __future__ import annotations

import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def validate(compose_path: Path = DOCKER / "compose.yaml") -> list[str]:
    """Return a list of problems (empty when valid)."""
    import yaml

    errs: list[str] = []
    doc = yaml.safe_load(compose_path.read_text())
    services = {k: v for k, v in doc.get("services", {}).items() if not v.get("profiles")}
    if sorted(services) != ["server0", "server1", "server2"]:
        return [f"services must be server0, server1, server2; got {sorted(services)}"]
    declared = set((doc.get("volumes") or {}).keys())
    cfg = tomllib.loads((compose_path.parent / "cluster.toml").read_text())
    host_ports, data_vols = set(), set()
    for i in range(3):
        name = f"server{i}"
        s = services[name]
        b = s.get("build", {})
        if b.get("dockerfile") != "docker/Dockerfile" or not (compose_path.parent / b.get("context", ".")).is_dir():
            errs.append(f"{name}: must build docker/Dockerfile from the repository root")
        if str((s.get("environment") or {}).get("TRIVAULT_SERVER_ID")) != str(i):
            errs.append(f"{name}: TRIVAULT_SERVER_ID must be {i}")
        mounts = {}
        for v in s.get("volumes", []):
            parts = v.split(":")
            mounts[parts[1]] = (parts[0], parts[2:] == ["ro"])
        src = mounts.get("/var/lib/trivault", (None, False))[0]
        if src not in declared:
            errs.append(f"{name}: /var/lib/trivault must be a declared named volume, got {src}")
        data_vols.add(src)
        want = {"/etc/trivault/cluster.toml", "/etc/trivault/certs/ca.pem", f"/etc/trivault/certs/{name}.pem",
                f"/etc/trivault/certs/{name}.key"}
        for target in want:
            if target not in mounts or not mounts[target][1]:
                errs.append(f"{name}: needs a read-only mount at {target}")
        for target, (source, _) in mounts.items():
            if target.endswith(".key") and not target.endswith(f"{name}.key"):
                errs.append(f"{name}: must not mount another server's key ({target})")
            if source.endswith(".key") and Path(source).stem != name:
                errs.append(f"{name}: mounts a foreign key file {source}")
        for p in s.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                errs.append(f"{name}: port {p} must be published on 127.0.0.1 only")
            host_ports.add(str(p).split(":")[1])
        me = cfg["servers"][str(i)]
        if me["address"].split(":")[0] != name:
            errs.append(f"cluster.toml: servers.{i}.address must name the service {name}")
        for key in ("cert", "key"):
            if me[key] not in mounts:
                errs.append(f"cluster.toml: servers.{i}.{key} {me[key]} is not mounted in {name}")
    if len(host_ports) != 3:
        errs.append(f"host ports must be distinct, got {sorted(host_ports)}")
    if len(data_vols) != 3:
        errs.append("each server needs its own data volume")
    errs += validate_ray_profile(doc)
    df = (DOCKER / "Dockerfile").read_text()
    if "torch==2.13.0" not in df or "python -m servers" not in df:
        errs.append("Dockerfile must pin torch==2.13.0 and run python -m servers")
    return errs


def validate_ray_profile(doc: dict) -> list[str]:
    """Problems of the ``ray`` profile: three separate Ray clusters, one per server."""
    ray = {k: v for k, v in doc.get("services", {}).items() if "ray" in (v.get("profiles") or [])}
    if not ray:
        return []
    errs: list[str] = []
    for i in range(3):
        mine = {k: v for k, v in ray.items() if k.endswith(str(i))}
        if f"ray-head{i}" not in mine or not any(k.startswith("ray-worker") for k in mine):
            errs.append(f"ray profile: trust domain {i} needs ray-head{i} and a ray-worker{i}")
        if f"ray{i}" not in (doc["services"][f"server{i}"].get("networks") or []):
            errs.append(f"server{i}: must join its Ray network ray{i}")
        for j in range(3):
            if j != i and f"ray{j}" in (doc["services"][f"server{i}"].get("networks") or []):
                errs.append(f"server{i}: must not join another domain's Ray network ray{j}")
        for name, s in mine.items():
            if (s.get("networks") or []) != [f"ray{i}"]:
                errs.append(f"{name}: must be on network ray{i} only (one Ray cluster per server)")
            for v in s.get("volumes", []):
                src, _, rest = v.partition(":")
                if src != f"server{i}-data" or not rest.endswith(":ro"):
                    errs.append(f"{name}: may mount only server{i}-data, read-only (got {v})")
    return errs


def main() -> int:
    """CLI entry point."""
    errs = validate(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCKER / "compose.yaml")
    for e in errs:
        print(f"compose: {e}", file=sys.stderr)
    if not errs:
        print("compose.yaml: OK (3 servers, own volumes, own certificates, loopback ports)")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
