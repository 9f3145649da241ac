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

Step ``retrieve`` (``ret-KIND`` of ``faulty_server.py``): server 1 corrupts what it releases
at retrieval, and ``--runs`` retrievals of one uploaded image are made by its owner (sealed
key-share pairs, then AES-GCM and the owner's signed hash) and ``--runs`` by a registered
user granted ORIGINAL (not the owner: sealed, marked pixel-share pairs). One line per class,
``runs`` counting both requesters, ``by_requester`` the same counts per requester::

    {"line": "fault", "attack": "add", "step": "retrieve", "runs": 4, "detected": 4, "named": 4,
     "wrong_results": 0, "no_effect": 0, "seconds": ..., "by_requester": {"owner": {...}, ...}}

Here ``detected`` means the retrieval raised, ``named`` that the error names server 1 or
lists it among its suspects, ``wrong_results`` that it returned image bytes that differ
from the honest retrieval by the same requester (for the owner: the uploaded file; for the
grantee: the copy the honest servers mark for them) without an error. For ``replay`` and
``foreign`` (which re-send the previous request's answer or share pair), every counted
retrieval follows one of another image by the same requester (not counted), so "previous"
is always another image. ``drop`` is counted as ``no_effect`` by design: the server refuses,
and the requester opens the correct image from the two other servers' shares (the refusal
raises no error: any two servers suffice, which is also why one server alone cannot stop a
release); ``reported`` counts the correct images whose result names server 1 as not used
(``Retrieved.unused``), which a refusal must be.

``--security malicious`` runs the servers (and so every query fault class) in malicious mode
(``[security] mode``, ``servers.config``: every product and AND gate of the query proved before
any result share leaves a server); each fault line says its ``security``. There a detected query
fault ends in ``MaliciousServerError`` and ``named`` means server 1 is among its ``suspects`` (the
server pair that disagreed, or server 1 alone: ``alone`` counts those).
A final line (``"line": "modes"``) compares semi-honest and malicious query time, rounds and
bytes for the same image query and for a feature query (the whole cluster restarted in each
mode); with ``--product-model``, one more (``"line": "modes_product_model"``) does the same on a cluster
of its own holding the product's default model (EfficientNet-Lite0 at 96 px: minutes per malicious image
query). The first line (``"line": "verified_mul"``) measures the one
verified building block that exists, ``protocols.verify.verified_mul``, against the
semi-honest product on ``--verify-n`` elements (three in-process parties: time, rounds,
bytes per party); the second (``"line": "checked_products"``) the distributed-ZK checked
products of ``protocols.dzk`` (``--verify-n`` elementwise products plus one
``[1, 128] @ [128, --verify-rows]`` product) against the same semi-honest products;
``checked_gates``: ReLU and truncation of ``--gates-n`` values, semi-honest vs checked
(``protocols.checked_compare``, ``protocols.checked``), each checked one with its proof;
``checked_nearest``: the nearest of ``--nearest-rows`` 128-d rows, semi-honest (the product's
``secure_distance`` + ``secure_topk(k=1)``) vs checked (checked distances, ``checked_argmin``,
the proof, then the reveal); ``checked_cnn``: the default feature model on one image at
``--cnn-resolution``, ``SecureModel`` vs ``checked_nn.checked_forward`` (one proof of the whole log),
with each one's largest error against plaintext torch; ``search_modes``: the search of one feature
query over ``--search-n`` indexed features at the product's settings (about sqrt(n) centroids,
nprobe 64, k 10), ``secure_search`` vs ``checked_search`` with its proof (rounds, soundness bits,
whether both return the plaintext index's ids, and the cost model's prediction of both over a WAN).
Bytes are the largest of the three parties'.
Then one ``fault`` line per class (``"pipeline": "checked_nearest"``) against the checked
nearest-neighbour pipeline in-process: party 1 deviates once per run (add, flip, drop, replay,
foreign) at a random one of its messages (``checked_fault_lines``).
Not a test: nothing is asserted. The machine is shared.
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
from PIL import Image

