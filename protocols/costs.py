"""Communication cost of every protocol, in one place: rounds and ring elements sent.

``Cost(rounds, sent_p0, sent_other)``: communication rounds, and ring elements (int64
words) sent by party 0 and by EACH of parties 1 and 2 (they differ where party 0 has a
fixed role, e.g. ``compare.bit_inject``; the digit comparisons of :mod:`protocols.digits`
rotate the roles so every party sends the same).

The functions give the exact cost for ``n`` elements (the unit tests run every protocol
in-process and compare its ``Comm`` counters with them); :data:`TABLE` gives the cost
PER ELEMENT for a batch of 192 (digit comparisons cut a batch in three parts and
bit-slice each part in 64-element words; the packed carry tree pads to 64). The README's
"MPC core in one page" table quotes :data:`TABLE`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import bitmul as BM
from . import digits as D


@dataclass(frozen=True)
class Cost:
    """Rounds and ring elements sent by party 0 and by each other party."""

    rounds: int
    sent_p0: float
    sent_other: float

    def __add__(self, other: Cost) -> Cost:
        """Sequential composition: rounds and elements add up."""
        return Cost(self.rounds + other.rounds, self.sent_p0 + other.sent_p0, self.sent_other + other.sent_other)

    def per(self, n: int) -> Cost:
        """Elements per element (rounds unchanged)."""
        return Cost(self.rounds, self.sent_p0 / n, self.sent_other / n)

    def sent(self, party_id: int) -> float:
        """Elements sent by party ``party_id``."""
        return self.sent_p0 if party_id == 0 else self.sent_other


FREE = Cost(0, 0, 0)


def product(n_out: int) -> Cost:
    """Multiply / matmul / conv2d / public fixed-point scale / truncate / reshare / AND of ``n_out`` outputs."""
    return Cost(1, n_out, n_out)


def bit_inject(n: int) -> Cost:
    """``compare.bit_inject`` (3-party OT): party 0 sends two candidates to each receiver."""
    return Cost(1, 4 * n, n)


def _same(rounds_words: tuple[int, int]) -> Cost:
    rounds, words = rounds_words
    return Cost(rounds, words, words)


def digit_msb(n: int, spec: D.Digits = D.FULL) -> Cost:
    """``digits.msb``: one table-OT round, then the AND tree over the digits."""
    return _same(D.msb_cost(n, spec))


def rotated_inject(n: int) -> Cost:
    """``digits.inject``: ``bit_inject`` with the sender rotated over three parts of the batch."""
    return _same(D.inject_cost(n))


def msb(n: int) -> Cost:
    """``compare.msb`` (any ``x`` in the ring, ``compare.LAYOUT``: 4-bit digits)."""
    return digit_msb(n, D.WIDE)


def ltz(n: int) -> Cost:
    """``compare.ltz`` (also ``lt``, ``gt``, ``le``): MSB + injection (``digits.ltz_cost``)."""
    return _same(D.ltz_cost(n, D.WIDE))


def relu(n: int) -> Cost:
    """``compare.relu``: ``x - [x < 0] x``."""
    return ltz(n) + product(n)


def eqz(n: int, spec: D.Digits = D.FULL) -> Cost:
    """``compare.eqz`` / ``eq`` (``spec = digits.FULL``) or ``digits.eqz`` with a smaller ``spec``."""
    return _same(D.ltz_cost(n, spec, "eq"))


def generate_propagate(n: int) -> Cost:
    """Generate/propagate words of ``(x0 + x1) + x2`` in one round: party 0 sends 5 words, the others 1."""
    return Cost(1, 5 * n, n)


def carry_tree(n: int) -> Cost:
    """Packed carry tree over ``n`` words padded to ``P`` (a multiple of 64): one AND word per word at the
    first level, halving at each: 1 + 1/2 + ... + 1/32 = 1.96875 P."""
    padded = -(-n // 64) * 64
    words = padded * 63 // 32
    return Cost(6, words, words)


def a2b(n: int) -> Cost:
    """All 64 bits: generate/propagate + Kogge-Stone (6 levels of 2 ANDs)."""
    return generate_propagate(n) + Cost(6, 12 * n, 12 * n)


def truncate_exact(n: int) -> Cost:
    """Shared ``U + V`` (party 0 sends 1 word), carry of ``u + v`` (OT + tree), injection."""
    return Cost(1, n, 0) + generate_propagate(n) + carry_tree(n) + bit_inject(n)


def sort_pair(n: int, payloads: bool = True) -> Cost:
    """Compare-and-swap of ``n`` pairs: one comparison, then one product per muxed value."""
    return ltz(n) + product(n * (2 if payloads else 1))


def bounded_ltz(n: int, spec: D.Digits) -> Cost:
    """``approx.ltz_bounded`` (``digits.ltz`` with a CNN layout): MSB + injection (``digits.ltz_cost``)."""
    return _same(D.ltz_cost(n, spec))


def bit_mul(n: int) -> Cost:
    """``bitmul.bit_mul``: bit injection fused into the product, 1 round, 4 elements per party."""
    return _same(BM.bit_mul_cost(n))


def bounded_relu(n: int, spec: D.Digits) -> Cost:
    """``approx.relu`` / ``approx.max_pairs``: one bounded comparison and one product per element,
    fused (``digit_msb + bit_mul``, one round less) when ``bitmul.fuse(n, 1)``."""
    if BM.fuse(n, 1):
        return digit_msb(n, spec) + bit_mul(n)
    return bounded_ltz(n, spec) + product(n)


def bounded_clamp(n: int, spec: D.Digits, lo_zero: bool = True) -> Cost:
    """``approx.clamp``: both signs of ``n`` elements in one batched ``digits.msb``, then ONE round with
    the bit product ``s x`` and the injection of ``b2`` (and of ``b1`` unless ``lo = 0``): ``b2a``, 1 word
    per bit, for layouts of 3 digits or more, else ``digits.inject``."""
    m = n if lo_zero else 2 * n
    inj = m if len(spec.widths) > 2 else D.inject_cost(m)[1]
    return digit_msb(2 * n, spec) + bit_mul(n) + Cost(0, inj, inj)


def l2_normalize(rows: int, dim: int, octaves: int) -> Cost:
    """``approx.l2_normalize`` of ``[rows, dim]`` with ``octaves`` octaves (32).

    ``||x||^2`` with the ``octaves`` mantissa candidates (1 round), octave one-hot by one 48-bit
    ``digits.ltz`` (``digits.OCTAVE``) of ``octaves + 1`` thresholds (4), the mantissa ``h`` and the
    linear start's ``2 B h`` (1), two Newton steps (2 x 2: ``[r**2, h r]``, then
    ``1.5 r - (h r) r**2``), ``x r`` (1), the public ``2**(-j/2)`` selection with its truncation (1):
    12 rounds.
    """
    newton = [product(2 * rows), product(rows)]
    total = product((octaves + 1) * rows) + bounded_ltz((octaves + 1) * rows, D.OCTAVE) + product(2 * rows)
    for step in newton * 2 + [product(rows * dim)] * 2:
        total = total + step
    return total


_BATCH = 192  # three rotated parts of one 64-element word each


def _unit(cost: Cost) -> Cost:
    return cost.per(_BATCH)


TABLE: dict[str, Cost] = {
    "product": _unit(product(_BATCH)),
    "bit_inject": _unit(bit_inject(_BATCH)),
    "msb": _unit(msb(_BATCH)),
    "ltz": _unit(ltz(_BATCH)),
    "relu": _unit(relu(_BATCH)),
    "eqz": _unit(eqz(_BATCH)),
    "eqz_4096": _unit(eqz(_BATCH, D.eq_spec(4096))),
    "a2b": _unit(a2b(_BATCH)),
    "truncate_exact": _unit(truncate_exact(_BATCH)),
    "sort_pair": _unit(sort_pair(_BATCH)),
    "bounded_ltz_exact": _unit(bounded_ltz(_BATCH, D.CNN_EXACT)),
    "bounded_ltz_fast": _unit(bounded_ltz(_BATCH, D.CNN_FAST)),
}
"""Cost per element for a batch of 192 elements (see the module docstring)."""
