"""Replicated secret sharing (2-out-of-3) over Z_2^64: share types, share, reveal.

A secret ``x = x0 + x1 + x2 (mod 2**64)`` (arithmetic) or ``x0 ^ x1 ^ x2`` (boolean, 64
bits packed per int64 word). Party ``i`` holds the pair ``(x_i, x_{i+1})`` as
``lo``/``hi``. This is ABY3's sharing (Mohassel & Rindal, CCS 2018). Any one pair is two
uniformly random ring elements, whatever ``x`` is; any two pairs determine ``x``.

Share objects fail safely in the MPyC way: ``bool(shares)`` raises ``TypeError`` so no
code can branch on a secret, and operators return ``NotImplemented`` for operands they
cannot combine.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from .party import Party
from .prf import PRG, random_key
from .ring import DEFAULT_FP, FixedPoint, as_ring

SharePair = tuple[torch.Tensor, torch.Tensor]


class InconsistentSharesError(ValueError):
    """Replicated copies of a share disagree: some server sent a wrong share."""

    def __init__(self, message: str, suspects: tuple[int, ...]) -> None:
        super().__init__(message)
        self.suspects = suspects


def _check_pair(lo: torch.Tensor, hi: torch.Tensor) -> None:
    as_ring(lo, "lo share")
    as_ring(hi, "hi share")
    if lo.shape != hi.shape:
        raise ValueError(f"share pair shapes differ: {tuple(lo.shape)} vs {tuple(hi.shape)}")


class _Shares:
    """Common behaviour of a party's view (``lo``, ``hi``) of a shared tensor."""

    __slots__ = ("party", "lo", "hi")

    def __init__(self, party: Party, lo: torch.Tensor, hi: torch.Tensor) -> None:
        _check_pair(lo, hi)
        self.party = party
        self.lo = lo
        self.hi = hi

    @property
    def shape(self) -> torch.Size:
        return self.lo.shape

    def numel(self) -> int:
        return self.lo.numel()

    def __len__(self) -> int:
        return len(self.lo)

    def __bool__(self) -> bool:
        raise TypeError("cannot branch on a secret-shared value (reveal it first)")

    def __repr__(self) -> str:  # never print share values
        return f"{type(self).__name__}(party={self.party.id}, shape={tuple(self.shape)})"

    def _like(self, lo: torch.Tensor, hi: torch.Tensor):
        raise NotImplementedError

    # Layout operations are local and apply identically to both components.
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return self._like(self.lo.reshape(shape), self.hi.reshape(shape))

    def view(self, *shape: int):
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        return self._like(self.lo.flatten(start_dim, end_dim), self.hi.flatten(start_dim, end_dim))

    def transpose(self, a: int, b: int):
        return self._like(self.lo.transpose(a, b), self.hi.transpose(a, b))

    def permute(self, *dims: int):
        return self._like(self.lo.permute(*dims), self.hi.permute(*dims))

    def unsqueeze(self, dim: int):
        return self._like(self.lo.unsqueeze(dim), self.hi.unsqueeze(dim))

    def squeeze(self, dim: int):
        return self._like(self.lo.squeeze(dim), self.hi.squeeze(dim))

    def expand(self, *shape: int):
        return self._like(self.lo.expand(*shape), self.hi.expand(*shape))

    def contiguous(self):
        return self._like(self.lo.contiguous(), self.hi.contiguous())

    def __getitem__(self, idx):
        return self._like(self.lo[idx], self.hi[idx])

    @property
    def T(self):
        return self._like(self.lo.T, self.hi.T)


