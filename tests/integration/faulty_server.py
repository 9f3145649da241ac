"""Test-only server entry point: a normal TriVault server with ONE corrupted behaviour.

``python tests/integration/faulty_server.py FAULT --id N --config FILE [...]`` takes the
arguments of ``python -m servers`` after the fault's name and builds the production
server from a subclass that overrides one small method (``LocalCluster`` puts the
repository on ``PYTHONPATH``):

* ``key-share``: the server seals a wrong key-share pair (``VaultServicer.key_share``);
* ``ignore-policy``: the server releases its key share to anyone (``Acl.decide``);
* ``skip-mask``: the server runs the result-masking protocol with its peers but outputs
  its unmasked shares (``VaultServicer.mask_results``);
* ``msg-KIND-STEP`` (``MESSAGE_FAULTS`` x ``STEPS``): in every search session, the first
  protocol message the server sends during query step STEP is corrupted: ``add`` a random
  nonzero ring element to one entry, ``flip`` one random bit, ``drop`` the message,
  ``replay`` it (sent twice under its sequence number), or ``foreign``: replaced by the
  message with the same link and number of the server's previous session (a valid-looking
  message of another session, retagged). Steps are marked by wrapping the step functions
  of ``servers.query`` / ``protocols.search`` in this process only (both search paths:
  ``record_distances`` / ``fetch_distances`` and ``centroid_distances`` / ``oblivious_fetch`` /
  ``secure_distance``)
  (``VaultServicer.make_comm`` returns the :class:`FaultyComm`).

Production code has no switch for any of these: it only exposes the overridable steps.
"""

from __future__ import annotations

import sys
import threading

import torch

from protocols.party import Party
from protocols.sharing import SharePair
from servers.__main__ import main
from servers.acl import Acl
from servers.app import Components
from servers.peer_comm import GrpcComm
from servers.policy import Outcome
from servers.request_auth import VerifiedRequest
from servers.vault import VaultServicer


class LyingKeyShare(VaultServicer):
    """Seals ``(lo + 1, hi)`` instead of its stored key-share pair."""

    def key_share(self, image_id: int, deid: bool) -> tuple[bytes, SharePair]:
        ct, (lo, hi) = super().key_share(image_id, deid)
        return ct, (lo + 1, hi)


class SkipsMask(VaultServicer):
    """Runs the masking protocol (the peers wait for it) but outputs the unmasked shares."""

    def mask_results(self, party: Party, outs: dict[str, SharePair], hidden: list[int]) -> dict[str, SharePair]:
        super().mask_results(party, outs, hidden)
        return outs


class IgnoresPolicy(Acl):
    """Decides ORIGINAL for everyone (a corrupted server releasing keys to anyone)."""

    def decide(self, req: VerifiedRequest, image_id: int) -> Outcome:
        return Outcome.ORIGINAL


STEPS = ("cnn", "distances", "fetch", "topk")
MESSAGE_FAULTS = ("add", "flip", "drop", "replay", "foreign")
_step = threading.local()


def _in_step(name: str, fn):
    def wrapped(*args, **kwargs):
        outer = getattr(_step, "name", None)
        _step.name = name
        try:
            return fn(*args, **kwargs)
        finally:
            _step.name = outer
    return wrapped


def mark_steps() -> None:
    """Name the query step running in this thread (the CNN, distances, bucket fetch, top-k)."""
    import protocols.search as ps
    import servers.query as sq

    sq.secure_features = _in_step("cnn", sq.secure_features)
    # both search paths: record-first (distances to every record, then fetch (distance, id))
    # and fetch-first (fetch the probed records, then their distances); see protocols.search
    ps.centroid_distances = _in_step("distances", ps.centroid_distances)
    ps.secure_distance = _in_step("distances", ps.secure_distance)
    ps.record_distances = _in_step("distances", ps.record_distances)
    ps.oblivious_fetch = _in_step("fetch", ps.oblivious_fetch)
    ps.fetch_distances = _in_step("fetch", ps.fetch_distances)
    ps.secure_topk = _in_step("topk", ps.secure_topk)


class FaultyComm(GrpcComm):
    """Corrupts the first message this server sends during one query step (see the module doc)."""

    previous: dict[tuple[int, int], torch.Tensor] = {}  # (peer, seq) -> message of the last session

    def __init__(self, *args, kind: str, step: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kind, self.step, self.done = kind, step, False
        self.sent: dict[tuple[int, int], torch.Tensor] = {}
        self.gen = torch.Generator().manual_seed(int.from_bytes(self.session_id.encode()[:8], "little"))

    def _send(self, to: int, tensor: torch.Tensor) -> None:
        seq = self._send_seq[to]
        self.sent[(to, seq)] = tensor
        if self.done or getattr(_step, "name", None) != self.step or tensor.numel() == 0:
            return super()._send(to, tensor)
        self.done = True
        i = int(torch.randint(tensor.numel(), (1,), generator=self.gen))
        bad = tensor.clone().reshape(-1)
        if self.kind == "add":
            bad[i] += int(torch.randint(1, 1 << 62, (1,), generator=self.gen))
        elif self.kind == "flip":
            bad[i] ^= 1 << int(torch.randint(63, (1,), generator=self.gen))
        elif self.kind == "drop":
            self._send_seq[to] = seq + 1
            return None
        elif self.kind == "replay":
            super()._send(to, tensor)
            return self._links[to].send_tensor(self.session_id, seq, tensor)
        elif self.kind == "foreign":
            old = FaultyComm.previous.get((to, seq))
            bad = (old if old is not None and old.shape == tensor.shape else tensor).reshape(-1)
        return super()._send(to, bad.reshape(tensor.shape))

    def close(self) -> None:
        FaultyComm.previous = self.sent
        super().close()


def message_fault(kind: str, step: str) -> type[VaultServicer]:
    """A servicer whose search sessions run over a :class:`FaultyComm`."""

    class MessageFault(VaultServicer):
        def make_comm(self, session_id: str) -> GrpcComm:
            n = self.node
            return FaultyComm(n.id, session_id, n.router, n.links, n.cfg.peer_timeout_s, kind=kind, step=step)

    return MessageFault


FAULTS = {
    "key-share": Components(vault=LyingKeyShare),
    "skip-mask": Components(vault=SkipsMask),
    "ignore-policy": Components(acl=IgnoresPolicy),
}

FAULTS.update({f"msg-{k}-{s}": Components(vault=message_fault(k, s)) for k in MESSAGE_FAULTS for s in STEPS})

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        sys.exit(f"usage: faulty_server.py {{{','.join(FAULTS)}}} --id N --config FILE")
    if sys.argv[1].startswith("msg-"):
        mark_steps()
    main(sys.argv[2:], FAULTS[sys.argv[1]])
