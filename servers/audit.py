"""Append-only, hash-chained audit log per server (SQLite tables prefixed ``audit_``).

The entry format, chain hashes and the cross-server check (``verify_chain``,
``compare_chains``) are in ``wire.audit`` (clients verify the exported chains too).
SQLite triggers refuse UPDATE and DELETE as a guard against mistakes; someone with
write access to the file can bypass them, which is why the chain is verified and
compared across the three servers.

Privacy: a search entry records requester, time, ``k`` and collection, never the query
(``detail`` keys are restricted per event by ``ALLOWED_DETAIL``).

Who reads what (:meth:`AuditLog.page_for`): a user sees in full the entries they made
(``actor``) and every entry that touches a collection they own (:func:`touched_collection`:
uploads, deletions, searches, retrievals with their outcome, name look-ups, grants,
revocations, policies, and refusals that name their target); the deployment owner also
sees the entries of no collection (registrations, refusals of unsigned requests). Every
other entry is sent redacted (``wire.audit.redact``), so the chain still verifies and nothing of another owner
is shown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wire.audit import GENESIS, AuditEntry, ChainReport, canonical, entry_hash, redact, verify_chain

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
    "reject": frozenset({"reason", "action", "collection", "image"}),
    "names": frozenset({"collection", "image", "n_images"}),
}
MAX_PAGE = 2000  # entries per audit page (a page is one gRPC reply)

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

    def page(self, after: int = 0, limit: int = MAX_PAGE) -> list[AuditEntry]:
        """Entries with ``seq > after``, at most ``limit`` (capped at ``MAX_PAGE``), in order."""
        rows = self.db.all("SELECT seq, ts_ms, event, actor, subject, ref, detail, prev, hash FROM audit_log "
                           "WHERE seq > ? ORDER BY seq LIMIT ?", (int(after), max(1, min(int(limit), MAX_PAGE))))
        return [AuditEntry(self.server_id, r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
                for r in rows]

    def deleted_images(self) -> dict[int, str]:
        """Image id -> collection of every deletion logged (deleted images have no policy row)."""
        out: dict[int, str] = {}
        for (detail,) in self.db.all("SELECT detail FROM audit_log WHERE event='delete'"):
            d = json.loads(detail)
            out.update({int(i): str(d.get("collection", "")) for i in d.get("images", [])})
        return out

    def page_for(self, user: str, owned: Callable[[str], bool], collection_of: Callable[[int], str | None],
                 after: int = 0, limit: int = MAX_PAGE, admin: bool = False) -> list[AuditEntry]:
        """One page as ``user`` may see it: their own entries and those touching a collection
        they own in full (``owned(collection)``), every other entry redacted. The deployment
        owner (``admin``) also sees the entries that touch no collection (registrations,
        refusals of unsigned or forged requests)."""
        deleted: dict[int, str] | None = None

        def coll(image_id: int) -> str | None:
            nonlocal deleted
            c = collection_of(image_id)
            if c is None:
                deleted = self.deleted_images() if deleted is None else deleted
                c = deleted.get(image_id)
            return c

        out = []
        for e in self.page(after, limit):
            c = touched_collection(e, coll)
            full = e.actor == user or (owned(c) if c is not None else admin)
            out.append(e if full else redact(e))
        return out

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


def touched_collection(entry: AuditEntry, collection_of: Callable[[int], str | None]) -> str | None:
    """The collection an entry is about (None for registrations and untargeted refusals)."""
    d = entry.detail
    if entry.event in ("upload", "delete", "search"):
        return str(d.get("collection") or entry.subject)
    if entry.event in ("grant", "revoke", "policy", "names", "reject"):
        if d.get("collection"):
            return str(d["collection"])
        return None if d.get("image") is None else collection_of(int(d["image"]))
    if entry.event == "retrieve" and entry.subject.lstrip("-").isdigit():
        return collection_of(int(entry.subject))
    return None
