"""Encrypted image names and labels: sealed by the owner at upload, opened by those allowed.

Key choice: every image gets a fresh AES-256-GCM *metadata key* (not the image key, so
reading a name never releases the pixels' key; not one key per collection, so a user
granted one image cannot read the names of the others). The owner's metadata
(``{"name": ..., "label": ...}`` as JSON) is padded to a multiple of ``PAD`` bytes, so a
server sees neither the text nor its exact length, and encrypted with associated data
naming the image id (a blob cannot be moved to another id). The key is split into
replicated-share pairs (``wire.key_delivery.split_key``), pair ``i`` for server ``i``,
exactly like an image key.

Reading (:class:`NameBook`): one signed ``names`` request per collection (never for the ids
of a search result, which the servers must not learn) or per image being retrieved; each
server answers with the blobs of the images the policy lets the requester see and its key
pairs sealed to the requester's registered X25519 key (``wire.metadata``). Two or three
servers' pairs are combined and cross-checked (a lying server is named).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from protocols.sharing import InconsistentSharesError, SharePair, reconstruct
from protos.trivault.v1 import trivault_pb2 as pb
from wire import bundle as bd
from wire.key_delivery import split_key, words_to_key
from wire.metadata import SealError, open_pairs

from . import crypto
from .errors import TriVaultError
from .identity import Identity
from .transport import Fanout, Sign

PAD = 64  # plaintext metadata is padded to a multiple of this many bytes


def meta_aad(image_id: int) -> bytes:
    """Associated data binding an encrypted metadata blob to its image id."""
    return f"trivault/v1/image-meta/{int(image_id)}".encode()


def encrypt_meta(key: bytes, image_id: int, meta: dict[str, Any]) -> bytes:
    """AES-256-GCM of the padded JSON metadata of one image."""
    raw = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % PAD or 0)
    return crypto.encrypt(key, raw, meta_aad(image_id))


def decrypt_meta(key: bytes, image_id: int, blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encrypt_meta` (DecryptionError if the key or blob is wrong)."""
    return json.loads(crypto.decrypt(key, blob, meta_aad(image_id)).decode())


def meta_tensors(image_id: int, meta: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    """The upload tensors for each server: the encrypted blob and that server's key pair."""
    key = crypto.new_key()
    blob = torch.frombuffer(bytearray(encrypt_meta(key, image_id, meta)), dtype=torch.uint8)
    return [{f"meta/{image_id}": blob, **bd.pairs_to_tensors(f"mkey/{image_id}", pair)} for pair in split_key(key)]


def open_replies(replies: Sequence[dict | None], identity: Identity) -> dict[int, dict[str, Any]]:
    """Image id -> metadata from the servers' ``names`` replies (None = no answer)."""
    pairs: list[dict[int, SharePair] | None] = []
    for i, r in enumerate(replies):
        pairs.append(None if r is None else open_pairs(bytes.fromhex(r["sealed"]), identity.kex_key, i))
    answered = [i for i, p in enumerate(pairs) if p is not None]
    ids = sorted({k for p in pairs if p is not None for k in p})
    out: dict[int, dict[str, Any]] = {}
    for image_id in ids:
        have = [pairs[i].get(image_id) if pairs[i] is not None else None for i in range(3)]  # type: ignore[union-attr]
        if sum(p is not None for p in have) < 2:
            continue  # fewer than two servers release this image's key: no name
        try:
            key = words_to_key(reconstruct(have, check=True))
        except InconsistentSharesError as exc:
            raise TriVaultError(f"image {image_id}: inconsistent metadata-key shares; one of servers "
                                f"{list(exc.suspects)} sent a wrong share") from None
        blobs = {r["meta"].get(str(image_id)) for r in (replies[i] for i in answered) if r is not None}
        for blob in sorted(b for b in blobs if b):
            try:
                out[image_id] = decrypt_meta(key, image_id, bytes.fromhex(blob))
                break
            except (crypto.DecryptionError, ValueError):
                continue  # a server sent a wrong blob: another server's copy decrypts
    return out


class NameBook:
    """Names of the images this user may see, fetched once per collection and kept."""

    def __init__(self, fan: Fanout, sign: Sign, identity: Identity, timeout_s: float = 30.0) -> None:
        self.fan, self.sign, self.identity, self.timeout_s = fan, sign, identity, timeout_s
        self._by_collection: dict[str, dict[int, dict[str, Any]]] = {}

    def _ask(self, params: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], Any]:
        auth = self.sign("names", params)  # the same signed request to all three servers
        replies = self.fan.all(lambda i: json.loads(self.fan.stubs[i].Names(pb.SignedCall(auth=auth),
                                                                            timeout=self.timeout_s).meta_json),
                               tolerate=True)
        if sum(r is not None for r in replies) < 2:
            raise TriVaultError("fewer than two servers answered the names request")
        try:
            found = open_replies(replies, self.identity)
        except SealError as exc:
            raise TriVaultError(str(exc)) from None
        nexts = {r.get("next") for r in replies if r is not None}
        return found, max((n for n in nexts if n is not None), default=None)

    def collection(self, collection: str = "default", purpose: str | None = None,
                   refresh: bool = False) -> dict[int, dict[str, Any]]:
        """Image id -> metadata of every image in ``collection`` this user may see."""
        if refresh or collection not in self._by_collection:
            out: dict[int, dict[str, Any]] = {}
            after: int | None = None
            while True:  # bounded: each page must move past the previous one
                got, nxt = self._ask({"collection": collection, "after": after, "purpose": purpose})
                out.update(got)
                if nxt is None or (after is not None and int(nxt) <= after):
                    break
                after = int(nxt)
            self._by_collection[collection] = out
        return self._by_collection[collection]

    def image(self, image_id: int, purpose: str | None = None) -> dict[str, Any] | None:
        """Metadata of one image (for a retrieval: the id is no secret there), or None."""
        return self._ask({"image": int(image_id), "purpose": purpose})[0].get(int(image_id))

    def name(self, meta: dict[str, Any] | None) -> str | None:
        """The display name in a metadata dict (label, else file name)."""
        if not meta:
            return None
        return meta.get("label") or meta.get("name")
