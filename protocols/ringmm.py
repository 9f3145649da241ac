"""Exact products in the ring Z_2^64 on floating-point BLAS: the local work of shared matrix products.

Every secure product ends with local cross terms over 64-bit shares (``x_i (y_i + y_{i+1}) + x_{i+1} y_i``).
``torch``'s int64 ``matmul`` is a plain loop, and without AVX-512 the 64-bit multiply is emulated: on a
2-core AVX2 server a ``[64, 1000] @ [1000, 2200]`` int64 product takes ~0.65 s. :func:`ring_mm` (and its
shape-general front end :func:`ring_matmul`) computes the same product EXACTLY (mod 2^64) from float64
matrix products of limbs:

* each operand is cut into three unsigned limbs of 22, 21 and 21 bits at offsets 0, 22 and 43;
* the limb pairs ``(i, j)`` with ``offset_i + offset_j < 64`` (six of the nine) are float64 matrix
  products; the others only touch bits >= 2^64 and vanish in the ring;
* a product of limbs is below ``2^22 * 2^22 = 2^44``; per chunk of :data:`MERGE_CHUNK` = 256 along the
  inner dimension the products of equal shift add into one float64 sum started at ``2^52`` that stays
  below ``2^53``, so float64 holds it exactly whatever order BLAS adds in;
* each exact integer is read back as int64 and added with its shift (wrap-around).

Result: bit-identical to ``a @ b`` on int64 (tests compare on random and extreme operands). Cost: six
float64 products of the same shapes (about 4x less CPU than the int64 loop here). Local: no message.
"""

from __future__ import annotations

import numpy as np
import torch

OFFSETS = (0, 22, 43)
WIDTHS = (22, 21, 21)

def limbs(t: torch.Tensor) -> list[torch.Tensor]:
    """The three unsigned limbs of an int64 tensor as float64 (``t = sum limb_i << OFFSETS[i]`` mod 2^64).

    numpy with one reused int64 buffer (shift and mask in place): ~1.6x less CPU than torch's
    fresh temporaries on a 1000 x 2200 operand."""
    src = t.detach().numpy()
    buf = np.empty(src.shape, np.int64)
    out = []
    for o, w in zip(OFFSETS, WIDTHS):
        if o:
            np.right_shift(src, o, out=buf)
            np.bitwise_and(buf, (1 << w) - 1, out=buf)
        else:
            np.bitwise_and(src, (1 << w) - 1, out=buf)
        f = np.empty(src.shape, np.float64)
        f[...] = buf
        out.append(torch.from_numpy(f))
    return out


def ring_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in Z_2^64 for int64 ``a [..., M, K]`` and ``b [K, N]`` (or ``[..., K, N]``), exact:
    :func:`ring_mm` on the flattened leading dimensions (or per batch element of a batched ``b``)."""
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise TypeError("ring_matmul takes int64 tensors")
    K = a.shape[-1]
    if b.shape[-2] != K:
        raise ValueError(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
    if b.dim() == 2:
        return ring_mm(a.reshape(-1, K), b).reshape(tuple(a.shape[:-1]) + (b.shape[-1],))
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a2, b2 = a.expand(lead + a.shape[-2:]).reshape(-1, *a.shape[-2:]), b.expand(lead + b.shape[-2:]).reshape(
        -1, *b.shape[-2:])
    return torch.stack([ring_mm(x, y) for x, y in zip(a2, b2)]).reshape(lead + (a.shape[-2], b.shape[-1]))


MERGE_CHUNK = 256
"""Longest inner dimension of one :func:`ring_mm` / :func:`ring_conv2d` step: every merged float64 sum
(``2^52 + sum`` of at most 2 x 256 limb products) stays in ``[2^52, 2^53)``, where float64 is exact."""
_TWO52 = float(1 << 52)
_MAGIC = 0x4330000000000000
"""The bits of the float64 ``2^52``: a float64 ``2^52 + v`` (integer ``0 <= v < 2^52``) read as int64 is
``_MAGIC + v``, so the integer comes back by a reinterpretation instead of a (scalar on AVX2) conversion."""
# (shift, limb pairs summed at that shift): a_0 b_0 | a_0 b_1 + a_1 b_0 | a_0 b_2 + a_2 b_0 | a_1 b_1
_MERGED = ((0, ((0, 0),)), (22, ((0, 1), (1, 0))), (43, ((0, 2), (2, 0))), (44, ((1, 1),)))
_UNMAGIC = (-sum(_MAGIC << s for s, _ in _MERGED) + (1 << 63)) % (1 << 64) - (1 << 63)
"""``-sum_s (_MAGIC << s)`` mod 2^64 as an int64: removes the ``2^52`` every merged sum started at."""

assert 2 * MERGE_CHUNK * ((1 << 22) - 1) * ((1 << 21) - 1) < 1 << 52
assert MERGE_CHUNK * ((1 << 22) - 1) ** 2 < 1 << 52


def _accumulate(out: torch.Tensor, sums: list[torch.Tensor]) -> None:
    """``out += sum_s (sums_s - 2^52) << s`` in Z_2^64, ``sums_s`` float64 exact integers in ``[2^52, 2^53)``
    (one fused int64 pass per shift; the ``- 2^52`` of every term is folded into :data:`_UNMAGIC`)."""
    for (shift, _), v in zip(_MERGED, sums):
        out.add_(v.view(torch.int64), alpha=1 << shift)
    out.add_(_UNMAGIC)


def ring_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in Z_2^64 for 2-D int64 ``a [M, K]``, ``b [K, N]``, exact (same bits as int64 ``a @ b``).

    The six limb products of the module docstring, with few passes over the output: per chunk of
    :data:`MERGE_CHUNK` along ``K``, the products of equal shift (0, 22, 43, 44) accumulate in ONE float64
    buffer started at ``2^52`` (``addmm_``: sums of non-negative integers below ``2^53``, exact in any
    order), which is read back as int64 bits (:data:`_MAGIC`) and added with its shift in one fused pass;
    4 output passes instead of 6 conversions, 6 shifts and 6 additions. Local: no message."""
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise TypeError("ring_mm takes int64 tensors")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"ring_mm: shapes {tuple(a.shape)} @ {tuple(b.shape)} do not fit")
    m, k = a.shape
    n = b.shape[1]
    out = torch.zeros((m, n), dtype=torch.int64)
    for k0 in range(0, k, MERGE_CHUNK):
        al, bl = limbs(a[:, k0 : k0 + MERGE_CHUNK]), limbs(b[k0 : k0 + MERGE_CHUNK])
        sums = []
        for _, pairs in _MERGED:
            acc = torch.full((m, n), _TWO52, dtype=torch.float64)
            for i, j in pairs:
                acc.addmm_(al[i], bl[j])
            sums.append(acc)
        _accumulate(out, sums)
    return out


