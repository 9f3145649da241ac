"""Append-only, hash-chained audit log per server (SQLite tables prefixed ``audit_``).

Entry ``n`` stores ``hash_n = SHA-256(canonical JSON of {server, seq, ts_ms, event, actor,
subject, ref, detail, prev: hash_{n-1}})``; the first entry's ``prev`` is 64 zeros. So
editing, deleting or reordering any line breaks the chain at that line (or the next),
and :func:`verify_chain` names the first bad entry. SQLite triggers refuse UPDATE and
DELETE as a guard against mistakes; someone with write access to the file can bypass
them, which is why the chain is verified and compared across the three servers.

What one log cannot show (a consistently rewritten chain, a truncated tail) shows up in
:func:`compare_chains`: the servers log the same logical events (same ``event``,
``actor``, ``subject``, ``ref``: the signed request id or search session id), so a
server whose log lacks, adds or alters events the other two agree on is named.

Privacy: a search entry records requester, time, ``k`` and collection, never the query
(``detail`` keys are restricted per event by ``ALLOWED_DETAIL``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

GENESIS = "0" * 64
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


@dataclass(frozen=True)
class AuditEntry:
    """One log line and its chain hashes."""

    server: int
    seq: int
    ts_ms: int
    event: str
    actor: str
    subject: str
    ref: str
    detail: Mapping[str, Any]
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the exported form)."""
        return {**asdict(self), "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AuditEntry":
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["server"]), int(d["seq"]), int(d["ts_ms"]), str(d["event"]), str(d["actor"]),
                   str(d["subject"]), str(d["ref"]), dict(d["detail"]), str(d["prev"]), str(d["hash"]))

    def logical(self) -> tuple[str, str, str, str, str]:
        """What all three servers should agree on (no server id, time or hashes)."""
        return (self.event, self.actor, self.subject, self.ref, _canon(self.detail))


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(server: int, seq: int, ts_ms: int, event: str, actor: str, subject: str, ref: str,
               detail: Mapping[str, Any], prev: str) -> str:
    """SHA-256 (hex) of an entry's canonical content including the previous hash."""
    body = {"server": server, "seq": seq, "ts_ms": ts_ms, "event": event, "actor": actor, "subject": subject,
            "ref": ref, "detail": dict(detail), "prev": prev}
    return hashlib.sha256(b"trivault/v1/audit\x00" + _canon(body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """Result of :func:`verify_chain`: ``ok`` or the first bad sequence number and why."""

    ok: bool
    entries: int
    first_bad: int | None = None
    reason: str = ""
    head: str = GENESIS


def verify_chain(entries: Sequence[AuditEntry], server: int | None = None) -> ChainReport:
    """Check sequence numbers, server ids, prev links and hashes; name the first bad entry."""
    prev, expect_seq = GENESIS, 1
    for e in entries:
        if server is not None and e.server != server:
            return ChainReport(False, len(entries), e.seq, f"entry {e.seq} claims server {e.server}, not {server}", prev)
        if e.seq != expect_seq:
            what = "missing or deleted" if e.seq > expect_seq else "out of order or duplicated"
            return ChainReport(False, len(entries), e.seq,
                               f"entry {e.seq} follows {expect_seq - 1}: entries {what}", prev)
        if e.prev != prev:
            return ChainReport(False, len(entries), e.seq, f"entry {e.seq} does not link to the previous hash", prev)
        h = entry_hash(e.server, e.seq, e.ts_ms, e.event, e.actor, e.subject, e.ref, e.detail, e.prev)
        if h != e.hash:
            return ChainReport(False, len(entries), e.seq, f"entry {e.seq} was edited (hash mismatch)", prev)
        prev, expect_seq = e.hash, expect_seq + 1
    return ChainReport(True, len(entries), None, "", prev)


class AuditLog:
    """One server's audit log; :meth:`append` is serialised by a lock and one SQLite transaction."""

    def __init__(self, db_path: str | Path, server_id: int, clock: Callable[[], float] = time.time) -> None:
        self.server_id = int(server_id)
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    def append(self, event: str, actor: str, subject: str = "", ref: str = "", **detail: Any) -> AuditEntry:
        """Append one entry (ids, outcomes, ``k`` only: never query content, keys or pixels)."""
        allowed = ALLOWED_DETAIL.get(event)
        if allowed is None:
            raise AuditError(f"unknown audit event {event!r}; expected one of {sorted(ALLOWED_DETAIL)}")
        extra = set(detail) - allowed
        if extra:
            raise AuditError(f"{event} entries may not record {sorted(extra)} (allowed: {sorted(allowed)})")
        detail = json.loads(_canon(detail))  # normalise (tuples -> lists) so the hash is reproducible
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                ts_ms = int(self._clock() * 1000)
                h = entry_hash(self.server_id, seq, ts_ms, event, actor, subject, ref, detail, prev)
                cur.execute("INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?)",
                            (seq, ts_ms, event, actor, subject, ref, _canon(detail), prev, h))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
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
        rows = self._db.execute(q + " ORDER BY seq", args).fetchall()
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
        row = self._db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def close(self) -> None:
        """Close the database."""
        self._db.close()


@dataclass
class Divergence:
    """Cross-server comparison: chain reports, and events some servers lack or add."""

    chains: dict[int, ChainReport]
    missing: dict[int, list[tuple]] = field(default_factory=dict)
    extra: dict[int, list[tuple]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if every chain verifies and all servers logged the same events."""
        return all(c.ok for c in self.chains.values()) and not any(self.missing.values()) \
            and not any(self.extra.values())

    def suspects(self) -> list[int]:
        """Servers whose chain is broken or whose events disagree with the majority."""
        return sorted({s for s, c in self.chains.items() if not c.ok}
                      | {s for s, v in self.missing.items() if v} | {s for s, v in self.extra.items() if v})

    def summary(self) -> str:
        """Human-readable report (one line per problem)."""
        if self.ok:
            n = {s: c.entries for s, c in self.chains.items()}
            return f"all chains verify and agree ({n})"
        lines = [f"server {s}: chain broken at entry {c.first_bad}: {c.reason}"
                 for s, c in sorted(self.chains.items()) if not c.ok]
        for s, evs in sorted(self.missing.items()):
            lines += [f"server {s}: missing {ev[0]} by {ev[1]} on {ev[2]!r} (ref {ev[3]})" for ev in evs]
        for s, evs in sorted(self.extra.items()):
            lines += [f"server {s}: unmatched {ev[0]} by {ev[1]} on {ev[2]!r} (ref {ev[3]})" for ev in evs]
        return "\n".join(lines)


def compare_chains(exports: Mapping[int, Iterable[AuditEntry | Mapping[str, Any]]]) -> Divergence:
    """Verify each server's exported chain and report events not logged by a majority of servers.

    An event (``AuditEntry.logical``) seen by at least two servers but absent from a third
    is *missing* there; one seen by a single server while others answered is *extra*. Works
    with two or three exports (a server that did not answer is simply absent).
    """
    chains: dict[int, list[AuditEntry]] = {
        s: [e if isinstance(e, AuditEntry) else AuditEntry.from_dict(e) for e in es] for s, es in exports.items()
    }
    div = Divergence({s: verify_chain(es, s) for s, es in chains.items()})
    counts = {s: Counter(e.logical() for e in es) for s, es in chains.items()}
    everything: set[tuple] = set().union(*counts.values()) if counts else set()
    quorum = 2 if len(chains) >= 2 else 1
    for s in chains:
        div.missing[s], div.extra[s] = [], []
    for ev in sorted(everything):
        have = {s: counts[s][ev] for s in chains}
        majority = sorted(have.values())[-quorum] if len(have) >= quorum else 0
        for s, n in have.items():
            if n < majority:
                div.missing[s].append(ev)
            elif n > majority:
                div.extra[s].append(ev)
    return div
