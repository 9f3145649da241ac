"""The hash-chained audit log format and the cross-server chain check (client and servers).

Entry ``n`` stores ``hash_n = SHA-256(canonical JSON of {server, seq, ts_ms, event, actor,
subject, ref, detail, prev: hash_{n-1}})``; the first entry's ``prev`` is 64 zeros. So
editing, deleting or reordering any line breaks the chain at that line (or the next),
and :func:`verify_chain` names the first bad entry.

What one log cannot show (a consistently rewritten chain, a truncated tail) shows up in
:func:`compare_chains`: the servers log the same logical events (same ``event``,
``actor``, ``subject``, ``ref``: the signed request id or search session id), so a
server whose log lacks, adds or alters events the other two agree on is named.
The servers' store of these entries is ``servers.audit.AuditLog``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GENESIS = "0" * 64


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
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["server"]), int(d["seq"]), int(d["ts_ms"]), str(d["event"]), str(d["actor"]),
                   str(d["subject"]), str(d["ref"]), dict(d["detail"]), str(d["prev"]), str(d["hash"]))

    def logical(self) -> tuple[str, str, str, str, str]:
        """What all three servers should agree on (no server id, time or hashes)."""
        return (self.event, self.actor, self.subject, self.ref, canonical(self.detail))


def canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(server: int, seq: int, ts_ms: int, event: str, actor: str, subject: str, ref: str,
               detail: Mapping[str, Any], prev: str) -> str:
    """SHA-256 (hex) of an entry's canonical content including the previous hash."""
    body = {"server": server, "seq": seq, "ts_ms": ts_ms, "event": event, "actor": actor, "subject": subject,
            "ref": ref, "detail": dict(detail), "prev": prev}
    return hashlib.sha256(b"trivault/v1/audit\x00" + canonical(body).encode()).hexdigest()


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
            return ChainReport(
                False, len(entries), e.seq, f"entry {e.seq} claims server {e.server}, not {server}", prev
            )
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
