"""Secure types: a party's view of a replicated sharing over Z_2^64, with operators.

:class:`ArithmeticShares` (``x = x0 + x1 + x2``, fixed point with ``frac_bits``) and
:class:`BooleanShares` (``x0 ^ x1 ^ x2``, 64 bit-lanes per int64 word). Party ``i`` holds
``(x_i, x_{i+1})`` as ``lo``/``hi`` (ABY3, Mohassel & Rindal, CCS 2018).

They fail safely in the MPyC way (``mpyc/sectypes.py``): ``bool(shares)`` raises
``TypeError`` so no code can branch on a secret; ``==``/``!=`` on arithmetic shares are
the SECURE equality (shares of 0/1, ``compare.eq``, 8 rounds) and raise ``TypeError`` on
boolean shares or an operand they cannot compare, never falling back to Python's
identity test; shares are unhashable; other operators return ``NotImplemented`` for
operands they cannot combine.
"""

from __future__ import annotations

import torch

from .party import Party
from .ring import FixedPoint, as_ring

SharePair = tuple[torch.Tensor, torch.Tensor]


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

    # Defining __eq__ also makes shares unhashable (__hash__ = None): no set/dict key by identity.
    def __eq__(self, other: object) -> ArithmeticShares:  # type: ignore[override]  # a secure bit, not a bool
        raise TypeError(f"== is not defined on {type(self).__name__} (use a secure equality protocol)")

    def __ne__(self, other: object) -> ArithmeticShares:  # type: ignore[override]  # a secure bit, not a bool
        return 1 - (self == other)

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

    def _like(self, lo: torch.Tensor, hi: torch.Tensor) -> ArithmeticShares:
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

    def add_public(self, c) -> ArithmeticShares:
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

    def _check_peer(self, other: ArithmeticShares) -> None:
        if other.party is not self.party:
            raise ValueError("cannot combine shares of different parties/sessions")
        if other.frac_bits != self.frac_bits:
            raise ValueError(
                f"fixed-point scales differ: {self.frac_bits} vs {other.frac_bits} fractional bits"
            )

    def __add__(self, other) -> ArithmeticShares:
        if isinstance(other, ArithmeticShares):
            self._check_peer(other)
            return ArithmeticShares(self.party, self.lo + other.lo, self.hi + other.hi, self.frac_bits)
        if isinstance(other, (int, float, torch.Tensor)):
            return self.add_public(other)
        return NotImplemented

    __radd__ = __add__

    def __eq__(self, other: object) -> ArithmeticShares:  # type: ignore[override]  # a secure bit, not a bool
        """Secure ``[x == other]`` as shares of 0/1 (``compare.eq``: 8 rounds). Never an identity test."""
        if isinstance(other, bool) or not isinstance(other, (ArithmeticShares, int, float, torch.Tensor)):
            raise TypeError(f"cannot compare ArithmeticShares with {type(other).__name__}")
        from . import compare

        return compare.eq(self, other)

    def __neg__(self) -> ArithmeticShares:
        return ArithmeticShares(self.party, -self.lo, -self.hi, self.frac_bits)

    def __sub__(self, other) -> ArithmeticShares:
        if isinstance(other, ArithmeticShares):
            self._check_peer(other)
            return ArithmeticShares(self.party, self.lo - other.lo, self.hi - other.hi, self.frac_bits)
        if isinstance(other, (int, float, torch.Tensor)):
            return self.add_public(-other)
        return NotImplemented

    def __rsub__(self, other) -> ArithmeticShares:
        return (-self).__add__(other)

    def mul_public_int(self, c: int | torch.Tensor) -> ArithmeticShares:
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

    def sum(self, dim=None, keepdim: bool = False) -> ArithmeticShares:
        if dim is None:
            return ArithmeticShares(self.party, self.lo.sum(), self.hi.sum(), self.frac_bits)
        return ArithmeticShares(
            self.party, self.lo.sum(dim, keepdim=keepdim), self.hi.sum(dim, keepdim=keepdim), self.frac_bits
        )


class BooleanShares(_Shares):
    """A party's view of a boolean RSS: XOR shares, 64 bit-lanes per int64 word."""

    def _like(self, lo: torch.Tensor, hi: torch.Tensor) -> BooleanShares:
        return BooleanShares(self.party, lo, hi)

    def __xor__(self, other) -> BooleanShares:
        if isinstance(other, BooleanShares):
            return BooleanShares(self.party, self.lo ^ other.lo, self.hi ^ other.hi)
        if isinstance(other, (int, torch.Tensor)):
            return self.xor_public(other)
        return NotImplemented

    __rxor__ = __xor__

    def xor_public(self, c: int | torch.Tensor) -> BooleanShares:
        """``[x] ^ c`` for public ``c``: component x0 absorbs it. Cost: local."""
        c = torch.as_tensor(c, dtype=torch.int64)
        lo, hi = self.lo, self.hi
        if self.party.id == 0:
            lo = lo ^ c
        elif self.party.id == 2:
            hi = hi ^ c
        return BooleanShares(self.party, lo, hi)

    def __invert__(self) -> BooleanShares:
        return self.xor_public(-1)

    def and_public(self, mask: int | torch.Tensor) -> BooleanShares:
        """``[x] & m`` for public ``m``. Cost: local."""
        return BooleanShares(self.party, self.lo & mask, self.hi & mask)

    def __and__(self, other):
        from . import boolean

        if isinstance(other, BooleanShares):
            return boolean.and_(self, other)
        if isinstance(other, (int, torch.Tensor)):
            return self.and_public(other)
        return NotImplemented

    def __lshift__(self, k: int) -> BooleanShares:
        return BooleanShares(self.party, self.lo << k, self.hi << k)

    def rshift_logical(self, k: int) -> BooleanShares:
        """Logical right shift by ``k`` bits (zeros enter at the top). Cost: local."""
        if k == 0:
            return self
        mask = (1 << (64 - k)) - 1
        return BooleanShares(self.party, (self.lo >> k) & mask, (self.hi >> k) & mask)
