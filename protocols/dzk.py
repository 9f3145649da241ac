"""Checked products: security with abort for bilinear products over Z_2^64 by a distributed ZK proof.

In a replicated product (:mod:`protocols.arithmetic`) party ``i`` computes its message
``m_i = f(x_i, y_i) + f(x_i, y_{i+1}) + f(x_{i+1}, y_i) + w_i - u_i`` (``w_i``, ``u_i`` its
draws from the keys it shares with parties ``i+1`` and ``i-1``) and sends it to party
``i-1``. Everything ``m_i`` depends on is also held by one of the two other parties:
``x_i, y_i, u_i`` by ``V1 = i-1`` (which receives ``m_i``), ``x_{i+1}, y_{i+1}, w_i`` by
``V2 = i+1``. So the two can check ``m_i`` together without learning anything, with the
prover's help: the fully linear proofs of Boyle, Gilboa, Ishai and Nof ("Practical fully
secure three-party computation via sublinear distributed zero-knowledge proofs", CCS 2019),
run over the Galois ring GR(2^64, 48) of :mod:`protocols.galois` (Boyle et al., "Efficient
fully secure computation via distributed zero-knowledge proofs", ASIACRYPT 2020, for rings).

:func:`checked_mul`, :func:`checked_matmul`, :func:`checked_conv2d` and :func:`checked_and` (AND
gates on XOR shares: the same message shape with ``&`` for products and ``^`` for sums) are the
semi-honest products (1 round, one element or word per output per party) that also record what
this party needs to prove its own message and to verify its neighbours' (a :class:`ProductLog`).
:func:`verify_products` then checks every recorded product of all three parties at once; it
must run before any value that depends on them is revealed. Each party is prover once (its own
messages) and verifier twice (as ``V1`` of party ``i+1``, as ``V2`` of party ``i-1``), in the
same rounds. Arithmetic products are proved over GR(2^64, 48), AND gates over GF(2^48)
(:mod:`protocols.binfield`, bit-sliced: a lane's bit times a random field element is a
plane-wise AND); a log holding both runs the two proofs one after the other.

Steps for one prover ``P`` (all three run in parallel; ``T1 = m - f(x_i, y_i) + u_i`` is
known to V1, ``T2 = -w_i`` to V2, and the claim is ``T1 + T2 = f(A, B') + f(A', B)`` with
``A, B = x_i, y_i`` at V1 and ``A', B' = x_{i+1}, y_{i+1}`` at V2):

0. Pad (1 round): P draws ``alpha`` (key with V1) and ``beta`` (key with V2), uniform ring
   elements appended to the two vectors below so that the last step reveals nothing, and
   sends V2 its share ``alpha beta - p1`` of their product (``p1`` from the key with V1).
   This is fixed before the challenge: P cannot use it to cancel an error.
1. Challenge (1 round): V1 and V2 draw a seed from the key P lacks and both send it to P
   (P aborts if they differ). It expands to random ring elements: a coefficient ``rho_g``
   per output of an elementwise product, a pair ``s`` (rows), ``t`` (columns) per matrix
   product. Every claim becomes ONE inner product between a vector V1 computes alone and one
   V2 computes alone: ``sum_g rho_g e_g = <rho*A, B'> + <rho*B, A'> - tau`` (length ``2n``),
   and ``s^T E t = <A^T s, B' t> + <B t, A'^T s> - tau`` (length ``2k``; ``E`` the error
   matrix, ``k`` the inner dimension, so a matrix product costs its INPUT sizes, not its
   multiply-adds). ``tau`` is split: V1 computes ``rho . T1``, V2 ``rho . T2``.
2. Fold (2 rounds each, ``R = log2 M`` times, ``M`` the padded length): P sends V2 its
   share of ``h(X) = <u_L + X (u_R - u_L), v_L + X (v_R - v_L)>`` (3 elements; V1's share
   comes from the key with P); the verifiers keep their shares of ``h(0) + h(1) - claim``,
   send P a fresh challenge seed ``r`` (``r`` and ``1 - r`` units), and all fold the vectors
   at ``r``; the claim becomes ``h(r)``.
3. Decide (1 round): V1 and V2 swap the folded entries ``u*``, ``v*`` (each masked by the
   pad times a unit) and their shares of ``sum_t gamma_t residual_t + gamma (u* v* - claim)``
   with ``gamma`` from their key; each requires the sum to be 0, else raises
   :class:`ProofRejected` naming P and the other verifier (the two honest parties' reports
   intersect in the deviating one).

Cost (:func:`check_cost`, asserted in tests/unit/test_dzk.py): ``2 R + 3`` rounds and
``244 + 148 R`` words per party over the ring, ``9 + 7 R`` over the field, independent of the
products but for ``R`` (``M = 2^R`` = smallest power of two above ``1 +`` the sum of ``2 n``
per elementwise product, ``2 k`` per matrix product, ``2 C kh kw`` per convolution, or, in
bits, ``128`` per AND word plus a word for the pad; ``R = 20`` for a million). Computation is
``O(M * 48^2)`` word products per role in the ring, ``O(M * 48^2 / 64)`` word operations in the
field: the checks cost CPU, not bytes.

Soundness (:func:`soundness_bits`): a prover whose messages are wrong passes only if the
challenge is a root of a nonzero polynomial over GR(2^64, 48) of degree at most 2 (step 1:
degree 2 for ``s^T E t``; step 2: each fold, ``2 / (2^48 - 2)`` with ``r`` drawn from the
residues where ``r`` and ``1 - r`` are units) or of degree 1 (step 3): at most
``(2 R + 3) / (2^48 - 2)``, i.e. at least 41 bits for ``R <= MAX_FOLDS = 40``.
Zero knowledge (semi-honest or malicious verifier, honest prover): a verifier sees shares
masked by the key it lacks, public challenges, and one folded entry of the other's vector
plus the pad times a unit: uniform.

Scope: integer products (no truncation is verified: a fixed-point product returns the
untruncated scale ``x.frac_bits + y.frac_bits``); ``checked_matmul`` takes 2-D operands. A
received proof message of the wrong size, or a field element above 48 bits, is rejected as a
deviation of its sender.
Nothing in the query uses it yet (docs/SECURITY.md, *Inside the query*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from . import binfield as BF
from . import galois as G
from .party import Party
from .prf import PRG, derive_key
from .ringmm import ring_conv2d
from .sharing import ArithmeticShares, BooleanShares

MAX_FOLDS = 40
_SEED_WORDS = 2
_E = G.DEGREE


class ProofRejected(RuntimeError):
    """A check of one party's products failed: one of ``suspects`` deviated."""

    def __init__(self, message: str, suspects: tuple[int, ...]) -> None:
        super().__init__(message)
        self.suspects = suspects


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

    def vector_length(self) -> int:
        if self.kind == "mul":
            return 2 * self.x_lo.numel()
        if self.kind == "matmul":
            return 2 * self.x_lo.shape[1]
        if self.kind == "and":
            return 2 * 64 * self.x_lo.numel()
        return 2 * self.x_lo.shape[1] * self.y_lo.shape[2] * self.y_lo.shape[3]  # 2 C kh kw


