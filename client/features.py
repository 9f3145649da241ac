"""Data owner: plaintext feature extraction with the same model the servers evaluate in shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .preprocess import ImageLike, preprocess


def model_resolution(model: nn.Module, default: int = 224) -> int:
    """The input resolution a feature model was built for (``default_feature_model`` records it)."""
    return int(getattr(model, "resolution", None) or default)


@torch.no_grad()
def extract_features(
    model: nn.Module, images: Sequence[ImageLike] | torch.Tensor, batch_size: int = 16, resolution: int | None = None
) -> np.ndarray:
    """Features [N, d] float32 of ``images`` (paths, arrays, PIL images, or a preprocessed [N,3,H,W] tensor)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    res = resolution or model_resolution(model)
    model.eval()
    outs: list[np.ndarray] = []
    n = len(images)
    for i in range(0, n, batch_size):
        chunk = images[i : i + batch_size]
        if isinstance(chunk, torch.Tensor):
            x = chunk.float()
        else:
            x = torch.stack([preprocess(im, res) for im in chunk])
        outs.append(model(x).float().numpy())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32)
