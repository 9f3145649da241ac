"""Checked gates: the semi-honest messages, recorded for :func:`protocols.dzk.verify_products`.

Each gate sends exactly what its semi-honest counterpart sends (plus, for truncation, two
carry words from party 0) and appends its claims to a :class:`protocols.dzk.ProductLog`. Its
result is NOT verified until ``verify_products`` has run on that log.

* :func:`checked_mul`, :func:`checked_matmul`, :func:`checked_conv2d`: party ``i`` sends party
  ``i-1`` ``m_i = f(x_i, y_i) + f(x_i, y_{i+1}) + f(x_{i+1}, y_i) + w_i - u_i`` (1 round, one
  element per output). Claim: ``T1 + T2 = f(A, B') + f(A', B)`` with ``T1 = m - f(x_i, y_i) + u``
  and ``A, B = x_i, y_i`` at V1, ``T2 = -w`` and ``A', B' = x_{i+1}, y_{i+1}`` at V2. The
  challenge turns it into ONE inner product: a coefficient ``rho_g`` per output of an
  elementwise product (``<rho*A, B'> + <rho*B, A'>``, length ``2n``); a rank-1 pair ``s``
  (rows) x ``t`` (columns) for a matrix product (``<A^T s, B' t> + <B t, A'^T s>``, length
  ``2k``, ``k`` the inner dimension) and ``s`` (output channels) x ``t`` (positions) for a
  convolution (length ``2 C kh kw``): a matrix product or a convolution costs its input and
  weight sizes, not its multiply-adds. Degree 2 in the challenge.
* :func:`checked_and`: the same on XOR shares (``&`` for products, ``^`` for sums), over
  GF(2^56) with a coefficient per lane (bit-planes: 128 entries per word).
* :func:`checked_truncate`: probabilistic truncation (``arithmetic.reshare_truncate``) whose
  one non-linear message, party 0's ``y0``, is pinned by two carry chains.

Integer products: a fixed-point product returns the untruncated scale ``x.frac_bits +
y.frac_bits``; :func:`checked_truncate` brings it back. ``checked_matmul`` takes 2-D operands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import binfield as BF
from . import galois as G
from . import proof_kernels as K
from .arithmetic import reshare
from .dzk import Entry, ProductLog, ProofRejected
from .prf import PRG
from .ringmm import limbs_pay, ring_conv2d, ring_mm
from .sharing import ArithmeticShares, BooleanShares


@dataclass(frozen=True)
class _ConvShape:
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


@dataclass
class _Product:
    kind: str  # "mul", "matmul", "conv2d" or "and"
    x_lo: torch.Tensor
    x_hi: torch.Tensor
    y_lo: torch.Tensor
    y_hi: torch.Tensor
    received: torch.Tensor  # party i+1's message (this party is its V1)
    draw_next: torch.Tensor  # this party's draw with party i+1 (= that prover's u)
    draw_prev: torch.Tensor  # this party's draw with party i-1 (= that prover's w)
    conv: _ConvShape | None = None
    terms: tuple[tuple[bool, bool], ...] = ((True, True),) * 3
    """Per prover ``j``: whether its claim has the cross terms ``x_j y_{j+1}`` and ``y_j x_{j+1}`` (``mul``: both
    unless an operand's component is publicly zero, :func:`checked_mul`'s ``components``)."""

    def vector_length(self, prover: int = 0) -> int:
        if self.kind == "mul":
            return sum(self.terms[prover]) * self.x_lo.numel()
        if self.kind == "matmul":
            return 2 * self.x_lo.shape[1]
        if self.kind == "and":
            return 2 * 64 * self.x_lo.numel()
        return 2 * self.x_lo.shape[1] * self.y_lo.shape[2] * self.y_lo.shape[3]  # 2 C kh kw


def _expanded(x: ArithmeticShares | BooleanShares, y: ArithmeticShares | BooleanShares) -> tuple[torch.Tensor, ...]:
    """Both pairs broadcast to one shape (contiguous copies: they are kept for the proof)."""
    shape = torch.broadcast_shapes(x.shape, y.shape)
    return tuple(t.expand(shape).contiguous() for t in (x.lo, x.hi, y.lo, y.hi))


def _reshared(log: ProductLog, kind: str, operands: tuple[torch.Tensor, ...], z: torch.Tensor,
              conv: _ConvShape | None = None,
              terms: tuple[tuple[bool, bool], ...] = _Product.terms) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask this party's term ``z`` with a fresh zero-sharing (XOR for ``and``), reshare it
    (:func:`protocols.arithmetic.reshare`: to party i-1, from party i+1, which must send the same shape)
    and record the step. Returns the new pair."""
    party = log.party
    draw_next, draw_prev = party.prg_next.int64(z.shape), party.prg_prev.int64(z.shape)
    z = z ^ draw_next ^ draw_prev if kind == "and" else z + draw_next - draw_prev
    _, got = reshare(party, z)
    if got.shape != z.shape:
        nxt = (party.id + 1) % 3
        raise ProofRejected(f"server {party.id}: server {nxt} sent a reshare of shape {tuple(got.shape)}", (nxt,))
    xl, xh, yl, yh = operands
    log.entries.append(_ProductEntry(_Product(kind, xl, xh, yl, yh, got, draw_next, draw_prev, conv, terms), party.id))
    return z, got


