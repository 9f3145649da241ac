"""A small torch re-implementation of the YOLOv8 detector, loading Ultralytics ``.pt`` checkpoints without Ultralytics.

Ultralytics pickles whole module objects (``ultralytics.nn.modules.Conv`` ...). We unpickle them
with an allow-list: every ``ultralytics.*`` class named below maps to the equivalent module here
(same attribute names, so the pickled ``state`` fills them), the training-only objects (loss,
assigner, hyper-parameters) map to an inert placeholder, and any other global is refused, so a
checkpoint cannot run code on load. Only plain torch layers and tensors are accepted besides.

Forward pass = YOLOv8 (Jocher et al., Ultralytics 8.x): backbone/neck routed by each layer's
``f`` (from) index, anchor-free Detect head with distribution focal loss (DFL) box decoding.
Output: ``[B, 4 + nc, A]`` (cx, cy, w, h in input pixels, then class probabilities).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TypeVar, cast

import torch
from torch import nn


class Conv(nn.Module):
    """Conv2d + BatchNorm2d + SiLU (BN folded into the conv by :func:`fuse`)."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d  # removed by fuse
    act: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.act(x)


class Bottleneck(nn.Module):
    """Two convs with an optional residual (``add``)."""

    cv1: Conv
    cv2: Conv
    add: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convs: split, n bottlenecks, concatenate every output."""

    cv1: Conv
    cv2: Conv
    m: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained max-pools, concatenated."""

    cv1: Conv
    cv2: Conv
    m: nn.MaxPool2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along dimension ``d``."""

    d: int

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class DFL(nn.Module):
    """Distribution focal loss integral: expected bin of a softmax over ``c1`` bins, per box side."""

    conv: nn.Conv2d
    c1: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """Anchor-free head: per level a box branch (cv2, 4 x reg_max) and a class branch (cv3)."""

    cv2: nn.ModuleList
    cv3: nn.ModuleList
    dfl: nn.Module  # DFL (an Identity if reg_max is 1)
    stride: torch.Tensor
    nc: int
    no: int
    reg_max: int

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        feats = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        points, strides = _anchors(feats, self.stride)
        flat = torch.cat([f.view(f.shape[0], self.no, -1) for f in feats], 2)
        box, cls = flat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = points - lt, points + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((xywh, cls.sigmoid()), 1)


def _anchors(feats: list[torch.Tensor], strides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (in cells, [1, 2, A]) and each anchor's stride ([1, 1, A])."""
    points, stride_list = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h, dtype=f.dtype) + 0.5, torch.arange(w, dtype=f.dtype) + 0.5,
                                indexing="ij")
        points.append(torch.stack((sx, sy), 0).view(2, -1))
        stride_list.append(torch.full((1, h * w), float(s), dtype=f.dtype))
    return torch.cat(points, 1)[None], torch.cat(stride_list, 1)[None]


class DetectionModel(nn.Module):
    """Layers in ``model`` (a Sequential); each has ``f`` (input index or indices) and ``i``."""

    model: nn.Sequential
    save: list[int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor | None] = []
        for m in self.model:
            # f is a plain attribute Ultralytics sets on each layer (torch types Module attributes as Tensor | Module)
            f = cast("int | list[int]", m.f)
            inp: torch.Tensor | list[torch.Tensor | None] | None = x
            if f != -1:
                inp = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = m(inp)
            outputs.append(x if m.i in self.save else None)
        return x


class _Inert:
    """Placeholder for training-only objects in a checkpoint (loss, assigner, hyper-parameters)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


_MODULES = {c.__name__: c for c in (Conv, Bottleneck, C2f, SPPF, Concat, DFL, Detect, DetectionModel)}
_TORCH_OK = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("torch", "Size"), ("torch", "device"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "LongStorage"),
    ("builtins", "set"), ("builtins", "dict"), ("__builtin__", "set"), ("__builtin__", "dict"),
    ("torch.nn.modules.activation", "SiLU"), ("torch.nn.modules.batchnorm", "BatchNorm2d"),
    ("torch.nn.modules.container", "ModuleList"), ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.conv", "Conv2d"), ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.upsampling", "Upsample"),
}
_INERT_PREFIXES = ("ultralytics.utils", "ultralytics.yolo.utils", "omegaconf", "torch.nn.modules.loss", "typing")


class _Unpickler(pickle.Unpickler):
    """Maps Ultralytics classes to ours; refuses every global not on the allow-list."""

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("ultralytics.nn") and name in _MODULES:
            return _MODULES[name]
        if (module, name) in _TORCH_OK:
            return super().find_class(module.replace("__builtin__", "builtins"), name)
        if module.startswith(_INERT_PREFIXES):
            return _Inert
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which is not allowed")


class _PickleModule:
    """The ``pickle_module`` handed to torch.load (it subclasses ``Unpickler``)."""

    Unpickler = _Unpickler
    __name__ = "trivault_yolo_pickle"

    @staticmethod
    def load(f, **kwargs):  # pragma: no cover - torch uses Unpickler
        return _Unpickler(f, **kwargs).load()


def _fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d computing bn(conv(x)) (inference-time BatchNorm folding)."""
    # torch types a _ConvNd's kernel_size, stride, padding and dilation as tuple[int, ...]; a Conv2d's are pairs
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                      conv.padding, conv.dilation, conv.groups, bias=True)  # type: ignore[arg-type]
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    assert fused.bias is not None  # bias=True
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.data = conv.weight * scale.view(-1, 1, 1, 1)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data = (bias - bn.running_mean) * scale + bn.bias
    return fused


_M = TypeVar("_M", bound=nn.Module)


def fuse(model: _M) -> _M:
    """Fold every Conv's BatchNorm into its convolution (in place) and return the model."""
    for m in model.modules():
        if isinstance(m, Conv) and hasattr(m, "bn"):
            m.conv = _fuse_conv_bn(m.conv, m.bn)
            del m.bn
    return model


def load_yolov8(path: str | Path) -> DetectionModel:
    """Load an Ultralytics YOLOv8 detection checkpoint (``.pt``) as a float32, fused, eval-mode model."""
    ckpt = torch.load(str(path), map_location="cpu", pickle_module=_PickleModule, weights_only=False)
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    if not isinstance(model, DetectionModel):
        raise ValueError(f"{path}: not a YOLOv8 detection checkpoint (found {type(model).__name__})")
    for m in model.modules():  # attributes newer torch expects on unpickled layers
        if isinstance(m, nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    model = fuse(model.float().eval())
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def to_onnx(model: DetectionModel, opset: int = 17) -> bytes:
    """Export a loaded model to ONNX (input ``images`` [1, 3, H, W], H and W multiples of 32, dynamic)."""
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter (dynamo=False) writes to a file object too; torch types f as a path
        torch.onnx.export(model, (torch.zeros(1, 3, 480, 640),), buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["boxes_scores"],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "boxes_scores": {2: "anchors"}})
    return buf.getvalue()
