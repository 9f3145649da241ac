"""Test-only fault injection for the checked protocols (imported by test_dzk, test_checked_compare,
test_checked_nn): one party corrupts one message it sends, and each party's outcome is collected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from protocols.dzk import ProofRejected
from protocols.party import Party
from protocols.simulate import run_parties


def corrupt_send(party: Party, index: int, error: int, word: int = 0) -> None:
    """From now on, the ``index``-th tensor ``party`` sends gets ``error`` added to its word ``word``."""
    send, sent = party.comm._send, [0]

    def corrupted(to: int, t: torch.Tensor) -> None:
        if sent[0] == index:
            t = t.clone()
            t.view(-1)[word] += error
        sent[0] += 1
        send(to, t)

    party.comm._send = corrupted  # type: ignore[method-assign]


def outcomes(body: Callable[..., Any], args: list[list[Any]]) -> list[Any]:
    """Each party's result, or the exception it ended with (a failing party aborts the session)."""

    def wrapped(party: Party, *a: Any) -> Any:
        try:
            return body(party, *a)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            party.comm.close()
            return exc

    return run_parties(wrapped, args)


def assert_rejected(out: list[Any], bad: int, context: object = None) -> None:
    """No party got a result, and every honest party that rejected a proof names ``bad`` (at least one did).
    The corrupting party's own word does not count: a corrupted reshare also makes the receiver's later
    messages disagree with the corrupter's own copy, so it may reject them."""
    assert not any(not isinstance(o, BaseException) for o in out), (context, out)
    honest = [o for i, o in enumerate(out) if i != bad and isinstance(o, ProofRejected)]
    assert honest and all(bad in o.suspects for o in honest), (context, out)


KINDS = ("add", "flip", "drop", "replay", "foreign")


def attack(party: Party, kind: str, index: int, rng: torch.Generator,
           foreign: list[torch.Tensor] | None = None) -> None:
    """Make ``party`` deviate once, at the ``index``-th tensor it sends: ``add`` a random nonzero value to a
    random word, ``flip`` one random bit, ``drop`` the message, ``replay`` its previous message instead, or send
    the ``index``-th message of ``foreign`` (another session's messages, same position) instead."""
    send, sent, last = party.comm._send, [0], [None]

    def deviating(to: int, t: torch.Tensor) -> None:
        i = sent[0]
        sent[0] += 1
        if i == index:
            if kind == "drop":
                return
            if kind == "replay" and last[0] is not None:
                t = last[0]
            elif kind == "foreign" and foreign is not None and i < len(foreign):
                t = foreign[i]
            elif kind in ("add", "flip"):
                t = t.clone()
                w = int(torch.randint(t.numel(), (1,), generator=rng))
                if kind == "add":
                    t.view(-1)[w] += int(torch.randint(1, 1 << 62, (1,), generator=rng))
                else:
                    t.view(-1)[w] ^= 1 << int(torch.randint(64, (1,), generator=rng))
        last[0] = t
        send(to, t)

    party.comm._send = deviating  # type: ignore[method-assign]


def recording(party: Party, into: list[torch.Tensor]) -> None:
    """Keep a copy of every tensor ``party`` sends (the source of ``foreign`` messages)."""
    send = party.comm._send

    def recorded(to: int, t: torch.Tensor) -> None:
        into.append(t.clone())
        send(to, t)

    party.comm._send = recorded  # type: ignore[method-assign]
