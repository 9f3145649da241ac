"""Named, reproducible feature models: the owner can rebuild its plaintext model from a recipe."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_model(kind: str, resolution: int, dim: int) -> nn.Module:
    """``efficientnet`` (pretrained EfficientNet-Lite0 + seeded projection), ``tiny`` (small seeded
    CNN), or ``auto`` (efficientnet when the secure CNN is installed). Sets ``.recipe``."""
    if kind == "auto":
        try:
            import protocols.nn  # noqa: F401

            kind = "efficientnet"
        except ImportError:
            kind = "tiny"
    if kind == "efficientnet":
        from .model import default_feature_model

        m = default_feature_model(resolution=resolution, out_dim=dim)
    elif kind == "tiny":
        g = torch.Generator().manual_seed(7)
        m = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, dim))
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p.shape[-1]) ** 0.5))
        m = m.eval()
    else:
        raise ValueError(f"unknown model {kind!r} (choose auto, efficientnet or tiny)")
    m.resolution = resolution  # type: ignore[attr-defined]
    m.recipe = {"kind": kind, "resolution": resolution, "dim": dim}  # type: ignore[attr-defined]
    return m


def from_recipe(recipe: dict[str, Any]) -> nn.Module:
    """Rebuild a model saved as a recipe."""
    return build_model(recipe["kind"], int(recipe["resolution"]), int(recipe["dim"]))
