"""The owner's audit: the three servers' views merged, cross-checked, filtered, paged; trace look-up.

Each server returns its chain as this user may see it (``servers.owner_reads``): full entries
for the user's own actions and for everything touching the user's collections (searches,
retrievals with outcome, refusals, grants, revocations, uploads, deletions, name look-ups),
the rest redacted. :func:`owner_audit` verifies every chain end to end
(``wire.audit.compare_chains``: edits, deletions, reordering, and events one server lacks or
adds are named) and merges the visible entries into one list of logical events, each with
the servers that logged it (``wire.audit.merge_entries``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wire.audit import Divergence, MergedEvent, compare_chains, merge_entries

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class OwnerAudit:
    """Merged events (oldest first), the cross-server check, and which servers answered."""

    events: list[MergedEvent]
    divergence: Divergence
    servers: list[int]

    @property
    def ok(self) -> bool:
        """All three servers answered, every chain verifies, and they logged the same events."""
        return self.divergence.ok and len(self.servers) == 3

    def recipients(self, image_id: int) -> list[str]:
        """Users an image (either copy) was released to, first release first (trace candidates)."""
        out: list[str] = []
        for e in self.events:
            if e.event == "retrieve" and image_of(e) == int(image_id) and e.detail.get("outcome") not in (
                    None, "NOTHING") and e.actor not in out:
                out.append(e.actor)
        return out

    def users(self) -> dict[str, dict[str, str]]:
        """User id -> attributes the owner attested at registration (from the register events)."""
        return {e.subject: dict(e.detail.get("attributes") or {}) for e in self.events if e.event == "register"}


def owner_audit(exports: Mapping[int, Iterable[Mapping[str, Any]]]) -> OwnerAudit:
    """Cross-check and merge the servers' exported views."""
    exports = {s: list(es) for s, es in exports.items()}
    return OwnerAudit(merge_entries(exports), compare_chains(exports), sorted(exports))


def parse_since(text: str, now: float | None = None) -> float:
    """``30m``, ``2h``, ``7d`` (that long ago) or an ISO date/time -> epoch seconds; ValueError otherwise."""
    t = text.strip()
    if t[:-1].isdigit() and t[-1:] in UNITS:
        return (time.time() if now is None else now) - int(t[:-1]) * UNITS[t[-1]]
    return datetime.fromisoformat(t).timestamp()


def image_of(e: MergedEvent) -> int | None:
    """The image an event is about, if one."""
    if e.event == "retrieve" and e.subject.lstrip("-").isdigit():
        return int(e.subject)
    img = e.detail.get("image")
    return None if img is None else int(img)


def select(events: Sequence[MergedEvent], user: str | None = None, image: int | None = None,
           since: float | None = None) -> list[MergedEvent]:
    """Events by or about ``user`` (actor or subject), about ``image``, at or after ``since`` (epoch s)."""
    out = []
    for e in events:
        if user is not None and user not in (e.actor, e.subject):
            continue
        if image is not None and image_of(e) != image and image not in (e.detail.get("images") or []):
            continue
        if since is not None and e.ts_ms < since * 1000:
            continue
        out.append(e)
    return out


def page(events: Sequence[MergedEvent], limit: int, number: int) -> tuple[list[MergedEvent], int]:
    """Page ``number`` (1 = newest) of ``limit`` events, newest first, and the number of pages."""
    if limit < 1 or number < 1:
        raise ValueError("--limit and --page must be at least 1")
    newest = list(reversed(events))
    pages = max(1, -(-len(newest) // limit))
    return newest[(number - 1) * limit:number * limit], pages


def display_name(user_id: str, attributes: Mapping[str, str] | None) -> str:
    """``name (role, organisation)`` from the attested attributes, else the user id."""
    a = dict(attributes or {})
    who = a.get("name") or user_id
    extra = ", ".join(a[k] for k in ("role", "organisation") if a.get(k))
    return f"{who} ({extra})" if extra else who


@dataclass
class TraceMatch:
    """Whom a leaked copy was delivered to: id, attested attributes, and the matching retrievals."""

    recipient: str
    attributes: dict[str, str]
    retrievals: list[MergedEvent]
    registered: bool

    @property
    def name(self) -> str:
        """The recipient's registered name (see :func:`display_name`)."""
        return display_name(self.recipient, self.attributes)


def trace_lookup(view: OwnerAudit, recipient: str, image: int | None = None) -> TraceMatch:
    """The recipient's registration and released retrievals (of ``image`` if known), newest first."""
    users = view.users()
    hits = [e for e in view.events if e.event == "retrieve" and e.actor == recipient
            and e.detail.get("outcome") not in (None, "NOTHING") and (image is None or image_of(e) == image)]
    return TraceMatch(recipient, users.get(recipient, {}), list(reversed(hits)), recipient in users)
