"""User identities: an Ed25519 signing key and an X25519 key-agreement key, plus attributes.

* :class:`Identity` holds both private keys; :meth:`Identity.save` writes them to a
  directory as PKCS#8 PEM files with mode 0600 (optionally passphrase-encrypted) and
  :meth:`Identity.load` refuses key files that group or others can read (as ssh does).
* :class:`PublicIdentity` is what gets registered with the servers: the two raw public
  keys, attributes (role, organisation, ...), and the user id, which is derived from the
  public keys (``user_id_for``) so a bundle cannot claim someone else's id.

Attributes in a public bundle are the user's *claims*; the servers evaluate policies on
the attributes the owner attested when registering the user (see ``servers.policy``).
No function here logs or prints private key material; ``repr`` shows the id only.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

USER_ID_BYTES = 16
SIGN_FILE = "sign.key"
KEX_FILE = "kex.key"
PUBLIC_FILE = "identity.json"
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class IdentityError(ValueError):
    """An identity file or bundle is missing, malformed, unsafe or inconsistent."""


def user_id_for(sign_pub: bytes, kex_pub: bytes) -> str:
    """User id: hex of the first 16 bytes of SHA-256 over both raw public keys (domain-separated)."""
    if len(sign_pub) != 32 or len(kex_pub) != 32:
        raise IdentityError("public keys must be raw 32-byte Ed25519 and X25519 keys")
    h = hashlib.sha256(b"trivault/v1/user-id\x00" + sign_pub + kex_pub).digest()
    return h[:USER_ID_BYTES].hex()


def _clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, str]:
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
        object.__setattr__(self, "attributes", _clean_attributes(self.attributes))

    @classmethod
    def from_keys(cls, sign_pub: bytes, kex_pub: bytes, attributes: Mapping[str, str] | None = None) -> "PublicIdentity":
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
    def from_dict(cls, d: Mapping[str, Any]) -> "PublicIdentity":
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
    def from_json(cls, text: str) -> "PublicIdentity":
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


class Identity:
    """A user's key pair set (private). Never printed: ``repr`` shows the user id only."""

    __slots__ = ("signing_key", "kex_key", "attributes", "_public")

    def __init__(self, signing_key: Ed25519PrivateKey, kex_key: X25519PrivateKey,
                 attributes: Mapping[str, str] | None = None) -> None:
        self.signing_key = signing_key
        self.kex_key = kex_key
        self.attributes = _clean_attributes(attributes)
        self._public = PublicIdentity.from_keys(
            signing_key.public_key().public_bytes(*_RAW), kex_key.public_key().public_bytes(*_RAW), self.attributes
        )

    @classmethod
    def create(cls, attributes: Mapping[str, str] | None = None) -> "Identity":
        """Fresh keys from the OS CSPRNG."""
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate(), attributes)

    @property
    def user_id(self) -> str:
        """This user's id (derived from the public keys)."""
        return self._public.user_id

    def public(self) -> PublicIdentity:
        """The public bundle to register with the servers."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message``."""
        return self.signing_key.sign(message)

    def __repr__(self) -> str:
        return f"Identity(user_id={self.user_id!r})"

    # ---- files ----------------------------------------------------------------------
    def save(self, directory: str | Path, passphrase: bytes | None = None, overwrite: bool = False) -> Path:
        """Write ``sign.key``, ``kex.key`` (PKCS#8 PEM, mode 0600) and ``identity.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
               else serialization.NoEncryption())
        for name, key in ((SIGN_FILE, self.signing_key), (KEX_FILE, self.kex_key)):
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
            _write_private(d / name, pem, overwrite)
        pub = d / PUBLIC_FILE
        if pub.exists() and not overwrite:
            raise IdentityError(f"{pub} exists (pass overwrite=True to replace it)")
        pub.write_text(self._public.to_json() + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path, passphrase: bytes | None = None) -> "Identity":
        """Read an identity saved by :meth:`save`; refuses key files readable by others."""
        d = Path(directory)
        keys = []
        for name in (SIGN_FILE, KEX_FILE):
            p = d / name
            if not p.exists():
                raise IdentityError(f"{p} not found: create an identity first (`trivault keys new`)")
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                raise IdentityError(f"{p} has permissions {mode:04o}; private keys must be 0600 (chmod 600 {p})")
            try:
                keys.append(serialization.load_pem_private_key(p.read_bytes(), password=passphrase))
            except (TypeError, ValueError):
                raise IdentityError(f"cannot read {p}: wrong passphrase or not a PKCS#8 key") from None
        sk, xk = keys
        if not isinstance(sk, Ed25519PrivateKey) or not isinstance(xk, X25519PrivateKey):
            raise IdentityError(f"{d}: expected an Ed25519 {SIGN_FILE} and an X25519 {KEX_FILE}")
        attrs: dict[str, str] = {}
        if (d / PUBLIC_FILE).exists():
            stored = PublicIdentity.from_json((d / PUBLIC_FILE).read_text())
            attrs = dict(stored.attributes)
        ident = cls(sk, xk, attrs)
        if (d / PUBLIC_FILE).exists() and stored.user_id != ident.user_id:
            raise IdentityError(f"{d / PUBLIC_FILE} names user {stored.user_id}, keys belong to {ident.user_id}")
        return ident


def _write_private(path: Path, data: bytes, overwrite: bool) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise IdentityError(f"{path} exists (pass overwrite=True to replace it)") from None
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