from client.errors import MaliciousServerError
from client.identity import Identity
from client.local_cluster import LocalCluster
from client.sdk import Client
from tests.integration.conftest import small_images, tiny_model  # the integration tests' model and images

FAULTY = Path(__file__).resolve().parents[1] / "tests" / "integration" / "faulty_server.py"
QUERY_STEPS = ("cnn", "distances", "fetch", "topk")
STEPS = (*QUERY_STEPS, "retrieve")
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


def _named(err: str, suspects: object) -> bool:
    """Does an error name server ``CORRUPT`` (in its text or its ``suspects``)?"""
    return f"server {CORRUPT}" in err or (isinstance(suspects, tuple) and CORRUPT in suspects)


def one_query(lc: LocalCluster, image: np.ndarray, k: int) -> tuple[list[int] | None, str]:
    """(ids, "") or (None, error text) for one query by a fresh client."""
    try:
        with Client(lc.client_config, progress=False) as c:
            return list(c.search_results(image, k=k)[0].ids), ""
    except Exception as exc:  # noqa: BLE001 - every failure counts as a detection
        suspects = getattr(exc, "suspects", None)
        if isinstance(exc, MaliciousServerError):  # its text lists every server's report: judge the suspects
            return None, f"{type(exc).__name__} suspects={suspects}"
        return None, f"{type(exc).__name__}: {exc} suspects={suspects}"


def fault_class(lc: LocalCluster, kind: str, step: str, image: np.ndarray, honest: list[int], k: int,
                runs: int) -> dict:
    """Run ``runs`` queries with server 1 corrupted by ``msg-kind-step``."""
    restart(lc, f"msg-{kind}-{step}")
    if kind == "foreign":
        one_query(lc, small_images(1, seed=99)[0], k)  # a previous session whose messages it can re-send
    row: dict = {"line": "fault", "attack": kind, "step": step, "security": lc.security, "runs": runs,
                 "detected": 0, "named": 0, "wrong_results": 0, "no_effect": 0}
    if lc.security == "malicious":
        row["alone"] = 0
    t0 = time.perf_counter()
    for _ in range(runs):
        ids, err = one_query(lc, image, k)
        if ids is None:
            row["detected"] += 1
            if err.startswith("MaliciousServerError"):
                row["named"] += int(f"{CORRUPT}" in err.split("suspects=")[-1])
                row["alone"] += int(err.endswith(f"suspects=({CORRUPT},)"))
            else:
                row["named"] += int(f"server {CORRUPT}" in err or f"{CORRUPT}" in err.split("suspects=")[-1])
        elif ids != honest:
            row["wrong_results"] += 1
        else:
            row["no_effect"] += 1
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def one_retrieval(lc: LocalCluster, identity: Identity | None, image_id: int) -> tuple[bytes | None, str, bool]:
    """(image bytes, "", whether the result reports server CORRUPT as not used) or (None, error
    text, whether it names server CORRUPT) for one retrieval by a fresh client of ``identity``
    (None: the owner)."""
    try:
        with Client(lc.client_config, progress=False, identity=identity) as c:
            r = c.retrieve(image_id)
            return r.data, "", CORRUPT in r.unused
    except Exception as exc:  # noqa: BLE001 - every failure counts as a detection
        suspects = getattr(exc, "suspects", None)
        err = f"{type(exc).__name__}: {exc} suspects={suspects}"
        return None, err, _named(err, suspects)


def retrieval_requesters(lc: LocalCluster, owner: Client) -> dict[str, Identity | None]:
    """The owner (None) and a registered user granted ORIGINAL on the default collection."""
    grantee = Identity.create()
    owner.register_user(grantee.public(), {"role": "bench"})
    owner.grant(grantee.user_id, outcome="ORIGINAL")
    return {"owner": None, "grantee": grantee}


