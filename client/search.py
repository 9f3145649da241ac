"""The querier's secure search: share the queries, reconstruct the servers' top-k.

``search`` takes one image, a list of images or a ``[Q, d]`` feature array and runs all
``Q`` queries in ONE secure session (the protocols take a batch): the servers run the
secure CNN (images only) and the oblivious index search on the shares; each returns its
shares of the ``[Q, k]`` top-k ids and distances, and only this client reconstructs them.
The reconstruction of the ids is checked: a server that skipped the masking of ids hidden
by policy (or sent a wrong share) is named (``InconsistentSharesError.suspects``).

The request states the servers' security mode (``[security] mode``, the same on all three:
``Fanout.info`` checks it) and each server refuses a request that expects another mode. In
malicious mode a server whose check of its peers' messages fails aborts the query before any
result share leaves it; the client then raises :class:`client.errors.MaliciousServerError`
naming the server pair that disagreed (``.suspects``): no result is released. Malicious-mode
image queries run one session each, one after another (``wire.security_mode.MALICIOUS_IMAGE_QUERIES``:
each image's checked CNN holds about a GB per server until the session's proof).

``nprobe`` above the number of buckets probes them all (the default, from
``benchmarks.quality``, is sized for n = 1M). ``k`` above the candidates the index can
return (``nprobe x bucket size``) first widens
``nprobe`` (up to the number of buckets), then runs with the largest ``k`` that exists; the
caller gets a :class:`TriVaultWarning` and ``SearchBatch.note``. Results are faiss-shaped:
``[Q, k]`` with id ``-1`` and distance ``inf`` where nothing (visible) was found.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

from protocols.layout import max_sqnorm
from protocols.ring import DEFAULT_FP
from protocols.sharing import SharePair, reconstruct, share_fixed
from wire import bundle as bd
from wire.security_mode import MALICIOUS_IMAGE_QUERIES

from .errors import TriVaultError, TriVaultWarning
from .images import ImageInput, load_image_bytes
from .transport import Fanout, Sign

QueryInput = ImageInput | Sequence[ImageInput] | np.ndarray
MAX_K = 1000  # the servers' admission limit
MAX_QUERIES = 64  # queries per secure session (the servers' admission limit)


@dataclass
class SearchResult:
    """One query's results, best first, without padding or hidden ids; ``labels`` are the
    owner's names for the ids (None where this client does not know the name)."""

    ids: list[int]
    distances: list[float]
    labels: list[str | None]
    seconds: float
    server_seconds: float
    comm: list[dict[str, int]] = field(default_factory=list)
    mode: str = "topk"
    note: str | None = None

    @property
    def bytes_per_party(self) -> float:
        """Mean bytes sent per server during the protocol (the whole batch's session)."""
        return float(np.mean([c["bytes_sent"] for c in self.comm])) if self.comm else 0.0


@dataclass
class SearchBatch:
    """All queries of one search call (one session; malicious image queries: one session each, their
    times and counters summed): faiss-shaped ``distances`` (float32) and ``ids`` (int64) of
    shape ``[Q, k]``, padded with ``inf`` / ``-1``, plus timing, communication and the k and
    nprobe actually run (``note`` says why they differ from the request)."""

    distances: np.ndarray
    ids: np.ndarray
    seconds: float
    server_seconds: float
    comm: list[dict[str, int]]
    k_run: int
    nprobe_run: int
    note: str | None = None
    security: str = "semi_honest"  # the servers' mode: "malicious" results were proved before release

    def results(self, label_of: Callable[[int], str | None] = lambda i: None) -> list[SearchResult]:
        """One :class:`SearchResult` per query (padding dropped), with labels from ``label_of``."""
        out = []
        for drow, irow in zip(self.distances, self.ids):
            keep = irow >= 0
            ids = [int(i) for i in irow[keep]]
            out.append(SearchResult(ids, [float(d) for d in drow[keep]], [label_of(i) for i in ids], self.seconds,
                                    self.server_seconds, self.comm, "topk", self.note))
        return out


