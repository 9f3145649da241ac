"""End-to-end benchmark: three real server processes (gRPC + mutual TLS) behind an emulated WAN.

``python -m benchmarks.e2e --json --rtt-ms 0 10 30 --bandwidth-mbps 1000`` starts three
``python -m servers`` processes on 127.0.0.1 whose server-to-server links all go through
the WAN proxy of :mod:`benchmarks.wan`: one proxy per ORDERED link i -> j (server i reaches
server j through it: ``peer_addresses`` in the cluster TOML), each delaying every byte by
RTT / 2 in both directions, so a ping-pong between two servers takes the RTT and every
protocol message one one-way delay. Each server's egress (its two outgoing links) is one
token bucket of ``--bandwidth-mbps``. The querier's own link to the servers is not shaped.

What is indexed, what is queried (``--seed`` 0; the data of ``benchmarks.quality``):

* PHOTOS: every real photo available offline (``benchmarks.quality_data.load_originals``:
  scikit-image and scikit-learn sample photos, ``../shared/data/deid`` scenes and faces:
  442 here), split by a seeded half (``benchmarks.quality_pool.split_photos``) into a
  DISTRACTOR half and a QUERY half.
* UPLOAD: the owner uploads every photo (``--upload``) in its first upload through the
  SDK (timed), so the product fits its whitened PCA (``client.owner_model``) on them and
  registers trunk + PCA layer + L2 norm; their features are the owner's upload features.
* DISTRACTORS: the index is then grown to ``--n`` entries (one index-only transaction,
  the SDK's index builder and centroid rule) with real-feature distractors: the pool,
  through the owner's registered projection layer + L2 normalisation (exactly the layers
  the product applies to an upload's pooled trunk output), of every proper sub-rectangle
  of the EfficientNet-Lite0 trunk's final feature map of the distractor-half photos and
  5 transformed copies of each (``quality_data`` transforms: crops, rotations, JPEG,
  colour, overlays...), each preprocessed at 64, 80, 96, 128, 160 and 224 px
  (``--distractor-resolutions``; a window of a larger rendering is the feature of a
  smaller part of it): about 1.57M features of real image parts at the 96 px default,
  ``benchmarks.quality``'s large-n pool (its recall@10 vs exact at 1M: 0.973), drawn
  without replacement in a seeded order. Only if that pool is smaller than ``--n`` is the
  rest jittered copies (a pool feature + ``--fill-jitter`` x the difference of two other
  pool features, L2-normalised); every line says how many (``distractors``,
  ``distractor_pool``, ``distractors_jittered``). The trunk maps are cached with
  ``benchmarks.quality``'s (system temp dir); the benchmark checks that its head
  reproduces the owner's stored upload features (``distractor_head_check_max_abs_diff``).
  ``--upload-at-n`` more real images (augmented copies of distractor-half photos) are then
  uploaded into the full index (timed).
* QUERIES: transformed copies (``quality_data`` transforms) of QUERY-half photos, a
  seeded choice of max(16, ``--queries``); no distractor comes from a query's photo, and
  each query's original is indexed. The RTT lines run the first ``--queries`` of them
  (``query_images`` names them); concurrency client j runs image j, and each concurrency
  line has the recall of its clients' queries too (16 distinct images at 16 clients).
* EXACT TOP-10: the query image's feature under the owner's plaintext model
  (``Client.extract_features``), squared L2 in float64 against EVERY indexed vector
  (uploaded photos, distractors, the at-n uploads), stable ties. ``recall_at_10_vs_exact``
  = |secure top-10 ids & exact top-10| / 10, mean over the ``--queries`` queries
  (``recall_runs``: each); ``exact_topk_from_distractors``: the share of the exact top-10
  that are distractors (how much they compete with the photos).

Then, for every RTT, it prints one
JSON line (``"line": "rtt"``) with ``rtt_ms, bandwidth_mbps, n_images, resolution, dim,
nprobe, k, query_s`` (median end to end: share the image, secure CNN + secure search on
the servers, reconstruct), ``in_process_query_s`` (the same ``servers.query.run_query``
on the same stored shares with three in-process parties), ``rounds_per_query``,
``cnn_rounds``, ``search_rounds``, ``bytes_per_party_per_query`` (mean over servers; also
``bytes_max_party_per_query``), ``predicted_query_s`` and ``recall_at_10_vs_exact``,
``server_cpu_s_per_query`` (user + system CPU seconds of each server process during one
gRPC query, median: here the three share the machine's cores), ``in_process_cpu_s_per_query``
(CPU seconds of the three in-process parties together: what the transport adds is the
difference to the servers' sum),
plus the upload, retrieve and distractor figures. With ``--concurrency`` it also prints,
per RTT and level c, one line (``"line": "concurrency"``) with the queries/s of c clients
each running one query at the same time (refused sessions are retried, bounded, and
counted), after all RTT lines, lowest level first (at n = 1M the 16 sessions per server
are the memory peak). One ``"line": "breakdown"``
gives the rounds and bytes of every protocol step of one query (in-process profile), and
one ``"line": "direct"`` the rtt-0 figures with the servers restarted WITHOUT the proxy
(what gRPC + TLS alone add to the in-process query).

COST MODEL (benchmarks.cost_model):
  predicted_query_s = s x in_process_query_s + rounds x rtt/2 + bytes_max_party / bandwidth
  in_process_query_s is measured next to each gRPC query (same load); one round = one
  one-way delay (every party sends, then waits for its neighbours); s (compute_scale) =
  how fast three server processes + loopback gRPC run the query relative to three
  in-process threads, fitted ONCE on the rtt-0 line (so rtt 0 is a fit and every other
  RTT a prediction; s = 1 if rtt 0 is not run). Also printed: predicted_query_s_unfitted
  (s = 1) and model_error = |predicted - measured| / measured.

Not a test: no timing is asserted anywhere. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from benchmarks.cost_model import CostModel, RoundProfiler, agreement, format_table
from benchmarks.proc_cpu import cpu_seconds
from benchmarks.wan import WanEmulator
from benchmarks.wan_cluster import concurrent_queries, egress_buckets, wan_cluster

DEFAULT_N = 1_000_000  # issue 11's target index size


# ---- in-process reference (same function, same stored shares) -------------------------


def _load_party_state(root: Path, i: int):
    """Server ``i``'s stored model and index, exactly as the server loads them."""
    from servers.query import LoadedIndex, LoadedModel
    from servers.storage import Store

    st = Store(root / "data" / f"server{i}")
    mv, mmeta = st.current("model")
    iv, imeta = st.current("index")
    t = st.load_tensors("model", mv)
    names = sorted({k.rsplit(".", 1)[0] for k in t})
    model = LoadedModel(mv, mmeta["arch"], {n: (t[f"{n}.lo"], t[f"{n}.hi"]) for n in names})
    index = LoadedIndex(iv, imeta, _mapped_tensors(st.objects / "index" / f"v{iv}.npz"))
    st.close()
    return model, index


