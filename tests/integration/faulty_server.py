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
  ``secure_distance``), and in malicious mode the checked steps (``servers.query.checked_features``;
  ``protocols.checked_search``: ``_keys`` / ``_shared_keys`` as distances, ``checked_matmul`` or
  ``_fetch_keys`` as the fetch, ``checked_topk`` as the top-k), where the proof must catch the
  corruption before any output (``VaultServicer.make_comm`` returns the :class:`FaultyComm`);
* ``ret-KIND`` (``RETRIEVAL_FAULTS``): what the server releases at retrieval is corrupted, on
  both paths (``VaultServicer.Retrieve``): the owner's sealed key-share pair
  (``VaultServicer.key_share``) and a non-owner's sealed marked pixel-share pair
  (``VaultServicer._release_marked``). ``add``: a random nonzero value added to one word of its
  share pair (one int64 key word, or one pixel-share entry, mod 2^9); ``flip``: one
  random bit of one word flipped; ``drop``: the server refuses, as a policy refusal does
  (``AclDenied`` -> ``PERMISSION_DENIED``); ``replay``: it sends the whole answer (sealed
  share, ciphertext, record) it made for its PREVIOUS retrieval request instead; ``foreign``:
  it seals the share pair of its previous retrieval request correctly to THIS request (valid
  HPKE; wrong content when that request was for another image).
  The pixel pair is corrupted before it is marked and sealed: ``_release_marked`` names the
  fault in this thread and ``servers.release.release`` (``wire.pixel_shares.release``) is
  wrapped in this process only (:func:`corrupt_pixel_release`), as the query steps are. Both
  ``replay`` and ``foreign`` act like an honest server on the first request after a start,
  and are harmless when the previous request was for the same copy by the same requester
  (the same content: no freshness is bound into a sealed share, none is needed).

Production code has no switch for any of these: it only exposes the overridable steps.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import numpy as np
import torch

from protocols.dzk import ProductLog
from protocols.party import Party
from protocols.sharing import SharePair
from protos.trivault.v1 import trivault_pb2 as pb
from servers.__main__ import main
from servers.acl import Acl, AclDenied
from servers.app import Components
from servers.peer_comm import GrpcComm
from servers.policy import Outcome
from servers.request_auth import VerifiedRequest
from servers.vault import VaultServicer
from wire.pixel_shares import BITS, Component, expand


class LyingKeyShare(VaultServicer):
    """Seals ``(lo + 1, hi)`` instead of its stored key-share pair."""

    def key_share(self, image_id: int, deid: bool) -> tuple[bytes, SharePair]:
        ct, (lo, hi) = super().key_share(image_id, deid)
        return ct, (lo + 1, hi)


class SkipsMask(VaultServicer):
    """Runs the masking protocol (the peers wait for it) but outputs the unmasked shares."""

    def mask_results(self, party: Party, outs: dict[str, SharePair], hidden: list[int],
                     proof: ProductLog | None = None) -> dict[str, SharePair]:
        super().mask_results(party, outs, hidden, proof)
        return outs


class IgnoresPolicy(Acl):
    """Decides ORIGINAL for everyone (a corrupted server releasing keys to anyone)."""

    def decide(self, req: VerifiedRequest, image_id: int) -> Outcome:
        return Outcome.ORIGINAL


STEPS = ("cnn", "distances", "fetch", "topk")
MESSAGE_FAULTS = ("add", "flip", "drop", "replay", "foreign")
_step = threading.local()


def _in_step(name: str, fn):
    """``fn`` marked as step ``name``, unless it runs inside another marked step: the outermost step names
    the messages (``checked_matmul`` is the fetch on its own, part of the distances inside ``_shared_keys``)."""
    def wrapped(*args, **kwargs):
        outer = getattr(_step, "name", None)
        if outer is not None:
            return fn(*args, **kwargs)
        _step.name = name
        try:
            return fn(*args, **kwargs)
        finally:
            _step.name = outer
    return wrapped


def mark_steps() -> None:
    """Name the query step running in this thread (the CNN, distances, bucket fetch, top-k)."""
    import protocols.checked_search as cs
    import protocols.search as ps
    import servers.query as sq

    sq.secure_features = _in_step("cnn", sq.secure_features)
    sq.checked_features = _in_step("cnn", sq.checked_features)  # malicious mode: the checked steps
    cs._keys = _in_step("distances", cs._keys)
    cs._shared_keys = _in_step("distances", cs._shared_keys)  # keys first: every record's key
    cs.checked_matmul = _in_step("fetch", cs.checked_matmul)  # the rows' fetch (rows first)
    cs._fetch_keys = _in_step("fetch", cs._fetch_keys)  # the probed keys' fetch (keys first)
    cs.checked_topk = _in_step("topk", cs.checked_topk)
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


RETRIEVAL_FAULTS = ("add", "flip", "drop", "replay", "foreign")
_release = threading.local()  # .kind: the retrieval fault of the marked release running in this thread
_rng = random.SystemRandom()