@dataclass
class ProductLog:
    """One party's record of the products it made since the last :func:`verify_products`."""

    party: Party
    products: list[_Entry] = field(default_factory=list)


def _reshare(party: Party, z: torch.Tensor) -> torch.Tensor:
    """Send ``z`` to party i-1, receive party i+1's term (which must have the same shape)."""
    got, _ = party.comm.exchange(send_prev=z, recv_next=True)
    if got.shape != z.shape:
        nxt = (party.id + 1) % 3
        raise ProofRejected(f"server {party.id}: server {nxt} sent a reshare of shape {tuple(got.shape)}", (nxt,))
    return got


def _checked(x: ArithmeticShares, y: ArithmeticShares, kind: str, log: ProductLog,
             conv: _ConvShape | None = None) -> ArithmeticShares:
    if x.party is not y.party or x.party is not log.party:
        raise ValueError("cannot multiply shares of different parties/sessions")
    party = x.party
    if kind == "conv2d":
        assert conv is not None
        if len(x.shape) != 4 or len(y.shape) != 4 or x.shape[1] != y.shape[1] * conv.groups:
            raise ValueError(f"checked_conv2d: input {tuple(x.shape)} and weight {tuple(y.shape)} do not fit")
        xl, xh, yl, yh = x.lo, x.hi, y.lo, y.hi
        z = _f(kind, xl, yl + yh, conv) + _f(kind, xh, yl, conv)
    elif kind == "mul":
        shape = torch.broadcast_shapes(x.shape, y.shape)
        xl, xh = x.lo.expand(shape).contiguous(), x.hi.expand(shape).contiguous()
        yl, yh = y.lo.expand(shape).contiguous(), y.hi.expand(shape).contiguous()
        z = xl * (yl + yh) + xh * yl
    else:
        if len(x.shape) != 2 or len(y.shape) != 2 or x.shape[1] != y.shape[0]:
            raise ValueError(f"checked_matmul: need [m, k] @ [k, n], got {tuple(x.shape)} @ {tuple(y.shape)}")
        xl, xh, yl, yh = x.lo, x.hi, y.lo, y.hi
        z = xl @ (yl + yh) + xh @ yl
    draw_next = party.prg_next.int64(z.shape)
    draw_prev = party.prg_prev.int64(z.shape)
    z = z + draw_next - draw_prev
    got = _reshare(party, z)
    log.products.append(_ProductEntry(_Product(kind, xl, xh, yl, yh, got, draw_next, draw_prev, conv)))
    return ArithmeticShares(party, z, got, x.frac_bits + y.frac_bits)