class ArithmeticShares(_Shares):
    """A party's view of an arithmetic RSS ``[x]`` over Z_2^64 (``frac_bits`` = fixed-point scale)."""

    __slots__ = ("frac_bits",)

    def __init__(self, party: Party, lo: torch.Tensor, hi: torch.Tensor, frac_bits: int = 0) -> None:
        super().__init__(party, lo, hi)
        self.frac_bits = frac_bits

    def _like(self, lo: torch.Tensor, hi: torch.Tensor) -> "ArithmeticShares":
        return ArithmeticShares(self.party, lo, hi, self.frac_bits)

    # ---- local (no communication) -------------------------------------------------
    def _public_to_ring(self, c) -> torch.Tensor:
        """Encode a public constant at this sharing's scale."""
        if isinstance(c, torch.Tensor) and c.dtype == torch.int64:
            return c << self.frac_bits if self.frac_bits else c
        if self.frac_bits:
            return FixedPoint(self.frac_bits).encode(c)
        t = torch.as_tensor(c)
        if torch.is_floating_point(t):
            raise TypeError("adding a float to an integer (frac_bits=0) sharing; encode it first")
        return t.to(torch.int64)

    def add_public(self, c) -> "ArithmeticShares":
        """``[x] + c`` for public ``c``: component x0 absorbs c (parties 0 and 2). Cost: local."""
        cr = self._public_to_ring(c)
        lo, hi = self.lo, self.hi
        if self.party.id == 0:
            lo = lo + cr
            hi = hi + torch.zeros_like(cr)
        elif self.party.id == 2:
            hi = hi + cr
            lo = lo + torch.zeros_like(cr)
        else:
            zero = torch.zeros_like(cr)
            lo, hi = lo + zero, hi + zero
        return ArithmeticShares(self.party, lo, hi, self.frac_bits)

    def _check_peer(self, other: "ArithmeticShares") -> None:
        if other.party is not self.party:
            raise ValueError("cannot combine shares of different parties/sessions")
        if other.frac_bits != self.frac_bits:
            raise ValueError(
                f"fixed-point scales differ: {self.frac_bits} vs {other.frac_bits} fractional bits"
            )

    def __add__(self, other) -> "ArithmeticShares":
        if isinstance(other, ArithmeticShares):
            self._check_peer(other)
            return ArithmeticShares(self.party, self.lo + other.lo, self.hi + other.hi, self.frac_bits)
        if isinstance(other, (int, float, torch.Tensor)):
            return self.add_public(other)
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> "ArithmeticShares":
        return ArithmeticShares(self.party, -self.lo, -self.hi, self.frac_bits)

    def __sub__(self, other) -> "ArithmeticShares":
        if isinstance(other, ArithmeticShares):
            self._check_peer(other)
            return ArithmeticShares(self.party, self.lo - other.lo, self.hi - other.hi, self.frac_bits)
        if isinstance(other, (int, float, torch.Tensor)):
            return self.add_public(-other)
        return NotImplemented

    def __rsub__(self, other) -> "ArithmeticShares":
        return (-self).__add__(other)

    def mul_public_int(self, c: int | torch.Tensor) -> "ArithmeticShares":
        """``[x] * c`` for a public integer (tensor) ``c``; scale unchanged. Cost: local."""
        if isinstance(c, torch.Tensor) and c.dtype != torch.int64:
            raise TypeError("mul_public_int needs an int64 tensor; use * for fixed-point reals")
        return ArithmeticShares(self.party, self.lo * c, self.hi * c, self.frac_bits)

    def __mul__(self, other):
        from . import arithmetic

        if isinstance(other, ArithmeticShares):
            return arithmetic.mul(self, other)
        if isinstance(other, bool):
            return NotImplemented
        if isinstance(other, int) or (isinstance(other, torch.Tensor) and other.dtype == torch.int64):
            return self.mul_public_int(other)
        if isinstance(other, (float, torch.Tensor)):
            return arithmetic.mul_public(self, other)
        return NotImplemented

    __rmul__ = __mul__

    def __matmul__(self, other):
        from . import arithmetic

        if isinstance(other, ArithmeticShares):
            return arithmetic.matmul(self, other)
        return NotImplemented

    def sum(self, dim=None, keepdim: bool = False) -> "ArithmeticShares":
        if dim is None:
            return ArithmeticShares(self.party, self.lo.sum(), self.hi.sum(), self.frac_bits)
        return ArithmeticShares(
            self.party, self.lo.sum(dim, keepdim=keepdim), self.hi.sum(dim, keepdim=keepdim), self.frac_bits
        )


