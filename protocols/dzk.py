"""Distributed zero-knowledge proofs that every party's messages were computed correctly: the check
behind security with abort (issue 14). The gates that record what to prove are in :mod:`protocols.checked`.

In a replicated protocol every message is a function of what its sender holds, and everything
the sender holds is also held by one of the two other parties (each share component by two
parties, each pairwise key by two). For party ``i``'s messages, ``V1 = i-1`` and ``V2 = i+1``
hold it all between them, so they can check the messages together without learning anything,
with the prover's help: the fully linear proofs of Boyle, Gilboa, Ishai and Nof ("Practical
fully secure three-party computation via sublinear distributed zero-knowledge proofs", CCS
2019), here over the Galois ring GR(2^64, 56) of :mod:`protocols.galois` for arithmetic claims
(Boyle et al., ASIACRYPT 2020, for rings) and over GF(2^56) (:mod:`protocols.binfield`) for
boolean ones. A gate records, per party and per role, its part of a claim
``T1 + T2 = <u, v>``: ``T1`` and the vector ``u`` computed by V1 alone, ``T2`` and ``v`` by V2
alone (a :class:`Entry` in a :class:`ProductLog`); :func:`verify_products` proves and checks
every recorded claim of all three parties at once, and must run before any value that depends
on them is revealed. Each party is prover once (its own messages) and verifier twice (as
``V1`` of party ``i+1``, as ``V2`` of party ``i-1``), in the same rounds; a log holding both
kinds runs the ring proof and the field proof side by side.

Steps of one proof (all three provers in parallel, with a common fold count):

0. Pad (1 round): P draws ``alpha`` (key with V1) and ``beta`` (key with V2), uniform
   elements appended to the two vectors so that the last step reveals nothing, and sends V2
   its share ``alpha beta - p1`` of their product (``p1`` from the key with V1). It is fixed
   before the challenge: P cannot use it to cancel an error.
1. Challenge (1 round): V1 and V2 draw a seed from the key P lacks and both send it to P
   (P aborts if they differ). It expands to the gates' random coefficients, which turn every
   claim into one inner product (see :mod:`protocols.checked`); V1 adds up its parts of the
   claims, V2 its own.
2. Fold (2 rounds each, ``R = log2 M`` times, ``M`` the padded length): P sends V2 its
   share of ``h(X) = <u_L + X (u_R - u_L), v_L + X (v_R - v_L)>`` (3 elements; V1's share
   comes from the key with P); the verifiers keep their shares of ``h(0) + h(1) - claim``,
   send P a fresh challenge seed ``r`` (``r`` and ``1 - r`` invertible), and all fold the
   vectors at ``r``; the claim becomes ``h(r)``.
3. Decide (1 round): V1 and V2 swap the folded entries ``u*``, ``v*`` (each masked by the
   pad times a unit) and their shares of ``sum_t gamma_t residual_t + gamma (u* v* - claim)``
   with ``gamma`` from their key; each requires the sum to be 0, else raises
   :class:`ProofRejected` naming P and the other verifier (the two honest parties' reports
   intersect in the deviating one).

Cost (:func:`check_cost`, asserted in tests/unit/test_dzk.py): ``2 R + 3`` rounds and
``284 + 172 R`` words per party over the ring, ``9 + 7 R`` over the field, whatever the gates
but for ``R`` (``R = 20`` for a million entries); a log with both kinds runs the two proofs in
the same rounds (the larger ``2 R + 3``, the words of both), and a log of ``B`` batches of one kind
about ``2 R + 3 + STAGGER (B - 1)`` rounds (:func:`verify_products`). Computation: ``O(M 56^2)`` word
products per role in the ring, ``O(M 56^2 / 64)`` word operations in the field (bit-planes), the vectors
folded in place: the checks cost CPU, not bytes (figures in docs/SECURITY.md).

Soundness (:func:`soundness_bits`): a prover whose messages are wrong passes only if a
challenge is a root of a nonzero polynomial of degree at most 2 over GR(2^64, 56) or GF(2^56)
(the gates' coefficients: degree at most 2; each fold: ``2 / (2^56 - 2)``; the final
combination: degree 1): at most ``(2 R + 3) / (2^56 - 2)``, at least 49 bits for
``R <= MAX_FOLDS = 40``. Zero knowledge (honest prover, any verifier): a verifier sees shares
masked by a key it lacks, public challenges, and one folded entry of the other's vector plus
the pad times a unit: uniform. A received proof message of the wrong size, or a field element
above 56 bits, is rejected as a deviation of its sender.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import binfield as BF
from . import galois as G
from . import proof_kernels as K
from .party import Party
from .prf import PRG, derive_key

MAX_FOLDS = 40
_SEED_WORDS = 2


class ProofRejected(RuntimeError):
    """A check of one party's messages failed: one of ``suspects`` deviated."""

    def __init__(self, message: str, suspects: tuple[int, ...]) -> None:
        super().__init__(message)
        self.suspects = suspects


