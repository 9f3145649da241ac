"""Benchmark of the MPC core, three parties in-process, against CrypTen in the same run.

``python -m benchmarks.core --json`` prints one final JSON line with ``mul_per_s``,
``comparisons_per_s``, ``matmul_1x128x100000_s``, the rounds and bytes per party of one
comparison batch, and CrypTen's throughput for the same multiplications and comparisons
(3 processes over gloo on loopback, ``benchmarks/crypten_shim.py``).

Method: each measurement runs the protocol on ``n`` elements in one vectorised call,
``--repeat`` times after one warm-up call (the first call pays for fresh memory pages);
the median is reported. Each party thread uses one torch thread (3 parties, 2 cores),
and the allocator is tuned (``protocols/tuning.py``) as the servers do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from protocols import arithmetic as A
from protocols import compare as C
from protocols.comm import CommStats
from protocols.party import Party
from protocols.sharing import from_pair, share, share_fixed
from protocols.simulate import make_parties, run_parties
from protocols.tuning import tune_allocator


def _timed_party_op(
    op: Callable[..., Any], inputs: list[torch.Tensor], frac_bits: list[int], repeat: int
) -> tuple[float, CommStats]:
    """Median wall time of ``op`` on the three parties, and party 0's cost of one call."""
    pairs = [share_fixed(x) if f else share(x) for x, f in zip(inputs, frac_bits)]
    parties = make_parties()

    def body(p: Party, *prs: Any) -> tuple[list[float], CommStats]:
        torch.set_num_threads(1)
        args = [from_pair(p, pr, f) for pr, f in zip(prs, frac_bits)]
        op(*args)  # warm-up
        times = []
        cost = None
        for _ in range(repeat):
            before = p.comm.stats.snapshot()
            t0 = time.perf_counter()
            op(*args)
            times.append(time.perf_counter() - t0)
            cost = p.comm.stats.snapshot() - before
        return times, cost

    per_party = [[pr[i] for pr in pairs] for i in range(3)]
    res = run_parties(body, per_party, parties=parties)
    walls = [max(res[i][0][r] for i in range(3)) for r in range(repeat)]
    return statistics.median(walls), res[0][1]


def _crypten_job(rank: int, n: int, repeat: int) -> dict[str, float]:
    """Runs inside each CrypTen process: median times of n muls and n comparisons."""
    from benchmarks.crypten_shim import import_crypten

    crypten = import_crypten()
    torch.manual_seed(0)
    x = crypten.cryptensor(torch.randn(n) * 100)
    y = crypten.cryptensor(torch.randn(n) * 100)
    out = {}
    for name, fn in (("mul", lambda: x * y), ("lt", lambda: x < y)):
        fn()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts)
    return out


def run(n: int, repeat: int, with_crypten: bool) -> dict[str, Any]:
    """Measure everything; return the result dict."""
    torch.manual_seed(0)
    x = torch.randn(n, dtype=torch.float64) * 100
    y = torch.randn(n, dtype=torch.float64) * 100
    res: dict[str, Any] = {"n": n, "repeat": repeat, "parties": 3, "transport": "in-process"}

    t_mul, c_mul = _timed_party_op(A.mul, [x, y], [16, 16], repeat)
    res["mul_per_s"] = n / t_mul
    res["mul_rounds"] = c_mul.rounds
    res["mul_bytes_per_party"] = c_mul.bytes_sent
    print(f"mul: {n} in {t_mul:.3f} s", file=sys.stderr)

    t_lt, c_lt = _timed_party_op(C.lt, [x, y], [16, 16], repeat)
    res["comparisons_per_s"] = n / t_lt
    res["rounds"] = c_lt.rounds
    res["bytes_per_party"] = c_lt.bytes_sent
    res["comparison_batch"] = n
    print(f"lt: {n} in {t_lt:.3f} s ({c_lt.rounds} rounds)", file=sys.stderr)

    t_relu, c_relu = _timed_party_op(C.relu, [x], [16], repeat)
    res["relu_per_s"] = n / t_relu
    res["relu_rounds"] = c_relu.rounds

    q = torch.randn(1, 128, dtype=torch.float64)
    db = torch.randn(128, 100_000, dtype=torch.float64)
    t_mm, c_mm = _timed_party_op(A.matmul, [q, db], [16, 16], repeat)
    res["matmul_1x128x100000_s"] = t_mm
    res["matmul_bytes_per_party"] = c_mm.bytes_sent
    print(f"matmul 1x128x100000: {t_mm:.3f} s", file=sys.stderr)

    if with_crypten:
        from benchmarks.crypten_shim import available, run_crypten

        if available():
            cr = run_crypten(_crypten_job, n, repeat)
            res["crypten_mul_per_s"] = n / cr["mul"]
            res["crypten_comparisons_per_s"] = n / cr["lt"]
            res["speedup_comparisons_vs_crypten"] = res["comparisons_per_s"] / res["crypten_comparisons_per_s"]
            res["speedup_mul_vs_crypten"] = res["mul_per_s"] / res["crypten_mul_per_s"]
            print(f"crypten: mul {cr['mul']:.3f} s, lt {cr['lt']:.3f} s", file=sys.stderr)
        else:
            res["crypten_error"] = "crypten not installed (bash scripts/setup.sh --bench)"
    res["goal_comparisons_per_s"] = 1_000_000
    res["goal_met_comparisons"] = res["comparisons_per_s"] >= 1_000_000
    if "speedup_comparisons_vs_crypten" in res:
        res["goal_met_10x_crypten"] = res["speedup_comparisons_vs_crypten"] >= 10
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one final JSON line (default: a table too)")
    ap.add_argument("-n", type=int, default=1_000_000, help="elements per vectorised call (default 1e6)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions after one warm-up")
    ap.add_argument("--no-crypten", action="store_true", help="skip the CrypTen comparison")
    args = ap.parse_args(argv)
    tune_allocator()
    res = run(args.n, args.repeat, not args.no_crypten)
    if not args.json:
        for k, v in res.items():
            print(f"{k:32s} {v:,.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
