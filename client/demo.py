"""``trivault demo``: the end-to-end walk-through on three local server processes."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

TOL = 1e-2  # fixed-point tolerance on squared distances (f = 16 bits, truncations in the CNN)


def plaintext_features(client, query: np.ndarray) -> np.ndarray:
    """The owner's plaintext pipeline: same model and preprocessing, float features [d]."""
    from .images import load_image_bytes

    progress, client.progress = client.progress, False
    try:
        return client.extract_features([load_image_bytes(query)[1]])[0]
    finally:
        client.progress = progress


def compare_to_plaintext(client, query: np.ndarray, ids: list[int], dists: list[float], nprobe: int) -> str:
    """One line: the secure top-k vs the same search in plaintext (IVF with the same nprobe
    when the index is IVF), within TOL, plus recall against exhaustive search."""
    q = plaintext_features(client, query).astype(np.float64)
    feats, all_ids = client.owner.load_features()
    exact = dict(zip(all_ids.tolist(), ((feats.astype(np.float64) - q) ** 2).sum(1).tolist()))
    k = len(ids)
    got = client.owner.load_plain_index(client.info()["index_version"])
    if got is not None:
        ref_ids, ref_d = got[0].search(q[None].astype(np.float32), k, nprobe)
        ref = dict(zip(ref_ids[0].tolist(), ref_d[0].tolist()))
        name = f"plaintext IVF (nprobe={nprobe})"
    else:
        ref, name = exact, "plaintext exhaustive search"
    kth = sorted(ref.values())[k - 1]
    err = max(abs(d - exact[i]) for i, d in zip(ids, dists))
    ok = err <= TOL and all(i in ref or exact[i] <= kth + TOL for i in ids)
    truth = set(sorted(exact, key=exact.__getitem__)[:k])
    recall = len(truth & set(ids)) / k
    return (f"{'agrees with' if ok else 'DIFFERS from'} {name} (max |secure - plain| distance {err:.1e}); "
            f"recall@{k} vs exhaustive {recall:.2f}")


def run_queries(client, queries: int, label_of: dict[int, str], nprobe: int, console: Console) -> int:
    """Search for fresh variants of the bundled photos; print each top-5 with its cost and the
    plaintext comparison. Returns the first query's best id."""
    from .demo_data import augment, base_images

    bases = base_images()
    first_hit: int | None = None
    for qn in range(queries):
        name, a = bases[(qn * 5) % len(bases)]
        q = augment(a, 99_000 + qn)  # a fresh variant, never uploaded
        probe = min(nprobe, client.info()["index_meta"].get("n_centroids", 1))
        if hasattr(client, "search_results"):  # the faiss-style SDK: one result object per query
            r = client.search_results(q, k=5, nprobe=probe)[0]
        else:
            r = client.search(q, k=5, nprobe=probe)
        verdict = compare_to_plaintext(client, q, r.ids, r.distances, nprobe)
        tab = Table("rank", "id", "label", "distance", title=f"query {qn + 1}: new variant of '{name}'")
        for n, (i, d) in enumerate(zip(r.ids, r.distances), 1):
            tab.add_row(str(n), str(i), label_of.get(i, "?"), f"{d:.4f}")
        console.print(tab)
        console.print(f"   {r.seconds:.2f} s end to end ({r.server_seconds:.2f} s secure computation), "
                      f"{r.bytes_per_party / 1e6:.2f} MB and {r.comm[0]['rounds']} rounds per server, "
                      f"mode {r.mode}; {verdict}")
        first_hit = first_hit if first_hit is not None else r.ids[0]
    if first_hit is None:
        raise ValueError(f"the demo needs at least one query, got queries={queries}")
    return first_hit


def run_demo(root: Path | None, copies: int, queries: int, model: str, resolution: int, dim: int,
             console: Console, nprobe: int = 2) -> None:
    """Start servers, upload, query, retrieve, stop; print timings and communication."""
    from .demo_data import demo_collection
    from .local_cluster import LocalCluster
    from .recipes import build_model
    from .sdk import Client

    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="trivault-demo-")
        root = Path(tmp.name)
    t0 = time.perf_counter()
    lc = LocalCluster(root)
    try:
        lc.start()
        console.print(f"[bold]1.[/bold] three servers up on 127.0.0.1 ports {lc.ports} (mutual TLS) "
                      f"in {time.perf_counter() - t0:.1f} s")
        with Client(lc.client_config) as c:
            mod = build_model(model, resolution, dim)
            t = time.perf_counter()
            c.register_model(mod, resolution=resolution)
            console.print(f"[bold]2.[/bold] model ({type(mod).__name__}, {resolution}x{resolution} -> {dim}-d) "
                          f"registered as secret shares in {time.perf_counter() - t:.1f} s")
            imgs, labels = demo_collection(copies)
            t = time.perf_counter()
            ids = c.upload(imgs, labels=labels)
            dt = time.perf_counter() - t
            console.print(f"[bold]3.[/bold] uploaded {len(ids)} images ({len(imgs) // (copies + 1)} bundled photos "
                          f"+ {copies} augmented copies each) in {dt:.1f} s ({len(ids) / dt:.1f} images/s), "
                          f"{c.last_upload_stats['bytes_per_server'] / 1e6:.1f} MB per server")
            first_hit = run_queries(c, queries, dict(zip(ids, labels)), nprobe, console)
            t = time.perf_counter()
            got = c.retrieve(first_hit)
            out = Path(root) / f"retrieved-{first_hit}.png"
            from PIL import Image

            Image.fromarray(got.array()).save(out)
            console.print(f"[bold]4.[/bold] retrieved image {first_hit} ('{got.label}', {len(got.data)} bytes) in "
                          f"{time.perf_counter() - t:.2f} s: key shares sealed to this client, decrypted locally"
                          + ("" if tmp else f" -> {out}"))
    finally:
        lc.stop()
        console.print("[bold]5.[/bold] servers stopped cleanly")
        if tmp is not None:
            tmp.cleanup()
