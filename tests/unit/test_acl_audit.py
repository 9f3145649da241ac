"""Hash-chained audit log: append-only, edit/delete/reorder detection, cross-server comparison."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from servers.audit import AuditError, AuditLog
from wire.audit import GENESIS, compare_chains, verify_chain

OWNER, BOB = "o" * 32, "b" * 32


def _events(log: AuditLog) -> None:
    log.append("grant", OWNER, subject=BOB, ref=f"{OWNER}:n1", outcome="ORIGINAL", collection="scans")
    log.append("search", BOB, subject="scans", ref="session-1", k=5, collection="scans")
    log.append("retrieve", BOB, subject="7", ref="session-2", outcome="ORIGINAL", kind="orig")
    log.append("revoke", OWNER, subject=BOB, ref=f"{OWNER}:n2", collection="scans")
    log.append("retrieve", BOB, subject="7", ref="session-3", outcome="NOTHING", kind="none")


def _three(tmp_path):
    logs = [AuditLog(tmp_path / f"s{i}.db", i) for i in range(3)]
    for log in logs:
        _events(log)
    return logs


def test_chain_verifies_and_is_append_only(tmp_path):
    log = AuditLog(tmp_path / "s0.db", 0)
    assert log.head() == (0, GENESIS) and log.verify().ok
    _events(log)
    rep = log.verify()
    assert rep.ok and rep.entries == 5 and rep.head == log.head()[1]
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4, 5]
    assert [e.event for e in log.entries(actor=BOB)] == ["search", "retrieve", "retrieve"]
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log.db.execute("UPDATE audit_log SET actor='x' WHERE seq=2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log.db.execute("DELETE FROM audit_log WHERE seq=5")
    log.close()
    again = AuditLog(tmp_path / "s0.db", 0)  # restart continues the chain
    again.append("search", BOB, subject="scans", ref="session-4", k=3)
    assert again.verify().ok and again.head()[0] == 6


def test_search_entries_never_hold_query_content(tmp_path):
    log = AuditLog(tmp_path / "s0.db", 0)
    with pytest.raises(AuditError, match="may not record"):
        log.append("search", BOB, subject="scans", ref="s", k=5, query="pixels...")
    with pytest.raises(AuditError, match="unknown audit event"):
        log.append("peek", BOB)
    assert log.entries() == []


def test_edited_line_in_the_database_is_named(tmp_path):
    log = AuditLog(tmp_path / "s0.db", 0)
    _events(log)
    log.close()
    db = sqlite3.connect(tmp_path / "s0.db")  # an attacker with file access drops the guard
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("""UPDATE audit_log SET detail='{"kind":"orig","outcome":"NOTHING"}' WHERE seq=3""")
    db.commit()
    db.close()
    rep = AuditLog(tmp_path / "s0.db", 0).verify()
    assert not rep.ok and rep.first_bad == 3 and "edited" in rep.reason


def test_deleted_reordered_and_relinked_lines_detected(tmp_path):
    log = AuditLog(tmp_path / "s0.db", 0)
    _events(log)
    es = log.entries()
    deleted = es[:2] + es[3:]
    assert verify_chain(deleted).first_bad == 4 and "missing" in verify_chain(deleted).reason
    swapped = es[:1] + [es[2], es[1]] + es[3:]
    assert verify_chain(swapped).first_bad == 3
    # renumbering after a deletion: the prev link breaks at the renumbered line
    renum = es[:2] + [replace(e, seq=e.seq - 1) for e in es[3:]]
    rep = verify_chain(renum)
    assert not rep.ok and rep.first_bad == 3 and "link" in rep.reason
    # exported form round-trips, and a claimed server id is checked
    from wire.audit import AuditEntry
    assert verify_chain([AuditEntry.from_dict(d) for d in log.export()], 0).ok
    assert verify_chain(es, 1).first_bad == 1


def test_cross_server_comparison(tmp_path):
    logs = _three(tmp_path)
    div = compare_chains({i: log.export() for i, log in enumerate(logs)})
    assert div.ok and div.suspects() == [] and "agree" in div.summary()

    # server 2 rewrites history consistently: its own chain verifies, the comparison does not
    logs2 = [AuditLog(tmp_path / f"t{i}.db", i) for i in range(3)]
    for log in logs2[:2]:
        _events(log)
    liar = logs2[2]
    liar.append("grant", OWNER, subject=BOB, ref=f"{OWNER}:n1", outcome="ORIGINAL", collection="scans")
    liar.append("search", BOB, subject="scans", ref="session-1", k=5, collection="scans")
    liar.append("retrieve", BOB, subject="7", ref="session-2", outcome="DEIDENTIFIED", kind="deid")  # altered
    # ... and drops the revocation and the last retrieval
    assert liar.verify().ok
    div = compare_chains({i: log.export() for i, log in enumerate(logs2)})
    assert not div.ok and div.suspects() == [2]
    text = div.summary()
    assert "server 2: missing revoke" in text and "server 2: unmatched retrieve" in text
    assert len(div.missing[2]) == 3 and not div.missing[0] and not div.missing[1]

    # a broken chain on server 1 is reported with its first bad entry
    ex = [log.export() for log in logs]
    ex[1][1]["detail"]["k"] = 50
    div = compare_chains(dict(enumerate(ex)))
    assert div.suspects() == [1] and "server 1: chain broken at entry 2" in div.summary()


def test_redacted_views_verify_and_still_catch_rewrites(tmp_path):
    from wire.audit import AuditEntry, link_hash, merge_entries, redact

    logs = _three(tmp_path)
    coll = {7: "scans"}.get
    # bob's view: his own entries in full, the owner's grant and revoke redacted (content and time withheld)
    views = {i: [e.to_dict() for e in log.page_for(BOB, lambda c: False, coll)] for i, log in enumerate(logs)}
    red = [e for e in views[0] if e.get("redacted")]
    assert len(red) == 2 and all(set(e) == {"server", "seq", "redacted", "digest", "prev", "hash"} for e in red)
    assert compare_chains(views).ok and verify_chain([AuditEntry.from_dict(d) for d in views[0]], 0).ok
    # the owner of "scans" sees everything; the merged list has one event per logical entry, logged by all
    owner_views = {i: log.page_for(OWNER, lambda c: c == "scans", coll) for i, log in enumerate(logs)}
    merged = merge_entries(owner_views)
    assert len(merged) == 5 and all(m.servers == (0, 1, 2) for m in merged)
    # a server rewrites a visible entry and patches the link of the redacted one after it: caught
    es = logs[2].page_for(BOB, lambda c: False, coll)
    forged = replace(es[2], detail={"kind": "deid", "outcome": "DEIDENTIFIED"})
    forged = replace(forged, hash=link_hash(forged.content_digest(), forged.prev))
    patched = replace(es[3], prev=forged.hash)  # redacted: its hash covers digest and link
    rep = verify_chain(es[:2] + [forged, patched] + es[4:], 2)
    assert not rep.ok and rep.first_bad == 4
    # a server that redacts an entry the other two show is named as missing it
    views[1] = [redact(AuditEntry.from_dict(d)).to_dict() if d.get("event") == "search" else d for d in views[1]]
    div = compare_chains(views)
    assert div.suspects() == [1] and "server 1: missing search" in div.summary()


def test_logs_written_before_redaction_still_verify_in_full():
    from wire.audit import AuditEntry, entry_hash, legacy_hash

    old = AuditEntry(0, 1, 5, "grant", OWNER, BOB, "r1", {"collection": "scans"}, GENESIS, "")
    old = replace(old, hash=legacy_hash(old))  # the v1 chain hash of an existing log
    new = AuditEntry(0, 2, 6, "search", BOB, "scans", "s1", {"k": 1}, old.hash, "")
    new = replace(new, hash=entry_hash(0, 2, 6, "search", BOB, "scans", "s1", {"k": 1}, old.hash))
    assert verify_chain([old, new], 0).ok
    assert verify_chain([replace(old, detail={"collection": "other"}), new], 0).first_bad == 1