class Entry:
    """One recorded step, as one party sees it, for the three proofs it takes part in (its own as
    prover, nxt's as V1, prev's as V2). Every role draws the same challenges for the same prover."""

    field = False
    base_v = False
    """Whether the step's ``v`` parts (the prover's and V2's) are Z_2^64 values (objects with ``write_base``):
    a ring batch of such steps keeps ``v`` unlifted until its first fold (:class:`_BaseVec`)."""

    def length(self, prover: int) -> int:
        """Vector entries this step adds to ``prover``'s proof (public: from shapes)."""
        raise NotImplementedError

    def split(self, room: int) -> tuple[Entry, Entry] | None:
        """The step cut in two where it can be (public: from shapes): a head of at most ``room`` vector entries
        and the rest; ``None`` (the default) when it cannot be cut there."""
        return None

    def as_prover(self, rng: PRG) -> tuple[list[Any], list[Any]]:
        """This party's two vectors' parts (V1's and V2's) for its own proof."""
        raise NotImplementedError

    def as_v1(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        """As V1 of party i+1: its vector parts and its part of the claim (``None``: nothing)."""
        raise NotImplementedError

    def as_v2(self, rng: PRG) -> tuple[list[Any], torch.Tensor | None]:
        """As V2 of party i-1: its vector parts and its part of the claim."""
        raise NotImplementedError


@dataclass
class ProductLog:
    """One party's record of the checked steps it took part in since the last :func:`verify_products`."""

    party: Party
    entries: list[Entry] = field(default_factory=list)
    proof_rounds: int = 0
    """Sum over the proofs run by :func:`verify_products` on this log so far of their lengths ``2 R + 3``:
    what :func:`call_soundness_bits` bounds."""


def _seed_tensor(prg: PRG) -> torch.Tensor:
    return torch.frombuffer(prg.bytes(8 * _SEED_WORDS), dtype=torch.int64, count=_SEED_WORDS).clone()


def _expand(seed: torch.Tensor, label: str) -> PRG:
    return PRG(derive_key(seed.numpy().tobytes(), label))


@dataclass
class _BaseVec:
    """A ring vector whose entries are Z_2^64 values (``values [M]``) but for the pad, the ring element ``pad``
    at ``pad_at`` (``values`` holds 0 there): a product with it, or its fold, costs 56 word products per
    entry instead of ``56^2``. Its first fold makes it an ordinary vector."""

    values: torch.Tensor
    pad_at: int
    pad: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0], G.DEGREE)