def plan_k(k: int, nprobe: int, n_centroids: int, bucket_size: int, n_images: int) -> tuple[int, int, str | None]:
    """(k to run, nprobe to run, note) so that ``k <= nprobe x bucket_size <= C x B`` and ``k <= 1000``."""
    if k < 1 or nprobe < 1:
        return k, nprobe, None  # the servers refuse it with the allowed ranges
    notes = []
    run_nprobe, run_k = min(nprobe, n_centroids), k  # more probes than buckets: all of them
    if k > run_nprobe * bucket_size and run_nprobe < n_centroids:
        run_nprobe = min(n_centroids, math.ceil(k / bucket_size))
        notes.append(f"nprobe widened from {nprobe} to {run_nprobe} to reach k={k} "
                     f"(each bucket holds {bucket_size} candidates)")
    cap = min(run_nprobe * bucket_size, MAX_K)
    if k > cap:
        run_k = cap
        notes.append(f"k={k} is more than the {cap} candidates the index can return; searched with k={cap}")
    if k > n_images:
        notes.append(f"only {n_images} image(s) stored: missing results are id -1, distance inf")
    return run_k, run_nprobe, "; ".join(notes) or None


def prepare_queries(queries: QueryInput, info: dict[str, Any]) -> tuple[str, torch.Tensor]:
    """("image", float64 [Q, 3, R, R]) or ("features", float64 [Q, d]) for the servers."""
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().numpy()
    if isinstance(queries, np.ndarray) and queries.ndim <= 2 and np.issubdtype(queries.dtype, np.floating):
        feats = np.atleast_2d(queries).astype(np.float64)
        dim = int((info.get("index_meta") or {}).get("dim", int(feats.shape[1])))
        if feats.shape[1] != dim or len(feats) == 0:
            raise ValueError(f"feature queries must be [Q, {dim}] (the index dimension), got {list(queries.shape)}")
        if not np.isfinite(feats).all():
            raise ValueError("feature queries must be finite")
        meta = info.get("index_meta") or {}
        if "id_bits" in meta:  # the secure top-k's key range holds queries no larger than the data's bound
            limit = max_sqnorm(int(meta["id_bits"]), int(meta.get("frac_bits", DEFAULT_FP.frac_bits)))
            top = float((feats**2).sum(-1).max())
            if top >= limit:
                raise ValueError(f"feature queries must have squared L2 norm below {limit:g} for this index "
                                 f"(got {top:.3g}); normalise them as the indexed features are")
        return "features", torch.from_numpy(feats)
    if isinstance(queries, (str, Image.Image)) or (hasattr(queries, "__fspath__")) or \
            (isinstance(queries, np.ndarray) and queries.ndim in (2, 3)):
        items: list[ImageInput] = [queries]  # type: ignore[list-item]
    elif isinstance(queries, np.ndarray) and queries.ndim == 4:
        items = list(queries)
    elif isinstance(queries, (list, tuple)):
        items = list(queries)
    else:
        raise TypeError(f"unsupported query input {type(queries).__name__}: give an image (path, PIL, HxWxC array), "
                        "a list of images or a [Q, d] float feature array")
    if not items:
        raise ValueError("no query given")
    if not info.get("arch"):
        raise TriVaultError("no model registered on the servers")
    from .preprocess import crop_fraction_of, preprocess_batch

    arch = info["arch"]
    res, crop = int(arch["input_shape"][-1]), crop_fraction_of(arch)
    return "image", preprocess_batch([load_image_bytes(x)[1] for x in items], res, crop).to(torch.float64)


