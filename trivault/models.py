"""Feature models for ``Client.register_model`` (``client.recipes`` with the CLI's defaults)."""

from __future__ import annotations

from torch import nn


def build_model(kind: str = "auto", resolution: int = 64, dim: int = 32) -> nn.Module:
    """A reproducible feature model: ``"efficientnet"`` (pretrained EfficientNet-Lite0 from its
    wheel + a seeded projection to ``dim``), ``"tiny"`` (a small seeded CNN, fast on any
    machine) or ``"auto"`` (efficientnet when the secure CNN supports it). ``resolution`` is
    the model's square input size. The owner can rebuild it from its recipe later."""
    from client.recipes import build_model as build

    return build(kind, resolution, dim)