def corrupt_one(kind: str, words: np.ndarray, bits: int | None = None) -> np.ndarray:
    """A copy of an unsigned-integer array with one random entry changed: ``add`` a random
    nonzero value (mod 2^bits, so the entry always changes) or ``flip`` one random bit of the
    ``bits`` that hold a value (default: the dtype's; 9 for pixel-share components)."""
    bits = bits or 8 * words.dtype.itemsize
    out = words.copy()
    flat = out.reshape(-1)
    i = _rng.randrange(flat.size)
    v = int(flat[i])
    flat[i] = (v + _rng.randrange(1, 1 << bits)) % (1 << bits) if kind == "add" else v ^ (1 << _rng.randrange(bits))
    return out


def _withheld(server_id: int, image_id: int) -> AclDenied:
    return AclDenied("withheld", f"server {server_id} withholds its share of image {image_id}")


class RetrievalFault(VaultServicer):
    """Corrupts what the server releases at retrieval (``ret-KIND``, see the module doc)."""

    kind = ""
    previous_answer: list[pb.Frame] | None = None  # the frames of the previous retrieval request
    previous_key: SharePair | None = None  # the key-share pair of the previous owner request

    def Retrieve(self, request: pb.ImageRequest, context) -> Iterator[pb.Frame]:
        if self.kind != "replay":
            yield from super().Retrieve(request, context)
            return
        answer = list(super().Retrieve(request, context))
        previous, RetrievalFault.previous_answer = RetrievalFault.previous_answer, answer
        yield from answer if previous is None else previous

    def key_share(self, image_id: int, deid: bool) -> tuple[bytes, SharePair]:
        if self.kind == "drop":
            raise _withheld(self.node.id, image_id)
        ct, pair = super().key_share(image_id, deid)
        previous, RetrievalFault.previous_key = RetrievalFault.previous_key, pair
        if self.kind == "foreign" and previous is not None:
            return ct, previous
        if self.kind in ("add", "flip"):
            words = torch.cat(pair).numpy().view(np.uint64)
            bad = torch.from_numpy(corrupt_one(self.kind, words).view(np.int64))
            return ct, (bad[: len(pair[0])], bad[len(pair[0]):])
        return ct, pair

    def _release_marked(self, recipient: str, image_id: int, rel, row: dict) -> Iterator[pb.Frame]:
        if self.kind == "drop":
            raise _withheld(self.node.id, image_id)
        _release.kind = self.kind
        try:
            return super()._release_marked(recipient, image_id, rel, row)
        finally:
            _release.kind = None


def retrieval_fault(kind: str) -> type[VaultServicer]:
    """A servicer whose retrievals release ``kind``-corrupted shares."""
    return type(f"Retrieval{kind.capitalize()}", (RetrievalFault,), {"kind": kind})


def corrupt_pixel_release() -> None:
    """Wrap the sealing of a marked pixel-share pair (``servers.release.release``) in this process:
    while :meth:`RetrievalFault._release_marked` runs, the pair is corrupted before it is marked
    and sealed to the requester (valid HPKE, wrong content)."""
    import servers.release as sr

    real = sr.release
    previous: list[tuple[tuple[Component, Component], tuple[bytes, bytes], tuple[int, int, int]]] = []

    def release(server_id: int, pair: tuple[Component, Component], mark_keys: tuple[bytes, bytes], recipient: str,
                recipient_kex_pub: bytes, image_id: int, deid: bool, shape: tuple[int, int, int]) -> bytes:
        kind = getattr(_release, "kind", None)
        if kind in ("add", "flip"):
            a, b = (expand(c, shape) for c in pair)
            both = corrupt_one(kind, np.concatenate([a.reshape(-1), b.reshape(-1)]), BITS)
            pair = (both[: a.size].reshape(shape), both[a.size:].reshape(shape))
        elif kind == "foreign":
            mine = (pair, mark_keys, shape)
            if previous and previous[0][2] == shape:  # the previous request's pair and mark keys
                pair, mark_keys = previous[0][0], previous[0][1]
            previous[:] = [mine]
        return real(server_id, pair, mark_keys, recipient, recipient_kex_pub, image_id, deid, shape)

    sr.release = release


FAULTS = {
    "key-share": Components(vault=LyingKeyShare),
    "skip-mask": Components(vault=SkipsMask),
    "ignore-policy": Components(acl=IgnoresPolicy),
}

FAULTS.update({f"msg-{k}-{s}": Components(vault=message_fault(k, s)) for k in MESSAGE_FAULTS for s in STEPS})
FAULTS.update({f"ret-{k}": Components(vault=retrieval_fault(k)) for k in RETRIEVAL_FAULTS})

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        sys.exit(f"usage: faulty_server.py {{{','.join(FAULTS)}}} --id N --config FILE")
    if sys.argv[1].startswith("msg-"):
        mark_steps()
    if sys.argv[1].startswith("ret-"):
        corrupt_pixel_release()
    main(sys.argv[2:], FAULTS[sys.argv[1]])