class _Ring:
    """GR(2^64, 56): scalars ``[56]``, vectors ``[m, 56]`` (or :class:`_BaseVec` before the first fold)."""

    words = G.DEGREE

    def folds(self, entries: int) -> int:
        return max(1, math.ceil(math.log2(entries + 1)))

    def capacity(self, length: int) -> int:
        """Entries a proof vector of ``length`` (a power of two) holds besides the pad."""
        return length - 1

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

    def padded(self, parts: list[Any], pad: torch.Tensor, folds: int, pool: _Buffers) -> Any:
        """The vector in a buffer from ``pool`` (reused by the later proofs of the :func:`verify_products` call:
        fresh memory costs more than the proof's arithmetic). A part is a ``[m, DEGREE]`` tensor or an object
        that writes its ``rows`` entries (``write(out)``)."""
        if parts and all(hasattr(p, "write_base") for p in parts):  # Z_2^64 values: kept unlifted
            values = torch.empty(1 << folds, dtype=torch.int64)
            off = 0
            for p in parts:
                p.write_base(values[off: off + p.rows])
                off += p.rows
            values[off:] = 0
            return _BaseVec(values, off, pad)
        out = pool.take(1 << folds)
        off = 0
        for p in parts:
            rows = p.shape[0] if isinstance(p, torch.Tensor) else p.rows
            if isinstance(p, torch.Tensor):
                out[off: off + rows] = p
            else:
                p.write(out[off: off + rows])
            off += rows
        out[off] = pad
        out[off + 1:] = 0
        return out

    def fold_pair(self, a: Any, ra: torch.Tensor, b: Any, rb: torch.Tensor, pool: _Buffers) -> tuple[Any, Any]:
        """Both vectors folded in place (each becomes its buffer's low half, a view); a :class:`_BaseVec`
        into a buffer from ``pool``."""
        return self._fold(a, ra, pool), self._fold(b, rb, pool)

    def _fold(self, vec: Any, r: torch.Tensor, pool: _Buffers) -> Any:
        if not isinstance(vec, _BaseVec):
            return G.fold_inplace(vec, r)
        half = vec.values.shape[0] // 2
        out = pool.take(half)
        K.ring_fold_base(vec.values.numpy(), r.numpy(), out.numpy())
        q = vec.pad_at % half  # the pad's row: recomputed with the pad itself
        lo = vec.pad if vec.pad_at < half else G.lift(vec.values[q: q + 1])[0]
        hi = vec.pad if vec.pad_at >= half else G.lift(vec.values[q + half: q + half + 1])[0]
        out[q] = lo + G.mul(r, hi - lo)
        return out

    def fold_polynomial(self, u: Any, v: Any, total: torch.Tensor | None = None) -> torch.Tensor:
        half = u.shape[0] // 2
        if isinstance(v, _BaseVec):  # the first fold of a batch of products: v unlifted
            c0_n, c1_n, c2_n = K.ring_cross_base(u.numpy(), v.values.numpy())
            c0, c_hi, c2 = torch.from_numpy(c0_n), torch.from_numpy(c1_n), torch.from_numpy(c2_n)
            p = v.pad_at
            if p < half:  # v holds 0 at p: add the pad's terms (v_R - v_L at p is v[p + half] - pad)
                c0 = c0 + G.mul(u[p], v.pad)
                c2 = c2 - G.mul(u[p + half] - u[p], v.pad)
            else:
                c_hi = c_hi + G.mul(u[p], v.pad)
                c2 = c2 + G.mul(u[p] - u[p - half], v.pad)
            return torch.stack([c0, c_hi - c0 - c2, c2])
        c0, c2 = G.fold_products(u, v)
        c_hi = G.inner(u[half:], v[half:]) if total is None else total - c0
        return torch.stack([c0, c_hi - c0 - c2, c2])

    def first(self, vec: Any) -> torch.Tensor:
        return vec[0]

    def release(self, vecs: list[Any], pool: _Buffers) -> list[Any]:
        """Copies of the (folded) vectors, their buffers handed back to ``pool`` for the next proof."""
        out = [v.clone() for v in vecs]
        for v in vecs:
            pool.give(v)
        return out

    def well_formed(self, t: torch.Tensor) -> bool:
        return True


