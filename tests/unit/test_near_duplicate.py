"""Retrieval with secure features ranks like retrieval with plaintext features.

Near-duplicate task from the package-shipped photos (scikit-image and scikit-learn): the
database holds every original plus a cropped, a rotated and a colour-shifted copy; each
query is a further modified copy (crop + rotation + colour shift + JPEG recompression) of
an original (every second photo). Queries' features are computed SECURELY (three parties, batched in one
pass); the owner's database features in plaintext with the same model. Required: mean
top-10 overlap between the secure and plaintext rankings >= 0.95, and the original found
as often as with plaintext features.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageEnhance
from skimage import data
from sklearn.datasets import load_sample_images

from client.features import extract_features
from client.model import default_feature_model, split_model
from client.preprocess import preprocess, to_pil
from protocols.nn import SecureModel
from protocols.ring import DEFAULT_FP
from protocols.sharing import from_pair, output_pair, reconstruct, share_fixed
from protocols.simulate import run_parties

RES = 64
SKIMAGE = [
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse", "immunohistochemistry",
    "hubble_deep_field", "moon", "page", "text", "clock", "retina", "colorwheel", "logo", "grass",
    "gravel", "brick", "cell",
]


def sample_photos() -> list[Image.Image]:
    ims = [to_pil(getattr(data, n)()) for n in SKIMAGE]
    ims += [to_pil(a) for a in load_sample_images().images]
    return [im.resize((min(im.width, 512), min(im.height, 512))) if max(im.size) > 512 else im for im in ims]


def crop(im: Image.Image, rng: np.random.Generator, frac: float) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * frac), int(h * frac)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x0, y0, x0 + cw, y0 + ch))


def rotate(im: Image.Image, deg: float) -> Image.Image:
    return im.rotate(deg, resample=Image.BILINEAR, expand=False, fillcolor=(128, 128, 128))


def colour(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, dtype=np.float32) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.8, 1.2)))


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def build_task(seed: int = 0):
    rng = np.random.default_rng(seed)
    origs = sample_photos()
    db, db_src, queries, q_src = [], [], [], []
    for i, im in enumerate(origs):
        db += [im, crop(im, rng, 0.85), rotate(im, float(rng.uniform(-12, 12))), colour(im, rng)]
        db_src += [i] * 4
        q = jpeg(colour(rotate(crop(im, rng, 0.9), float(rng.uniform(-8, 8))), rng), int(rng.integers(30, 60)))
        if i % 2 == 0:  # 11 queries keep the secure pass short; all 22 photos are in the database
            queries.append(q)
            q_src.append(i)
    return db, np.array(db_src), queries, np.array(q_src)


def secure_features(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    arch, weights = split_model(model, tuple(x.shape[1:]))
    xs = share_fixed(x.double())

    def party_fn(p, w, xp):
        return output_pair(SecureModel.from_shares(p, arch, w).forward(from_pair(p, xp, 16)))

    out = run_parties(party_fn, [(weights[i], xs[i]) for i in range(3)])
    return DEFAULT_FP.decode(reconstruct(out)).numpy().astype(np.float32)


def ranking(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    d = (q**2).sum(1, keepdims=True) - 2 * q @ db.T + (db**2).sum(1)[None]
    return np.argsort(d, axis=1, kind="stable")


def test_secure_features_rank_like_plaintext() -> None:
    model = default_feature_model(RES)
    db, db_src, queries, q_src = build_task()
    db_feats = extract_features(model, db, batch_size=32)  # owner, plaintext
    xq = torch.stack([preprocess(q, RES) for q in queries])
    plain_q = extract_features(model, xq)
    sec_q = secure_features(model, xq)  # one batched secure pass over all queries
    assert np.abs(sec_q - plain_q).max() < 2e-3
    r_plain, r_sec = ranking(plain_q, db_feats), ranking(sec_q, db_feats)
    overlap = np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(r_plain, r_sec)])
    assert overlap >= 0.95, overlap
    hit_plain = np.mean([q_src[i] in db_src[r_plain[i, :4]] for i in range(len(queries))])
    hit_sec = np.mean([q_src[i] in db_src[r_sec[i, :4]] for i in range(len(queries))])
    assert hit_sec >= hit_plain - 1e-9
    assert hit_plain >= 0.8, hit_plain  # the task is meaningful: near-duplicates are found
