"""Communication between the three parties: the only way protocols talk.

Protocols never see a socket. They call :meth:`Comm.exchange`, which sends at most one
tensor to each neighbour and receives at most one from each, and counts that as one
*round*. Bytes are counted in one place (here), per party, the way CrypTen wraps its
communicator calls. Two backends implement the transport:

* :class:`InProcessComm` (this module): three threads and queues, for tests and simulation.
* ``servers.peer_comm.GrpcComm``: a bidirectional gRPC stream between server processes.

Messages are int64 tensors (ring elements or packed bit-words). A backend must deliver
them in order per directed link; the gRPC backend tags each message with
``(session_id, seq)`` so concurrent sessions never mix (MPyC's program-counter idea).
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
from torch import Tensor

N_PARTIES = 3


class CommError(RuntimeError):
    """A peer did not answer in time, or the transport failed."""


@dataclass
class CommStats:
    """Counters for one party: rounds, messages and bytes it sent."""

    rounds: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def snapshot(self) -> CommStats:
        return CommStats(self.rounds, self.messages_sent, self.bytes_sent, self.bytes_received)

    def __sub__(self, other: CommStats) -> CommStats:
        return CommStats(
            self.rounds - other.rounds,
            self.messages_sent - other.messages_sent,
            self.bytes_sent - other.bytes_sent,
            self.bytes_received - other.bytes_received,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "rounds": self.rounds,
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Comm(ABC):
    """Point-to-point links from one party to its two neighbours, with counters.

    Party ``i``'s *next* is ``(i + 1) % 3`` and its *prev* is ``(i - 1) % 3``.
    Subclasses implement :meth:`_send` and :meth:`_recv`; everything else is shared.
    """

    def __init__(self, party_id: int) -> None:
        if party_id not in range(N_PARTIES):
            raise ValueError(f"party_id must be 0, 1 or 2, got {party_id!r}")
        self.party_id = party_id
        self.stats = CommStats()

    @property
    def next_id(self) -> int:
        return (self.party_id + 1) % N_PARTIES

    @property
    def prev_id(self) -> int:
        return (self.party_id - 1) % N_PARTIES

    @abstractmethod
    def _send(self, to: int, tensor: torch.Tensor) -> None:
        """Deliver ``tensor`` to party ``to`` (must not block on the receiver)."""

    @abstractmethod
    def _recv(self, frm: int) -> torch.Tensor:
        """Return the next tensor from party ``frm`` (blocks, raises CommError on timeout)."""

    # The overloads tell a type checker that a requested message is never None.
    @overload
    def exchange(
        self, send_next: Tensor | None = ..., send_prev: Tensor | None = ..., *,
        recv_next: Literal[True], recv_prev: Literal[True],
    ) -> tuple[Tensor, Tensor]: ...

    @overload
    def exchange(
        self, send_next: Tensor | None = ..., send_prev: Tensor | None = ..., *,
        recv_next: Literal[True], recv_prev: Literal[False] = ...,
    ) -> tuple[Tensor, None]: ...

    @overload
    def exchange(
        self, send_next: Tensor | None = ..., send_prev: Tensor | None = ..., *,
        recv_next: Literal[False] = ..., recv_prev: Literal[True],
    ) -> tuple[None, Tensor]: ...

    @overload
    def exchange(
        self, send_next: Tensor | None = ..., send_prev: Tensor | None = ..., *,
        recv_next: bool = ..., recv_prev: bool = ...,
    ) -> tuple[Tensor | None, Tensor | None]: ...

    def exchange(
        self,
        send_next: torch.Tensor | None = None,
        send_prev: torch.Tensor | None = None,
        recv_next: bool = False,
        recv_prev: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One communication round: send to neighbours, then receive.

        Returns ``(from_next, from_prev)``; an entry is ``None`` when not requested.
        Tensors handed to ``send_*`` must not be modified afterwards (no copy is made).
        """
        for to, t in ((self.next_id, send_next), (self.prev_id, send_prev)):
            if t is not None:
                if t.dtype != torch.int64:
                    raise TypeError(f"Comm carries int64 ring tensors, got {t.dtype}")
                self._send(to, t)
                self.stats.messages_sent += 1
                self.stats.bytes_sent += _nbytes(t)
        got_next = self._recv(self.next_id) if recv_next else None
        got_prev = self._recv(self.prev_id) if recv_prev else None
        for t in (got_next, got_prev):
            if t is not None:
                self.stats.bytes_received += _nbytes(t)
        self.stats.rounds += 1
        return got_next, got_prev

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract  # pragma: no cover
        """Release transport resources (nothing to release by default; backends may override)."""


@dataclass
class _Mailboxes:
    """Queues for every directed link among three parties (in-process backend)."""

    boxes: dict[tuple[int, int], queue.Queue] = field(default_factory=dict)
    aborted: threading.Event = field(default_factory=threading.Event)
    aborted_by: int | None = None
    """The party that aborted the session first (its peers' errors name it)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for a in range(N_PARTIES):
            for b in range(N_PARTIES):
                if a != b:
                    self.boxes[(a, b)] = queue.Queue()


class InProcessComm(Comm):
    """In-process transport: one queue per directed link, for tests and simulation."""

    def __init__(self, party_id: int, mailboxes: _Mailboxes, timeout_s: float = 120.0) -> None:
        super().__init__(party_id)
        self._boxes = mailboxes
        self._timeout_s = timeout_s

    def _send(self, to: int, tensor: torch.Tensor) -> None:
        self._boxes.boxes[(self.party_id, to)].put(tensor)

    def _recv(self, frm: int) -> torch.Tensor:
        box = self._boxes.boxes[(frm, self.party_id)]
        waited = 0.0
        while True:
            try:  # a message sent before an abort is still delivered
                return box.get(timeout=0.05)
            except queue.Empty:
                if self._boxes.aborted.is_set():
                    raise CommError(
                        f"party {self.party_id}: session aborted by party {self._boxes.aborted_by}"
                    ) from None
                waited += 0.05
                if waited >= self._timeout_s:
                    raise CommError(
                        f"party {self.party_id}: no message from party {frm} within {self._timeout_s} s"
                    ) from None

    def close(self) -> None:
        """Abort the session: peers blocked in ``recv`` fail at once instead of timing out, told who aborted."""
        with self._boxes.lock:
            if self._boxes.aborted_by is None:
                self._boxes.aborted_by = self.party_id
        self._boxes.aborted.set()

    @staticmethod
    def create_trio(timeout_s: float = 120.0) -> list[InProcessComm]:
        """Three connected communicators, one per party."""
        boxes = _Mailboxes()
        return [InProcessComm(i, boxes, timeout_s) for i in range(N_PARTIES)]
