"""One vocabulary of CNN layers: every layer kind with its plaintext, secure and cost functions.

A model is a public architecture ``{"input_shape": [C, H, W], "layers": [spec, ...]}``
whose specs are JSON dicts: ``"type"`` (a key of :data:`LAYERS`, or ``"residual"`` with a
``"body"`` list, computing ``x + body(x)``), per-sample ``"in_shape"``/``"out_shape"``,
kind-specific fields, and ``"name"`` for layers with weights (``"{name}.weight"``,
``"{name}.bias"``). Each :class:`LayerKind` gives:

* ``plain(spec, params, x)``: the float torch reference (model splitting infers shapes
  with it; ``plain_forward`` runs a whole architecture);
* ``secure(spec, weights, x, lanes)``: the same layer on shares (:mod:`protocols.nn_layers`);
* ``cost(spec, batch, lanes)``: rounds and elements sent per party (:mod:`protocols.costs`),
  asserted against the ``Comm`` counters by the tests;
* ``comparisons(spec, batch)``: how many secure comparisons it uses;
* ``weights(spec)``: the weight parts it reads and their shapes (``None``: not checked).

Model splitting (``client.model``), the secure forward (``protocols.nn``), the servers and
the benchmarks all dispatch through :data:`LAYERS` and :func:`walk`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from . import approx, costs
from . import nn_layers as L
from .costs import Cost
from .sharing import ArithmeticShares

Spec = dict[str, Any]
PlainFn = Callable[[Spec, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
SecureFn = Callable[[Spec, dict[str, ArithmeticShares], ArithmeticShares, approx.Lanes], ArithmeticShares]
CostFn = Callable[[Spec, int, approx.Lanes], Cost]
CountFn = Callable[[Spec, int], int]
ShapesFn = Callable[[Spec], dict[str, "tuple[int, ...] | None"]]

RESIDUAL = "residual"


class UnknownLayerError(ValueError):
    """A layer type that is not in :data:`LAYERS`."""


def _numel(shape: list[int], batch: int) -> int:
    return batch * math.prod(shape)


def _no_comparisons(spec: Spec, batch: int) -> int:
    return 0


def _no_weights(spec: Spec) -> dict[str, tuple[int, ...] | None]:
    return {}


def _free(spec: Spec, batch: int, lanes: approx.Lanes) -> Cost:
    return costs.FREE


def _one_product(spec: Spec, batch: int, lanes: approx.Lanes) -> Cost:
    """Products, pooling and affine layers: 1 round, 1 element per output element per party."""
    return costs.product(_numel(spec["out_shape"], batch))


@dataclass(frozen=True)
class LayerKind:
    """A layer type of the architecture vocabulary (see the module docstring)."""

    name: str
    plain: PlainFn
    secure: SecureFn
    cost: CostFn = _free
    comparisons: CountFn = _no_comparisons
    weights: ShapesFn = field(default=_no_weights)

    @property
    def weighted(self) -> bool:
        """Whether layers of this kind carry weights (and so a ``name``)."""
        return self.weights is not _no_weights


def _bias(spec: Spec, params: dict[str, Any]) -> Any:
    return params.get("bias") if spec.get("bias") else None


def _plain_conv(spec: Spec, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    b = _bias(spec, p)
    return F.conv2d(x, p["weight"].to(x.dtype), None if b is None else b.to(x.dtype), spec["stride"],
                    spec["padding"], spec["dilation"], spec["groups"])


def _plain_linear(spec: Spec, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    b = _bias(spec, p)
    return F.linear(x, p["weight"].to(x.dtype), None if b is None else b.to(x.dtype))


def _plain_affine(spec: Spec, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    v = (1, -1) + (1,) * (x.dim() - 2)
    return x * p["weight"].to(x.dtype).view(v) + p["bias"].to(x.dtype).view(v)


def _conv_weights(spec: Spec) -> dict[str, tuple[int, ...] | None]:
    w = (spec["out_channels"], spec["in_channels"] // spec["groups"], *spec["kernel_size"])
    return {"weight": w, **({"bias": None} if spec["bias"] else {})}


def _linear_weights(spec: Spec) -> dict[str, tuple[int, ...] | None]:
    return {"weight": (spec["out_features"], spec["in_features"]), **({"bias": None} if spec["bias"] else {})}


def _affine_weights(spec: Spec) -> dict[str, tuple[int, ...] | None]:
    return {"weight": None, "bias": None}


def _maxpool_cost(spec: Spec, batch: int, lanes: approx.Lanes) -> Cost:
    """Tournament over each window: level with ``k`` candidates compares ``k // 2`` pairs."""
    out = _numel(spec["out_shape"], batch)
    k = spec["kernel_size"][0] * spec["kernel_size"][1]
    total = costs.FREE
    while k > 1:
        total = total + costs.bounded_relu(out * (k // 2), lanes)
        k = k // 2 + k % 2
    return total


def _window(spec: Spec) -> int:
    return int(spec["kernel_size"][0] * spec["kernel_size"][1])


_KINDS = [
    LayerKind("conv2d", _plain_conv, lambda s, w, x, lanes: L.conv2d(x, s, w["weight"], _bias(s, w)),
              _one_product, weights=_conv_weights),
    LayerKind("linear", _plain_linear, lambda s, w, x, lanes: L.linear(x, w["weight"], _bias(s, w)),
              _one_product, weights=_linear_weights),
    LayerKind("affine", _plain_affine, lambda s, w, x, lanes: L.affine(x, w["weight"], w["bias"]),
              _one_product, weights=_affine_weights),
    LayerKind("pad", lambda s, p, x: F.pad(x, s["pad"]), lambda s, w, x, lanes: L.pad(x, s["pad"])),
    LayerKind("clamp", lambda s, p, x: x.clamp(s["min"], s["max"]),
              lambda s, w, x, lanes: L.clamp(x, s["min"], s["max"], lanes),
              lambda s, n, lanes: costs.bounded_clamp(_numel(s["in_shape"], n), lanes, s["min"] == 0),
              lambda s, n: 2 * _numel(s["in_shape"], n)),
    LayerKind("relu", lambda s, p, x: x.clamp_min(0), lambda s, w, x, lanes: L.relu(x, lanes),
              lambda s, n, lanes: costs.bounded_relu(_numel(s["in_shape"], n), lanes),
              lambda s, n: _numel(s["in_shape"], n)),
    LayerKind("maxpool2d", lambda s, p, x: F.max_pool2d(x, s["kernel_size"], s["stride"], s["padding"]),
              lambda s, w, x, lanes: L.maxpool2d(x, s, lanes), _maxpool_cost,
              lambda s, n: _numel(s["out_shape"], n) * (_window(s) - 1)),
    LayerKind("avgpool2d", lambda s, p, x: F.avg_pool2d(x, s["kernel_size"], s["stride"], s["padding"],
                                                        count_include_pad=s["count_include_pad"]),
              lambda s, w, x, lanes: L.avgpool2d(x, s), _one_product),
    LayerKind("global_avgpool", lambda s, p, x: x.mean(dim=(2, 3), keepdim=s["keepdim"]),
              lambda s, w, x, lanes: L.global_avgpool(x, s["keepdim"]), _one_product),
    LayerKind("flatten", lambda s, p, x: x.flatten(1), lambda s, w, x, lanes: x.flatten(1)),
    LayerKind("l2norm", lambda s, p, x: x / x.norm(dim=1, keepdim=True).clamp_min(1e-12),
              lambda s, w, x, lanes: approx.l2_normalize(x),
              lambda s, n, lanes: costs.l2_normalize(n, math.prod(s["in_shape"]), approx.J_MAX - approx.J_MIN),
              lambda s, n: approx.l2_comparisons(n)),
]

LAYERS: dict[str, LayerKind] = {k.name: k for k in _KINDS}
"""Every supported layer type (``"residual"`` is structural, handled by :func:`walk`)."""

SUPPORTED = frozenset(LAYERS) | {RESIDUAL}


def kind_of(spec: Spec) -> LayerKind:
    """The :class:`LayerKind` of a (non-residual) spec; :class:`UnknownLayerError` if none."""
    kind = LAYERS.get(spec.get("type", ""))
    if kind is None:
        raise UnknownLayerError(f"unsupported layer type {spec.get('type')!r} in architecture")
    return kind


T = TypeVar("T")


def walk(layers: list[Spec], x: T, step: Callable[[Spec, T], T]) -> T:
    """Apply ``step(spec, x)`` layer by layer; a residual spec computes ``x + walk(body, x)``."""
    for spec in layers:
        if spec.get("type") == RESIDUAL:
            x = x + walk(spec["body"], x, step)  # type: ignore[operator]  # T supports + (tensor or shares)
        else:
            x = step(spec, x)
    return x


def layer_params(params: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """The entries ``"{name}.{part}"`` of ``params`` that belong to ``spec``, keyed by ``part``."""
    name = spec.get("name")
    if not name:
        return {}
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def plain_forward(arch: dict, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Plaintext forward of an architecture with float parameters (float64)."""
    return walk(arch["layers"], x.to(torch.float64),
                lambda s, y: kind_of(s).plain(s, layer_params(params, s), y))


def forward_cost(arch: dict, batch: int, lanes: approx.Lanes) -> Cost:
    """Rounds and elements sent per party by a secure forward of ``batch`` inputs."""
    total = [costs.FREE]

    def add(spec: Spec, x: None) -> None:
        total[0] = total[0] + kind_of(spec).cost(spec, batch, lanes)

    _visit(arch["layers"], add)
    return total[0]


def forward_comparisons(arch: dict, batch: int) -> int:
    """Secure comparisons used by a forward of ``batch`` inputs."""
    count = [0]

    def add(spec: Spec, x: None) -> None:
        count[0] += kind_of(spec).comparisons(spec, batch)

    _visit(arch["layers"], add)
    return count[0]


def _visit(layers: list[Spec], fn: Callable[[Spec, None], None]) -> None:
    for spec in layers:
        if spec.get("type") == RESIDUAL:
            _visit(spec["body"], fn)
        else:
            fn(spec, None)