def _mapped_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The stored index's tensors, the large ones memory-mapped copy-on-write from the server's
    file (the same values ``Store.load_tensors`` copies into memory): at n = 1M, d = 128 the three
    parties' shares are ~7 GB, which as page cache the kernel can reclaim instead of OOM-killing."""
    import zipfile

    from servers.shards import npz_member

    with zipfile.ZipFile(path) as zf:
        sizes = {i.filename[: -len(".npy")]: i.file_size for i in zf.infolist()}
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for n, size in sizes.items():
            if size < 1 << 20:
                out[n] = torch.from_numpy(z[n].copy())
                continue
            m = npz_member(path, n, mode="c")
            m.reshape(-1)[::512].sum()  # one element per page: read the file into the page cache now, not mid-query
            out[n] = torch.from_numpy(m)
    return out


class InProcess:
    """Three in-process parties on the servers' stored shares (loaded once)."""

    def __init__(self, root: Path) -> None:
        self.states = [_load_party_state(root, i) for i in range(3)]

    def query(self, image: np.ndarray, k: int, nprobe: int) -> tuple[float, list[int], RoundProfiler]:
        """Seconds, ids and the per-step profile of one query (``cpu_s``: this process's CPU
        seconds during it, all three parties together)."""
        from client.preprocess import preprocess
        from protocols.ring import DEFAULT_FP
        from protocols.sharing import reconstruct, share_fixed
        from protocols.simulate import make_parties, run_parties
        from servers.query import run_query

        res = int(self.states[0][0].arch["input_shape"][-1])
        pairs = share_fixed(preprocess(image, res).unsqueeze(0).to(torch.float64), DEFAULT_FP)
        prof = RoundProfiler()
        parties = [prof.attach(p) for p in make_parties(timeout_s=600.0)]

        def body(party, model, index, pair):
            return run_query(party, model, index, pair, k, nprobe, "image")

        t0, c0 = time.perf_counter(), time.process_time()
        out = run_parties(body, [(self.states[i][0], self.states[i][1], pairs[i]) for i in range(3)],
                          parties=parties)
        secs = time.perf_counter() - t0
        self.cpu_s = time.process_time() - c0
        if out[0][0] == "topk":
            ids = reconstruct([o[1]["ids"] for o in out])[0].tolist()
        else:
            dist = reconstruct([o[1]["dist"] for o in out])[0]
            ids = self.states[0][1].tensors["ids"][torch.argsort(dist, stable=True)[:k]].tolist()
        return secs, [i for i in ids if i >= 0], prof


