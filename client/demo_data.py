"""The demo's bundled real images (shipped offline by scikit-image and scikit-learn) and
deterministic augmented copies (crop, flip, brightness, small rotation)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from .preprocess import rgb_uint8

SKIMAGE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse", "moon", "clock",
                 "hubble_deep_field", "immunohistochemistry", "colorwheel", "grass", "gravel", "brick",
                 "stereo_motorcycle", "cell")


def base_images() -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8 array) of every bundled sample photo that loads offline."""
    from skimage import data
    from sklearn.datasets import load_sample_images  # type: ignore[import-untyped]

    out: list[tuple[str, np.ndarray]] = []
    for n in SKIMAGE_NAMES:
        try:
            a = getattr(data, n)()
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        a = a[0] if isinstance(a, tuple) else a
        out.append((n, rgb_uint8(a)))
    ds = load_sample_images()
    for name, a in zip(("china", "flower"), ds.images):
        out.append((name, rgb_uint8(a)))
    return out


def augment(a: np.ndarray, seed: int) -> np.ndarray:
    """One deterministic augmented copy of ``a``."""
    rng = np.random.default_rng(seed)
    im = Image.fromarray(a)
    w, h = im.size
    f = rng.uniform(0.75, 0.95)
    cw, ch = int(w * f), int(h * f)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = im.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR)
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.8, 1.2)))
    return np.asarray(im)


def demo_collection(copies: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """Originals plus ``copies`` augmented copies each; labels name the source photo."""
    imgs, labels = [], []
    for k, (name, a) in enumerate(base_images()):
        imgs.append(a)
        labels.append(name)
        for c in range(copies):
            imgs.append(augment(a, 1000 * k + c))
            labels.append(name)
    return imgs, labels
