"""Plaintext features for ``benchmarks.quality``: the product's model, preprocessing and heads.

* :func:`extract` runs ``client.model.default_feature_model(res)``'s trunk and pool
  (``model[0]``, ``model[1]``) on ``client.preprocess.preprocess(image, res)`` for every
  original and query at every resolution in one pass over the images (each query is
  rendered once), and keeps the pooled 1280-d features; for the images listed in
  ``map_images`` it also keeps the trunk's final feature map (float16) to make
  distractors. Results are cached in ``cache_dir`` under a key of everything they
  depend on (image names and sizes, queries, seed, resolutions, the model's weights,
  the source of the preprocessing and data modules).
* :func:`head` applies a projection head exactly as the product model does after the
  pool: ``Linear`` (random: the seeded map of ``default_feature_model(res, out_dim)``,
  PCA: ``client.projection``) then L2 normalisation.
* :func:`window_features` makes distractor features: the pool of every proper
  sub-rectangle of a feature map (features of crops, computed in feature space),
  through the same head.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from client import model as client_model
from client import preprocess as client_preprocess
from client.preprocess import preprocess
from client.projection import PcaProjection

from . import quality_data
from .quality_data import Original, Query, render_query


@dataclass
class ResolutionFeatures:
    resolution: int
    db: np.ndarray  # [N, 1280] float32 pooled
    queries: np.ndarray  # [Q, 1280] float32 pooled
    maps: np.ndarray  # [M, 1280, h, w] float16 trunk maps of the map images
    seconds: float = 0.0


@dataclass
class Head:
    """``kind`` none | random | pca | pca_whiten; ``weight`` [d, 1280] / ``bias`` [d] (None for none)."""

    kind: str
    dim: int
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _model_fingerprint() -> str:
    """Hash of the product model's folded weights (what the features depend on, not its source code)."""
    h = hashlib.sha256()
    for k, v in client_model.default_feature_model(64).state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cache_key(originals: list[Original], queries: list[Query], seed: int, resolutions: list[int]) -> str:
    h = hashlib.sha256()
    for o in originals:
        h.update(f"{o.name}:{o.image.size}".encode())
    for q in queries:
        h.update(f"{q.source}:{q.transform}".encode())
    h.update(repr((seed, sorted(resolutions))).encode())
    for mod in (client_preprocess, quality_data):
        h.update(inspect.getsource(mod).encode())
    h.update(_model_fingerprint().encode())
    return h.hexdigest()[:20]


def _models(resolutions: list[int]) -> dict[int, torch.nn.Sequential]:
    """The product model per resolution; channels-last memory layout (same maths, ~1.7x faster on CPU)."""
    return {r: client_model.default_feature_model(r).to(memory_format=torch.channels_last) for r in resolutions}


@torch.inference_mode()
def _run(originals, queries, resolutions, map_images: np.ndarray, seed: int, batch: int, progress: bool):
    import time

    models = _models(resolutions)
    n = len(originals) + len(queries)
    pooled = {r: np.zeros((n, 1280), np.float32) for r in resolutions}
    maps: dict[int, list[np.ndarray]] = {r: [] for r in resolutions}
    secs = {r: 0.0 for r in resolutions}
    keep = np.zeros(n, bool)
    keep[map_images] = True
    bar = tqdm(total=n, desc="features", unit="img", file=sys.stderr, disable=not progress)
    for s in range(0, n, batch):
        idx = range(s, min(n, s + batch))
        ims = [originals[i].image if i < len(originals) else render_query(queries[i - len(originals)], originals, seed)
               for i in idx]
        for r in resolutions:
            t0 = time.perf_counter()
            x = torch.stack([preprocess(im, r) for im in ims]).to(memory_format=torch.channels_last)
            fmap = models[r][0](x)
            fmap = fmap.contiguous()
            pooled[r][s:s + len(ims)] = models[r][1](fmap).numpy()
            secs[r] += time.perf_counter() - t0
            sel = keep[s:s + len(ims)]
            if sel.any():
                maps[r].append(fmap[torch.from_numpy(sel)].numpy().astype(np.float16))
        bar.update(len(ims))
    bar.close()
    return pooled, maps, secs


