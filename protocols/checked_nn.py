"""Secure CNN inference with security with abort: the layers of :mod:`protocols.layers` from checked gates.

:func:`checked_forward` walks the same public architecture as :class:`protocols.nn.SecureModel`
(``client.model.split_model``) and records every message in a :class:`protocols.dzk.ProductLog`;
the caller runs :func:`protocols.dzk.verify_products` before anything that depends on the output
is revealed: ONE call for the whole network (its proofs come in memory-bounded batches,
:data:`protocols.dzk.FIELD_BATCH`; a call after every layer cost 40 to 60 more rounds per layer).

Per layer (``f`` = the model's fractional bits; cost per element and per party):

* ``conv2d`` / ``linear`` / ``affine``: the checked product at scale ``2f`` (1 round, 1 element),
  then :func:`protocols.checked.checked_truncate` (1 round; party 0 sends 3 words), then the bias
  (local). Two rounds instead of the semi-honest one (whose truncation is fused into the reshare).
* ``relu``: :func:`protocols.checked_compare.checked_relu` on 32 bits (:data:`ACTIVATION_BITS`: exact for
  pre-activations below ``2^31`` ring units, the semi-honest ``approx.EXACT`` bound; 10 rounds, half the
  AND gates of a 64-bit comparison); ``clamp`` (ReLU6): ``lo + relu(x - lo) - relu(x - hi)``, both
  ReLUs in one call (10 rounds, 2 comparisons).
* ``avgpool2d`` / ``global_avgpool``: local window sums times the public ``1 / count``, then a
  checked truncation (1 round). ``pad``, ``flatten`` and residual sums are local.
* ``l2norm``: :func:`checked_l2_normalize`. ``maxpool2d`` is not checked yet
  (:class:`NotImplementedError`; EfficientNet-Lite0 has none).

Accuracy: every comparison is exact inside its bound (no "fast" lanes; the L2 normalisation's on the
whole ring); truncations are
probabilistic as in the semi-honest model (one ulp), so outputs agree with plaintext torch to
the same tolerance (tests/unit/test_checked_nn.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import approx as A
from .checked import checked_conv2d, checked_matmul, checked_mul, checked_truncate
from .checked_compare import checked_ltz, checked_relu
from .dzk import ProductLog
from .layers import RESIDUAL, layer_params, walk
from .nn_layers import windows
from .ring import FixedPoint
from .sharing import ArithmeticShares

ACTIVATION_BITS = 32
"""Width of the ReLU / ReLU6 comparisons: pre-activations must stay below ``2^31`` ring units (32,768 at 16
fractional bits; EfficientNet-Lite0's stay below 100 on real images, ``protocols.approx``)."""


def _truncated(y: ArithmeticShares, bits: int, frac_bits: int, log: ProductLog) -> ArithmeticShares:
    """``y / 2^bits`` (checked), tagged with ``frac_bits`` (e.g. a product at ``2f`` back to ``f``)."""
    t = checked_truncate(y, bits, log)
    return ArithmeticShares(t.party, t.lo, t.hi, frac_bits)


def _times_public(x: ArithmeticShares, c: torch.Tensor | float, f: int, log: ProductLog) -> ArithmeticShares:
    """``x * c`` for a public real ``c`` (fixed point): local product at ``2f``, checked truncation."""
    enc = FixedPoint(f).encode(c)
    return _truncated(ArithmeticShares(x.party, x.lo * enc, x.hi * enc, 2 * f), f, f, log)


def _clamp(x: ArithmeticShares, lo: float, hi: float, f: int, log: ProductLog) -> ArithmeticShares:
    """``min(max(x, lo), hi)`` as ``hi + (x - lo) (c_hi - c_lo) - (hi - lo) c_hi`` with ``c_t = [x < t]``: both
    comparisons in ONE :func:`checked_ltz` (exact within :data:`ACTIVATION_BITS`, so ``c_lo <= c_hi``), then
    ONE checked product per value (``lo + relu(x - lo) - relu(x - hi)`` took two). Cost: 10 rounds, as a ReLU."""
    a, b = x.add_public(-float(lo)), x.add_public(-float(hi))
    c = checked_ltz(ArithmeticShares(x.party, torch.stack([a.lo, b.lo]), torch.stack([a.hi, b.hi]), f), log,
                    ACTIVATION_BITS)  # [2, ...]: c_lo, c_hi (integers)
    inside = checked_mul(a, ArithmeticShares(x.party, c.lo[1] - c.lo[0], c.hi[1] - c.hi[0], 0), log)  # at f
    span = FixedPoint(f).encode(float(hi) - float(lo))
    return (inside - ArithmeticShares(x.party, c.lo[1] * span, c.hi[1] * span, f)).add_public(float(hi))


_W = 16  # extra bits of the mantissa weights 2^-(j+1) (exact integers for j < 24); s w = h < 1 stays below
# 2^(2f + 16) = 2^48, so its probabilistic truncation wraps with chance below 2^-15 (|z| / 2^63)


def checked_l2_normalize(x: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """Rows of ``x [N, d]`` scaled to unit L2 norm: the steps of :func:`protocols.approx.l2_normalize` from
    checked gates. ``s = sum x^2`` (checked product, truncation); the octave one-hot ``e_j = [2^j <= s <
    2^(j+1)]`` from ONE batched :func:`checked_ltz` against the public ``2^j``; the mantissa
    ``h = s sum_j e_j 2^-(j+1)`` in ``[0.5, 1)`` (one product, one truncation by ``f + 16``); the linear start
    and two Newton steps ``r <- r (1.5 - h r^2)`` for ``r ~ 1 / sqrt(2h)``; then
    ``x r sum_j e_j 2^(24 - j/2)`` truncated by 24. Cost: 10 + 2 rounds for the comparison, 14 for the
    products and truncations. Same range and accuracy as the semi-honest one
    (``2^-8 <= ||x||^2 < 2^24``)."""
    if len(x.shape) != 2:
        raise ValueError(f"checked_l2_normalize expects [N, d], got {tuple(x.shape)}")
    p, f = x.party, x.frac_bits
    sq = checked_mul(x, x, log)
    s = _truncated(ArithmeticShares(p, sq.lo.sum(-1), sq.hi.sum(-1), 2 * f), f, f, log)  # [N]
    js = torch.arange(A.J_MIN, A.J_MAX + 1)
    below = checked_ltz(s.unsqueeze(0).expand(len(js), s.shape[0]).add_public(
        (2.0 ** js.double()).view(-1, 1).expand(-1, s.shape[0]).neg()), log)  # [L + 1, N]: [s < 2^j]
    e = below[1:] - below[:-1]
    e = A.cat([e[0:1] + below[0:1], e[1:]])  # s below the range: the first octave
    e = A.cat([e[:-1], e[-1:] + (1 - below[-1:])])  # above: the last
    oct_js = js[:-1].view(-1, 1)
    w = _weighted(e, (1 << (f + _W - oct_js - 1)).to(torch.int64), f + _W)  # sum_j e_j 2^-(j+1)
    h = _truncated(checked_mul(s, w, log), f + _W, f, log)  # s w = h in [0.5, 1)
    r = _times_public(h, -2.0 * A._R0_B, f, log).add_public(A._R0_A)
    n = r.shape[0]
    for _ in range(2):
        both = checked_mul(A.cat([r, h]), A.cat([r, r]), log)
        both = _truncated(both, f, f, log)
        r2, hr = both[:n], both[n:]
        r = _times_public(r, 1.5, f, log) - _truncated(checked_mul(hr, r2, log), f, f, log)
    z = _truncated(checked_mul(x, r.unsqueeze(-1), log), f, f, log)
    g = _weighted(e, torch.round(2.0 ** (A._EXTRA - oct_js.double() / 2)).to(torch.int64), 0)
    return _truncated(checked_mul(z, g.unsqueeze(-1), log), A._EXTRA, f, log)


def _weighted(e: ArithmeticShares, weights: torch.Tensor, frac_bits: int) -> ArithmeticShares:
    """``sum_j weights_j e_j`` for public integer weights ``[L, 1]``. Local."""
    return ArithmeticShares(e.party, (e.lo * weights).sum(0), (e.hi * weights).sum(0), frac_bits)


def _layer(spec: dict, w: dict[str, ArithmeticShares], x: ArithmeticShares, f: int,
           log: ProductLog) -> ArithmeticShares:
    kind = spec["type"]
    if kind == "conv2d":
        y = _truncated(checked_conv2d(x, w["weight"], log, spec["stride"], spec["padding"], spec["dilation"],
                                    spec["groups"]), f, f, log)
        return y + w["bias"].reshape(1, -1, 1, 1) if "bias" in w else y
    if kind == "linear":
        y = _truncated(checked_matmul(x, w["weight"].T, log), f, f, log)
        return y + w["bias"] if "bias" in w else y
    if kind == "affine":
        v = (1, -1) + (1,) * (len(x.shape) - 2)
        return _truncated(checked_mul(x, w["weight"].reshape(*v), log), f, f, log) + w["bias"].reshape(*v)
    if kind == "pad":
        return ArithmeticShares(x.party, F.pad(x.lo, spec["pad"]), F.pad(x.hi, spec["pad"]), x.frac_bits)
    if kind == "relu":
        return checked_relu(x, log, ACTIVATION_BITS)
    if kind == "clamp":
        return _clamp(x, spec["min"], spec["max"], f, log)
    if kind == "avgpool2d":
        k, s, p = spec["kernel_size"], spec["stride"], spec["padding"]
        if p[0] or p[1]:
            raise NotImplementedError("checked avgpool2d with padding")
        sums = ArithmeticShares(x.party, windows(x.lo, k, s).sum(-1), windows(x.hi, k, s).sum(-1), f)
        return _times_public(sums, 1.0 / (k[0] * k[1]), f, log)
    if kind == "global_avgpool":
        sums = ArithmeticShares(x.party, x.lo.sum(dim=(2, 3), keepdim=spec["keepdim"]),
                                x.hi.sum(dim=(2, 3), keepdim=spec["keepdim"]), f)
        return _times_public(sums, 1.0 / (x.shape[2] * x.shape[3]), f, log)
    if kind == "flatten":
        return x.flatten(1)
    if kind == "l2norm":
        return checked_l2_normalize(x, log)
    raise NotImplementedError(f"layer type {kind!r} has no checked version yet")


def checked_forward(arch: dict, weights: dict[str, ArithmeticShares], x: ArithmeticShares,
                    log: ProductLog) -> ArithmeticShares:
    """Checked inference on a shared batch ``[N, C, H, W]`` (fixed point at the model's ``frac_bits``).

    ``weights``: this party's weight shares (as for ``SecureModel``). Every message is recorded in
    ``log``."""
    f = int(arch.get("frac_bits", x.party.fp.frac_bits))
    if x.frac_bits != f:
        raise ValueError(f"input has {x.frac_bits} fractional bits, model uses {f}")

    def step(spec: dict, h: ArithmeticShares) -> ArithmeticShares:
        if spec.get("type") == RESIDUAL:  # walk handles residual blocks itself
            raise AssertionError("unreachable")
        return _layer(spec, layer_params(weights, spec), h, f, log)

    return walk(arch["layers"], x, step)
