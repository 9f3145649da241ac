"""Arithmetic protocols on replicated shares: products, matrix products, convolution, truncation.

Every bilinear product (elementwise ``*``, ``@``, ``conv2d``) follows ABY3:

1. Local: ``z_i = f(x_i, y_i) + f(x_i, y_{i+1}) + f(x_{i+1}, y_i) + a_i`` where ``a`` is a
   fresh zero-sharing from the pairwise PRGs. ``z0 + z1 + z2 = f(x, y)`` is a 3-out-of-3
   sharing. (Computed as ``f(x_i, y_i + y_{i+1}) + f(x_{i+1}, y_i)``: two calls of ``f``.)
2. One round: *reshare* (party i sends ``z_i`` to party i-1) gives an RSS again, or
   *reshare-and-truncate* when both operands are fixed point (see :func:`reshare_truncate`).

Communication is one ring element per OUTPUT element per party, independent of the inner
dimension of a matrix product or the kernel size of a convolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .party import Party
from .ring import FixedPoint
from .ringmm import limbs_pay, ring_conv2d, ring_matmul
from .sharing import ArithmeticShares


def reshare(party: Party, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3-out-of-3 additive (masked, e.g. by ``zero_share``) -> RSS. Cost: 1 round, ``numel`` elements per party."""
    got, _ = party.comm.exchange(send_prev=z, recv_next=True)
    return z, got


