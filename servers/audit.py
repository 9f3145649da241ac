"""Append-only, hash-chained audit log per server (SQLite tables prefixed ``audit_``).

The entry format, chain hashes and the cross-server check (``verify_chain``,
``compare_chains``) are in ``wire.audit`` (clients verify the exported chains too).
SQLite triggers refuse UPDATE and DELETE as a guard against mistakes; someone with
write access to the file can bypass them, which is why the chain is verified and
compared across the three servers.

Privacy: a search entry records requester, time, ``k`` and collection, never the query
(``detail`` keys are restricted per event by ``ALLOWED_DETAIL``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wire.audit import GENESIS, AuditEntry, ChainReport, canonical, entry_hash, verify_chain

from .db import Database

ALLOWED_DETAIL: dict[str, frozenset[str]] = {
    "register": frozenset({"attributes"}),
    "upload": frozenset({"n_images", "collection", "bytes"}),
    "grant": frozenset({"outcome", "expires", "purposes", "collection", "image"}),
    "revoke": frozenset({"collection", "image"}),
    "policy": frozenset({"collection", "image", "version"}),
    "delete": frozenset({"images", "collection"}),
    "search": frozenset({"k", "collection", "allowed"}),
    "retrieve": frozenset({"outcome", "kind"}),
    "reject": frozenset({"reason", "action"}),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, event TEXT NOT NULL,
    actor TEXT NOT NULL, subject TEXT NOT NULL, ref TEXT NOT NULL, detail TEXT NOT NULL, prev TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


class AuditError(ValueError):
    """An audit entry that may not be written (unknown event, disallowed detail)."""


class AuditLog:
    """One server's audit log; :meth:`append` is serialised by a lock and one SQLite transaction."""

    def __init__(self, db_path: str | Path, server_id: int, clock: Callable[[], float] = time.time) -> None:
        self.server_id = int(server_id)
        self.db = Database(db_path, _SCHEMA)
        self._clock = clock

    def append(self, event: str, actor: str, subject: str = "", ref: str = "", **detail: Any) -> AuditEntry:
        """Append one entry (ids, outcomes, ``k`` only: never query content, keys or pixels)."""
        allowed = ALLOWED_DETAIL.get(event)
        if allowed is None:
            raise AuditError(f"unknown audit event {event!r}; expected one of {sorted(ALLOWED_DETAIL)}")
        extra = set(detail) - allowed
        if extra:
            raise AuditError(f"{event} entries may not record {sorted(extra)} (allowed: {sorted(allowed)})")
        detail = json.loads(canonical(detail))  # normalise (tuples -> lists) so the hash is reproducible
        with self.db.transaction() as cur:
            row = cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            ts_ms = int(self._clock() * 1000)
            h = entry_hash(self.server_id, seq, ts_ms, event, actor, subject, ref, detail, prev)
            cur.execute("INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?)",
                        (seq, ts_ms, event, actor, subject, ref, canonical(detail), prev, h))
        return AuditEntry(self.server_id, seq, ts_ms, event, actor, subject, ref, detail, prev, h)

    def entries(self, actor: str | None = None, subject: str | None = None) -> list[AuditEntry]:
        """All entries in order (optionally filtered; filtered lists are not chain-verifiable)."""
        q, args = "SELECT seq, ts_ms, event, actor, subject, ref, detail, prev, hash FROM audit_log", []
        cond = []
        if actor is not None:
            cond.append("actor=?")
            args.append(actor)
        if subject is not None:
            cond.append("subject=?")
            args.append(subject)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        rows = self.db.all(q + " ORDER BY seq", args)
        return [AuditEntry(self.server_id, r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
                for r in rows]

    def export(self) -> list[dict[str, Any]]:
        """The whole chain as JSON-ready dicts (what a server returns for ``trivault audit``)."""
        return [e.to_dict() for e in self.entries()]

    def verify(self) -> ChainReport:
        """Verify this server's stored chain."""
        return verify_chain(self.entries(), self.server_id)

    def head(self) -> tuple[int, str]:
        """(last seq, last hash): an anchor the owner can keep to detect later rewrites."""
        row = self.db.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def close(self) -> None:
        """Close the database."""
        self.db.close()