def _checked(x: ArithmeticShares, y: ArithmeticShares, kind: str, log: ProductLog,
             conv: _ConvShape | None = None,
             terms: tuple[tuple[bool, bool], ...] = _Product.terms) -> ArithmeticShares:
    if x.party is not y.party or x.party is not log.party:
        raise ValueError("cannot multiply shares of different parties/sessions")
    if kind == "conv2d":
        assert conv is not None
        if len(x.shape) != 4 or len(y.shape) != 4 or x.shape[1] != y.shape[1] * conv.groups:
            raise ValueError(f"checked_conv2d: input {tuple(x.shape)} and weight {tuple(y.shape)} do not fit")
        xl, xh, yl, yh = x.lo, x.hi, y.lo, y.hi
        z = _f(kind, xl, yl + yh, conv) + _f(kind, xh, yl, conv)
    elif kind == "mul":
        xl, xh, yl, yh = _expanded(x, y)
        z = xl * (yl + yh) + xh * yl
    else:
        if len(x.shape) != 2 or len(y.shape) != 2 or x.shape[1] != y.shape[0]:
            raise ValueError(f"checked_matmul: need [m, k] @ [k, n], got {tuple(x.shape)} @ {tuple(y.shape)}")
        xl, xh, yl, yh = x.lo, x.hi, y.lo, y.hi
        z = _mm(xl, yl + yh) + _mm(xh, yl)
    lo, hi = _reshared(log, kind, (xl, xh, yl, yh), z, conv, terms)
    return ArithmeticShares(x.party, lo, hi, x.frac_bits + y.frac_bits)


def checked_mul(x: ArithmeticShares, y: ArithmeticShares, log: ProductLog,
                components: tuple[frozenset[int], frozenset[int]] | None = None) -> ArithmeticShares:
    """Elementwise ``[x] * [y]``, recorded in ``log`` for :func:`verify_products`. Cost: 1 round, 1 element
    per output per party (as :func:`protocols.arithmetic.mul`); the result is NOT verified until then.

    ``components``: the replicated components ``x_k`` / ``y_k`` that may be nonzero (public; the others are 0
    in every party's shares, e.g. one XOR component of a bit as an arithmetic sharing, which two parties hold).
    Party ``j``'s message adds ``x_j y_{j+1} + y_j x_{j+1}`` to what its verifiers compute alone; a cross term
    with a zero factor is left out of its proof (2 entries per product otherwise): ``x_0 x_1`` costs party 0
    one entry and the others none. Each party checks that its own shares are 0 there."""
    if components is None:
        return _checked(x, y, "mul", log)
    sx, sy = components
    party = x.party
    for k, side in ((party.id, "lo"), ((party.id + 1) % 3, "hi")):
        for name, t, sup in (("x", x, sx), ("y", y, sy)):
            if k not in sup and bool(getattr(t, side).any()):
                raise ValueError(f"checked_mul: component {k} of {name} is not zero")
    terms = tuple((j in sx and (j + 1) % 3 in sy, j in sy and (j + 1) % 3 in sx) for j in range(3))
    return _checked(x, y, "mul", log, terms=terms)


