"""Server-side verification of owner-signed requests (see ``wire.signing``).

:meth:`RequestVerifier.verify` checks, in this order, and raises :class:`RequestRejected`
with a ``reason`` code and a message naming the problem:

1. ``malformed`` / ``unsigned``: unparsable request or empty signature;
2. ``wrong-audience`` / ``bad-action``: meant for another deployment, unknown or unexpected action;
3. ``unknown-signer``: the signer's Ed25519 key is not registered here;
4. ``stale`` / ``future``: timestamp older than ``window_s`` or more than ``skew_s`` ahead;
5. ``forged``: the signature does not verify under the signer's key;
6. ``replayed``: the (signer, nonce) pair was accepted before (SQLite table ``acl_nonces``).

The signature is checked before the nonce is recorded, so unsigned junk cannot fill the
cache. Nonces older than the window are pruned: a request that old is rejected as stale
anyway, so the cache stays bounded by the request rate times the window and a pruned
nonce can never be replayed. The table survives restarts, so a replay after a server
restart is still refused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire.signing import ACTIONS, EncodingError, SignedRequest

from .db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS acl_nonces (signer TEXT NOT NULL, nonce TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    seen_ms INTEGER NOT NULL, action TEXT NOT NULL, PRIMARY KEY (signer, nonce));
CREATE INDEX IF NOT EXISTS acl_nonces_ts ON acl_nonces (ts_ms);
"""

KeyLookup = Callable[[str], "bytes | None"]


class RequestRejected(PermissionError):
    """A signed request failed verification; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"request rejected ({reason}): {message}")
        self.reason = reason


@dataclass(frozen=True)
class VerifiedRequest:
    """A request that passed every check (signer authenticated, fresh, first use of its nonce)."""

    action: str
    params: Mapping[str, Any]
    signer: str
    nonce: str
    ts_ms: int

    @property
    def request_id(self) -> str:
        """Stable id for audit entries: the same on all three servers."""
        return f"{self.signer}:{self.nonce}"


class RequestVerifier:
    """Verifies signed requests against registered keys, a time window and a persistent nonce cache."""

    def __init__(self, db_path: str | Path, signer_key: KeyLookup, audience: str, window_s: float = 300.0,
                 skew_s: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.db = Database(db_path, _SCHEMA)
        self._key = signer_key
        self.audience = audience
        self.window_ms = int(window_s * 1000)
        self.skew_ms = int(skew_s * 1000)
        self._clock = clock

    def verify(self, request: SignedRequest | bytes | Mapping[str, Any],
               expected_action: str | None = None) -> VerifiedRequest:
        """Return the verified request or raise :class:`RequestRejected`."""
        req = self._parse(request)
        if not req.signature:
            raise RequestRejected("unsigned", f"{req.action!r} request carries no signature")
        if req.audience != self.audience:
            raise RequestRejected("wrong-audience",
                                  f"request is for deployment {req.audience!r}, this is {self.audience!r}")
        if req.action not in ACTIONS:
            raise RequestRejected("bad-action", f"unknown action {req.action!r}")
        if expected_action is not None and req.action != expected_action:
            raise RequestRejected("bad-action", f"expected a {expected_action!r} request, got {req.action!r}")
        pub = self._key(req.signer)
        if pub is None:
            raise RequestRejected("unknown-signer", f"signer {req.signer} is not registered on this server")
        now_ms = int(self._clock() * 1000)
        age = now_ms - req.ts_ms
        if age > self.window_ms:
            raise RequestRejected(
                "stale", f"timestamp is {age / 1000:.0f} s old (window {self.window_ms / 1000:.0f} s)"
            )
        if -age > self.skew_ms:
            raise RequestRejected("future", f"timestamp is {-age / 1000:.0f} s in the future (allowed skew "
                                            f"{self.skew_ms / 1000:.0f} s)")
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(req.signature, req.payload())
        except (InvalidSignature, ValueError):
            raise RequestRejected("forged", f"signature does not verify for signer {req.signer}") from None
        self.record_nonce(req, now_ms)
        return VerifiedRequest(req.action, req.params, req.signer, req.nonce, req.ts_ms)

    def verify_evidence(self, request: SignedRequest | bytes | Mapping[str, Any],
                        expected_action: str) -> VerifiedRequest:
        """Signature, audience, action and registered signer only: for a signed decision a
        peer hands over as evidence (old by nature, already used once: no window, no nonce)."""
        req = self._parse(request)
        if req.audience != self.audience or req.action != expected_action or not req.signature:
            raise RequestRejected("bad-action", f"not a signed {expected_action!r} of this deployment")
        pub = self._key(req.signer)
        if pub is None:
            raise RequestRejected("unknown-signer", f"signer {req.signer} is not registered on this server")
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(req.signature, req.payload())
        except (InvalidSignature, ValueError):
            raise RequestRejected("forged", f"signature does not verify for signer {req.signer}") from None
        return VerifiedRequest(req.action, req.params, req.signer, req.nonce, req.ts_ms)

    def _parse(self, request: SignedRequest | bytes | Mapping[str, Any]) -> SignedRequest:
        try:
            if isinstance(request, SignedRequest):
                return request
            if isinstance(request, (bytes, bytearray)):
                return SignedRequest.from_bytes(bytes(request))
            return SignedRequest.from_dict(request)
        except EncodingError as e:
            raise RequestRejected("malformed", str(e)) from None

    def record_nonce(self, req: SignedRequest, now_ms: int) -> None:
        """Remember ``req``'s nonce (pruning expired ones); ``replayed`` if it was seen before."""
        try:
            with self.db.transaction() as cur:
                cur.execute("DELETE FROM acl_nonces WHERE ts_ms < ?", (now_ms - self.window_ms - self.skew_ms,))
                cur.execute("INSERT INTO acl_nonces VALUES (?,?,?,?,?)",
                            (req.signer, req.nonce, req.ts_ms, now_ms, req.action))
        except sqlite3.IntegrityError:
            raise RequestRejected("replayed", f"nonce {req.nonce} from {req.signer} was already used") from None

    def cached_nonces(self) -> int:
        """Number of nonces currently remembered (bounded by rate x window)."""
        row = self.db.one("SELECT COUNT(*) FROM acl_nonces")
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the database."""
        self.db.close()
