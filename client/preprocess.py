"""Image preprocessing shared by the data owner and the querier (must be bit-identical).

Steps: load as RGB -> resize the shorter side to ``round(resolution / 0.875)`` (bicubic)
-> centre crop ``resolution x resolution`` -> scale to roughly [-1, 1] with
``(pixel - 127) / 128``, the normalisation the TensorFlow EfficientNet-Lite checkpoints
were trained with (it classifies the sample photos more confidently than ImageNet
mean/std; see ``tests/unit/test_model.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

MEAN = 127.0
STD = 128.0
CROP_FRACTION = 0.875

ImageLike = np.ndarray | Image.Image | str | Path


def rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An image array (HxW grey, HxWx3 RGB or HxWx4 RGBA; uint8, bool, or float in [0, 1] or
    [0, 255]) -> contiguous HxWx3 uint8 RGB. The one array normalisation of the client."""
    a = image
    if a.dtype != np.uint8:
        a = np.asarray(a, dtype=np.float64)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"image array must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    return np.ascontiguousarray(a[:, :, :3])


def to_pil(image: ImageLike) -> Image.Image:
    """Any supported image (array HxW / HxWx3 / HxWx4, PIL image, file path) -> RGB PIL image."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(rgb_uint8(image))
    raise TypeError(f"unsupported image type {type(image).__name__}")


def preprocess(image: ImageLike, resolution: int = 224) -> torch.Tensor:
    """Resize, centre crop and normalise one image -> float32 tensor [3, resolution, resolution]."""
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    im = to_pil(image)
    short = int(round(resolution / CROP_FRACTION))
    w, h = im.size
    scale = short / min(w, h)
    nw, nh = max(short, int(round(w * scale))), max(short, int(round(h * scale)))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    a = (np.asarray(im, dtype=np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def preprocess_batch(images: list[ImageLike], resolution: int = 224) -> torch.Tensor:
    """Several images -> float32 tensor [N, 3, resolution, resolution]."""
    return torch.stack([preprocess(im, resolution) for im in images])
