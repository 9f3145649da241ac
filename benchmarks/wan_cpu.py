"""CPU cost of the WAN proxy (:mod:`benchmarks.wan`) per GB relayed, on loopback.

``--links`` proxy links each carry one full-duplex TCP connection: a peer process on each
end sends ``--mb`` MB and reads the ``--mb`` MB the other end sends (``sendall`` of
``--block-kb`` blocks, default 1 MB). Every byte crosses the proxy once; the peers run in
their own processes, so the CPU measured is the proxy's alone: the CPU time (user + system,
``/proc/PID/stat``) of the process the emulator's event loop runs in (its own process, or
this one when it runs on a thread here). Each direction of a link has its own token bucket
at ``--rate-mbps`` (0: unlimited).

    .venv/bin/python -m benchmarks.wan_cpu --links 2 --mb 256 --rate-mbps 0 1000

prints one JSON line per rate: relayed GB, wall seconds, proxy CPU seconds and CPU s/GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.proc_cpu import cpu_seconds
from benchmarks.wan import WanEmulator

_PEER = r"""
import socket, sys, threading
role, port, total, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if role == "server":
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
    print(ls.getsockname()[1], flush=True)
    s, _ = ls.accept()
else:
    s = socket.create_connection(("127.0.0.1", port))
block = b"\1" * bs
def send():
    left = total
    while left > 0:
        n = min(left, len(block)); s.sendall(block[:n]); left -= n
t = threading.Thread(target=send); t.start()
got = 0
buf = bytearray(1 << 20)
while got < total:
    n = s.recv_into(buf)
    if not n:
        break
    got += n
t.join()
s.close()
print(got, flush=True)
"""


def run(links: int, mb: int, rate_mbps: float, block_kb: int = 1024) -> dict:
    """Relay ``links`` x 2 x ``mb`` MB through ``links`` proxy links; the proxy's CPU per GB."""
    total = mb << 20
    rate = rate_mbps * 1e6 if rate_mbps > 0 else None
    with WanEmulator() as wan:
        pid = getattr(wan, "pid", None) or os.getpid()
        servers, clients = [], []
        for _ in range(links):
            sv = subprocess.Popen([sys.executable, "-c", _PEER, "server", "0", str(total), str(block_kb << 10)],
                                  stdout=subprocess.PIPE, text=True)
            port = int(sv.stdout.readline())
            servers.append(sv)
            clients.append(wan.add_link(("127.0.0.1", port), 0.0, rate_bps=rate))
        time.sleep(0.2)
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _PEER, "client", str(p), str(total), str(block_kb << 10)],
                                  stdout=subprocess.PIPE, text=True) for p in clients]
        got = [int(p.communicate()[0]) for p in procs + servers]
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    assert got == [total] * (2 * links), got
    gb = 2 * links * total / 1e9
    return {"rate_mbps_per_direction": rate_mbps or None, "links": links, "block_kb": block_kb,
            "relayed_gb": round(gb, 3), "wall_s": round(wall, 3), "proxy_cpu_s": round(cpu, 3),
            "proxy_cpu_s_per_gb": round(cpu / gb, 3),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--links", type=int, default=2, help="proxy links, one full-duplex connection each")
    ap.add_argument("--mb", type=int, default=256, help="MB sent by each end of each connection")
    ap.add_argument("--rate-mbps", type=float, nargs="+", default=[0.0, 1000.0],
                    help="rate of each direction's token bucket, Mbit/s (0: unlimited)")
    ap.add_argument("--block-kb", type=int, default=1024, help="size of each send() of the peers, KB")
    a = ap.parse_args(argv)
    for r in a.rate_mbps:
        print(json.dumps(run(a.links, a.mb, r, a.block_kb)), flush=True)


if __name__ == "__main__":
    main()