def search(fan: Fanout, sign: Sign, queries: QueryInput, k: int = 10, nprobe: int = 1,
           collection: str = "default", purpose: str | None = None, timeout_s: float = 60.0,
           progress: bool = False) -> SearchBatch:
    """Secure top-k search of one or several queries in one session (in malicious mode, image queries run
    ``MALICIOUS_IMAGE_QUERIES`` per session, one after another: the servers' limit); see the module docstring."""
    info = fan.info()
    if not info["image_ids"]:
        raise TriVaultError("no images uploaded yet")
    kind, x = prepare_queries(queries, info)
    if len(x) > MAX_QUERIES:
        raise ValueError(f"at most {MAX_QUERIES} queries per search call, got {len(x)}")
    imeta = info.get("index_meta") or {}
    k_run, nprobe_run, note = plan_k(int(k), int(nprobe), int(imeta.get("n_centroids", 1)),
                                     int(imeta.get("bucket_size", MAX_K)), len(info["image_ids"]))
    if note:
        warnings.warn(note, TriVaultWarning, stacklevel=3)
    meta = {"k": k_run, "nprobe": nprobe_run, "input": kind, "index_version": info["index_version"],
            "model_version": info["model_version"], "security": info.get("security", "semi_honest")}
    checked_images = kind == "image" and meta["security"] == "malicious"
    per_session = MALICIOUS_IMAGE_QUERIES if checked_images else len(x)
    desc = "secure search (malicious mode: minutes per image)" if checked_images else "secure search"
    batches = []
    with tqdm(total=len(x), desc=desc, unit="query", disable=not progress, leave=False) as bar:
        for s in range(0, len(x), per_session):  # malicious image queries: a session each (the servers' limit)
            chunk = x[s: s + per_session]
            batches.append(_session(fan, sign, chunk, meta, int(k), collection, purpose, timeout_s))
            bar.update(len(chunk))
    b0 = batches[0]
    comm = [{key: sum(b.comm[i].get(key, 0) for b in batches) for key in b0.comm[i]} for i in range(len(b0.comm))]
    return SearchBatch(np.concatenate([b.distances for b in batches]), np.concatenate([b.ids for b in batches]),
                       sum(b.seconds for b in batches), sum(b.server_seconds for b in batches), comm,
                       k_run, nprobe_run, note, meta["security"])


def _session(fan: Fanout, sign: Sign, x: torch.Tensor, meta: dict[str, Any], k: int, collection: str,
             purpose: str | None, timeout_s: float) -> SearchBatch:
    """One secure search session of the queries ``x`` (all three servers); its results and counters."""
    pairs = share_fixed(x, DEFAULT_FP)
    sid = str(uuid.uuid4())
    t0 = time.perf_counter()
    auth = sign("search", {"session": sid, "collection": collection, "purpose": purpose, "k": meta["k"]})

    def one(i: int) -> bd.Bundle:
        b = bd.Bundle("search", sid, meta, bd.pairs_to_tensors("query", pairs[i]), auth)
        return bd.decode(fan.stubs[i].Search(bd.encode(b), timeout=timeout_s))

    outs = fan.all(one)
    secs = time.perf_counter() - t0
    dist, ids = reconstruct_topk(outs, k)
    return SearchBatch(dist, ids, secs, max(o.meta["seconds"] for o in outs), [o.meta["comm"] for o in outs],
                       meta["k"], meta["nprobe"], None, meta["security"])


def reconstruct_topk(outs: list[bd.Bundle], k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss-shaped ``(distances [Q, k] float32, ids [Q, k] int64)``: each row's found ids in
    order, then ``-1`` / ``inf`` (padding, hidden ids, or k above what was run)."""
    f = DEFAULT_FP.frac_bits
    pairs: dict[str, list[SharePair]] = {n: [bd.tensors_to_pair(o.tensors, n) for o in outs] for n in ("ids", "dist")}
    dist = (reconstruct(pairs["dist"]).to(torch.float64) / (1 << f)).numpy()
    got = reconstruct(pairs["ids"], check=True).numpy()  # a server that skipped the masking of hidden ids is named
    dist, got = np.atleast_2d(dist), np.atleast_2d(got)
    out_d = np.full((got.shape[0], k), np.inf, dtype=np.float32)
    out_i = np.full((got.shape[0], k), -1, dtype=np.int64)
    for q in range(got.shape[0]):
        keep = np.flatnonzero(got[q] >= 0)[:k]
        out_i[q, :len(keep)] = got[q, keep]
        out_d[q, :len(keep)] = dist[q, keep]
    return out_d, out_i