def checked_matmul(x: ArithmeticShares, y: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """``[x] @ [y]`` for 2-D operands, recorded in ``log``. Cost: 1 round, 1 element per output per party."""
    return _checked(x, y, "matmul", log)


def checked_conv2d(x: ArithmeticShares, w: ArithmeticShares, log: ProductLog, stride: int | tuple[int, int] = 1,
                   padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                   groups: int = 1) -> ArithmeticShares:
    """``conv2d`` of shared input ``[N, C, H, W]`` with shared weights, recorded in ``log``.
    Cost: 1 round, 1 element per output per party (as :func:`protocols.arithmetic.conv2d`)."""

    def pair(v: int | tuple[int, int]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    return _checked(x, w, "conv2d", log, _ConvShape(pair(stride), pair(padding), pair(dilation), groups))


def checked_and(x: BooleanShares, y: BooleanShares, log: ProductLog) -> BooleanShares:
    """Bitwise ``[x] & [y]`` on XOR shares (as :func:`protocols.boolean.and_`: 1 round, one word per
    64 lanes per party), recorded in ``log``; proved over GF(2^56) by :func:`verify_products`."""
    if x.party is not y.party or x.party is not log.party:
        raise ValueError("cannot AND shares of different parties/sessions")
    xl, xh, yl, yh = _expanded(x, y)
    lo, hi = _reshared(log, "and", (xl, xh, yl, yh), (xl & (yl ^ yh)) ^ (xh & yl))
    return BooleanShares(x.party, lo, hi)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in Z_2^64 (2-D int64), on float64 limbs when that is cheaper (:func:`protocols.ringmm.limbs_pay`):
    the same bits either way."""
    return ring_mm(a, b) if limbs_pay(a.shape[0], b.shape[1]) else a @ b


def _f(kind: str, a: torch.Tensor, b: torch.Tensor, conv: _ConvShape | None = None) -> torch.Tensor:
    if kind == "mul":
        return a * b
    if kind == "matmul":
        return _mm(a, b)
    assert conv is not None
    if conv.groups == 1:
        return ring_conv2d(a, b, conv.stride, conv.padding, conv.dilation)
    if b.shape[2:] == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):  # grouped 1x1: compiled loop
        n, c, h, w = a.shape
        g = conv.groups
        x = a.permute(0, 2, 3, 1).reshape(n * h * w, g, c // g).numpy()
        out = torch.from_numpy(K.grouped_mm(x, b.reshape(g, b.shape[0] // g, c // g).numpy()))
        return out.reshape(n, h, w, b.shape[0]).permute(0, 3, 1, 2).contiguous()
    return F.conv2d(a, b, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _positions_weighted(x: torch.Tensor, t: torch.Tensor, kernel: tuple[int, int], conv: _ConvShape) -> torch.Tensor:
    """``Y[c, kk] = sum_p t_p X[c, p + kk]`` over the output positions ``p = (n, oh, ow)`` of the
    convolution (the im2col columns weighted by ``t``): ``[C kh kw, DEGREE]``."""
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    kh, kw = kernel
    n, c, h, w = x.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = F.pad(x, (pw, pw, ph, ph))
    cols = []
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            cols.append(G.weighted(tap.transpose(0, 1).reshape(c, n * ho * wo), t))
    return torch.stack(cols, 1).reshape(c * kh * kw, G.DEGREE)


def _channels_weighted(w: torch.Tensor, s: torch.Tensor, groups: int) -> torch.Tensor:
    """``W'[ci, kk] = sum_co s_co W[co, ci, kk]`` within each group: ``[C kh kw, DEGREE]``."""
    o = w.shape[0]
    per = w.reshape(groups, o // groups, -1)  # [G, O/G, C/G kh kw]
    return G.weighted_t(per, s.reshape(groups, o // groups, G.DEGREE)).reshape(-1, G.DEGREE)


def _by_channel(t: torch.Tensor) -> torch.Tensor:
    """Conv output ``[N, O, Ho, Wo]`` -> ``[O, N Ho Wo]`` (positions in the order of ``t``)."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


@dataclass
class _RhoScaled:
    """The vector part ``[rho * a ; rho * b ; ...]`` (``rho``: ``n`` elements, ``values``: Z_2^64 vectors ``[n]``),
    written by :func:`protocols.dzk` straight into its padded vector (no temporary of the part's size: ``rho``
    is regenerated block by block)."""

    rho: G.LazyRandom
    values: tuple[torch.Tensor, ...]

    @property
    def rows(self) -> int:
        return len(self.values) * self.rho.n

    def write(self, out: torch.Tensor) -> None:
        n = self.rho.n
        cols = [v.reshape(-1, 1) for v in self.values]
        for g0, block in self.rho.blocks():
            g1 = g0 + block.shape[0]
            for j, c in enumerate(cols):
                torch.mul(block, c[g0:g1], out=out[j * n + g0: j * n + g1])


@dataclass
class _Lifted:
    """The vector part ``[b ; a ; ...]`` of Z_2^64 values as constants of GR(2^64, 56), written in place."""

    values: tuple[torch.Tensor, ...]

    @property
    def rows(self) -> int:
        return sum(v.numel() for v in self.values)

    def write(self, out: torch.Tensor) -> None:
        out.zero_()
        self.write_base(out[:, 0])

    def write_base(self, out: torch.Tensor) -> None:
        """The values themselves (``out [rows]``): the proof keeps them unlifted (``dzk._BaseVec``)."""
        off = 0
        for v in self.values:
            out[off: off + v.numel()] = v.reshape(-1)
            off += v.numel()


def _weighted_sum(rho: G.LazyRandom, t: torch.Tensor) -> torch.Tensor:
    """``sum_g rho_g t_g`` (one element) for ``n`` elements ``rho`` and Z_2^64 values ``t`` (n of them): an int64
    vector-matrix product per block of ``rho``, no ``[n, E]`` array."""
    flat, acc = t.reshape(1, -1), G.zeros()
    for g0, block in rho.blocks():
        acc += G.weighted(flat[:, g0: g0 + block.shape[0]], block).reshape(-1)
    return acc


@dataclass
class _Challenges:
    rho: G.LazyRandom | None = None  # elementwise: n elements
    s: torch.Tensor | None = None  # matmul rows: [m, E]
    t: torch.Tensor | None = None  # matmul columns: [n, E]


class _ArithClaim:
    """Products in Z_2^64 (``mul``, ``matmul``, ``conv2d``), proved over GR(2^64, 56)."""

    def draw(self, p: _Product, rng: PRG) -> _Challenges:
        if p.kind == "mul":
            return _Challenges(rho=G.LazyRandom.draw(rng, p.x_lo.numel()))
        if p.kind == "matmul":
            return _Challenges(s=G.random(rng, p.x_lo.shape[0]), t=G.random(rng, p.y_lo.shape[1]))
        out = p.received  # [N, O, Ho, Wo]
        return _Challenges(s=G.random(rng, out.shape[1]), t=G.random(rng, out.numel() // out.shape[1]))

    def v1_parts(self, p: _Product, c: _Challenges, a: torch.Tensor, b: torch.Tensor,
                 keep: tuple[bool, bool] = (True, True)) -> list[Any]:
        """From ``A = x_i``, ``B = y_i``: ``[rho*A ; rho*B]`` (the terms in ``keep``) or ``[A^T s ; B t]``."""
        if p.kind == "mul":
            assert c.rho is not None
            kept = tuple(t.reshape(-1) for t, k in zip((a, b), keep) if k)
            return [_RhoScaled(c.rho, kept)] if kept else []
        assert c.s is not None and c.t is not None
        if p.kind == "conv2d":
            assert p.conv is not None
            kernel = (p.y_lo.shape[2], p.y_lo.shape[3])
            return [_positions_weighted(a, c.t, kernel, p.conv), _channels_weighted(b, c.s, p.conv.groups)]
        return [G.weighted_t(a, c.s), G.weighted(b, c.t)]

    def v2_parts(self, p: _Product, c: _Challenges, a2: torch.Tensor, b2: torch.Tensor,
                 keep: tuple[bool, bool] = (True, True)) -> list[Any]:
        """From ``A' = x_{i+1}``, ``B' = y_{i+1}``: ``[B' ; A']`` (lifted; the terms in ``keep``) or
        ``[B' t ; A'^T s]``."""
        if p.kind == "mul":
            kept = tuple(t.reshape(-1) for t, k in zip((b2, a2), keep) if k)
            return [_Lifted(kept)] if kept else []
        assert c.s is not None and c.t is not None
        if p.kind == "conv2d":
            assert p.conv is not None
            kernel = (p.y_lo.shape[2], p.y_lo.shape[3])
            return [_channels_weighted(b2, c.s, p.conv.groups), _positions_weighted(a2, c.t, kernel, p.conv)]
        return [G.weighted(b2, c.t), G.weighted_t(a2, c.s)]

    def tau(self, p: _Product, c: _Challenges, target: torch.Tensor) -> torch.Tensor:
        """``rho . T`` or ``s^T T t`` for this verifier's part ``T`` of the claim."""
        if p.kind == "mul":
            assert c.rho is not None
            return _weighted_sum(c.rho, target)
        assert c.s is not None and c.t is not None
        return G.inner(c.s, G.weighted(_by_channel(target) if p.kind == "conv2d" else target, c.t))

    def v1_target(self, p: _Product) -> torch.Tensor:  # T1 = m - f(x_i, y_i) + u
        return p.received - _f(p.kind, p.x_hi, p.y_hi, p.conv) + p.draw_next

    def v2_target(self, p: _Product) -> torch.Tensor:  # T2 = -w
        return -p.draw_prev


class _AndClaim:
    """AND gates on XOR shares (64 lanes per word), proved over GF(2^56): ``rho`` is 56 random bit-planes (a
    :class:`protocols.binfield.Rho`, regenerated where read), V1's vector ``[rho & A ; rho & B]``, V2's the bits
    ``[B' ; A']``, ``tau = sum rho_g T_g``."""

    def draw(self, p: _Product, rng: PRG) -> BF.Rho:
        return BF.Rho.draw(rng, p.x_lo.numel())

    def v1_parts(self, p: _Product, rho: BF.Rho, a: torch.Tensor, b: torch.Tensor,
                 keep: tuple[bool, bool] = (True, True)) -> list[Any]:
        return [BF.Pair(rho, a.reshape(-1), b.reshape(-1))]

    def v2_parts(self, p: _Product, rho: BF.Rho, a2: torch.Tensor, b2: torch.Tensor,
                 keep: tuple[bool, bool] = (True, True)) -> list[Any]:
        return [BF.Pair(None, b2.reshape(-1), a2.reshape(-1))]

    def tau(self, p: _Product, rho: BF.Rho, target: torch.Tensor) -> torch.Tensor:
        return BF.dot_bits(rho, target)

    def v1_target(self, p: _Product) -> torch.Tensor:  # T1 = m ^ (x_i & y_i) ^ u
        return p.received ^ (p.x_hi & p.y_hi) ^ p.draw_next

    def v2_target(self, p: _Product) -> torch.Tensor:  # T2 = w
        return p.draw_prev


_CLAIMS: dict[str, Any] = {"mul": _ArithClaim(), "matmul": _ArithClaim(), "conv2d": _ArithClaim(), "and": _AndClaim()}


class _ProductEntry(Entry):
    """A reshared product: every party proves its own message (symmetric)."""

    def __init__(self, p: _Product, me: int) -> None:
        self.p, self.me, self.claim = p, me, _CLAIMS[p.kind]
        self.field = p.kind == "and"
        self.base_v = p.kind == "mul"  # v parts: _Lifted

    def length(self, prover: int) -> int:
        return self.p.vector_length(prover)

    def split(self, room: int) -> tuple[Entry, Entry] | None:
        """Elementwise steps (``mul``, ``and``) cut after the elements whose vector entries fit in ``room`` (the
        same claims, each part with its own coefficients); other steps are not cut."""
        p = self.p
        per = max(map(sum, p.terms)) if p.kind == "mul" else 2 * 64 if p.kind == "and" else 0
        n, k = p.x_lo.numel(), room // per if per else 0
        if not 1 <= k < n:
            return None
        parts = []
        for a, b in ((0, k), (k, n)):
            xl, xh, yl, yh, got, nxt, prv = (t.reshape(-1)[a:b] for t in (
                p.x_lo, p.x_hi, p.y_lo, p.y_hi, p.received, p.draw_next, p.draw_prev))
            parts.append(_ProductEntry(_Product(p.kind, xl, xh, yl, yh, got, nxt, prv, terms=p.terms), self.me))
        return parts[0], parts[1]

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        p, c, keep = self.p, self.claim.draw(self.p, rng), self.p.terms[self.me]  # A, B = my lo; A', B' = my hi
        return self.claim.v1_parts(p, c, p.x_lo, p.y_lo, keep), self.claim.v2_parts(p, c, p.x_hi, p.y_hi, keep)

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        p, c = self.p, self.claim.draw(self.p, rng)  # A = x_{i+1}, B = y_{i+1} = my hi
        keep = p.terms[(self.me + 1) % 3]
        return self.claim.v1_parts(p, c, p.x_hi, p.y_hi, keep), self.claim.tau(p, c, self.claim.v1_target(p))

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        p, c = self.p, self.claim.draw(self.p, rng)  # A' = x_i, B' = y_i = my lo
        keep = p.terms[(self.me - 1) % 3]
        return self.claim.v2_parts(p, c, p.x_lo, p.y_lo, keep), self.claim.tau(p, c, self.claim.v2_target(p))


_LOW63 = (1 << 63) - 1


class _RingLinear(Entry):
    """``prover``'s message satisfies ``T1 + T2 = 0`` (T1 at its V1, T2 at its V2): no vector entries."""

    def __init__(self, me: int, prover: int, numel: int, t1: torch.Tensor | None = None,
                 t2: torch.Tensor | None = None) -> None:
        self.me, self.prover, self.numel, self.t1, self.t2 = me, prover, numel, t1, t2

    def length(self, prover: int) -> int:
        return 0

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        if self.prover == self.me:
            G.LazyRandom.draw(rng, self.numel)  # keeps the stream in step with the verifiers'
        return [], []

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me + 1) % 3:
            return [], None
        assert self.t1 is not None
        return [], _weighted_sum(G.LazyRandom.draw(rng, self.numel), self.t1)

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me - 1) % 3:
            return [], None
        assert self.t2 is not None
        return [], _weighted_sum(G.LazyRandom.draw(rng, self.numel), self.t2)


def _shr1(w: torch.Tensor) -> torch.Tensor:
    return (w >> 1) & _LOW63


class _CarryChain(Entry):
    """``prover`` claims, per 64-bit word, that ``C = C1 ^ C2`` holds the carries of ``S = P + Q`` (P, C1 at its
    V1; Q, C2 at its V2) and that ``lin(S) = 0`` for a GF(2)-linear word map ``lin``. Over GF(2^56):
    ``c_0 = 0``, ``s = P ^ Q ^ C`` and, on lanes 0..62, ``c_{k+1} = p_k q_k ^ c_k (p_k ^ q_k)``, i.e.
    ``(C1 >>> 1) ^ (C1 & P) ^ (C2 >>> 1) ^ (C2 & Q) = (P & (Q ^ C2)) ^ (C1 & Q)``: two bit products per
    lane (V2 forms ``Q ^ C2`` alone), so ``2 * 64`` entries per word; the carry bits are bits by construction
    (XOR shares of words). A prover with no valid carries for a sum that breaks ``lin`` is caught."""

    field = True

    def __init__(self, me: int, prover: int, words: int, lin: Any, mine: tuple[torch.Tensor, ...] | None = None,
                 v1: tuple[torch.Tensor, torch.Tensor] | None = None,
                 v2: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.me, self.prover, self.words, self.lin = me, prover, words, lin
        self.mine, self.v1, self.v2 = mine, v1, v2

    def length(self, prover: int) -> int:
        return 2 * 64 * self.words if prover == self.prover else 0

    def _draw(self, rng: PRG) -> tuple[BF.Rho, BF.Rho, BF.Rho]:
        return BF.Rho.draw(rng, self.words, _LOW63), BF.Rho.draw(rng, self.words), BF.Rho.draw(rng, self.words)

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        if self.prover != self.me:
            return [], []
        assert self.mine is not None
        rho, _, _ = self._draw(rng)
        p, q, c1, c2 = self.mine
        return [BF.Pair(rho, p.reshape(-1), c1.reshape(-1))], [BF.Pair(None, (q ^ c2).reshape(-1), q.reshape(-1))]

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me + 1) % 3:
            return [], None
        assert self.v1 is not None
        rho, rho0, rho_lin = self._draw(rng)
        p, c1 = self.v1
        tau = BF.dot_bits(rho, _shr1(c1) ^ (c1 & p)) ^ BF.dot_bits(rho0, c1 & 1)
        tau ^= BF.dot_bits(rho_lin, self.lin(p ^ c1))
        return [BF.Pair(rho, p.reshape(-1), c1.reshape(-1))], tau

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me - 1) % 3:
            return [], None
        assert self.v2 is not None
        rho, rho0, rho_lin = self._draw(rng)
        q, c2 = self.v2
        tau = BF.dot_bits(rho, _shr1(c2) ^ (c2 & q)) ^ BF.dot_bits(rho0, c2 & 1)
        tau ^= BF.dot_bits(rho_lin, self.lin(q ^ c2))
        return [BF.Pair(None, (q ^ c2).reshape(-1), q.reshape(-1))], tau


def _carries(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The carry into every bit of ``p + q`` (mod 2^64)."""
    return (p + q) ^ p ^ q


def checked_truncate(x: ArithmeticShares, bits: int, log: ProductLog) -> ArithmeticShares:
    """``[x] / 2**bits`` (probabilistic, as :func:`protocols.arithmetic.truncate`), recorded in ``log``.

    The messages of ``arithmetic.reshare_truncate`` (parties 1 and 2 swap ``z1``, ``z2``; party 0
    sends party 2 ``y0 = ceil(z0 / 2^bits) - r``), and party 0 also sends two words per element:
    its XOR shares (the other shares come from its key with party 1) of the carries of two sums
    whose terms parties 2 and 1 hold, ``E1 + E2 = 2^bits (y0 + r) - z0`` and ``y0 + r``. The proofs
    check ``z1``, ``z2`` (linear claims), that ``E1 + E2`` lies in ``[0, 2^bits)`` and that ``y0 + r``
    is a ``64 - bits``-bit signed number (:class:`_CarryChain`), which together fix
    ``y0 + r = ceil(z0 / 2^bits)``. Cost: 1 round; party 0 sends 3 words per element, parties 1 and
    2 one (against 1, 1, 1 unchecked); the proof adds ``2 * 2 * 64`` field entries per element to
    party 0's GF(2^56) proof.
    """
    if x.party is not log.party:
        raise ValueError("shares of another party/session")
    if not 0 < bits < 63:
        raise ValueError(f"checked_truncate: bits must be in 1..62, got {bits}")
    party, comm = x.party, x.party.comm
    me, shape, n = party.id, x.shape, x.lo.numel()
    a, b = party.prg_next.int64(shape), party.prg_prev.int64(shape)  # my zero-share draws
    z = x.lo + a - b
    high = -(1 << bits)  # lanes bits..63
    sign = ((1 << bits) - 1) << (63 - bits)  # lanes 63-bits..62

    def below(s: torch.Tensor) -> torch.Tensor:  # lin: S < 2^bits
        return s & high

    def signed(s: torch.Tensor) -> torch.Tensor:  # lin: S sign-extends from bit 63 - bits
        return (s ^ (s >> 63)) & sign

    if me == 0:
        r = party.prg_next.int64(shape)
        y0 = -((-z) >> bits) - r
        e1, e2 = (y0 << bits) - x.lo + b, (r << bits) - a  # x_0 = my lo
        ce2, cd2 = party.prg_next.int64(shape), party.prg_next.int64(shape)
        ce1, cd1 = _carries(e1, e2) ^ ce2, _carries(y0, r) ^ cd2
        comm.exchange(send_prev=torch.stack([y0, ce1, cd1]))
        log.entries += [
            _RingLinear(me, 1, n, t1=-x.hi + a), _RingLinear(me, 2, n, t2=-b),
            _CarryChain(me, 0, n, below, mine=(e1.reshape(-1), e2.reshape(-1), ce1.reshape(-1), ce2.reshape(-1))),
            _CarryChain(me, 0, n, signed, mine=(y0.reshape(-1), r.reshape(-1), cd1.reshape(-1), cd2.reshape(-1))),
        ]
        return ArithmeticShares(party, y0, r, x.frac_bits)
    if me == 1:
        r = party.prg_prev.int64(shape)
        ce2, cd2 = party.prg_prev.int64(shape), party.prg_prev.int64(shape)
        z2, _ = comm.exchange(send_next=z, recv_next=True)
        if z2.shape != z.shape:
            raise ProofRejected(f"server 1: server 2 sent a message of shape {tuple(z2.shape)}", (2,))
        e2 = (r << bits) - b
        log.entries += [
            _RingLinear(me, 1, n), _RingLinear(me, 2, n, t1=z2 - x.hi + a),
            _CarryChain(me, 0, n, below, v2=(e2.reshape(-1), ce2.reshape(-1))),
            _CarryChain(me, 0, n, signed, v2=(r.reshape(-1), cd2.reshape(-1))),
        ]
        return ArithmeticShares(party, r, (z + z2) >> bits, x.frac_bits)
    got, z1 = comm.exchange(send_prev=z, recv_next=True, recv_prev=True)
    if got.shape != (3, *shape) or z1.shape != z.shape:
        raise ProofRejected("server 2: a truncation message of the wrong shape", (0, 1))
    y0, ce1, cd1 = got[0], got[1], got[2]
    e1 = (y0 << bits) - x.hi + a
    log.entries += [
        _RingLinear(me, 1, n, t2=z1 - b), _RingLinear(me, 2, n),
        _CarryChain(me, 0, n, below, v1=(e1.reshape(-1), ce1.reshape(-1))),
        _CarryChain(me, 0, n, signed, v1=(y0.reshape(-1), cd1.reshape(-1))),
    ]
    return ArithmeticShares(party, (z1 + z) >> bits, y0, x.frac_bits)