LIMB_REUSE = 16
""":func:`limbs_pay`: the float64 limbs win once each operand element is reused ~16 times (measured here)."""


def limbs_pay(m: int, n: int) -> bool:
    """Whether an ``[m, k] @ [k, n]`` product is cheaper on float64 limbs than in torch's int64 loop.

    Limbs cost ~3 passes per OPERAND element (``m k + k n``) plus six fast float64 products; the int64 loop
    ~2 ns per multiply-add (``m k n``). Measured on the 2-core AVX2 server (EfficientNet-Lite0 shapes): a
    ``[1152, 384] @ [384, 9]`` product is ~1.4x slower on limbs, ``[80, 960] @ [960, 36]`` ~2x faster. Rule:
    ``m n >= LIMB_REUSE (m + n)`` (both free dimensions at least ~2 * LIMB_REUSE, or one of them larger).
    Both paths are exact, so the choice never changes a result."""
    return m * n >= LIMB_REUSE * (m + n)


def ring_conv2d(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int] | list[int] = (1, 1),
                padding: tuple[int, int] | list[int] = (0, 0),
                dilation: tuple[int, int] | list[int] = (1, 1)) -> torch.Tensor:
    """``F.conv2d(x, w, None, stride, padding, dilation)`` (groups 1) in Z_2^64 for int64 ``x [N, C, H, W]``
    and ``w [O, C, kh, kw]``: bit-identical to the int64 ``conv2d``.

    When :func:`limbs_pay` for ``O`` output channels and ``N Ho Wo`` output positions:

    * a 1x1 kernel without padding is a matrix product: :func:`ring_mm` of ``w [O, C]`` and the strided
      input ``[C, N Ho Wo]``;
    * otherwise six float64 ``conv2d`` of the limb pairs, merged by shift as in :func:`ring_mm`, the input
      channels cut into chunks of ``MERGE_CHUNK // (kh kw)`` so each output sums at most
      :data:`MERGE_CHUNK` products per limb pair (exact).

    Else (few output positions, e.g. 3x3 maps at batch 1, or more than :data:`MERGE_CHUNK` taps) the int64
    loop: a 1x1 kernel as ``w [O, C] @ cols`` with ``cols`` contiguous along ``C``, otherwise ``conv2d``.
    Local: no message.
    """
    if x.dtype != torch.int64 or w.dtype != torch.int64:
        raise TypeError("ring_conv2d takes int64 tensors")
    if x.dim() != 4 or w.dim() != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(f"ring_conv2d: input {tuple(x.shape)} and weight {tuple(w.shape)} do not fit")
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    o, c, kh, kw = w.shape
    n, _, h, w_ = x.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w_ + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    pays = limbs_pay(o, n * ho * wo)
    if kh == kw == 1 and ph == pw == 0:
        cols = x[:, :, ::sh, ::sw].reshape(n, c, ho * wo).transpose(0, 1).reshape(c, n * ho * wo)
        # int64 loop: its fastest layout has both operands contiguous along C (~10-20% less than conv2d)
        y = ring_mm(w.reshape(o, c), cols) if pays else w.reshape(o, c) @ cols.T.contiguous().T
        return y.reshape(o, n, ho, wo).transpose(0, 1).contiguous()
    if kh * kw > MERGE_CHUNK or not pays:
        return torch.nn.functional.conv2d(x, w, None, stride, padding, dilation)
    step = max(1, MERGE_CHUNK // (kh * kw))
    out = torch.zeros((n, o, ho, wo), dtype=torch.int64)
    for c0 in range(0, c, step):
        xl, wl = limbs(x[:, c0 : c0 + step]), limbs(w[:, c0 : c0 + step])
        sums = []
        for _, pairs in _MERGED:
            acc = torch.full((n, o, ho, wo), _TWO52, dtype=torch.float64)
            for i, j in pairs:
                acc += torch.nn.functional.conv2d(xl[i], wl[j], None, stride, padding, dilation)
            sums.append(acc)
        _accumulate(out, sums)
    return out
