"""The hash-chained audit log format and the cross-server chain check (client and servers).

Entry ``n`` stores ``hash_n = SHA-256(digest_n || prev)`` with ``digest_n = SHA-256(canonical
JSON of {server, seq, ts_ms, event, actor, subject, ref, detail})`` and ``prev = hash_{n-1}``
(the first entry's ``prev`` is 64 zeros). So editing, deleting or reordering any line breaks
the chain at that line (or the next), and :func:`verify_chain` names the first bad entry.

Redaction: a server shows a user only the entries that touch the user (``servers.audit``);
every other entry is sent *redacted* (:func:`redact`: seq, digest, prev, hash; no content, no
time). The chain stays verifiable end to end, because a redacted entry's hash is recomputed
from its digest and link, so a server cannot rewrite a visible entry and patch the chain
behind it. The digest covers the entry's ref (a random request nonce or session id), so it
cannot be inverted by guessing.

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
# Refusals are one server's observation of a request that may have reached only some servers
# (a client that stops after the first refusal, or probes one server): shown, never compared.
PER_SERVER_EVENTS = frozenset({"reject"})


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
    digest: str = ""  # set only on a redacted entry (whose content is withheld)

    @property
    def redacted(self) -> bool:
        """True for an entry shown as seq, digest and links only (:func:`redact`)."""
        return bool(self.digest)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the exported form; a redacted entry carries no content)."""
        if self.redacted:
            return {"server": self.server, "seq": self.seq, "redacted": True, "digest": self.digest,
                    "prev": self.prev, "hash": self.hash}
        d = {**asdict(self), "detail": dict(self.detail)}
        del d["digest"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEntry:
        """Inverse of :meth:`to_dict`."""
        if d.get("redacted"):
            return cls(int(d["server"]), int(d["seq"]), 0, "", "", "", "", {}, str(d["prev"]), str(d["hash"]),
                       str(d["digest"]))
        return cls(int(d["server"]), int(d["seq"]), int(d["ts_ms"]), str(d["event"]), str(d["actor"]),
                   str(d["subject"]), str(d["ref"]), dict(d["detail"]), str(d["prev"]), str(d["hash"]))

    def content_digest(self) -> str:
        """The digest of this entry's content (the stored one if redacted)."""
        if self.redacted:
            return self.digest
        return entry_digest(self.server, self.seq, self.ts_ms, self.event, self.actor, self.subject, self.ref,
                            self.detail)

    def logical(self) -> tuple[str, str, str, str, str]:
        """What all three servers should agree on (no server id, time or hashes)."""
        return (self.event, self.actor, self.subject, self.ref, canonical(self.detail))


def canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_digest(server: int, seq: int, ts_ms: int, event: str, actor: str, subject: str, ref: str,
                 detail: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an entry's canonical content (without the link)."""
    body = {"server": server, "seq": seq, "ts_ms": ts_ms, "event": event, "actor": actor, "subject": subject,
            "ref": ref, "detail": dict(detail)}
    return hashlib.sha256(b"trivault/v2/audit-entry\x00" + canonical(body).encode()).hexdigest()


def link_hash(digest: str, prev: str) -> str:
    """The chain hash of an entry: SHA-256 of its content digest and the previous hash."""
    return hashlib.sha256(b"trivault/v2/audit-link\x00" + bytes.fromhex(digest) + bytes.fromhex(prev)).hexdigest()


def entry_hash(server: int, seq: int, ts_ms: int, event: str, actor: str, subject: str, ref: str,
               detail: Mapping[str, Any], prev: str) -> str:
    """SHA-256 (hex) chain hash of an entry's content and the previous hash."""
    return link_hash(entry_digest(server, seq, ts_ms, event, actor, subject, ref, detail), prev)


def legacy_hash(e: AuditEntry) -> str:
    """The v1 chain hash (content and link in one SHA-256) of logs written before redaction:
    such entries still verify when shown in full (a redacted one needs the v2 form)."""
    body = {"server": e.server, "seq": e.seq, "ts_ms": e.ts_ms, "event": e.event, "actor": e.actor,
            "subject": e.subject, "ref": e.ref, "detail": dict(e.detail), "prev": e.prev}
    return hashlib.sha256(b"trivault/v1/audit\x00" + canonical(body).encode()).hexdigest()


def redact(entry: AuditEntry) -> AuditEntry:
    """The entry with its content withheld (seq, digest and links stay verifiable)."""
    return AuditEntry(entry.server, entry.seq, 0, "", "", "", "", {}, entry.prev, entry.hash,
                      entry.content_digest())


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
        try:
            h = link_hash(e.content_digest(), e.prev)
        except ValueError:  # a digest or link that is not hex
            h = ""
        if h != e.hash and not e.redacted and legacy_hash(e) == e.hash:
            h = e.hash
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
    with two or three exports (a server that did not answer is simply absent). Redacted
    entries count for the chain check only (a server that redacts an entry the other two
    show is *missing* it); so do refusals (``PER_SERVER_EVENTS``).
    """
    chains: dict[int, list[AuditEntry]] = {
        s: [e if isinstance(e, AuditEntry) else AuditEntry.from_dict(e) for e in es] for s, es in exports.items()
    }
    div = Divergence({s: verify_chain(es, s) for s, es in chains.items()})
    counts = {s: Counter(e.logical() for e in es if not e.redacted and e.event not in PER_SERVER_EVENTS)
              for s, es in chains.items()}
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


@dataclass(frozen=True)
class MergedEvent:
    """One logical event as the servers logged it: content, earliest time, servers that logged it."""

    event: str
    actor: str
    subject: str
    ref: str
    detail: Mapping[str, Any]
    ts_ms: int
    servers: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**asdict(self), "detail": dict(self.detail), "servers": list(self.servers)}


def merge_entries(exports: Mapping[int, Iterable[AuditEntry | Mapping[str, Any]]]) -> list[MergedEvent]:
    """The servers' visible entries merged into one list of logical events, oldest first.

    The n-th occurrence of an event on one server is matched with the n-th on the others;
    ``servers`` names who logged it (fewer than all answering servers: see :func:`compare_chains`).
    """
    seen: dict[tuple, list[AuditEntry]] = {}
    for _server, es in sorted(exports.items()):
        count: Counter = Counter()
        for raw in es:
            e = raw if isinstance(raw, AuditEntry) else AuditEntry.from_dict(raw)
            if e.redacted:
                continue
            key = (e.logical(), count[e.logical()])
            count[e.logical()] += 1
            seen.setdefault(key, []).append(e)
    out = [MergedEvent(g[0].event, g[0].actor, g[0].subject, g[0].ref, dict(g[0].detail), min(e.ts_ms for e in g),
                       tuple(sorted(e.server for e in g))) for g in seen.values()]
    return sorted(out, key=lambda m: (m.ts_ms, m.event, m.ref))
