"""Run a protocol on three in-process parties (threads), re-raising any party's exception.

Used by unit tests and in-process benchmarks (SPU's ``simulation.py`` is the model).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .comm import InProcessComm
from .party import Party
from .prf import dealerless_trio_keys
from .ring import DEFAULT_FP, FixedPoint


class PartyFailed(RuntimeError):
    """One of the simulated parties raised; the original is the ``__cause__``."""


def make_parties(fp: FixedPoint = DEFAULT_FP, timeout_s: float = 120.0, seed: int | None = None) -> list[Party]:
    """Three connected parties with fresh pairwise keys (``seed``: reproducible, tests only)."""
    comms = InProcessComm.create_trio(timeout_s)
    keys = dealerless_trio_keys(seed)
    return [Party(comms[i], keys[i], fp) for i in range(3)]


def run_parties(
    fn: Callable[..., Any],
    per_party_args: Sequence[Sequence[Any]] | None = None,
    parties: list[Party] | None = None,
    fp: FixedPoint = DEFAULT_FP,
    timeout_s: float = 120.0,
) -> list[Any]:
    """Call ``fn(party, *args_i)`` on three threads; return the three results in order."""
    parties = parties or make_parties(fp, timeout_s)
    args = per_party_args or [()] * 3
    results: list[Any] = [None] * 3
    errors: list[BaseException | None] = [None] * 3
    order: list[int] = []  # parties in the order they failed: the first is the root cause

    def target(i: int) -> None:
        try:
            results[i] = fn(parties[i], *args[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors[i] = exc
            order.append(i)
            parties[i].comm.close()

    threads = [threading.Thread(target=target, args=(i,), name=f"party-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if order:
        i = order[0]
        err = errors[i]
        raise PartyFailed(f"party {i} failed: {type(err).__name__}: {err}") from err
    return results


def evaluate(
    fn: Callable[..., Any],
    *inputs: Any,
    fp: FixedPoint = DEFAULT_FP,
    parties: list[Party] | None = None,
    seed: int | None = None,
) -> Any:
    """Share ``inputs``, run ``fn(*shares)`` on three parties, reveal and decode the result.

    Float tensors are shared in fixed point, int64 tensors as integers; anything else is
    passed through unchanged. ``fn`` returns ArithmeticShares/BooleanShares (or a tuple
    of them). All three parties must open the same value (checked). Returns decoded
    tensors: float64 for fixed point, int64 otherwise. ``seed`` fixes the parties' keys
    and the input sharing so a test is reproducible (tests only).
    """
    from .prf import PRG, derive_key
    from .sharing import ArithmeticShares, BooleanShares, from_pair, reveal, share, share_fixed

    client_prg = None
    if seed is not None:
        client_prg = PRG(derive_key(bytes(16), f"trivault-test-client-{seed}"))
        parties = parties or make_parties(fp, seed=seed)

    shared: list[list[Any]] = [[], [], []]
    kinds: list[int | None] = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.dtype == torch.int64:
            pairs, kind = share(x, client_prg), 0
        elif isinstance(x, torch.Tensor) and torch.is_floating_point(x):
            pairs, kind = share_fixed(x, fp, client_prg), fp.frac_bits
        else:
            pairs, kind = [x, x, x], None
        kinds.append(kind)
        for i in range(3):
            shared[i].append(pairs[i])

    def body(party: Party, *pairs: Any) -> Any:
        args = [from_pair(party, p, k) if k is not None else p for p, k in zip(pairs, kinds)]
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        opened = []
        for o in outs:
            if isinstance(o, (ArithmeticShares, BooleanShares)):
                v = reveal(o)
                if isinstance(o, ArithmeticShares) and o.frac_bits:
                    v = FixedPoint(o.frac_bits).decode(v)
                opened.append(v)
            else:
                opened.append(o)
        return tuple(opened)

    results = run_parties(body, shared, parties=parties, fp=fp)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            if isinstance(a, torch.Tensor) and not torch.equal(a, b):
                raise AssertionError("parties opened different values")
    first = results[0]
    return first if len(first) > 1 else first[0]
