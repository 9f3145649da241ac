"""Image integrity: the owner signs each image's SHA-256 at upload; the client verifies on retrieval.

The owner signs (Ed25519) the canonical bytes of ``{"domain": "trivault/v1/image-hash",
"owner", "image_id", "kind", "sha256"}`` for the original and for the de-identified copy.
The signature is stored beside the ciphertext (it reveals the image hash to the servers,
so it is itself encrypted with the image key when stored: see :func:`seal_record`).
On retrieval the client decrypts, recomputes SHA-256 over the plaintext bytes *before*
any watermarking, and :func:`verify_image` raises :class:`TamperError` on a mismatch, a
bad signature, or a record for another image, kind or owner.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wire.identity import PublicIdentity
from wire.signing import canonical_json

from .identity import Identity

DOMAIN = "trivault/v1/image-hash"
KINDS = ("orig", "deid")


class TamperError(ValueError):
    """A retrieved image does not match the owner's signed hash."""


@dataclass(frozen=True)
class ImageSignature:
    """The owner's signed statement: image ``image_id`` (``kind``) has SHA-256 ``sha256``."""

    owner: str
    image_id: int
    kind: str
    sha256: str
    signature: bytes

    def payload(self) -> bytes:
        """The signed bytes."""
        return _payload(self.owner, self.image_id, self.kind, self.sha256)

    def to_bytes(self) -> bytes:
        """Serialised record (canonical JSON)."""
        return canonical_json({"owner": self.owner, "image_id": self.image_id, "kind": self.kind,
                               "sha256": self.sha256, "signature": self.signature.hex()})

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageSignature:
        """Parse :meth:`to_bytes` output; TamperError if malformed."""
        try:
            d: Mapping[str, Any] = json.loads(data)
            return cls(str(d["owner"]), int(d["image_id"]), str(d["kind"]), str(d["sha256"]),
                       bytes.fromhex(d["signature"]))
        except (ValueError, KeyError, TypeError):
            raise TamperError("image signature record is malformed") from None


def _payload(owner: str, image_id: int, kind: str, sha256: str) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return canonical_json({"domain": DOMAIN, "owner": owner, "image_id": int(image_id), "kind": kind,
                           "sha256": sha256})


def image_sha256(data: bytes) -> str:
    """Hex SHA-256 of the image file bytes."""
    return hashlib.sha256(data).hexdigest()


def sign_image(owner: Identity, image_id: int, data: bytes, kind: str = "orig") -> ImageSignature:
    """Owner side, at upload: sign the image's hash."""
    h = image_sha256(data)
    return ImageSignature(owner.user_id, int(image_id), kind, h, owner.sign(_payload(owner.user_id, image_id, kind, h)))


def verify_image(owner: PublicIdentity, image_id: int, data: bytes, record: ImageSignature | bytes,
                 kind: str = "orig") -> ImageSignature:
    """Client side, at retrieval: check the record and the bytes; raise TamperError with the reason."""
    rec = record if isinstance(record, ImageSignature) else ImageSignature.from_bytes(record)
    if rec.owner != owner.user_id:
        raise TamperError(f"image {image_id}: signature record names owner {rec.owner}, expected {owner.user_id}")
    if rec.image_id != int(image_id) or rec.kind != kind:
        raise TamperError(f"image {image_id} ({kind}): signature record is for image {rec.image_id} ({rec.kind})")
    if not owner.verify(rec.signature, rec.payload()):
        raise TamperError(f"image {image_id}: the owner's signature does not verify (forged record)")
    got = image_sha256(data)
    if got != rec.sha256:
        raise TamperError(f"image {image_id} ({kind}) was tampered with: SHA-256 {got[:16]}... differs from the "
                          f"owner-signed {rec.sha256[:16]}...")
    return rec


def seal_record(record: ImageSignature, key: bytes, encrypt) -> bytes:
    """Encrypt a record under the image key (``encrypt(key, pt, aad)``) so servers do not see the hash."""
    return encrypt(key, record.to_bytes(), f"{DOMAIN}/{record.image_id}/{record.kind}".encode())


def open_record(blob: bytes, key: bytes, image_id: int, kind: str, decrypt) -> ImageSignature:
    """Inverse of :func:`seal_record`; a failed decryption is reported as tampering."""
    try:
        return ImageSignature.from_bytes(decrypt(key, blob, f"{DOMAIN}/{int(image_id)}/{kind}".encode()))
    except ValueError as e:
        if isinstance(e, TamperError):
            raise
        raise TamperError(f"image {image_id} ({kind}): signature record does not decrypt (tampered)") from None
