"""Attribute-based access policies per collection or image, and their SQLite store.

Evaluation is a pure function :func:`evaluate` ``(policy, requester, now) -> Outcome``:

1. the policy's owner gets ``ORIGINAL``; a revoked user gets ``NOTHING`` (revocation wins);
2. ``base`` = the best outcome among matching *grant* rules, or, if none matches, the
   default: ``member_default`` (``DEIDENTIFIED``) for collection members, ``other_default``
   (``NOTHING``) for everyone else;
3. every matching *limit* rule caps the result at its outcome (a ``NOTHING`` limit is a deny).

A rule matches when its :class:`Condition` does: the user is listed (or no user list),
every attribute constraint holds (``role``, ``organisation``, ... from the owner-attested
registration; ``purpose`` from the request), and ``not_before <= now < expires``. An
expired grant simply stops matching. The order of rules does not matter.

Search permission (:func:`may_search`): owner yes, revoked no, members yes unless
``member_search`` is off, others only if a ``search`` condition matches.

An image's effective policy is its collection's policy (owner, defaults) plus the image's
own rules, members and revocations (:func:`merge`): an image policy widens with grant
rules and narrows with limit rules.
:class:`PolicyStore` keeps users, policies and image-to-collection assignments in SQLite
tables prefixed ``acl_``; it holds no cache, so a revocation applies to the next check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from .db import Database


class Outcome(IntEnum):
    """What a requester may receive for an image (ordered: more is better)."""

    NOTHING = 0
    DEIDENTIFIED = 1
    ORIGINAL = 2


class PolicyError(ValueError):
    """A malformed policy, rule or store request."""


@dataclass(frozen=True)
class Requester:
    """Who asks: user id, owner-attested attributes, and the purpose declared for this request."""

    user_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    purpose: str | None = None

    def attribute(self, name: str) -> str | None:
        """Value of attribute ``name`` (``purpose`` comes from the request)."""
        return self.purpose if name == "purpose" else self.attributes.get(name)


def _fs(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(str(v) for v in values)


@dataclass(frozen=True)
class Condition:
    """Who and when: user list (None = anyone), attribute constraints, validity window (epoch s)."""

    users: frozenset[str] | None = None
    attributes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    not_before: float | None = None
    expires: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _fs(self.users))
        object.__setattr__(self, "attributes", {str(k).lower(): frozenset(v) for k, v in self.attributes.items()})

    def matches(self, who: Requester, now: float) -> bool:
        """True if ``who`` satisfies every constraint at time ``now``."""
        if self.not_before is not None and now < self.not_before:
            return False
        if self.expires is not None and now >= self.expires:
            return False
        if self.users is not None and who.user_id not in self.users:
            return False
        return all(who.attribute(k) in allowed for k, allowed in self.attributes.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (sorted lists)."""
        return {"users": None if self.users is None else sorted(self.users),
                "attributes": {k: sorted(v) for k, v in sorted(self.attributes.items())},
                "not_before": self.not_before, "expires": self.expires}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        """Inverse of :meth:`to_dict`."""
        return cls(_fs(d.get("users")), {k: frozenset(v) for k, v in (d.get("attributes") or {}).items()},
                   d.get("not_before"), d.get("expires"))


@dataclass(frozen=True)
class Rule:
    """A grant (gives at least ``outcome``) or a limit (caps at ``outcome``) when ``when`` matches."""

    when: Condition
    outcome: Outcome
    limit: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"when": self.when.to_dict(), "outcome": self.outcome.name, "limit": self.limit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        """Inverse of :meth:`to_dict`."""
        return cls(Condition.from_dict(d["when"]), _outcome(d["outcome"]), bool(d.get("limit", False)))


def _outcome(v: Any) -> Outcome:
    try:
        return v if isinstance(v, Outcome) else Outcome[str(v).upper()]
    except KeyError:
        raise PolicyError(f"unknown outcome {v!r}; expected ORIGINAL, DEIDENTIFIED or NOTHING") from None


