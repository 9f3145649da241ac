"""Owner actions as Ed25519-signed requests with a canonical byte encoding.

The signed bytes are canonical JSON (:func:`canonical_json`: sorted keys, no spaces,
UTF-8, integers only, no floats or NaN) of::

    {"v": 1, "domain": "trivault/v1/request", "audience": <deployment id>,
     "action": <one of ACTIONS>, "params": {...}, "signer": <user id>,
     "nonce": <32 hex chars>, "ts_ms": <unix time in ms>}

The same signed request is sent to all three servers (``audience`` names the deployment,
not one server: :func:`audience_for_ca`), and each verifies it independently
(``servers.request_auth``): unsigned, forged, replayed (nonce seen before) and stale
(timestamp outside the window) requests are rejected. Binary parameters must be hex-encoded by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

VERSION = 1
DOMAIN = "trivault/v1/request"
# search / retrieve: a requester's own signed request (its identity for the policy check);
# commit / abort: the owner's decision on a prepared upload (``client.commit``)
ACTIONS = frozenset({"upload", "grant", "revoke", "delete", "policy", "register", "unregister", "search",
                     "retrieve", "commit", "abort"})
# audit / names: a user's signed read of their audit view or of image metadata (issue 17)
READ_ACTIONS = frozenset({"audit", "names"})
ACTIONS = ACTIONS | READ_ACTIONS
NONCE_BYTES = 16


class Signer(Protocol):
    """Whoever signs requests (``client.identity.Identity``): a user id and an Ed25519 signature."""

    @property
    def user_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def audience_for_ca(ca_pem: bytes) -> str:
    """Deployment id: hash of the deployment CA certificate (clients and servers both hold it)."""
    return "trivault-" + hashlib.sha256(b"trivault/v1/audience\x00" + ca_pem).hexdigest()[:32]


class EncodingError(ValueError):
    """A value cannot be encoded canonically (float, bytes, non-string key, ...)."""


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise EncodingError(f"{path}: integer out of the signed 64-bit range")
        return
    if isinstance(value, float):
        raise EncodingError(f"{path}: floats are not canonical; use integers (e.g. milliseconds)")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check(v, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodingError(f"{path}: key {k!r} is not a string")
            _check(v, f"{path}.{k}")
        return
    raise EncodingError(f"{path}: {type(value).__name__} is not encodable (hex-encode bytes)")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact, UTF-8, ints/str/bool/null/list/dict only."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class SignedRequest:
    """An owner action with its signature; ``payload()`` is exactly what was signed."""

    action: str
    params: Mapping[str, Any]
    signer: str
    nonce: str
    ts_ms: int
    audience: str
    signature: bytes = field(default=b"", repr=False)

    def payload(self) -> bytes:
        """Canonical bytes covered by the signature."""
        return canonical_json({"v": VERSION, "domain": DOMAIN, "audience": self.audience, "action": self.action,
                               "params": dict(self.params), "signer": self.signer, "nonce": self.nonce,
                               "ts_ms": self.ts_ms})

    def to_dict(self) -> dict[str, Any]:
        """Wire form (signature hex-encoded)."""
        return {"v": VERSION, "action": self.action, "params": dict(self.params), "signer": self.signer,
                "nonce": self.nonce, "ts_ms": self.ts_ms, "audience": self.audience,
                "signature": self.signature.hex()}

    def to_bytes(self) -> bytes:
        """Wire bytes (canonical JSON of :meth:`to_dict`), e.g. for a protobuf ``bytes`` field."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignedRequest:
        """Parse the wire form; a missing signature gives ``signature=b''`` (rejected as unsigned)."""
        try:
            if d.get("v", VERSION) != VERSION:
                raise EncodingError(f"unsupported request version {d.get('v')!r}")
            params = d.get("params") or {}
            if not isinstance(params, Mapping):
                raise EncodingError("params must be an object")
            ts = d["ts_ms"]
            if not isinstance(ts, int) or isinstance(ts, bool):
                raise EncodingError("ts_ms must be an integer")
            return cls(str(d["action"]), dict(params), str(d["signer"]), str(d["nonce"]), ts,
                       str(d.get("audience", "")), bytes.fromhex(d.get("signature") or ""))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, EncodingError):
                raise
            raise EncodingError(f"malformed signed request: {e}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedRequest:
        """Parse :meth:`to_bytes` output."""
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EncodingError(f"signed request is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise EncodingError("signed request must be a JSON object")
        return cls.from_dict(d)


def sign_request(identity: Signer, action: str, params: Mapping[str, Any], audience: str,
                 now: float | None = None, nonce: str | None = None) -> SignedRequest:
    """Build and sign an owner request (fresh random nonce, current time)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
    ts_ms = int(round((time.time() if now is None else now) * 1000))
    req = SignedRequest(action, dict(params), identity.user_id, nonce or os.urandom(NONCE_BYTES).hex(), ts_ms,
                        audience)
    sig = identity.sign(req.payload())  # also validates params are canonical-encodable
    return SignedRequest(req.action, req.params, req.signer, req.nonce, req.ts_ms, req.audience, sig)