class _Field:
    """GF(2^56) (:mod:`protocols.binfield`): scalars ``[1]``, vectors as bit-planes."""

    words = 1

    def folds(self, entries: int) -> int:  # the pad takes a word of its own: at least two words of 64
        return 6 + max(1, math.ceil(math.log2(entries // 64 + 1)))

    def capacity(self, length: int) -> int:
        """AND lanes a proof vector of ``length`` holds: the pad takes a word in each half."""
        return length - 128

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

    def padded(self, parts: list[Any], pad: torch.Tensor, folds: int, pool: _Buffers) -> Any:
        return BF.paired(parts, pad, folds)  # not built: the first fold writes its half (new memory)

    def fold_pair(self, a: Any, ra: torch.Tensor, b: Any, rb: torch.Tensor, pool: _Buffers) -> tuple[Any, Any]:
        return BF.fold_pair(a, ra, b, rb)

    def fold_polynomial(self, u: Any, v: Any, total: torch.Tensor | None = None) -> torch.Tensor:
        return BF.fold_polynomial(u, v, total)

    def first(self, vec: Any) -> torch.Tensor:
        return BF.first(vec)

    def release(self, vecs: list[Any], pool: _Buffers) -> list[Any]:
        """Compact copies (a folded vector is a view that would keep its first buffer alive; with staggered
        proofs several would be alive at once); numpy's copy of the strided view took half torch's time."""
        return [BF.BitVec(torch.from_numpy(np.ascontiguousarray(v.planes.numpy())), v.bits)
                if isinstance(v, BF.BitVec) else v for v in vecs]  # a Combo's terms are compact already

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


def _well_formed(alg: _Ring | _Field, t: torch.Tensor, me: int, sender: int) -> torch.Tensor:
    """Field elements received must fit in 56 bits, else the sender deviated (sizes: :func:`_lockstep`)."""
    if not alg.well_formed(t):
        raise ProofRejected(f"server {me}: server {sender} sent a malformed proof message", (sender,))
    return t


def _agree(a: torch.Tensor, b: torch.Tensor, me: int, prev: int, nxt: int, what: str) -> None:
    if not torch.equal(a, b):
        raise ProofRejected(
            f"server {me}: servers {prev} and {nxt} sent different {what} for the check of its messages",
            (prev, nxt),
        )


class _Buffers:
    """Ring vector buffers (``[rows, 56]``) of one :func:`verify_products` call: a proof takes its vectors'
    buffers and hands them back once the vectors have shrunk (:data:`RELEASE_FOLDS`), so the next proof
    reuses memory already mapped. (Pooling the field's bit-planes too kept more memory alive than it
    saved at n = 100,000: 17.4 GB and 186 s against 14.3 GB and 127 s for three in-process parties.)"""

    def __init__(self) -> None:
        self.free: list[torch.Tensor] = []
        self.bases: dict[int, torch.Tensor] = {}  # data_ptr of a handed-out view -> its whole buffer

    def take(self, rows: int) -> torch.Tensor:
        """A ``[rows, 56]`` view of a free buffer at least that long (the shortest), else of a new one."""
        fits = [i for i, b in enumerate(self.free) if b.shape[0] >= rows]
        if fits:
            buf = self.free.pop(min(fits, key=lambda i: self.free[i].shape[0]))
        else:
            buf = torch.empty(rows, G.DEGREE, dtype=torch.int64)
        self.bases[buf.data_ptr()] = buf
        return buf[:rows]

    def give(self, view: torch.Tensor) -> None:
        buf = self.bases.pop(view.data_ptr(), None)
        if buf is not None:
            self.free.append(buf)


STAGGER = 8
"""Rounds between the starts of two consecutive proofs of one kind in a :func:`verify_products` call (or fewer:
the next starts when the previous ends). Proofs overlap, so a call of ``B`` batches takes about
``2 R + 3 + STAGGER (B - 1)`` rounds instead of ``B (2 R + 3)``; by its next start a proof has folded its
vectors at least :data:`RELEASE_FOLDS` times (to 1/8 of their size), so memory stays near one proof's."""
RELEASE_FOLDS = 3
"""Folds after which a proof copies its vectors out (1/8 of their first size): a ring proof's buffers go back
to the call's pool, a field proof's first buffers are freed (a folded vector is a view that keeps them)."""

RING_BATCH = 1 << 19
"""Ring vector entries per proof, pad included (a GR(2^64, 56) vector of that length is 235 MB): a log with more is
proved in several proofs, staggered (:data:`STAGGER`), so memory stays bounded whatever the query."""
FIELD_BATCH = 1 << 26
"""Field vector entries (AND lanes) per proof, pad included (a dense bit-plane vector of that length is 470 MB)."""


def batches(entries: list[Entry], limit: int) -> list[list[Entry]]:
    """Consecutive groups of ``entries`` of at most ``limit`` vector entries for every prover. An entry that does
    not fit in the current group is cut (:meth:`Entry.split`) so that its head fills the group, and its rest
    goes on into the next; one that cannot be cut starts a new group (a group of its own when longer than
    ``limit``). Public: every party forms the same groups. Filling the groups matters: a proof's vector is
    padded to a power of two, so a half-full group costs as much as a full one."""
    groups: list[list[Entry]] = []
    size = 0
    queue = deque(entries)
    while queue:
        e = queue.popleft()
        n = max(e.length(i) for i in range(3))
        room = limit - size if groups else 0
        if groups and n <= room:
            groups[-1].append(e)
            size += n
            continue
        cut = e.split(room) if room > 0 else None
        if cut is None:
            groups.append([])
            size = 0
            cut = e.split(limit) if n > limit else None
        if cut is None:
            groups[-1].append(e)
            size += n
            continue
        head, rest = cut
        groups[-1].append(head)
        size += max(head.length(i) for i in range(3))
        queue.appendleft(rest)
    return groups


def verify_products(log: ProductLog, ring_batch: int = RING_BATCH, field_batch: int = FIELD_BATCH) -> int:
    """Check every recorded step in ``log`` (all three parties' messages); clears the log.

    Arithmetic claims are proved over GR(2^64, 56), boolean ones over GF(2^56), in :func:`batches` of at
    most ``ring_batch`` / ``field_batch`` vector entries, one proof per batch. The proofs run side by side
    in one schedule (:func:`_lockstep`: each round's message carries every active proof's part): the ring
    proofs one after the other, each starting :data:`STAGGER` rounds after the previous one (or when it
    ends), and the field proofs likewise, in parallel with them. Raises :class:`ProofRejected` if any
    party's messages (or its part in a check) were wrong. Returns the rounds it took; adds the proofs'
    lengths ``sum_p (2 R_p + 3)`` to ``log.proof_rounds``: the soundness error of the call is at most that
    sum over ``2^56 - 2`` (each proof's ``(2 R + 3) / (2^56 - 2)``, :func:`call_soundness_bits`). See the
    module docstring for the steps.
    """
    entries, log.entries = log.entries, []
    # Steps with unlifted v first (a stable, public order): their batches skip most of the first fold's work.
    # A batch fills a vector of ``*_batch`` entries WITH its pad: a piece of exactly ``ring_batch`` entries would
    # take a vector twice that long (2^20 for 2^19 + 1), and twice the work (1.4x the CNN's ring entries).
    ring = batches(sorted((e for e in entries if not e.field), key=lambda e: not e.base_v),
                   _RING.capacity(ring_batch))
    field = batches([e for e in entries if e.field], _FIELD.capacity(field_batch))
    pool = _Buffers()  # ring vectors only (field vectors are built in new memory)
    queues = [[_prove_and_verify(log.party, _RING, g, pool) for g in ring],
              [_prove_and_verify(log.party, _FIELD, g, pool) for g in field]]
    rounds, lengths = _lockstep(log.party, queues)
    log.proof_rounds += lengths
    return rounds


_Exchange = tuple[torch.Tensor | None, torch.Tensor | None, int, int]
"""What a proof asks of one round: ``(to next, to prev, words expected from next, words from prev)``."""
_Proof = Generator[_Exchange, tuple[torch.Tensor | None, torch.Tensor | None], "ProofRejected | None"]
"""A proof's rounds; it returns its verdict (``None``: accepted) after its last round."""


def _lockstep(party: Party, queues: list[list[_Proof]]) -> tuple[int, int]:
    """Run proofs side by side: one ``exchange`` per round carries every active proof's messages
    (concatenated in a fixed order; a proof that has finished sends nothing). Each queue's proofs start in
    order, the next :data:`STAGGER` rounds after the previous one's start or when it has finished (a public
    schedule: every party runs the same). Sizes are public, so a message of the wrong size is its sender's
    deviation. A proof's final verdict is raised only once every proof has finished, so a party whose first
    proof fails still plays its part in the others (an honest party must not stop where a deviating party's
    own check fails first). Returns ``(rounds, sum of the proofs' lengths in rounds)``."""
    me, nxt, prev = party.id, (party.id + 1) % 3, (party.id - 1) % 3
    active: list[tuple[_Proof, _Exchange]] = []
    verdicts: list[ProofRejected] = []
    waiting = [list(q) for q in queues]
    last: list[_Proof | None] = [None] * len(queues)  # each queue's latest started proof
    since = [0] * len(queues)  # rounds since it started
    rounds = lengths = 0
    while active or any(waiting):
        for qi, q in enumerate(waiting):
            running = any(p is last[qi] for p, _ in active)
            if q and (not running or since[qi] >= STAGGER):
                proof = q.pop(0)
                active.append((proof, next(proof)))
                last[qi], since[qi] = proof, 0
        rounds += 1
        lengths += len(active)
        since = [t + 1 for t in since]
        to_next = [t.reshape(-1) for _, (t, _, _, _) in active if t is not None]
        to_prev = [t.reshape(-1) for _, (_, t, _, _) in active if t is not None]
        want_next, want_prev = sum(r[2] for _, r in active), sum(r[3] for _, r in active)
        got_next, got_prev = party.comm.exchange(
            send_next=torch.cat(to_next) if to_next else None, send_prev=torch.cat(to_prev) if to_prev else None,
            recv_next=want_next > 0, recv_prev=want_prev > 0)
        for got, want, sender in ((got_next, want_next, nxt), (got_prev, want_prev, prev)):
            if got is not None and got.numel() != want:
                raise ProofRejected(f"server {me}: server {sender} sent {got.numel()} proof words, not {want}",
                                    (sender,))
        still: list[tuple[_Proof, _Exchange]] = []
        off_next = off_prev = 0
        for proof, (_, _, n_next, n_prev) in active:
            part_next = got_next.reshape(-1)[off_next: off_next + n_next] if got_next is not None and n_next else None
            part_prev = got_prev.reshape(-1)[off_prev: off_prev + n_prev] if got_prev is not None and n_prev else None
            off_next, off_prev = off_next + n_next, off_prev + n_prev
            try:
                still.append((proof, proof.send((part_next, part_prev))))
            except StopIteration as done:
                if done.value is not None:
                    verdicts.append(done.value)
        active = still
    if verdicts:
        raise verdicts[0]
    return rounds, lengths


def _prove_and_verify(party: Party, alg: _Ring | _Field, entries: list[Entry], pool: _Buffers) -> _Proof:
    """One proof (this party as prover of its messages and verifier of its neighbours'), as a generator of
    the rounds it needs (:func:`_lockstep` runs it); returns the verdict of its final check. A message
    that cannot be used (malformed, or two challenges that differ) raises at once."""
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
    _, got_p2 = yield alg.sub(alg.mul(alpha, beta), p1), None, 0, w
    assert got_p2 is not None
    _well_formed(alg, got_p2, me, prev)

    # 1. Challenge seeds: as V1 to nxt, as V2 to prev; as P from both.
    v1_seed, v2_seed = _seed_tensor(v1_coin), _seed_tensor(v2_coin)
    from_next, from_prev = yield v1_seed, v2_seed, _SEED_WORDS, _SEED_WORDS
    assert from_next is not None and from_prev is not None
    _agree(from_prev, from_next, me, prev, nxt, "challenges")

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

    u, v = alg.padded(p_u, alpha, folds, pool), alg.padded(p_v, beta, folds, pool)
    v1_vec, v2_vec = alg.padded(v1_u, v1_alpha, folds, pool), alg.padded(v2_v, v2_beta, folds, pool)
    del p_u, p_v, v1_u, v2_v  # the parts: copied into the padded vectors
    v1_claim, v2_claim = alg.add(v1_claim, v1_p1), alg.add(v2_claim, got_p2)
    v1_res, v2_res = [], []

    def residual(h: torch.Tensor, claim: torch.Tensor) -> torch.Tensor:  # h(0) + h(1) - claim
        return alg.sub(alg.add(alg.add(h[0], h[0]), alg.add(h[1], h[2])), claim)

    def at(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # h(r)
        return alg.add(h[0], alg.mul(r, alg.add(h[1], alg.mul(r, h[2]))))

    # 2. Folds.
    total = None  # the prover's <u, v> after the first fold: h(r), so later folds take two inner products
    for fold_no in range(folds):
        if fold_no == RELEASE_FOLDS:  # small now: copied out, the buffers go to the call's next proof
            u, v, v1_vec, v2_vec = alg.release([u, v, v1_vec, v2_vec], pool)
        h = alg.fold_polynomial(u, v, total)
        h1 = alg.random(pm1, 3)
        _, got_h2 = yield alg.sub(h, h1).reshape(-1), None, 0, 3 * w
        assert got_h2 is not None
        v1_h = alg.random(v1_mask, 3)
        v2_h = _well_formed(alg, got_h2, me, prev).view(3, w)
        v1_res.append(residual(v1_h, v1_claim))
        v2_res.append(residual(v2_h, v2_claim))
        v1_seed, v2_seed = _seed_tensor(v1_coin), _seed_tensor(v2_coin)
        from_next, from_prev = yield v1_seed, v2_seed, _SEED_WORDS, _SEED_WORDS
        assert from_next is not None and from_prev is not None
        _agree(from_prev, from_next, me, prev, nxt, "fold challenges")
        r_p, r_v1, r_v2 = _challenge(alg, from_prev), _challenge(alg, v1_seed), _challenge(alg, v2_seed)
        (u, v), total = alg.fold_pair(u, r_p, v, r_p, pool), at(h, r_p)
        v1_vec, v2_vec = alg.fold_pair(v1_vec, r_v1, v2_vec, r_v2, pool)
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
    from_next, from_prev = yield torch.cat([v2_first, v2_z]), torch.cat([v1_first, v1_z]), 2 * w, 2 * w
    assert from_next is not None and from_prev is not None
    _well_formed(alg, from_next, me, nxt)
    _well_formed(alg, from_prev, me, prev)
    zero = alg.zero()
    # As V1 of nxt (co-verifier prev sent its v* and share); as V2 of prev (co-verifier nxt sent u*).
    total_v1 = alg.add(alg.add(v1_z, from_prev[w:]), alg.mul(v1_gamma[-1], alg.mul(v1_first, from_prev[:w])))
    total_v2 = alg.add(alg.add(from_next[w:], v2_z), alg.mul(v2_gamma[-1], alg.mul(from_next[:w], v2_first)))
    if not torch.equal(total_v1, zero):
        return ProofRejected(
            f"server {me}: the check of server {nxt}'s messages failed (server {nxt} or server {prev} deviated)",
            (nxt, prev),
        )
    if not torch.equal(total_v2, zero):
        return ProofRejected(
            f"server {me}: the check of server {prev}'s messages failed (server {prev} or server {nxt} deviated)",
            (prev, nxt),
        )
    return None


def check_cost(entries: int, boolean: bool = False) -> tuple[int, int]:
    """``(rounds, words sent per party)`` of one proof over ``entries`` vector entries (``boolean``: the
    GF(2^56) proof of AND gates, entries in bits): ``2 R + 3`` rounds, ``5 s + 4 + R (3 s + 4)`` words
    with ``s`` words per scalar (56 in the ring, 1 in the field)."""
    alg = _FIELD if boolean else _RING
    folds = alg.folds(entries)
    s = alg.words
    return 2 * folds + 3, 5 * s + 4 + folds * (3 * s + 4)


def soundness_bits(entries: int, boolean: bool = False) -> float:
    """``-log2`` of the probability that wrong messages pass one proof: ``(2 R + 3) / (2^56 - 2)``."""
    folds = (_FIELD if boolean else _RING).folds(entries)
    return -math.log2((2 * folds + 3) / (2.0**G.DEGREE - 2))


def call_soundness_bits(proof_rounds: int) -> float:
    """``-log2`` of the probability that wrong messages pass :func:`verify_products` calls whose proofs add up
    to ``proof_rounds`` rounds (``ProductLog.proof_rounds``: each proof of length ``2 R + 3`` fails to catch
    them with probability at most ``(2 R + 3) / (2^56 - 2)``): ``proof_rounds / (2^56 - 2)``. At least 40
    bits up to 2^16 = 65,536 (about 1,500 proofs of a million entries each)."""
    return -math.log2(max(1, proof_rounds) / (2.0**G.DEGREE - 2))