class BooleanShares(_Shares):
    """A party's view of a boolean RSS: XOR shares, 64 bit-lanes per int64 word."""

    def _like(self, lo: torch.Tensor, hi: torch.Tensor) -> "BooleanShares":
        return BooleanShares(self.party, lo, hi)

    def __xor__(self, other) -> "BooleanShares":
        if isinstance(other, BooleanShares):
            return BooleanShares(self.party, self.lo ^ other.lo, self.hi ^ other.hi)
        if isinstance(other, (int, torch.Tensor)):
            return self.xor_public(other)
        return NotImplemented

    __rxor__ = __xor__

    def xor_public(self, c: int | torch.Tensor) -> "BooleanShares":
        """``[x] ^ c`` for public ``c``: component x0 absorbs it. Cost: local."""
        c = torch.as_tensor(c, dtype=torch.int64)
        lo, hi = self.lo, self.hi
        if self.party.id == 0:
            lo = lo ^ c
        elif self.party.id == 2:
            hi = hi ^ c
        return BooleanShares(self.party, lo, hi)

    def __invert__(self) -> "BooleanShares":
        return self.xor_public(-1)

    def and_public(self, mask: int | torch.Tensor) -> "BooleanShares":
        """``[x] & m`` for public ``m``. Cost: local."""
        return BooleanShares(self.party, self.lo & mask, self.hi & mask)

    def __and__(self, other):
        from . import boolean

        if isinstance(other, BooleanShares):
            return boolean.and_(self, other)
        if isinstance(other, (int, torch.Tensor)):
            return self.and_public(other)
        return NotImplemented

    def __lshift__(self, k: int) -> "BooleanShares":
        return BooleanShares(self.party, self.lo << k, self.hi << k)

    def rshift_logical(self, k: int) -> "BooleanShares":
        """Logical right shift by ``k`` bits (zeros enter at the top). Cost: local."""
        if k == 0:
            return self
        mask = (1 << (64 - k)) - 1
        return BooleanShares(self.party, (self.lo >> k) & mask, (self.hi >> k) & mask)


# ---- client side --------------------------------------------------------------------