def cnn_search_rounds(prof: RoundProfiler) -> tuple[int, int]:
    """(CNN rounds, search rounds incl. masking) of one profiled query."""
    rows = prof.by_step()
    cnn = sum(r["rounds"] for r in rows if r["step"].startswith("cnn"))
    return cnn, sum(r["rounds"] for r in rows) - cnn


# ---- setup: model, real photos, index grown to n with real-feature distractors -----------


QUALITY_RESOLUTIONS = [64, 80, 96, 128, 160, 224]  # benchmarks.quality's default resolutions (shared cache)
DISTRACTOR_ID0 = 10**6  # distractors' index ids (the uploaded images' ids count from 0)
PER_IMAGE = 5  # transformed copies per photo, as benchmarks.quality's default (the pool's copies, the queries)


def real_data(a: argparse.Namespace) -> dict:
    """The real photos, their copies, the photo halves and the query images (module docstring)."""
    from benchmarks.quality_data import load_originals, make_queries, render_query
    from benchmarks.quality_pool import query_half_rows, split_photos

    shared = a.shared_dir if a.shared_dir.is_dir() else None
    originals = load_originals(shared)
    copies = make_queries(len(originals), PER_IMAGE)
    half = split_photos(len(originals), a.seed)
    rows = np.random.default_rng([a.seed, 5]).permutation(query_half_rows(half, copies))[: max(a.queries, 16)]
    images = [np.asarray(render_query(copies[j], originals, a.seed).convert("RGB")) for j in rows]
    return {"originals": originals, "copies": copies, "distractor_half": half, "shared_dir": shared,
            "query_images": images, "query_names": [f"{originals[copies[j].source].name}:{copies[j].transform}"
                                                    for j in rows]}


def owner_head(c):
    """The projection head of the owner's registered model (its last ``nn.Linear``), as a quality Head."""
    from torch import nn

    from benchmarks.quality_features import Head
    from client import owner_model

    recipe = c.owner.load_recipe()
    model = owner_model.rebuild(c.owner, recipe)
    lin = [m for m in model if isinstance(m, nn.Linear)]
    if not lin:
        raise SystemExit("the owner's model has no projection layer")
    w = lin[-1].weight.detach().double().numpy()
    b = None if lin[-1].bias is None else lin[-1].bias.detach().double().numpy()
    kind = "pca_whiten" if recipe.get("whiten") else ("pca" if recipe["kind"] == owner_model.PCA_KIND else "random")
    return Head(kind, int(w.shape[0]), w, b), recipe


def window_distractors(c, a: argparse.Namespace, data: dict, count: int, log) -> tuple[np.ndarray, dict]:
    """``count`` real-feature distractors through the owner's fitted head (module docstring), and their figures."""
    import tempfile as tf

    from benchmarks.quality_features import extract, head
    from benchmarks.quality_pool import distractors, map_image_rows

    h, recipe = owner_head(c)
    res = sorted(set(a.distractor_resolutions) | {a.resolution})
    t0 = time.perf_counter()
    cache = None if a.no_cache else Path(tf.gettempdir()) / "trivault-quality-cache"
    feats = extract(data["originals"], data["copies"], res, map_image_rows(data["distractor_half"], data["copies"]),
                    a.seed, cache, progress=False)
    # the head reproduces the owner's upload features (same pixels, same trunk, same layer)
    own, _ = c.owner.load_features()  # the first upload: originals[: len(own)], in order
    m = min(len(own), len(feats[a.resolution].db))
    check = float(np.abs(head(h, feats[a.resolution].db[:m]) - own[:m]).max())
    if check > 1e-3:
        raise SystemExit(f"the distractor head does not reproduce the owner's upload features (max |diff| {check})")
    x, info = distractors(h, {r: feats[r].maps for r in res}, count, a.seed, a.fill_jitter)
    del feats
    gc.collect()
    info.update({"resolutions": res, "head": h.kind, "owner_recipe": recipe, "head_check_max_abs_diff": check,
                 "seconds": round(time.perf_counter() - t0, 1)})
    log(f"{count} distractors ({info['from_pool']} from a pool of {info['pool']} window features, "
        f"{info['jittered']} jittered) in {info['seconds']} s; head check {check}")
    return x, info


