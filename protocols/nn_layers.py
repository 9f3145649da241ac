"""Secure CNN layers on replicated shares (one function per layer type of the architecture).

Linear layers (conv2d, linear, affine) are ABY3 products of a shared input with shared
weights: local cross terms ``f(x_i, w_i + w_{i+1}) + f(x_{i+1}, w_i)`` plus a zero-sharing,
then ONE reshare-and-truncate round: 1 round, 1 ring element per OUTPUT element per party,
whatever the kernel size. The local kernels are chosen for speed on CPU and are exact in
Z_2^64 (bit-identical to the int64 reference, so messages and outputs do not depend on the
choice): dense convolutions are ONE product on channel-concatenated shares
(``x_i | x_{i+1}`` against ``w_i + w_{i+1} | w_i``) computed by :func:`protocols.ringmm.ring_conv2d`
(float64 BLAS on 22/21/21-bit limbs when ``ringmm.limbs_pay``: in EfficientNet-Lite0 at 96 px
the stem and the 1x1 convs on the 24x24 to 6x6 maps and the 96-channel one at 48x48, ~1.5-2x less
CPU than torch's int64 loop on AVX2; the int64 ``conv2d`` for the 3x3 maps at the end, where the
weights dominate); a fused shifted-slice sum for
depthwise convolutions (torch's int64 depthwise path is slow; float64 limbs would need six
elementwise products per tap and do not pay); ``linear`` likewise through ``ring_mm`` when
it pays (not at batch 1).
Bias add, zero padding, pooling sums, flatten and residual add are local.
Non-linear layers use :mod:`protocols.approx` (bounded comparisons, see there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import approx
from .arithmetic import bilinear
from .ringmm import limbs_pay, ring_conv2d, ring_mm
from .sharing import ArithmeticShares


def _depthwise_local(stride: list[int], padding: list[int], dilation: list[int]):
    """Fused local kernel for a depthwise conv (weight [C,1,kh,kw]): one pass over the taps."""

    def local(xa: torch.Tensor, xb: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        ph, pw = padding
        if ph or pw:
            xa = F.pad(xa, (pw, pw, ph, ph))
            xb = F.pad(xb, (pw, pw, ph, ph))
        n, c, h, w_ = xa.shape
        kh, kw = wa.shape[-2:]
        sh, sw = stride
        dh, dw = dilation
        ho = (h - dh * (kh - 1) - 1) // sh + 1
        wo = (w_ - dw * (kw - 1) - 1) // sw + 1
        out = torch.zeros((n, c, ho, wo), dtype=torch.int64)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dh, j * dw
                sa = xa[:, :, r0 : r0 + sh * (ho - 1) + 1 : sh, c0 : c0 + sw * (wo - 1) + 1 : sw]
                sb = xb[:, :, r0 : r0 + sh * (ho - 1) + 1 : sh, c0 : c0 + sw * (wo - 1) + 1 : sw]
                out += sa * wa[:, 0, i, j].view(1, c, 1, 1)
                out += sb * wb[:, 0, i, j].view(1, c, 1, 1)
        return out

    return local


def _conv_local(stride: list[int], padding: list[int], dilation: list[int], groups: int, cin: int,
                wshape: torch.Size):
    """The local kernel of a conv layer (``f(x_i, w_i + w_{i+1}) + f(x_{i+1}, w_i)``), exact in Z_2^64."""
    if groups == 1:

        def local(xa, xb, wa, wb):
            return ring_conv2d(torch.cat([xa, xb], 1), torch.cat([wa, wb], 1), stride, padding, dilation)

        return local
    if groups == cin and wshape[0] == cin and wshape[1] == 1:
        return _depthwise_local(stride, padding, dilation)

    def grouped(xa, xb, wa, wb):
        return F.conv2d(xa, wa, None, stride, padding, dilation, groups) + F.conv2d(
            xb, wb, None, stride, padding, dilation, groups
        )

    return grouped


def _linear_local(xa: torch.Tensor, xb: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """``xa @ wa.T + xb @ wb.T`` in Z_2^64 (one limb product on concatenated shares when it pays)."""
    if xa.dim() == 2 and limbs_pay(xa.shape[0], wa.shape[0]):
        return ring_mm(torch.cat([xa, xb], -1), torch.cat([wa, wb], 1).T)
    return xa @ wa.T + xb @ wb.T


def conv2d(x: ArithmeticShares, spec: dict, weight: ArithmeticShares,
           bias: ArithmeticShares | None) -> ArithmeticShares:
    """Secure Conv2d (+ bias). Cost: 1 round, 1 element per output element per party."""
    local = _conv_local(spec["stride"], spec["padding"], spec["dilation"], spec["groups"], x.shape[1], weight.shape)
    y = bilinear(x, weight, local)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y


def linear(x: ArithmeticShares, weight: ArithmeticShares, bias: ArithmeticShares | None) -> ArithmeticShares:
    """Secure ``x @ W.T + b``. Cost: 1 round, 1 element per output element per party."""

    y = bilinear(x, weight, _linear_local)
    if bias is not None:
        y = y + bias
    return y


def affine(x: ArithmeticShares, scale: ArithmeticShares, shift: ArithmeticShares) -> ArithmeticShares:
    """Per-channel ``x * scale + shift`` (standalone BatchNorm). Cost: 1 round, 1 element per output."""
    v = (1, -1) + (1,) * (len(x.shape) - 2)
    return x * scale.reshape(*v) + shift.reshape(*v)


def pad(x: ArithmeticShares, p: list[int]) -> ArithmeticShares:
    """Zero padding (left, right, top, bottom): zeros are a valid sharing of 0. Cost: local."""
    return ArithmeticShares(x.party, F.pad(x.lo, p), F.pad(x.hi, p), x.frac_bits)


def _flat(fn, x: ArithmeticShares) -> ArithmeticShares:
    shape = x.shape
    return fn(x.reshape(-1)).reshape(*shape)


def clamp(x: ArithmeticShares, lo: float, hi: float, lanes: approx.Lanes = approx.EXACT) -> ArithmeticShares:
    """Clamp (ReLU6). Cost: ``lanes.rounds + 1`` rounds (3 fast, 4 exact): 2 bounded signs per element, then
    one round of bit product and injection (``costs.bounded_clamp``)."""
    return _flat(lambda t: approx.clamp(t, lo, hi, lanes), x)


def relu(x: ArithmeticShares, lanes: approx.Lanes = approx.EXACT) -> ArithmeticShares:
    """ReLU. Cost: ``lanes.rounds + 2`` rounds (5 fast, 6 exact), 1 bounded comparison per element."""
    return _flat(lambda t: approx.relu(t, lanes), x)


def windows(t: torch.Tensor, k: list[int], s: list[int]) -> torch.Tensor:
    """[N,C,H,W] -> [N,C,Ho,Wo,kh*kw] (views of the sliding windows)."""
    u = t.unfold(2, k[0], s[0]).unfold(3, k[1], s[1])
    return u.reshape(*u.shape[:4], k[0] * k[1])


def maxpool2d(x: ArithmeticShares, spec: dict, lanes: approx.Lanes = approx.EXACT) -> ArithmeticShares:
    """Max pooling by a tournament over each window.

    Cost: (``lanes.rounds`` + 2) ceil(log2(kh kw)) rounds, kh kw - 1 comparisons per output.

    Padding (torch allows ``p <= k/2``) replicates the border: every window that holds a
    padded cell also holds the border cell it copies, so the max is over real inputs only
    and no public "minus infinity" has to fit the bounded comparison (local, linear).
    """
    k, s, p = spec["kernel_size"], spec["stride"], spec["padding"]
    if p[0] or p[1]:
        pp = (p[1], p[1], p[0], p[0])
        x = ArithmeticShares(x.party, F.pad(x.lo, pp, mode="replicate"), F.pad(x.hi, pp, mode="replicate"),
                             x.frac_bits)
    w = ArithmeticShares(x.party, windows(x.lo, k, s), windows(x.hi, k, s), x.frac_bits)
    return approx.max_last(w, lanes)


def avgpool2d(x: ArithmeticShares, spec: dict) -> ArithmeticShares:
    """Average pooling: local window sums times public 1/count. Cost: 1 round (truncation), 1 element per output."""
    k, s, p = spec["kernel_size"], spec["stride"], spec["padding"]
    if p[0] or p[1]:
        x = pad(x, [p[1], p[1], p[0], p[0]])
    sums = ArithmeticShares(x.party, windows(x.lo, k, s).sum(-1), windows(x.hi, k, s).sum(-1), x.frac_bits)
    if spec.get("count_include_pad", True) or not (p[0] or p[1]):
        return sums * (1.0 / (k[0] * k[1]))
    h, w_ = x.shape[2] - 2 * p[0], x.shape[3] - 2 * p[1]
    ones = F.pad(torch.ones((1, 1, h, w_), dtype=torch.float64), (p[1], p[1], p[0], p[0]))
    cnt = windows(ones, k, s).sum(-1)
    return sums * (1.0 / cnt).expand(sums.shape).contiguous()


def global_avgpool(x: ArithmeticShares, keepdim: bool) -> ArithmeticShares:
    """Mean over H, W: local sum times public 1/(H W). Cost: 1 round (truncation), N*C elements."""
    hw = x.shape[2] * x.shape[3]
    return x.sum(dim=(2, 3), keepdim=keepdim) * (1.0 / hw)
