"""Security benchmark: one corrupted server against three real server processes.

``python -m benchmarks.security --json [--runs 3] [--images 24]`` starts a local cluster
(mutual TLS, 127.0.0.1), registers a small seeded CNN, uploads bundled sample photos, runs
one honest query to get the reference ids, then for every fault class restarts server 1 as
the corrupted server of ``tests/integration/faulty_server.py`` (test-only code, used here
as the attacker) and runs ``--runs`` queries. One JSON line per class::

    {"line": "fault", "attack": "add", "step": "topk", "runs": 3, "detected": 0,
     "named": 0, "wrong_results": 3, "no_effect": 0, "seconds": ...}

``detected``: the query failed (server error or the client's checked reconstruction);
``named``: the error names server 1 (or lists it as a suspect); ``wrong_results``: the query
returned ids that differ from the honest run without any error; ``no_effect``: same ids,
no error. Message-level classes (drop, replay) are caught by the peer transport; value
classes (add, flip, foreign) inside the protocols are caught only where they reach the
output unmixed (the protocols are semi-honest: no multiplication is verified), so
``detected < runs`` there is the honest figure, not a failure of this benchmark.

A final line (``"line": "modes"``) compares semi-honest and malicious query time and bytes
for the same query; there is no malicious server mode yet, so its malicious fields are
``null`` with the reason. The first line (``"line": "verified_mul"``) measures the one
verified building block that exists, ``protocols.verify.verified_mul``, against the
semi-honest product on ``--verify-n`` elements (three in-process parties: time, rounds,
bytes per party). Not a test: nothing is asserted. The machine is shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from client.local_cluster import LocalCluster
from client.sdk import Client
from tests.integration.conftest import small_images, tiny_model  # the integration tests' model and images

FAULTY = Path(__file__).resolve().parents[1] / "tests" / "integration" / "faulty_server.py"
STEPS = ("cnn", "distances", "fetch", "topk")
KINDS = ("add", "flip", "drop", "replay", "foreign")
CORRUPT = 1  # the corrupted server


def restart(lc: LocalCluster, fault: str | None) -> None:
    """Server ``CORRUPT`` as the honest server (None) or corrupted by ``fault``."""
    lc.kill(CORRUPT)
    if fault is None:
        lc.commands.pop(CORRUPT, None)
    else:
        lc.commands[CORRUPT] = [sys.executable, str(FAULTY), fault]
    lc.start(CORRUPT)


def one_query(lc: LocalCluster, image: np.ndarray, k: int) -> tuple[list[int] | None, str]:
    """(ids, "") or (None, error text) for one query by a fresh client."""
    try:
        with Client(lc.client_config, progress=False) as c:
            return list(c.search_results(image, k=k)[0].ids), ""
    except Exception as exc:  # noqa: BLE001 - every failure counts as a detection
        suspects = getattr(exc, "suspects", None)
        return None, f"{type(exc).__name__}: {exc} suspects={suspects}"


def fault_class(lc: LocalCluster, kind: str, step: str, image: np.ndarray, honest: list[int], k: int,
                runs: int) -> dict:
    """Run ``runs`` queries with server 1 corrupted by ``msg-kind-step``."""
    restart(lc, f"msg-{kind}-{step}")
    if kind == "foreign":
        one_query(lc, small_images(1, seed=99)[0], k)  # a previous session whose messages it can re-send
    row = {"line": "fault", "attack": kind, "step": step, "runs": runs, "detected": 0, "named": 0,
           "wrong_results": 0, "no_effect": 0}
    t0 = time.perf_counter()
    for _ in range(runs):
        ids, err = one_query(lc, image, k)
        if ids is None:
            row["detected"] += 1
            row["named"] += int(f"server {CORRUPT}" in err or f"{CORRUPT}" in err.split("suspects=")[-1])
        elif ids != honest:
            row["wrong_results"] += 1
        else:
            row["no_effect"] += 1
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def modes_line(lc: LocalCluster, image: np.ndarray, k: int) -> dict:
    """Semi-honest query time and bytes per party; the malicious fields say why they are empty."""
    with Client(lc.client_config, progress=False) as c:
        c.search_results(image, k=k)  # warm
        t0 = time.perf_counter()
        r = c.search_results(image, k=k)[0]
        secs = time.perf_counter() - t0
    comm = getattr(r, "comm", None) or []
    per_party = float(np.mean([x["bytes_sent"] for x in comm])) if comm else None
    return {"line": "modes", "n_images": len(lc.images), "semi_honest_query_s": round(secs, 3),  # type: ignore[attr-defined]
            "semi_honest_bytes_per_party": per_party, "malicious_query_s": None,
            "malicious_bytes_per_party": None,
            "note": "no malicious server mode: protocols.verify is not used by the query (docs/SECURITY.md)"}


def verified_mul_line(n: int) -> dict:
    """In-process cost of ``n`` semi-honest products vs ``n`` verified ones (``protocols.verify``)."""
    from protocols.arithmetic import mul
    from protocols.sharing import from_pair, share
    from protocols.simulate import run_parties
    from protocols.verify import bucket_size, verified_mul

    g = torch.Generator().manual_seed(0)
    x, y = (share(torch.randint(-(2**40), 2**40, (n,), generator=g)) for _ in range(2))
    row: dict = {"line": "verified_mul", "n": n, "bucket": bucket_size(n)}
    for name, fn in (("semi_honest", mul), ("verified", verified_mul)):
        def body(party, px, py, fn=fn):
            before = party.comm.stats.snapshot()
            fn(from_pair(party, px), from_pair(party, py))
            return party.comm.stats - before
        t0 = time.perf_counter()
        stats = run_parties(body, [[x[i], y[i]] for i in range(3)])
        row[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        row[f"{name}_rounds"] = stats[0].rounds
        row[f"{name}_bytes_per_party"] = stats[0].bytes_sent
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON lines (the only output format)")
    ap.add_argument("--runs", type=int, default=3, help="queries per fault class")
    ap.add_argument("--images", type=int, default=24, help="images uploaded")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    ap.add_argument("--verify-n", type=int, default=100_000, help="products in the verified_mul line")
    a = ap.parse_args(argv)
    print(json.dumps(verified_mul_line(a.verify_n)), flush=True)
    with tempfile.TemporaryDirectory(prefix="trivault-sec-") as tmp:
        lc = LocalCluster(Path(tmp), txn_timeout_s=30.0, peer_timeout_s=5.0, query_timeout_s=60.0)
        lc.start()
        try:
            with Client(lc.client_config, progress=False) as c:
                c.register_model(tiny_model(), resolution=16)
                imgs = small_images(a.images)
                ids = c.upload(imgs, labels=[f"img{i}" for i in range(len(imgs))])
            lc.images = dict(zip(ids, imgs))  # type: ignore[attr-defined]
            image = imgs[len(imgs) // 2]
            honest, err = one_query(lc, image, a.k)
            assert honest is not None, err
            for step in a.steps:
                for kind in a.kinds:
                    print(json.dumps(fault_class(lc, kind, step, image, honest, a.k, a.runs)), flush=True)
            restart(lc, None)
            print(json.dumps(modes_line(lc, image, a.k)), flush=True)
        finally:
            lc.stop()


if __name__ == "__main__":
    main()