def extract(originals: list[Original], queries: list[Query], resolutions: list[int], map_images: np.ndarray,
            seed: int, cache_dir: Path | None, batch: int = 16, progress: bool = True) -> dict[int, ResolutionFeatures]:
    """Pooled features of originals and queries per resolution (+ maps of ``map_images``), cached."""
    files = {}
    if cache_dir:
        key = _cache_key(originals, queries, seed, resolutions) + hashlib.sha256(map_images.tobytes()).hexdigest()[:8]
        files = {r: cache_dir / f"quality-{key}-{r}.npz" for r in resolutions}
    if files and all(f.exists() for f in files.values()):
        out = {}
        for r, f in files.items():
            with np.load(f) as z:
                out[r] = ResolutionFeatures(r, z["db"], z["queries"], z["maps"], float(z["seconds"]))
        return out
    pooled, maps, secs = _run(originals, queries, resolutions, map_images, seed, batch, progress)
    n0 = len(originals)
    out = {}
    for r in resolutions:
        m = np.concatenate(maps[r]) if maps[r] else np.zeros((0, 1280, 1, 1), np.float16)
        out[r] = ResolutionFeatures(r, pooled[r][:n0], pooled[r][n0:], m, secs[r])
        if cache_dir:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = files[r].with_suffix(".tmp.npz")
            np.savez(tmp, db=out[r].db, queries=out[r].queries, maps=m, seconds=secs[r])
            tmp.replace(files[r])
    return out


def random_head(dim: int) -> Head:
    """The product's seeded random projection (taken from ``default_feature_model(64, dim)``)."""
    m = client_model.default_feature_model(64, out_dim=dim)
    return Head("random", dim, m[2].weight.detach().double().numpy(), None)


def pca_head(pca: PcaProjection) -> Head:
    kind = "pca_whiten" if pca.whiten else "pca"
    return Head(kind, pca.out_dim, pca.weight, pca.bias, {"n_fit": pca.n_samples})


def head(h: Head, pooled: np.ndarray) -> np.ndarray:
    """Projection (if any) then L2 normalisation: the product model's layers after the pool."""
    x = np.asarray(pooled, dtype=np.float64)
    if h.weight is not None:
        x = x @ h.weight.T
        if h.bias is not None:
            x = x + h.bias
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _windows(h: int, w: int) -> list[tuple[int, int, int, int]]:
    return [(y0, y1, x0, x1) for y0 in range(h) for y1 in range(y0 + 1, h + 1) for x0 in range(w)
            for x1 in range(x0 + 1, w + 1) if (y1 - y0, x1 - x0) != (h, w)]


def window_count(maps: np.ndarray) -> int:
    return len(maps) * len(_windows(*maps.shape[2:])) if len(maps) else 0


def window_features(h: Head, maps: np.ndarray) -> np.ndarray:
    """Head outputs of the pool over every proper sub-rectangle of every map [M, 1280, h, w].

    Projection and pooling are both linear, so each map is projected per cell first and
    the window means come from its summed-area table (cheap for every window).
    """
    if not len(maps):
        return np.zeros((0, h.dim), np.float32)
    H, W = maps.shape[2:]
    win = _windows(H, W)
    y0, y1, x0, x1 = (np.array(v) for v in zip(*win))
    area = ((y1 - y0) * (x1 - x0)).astype(np.float64)
    chunk = max(1, int(2e7 // (len(win) * max(h.dim, 1280 if h.weight is None else h.dim))))
    out = []
    for s in range(0, len(maps), chunk):
        m = maps[s:s + chunk].astype(np.float64)  # [c, 1280, H, W]
        if h.weight is not None:
            m = np.einsum("dk,ckhw->cdhw", h.weight, m)
        sat = np.zeros(m.shape[:2] + (H + 1, W + 1))
        sat[:, :, 1:, 1:] = m.cumsum(2).cumsum(3)
        sums = sat[:, :, y1, x1] - sat[:, :, y0, x1] - sat[:, :, y1, x0] + sat[:, :, y0, x0]  # [c, d, nw]
        feats = (sums / area).transpose(0, 2, 1).reshape(-1, m.shape[1])
        if h.bias is not None:
            feats = feats + h.bias
        out.append((feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)).astype(np.float32))
    return np.concatenate(out)