def describe_distractors(info: dict | None, n_photos_half: int) -> str:
    """The JSON lines' ``distractors`` string."""
    if info is None:
        return "none (the index holds only uploaded real photos)"
    if info.get("synthetic"):
        return ("SYNTHETIC isotropic Gaussian clusters (index.synthetic.clustered), unit norm: not real features, "
                "recall_at_10_vs_exact is not meaningful")
    s = (f"{info['from_pool']} real window features: pool of every proper sub-rectangle of the EfficientNet-Lite0 "
         f"trunk's final feature map of {n_photos_half} photos (seeded distractor half) and {PER_IMAGE} "
         f"transformed copies each, preprocessed at {info['resolutions']} px, through the owner's fitted head "
         f"({info['head']}, the registered model's layer) + L2; pool {info['pool']}, drawn without replacement")
    if info["jittered"]:
        s += (f"; {info['jittered']} jittered (pool smaller than n): a pool feature + {info['jitter']} x the "
              f"difference of two other pool features, L2-normalised")
    return s


def setup_collection(c, a, data: dict, log, scratch: Path) -> dict:
    """Register the model, upload the real photos (PCA fitted on them), grow the index to ``a.n``.

    Memory at n = 1M: the distractors wait in ``scratch`` (mapped, not resident) and the photos
    are dropped before the index transaction, the benchmark's peak (the SDK's three servers'
    share bundles plus the servers staging them)."""
    from client.demo_data import augment
    from client.recipes import build_model
    from wire import bundle as bd

    model = build_model(a.model, a.resolution, a.dim)
    c.register_model(model, resolution=a.resolution)
    originals = data["originals"][: a.upload or None]
    t0 = time.perf_counter()
    ids = c.upload([o.image for o in originals], labels=[o.name for o in originals])
    upload_s = time.perf_counter() - t0
    recipe = c.owner.load_recipe() or {}
    log(f"uploaded {len(ids)} real photos in {upload_s:.1f} s (model {recipe.get('kind')})")
    feats, fids = c.owner.load_features()
    extra = max(0, a.n - len(fids))
    dis = np.zeros((0, feats.shape[1]), np.float32)
    dis_ids = np.zeros(0, np.int64)
    info = None
    if extra:
        if a.distractors == "windows":
            if recipe.get("kind") not in ("efficientnet", "efficientnet_pca"):
                raise SystemExit("window distractors need the efficientnet model (use --distractors synthetic)")
            dis, info = window_distractors(c, a, data, extra, log)
            np.save(scratch / "distractors.npy", dis)
            dis = np.load(scratch / "distractors.npy", mmap_mode="r")
        else:
            from index.synthetic import clustered

            dis = clustered(extra, feats.shape[1], n_clusters=max(8, extra // 500), seed=1)
            dis /= np.linalg.norm(dis, axis=1, keepdims=True)
            info = {"synthetic": True, "from_pool": 0, "pool": 0, "jittered": 0}
        dis_ids = np.arange(DISTRACTOR_ID0, DISTRACTOR_ID0 + extra, dtype=np.int64)
    # more real images for the full index: copies of distractor-half photos (never of a query's photo)
    pool_photos = [o for o, d in zip(data["originals"], data["distractor_half"]) if d]
    more = [augment(np.asarray(pool_photos[j % len(pool_photos)].image), 7_000 + j) for j in range(a.upload_at_n)]
    data["originals"] = pool_photos = None  # the photos are not needed any more
    gc.collect()
    if extra:
        cinfo = c.info()
        t1 = time.perf_counter()
        c.owner.drop_plain_index()  # build the big index from scratch
        imeta, it, after = c._index_bundles(np.concatenate([feats, dis]), np.concatenate([fids, dis_ids]),
                                            cinfo["index_version"])
        if imeta["format"] == "flat":
            raise SystemExit("the flat fallback index cannot hold distractor ids; needs index/ + search")
        txn = str(uuid.uuid4())
        c._transact([bd.Bundle("txn", txn, {"index": imeta}, {f"index/{k}": v for k, v in it[s].items()})
                     for s in range(3)])
        del it
        after(cinfo["index_version"] + 1)
        log(f"index grown to {len(fids) + extra} entries ({imeta}) in {time.perf_counter() - t1:.1f} s")
    t3 = time.perf_counter()
    if more:
        c.upload(more, labels=[f"extra{j}" for j in range(len(more))])
    upload_at_n_s = time.perf_counter() - t3
    at_n_mode = c.last_upload_stats.get("index") if more else None
    log(f"uploaded {len(more)} more images at n={a.n} in {upload_at_n_s:.1f} s (index {at_n_mode})")
    real_f, real_ids = c.owner.load_features()
    return {
        "ids": ids, "model": model, "n_images": int(len(real_ids) + len(dis_ids)),
        "all_features": np.concatenate([real_f, dis]).astype(np.float32, copy=False),
        "all_ids": np.concatenate([real_ids, dis_ids]),
        "figures": {
            "n_real_images": int(len(real_ids)),
            "n_distractors": int(len(dis_ids)),
            "distractors": describe_distractors(info, int(data["distractor_half"].sum())),
            "distractor_pool": None if info is None else info["pool"],
            "distractors_jittered": None if info is None else info["jittered"],
            "distractor_head_check_max_abs_diff": None if info is None else info.get("head_check_max_abs_diff"),
            "owner_model": recipe.get("kind"), "projection": (info or {}).get("head"),
            "upload_images_per_s": round(len(ids) / upload_s, 3),
            "upload_images_per_s_at_n": round(len(more) / upload_at_n_s, 3) if more else None,
            "upload_index_mode_at_n": at_n_mode,
        },
    }


def exact_top(c, images: list[np.ndarray], feats: np.ndarray, ids: np.ndarray, k: int) -> list[set[int]]:
    """Exact plaintext top-k ids (squared L2, float64, stable ties) over every indexed vector, for
    each query image's feature under the owner's plaintext model (``Client.extract_features``)."""
    from PIL import Image

    q = c.extract_features([Image.fromarray(im) for im in images]).astype(np.float64)
    f = feats.astype(np.float64)
    fn = (f ** 2).sum(1)
    out = []
    for v in q:
        d = fn - 2.0 * (f @ v)
        out.append(set(ids[np.argsort(d, kind="stable")[:k]].tolist()))
    return out


# ---- measurements -----------------------------------------------------------------------


def profile_only(a: argparse.Namespace, emit) -> None:
    """``--profile-only``: the per-step breakdown of one query on in-process parties, no servers.

    Same model recipe and index layout as the full run (synthetic clustered features, the
    SDK's choice of sqrt(n) centroids), shared in-process; rounds and bytes do not depend on
    the feature values, only on the public sizes."""
    from client.demo_data import augment, base_images
    from client.model import split_model
    from client.recipes import build_model
    from index import build_index, share_index
    from index.synthetic import clustered
    from protocols.ring import DEFAULT_FP
    from servers.query import LoadedIndex, LoadedModel

    model = build_model(a.model, a.resolution, a.dim)
    arch, weights = split_model(model, [3, a.resolution, a.resolution], DEFAULT_FP)
    x = clustered(a.n, a.dim, n_clusters=max(8, a.n // 500), seed=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n_c = max(1, min(int(round(np.sqrt(a.n))), a.n // 39))
    shares = share_index(build_index(x.astype(np.float32), None, n_c), DEFAULT_FP)
    inproc = InProcess.__new__(InProcess)
    inproc.states = [(LoadedModel(1, arch, weights[i]), LoadedIndex(1, {"format": "ivf"}, shares[i].to_tensors()))
                     for i in range(3)]
    secs, _, prof = inproc.query(augment(base_images()[0][1], 5_000), a.k, a.nprobe)
    tot = prof.totals()
    print(format_table(prof.table()), file=sys.stderr)
    emit({"line": "breakdown", "n_images": a.n, "resolution": a.resolution, "dim": a.dim, "nprobe": a.nprobe,
          "k": a.k, "model": getattr(model, "recipe", {}).get("kind"), "in_process_query_s": round(secs, 3),
          "rounds": tot["rounds"], "bytes_per_party": tot["bytes_per_party"], "steps": prof.by_step(),
          "operations": prof.table()})


def _product_defaults() -> tuple[int, int, int]:
    """(resolution, dim, nprobe) the SDK and CLI use by default (``client.recipes``), else 64, 32, 1."""
    from client import recipes

    return (int(getattr(recipes, "DEFAULT_RESOLUTION", 64)), int(getattr(recipes, "DEFAULT_DIM", 32)),
            int(getattr(recipes, "DEFAULT_NPROBE", 1)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line (see the module docstring, printed by --help)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="index size, real + synthetic (default 1,000,000)")
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 10.0, 30.0],
                    help="round-trip times between servers to emulate, one JSON line each (default 0 10 30)")
    ap.add_argument("--bandwidth-mbps", type=float, default=1000.0,
                    help="egress rate of each server in Mbit/s (0: unlimited; default 1000)")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[],
                    help="also measure queries/s with this many concurrent clients, e.g. 1 4 16")
    ap.add_argument("--concurrency-rtt-ms", type=float, nargs="*", default=None,
                    help="RTTs at which to run the concurrency levels (default: every --rtt-ms)")
    ap.add_argument("--max-sessions", type=int, default=None,
                    help="queries one server runs at once (servers' max_sessions; default: the product default 8, "
                         "raised to the largest --concurrency level so that no session is refused)")
    ap.add_argument("--upload", type=int, default=0,
                    help="real photos in the owner's first upload (timed; the PCA is fitted on them, so it needs "
                         "more than --dim; default 0: every real photo)")
    ap.add_argument("--upload-at-n", type=int, default=20, help="real images uploaded into the full index (timed)")
    ap.add_argument("--distractors", choices=["windows", "synthetic"], default="windows",
                    help="how the index is grown to --n: real window features (default) or synthetic isotropic "
                         "clusters (only for --model tiny / smoke runs: recall is then not meaningful)")
    ap.add_argument("--distractor-resolutions", type=int, nargs="+", default=QUALITY_RESOLUTIONS,
                    help="input sizes at which the distractor photos' trunk maps are taken (default: "
                         "benchmarks.quality's, sharing its cache; the run's --resolution is always added)")
    ap.add_argument("--fill-jitter", type=float, default=0.1,
                    help="jitter of the distractors beyond the pool's size (see the module docstring)")
    ap.add_argument("--shared-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "deid",
                    help="deid photos (scenes/, faces/) added to the bundled photos when present")
    ap.add_argument("--seed", type=int, default=0, help="photo halves, copies, query choice, distractor order")
    ap.add_argument("--no-cache", action="store_true", help="recompute the photos' CNN features (not cached)")
    ap.add_argument("--queries", type=int, default=3, help="sequential queries per RTT (median reported)")
    ap.add_argument("--k", type=int, default=10, help="results per query")
    res, dim, nprobe = _product_defaults()
    ap.add_argument("--nprobe", type=int, default=nprobe, help=f"buckets probed per query (product default {nprobe})")
    ap.add_argument("--model", default="auto", help="auto, efficientnet or tiny")
    ap.add_argument("--resolution", type=int, default=res, help=f"model input size in pixels (product default {res})")
    ap.add_argument("--dim", type=int, default=dim, help=f"feature dimension (product default {dim})")
    ap.add_argument("--no-direct-baseline", dest="direct_baseline", action="store_false",
                    help="skip the rtt-0 line without the proxy (servers restarted with direct peer links)")
    ap.add_argument("--profile-only", action="store_true",
                    help="only the per-step round/byte breakdown of one query, in-process parties, no servers")
    ap.add_argument("--json", action="store_true", help="print only the JSON lines on stdout (progress on stderr)")
    a = ap.parse_args(argv)
    if a.n < 1 or a.queries < 1 or a.k < 1 or a.nprobe < 1 or any(r < 0 for r in a.rtt_ms):
        ap.error("--n, --queries, --k, --nprobe must be >= 1 and --rtt-ms >= 0")
    if any(c < 1 or c > 32 for c in a.concurrency):
        ap.error("--concurrency levels must be in 1..32")
    if a.max_sessions is None:
        a.max_sessions = max([8] + a.concurrency)
    return a


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the JSON lines."""
    a = parse_args(argv)
    # Same per-party compute as the servers (TRIVAULT_TORCH_THREADS, default 1).
    threads = int(os.environ.get("TRIVAULT_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    out = sys.stdout
    if a.json:  # libraries print (e.g. "Loaded pretrained weights"): keep stdout for the JSON lines only
        sys.stdout = sys.stderr
    log = (lambda *m: print(*m, file=sys.stderr, flush=True)) if a.json else print
    emit = lambda d: print(json.dumps(d), file=out, flush=True)  # noqa: E731
    try:
        if a.profile_only:
            profile_only(a, emit)
        else:
            _run(a, log, emit, threads)
    finally:
        sys.stdout = out


def _run(a: argparse.Namespace, log, emit, threads: int) -> None:
    """Start the WAN-shaped cluster, set up the collection, measure and emit every line."""
    bw = a.bandwidth_mbps or None
    import protocols.simulate  # noqa: F401
    import servers.query  # noqa: F401  - load the protocol code now, as the servers about to start do
    from client.sdk import Client

    data = real_data(a)
    log(f"{len(data['originals'])} real photos ({data['shared_dir']}); queries: "
        + ", ".join(data["query_names"][: a.queries]))
    with tempfile.TemporaryDirectory(prefix="trivault-bench-") as tmp, WanEmulator() as wan:
        root = Path(tmp)
        with wan_cluster(root, wan, bw, a.max_sessions, query_timeout_s=600.0, peer_timeout_s=180.0) as lc, \
                Client(lc.client_config, progress=False) as c:
            col = setup_collection(c, a, data, log, root)
            images = data["query_images"]
            exact = exact_top(c, images, col["all_features"], col["all_ids"], a.k)  # every image (concurrency too)
            del col["all_features"]
            t2 = time.perf_counter()
            for i in col["ids"][:3]:
                c.retrieve(i)
            col["figures"]["retrieve_s"] = round((time.perf_counter() - t2) / max(1, min(3, len(col["ids"]))), 4)
            run = Runner(a, c, wan, InProcess(root), images, exact, bw, log, lc)
            base = {"n_images": col["n_images"], "resolution": a.resolution, "dim": a.dim, "nprobe": a.nprobe,
                    "k": a.k, "model": getattr(col["model"], "recipe", {}).get("kind")}
            extra = {
                **col["figures"],
                "queries": a.queries,
                # how much of the exact top-k the distractors take (0: they never compete with the photos)
                "exact_topk_from_distractors": round(float(np.mean([sum(i >= DISTRACTOR_ID0 for i in e) / a.k
                                                                     for e in exact[: a.queries]])), 4),
                "query_images": data["query_names"][: a.queries],
                "cores": os.cpu_count(),
                "torch_threads_per_party": threads,
            }
            if a.direct_baseline:  # rtt 0 without the proxy: what gRPC alone costs
                lc.restart(via_proxy=False)
                emit({"line": "direct", "rtt_ms": 0.0, "bandwidth_mbps": None, **base, **run.measure(None), **extra})
                lc.restart(via_proxy=True)
            if run.profile is None:  # no direct line: profile one query now
                run.profile = run.inproc.query(images[0], a.k, a.nprobe)[2]
            prof = run.profile
            tot = prof.totals()
            log(format_table(prof.by_step()))
            emit({"line": "breakdown", **base, "rounds": tot["rounds"], "bytes_per_party": tot["bytes_per_party"],
                  "steps": prof.by_step(), "operations": prof.table()})
            rtts = sorted(a.rtt_ms)
            conc_rtts = rtts if a.concurrency_rtt_ms is None else a.concurrency_rtt_ms
            for rtt in rtts:
                emit({"line": "rtt", "rtt_ms": rtt, "bandwidth_mbps": a.bandwidth_mbps, **base, **run.measure(rtt),
                      **extra})
            if not a.concurrency:
                return
            # after every RTT line, lowest level first: the biggest (memory) comes last
            run.inproc.states = []  # the in-process reference is not needed any more
            gc.collect()
            for level in sorted(a.concurrency):
                for rtt in sorted(conc_rtts):
                    wan.set_delay(rtt / 2000.0)
                    try:
                        r = concurrent_queries(lc.client_config, images, level, a.k, a.nprobe, exact=exact)
                    except Exception as exc:  # noqa: BLE001 - e.g. a server OOM-killed: report, keep the lines
                        emit({"line": "concurrency", "rtt_ms": rtt, "clients": level, "error": f"{exc!r}"[:300]})
                        return
                    log(f"rtt {rtt} ms, {level} clients: {r['queries_per_s']} queries/s")
                    emit({"line": "concurrency", "rtt_ms": rtt, "bandwidth_mbps": a.bandwidth_mbps, **base,
                          **r, "server_max_sessions": a.max_sessions,
                          "load_avg_1m": round(os.getloadavg()[0], 2)})


def server_cpu_s(cluster) -> list[float]:
    """User + system CPU seconds of each running server process so far (``/proc/PID/stat``; [] if unknown)."""
    if cluster is None:
        return []
    try:
        return [cpu_seconds(cluster.procs[i].pid) for i in sorted(cluster.procs)]
    except OSError:
        return []


class Runner:
    """Sequential queries at one RTT, each next to the same query on in-process parties."""

    def __init__(self, a: argparse.Namespace, client, wan: WanEmulator, inproc: InProcess,
                 images: list[np.ndarray], exact: list[set[int]], bw: float | None, log, cluster=None) -> None:
        self.a, self.c, self.wan, self.inproc, self.cluster = a, client, wan, inproc, cluster
        self.images, self.exact, self.bw, self.log = images, exact, bw, log
        self.compute_scale = 1.0
        self.profile: RoundProfiler | None = None

    def measure(self, rtt: float | None) -> dict:
        """One JSON line's figures at ``rtt`` ms (None: direct links, no proxy, no shaping)."""
        a, c = self.a, self.c
        self.wan.set_delay((rtt or 0.0) / 2000.0)
        c.search(self.images[-1], k=a.k, nprobe=a.nprobe)  # warm-up at this delay (servers load, windows grow)
        grpc_s, proc_s, comm, hits, same = [], [], [], [], []
        wire0 = [b.bytes for b in egress_buckets(self.wan)]
        cpu = []  # CPU seconds each server process spent on the gRPC query
        proc_cpu = []  # CPU seconds of the three in-process parties together
        for q in range(a.queries):
            ps, pids, prof = self.inproc.query(self.images[q], a.k, a.nprobe)
            proc_cpu.append(self.inproc.cpu_s)
            self.profile = self.profile or prof
            c0 = server_cpu_s(self.cluster)
            r = c.search_results(self.images[q], k=a.k, nprobe=a.nprobe)[0]
            cpu.append([round(x1 - x0, 3) for x0, x1 in zip(c0, server_cpu_s(self.cluster))])
            grpc_s.append(r.seconds)
            proc_s.append(ps)
            comm.append(r.comm)
            hits.append(len(set(r.ids) & self.exact[q]) / a.k)
            same.append(r.ids == pids)
            self.log(f"rtt {rtt} ms query {q}: {r.seconds:.2f} s (in-process {ps:.2f} s), "
                     f"{r.bytes_per_party / 1e6:.2f} MB/party")
        wire = [(b.bytes - w0) / a.queries for b, w0 in zip(egress_buckets(self.wan), wire0)]
        q_s, p_s = float(np.median(grpc_s)), float(np.median(proc_s))
        tot = self.profile.totals()
        cnn_r, search_r = cnn_search_rounds(self.profile)
        out = {"query_s": round(q_s, 4), "query_runs_s": [round(x, 3) for x in grpc_s],
               "in_process_query_s": round(p_s, 4), "in_process_runs_s": [round(x, 3) for x in proc_s],
               "rounds_per_query": int(comm[0][0]["rounds"]), "cnn_rounds": cnn_r, "search_rounds": search_r,
               "bytes_per_party_per_query": int(np.mean([[x["bytes_sent"] for x in cm] for cm in comm])),
               "bytes_max_party_per_query": int(max(x["bytes_sent"] for cm in comm for x in cm)),
               "recall_at_10_vs_exact" if a.k == 10 else f"recall_at_{a.k}_vs_exact": round(float(np.mean(hits)), 4),
               "recall_runs": [round(h, 2) for h in hits],
               "same_ids_grpc_vs_in_process": all(same), "grpc_overhead": round(q_s / p_s - 1.0, 4),
               "server_cpu_s_per_query": [round(float(np.median([r[i] for r in cpu])), 3) for i in range(len(cpu[0]))]
               if cpu and cpu[0] else None,
               "in_process_cpu_s_per_query": round(float(np.median(proc_cpu)), 3),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
        if rtt is None:
            return out
        out["profile_matches_servers"] = tot["rounds"] == out["rounds_per_query"] and \
            tot["bytes_max_party"] == out["bytes_max_party_per_query"]
        # what the servers ran (equal to the in-process profile unless the protocol code changed in between)
        model = CostModel(p_s, out["rounds_per_query"], out["bytes_max_party_per_query"])
        if rtt == 0:
            self.compute_scale = model.fit_compute_scale(q_s, 0.0, self.bw)
        pred = CostModel(p_s, model.rounds, model.bytes_max_party, self.compute_scale).predict(rtt, self.bw)
        out.update({"wire_bytes_per_server_per_query": [int(w) for w in wire],
                    "predicted_query_s": round(pred, 4),
                    "predicted_query_s_unfitted": round(model.predict(rtt, self.bw), 4),
                    "compute_scale": round(self.compute_scale, 4),
                    "model_error": round(agreement(pred, q_s), 4)})
        return out


if __name__ == "__main__":
    main()
