"""Owner-signed two-phase commit: what a server checks at prepare, commit, abort and recovery.

The owner signs, per transaction, the list of the three servers' bundle digests
(``wire.txn_digest``): in its ``upload``/``delete`` request (prepare) and again in a
``commit`` or ``abort`` request ``{txn, digests}``. A server

* at **prepare** stages only a bundle whose digest is entry ``i`` of the signed list
  (:func:`check_prepared_digest`), and remembers signer and digests with the staged meta;
* at **commit/abort** applies only a fresh, first-use request (``RequestVerifier``) from
  the same signer naming the same transaction and digests (:func:`check_decision`);
  anything else is ``PERMISSION_DENIED`` and changes nothing;
* keeps the applied signed decision (:class:`TxnDecisions`) and hands it to peers in
  ``TxnStatus``; in **recovery** it commits a pending transaction only on such evidence
  (:func:`valid_commit_evidence`: signature, signer, transaction and digests; no freshness
  or nonce check, the evidence is old by nature). So no server, and nothing holding a
  client certificate, can commit an upload the owner did not commit, or abort it early.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from wire.bundle import Bundle
from wire.txn_digest import bundle_digest

from .db import Database
from .request_auth import RequestRejected, RequestVerifier, VerifiedRequest
from .storage import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS txn_decisions (txn TEXT PRIMARY KEY, action TEXT NOT NULL, auth BLOB NOT NULL);
"""


class TxnAuthError(PermissionError):
    """A prepare, commit or abort that the owner did not sign for this transaction/content."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"request rejected ({reason}): {message}")
        self.reason = reason


def _digests(params: Mapping[str, Any]) -> list[str]:
    d = params.get("digests")
    if not isinstance(d, list) or len(d) != 3 or not all(isinstance(x, str) and len(x) == 64 for x in d):
        raise TxnAuthError("mismatch", "the signed request carries no list of the three bundle digests")
    return list(d)


def check_prepared_digest(req: VerifiedRequest, server_id: int, bundle: Bundle) -> list[str]:
    """The signed digests, if entry ``server_id`` is this bundle's digest; else TxnAuthError."""
    digests = _digests(req.params)
    if digests[server_id] != bundle_digest(bundle):
        raise TxnAuthError("mismatch", f"the bundle received by server {server_id} is not the one the owner signed")
    return digests


def prepared_meta(store: Store, txn_id: str) -> dict[str, Any]:
    """The staged meta of a transaction ({} if unknown or aborted before prepare)."""
    row = store.db.one("SELECT meta FROM txns WHERE id=?", (txn_id,))
    return json.loads(row[0]) if row else {}


def _match(req: VerifiedRequest, store: Store, txn_id: str) -> None:
    if req.params.get("txn") != txn_id:
        raise TxnAuthError("mismatch", "the signed decision is for another transaction")
    meta = prepared_meta(store, txn_id)
    signer = (meta.get("acl") or {}).get("signer")
    if signer is not None and req.signer != signer:
        raise TxnAuthError("not-owner", "only the signer of the upload may commit or abort it")
    if "digests" in meta and _digests(req.params) != meta["digests"]:
        raise TxnAuthError("mismatch", "the signed digests differ from the prepared transaction's")


Verify = Callable[[bytes, str, str], VerifiedRequest]  # ``Acl.verify``: audits a rejection, then re-raises


def check_decision(verify: Verify, store: Store, auth: bytes, action: str, txn_id: str, who: str) -> VerifiedRequest:
    """Verify a signed ``commit``/``abort`` (``verify`` = ``Acl.verify``: fresh, first use) and
    match it to the prepared transaction. Raises ValueError (not a transaction id: checked
    first, as the id names a staging folder), RequestRejected or TxnAuthError."""
    try:
        uuid.UUID(txn_id)
    except ValueError:
        raise ValueError(f"transaction id {txn_id[:80]!r} is not a UUID") from None
    req = verify(auth, action, who)
    _match(req, store, txn_id)
    return req


def valid_commit_evidence(verifier: RequestVerifier, store: Store, txn_id: str, auth: bytes) -> bool:
    """Is ``auth`` the owner's signed commit of this prepared transaction (recovery)?"""
    if not auth:
        return False
    try:
        req = verifier.verify_evidence(auth, "commit")
        _match(req, store, txn_id)
    except (RequestRejected, TxnAuthError):
        return False
    return "digests" in prepared_meta(store, txn_id)


class TxnDecisions:
    """The signed decision each transaction was committed or aborted on (SQLite, durable)."""

    def __init__(self, path: str | Path) -> None:
        self.db = Database(path, _SCHEMA, durable=True)

    def record(self, txn_id: str, action: str, auth: bytes) -> None:
        """Remember the decision (the first one stays)."""
        self.db.execute("INSERT OR IGNORE INTO txn_decisions VALUES (?,?,?)", (txn_id, action, auth))

    def forget(self, txn_id: str, action: str) -> None:
        """Drop a decision that could not be applied (e.g. a commit of an aborted transaction)."""
        self.db.execute("DELETE FROM txn_decisions WHERE txn=? AND action=?", (txn_id, action))

    def get(self, txn_id: str, action: str = "commit") -> bytes:
        """The signed ``action`` applied to ``txn_id`` (b"" if none)."""
        row = self.db.one("SELECT auth FROM txn_decisions WHERE txn=? AND action=?", (txn_id, action))
        return bytes(row[0]) if row else b""

    def close(self) -> None:
        """Close the database."""
        self.db.close()
