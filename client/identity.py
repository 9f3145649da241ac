"""A user's private keys: an Ed25519 signing key and an X25519 key-agreement key, plus attributes.

:class:`Identity` holds both private keys; :meth:`Identity.save` writes them to a
directory as PKCS#8 PEM files with mode 0600 (optionally passphrase-encrypted) and
:meth:`Identity.load` refuses key files that group or others can read (as ssh does).
Its public bundle, what gets registered with the servers, is a
``wire.identity.PublicIdentity``.
No function here logs or prints private key material; ``repr`` shows the id only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wire.identity import IdentityError, PublicIdentity, clean_attributes

SIGN_FILE = "sign.key"
KEX_FILE = "kex.key"
PUBLIC_FILE = "identity.json"
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Identity:
    """A user's key pair set (private). Never printed: ``repr`` shows the user id only."""

    __slots__ = ("signing_key", "kex_key", "attributes", "_public")

    def __init__(self, signing_key: Ed25519PrivateKey, kex_key: X25519PrivateKey,
                 attributes: Mapping[str, str] | None = None) -> None:
        self.signing_key = signing_key
        self.kex_key = kex_key
        self.attributes = clean_attributes(attributes)
        self._public = PublicIdentity.from_keys(
            signing_key.public_key().public_bytes(*_RAW), kex_key.public_key().public_bytes(*_RAW), self.attributes
        )

    @classmethod
    def create(cls, attributes: Mapping[str, str] | None = None) -> Identity:
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
    def load(cls, directory: str | Path, passphrase: bytes | None = None) -> Identity:
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