@dataclass(frozen=True)
class Policy:
    """A collection's (or image's) policy: owner, members, rules, search conditions, revocations."""

    owner: str
    members: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()
    search: tuple[Condition, ...] = ()
    revoked: frozenset[str] = frozenset()
    member_default: Outcome = Outcome.DEIDENTIFIED
    other_default: Outcome = Outcome.NOTHING
    member_search: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", frozenset(self.members))
        object.__setattr__(self, "revoked", frozenset(self.revoked))
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "search", tuple(self.search))

    # ---- grants and revocations (each returns a new policy) -------------------------
    def grant(self, user_id: str, outcome: Outcome | str = Outcome.ORIGINAL, expires: float | None = None,
              purposes: Iterable[str] | None = None, search: bool = True) -> Policy:
        """Give ``user_id`` at least ``outcome`` (until ``expires``, for ``purposes``); lifts a revocation."""
        attrs = {} if purposes is None else {"purpose": frozenset(purposes)}
        cond = Condition(frozenset({user_id}), attrs, None, expires)
        rules = self.rules + (Rule(cond, _outcome(outcome)),)
        return replace(self, rules=rules, search=self.search + ((cond,) if search else ()),
                       revoked=self.revoked - {user_id})

    def revoke(self, user_id: str) -> Policy:
        """Remove every grant and membership of ``user_id`` and deny it from now on."""
        keep = tuple(r for r in self.rules if r.when.users != frozenset({user_id}))
        search = tuple(c for c in self.search if c.users != frozenset({user_id}))
        return replace(self, members=self.members - {user_id}, rules=keep, search=search,
                       revoked=self.revoked | {user_id})

    # ---- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (deterministic order)."""
        return {"owner": self.owner, "members": sorted(self.members), "rules": [r.to_dict() for r in self.rules],
                "search": [c.to_dict() for c in self.search], "revoked": sorted(self.revoked),
                "member_default": self.member_default.name, "other_default": self.other_default.name,
                "member_search": self.member_search}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(str(d["owner"]), frozenset(d.get("members", ())),
                       tuple(Rule.from_dict(r) for r in d.get("rules", ())),
                       tuple(Condition.from_dict(c) for c in d.get("search", ())), frozenset(d.get("revoked", ())),
                       _outcome(d.get("member_default", "DEIDENTIFIED")), _outcome(d.get("other_default", "NOTHING")),
                       bool(d.get("member_search", True)))
        except (KeyError, TypeError) as e:
            raise PolicyError(f"malformed policy: {e}") from None

    def to_json(self) -> str:
        """Canonical JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


def evaluate(policy: Policy, who: Requester, now: float) -> Outcome:
    """Pure decision: what ``who`` may receive under ``policy`` at time ``now``."""
    if who.user_id == policy.owner:
        return Outcome.ORIGINAL
    if who.user_id in policy.revoked:
        return Outcome.NOTHING
    grants = [r.outcome for r in policy.rules if not r.limit and r.when.matches(who, now)]
    if grants:
        out = max(grants)
    else:
        out = policy.member_default if who.user_id in policy.members else policy.other_default
    for r in policy.rules:
        if r.limit and r.when.matches(who, now):
            out = min(out, r.outcome)
    return Outcome(out)


def may_search(policy: Policy, who: Requester, now: float) -> bool:
    """Pure decision: may ``who`` search the collection governed by ``policy`` at ``now``."""
    if who.user_id == policy.owner:
        return True
    if who.user_id in policy.revoked:
        return False
    if policy.member_search and who.user_id in policy.members:
        return True
    return any(c.matches(who, now) for c in policy.search)


def merge(collection: Policy, image: Policy | None) -> Policy:
    """Effective policy of an image: collection defaults; rules, members, revocations from both."""
    if image is None:
        return collection
    if image.owner != collection.owner:
        raise PolicyError("an image policy must have the same owner as its collection")
    return replace(collection, rules=collection.rules + image.rules, revoked=collection.revoked | image.revoked,
                   members=collection.members | image.members, search=collection.search + image.search)


# ---- store ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS acl_users (user_id TEXT PRIMARY KEY, sign_pub BLOB NOT NULL, kex_pub BLOB NOT NULL,
    attributes TEXT NOT NULL, registered_by TEXT NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS acl_policies (scope TEXT PRIMARY KEY, policy TEXT NOT NULL, version INTEGER NOT NULL,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS acl_images (image_id INTEGER PRIMARY KEY, collection TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class RegisteredUser:
    """A user registered by an owner: public keys and the attributes the owner attested."""

    user_id: str
    sign_pub: bytes
    kex_pub: bytes
    attributes: Mapping[str, str]
    registered_by: str


def collection_scope(name: str) -> str:
    """Store key of a collection policy."""
    return f"collection:{name}"


def image_scope(image_id: int) -> str:
    """Store key of an image policy."""
    return f"image:{int(image_id)}"


class PolicyStore:
    """Users, policies, image assignments and the deployment's admin in SQLite (``acl_`` tables).
    Thread-safe."""

    def __init__(self, db_path: str | Path) -> None:
        self.db = Database(db_path, _SCHEMA)

    # ---- users ----------------------------------------------------------------------
    def register_user(self, user_id: str, sign_pub: bytes, kex_pub: bytes, attributes: Mapping[str, str],
                      registered_by: str) -> None:
        """Add or update a user (attributes as attested by ``registered_by``)."""
        with self.db.lock:
            self.db.execute("INSERT OR REPLACE INTO acl_users VALUES (?,?,?,?,?,?)",
                             (user_id, sign_pub, kex_pub, json.dumps(dict(attributes), sort_keys=True),
                              registered_by, time.time()))

    def user(self, user_id: str) -> RegisteredUser | None:
        """The registered user, or None."""
        row = self.db.one("SELECT user_id, sign_pub, kex_pub, attributes, registered_by FROM acl_users "
                               "WHERE user_id=?", (user_id,))
        return None if row is None else RegisteredUser(row[0], bytes(row[1]), bytes(row[2]), json.loads(row[3]), row[4])

    def signing_key(self, user_id: str) -> bytes | None:
        """Raw Ed25519 public key of a registered user (a ``RequestVerifier`` key lookup)."""
        u = self.user(user_id)
        return None if u is None else u.sign_pub

    def requester(self, user_id: str, purpose: str | None = None) -> Requester:
        """Requester with the owner-attested attributes (unregistered users have none)."""
        u = self.user(user_id)
        return Requester(user_id, dict(u.attributes) if u else {}, purpose)

    # ---- deployment admin -------------------------------------------------------------
    def admin(self) -> str | None:
        """User id of the deployment owner (None before bootstrap)."""
        row = self.db.one("SELECT value FROM acl_meta WHERE key='admin'")
        return None if row is None else row[0]

    def set_admin(self, user_id: str) -> None:
        """Record the deployment owner."""
        self.db.execute("INSERT OR REPLACE INTO acl_meta VALUES ('admin', ?)", (user_id,))

    # ---- policies -------------------------------------------------------------------
    def get(self, scope: str) -> Policy | None:
        """Policy stored under ``scope``, or None."""
        row = self.db.one("SELECT policy FROM acl_policies WHERE scope=?", (scope,))
        return None if row is None else Policy.from_json(row[0])

    def version(self, scope: str) -> int:
        """Number of times ``scope`` was written (0 = never)."""
        row = self.db.one("SELECT version FROM acl_policies WHERE scope=?", (scope,))
        return 0 if row is None else int(row[0])

    def put(self, scope: str, policy: Policy) -> int:
        """Store ``policy`` under ``scope``; returns the new version."""
        if not (scope.startswith("collection:") or scope.startswith("image:")):
            raise PolicyError(f"bad scope {scope!r}")
        with self.db.lock:
            v = self.version(scope) + 1
            self.db.execute("INSERT OR REPLACE INTO acl_policies VALUES (?,?,?,?)",
                             (scope, policy.to_json(), v, time.time()))
            return v

    def update(self, scope: str, change) -> Policy:
        """Atomically apply ``change(policy) -> policy`` to the policy under ``scope``."""
        with self.db.lock:
            cur = self.get(scope)
            if cur is None:
                raise PolicyError(f"no policy for {scope}")
            new = change(cur)
            self.put(scope, new)
            return new

    def create_collection(self, name: str, owner: str, members: Iterable[str] = ()) -> Policy:
        """New collection with the default policy (members: de-identified; others: nothing)."""
        with self.db.lock:
            if self.get(collection_scope(name)) is not None:
                raise PolicyError(f"collection {name!r} exists")
            p = Policy(owner, frozenset(members))
            self.put(collection_scope(name), p)
            return p

    def assign_image(self, image_id: int, collection: str) -> None:
        """Put an image in a collection (its policy then governs the image)."""
        if self.get(collection_scope(collection)) is None:
            raise PolicyError(f"unknown collection {collection!r}")
        with self.db.lock:
            self.db.execute("INSERT OR REPLACE INTO acl_images VALUES (?,?)", (int(image_id), collection))

    def collection_of(self, image_id: int) -> str | None:
        """The image's collection, or None."""
        row = self.db.one("SELECT collection FROM acl_images WHERE image_id=?", (int(image_id),))
        return None if row is None else row[0]

    def delete_image(self, image_id: int) -> None:
        """Forget an image's assignment and image policy (on deletion)."""
        with self.db.lock:
            self.db.execute("DELETE FROM acl_images WHERE image_id=?", (int(image_id),))
            self.db.execute("DELETE FROM acl_policies WHERE scope=?", (image_scope(image_id),))

    def effective(self, image_id: int) -> Policy | None:
        """Collection policy merged with the image's own, or None for an unassigned image."""
        coll = self.collection_of(image_id)
        if coll is None:
            return None
        base = self.get(collection_scope(coll))
        if base is None:
            return None
        return merge(base, self.get(image_scope(image_id)))

    # ---- decisions (read fresh from SQLite on every call) -----------------------------
    def decide(self, image_id: int, who: Requester, now: float | None = None) -> Outcome:
        """Outcome for ``who`` on ``image_id``; unassigned or unknown images give NOTHING."""
        p = self.effective(image_id)
        return Outcome.NOTHING if p is None else evaluate(p, who, time.time() if now is None else now)

    def may_search(self, collection: str, who: Requester, now: float | None = None) -> bool:
        """Search permission on a collection (unknown collection: no)."""
        p = self.get(collection_scope(collection))
        return False if p is None else may_search(p, who, time.time() if now is None else now)

    def visibility(self, image_ids: Sequence[int], who: Requester, now: float | None = None) -> list[Outcome]:
        """Outcome per image id (a public vector the servers use to mask search results)."""
        t = time.time() if now is None else now
        return [self.decide(i, who, t) for i in image_ids]

    def close(self) -> None:
        """Close the database."""
        self.db.close()
