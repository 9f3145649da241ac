"""Feature models for ``Client.register_model`` (``client.recipes`` with the CLI's defaults)."""

from __future__ import annotations

from torch import nn

from client.recipes import DEFAULT_DIM, DEFAULT_PROJECTION, DEFAULT_RESOLUTION
from client.recipes import build_model as build


def build_model(kind: str = "auto", resolution: int = DEFAULT_RESOLUTION, dim: int = DEFAULT_DIM,
                projection: str = DEFAULT_PROJECTION) -> nn.Module:
    """A reproducible feature model: ``"efficientnet"`` (pretrained EfficientNet-Lite0 from its
    wheel + a projection to ``dim``), ``"tiny"`` (a small seeded CNN, fast on any machine) or
    ``"auto"`` (efficientnet when the secure CNN supports it). ``resolution`` is the model's
    square input size. ``projection="pca_whiten"`` (default) or ``"pca"`` fits a PCA (whitened or
    not) on the owner's own images at the first upload (more than ``dim`` images needed; fewer
    fall back to the seeded random map with a warning); ``"random"`` keeps the seeded random map.
    The owner's state keeps the recipe (and the fitted PCA), so a restarted client rebuilds
    the same model."""
    return build(kind, resolution, dim, projection)