def retrieval_class(lc: LocalCluster, kind: str, requesters: dict[str, Identity | None], target: int, decoy: int,
                    honest: dict[str, bytes], runs: int) -> dict:
    """``runs`` retrievals of ``target`` per requester with server 1 corrupted by ``ret-kind``."""
    restart(lc, f"ret-{kind}")
    keys = ("detected", "named", "wrong_results", "no_effect", "reported")
    row: dict = {"line": "fault", "attack": kind, "step": "retrieve", "runs": runs * len(requesters),
                 **dict.fromkeys(keys, 0)}
    by: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    for name, identity in requesters.items():
        sub = by[name] = {"runs": runs, **dict.fromkeys(keys, 0)}
        for _ in range(runs):
            if kind in ("replay", "foreign"):
                one_retrieval(lc, identity, decoy)  # the previous request, of another image (not counted)
            data, _err, flagged = one_retrieval(lc, identity, target)
            if data is None:
                sub["detected"] += 1
                sub["named"] += int(flagged)
            elif data != honest[name]:
                sub["wrong_results"] += 1
            else:
                sub["no_effect"] += 1
                sub["reported"] += int(flagged)
        for k in keys:
            row[k] += sub[k]
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["by_requester"] = by
    return row


def modes_line(lc: LocalCluster, image: np.ndarray, k: int) -> dict:
    """Query time, rounds and bytes (largest server) in each mode, for ``image`` (the tiny CNN, then the
    search) and for its features (the search alone); the cluster is restarted in each mode and left
    in the mode it had."""
    was = lc.security
    row: dict = {"line": "modes", "n_images": len(lc.images), "k": k}  # type: ignore[attr-defined]
    with Client(lc.client_config, progress=False) as c:
        feats = c.extract_features([Image.fromarray(image)])
    for mode in ("semi_honest", "malicious"):
        lc.stop()
        lc.set_security(mode)
        lc.start()
        with Client(lc.client_config, progress=False) as c:
            for name, q in (("image", image), ("features", feats.astype(np.float64))):
                c.search_batch(q, k=k)  # warm
                t0 = time.perf_counter()
                b = c.search_batch(q, k=k)
                row[f"{mode}_{name}_s"] = round(time.perf_counter() - t0, 3)
                row[f"{mode}_{name}_rounds"] = max(x["rounds"] for x in b.comm)
                row[f"{mode}_{name}_bytes"] = max(x["bytes_sent"] for x in b.comm)
                row[f"{mode}_{name}_ids"] = b.ids[0].tolist()
    if was != lc.security:
        lc.stop()
        lc.set_security(was)
        lc.start()
    return row