def checked_mul(x: ArithmeticShares, y: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """Elementwise ``[x] * [y]``, recorded in ``log`` for :func:`verify_products`. Cost: 1 round, 1 element
    per output per party (as :func:`protocols.arithmetic.mul`); the result is NOT verified until then."""
    return _checked(x, y, "mul", log)


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
    64 lanes per party), recorded in ``log``; proved over GF(2^48) by :func:`verify_products`."""
    if x.party is not y.party or x.party is not log.party:
        raise ValueError("cannot AND shares of different parties/sessions")
    party = x.party
    shape = torch.broadcast_shapes(x.shape, y.shape)
    xl, xh = x.lo.expand(shape).contiguous(), x.hi.expand(shape).contiguous()
    yl, yh = y.lo.expand(shape).contiguous(), y.hi.expand(shape).contiguous()
    z = (xl & (yl ^ yh)) ^ (xh & yl)
    draw_next = party.prg_next.int64(z.shape)
    draw_prev = party.prg_prev.int64(z.shape)
    z = z ^ draw_next ^ draw_prev
    got = _reshare(party, z)
    log.products.append(_ProductEntry(_Product("and", xl, xh, yl, yh, got, draw_next, draw_prev)))
    return BooleanShares(party, z, got)


def _f(kind: str, a: torch.Tensor, b: torch.Tensor, conv: _ConvShape | None = None) -> torch.Tensor:
    if kind == "mul":
        return a * b
    if kind == "matmul":
        return a @ b
    assert conv is not None
    if conv.groups == 1:
        return ring_conv2d(a, b, conv.stride, conv.padding, conv.dilation)
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
            cols.append(tap.transpose(0, 1).reshape(c, n * ho * wo) @ t)
    return torch.stack(cols, 1).reshape(c * kh * kw, G.DEGREE)


def _channels_weighted(w: torch.Tensor, s: torch.Tensor, groups: int) -> torch.Tensor:
    """``W'[ci, kk] = sum_co s_co W[co, ci, kk]`` within each group: ``[C kh kw, DEGREE]``."""
    o = w.shape[0]
    per = w.reshape(groups, o // groups, -1)  # [G, O/G, C/G kh kw]
    return torch.einsum("gcj,gce->gje", per, s.reshape(groups, o // groups, G.DEGREE)).reshape(-1, G.DEGREE)


def _by_channel(t: torch.Tensor) -> torch.Tensor:
    """Conv output ``[N, O, Ho, Wo]`` -> ``[O, N Ho Wo]`` (positions in the order of ``t``)."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


@dataclass
class _Challenges:
    rho: torch.Tensor | None = None  # elementwise: [n, E]
    s: torch.Tensor | None = None  # matmul rows: [m, E]
    t: torch.Tensor | None = None  # matmul columns: [n, E]


def _draw_arith(p: _Product, rng: PRG) -> _Challenges:
    if p.kind == "mul":
        return _Challenges(rho=G.random(rng, p.x_lo.numel()))
    if p.kind == "matmul":
        return _Challenges(s=G.random(rng, p.x_lo.shape[0]), t=G.random(rng, p.y_lo.shape[1]))
    out = p.received  # [N, O, Ho, Wo]
    return _Challenges(s=G.random(rng, out.shape[1]), t=G.random(rng, out.numel() // out.shape[1]))


def _v1_vector(p: _Product, c: _Challenges, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """From ``A = x_i``, ``B = y_i``: ``[rho*A ; rho*B]`` or ``[A^T s ; B t]``."""
    if p.kind == "mul":
        assert c.rho is not None
        return torch.cat([c.rho * a.reshape(-1, 1), c.rho * b.reshape(-1, 1)])
    assert c.s is not None and c.t is not None
    if p.kind == "conv2d":
        assert p.conv is not None
        kernel = (p.y_lo.shape[2], p.y_lo.shape[3])
        return torch.cat([_positions_weighted(a, c.t, kernel, p.conv), _channels_weighted(b, c.s, p.conv.groups)])
    return torch.cat([a.T @ c.s, b @ c.t])


def _v2_vector(p: _Product, c: _Challenges, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """From ``A' = x_{i+1}``, ``B' = y_{i+1}``: ``[B' ; A']`` (lifted) or ``[B' t ; A'^T s]``."""
    if p.kind == "mul":
        return G.lift(torch.cat([b2.reshape(-1), a2.reshape(-1)]))
    assert c.s is not None and c.t is not None
    if p.kind == "conv2d":
        assert p.conv is not None
        kernel = (p.y_lo.shape[2], p.y_lo.shape[3])
        return torch.cat([_channels_weighted(b2, c.s, p.conv.groups), _positions_weighted(a2, c.t, kernel, p.conv)])
    return torch.cat([b2 @ c.t, a2.T @ c.s])


def _tau(p: _Product, c: _Challenges, target: torch.Tensor) -> torch.Tensor:
    """``rho . T`` or ``s^T T t`` for this verifier's part ``T`` of the claim."""
    if p.kind == "mul":
        assert c.rho is not None
        return (c.rho * target.reshape(-1, 1)).sum(0)
    assert c.s is not None and c.t is not None
    if p.kind == "conv2d":
        return G.inner(c.s, _by_channel(target) @ c.t)
    return G.inner(c.s, target @ c.t)


class _ArithClaim:
    """Products in Z_2^64 (``mul``, ``matmul``, ``conv2d``), proved over GR(2^64, 48)."""

    def draw(self, p: _Product, rng: PRG) -> _Challenges:
        return _draw_arith(p, rng)

    def v1_parts(self, p: _Product, c: _Challenges, a: torch.Tensor, b: torch.Tensor) -> list[Any]:
        return [_v1_vector(p, c, a, b)]

    def v2_parts(self, p: _Product, c: _Challenges, a2: torch.Tensor, b2: torch.Tensor) -> list[Any]:
        return [_v2_vector(p, c, a2, b2)]

    def tau(self, p: _Product, c: _Challenges, target: torch.Tensor) -> torch.Tensor:
        return _tau(p, c, target)

    def v1_target(self, p: _Product) -> torch.Tensor:  # T1 = m - f(x_i, y_i) + u
        return p.received - _f(p.kind, p.x_hi, p.y_hi, p.conv) + p.draw_next

    def v2_target(self, p: _Product) -> torch.Tensor:  # T2 = -w
        return -p.draw_prev


class _AndClaim:
    """AND gates on XOR shares (64 lanes per word), proved over GF(2^48): ``rho`` is 48 random bit-planes,
    V1's vector ``[rho & A ; rho & B]``, V2's the bits ``[B' ; A']``, ``tau = sum rho_g T_g``."""

    def draw(self, p: _Product, rng: PRG) -> torch.Tensor:
        return rng.int64((BF.DEGREE, p.x_lo.numel()))

    def v1_parts(self, p: _Product, rho: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> list[Any]:
        return [BF.scale_bits(rho, a), BF.scale_bits(rho, b)]

    def v2_parts(self, p: _Product, rho: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> list[Any]:
        return [BF.lift_bits(b2), BF.lift_bits(a2)]

    def tau(self, p: _Product, rho: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return BF.dot_bits(rho, target)

    def v1_target(self, p: _Product) -> torch.Tensor:  # T1 = m ^ (x_i & y_i) ^ u
        return p.received ^ (p.x_hi & p.y_hi) ^ p.draw_next

    def v2_target(self, p: _Product) -> torch.Tensor:  # T2 = w
        return p.draw_prev


_CLAIMS: dict[str, Any] = {"mul": _ArithClaim(), "matmul": _ArithClaim(), "conv2d": _ArithClaim(), "and": _AndClaim()}


class _Entry:
    """One recorded step, as one party sees it, for the three proofs it takes part in (its own as
    prover, nxt's as V1, prev's as V2). Every role draws the same challenges for the same prover."""

    field = False

    def length(self, prover: int) -> int:
        """Vector entries this step adds to ``prover``'s proof (public: from shapes)."""
        raise NotImplementedError

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        """This party's two vectors' parts (V1's and V2's) for its own proof."""
        raise NotImplementedError

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        """As V1 of party i+1: its vector parts and its part of the claim (``None``: nothing)."""
        raise NotImplementedError

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        """As V2 of party i-1: its vector parts and its part of the claim."""
        raise NotImplementedError


class _ProductEntry(_Entry):
    """A reshared product: every party proves its own message (symmetric)."""

    def __init__(self, p: _Product) -> None:
        self.p, self.claim = p, _CLAIMS[p.kind]
        self.field = p.kind == "and"

    def length(self, prover: int) -> int:
        return self.p.vector_length()

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        p, c = self.p, self.claim.draw(self.p, rng)  # A, B = my lo; A', B' = my hi
        return self.claim.v1_parts(p, c, p.x_lo, p.y_lo), self.claim.v2_parts(p, c, p.x_hi, p.y_hi)

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        p, c = self.p, self.claim.draw(self.p, rng)  # A = x_{i+1}, B = y_{i+1} = my hi
        return self.claim.v1_parts(p, c, p.x_hi, p.y_hi), self.claim.tau(p, c, self.claim.v1_target(p))

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        p, c = self.p, self.claim.draw(self.p, rng)  # A' = x_i, B' = y_i = my lo
        return self.claim.v2_parts(p, c, p.x_lo, p.y_lo), self.claim.tau(p, c, self.claim.v2_target(p))


_LOW63 = (1 << 63) - 1


class _RingLinear(_Entry):
    """``prover``'s message satisfies ``T1 + T2 = 0`` (T1 at its V1, T2 at its V2): no vector entries."""

    def __init__(self, me: int, prover: int, numel: int, t1: torch.Tensor | None = None,
                 t2: torch.Tensor | None = None) -> None:
        self.me, self.prover, self.numel, self.t1, self.t2 = me, prover, numel, t1, t2

    def length(self, prover: int) -> int:
        return 0

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        if self.prover == self.me:
            G.random(rng, self.numel)
        return [], []

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me + 1) % 3:
            return [], None
        assert self.t1 is not None
        return [], (G.random(rng, self.numel) * self.t1.reshape(-1, 1)).sum(0)

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me - 1) % 3:
            return [], None
        assert self.t2 is not None
        return [], (G.random(rng, self.numel) * self.t2.reshape(-1, 1)).sum(0)


def _shr1(w: torch.Tensor) -> torch.Tensor:
    return (w >> 1) & _LOW63


class _CarryChain(_Entry):
    """``prover`` claims, per 64-bit word, that ``C = C1 ^ C2`` holds the carries of ``S = P + Q`` (P, C1 at its
    V1; Q, C2 at its V2) and that ``lin(S) = 0`` for a GF(2)-linear word map ``lin``. Over GF(2^48):
    ``c_0 = 0``, ``s = P ^ Q ^ C`` and, on lanes 0..62, ``c_{k+1} = p_k q_k ^ c_k (p_k ^ q_k)``, i.e.
    ``(C1 >>> 1) ^ (C1 & P) ^ (C2 >>> 1) ^ (C2 & Q) = (P & Q) ^ (C1 & Q) ^ (P & C2)``: three bit
    products per lane, so ``3 * 64`` entries per word; the carry bits are bits by construction
    (XOR shares of words). A prover with no valid carries for a sum that breaks ``lin`` is caught."""

    field = True

    def __init__(self, me: int, prover: int, words: int, lin: Any, mine: tuple[torch.Tensor, ...] | None = None,
                 v1: tuple[torch.Tensor, torch.Tensor] | None = None,
                 v2: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.me, self.prover, self.words, self.lin = me, prover, words, lin
        self.mine, self.v1, self.v2 = mine, v1, v2

    def length(self, prover: int) -> int:
        return 3 * 64 * self.words if prover == self.prover else 0

    def _draw(self, rng: PRG) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (BF.DEGREE, self.words)
        return rng.int64(shape) & _LOW63, rng.int64(shape), rng.int64(shape)

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        if self.prover != self.me:
            return [], []
        assert self.mine is not None
        rho, _, _ = self._draw(rng)
        p, q, c1, c2 = self.mine
        return ([BF.scale_bits(rho, p), BF.scale_bits(rho, c1), BF.scale_bits(rho, p)],
                [BF.lift_bits(q), BF.lift_bits(q), BF.lift_bits(c2)])

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me + 1) % 3:
            return [], None
        assert self.v1 is not None
        rho, rho0, rho_lin = self._draw(rng)
        p, c1 = self.v1
        tau = BF.dot_bits(rho, _shr1(c1) ^ (c1 & p)) ^ BF.dot_bits(rho0, c1 & 1)
        tau ^= BF.dot_bits(rho_lin, self.lin(p ^ c1))
        return [BF.scale_bits(rho, p), BF.scale_bits(rho, c1), BF.scale_bits(rho, p)], tau

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        if self.prover != (self.me - 1) % 3:
            return [], None
        assert self.v2 is not None
        rho, rho0, rho_lin = self._draw(rng)
        q, c2 = self.v2
        tau = BF.dot_bits(rho, _shr1(c2) ^ (c2 & q)) ^ BF.dot_bits(rho0, c2 & 1)
        tau ^= BF.dot_bits(rho_lin, self.lin(q ^ c2))
        return [BF.lift_bits(q), BF.lift_bits(q), BF.lift_bits(c2)], tau


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
    2 one (against 1, 1, 1 unchecked); the proof adds ``2 * 3 * 64`` field entries per element to
    party 0's GF(2^48) proof.
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
        log.products += [
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
        log.products += [
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
    log.products += [
        _RingLinear(me, 1, n, t2=z1 - b), _RingLinear(me, 2, n),
        _CarryChain(me, 0, n, below, v1=(e1.reshape(-1), ce1.reshape(-1))),
        _CarryChain(me, 0, n, signed, v1=(y0.reshape(-1), cd1.reshape(-1))),
    ]
    return ArithmeticShares(party, (z1 + z) >> bits, y0, x.frac_bits)


def _seed_tensor(prg: PRG) -> torch.Tensor:
    return torch.frombuffer(prg.bytes(8 * _SEED_WORDS), dtype=torch.int64, count=_SEED_WORDS).clone()


def _expand(seed: torch.Tensor, label: str) -> PRG:
    return PRG(derive_key(seed.numpy().tobytes(), label))


class _Ring:
    """GR(2^64, 48): scalars ``[48]``, vectors ``[m, 48]``."""

    words = G.DEGREE
    min_folds = 1

    def folds(self, entries: int) -> int:
        return max(self.min_folds, math.ceil(math.log2(entries + 1)))

    def random(self, prg: PRG, k: int) -> torch.Tensor:
        return G.random(prg, k)

    def zero(self) -> torch.Tensor:
        return G.zeros()

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def sub(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return G.mul(a, b)

    def good_challenge(self, r: torch.Tensor) -> bool:
        return bool(G.is_unit(r)) and bool(G.is_unit(G.one() - r))

    def padded(self, parts: list[Any], pad: torch.Tensor, folds: int) -> Any:
        vec = torch.cat(parts) if parts else G.zeros(0)
        out = G.zeros(1 << folds)
        out[: vec.shape[0]] = vec
        out[vec.shape[0]] = pad
        return out

    def fold(self, vec: Any, r: torch.Tensor) -> Any:
        half = vec.shape[0] // 2
        low, high = vec[:half], vec[half:]
        return low + (high - low) @ G.mul_matrix(r)

    def fold_polynomial(self, u: Any, v: Any) -> torch.Tensor:
        half = u.shape[0] // 2
        c0 = G.inner(u[:half], v[:half])
        c_hi = G.inner(u[half:], v[half:])
        c2 = G.inner(u[half:] - u[:half], v[half:] - v[:half])
        return torch.stack([c0, c_hi - c0 - c2, c2])

    def first(self, vec: Any) -> torch.Tensor:
        return vec[0]

    def well_formed(self, t: torch.Tensor) -> bool:
        return True


class _Field:
    """GF(2^48) (:mod:`protocols.binfield`): scalars ``[1]``, vectors as bit-planes."""

    words = 1
    min_folds = 7  # the pad takes a word of its own: at least two words

    def folds(self, entries: int) -> int:
        return 6 + max(1, math.ceil(math.log2(entries // 64 + 1)))

    def random(self, prg: PRG, k: int) -> torch.Tensor:
        return BF.random(prg, k)

    def zero(self) -> torch.Tensor:
        return torch.zeros(1, dtype=torch.int64)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a ^ b

    sub = add

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return BF.mul(a, b)

    def good_challenge(self, r: torch.Tensor) -> bool:
        return int(r.reshape(-1)[0]) not in (0, 1)

    def padded(self, parts: list[Any], pad: torch.Tensor, folds: int) -> Any:
        return BF.concat(parts, pad, folds)

    def fold(self, vec: Any, r: torch.Tensor) -> Any:
        return BF.fold(vec, r)

    def fold_polynomial(self, u: Any, v: Any) -> torch.Tensor:
        return BF.fold_polynomial(u, v)

    def first(self, vec: Any) -> torch.Tensor:
        return BF.first(vec)

    def well_formed(self, t: torch.Tensor) -> bool:
        return bool(((t >> BF.DEGREE) == 0).all())


_RING, _FIELD = _Ring(), _Field()


def _challenge(alg: _Ring | _Field, seed: torch.Tensor) -> torch.Tensor:
    """A scalar ``r`` with ``r`` and ``1 - r`` invertible, from a public seed (rejection sampling)."""
    rng = _expand(seed, "dzk-fold")
    while True:
        r = alg.random(rng, 1)[0]
        if alg.good_challenge(r):
            return r


def _well_formed(alg: _Ring | _Field, t: torch.Tensor, scalars: int, me: int, sender: int) -> torch.Tensor:
    """A received message must hold ``scalars`` scalars, field elements in 48 bits (else the sender deviated)."""
    if t.numel() != scalars * alg.words or not alg.well_formed(t):
        raise ProofRejected(f"server {me}: server {sender} sent a malformed proof message", (sender,))
    return t


def _agree(a: torch.Tensor, b: torch.Tensor, me: int, prev: int, nxt: int, what: str) -> None:
    if not torch.equal(a, b):
        raise ProofRejected(
            f"server {me}: servers {prev} and {nxt} sent different {what} for the check of its products",
            (prev, nxt),
        )


def verify_products(log: ProductLog) -> None:
    """Check every product in ``log`` (all three parties' messages); clears the log.

    Arithmetic products are proved over GR(2^64, 48), AND gates over GF(2^48): one proof each
    (one after the other) when the log holds both kinds.
    Raises :class:`ProofRejected` if any party's messages (or its part in a check) were wrong.
    Cost: :func:`check_cost` per proof. See the module docstring for the steps.
    """
    entries, log.products = log.products, []
    for alg in (_RING, _FIELD):
        mine = [e for e in entries if e.field == (alg is _FIELD)]
        if mine:
            _prove_and_verify(log.party, alg, mine)


def _prove_and_verify(party: Party, alg: _Ring | _Field, entries: list[_Entry]) -> None:
    comm = party.comm
    me, nxt, prev = party.id, (party.id + 1) % 3, (party.id - 1) % 3
    folds = alg.folds(max(sum(e.length(i) for e in entries) for i in range(3)))
    if folds > MAX_FOLDS:
        raise ValueError(f"verify_products: more than 2^{MAX_FOLDS} vector entries; verify more often")
    w = alg.words

    seed_prev = party.prg_prev.bytes(16)[:16]
    seed_next = party.prg_next.bytes(16)[:16]

    def sub(seed: bytearray, label: str) -> PRG:
        return PRG(derive_key(bytes(seed), label))

    # Prover role (my messages): masks with V1 = prev and V2 = next.
    pm1, pm2 = sub(seed_prev, f"dzk-mask-{me}"), sub(seed_next, f"dzk-mask-{me}")
    # V1 of prover nxt: its masks come from our pair key, challenges from the key with prev.
    v1_mask, v1_coin = sub(seed_next, f"dzk-mask-{nxt}"), sub(seed_prev, f"dzk-coin-{nxt}")
    # V2 of prover prev: masks from our pair key, challenges from the key with nxt.
    v2_mask, v2_coin = sub(seed_prev, f"dzk-mask-{prev}"), sub(seed_next, f"dzk-coin-{prev}")

    # 0. Pads; P sends V2 its share of alpha * beta (fixed before the challenge).
    alpha, p1 = alg.random(pm1, 2)
    beta = alg.random(pm2, 1)[0]
    v1_alpha, v1_p1 = alg.random(v1_mask, 2)
    v2_beta = alg.random(v2_mask, 1)[0]
    _, got_p2 = comm.exchange(send_next=alg.sub(alg.mul(alpha, beta), p1), recv_prev=True)
    _well_formed(alg, got_p2, 1, me, prev)

    # 1. Challenge seeds: as V1 to nxt, as V2 to prev; as P from both.
    v1_seed, v2_seed = _seed_tensor(v1_coin), _seed_tensor(v2_coin)
    from_next, from_prev = comm.exchange(send_next=v1_seed, send_prev=v2_seed, recv_next=True, recv_prev=True)
    _agree(from_prev.reshape(-1), from_next.reshape(-1), me, prev, nxt, "challenges")
    if from_prev.numel() != _SEED_WORDS:
        raise ProofRejected(f"server {me}: malformed challenge from servers {prev} and {nxt}", (prev, nxt))

    p_u: list[Any] = []
    p_v: list[Any] = []
    v1_u: list[Any] = []
    v2_v: list[Any] = []
    v1_claim, v2_claim = alg.zero(), alg.zero()
    p_rng, v1_rng, v2_rng = _expand(from_prev, "dzk-rho"), _expand(v1_seed, "dzk-rho"), _expand(v2_seed, "dzk-rho")
    for e in entries:
        u_parts, v_parts = e.as_prover(p_rng)
        p_u += u_parts
        p_v += v_parts
        parts, tau = e.as_v1(v1_rng)
        v1_u += parts
        v1_claim = v1_claim if tau is None else alg.add(v1_claim, tau)
        parts, tau = e.as_v2(v2_rng)
        v2_v += parts
        v2_claim = v2_claim if tau is None else alg.add(v2_claim, tau)

    u, v = alg.padded(p_u, alpha, folds), alg.padded(p_v, beta, folds)
    v1_vec, v2_vec = alg.padded(v1_u, v1_alpha, folds), alg.padded(v2_v, v2_beta, folds)
    v1_claim, v2_claim = alg.add(v1_claim, v1_p1), alg.add(v2_claim, got_p2)
    v1_res, v2_res = [], []

    def residual(h: torch.Tensor, claim: torch.Tensor) -> torch.Tensor:  # h(0) + h(1) - claim
        return alg.sub(alg.add(alg.add(h[0], h[0]), alg.add(h[1], h[2])), claim)

    def at(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # h(r)
        return alg.add(h[0], alg.mul(r, alg.add(h[1], alg.mul(r, h[2]))))

    # 2. Folds.
    for _ in range(folds):
        h = alg.fold_polynomial(u, v)
        h1 = alg.random(pm1, 3)
        _, got_h2 = comm.exchange(send_next=alg.sub(h, h1).reshape(-1), recv_prev=True)
        v1_h = alg.random(v1_mask, 3)
        v2_h = _well_formed(alg, got_h2, 3, me, prev).view(3, w)
        v1_res.append(residual(v1_h, v1_claim))
        v2_res.append(residual(v2_h, v2_claim))
        v1_seed, v2_seed = _seed_tensor(v1_coin), _seed_tensor(v2_coin)
        from_next, from_prev = comm.exchange(send_next=v1_seed, send_prev=v2_seed, recv_next=True, recv_prev=True)
        _agree(from_prev.reshape(-1), from_next.reshape(-1), me, prev, nxt, "fold challenges")
        if from_prev.numel() != _SEED_WORDS:
            raise ProofRejected(f"server {me}: malformed challenge from servers {prev} and {nxt}", (prev, nxt))
        r_p, r_v1, r_v2 = _challenge(alg, from_prev), _challenge(alg, v1_seed), _challenge(alg, v2_seed)
        u, v = alg.fold(u, r_p), alg.fold(v, r_p)
        v1_vec, v2_vec = alg.fold(v1_vec, r_v1), alg.fold(v2_vec, r_v2)
        v1_claim, v2_claim = at(v1_h, r_v1), at(v2_h, r_v2)

    # 3. Decide: swap folded entries and shares of the combined residual.
    v1_gamma, v2_gamma = alg.random(v1_coin, folds + 1), alg.random(v2_coin, folds + 1)

    def combined(gamma: torch.Tensor, res: list[torch.Tensor], claim: torch.Tensor) -> torch.Tensor:
        z = alg.zero()
        for g, e in zip(gamma[:-1], res):
            z = alg.add(z, alg.mul(g, e))
        return alg.sub(z, alg.mul(gamma[-1], claim))

    v1_z = combined(v1_gamma, v1_res, v1_claim)
    v2_z = combined(v2_gamma, v2_res, v2_claim)
    v1_first, v2_first = alg.first(v1_vec), alg.first(v2_vec)
    from_next, from_prev = comm.exchange(
        send_prev=torch.cat([v1_first, v1_z]), send_next=torch.cat([v2_first, v2_z]),
        recv_next=True, recv_prev=True,
    )
    _well_formed(alg, from_next, 2, me, nxt)
    _well_formed(alg, from_prev, 2, me, prev)
    zero = alg.zero()
    # As V1 of nxt (co-verifier prev sent its v* and share); as V2 of prev (co-verifier nxt sent u*).
    total_v1 = alg.add(alg.add(v1_z, from_prev[w:]), alg.mul(v1_gamma[-1], alg.mul(v1_first, from_prev[:w])))
    total_v2 = alg.add(alg.add(from_next[w:], v2_z), alg.mul(v2_gamma[-1], alg.mul(from_next[:w], v2_first)))
    if not torch.equal(total_v1, zero):
        raise ProofRejected(
            f"server {me}: the check of server {nxt}'s products failed (server {nxt} or server {prev} deviated)",
            (nxt, prev),
        )
    if not torch.equal(total_v2, zero):
        raise ProofRejected(
            f"server {me}: the check of server {prev}'s products failed (server {prev} or server {nxt} deviated)",
            (prev, nxt),
        )


def check_cost(entries: int, boolean: bool = False) -> tuple[int, int]:
    """``(rounds, words sent per party)`` of one proof over ``entries`` vector entries (``boolean``: the
    GF(2^48) proof of AND gates, entries in bits): ``2 R + 3`` rounds, ``5 s + 4 + R (3 s + 4)`` words
    with ``s`` words per scalar (48 in the ring, 1 in the field)."""
    alg = _FIELD if boolean else _RING
    folds = alg.folds(entries)
    s = alg.words
    return 2 * folds + 3, 5 * s + 4 + folds * (3 * s + 4)


def soundness_bits(entries: int, boolean: bool = False) -> float:
    """``-log2`` of the probability that wrong messages pass one proof: ``(2 R + 3) / (2^48 - 2)``."""
    folds = (_FIELD if boolean else _RING).folds(entries)
    return -math.log2((2 * folds + 3) / (2.0**G.DEGREE - 2))
