"""Public user identities: the bundle a user registers with the servers.

A :class:`PublicIdentity` holds a user's raw Ed25519 (signing) and X25519 (key
agreement) public keys, attributes (role, organisation, ...), and the user id, which is
derived from the public keys (:func:`user_id_for`) so a bundle cannot claim someone
else's id. Attributes in a public bundle are the user's *claims*; the servers evaluate
policies on the attributes the owner attested when registering the user. The private
keys (``client.identity.Identity``) never leave the client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

USER_ID_BYTES = 16


class IdentityError(ValueError):
    """An identity file or bundle is missing, malformed, unsafe or inconsistent."""


def user_id_for(sign_pub: bytes, kex_pub: bytes) -> str:
    """User id: hex of the first 16 bytes of SHA-256 over both raw public keys (domain-separated)."""
    if len(sign_pub) != 32 or len(kex_pub) != 32:
        raise IdentityError("public keys must be raw 32-byte Ed25519 and X25519 keys")
    h = hashlib.sha256(b"trivault/v1/user-id\x00" + sign_pub + kex_pub).digest()
    return h[:USER_ID_BYTES].hex()


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """Attributes as a plain str -> str dict (keys lower-case identifiers)."""
    out: dict[str, str] = {}
    for k, v in (attributes or {}).items():
        if not isinstance(k, str) or not k.isidentifier():
            raise IdentityError(f"attribute name {k!r} must be an identifier")
        if not isinstance(v, str):
            raise IdentityError(f"attribute {k!r} must be a string")
        out[k.lower()] = v
    return out


@dataclass(frozen=True)
class PublicIdentity:
    """A user's public bundle: id, raw public keys and attributes."""

    user_id: str
    sign_pub: bytes
    kex_pub: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if user_id_for(self.sign_pub, self.kex_pub) != self.user_id:
            raise IdentityError("user id does not match the public keys")
        object.__setattr__(self, "attributes", clean_attributes(self.attributes))

    @classmethod
    def from_keys(cls, sign_pub: bytes, kex_pub: bytes, attributes: Mapping[str, str] | None = None) -> PublicIdentity:
        """Bundle from raw public keys (the id is derived)."""
        return cls(user_id_for(sign_pub, kex_pub), sign_pub, kex_pub, dict(attributes or {}))

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True if ``signature`` is this user's Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.sign_pub).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            return False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (keys as hex)."""
        return {"user_id": self.user_id, "sign_pub": self.sign_pub.hex(), "kex_pub": self.kex_pub.hex(),
                "attributes": dict(self.attributes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PublicIdentity:
        """Inverse of :meth:`to_dict`; checks that the id matches the keys."""
        try:
            return cls(str(d["user_id"]), bytes.fromhex(d["sign_pub"]), bytes.fromhex(d["kex_pub"]),
                       dict(d.get("attributes") or {}))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, IdentityError):
                raise
            raise IdentityError(f"malformed public identity: {e}") from None

    def to_json(self) -> str:
        """Canonical JSON text of the bundle."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PublicIdentity:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))