def additive_split(x: torch.Tensor, prg: PRG | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ring tensor ``x`` into three uniformly random additive shares."""
    x = as_ring(x, "secret")
    prg = prg or PRG(random_key())
    x0 = prg.int64(x.shape)
    x1 = prg.int64(x.shape)
    return x0, x1, x - x0 - x1


def share(x: torch.Tensor, prg: PRG | None = None) -> list[SharePair]:
    """Client side: RSS pairs of ring tensor ``x``; pair ``i`` goes to party ``i``. Cost: 2 elements per party."""
    xs = additive_split(x, prg)
    return [(xs[i], xs[(i + 1) % 3]) for i in range(3)]


def share_xor(x: torch.Tensor, prg: PRG | None = None) -> list[SharePair]:
    """Client side: boolean RSS pairs of ``x`` (XOR)."""
    x = as_ring(x, "secret")
    prg = prg or PRG(random_key())
    x0, x1 = prg.int64(x.shape), prg.int64(x.shape)
    xs = (x0, x1, x ^ x0 ^ x1)
    return [(xs[i], xs[(i + 1) % 3]) for i in range(3)]


def share_fixed(x, fp: FixedPoint = DEFAULT_FP, prg: PRG | None = None) -> list[SharePair]:
    """Client side: encode reals in fixed point, then ``share``."""
    return share(fp.encode(x), prg)


def reconstruct(pairs: Sequence[SharePair | None], check: bool = True) -> torch.Tensor:
    """Client side: combine the pairs received from the servers (any two suffice).

    With all three pairs and ``check``, every replicated component is compared across the
    two servers that hold it; a mismatch raises :class:`InconsistentSharesError` naming
    the servers involved (a server that sent a wrong share is detected, not trusted).
    """
    present = [i for i, p in enumerate(pairs) if p is not None]
    if len(pairs) != 3 or len(present) < 2:
        raise ValueError("reconstruct needs pairs from at least two of the three servers")
    for i in present:
        _check_pair(*pairs[i])
    shapes = {tuple(pairs[i][0].shape) for i in present}
    if len(shapes) != 1:
        raise ValueError(f"servers returned different shapes: {sorted(shapes)}")
    comp: dict[int, torch.Tensor] = {}
    bad: set[int] = set()
    for i in present:
        lo, hi = pairs[i]
        for j, v in ((i, lo), ((i + 1) % 3, hi)):
            if j not in comp:
                comp[j] = v
            elif check and not torch.equal(comp[j], v):
                bad.update({(j - 1) % 3, j})  # component j is held by servers j-1 and j
    if bad:
        raise InconsistentSharesError(
            f"replicated shares disagree between servers {sorted(bad)}", tuple(sorted(bad))
        )
    return comp[0] + comp[1] + comp[2]


def digest(t: torch.Tensor) -> bytes:
    """SHA-256 of a tensor's bytes: used to compare replicated copies without sending them."""
    return hashlib.sha256(t.contiguous().numpy().tobytes()).digest()


# ---- party side: reveal -------------------------------------------------------------


def _digest_words(t: torch.Tensor) -> torch.Tensor:
    """SHA-256 of a tensor as 4 int64 words (to send through ``Comm``)."""
    return torch.frombuffer(bytearray(digest(t)), dtype=torch.int64)


def _combine(x: ArithmeticShares | BooleanShares, missing: torch.Tensor) -> torch.Tensor:
    if isinstance(x, BooleanShares):
        return x.lo ^ x.hi ^ missing
    return x.lo + x.hi + missing


def _verify(party_id: int, got: torch.Tensor, digest_words: torch.Tensor) -> None:
    if not torch.equal(_digest_words(got), digest_words):
        suspects = ((party_id - 1) % 3, (party_id + 1) % 3)
        raise InconsistentSharesError(
            f"party {party_id}: replicated share copies disagree at an opening "
            f"(sent by parties {suspects[0]} and {suspects[1]}); one of them deviated",
            suspects,
        )


def reveal(x: ArithmeticShares | BooleanShares, check: bool = True) -> torch.Tensor:
    """Open ``x`` to all three parties. Cost: 1 round, ``numel`` elements (+4 words if checked) per party.

    Party i sends ``x_i`` to party i+1, the one component it lacks. With ``check`` the
    other holder of that component (party i+2) sends its SHA-256 digest too, so a single
    party that sends a wrong share is detected (``InconsistentSharesError``), never trusted.
    """
    comm = x.party.comm
    if not check:
        _, got = comm.exchange(send_next=x.lo, recv_prev=True)
        return _combine(x, got)
    h, got = comm.exchange(send_next=x.lo, send_prev=_digest_words(x.hi), recv_next=True, recv_prev=True)
    _verify(x.party.id, got, h)
    return _combine(x, got)


def reveal_to(x: ArithmeticShares | BooleanShares, receiver: int, check: bool = True) -> torch.Tensor | None:
    """Open ``x`` to party ``receiver`` only. Cost: 1 round, ``numel`` elements sent by one party (+4 words).

    Only party ``receiver - 1`` sends a share: ``x_{receiver-1}``, the component the
    receiver lacks. With ``check`` the third party sends the receiver a digest of its copy
    of that same component; the non-receivers receive nothing.
    """
    p = x.party
    if receiver not in (0, 1, 2):
        raise ValueError(f"receiver must be 0, 1 or 2, got {receiver!r}")
    if p.id == (receiver - 1) % 3:
        p.comm.exchange(send_next=x.lo)
        return None
    if p.id == receiver:
        h, got = p.comm.exchange(recv_prev=True, recv_next=check)
        if check:
            _verify(p.id, got, h)
        return _combine(x, got)
    p.comm.exchange(send_prev=_digest_words(x.hi) if check else None)
    return None


def output_pair(x: ArithmeticShares | BooleanShares) -> SharePair:
    """This party's pair, to send to the client who reconstructs (reveal-to-client)."""
    return x.lo, x.hi


def from_pair(party: Party, pair: SharePair, frac_bits: int = 0) -> ArithmeticShares:
    """Wrap a received pair (e.g. uploaded by a client) as this party's shares."""
    return ArithmeticShares(party, pair[0], pair[1], frac_bits)


def public_shares(party: Party, value: torch.Tensor, frac_bits: int = 0) -> ArithmeticShares:
    """Shares of a PUBLIC ring tensor (component x0 = value, x1 = x2 = 0). Cost: local."""
    value = value.to(torch.int64)
    zero = torch.zeros_like(value)
    if party.id == 0:
        return ArithmeticShares(party, value, zero, frac_bits)
    if party.id == 2:
        return ArithmeticShares(party, zero, value, frac_bits)
    return ArithmeticShares(party, zero, zero.clone(), frac_bits)
