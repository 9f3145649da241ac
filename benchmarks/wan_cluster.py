"""A ``LocalCluster`` whose server-to-server links go through :mod:`benchmarks.wan`, and
concurrent clients against it (used by ``benchmarks.e2e``).

Topology: one proxy per ORDERED link i -> j (server i reaches server j at the proxy's
port, written as ``peer_addresses`` into the cluster TOML; clients reach the servers
directly). Server i's messages to j travel on i's own gRPC stream to j, i.e. forward
through proxy i -> j; j's messages to i through proxy j -> i. Every directed message thus
crosses exactly one proxy: one one-way delay (RTT / 2), and a ping-pong between two
servers takes the RTT. Rate: one token bucket per server for everything it sends (the
forward direction of its links and the return direction of its peers' links to it).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.wan import Bucket, WanEmulator


def wan_cluster(root: Path, wan: WanEmulator, bandwidth_mbps: float | None, max_sessions: int, **kw):
    """A ``LocalCluster`` whose servers reach each other through six proxy links of ``wan``."""
    from client.local_cluster import LocalCluster

    rate = None if bandwidth_mbps is None else bandwidth_mbps * 1e6
    egress = [wan.bucket(rate) for _ in range(3)]
    links: dict[tuple[int, int], int] = {}
    for i in range(3):
        for j in range(3):
            if i != j:  # forward: i's bytes (i's egress); backward: j's bytes (j's egress)
                links[(i, j)] = wan.add_link(("127.0.0.1", 0), 0.0, bucket=egress[i], reverse_bucket=egress[j])
    by_port = {lk.port: lk for lk in wan.links}

    class WanCluster(LocalCluster):
        def _write_configs(self, ports: list[int]) -> None:
            super()._write_configs(ports)
            for (_, j), p in links.items():
                by_port[p].upstream = ("127.0.0.1", ports[j])
            text = f"max_sessions = {max_sessions}\n" + self.config_path.read_text()
            self.direct_text = text
            for i in range(3):
                peers = ", ".join(f'"{j}" = "127.0.0.1:{links[(i, j)]}"' for j in range(3) if j != i)
                text = text.replace(f"[servers.{i}]\n", f"[servers.{i}]\npeer_addresses = {{ {peers} }}\n", 1)
            self.proxy_text = text
            self.config_path.write_text(text)

        def restart(self, via_proxy: bool) -> None:
            """Restart the servers with peer links through the proxies or direct (same ports, same data)."""
            self.stop()
            self.config_path.write_text(self.proxy_text if via_proxy else self.direct_text)
            self.start()

    return WanCluster(root, **kw)


def concurrent_queries(config: Path, images: list[np.ndarray], level: int, k: int, nprobe: int,
                       max_attempts: int = 5, exact: list[set[int]] | None = None) -> dict:
    """``level`` clients each run one query at the same time; queries/s and latencies.

    A failed query (e.g. refused: the servers run ``max_sessions`` at most) is retried up to
    ``max_attempts`` times after a short pause; retries and failures are reported. Client j
    queries ``images[j % len(images)]``; with ``exact`` (the exact top-k ids of each image)
    the line also has the recall@k of the answered queries against it."""
    from client.sdk import Client

    clients = [Client(config, progress=False) for _ in range(level)]
    lat: list[float] = [0.0] * level
    hits: list[float | None] = [None] * level
    retries = [0] * level
    errors: list[str] = []
    go = threading.Barrier(level)

    def run(j: int) -> None:
        go.wait()
        t0 = time.perf_counter()
        for attempt in range(max_attempts):
            try:
                _, ids = clients[j].search(images[j % len(images)], k=k, nprobe=nprobe)
                lat[j] = time.perf_counter() - t0
                if exact is not None:
                    hits[j] = len({int(i) for i in ids[0] if i >= 0} & exact[j % len(images)]) / k
                return
            except Exception as exc:  # noqa: BLE001 - a refused session (server busy) is retried
                retries[j] += 1
                if attempt == max_attempts - 1:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                time.sleep(0.5 * (1 + attempt))

    threads = [threading.Thread(target=run, args=(j,)) for j in range(level)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for cl in clients:
        cl.close()
    done = sum(1 for x in lat if x > 0)
    out = {"clients": level, "queries": done, "wall_s": round(wall, 3), "queries_per_s": round(done / wall, 4),
           "latency_mean_s": round(float(np.mean([x for x in lat if x > 0])), 3) if done else None,
           "latency_max_s": round(max(lat), 3), "retries": sum(retries), "failed": level - done,
           "errors": errors[:3]}
    if exact is not None:
        got = [h for h in hits if h is not None]
        out[f"recall_at_{k}_vs_exact"] = round(float(np.mean(got)), 4) if got else None
        out["distinct_query_images"] = min(level, len(images))
    return out


def egress_buckets(wan: WanEmulator) -> list[Bucket]:
    """The three servers' egress buckets (forward buckets of links 0->1, 1->0, 2->0)."""
    fwd = {}
    for lk in wan.links:
        fwd.setdefault(id(lk.bucket_forward), lk.bucket_forward)
    return list(fwd.values())