def product_modes_line(n_images: int, k: int) -> dict:
    """:func:`modes_line` on a cluster of its own holding the product's default model (``client.recipes``:
    EfficientNet-Lite0 at ``DEFAULT_RESOLUTION`` px, ``DEFAULT_DIM``-d) instead of the tiny CNN: the
    malicious-mode image query at the size a deployment runs (minutes; the SDK's timeout is
    ``LocalCluster``'s malicious default in both modes)."""
    from client import recipes
    from client.local_cluster import MALICIOUS_QUERY_TIMEOUT_S

    res = recipes.DEFAULT_RESOLUTION
    with tempfile.TemporaryDirectory(prefix="trivault-sec-") as tmp:
        lc = LocalCluster(Path(tmp), txn_timeout_s=60.0, query_timeout_s=MALICIOUS_QUERY_TIMEOUT_S,
                          security="semi_honest")
        lc.start()
        try:
            with Client(lc.client_config, progress=False) as c:
                c.register_model(recipes.build_model("efficientnet", res, recipes.DEFAULT_DIM), resolution=res)
                imgs = small_images(n_images)
                ids = c.upload(imgs, labels=[f"img{i}" for i in range(len(imgs))])
            lc.images = dict(zip(ids, imgs))  # type: ignore[attr-defined]
            row = modes_line(lc, imgs[len(imgs) // 2], k)
        finally:
            lc.stop()
    return {**row, "line": "modes_product_model", "resolution": res, "dim": recipes.DEFAULT_DIM}


def _measure(row: dict, fns: dict, per_party: list[list]) -> dict:
    """Run each ``fns[name](party, *args)`` on three in-process parties; add its time, rounds and bytes."""
    from protocols.simulate import run_parties

    for name, fn in fns.items():
        def body(party, *args, fn=fn):
            before = party.comm.stats.snapshot()
            fn(party, *args)
            return party.comm.stats - before
        t0 = time.perf_counter()
        stats = run_parties(body, per_party)
        row[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        row[f"{name}_rounds"] = stats[0].rounds
        row[f"{name}_bytes_per_party"] = max(st.bytes_sent for st in stats)
    return row


def verified_mul_line(n: int) -> dict:
    """In-process cost of ``n`` semi-honest products vs ``n`` verified ones (``protocols.verify``)."""
    from protocols.arithmetic import mul
    from protocols.sharing import from_pair, share
    from protocols.verify import bucket_size, verified_mul

    g = torch.Generator().manual_seed(0)
    x, y = (share(torch.randint(-(2**40), 2**40, (n,), generator=g)) for _ in range(2))
    fns = {name: (lambda party, px, py, fn=fn: fn(from_pair(party, px), from_pair(party, py)))
           for name, fn in (("semi_honest", mul), ("verified", verified_mul))}
    row = {"line": "verified_mul", "n": n, "bucket": bucket_size(n)}
    return _measure(row, fns, [[x[i], y[i]] for i in range(3)])


def checked_products_line(n: int, rows: int, dim: int) -> dict:
    """In-process cost of ``n`` elementwise products plus one ``[1, dim] @ [dim, rows]`` matrix product
    (a query against ``rows`` feature rows), semi-honest vs checked by ``protocols.dzk``."""
    from protocols.arithmetic import matmul, mul
    from protocols.checked import checked_matmul, checked_mul
    from protocols.dzk import ProductLog, verify_products
    from protocols.sharing import from_pair, share

    g = torch.Generator().manual_seed(0)
    x, y = (share(torch.randint(-(2**40), 2**40, (n,), generator=g)) for _ in range(2))
    q = share(torch.randint(-(2**20), 2**20, (1, dim), generator=g))
    m = share(torch.randint(-(2**20), 2**20, (dim, rows), generator=g))

    def semi_honest(party, px, py, pq, pm):
        mul(from_pair(party, px), from_pair(party, py))
        matmul(from_pair(party, pq), from_pair(party, pm))

    def checked(party, px, py, pq, pm):
        log = ProductLog(party)
        checked_mul(from_pair(party, px), from_pair(party, py), log)
        checked_matmul(from_pair(party, pq), from_pair(party, pm), log)
        verify_products(log)

    row = {"line": "checked_products", "n": n, "matmul": [1, dim, rows]}
    return _measure(row, {"semi_honest": semi_honest, "checked": checked}, [[x[i], y[i], q[i], m[i]] for i in range(3)])


def checked_gates_line(n: int) -> dict:
    """ReLU and truncation of ``n`` fixed-point values: semi-honest (``compare.relu``: table-OT comparison;
    ``arithmetic.truncate``) vs checked (``checked_compare.checked_relu``: AND gates; ``checked.checked_truncate``),
    each checked variant including its proof."""
    from protocols.arithmetic import truncate
    from protocols.checked import checked_truncate
    from protocols.checked_compare import checked_relu
    from protocols.compare import relu
    from protocols.dzk import ProductLog, verify_products
    from protocols.sharing import from_pair, share

    xs = share(torch.randint(-(2**40), 2**40, (n,), generator=torch.Generator().manual_seed(0)))

    def proved(gate):
        def fn(party, px):
            log = ProductLog(party)
            gate(party, px, log)
            verify_products(log)
        return fn

    fns = {
        "relu_semi_honest": lambda party, px: relu(from_pair(party, px, 16)),
        "relu_checked": proved(lambda party, px, log: checked_relu(from_pair(party, px, 16), log)),
        "truncate_semi_honest": lambda party, px: truncate(from_pair(party, px, 32), 16),
        "truncate_checked": proved(lambda party, px, log: checked_truncate(from_pair(party, px, 32), 16, log)),
    }
    return _measure({"line": "checked_gates", "n": n}, fns, [[xs[i]] for i in range(3)])


def checked_nearest_line(rows: int, dim: int) -> dict:
    """The nearest of ``rows`` shared ``dim``-d rows to a shared query, index revealed: semi-honest
    (``distance.secure_distance`` + ``topk.secure_topk(k=1)``, the product's own steps) vs checked
    (``checked_compare.checked_nearest``: distances at scale 2^32, argmin; one proof; the checked reveal)."""
    from protocols.checked_compare import checked_nearest
    from protocols.distance import secure_distance
    from protocols.dzk import ProductLog, verify_products
    from protocols.sharing import from_pair, public_shares, reveal, share
    from protocols.topk import secure_topk

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(rows, dim, generator=g, dtype=torch.float64) / dim**0.5
    query = feats[rows // 3] + 0.05 * torch.randn(dim, generator=g, dtype=torch.float64) / dim**0.5
    x, q = torch.round(feats * 2**16).long(), torch.round(query * 2**16).long().view(1, -1)
    xx = (x * x).sum(1)
    shares = [share(q), share(x), share(xx), share(xx >> 16)]

    def semi_honest(party, pq, px, pxx, pxx16):
        d = secure_distance(from_pair(party, pq, 16), from_pair(party, px, 16), from_pair(party, pxx16, 16))
        ids = public_shares(party, torch.arange(rows, dtype=torch.int64)).reshape(1, -1)
        _, top = secure_topk(d, ids, 1)
        reveal(top)

    def checked(party, pq, px, pxx, pxx16):
        log = ProductLog(party)
        idx, _ = checked_nearest(from_pair(party, pq, 16), from_pair(party, px, 16), from_pair(party, pxx, 32), log)
        verify_products(log)
        reveal(idx)

    row = {"line": "checked_nearest", "rows": rows, "dim": dim}
    return _measure(row, {"semi_honest": semi_honest, "checked": checked}, [[s[i] for s in shares] for i in range(3)])


def checked_fault_lines(runs: int, rows: int, seed: int = 0) -> list[dict]:
    """One line per fault class against the CHECKED nearest-neighbour pipeline (in-process, the same steps
    as ``checked_nearest``): in each run party 1 deviates once (``tests/unit/dzk_faults.attack``) at a
    random one of its messages before the reveal. ``detected``: no index was revealed (some party
    aborted); ``named``: every honest party that rejected a proof named party 1, or (none rejected) the
    abort names it as silent or as the party that aborted the session (a party that drops a message may
    be the first to time out); ``wrong_results``: an index other than the honest one came out."""
    from protocols.checked_compare import checked_nearest
    from protocols.dzk import ProductLog, ProofRejected, verify_products
    from protocols.sharing import from_pair, reveal, share
    from protocols.simulate import make_parties, run_parties
    from tests.unit.dzk_faults import KINDS, attack, recording

    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(rows, 32, generator=g, dtype=torch.float64) / 32**0.5
    x = torch.round(feats * 2**16).long()
    q = torch.round((feats[rows // 2] + 0.05 * torch.randn(32, generator=g, dtype=torch.float64)) * 2**16).long()
    shares = [share(q.view(1, -1)), share(x), share((x * x).sum(1))]

    def nearest(party, pq, px, pxx, setup):
        setup(party)
        log = ProductLog(party)
        idx, _ = checked_nearest(from_pair(party, pq, 16), from_pair(party, px, 16), from_pair(party, pxx, 32), log)
        verify_products(log)
        return int(reveal(idx))

    def run(setup_1):
        def body(party, *pairs):
            try:
                return nearest(party, *pairs, setup_1 if party.id == 1 else (lambda p: None))
            except Exception as exc:  # noqa: BLE001 - the outcome counted below
                party.comm.close()
                return exc
        return run_parties(body, [[s[i] for s in shares] for i in range(3)], parties=make_parties(timeout_s=5.0))

    foreign: list[torch.Tensor] = []
    honest_out = run(lambda p: recording(p, foreign))  # another session's messages (the honest run)
    honest = honest_out[0]
    before_reveal = len(foreign) - 2
    lines = []
    for kind in KINDS:
        row = {"line": "fault", "pipeline": "checked_nearest", "attack": kind, "runs": runs, "detected": 0,
               "named": 0, "wrong_results": 0, "no_effect": 0}
        t0 = time.perf_counter()
        for _ in range(runs):
            index = int(torch.randint(before_reveal, (1,), generator=g))
            out = run(lambda p, kind=kind, index=index: attack(p, kind, index, g, foreign))
            results = [o for o in out if not isinstance(o, BaseException)]
            if len(results) < 3:
                row["detected"] += 1
                rejected = [o for i, o in enumerate(out) if i != 1 and isinstance(o, ProofRejected)]
                silent = [o for i, o in enumerate(out) if i != 1 and ("from party 1" in str(o)
                                                                      or "aborted by party 1" in str(o))]
                if (rejected and all(1 in o.suspects for o in rejected)) or (not rejected and silent):
                    row["named"] += 1
            elif any(r != honest for r in results):
                row["wrong_results"] += 1
            else:
                row["no_effect"] += 1
        row["seconds"] = round(time.perf_counter() - t0, 2)
        lines.append(row)
    return lines


def checked_cnn_line(resolution: int) -> dict:
    """The default feature model (EfficientNet-Lite0, projection to 128, L2 norm) on one image at ``resolution``:
    ``SecureModel`` (semi-honest) vs ``checked_nn.checked_forward`` and one ``verify_products`` of its whole
    log, as the servers run it (``servers.query.checked_features``), both against plaintext torch."""
    from client.model import default_feature_model, split_model
    from protocols.checked_nn import checked_forward
    from protocols.dzk import ProductLog, verify_products
    from protocols.nn import SecureModel
    from protocols.sharing import from_pair, reveal, share_fixed

    model = default_feature_model(resolution, out_dim=128)
    arch, per_server = split_model(model, (3, resolution, resolution))
    f = arch["frac_bits"]
    image = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        want = model.double()(image)
    xs = share_fixed(image)
    errors: dict[str, float] = {}

    def semi_honest(party, weights, px):
        y = reveal(SecureModel.from_shares(party, arch, weights)(from_pair(party, px, f)))
        errors["semi_honest"] = float((y.double() / 2**f - want).abs().max())

    def checked(party, weights, px):
        log = ProductLog(party)
        w = {k: from_pair(party, v, f) for k, v in weights.items()}
        y = checked_forward(arch, w, from_pair(party, px, f), log)
        verify_products(log)
        errors["checked"] = float((reveal(y).double() / 2**f - want).abs().max())

    row = _measure({"line": "checked_cnn", "resolution": resolution}, {"semi_honest": semi_honest, "checked": checked},
                   [[per_server[i], xs[i]] for i in range(3)])
    row.update({f"{k}_max_error": round(v, 6) for k, v in errors.items()})
    return row


def search_modes_line(n: int, dim: int = 128, nprobe: int = 64, k: int = 10, fan_in: int | None = None) -> dict:
    """The search of one feature query at the product's settings (``n`` unit-norm ``dim``-d features,
    ``client.index_policy.n_centroids_for(n)`` centroids, ``nprobe``, ``k``), in-process: semi-honest
    ``secure_search`` vs malicious ``checked_search`` + ``verify_products`` (before the reveal), both
    against the plaintext index (recall of the same top-k ids)."""
    import numpy as np

    from client.index_policy import n_centroids_for
    from index.build import build_index
    from index.shares import share_index
    from index.synthetic import clustered, queries_like
    from protocols import checked_search as CS
    from protocols.dzk import ProductLog, call_soundness_bits, verify_products
    from protocols.search import secure_search
    from protocols.sharing import from_pair, reveal, share_fixed

    data = clustered(n, dim, 64, seed=3).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    query = queries_like(data, 1, seed=4).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    n_c = n_centroids_for(n)
    plain = build_index(data, None, n_c)
    shares = share_index(plain)
    qs = share_fixed(torch.from_numpy(query).double())
    ids: dict[str, list[int]] = {}
    proof_rounds: dict[str, int] = {}

    def semi_honest(party, sh, pq):
        i, _ = secure_search(party, from_pair(party, pq, 16), sh, k, nprobe=nprobe)
        ids["semi_honest"] = reveal(i).reshape(-1).tolist()

    def malicious(party, sh, pq):
        log = ProductLog(party)
        i, _ = CS.checked_search(party, from_pair(party, pq, 16), sh, k, nprobe, log)
        r = verify_products(log)
        if party.id == 0:
            proof_rounds["malicious"] = r
            proof_rounds["lengths"] = log.proof_rounds
        ids["malicious"] = reveal(i).reshape(-1).tolist()

    old = CS.FAN_IN
    if fan_in is not None:
        CS.FAN_IN = fan_in
    try:
        row = _measure({"line": "search_modes", "n": n, "dim": dim, "n_centroids": n_c,
                        "bucket_size": int(plain.bucket_size), "nprobe": nprobe, "k": k, "fan_in": CS.FAN_IN},
                       {"semi_honest": semi_honest, "malicious": malicious},
                       [[shares[i], qs[i]] for i in range(3)])
    finally:
        CS.FAN_IN = old
    want = plain.search(query, k, nprobe)[0][0].tolist()
    row["same_ids"] = ids["semi_honest"] == ids["malicious"]
    row["ids_match_plaintext"] = ids["malicious"] == want
    row["proof_rounds"] = proof_rounds["malicious"]
    row["proofs_rounds_summed"] = proof_rounds["lengths"]  # proofs overlap (dzk.STAGGER): what soundness adds up
    row["soundness_bits"] = round(call_soundness_bits(proof_rounds["lengths"]), 1)
    row["time_ratio"] = round(row["malicious_s"] / row["semi_honest_s"], 1)
    row["bytes_ratio"] = round(row["malicious_bytes_per_party"] / row["semi_honest_bytes_per_party"], 2)
    row["predicted_wan_s"] = wan_prediction(row, ("semi_honest", "malicious"))
    return row


WAN_POINTS = ((20.0, 1000.0), (50.0, 1000.0), (100.0, 100.0))
"""(RTT ms, per-server egress Mbit/s) at which :func:`wan_prediction` applies the cost model."""


def wan_prediction(row: dict, modes: tuple[str, ...]) -> dict:
    """``benchmarks.cost_model.CostModel`` (in-process seconds + rounds x RTT / 2 + bytes / bandwidth, not a
    measurement) of each mode of ``row`` at :data:`WAN_POINTS`, and the malicious / semi-honest ratio."""
    from benchmarks.cost_model import CostModel

    out = {}
    for rtt, mbps in WAN_POINTS:
        point = {m: round(CostModel(row[f"{m}_s"], row[f"{m}_rounds"], row[f"{m}_bytes_per_party"]).predict(rtt, mbps),
                          2) for m in modes}
        point["ratio"] = round(point[modes[1]] / point[modes[0]], 1)
        out[f"rtt_{rtt:g}ms_{mbps:g}mbps"] = point
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON lines (the only output format)")
    ap.add_argument("--runs", type=int, default=3, help="queries (retrievals per requester) per fault class")
    ap.add_argument("--images", type=int, default=24, help="images uploaded")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    ap.add_argument("--verify-n", type=int, default=100_000, help="products in the verified_mul line")
    ap.add_argument("--verify-rows", type=int, default=100_000,
                    help="feature rows (128-d) of the matrix product in the checked_products line")
    ap.add_argument("--gates-n", type=int, default=10_000, help="values in the checked_gates line (ReLU, truncation)")
    ap.add_argument("--nearest-rows", type=int, default=10_000, help="rows (128-d) in the checked_nearest line")
    ap.add_argument("--cnn-resolution", type=int, default=32,
                    help="input size of the checked_cnn line (0: skip it; the default model's 96 px took 194 s "
                         "and 18 GB for three in-process parties on 2 cores)")
    ap.add_argument("--search-n", type=int, default=100_000,
                    help="indexed features of the search_modes line (the issue's n; 0: skip it)")
    ap.add_argument("--search-fan-in", type=int, default=None,
                    help="checked_search.FAN_IN for the search_modes line (default: the module's)")
    ap.add_argument("--security", default="semi_honest", choices=("semi_honest", "malicious"),
                    help="the servers' [security] mode for the fault classes")
    ap.add_argument("--skip-inprocess", action="store_true", help="only the lines against the server processes")
    ap.add_argument("--product-model", action="store_true",
                    help="last, a modes line on servers holding the product's default model (96 px "
                         "EfficientNet-Lite0): the malicious image query takes minutes")
    a = ap.parse_args(argv)
    if not a.skip_inprocess:
        print(json.dumps(verified_mul_line(a.verify_n)), flush=True)
        print(json.dumps(checked_products_line(a.verify_n, a.verify_rows, 128)), flush=True)
        print(json.dumps(checked_gates_line(a.gates_n)), flush=True)
        print(json.dumps(checked_nearest_line(a.nearest_rows, 128)), flush=True)
        for row in checked_fault_lines(a.runs, 64):
            print(json.dumps(row), flush=True)
        if a.cnn_resolution:
            print(json.dumps(checked_cnn_line(a.cnn_resolution)), flush=True)
        if a.search_n:
            print(json.dumps(search_modes_line(a.search_n, fan_in=a.search_fan_in)), flush=True)
    with tempfile.TemporaryDirectory(prefix="trivault-sec-") as tmp:
        lc = LocalCluster(Path(tmp), txn_timeout_s=30.0, peer_timeout_s=5.0, query_timeout_s=60.0,
                          security=a.security)
        lc.start()
        try:
            with Client(lc.client_config, progress=False) as c:
                c.register_model(tiny_model(), resolution=16)
                imgs = small_images(a.images)
                ids = c.upload(imgs, labels=[f"img{i}" for i in range(len(imgs))])
            lc.images = dict(zip(ids, imgs))  # type: ignore[attr-defined]
            image = imgs[len(imgs) // 2]
            query_steps = [s for s in a.steps if s in QUERY_STEPS]
            honest: list[int] = []
            if query_steps:
                got, err = one_query(lc, image, a.k)
                assert got is not None, err
                honest = got
            with Client(lc.client_config, progress=False) as c:
                n_c = int(c.info()["index_meta"]["n_centroids"])
            for step in query_steps:
                if step == "fetch" and lc.security == "malicious" and n_c == 1:  # nprobe = C: no fetch step
                    print(json.dumps({"line": "fault", "step": step, "security": lc.security, "skipped":
                                      "one bucket: the checked search probes all records, it has no fetch"}))
                    continue
                for kind in a.kinds:
                    print(json.dumps(fault_class(lc, kind, step, image, honest, a.k, a.runs)), flush=True)
            if "retrieve" in a.steps:
                target, decoy = ids[len(ids) // 2], ids[0]
                with Client(lc.client_config, progress=False) as c:
                    requesters = retrieval_requesters(lc, c)
                refs = {}
                for name, identity in requesters.items():
                    data, err, _ = one_retrieval(lc, identity, target)
                    assert data is not None, err
                    refs[name] = data
                with Client(lc.client_config, progress=False) as c:
                    assert np.array_equal(c.retrieve(target).array(), imgs[len(ids) // 2])  # the owner: the original
                for kind in a.kinds:
                    print(json.dumps(retrieval_class(lc, kind, requesters, target, decoy, refs, a.runs)), flush=True)
            restart(lc, None)
            print(json.dumps(modes_line(lc, image, a.k)), flush=True)
        finally:
            lc.stop()
    if a.product_model:
        print(json.dumps(product_modes_line(a.images, a.k)), flush=True)


if __name__ == "__main__":
    main()