def reshare_truncate(party: Party, z: torch.Tensor, bits: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3-out-of-3 additive (masked) ``z`` -> RSS of ``z / 2**bits``. Cost: 1 round, 1 element per party.
    (``bits`` may be a tensor broadcasting against ``z``: a different shift per lane.)

    Steps (one round, every party sends one element per value):
      * parties 1 and 2 swap ``z1``, ``z2``; both now know ``A = z1 + z2`` and set
        ``y2 = A >> bits`` (arithmetic shift);
      * party 0 sets ``y0 = ceil(z0 / 2**bits) - r`` with ``r`` drawn from the key it
        shares with party 1, sends ``y0`` to party 2; ``y1 = r``.
    ``(z0, A)`` is a 2-out-of-2 sharing of ``z`` with ``z0`` uniform (it holds party 0's
    zero-share term), so by SecureML's lemma ``y0 + y1 + y2`` equals ``floor(z / 2**bits)``
    or one more, except with probability ``<= |z| / 2**63`` (a wrap of ``z0 + A``).
    Privacy: party 1 sees ``z2`` (masked by the key of parties 2,0), party 2 sees ``z1``
    (masked by the key of parties 0,1) and ``y0`` (masked by ``r``); party 0 sees nothing.
    """
    pid = party.id
    comm = party.comm
    if pid == 0:
        r = party.prg_next.int64(z.shape)
        y0 = -((-z) >> bits) - r
        comm.exchange(send_prev=y0)
        return y0, r
    if pid == 1:
        r = party.prg_prev.int64(z.shape)
        z2, _ = comm.exchange(send_next=z, recv_next=True)
        return r, (z + z2) >> bits
    y0, z1 = comm.exchange(send_prev=z, recv_next=True, recv_prev=True)
    return (z1 + z) >> bits, y0


LocalProduct = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def bilinear(x: ArithmeticShares, y: ArithmeticShares, local: LocalProduct) -> ArithmeticShares:
    """Secure bilinear product given its local step. Cost: 1 round, 1 element per output element.

    ``local(x_i, x_{i+1}, y_i + y_{i+1}, y_i)`` must return
    ``f(x_i, y_i + y_{i+1}) + f(x_{i+1}, y_i)``, this party's 3-out-of-3 term of ``f(x, y)``
    (a fused kernel may compute it in one pass). Truncation is fused into the reshare
    round when both operands are fixed point.
    """
    if x.party is not y.party:
        raise ValueError("cannot multiply shares of different parties/sessions")
    party = x.party
    z = local(x.lo, x.hi, y.lo + y.hi, y.lo)
    z = z + party.zero_share(z.shape)
    if x.frac_bits and y.frac_bits:
        bits = min(x.frac_bits, y.frac_bits)
        lo, hi = reshare_truncate(party, z, bits)
        return ArithmeticShares(party, lo, hi, x.frac_bits + y.frac_bits - bits)
    lo, hi = reshare(party, z)
    return ArithmeticShares(party, lo, hi, x.frac_bits + y.frac_bits)


def _product(
    x: ArithmeticShares, y: ArithmeticShares, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> ArithmeticShares:
    """Secure ``f(x, y)`` for a bilinear ``f``. Cost: 1 round, 1 element per output element."""
    return bilinear(x, y, lambda xa, xb, ysum, ya: f(xa, ysum) + f(xb, ya))


def _check_same_shape(x: ArithmeticShares, y: ArithmeticShares, op: str) -> None:
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError as exc:
        raise ValueError(f"{op}: shapes {tuple(x.shape)} and {tuple(y.shape)} do not broadcast") from exc


def mul(x: ArithmeticShares, y: ArithmeticShares) -> ArithmeticShares:
    """Elementwise ``[x] * [y]`` (broadcasting). Cost: 1 round, 1 element per output per party."""
    _check_same_shape(x, y, "mul")
    return _product(x, y, torch.mul)


def square(x: ArithmeticShares) -> ArithmeticShares:
    """``[x]**2``. Cost: 1 round, 1 element per output per party."""
    return _product(x, x, torch.mul)


def matmul(x: ArithmeticShares, y: ArithmeticShares) -> ArithmeticShares:
    """``[x] @ [y]`` (torch.matmul semantics). Cost: 1 round, 1 element per OUTPUT element."""
    if x.shape[-1] != y.shape[-2 if len(y.shape) > 1 else 0]:
        raise ValueError(f"matmul: inner dimensions differ: {tuple(x.shape)} @ {tuple(y.shape)}")
    return _product(x, y, _local_matmul)


def _local_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul`` in Z_2^64: on float64 limbs (``ringmm.ring_matmul``) when ``limbs_pay``, else the
    int64 loop; both exact, so the result is the same bits."""
    if a.dim() >= 2 and b.dim() >= 2 and limbs_pay(a.shape[-2], b.shape[-1]):
        return ring_matmul(a, b)
    return torch.matmul(a, b)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(
    x: ArithmeticShares,
    w: ArithmeticShares,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> ArithmeticShares:
    """2-D convolution of shared input [N,C,H,W] with shared weights. Cost: 1 round, 1 element per output."""
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise ValueError(f"conv2d expects 4-D input and weight, got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels, weight expects {w.shape[1] * groups} (groups={groups})"
        )

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if groups == 1:  # float64 limbs when they pay (ringmm.ring_conv2d), same bits
            return ring_conv2d(a, b, _pair(stride), _pair(padding), _pair(dilation))
        return F.conv2d(a, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    return _product(x, w, f)


def mul_public(x: ArithmeticShares, c: float | torch.Tensor) -> ArithmeticShares:
    """``[x] * c`` for public real ``c`` (fixed point). Cost: 1 round (truncation), 1 element per party."""
    cr = FixedPoint(x.frac_bits or x.party.fp.frac_bits).encode(c)
    prod = ArithmeticShares(x.party, x.lo * cr, x.hi * cr, x.frac_bits)
    if not x.frac_bits:
        return ArithmeticShares(x.party, prod.lo, prod.hi, x.party.fp.frac_bits)
    return truncate(prod, x.frac_bits)


def truncate(x: ArithmeticShares, bits: int) -> ArithmeticShares:
    """RSS ``[x]`` -> RSS ``[x / 2**bits]`` (probabilistic, see ``reshare_truncate``). Cost: 1 round, 1 element/party.

    The scale (``frac_bits``) is left unchanged: use this after a local product with a
    public fixed-point constant.
    """
    party = x.party
    # Each party's lo is one additive component; add a zero-sharing so z0 is uniform.
    z = x.lo + party.zero_share(x.shape)
    lo, hi = reshare_truncate(party, z, bits)
    return ArithmeticShares(party, lo, hi, x.frac_bits)


def to_fixed(x: ArithmeticShares, frac_bits: int | None = None) -> ArithmeticShares:
    """Integer sharing -> fixed point with ``frac_bits`` (local shift)."""
    f = x.party.fp.frac_bits if frac_bits is None else frac_bits
    if x.frac_bits:
        raise ValueError("to_fixed: sharing is already fixed point")
    return ArithmeticShares(x.party, x.lo << f, x.hi << f, f)
