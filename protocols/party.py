"""One party's runtime: its id, its ``Comm`` and its pairwise PRGs. Passed explicitly.

There is no global runtime (unlike MPyC's and CrypTen's import-time singletons): every
share object carries the :class:`Party` it belongs to, so one process can host several
sessions at once (a server runs one ``Party`` per query).
"""

from __future__ import annotations

import torch

from .comm import Comm
from .prf import PRG, PairwiseKeys
from .ring import DEFAULT_FP, FixedPoint


class Party:
    """A party's view of the computation: ``id`` in {0,1,2}, ``comm``, ``prg_prev``/``prg_next``."""

    def __init__(self, comm: Comm, keys: PairwiseKeys, fp: FixedPoint = DEFAULT_FP) -> None:
        self.comm = comm
        self.id = comm.party_id
        self.fp = fp
        # prg_prev is shared with party id-1, prg_next with party id+1.
        self.prg_prev = PRG(keys.prev)
        self.prg_next = PRG(keys.next)

    def zero_share(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """This party's term of a fresh additive zero-sharing (no communication)."""
        return self.prg_next.int64(shape) - self.prg_prev.int64(shape)

    def zero_share_xor(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """This party's term of a fresh XOR zero-sharing (no communication)."""
        return self.prg_next.int64(shape) ^ self.prg_prev.int64(shape)

    def random_pair(self, shape: tuple[int, ...] | torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's pair of a fresh random replicated sharing (no communication)."""
        return self.prg_prev.int64(shape), self.prg_next.int64(shape)

    def __repr__(self) -> str:
        return f"Party(id={self.id})"
