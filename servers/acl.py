"""Access control wiring for one server: signed requests, policies, audit (issue 8).

Each server holds, on its own data directory, a :class:`~servers.policy.PolicyStore`
(``acl.db``), a :class:`~servers.request_auth.RequestVerifier` on the same database (key
lookup = the registered users' Ed25519 keys) and a hash-chained
:class:`~servers.audit.AuditLog` (``audit.db``). Every decision is taken here, by this
server alone, from its own database: nothing is delegated to a peer or to the client.

Bootstrap: the cluster config names the deployment owner's public identity
(``owner_identity = "identity.json"``); it is registered at start-up as the *admin*
(registers users, registers the model, creates collections). Without it, the first
self-signed ``register`` request with ``bootstrap = true`` makes its signer the admin
(trust on first use; each server decides on its own, so an honest majority must have
seen the same first request). Everyone else arrives by an admin-signed ``register``
request carrying the owner-attested attributes.

The deployment id (``audience`` of signed requests, ``wire.signing.audience_for_ca``) is
derived from the CA certificate,
which clients and servers share: a request signed for another deployment is rejected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.identity import IdentityError, PublicIdentity
from wire.signing import EncodingError, SignedRequest

from .audit import AuditLog
from .policy import Outcome, Policy, PolicyError, PolicyStore, collection_scope, image_scope
from .request_auth import RequestRejected, RequestVerifier, VerifiedRequest

log = logging.getLogger("trivault.acl")

DEFAULT_COLLECTION = "default"


class AclDenied(PermissionError):
    """A request that verified but is not allowed (``reason`` is a short code)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Release:
    """What this server releases for one retrieval."""

    outcome: Outcome
    deid: bool  # which copy's key share is sealed


class Acl:
    """Policy store, verifier and audit log of one server."""

    def __init__(self, data_dir: Path, server_id: int, audience: str, owner_identity: Path | None = None,
                 window_s: float = 300.0) -> None:
        self.server_id = server_id
        self.policies = PolicyStore(data_dir / "acl.db")
        self.verifier = RequestVerifier(data_dir / "acl.db", self._signing_key, audience, window_s=window_s)
        self.audit = AuditLog(data_dir / "audit.db", server_id)
        self.audience = audience
        self._lock = threading.RLock()
        if owner_identity is not None:
            pub = PublicIdentity.from_json(Path(owner_identity).read_text())
            admin = self.admin()
            if admin is None:
                self._register(pub, dict(pub.attributes), "config")
                self.policies.set_admin(pub.user_id)
                self.audit.append(
                    "register", pub.user_id, subject=pub.user_id, ref="config", attributes=dict(pub.attributes)
                )
            elif admin != pub.user_id:
                raise ValueError("owner_identity in the config differs from this server's registered admin")

    # ---- helpers --------------------------------------------------------------------
    def _signing_key(self, user_id: str) -> bytes | None:
        return self.policies.signing_key(user_id)

    def admin(self) -> str | None:
        """User id of the deployment owner (None before bootstrap)."""
        return self.policies.admin()

    def _register(self, pub: PublicIdentity, attributes: Mapping[str, str], by: str) -> None:
        self.policies.register_user(pub.user_id, pub.sign_pub, pub.kex_pub, attributes, by)

    def close(self) -> None:
        """Close the databases."""
        self.verifier.close()
        self.policies.close()
        self.audit.close()

    # ---- verification -----------------------------------------------------------------
    def verify(self, auth: bytes, action: str, who: str = "") -> VerifiedRequest:
        """Verify a signed request; a rejection is audited as ``reject`` and re-raised."""
        if not auth:
            self.audit.append("reject", "", subject=action, ref="", reason="unsigned")
            raise RequestRejected("unsigned", f"{action!r} needs a signed request (wire.signing)")
        try:
            return self.verifier.verify(auth, action)
        except RequestRejected as exc:
            signer = ""
            try:
                signer = SignedRequest.from_bytes(auth).signer[:64]
            except EncodingError:
                pass
            self.audit.append("reject", signer, subject=action, ref="", reason=exc.reason)
            raise

    def deny(self, req: VerifiedRequest, reason: str, message: str, collection: str | None = None,
             image: int | None = None) -> AclDenied:
        """Audit a verified-but-refused request (with its target, so the target's owner sees the
        refusal in their audit) and return the exception to raise."""
        where = {k: v for k, v in (("collection", collection), ("image", image)) if v is not None}
        self.audit.append("reject", req.signer, subject=req.action, ref=req.request_id, reason=reason, **where)
        return AclDenied(reason, message)

    def owns(self, user_id: str, collection: str) -> bool:
        """True if ``user_id`` owns ``collection``."""
        p = self.policies.get(collection_scope(collection))
        return p is not None and p.owner == user_id

    _owns = owns

    # ---- uploads (two-phase: checked at prepare, applied at commit) --------------------
    def check_txn(self, req: VerifiedRequest, txn_id: str, meta: Mapping[str, Any], has_model: bool) -> dict:
        """Check a signed upload/delete against the staged transaction; returns the ACL part of its meta."""
        p = req.params
        if p.get("txn") != txn_id:
            raise self.deny(req, "mismatch", "the signed request is for another transaction")
        images = sorted(int(im["id"]) for im in meta.get("images", []))
        deletes = sorted(int(i) for i in meta.get("deletes", []))
        if (
            sorted(int(i) for i in p.get("images", [])) != images
            or sorted(int(i) for i in p.get("deletes", [])) != deletes
        ):
            raise self.deny(req, "mismatch", "signed image ids differ from the transaction's")
        if bool(p.get("model")) != has_model:
            raise self.deny(req, "mismatch", "signed model flag differs from the transaction's")
        if has_model and req.signer != self.admin():
            raise self.deny(req, "not-owner", "only the deployment owner registers the model")
        collection = str(p.get("collection") or DEFAULT_COLLECTION)
        if images:
            if self.policies.get(collection_scope(collection)) is None:
                if req.signer != self.admin():
                    raise self.deny(req, "not-owner", "only the deployment owner creates collections")
            elif not self._owns(req.signer, collection):
                raise self.deny(req, "not-owner", f"signer does not own collection {collection!r}", collection)
        rekeys = [int(r["id"]) for r in meta.get("rekeys", [])]  # new keys of existing images: owner only
        for i in deletes + rekeys:
            c = self.policies.collection_of(i)
            if c is not None and not self._owns(req.signer, c):
                raise self.deny(req, "not-owner", f"signer does not own image {i}'s collection")
            if c is None and req.signer != self.admin():
                raise self.deny(req, "not-owner", f"image {i} has no collection; only the owner deletes it")
        return {"signer": req.signer, "collection": collection, "ref": req.request_id}

    def apply_commit(self, meta: Mapping[str, Any]) -> None:
        """After a committed transaction: assign new images, forget deleted ones (idempotent)."""
        acl = meta.get("acl")
        if not acl:
            return
        with self._lock:
            images = [int(im["id"]) for im in meta.get("images", [])]
            if images and self.policies.get(collection_scope(acl["collection"])) is None:
                self.policies.create_collection(acl["collection"], acl["signer"])
            for i in images:
                self.policies.assign_image(i, acl["collection"])
            deletes = [int(i) for i in meta.get("deletes", [])]
            for i in deletes:
                self.policies.delete_image(i)
            if images:
                self.audit.append("upload", acl["signer"], subject=acl["collection"], ref=acl["ref"],
                                  n_images=len(images), collection=acl["collection"])
            if deletes:
                self.audit.append("delete", acl["signer"], subject=acl["collection"], ref=acl["ref"],
                                  images=deletes, collection=acl["collection"])

    # ---- owner actions ----------------------------------------------------------------
    def manage(self, auth: bytes, who: str = "") -> dict:
        """Apply a signed register / grant / revoke / policy request; returns a public summary."""
        try:
            action = SignedRequest.from_bytes(auth).action
        except EncodingError as exc:
            self.audit.append("reject", "", subject="manage", reason="malformed")
            raise RequestRejected("malformed", str(exc)) from None
        if action not in ("register", "grant", "revoke", "policy"):
            self.audit.append("reject", "", subject=action, reason="bad-action")
            raise RequestRejected("bad-action", f"Manage does not take {action!r} requests")
        if action == "register" and self.admin() is None:
            return self._bootstrap(auth)
        req = self.verify(auth, action, who)
        with self._lock:
            if action == "register":
                return self._register_user(req)
            collection, scope = self._policy_scope(req)
            try:
                self._change_policy(req, collection, scope)
            except (PolicyError, KeyError, TypeError, ValueError) as exc:
                raise self.deny(req, "malformed", str(exc)) from None
        return {"scope": scope}

    def _register_user(self, req: VerifiedRequest) -> dict:
        """The owner registers a user with the attributes it attests."""
        if req.signer != self.admin():
            raise self.deny(req, "not-owner", "only the deployment owner registers users")
        try:
            pub = PublicIdentity.from_dict(req.params["user"])
            attrs = {str(k).lower(): str(v) for k, v in (req.params.get("attributes") or {}).items()}
        except (IdentityError, KeyError, TypeError, ValueError) as exc:
            raise self.deny(req, "malformed", f"bad user bundle: {exc}") from None
        self._register(pub, attrs, req.signer)
        self.audit.append("register", req.signer, subject=pub.user_id, ref=req.request_id, attributes=attrs)
        return {"user": pub.user_id}

    def _policy_scope(self, req: VerifiedRequest) -> tuple[str, str]:
        """(collection, policy scope) a grant / revoke / policy request changes; the signer must own it."""
        p = req.params
        collection = str(p.get("collection") or DEFAULT_COLLECTION)
        scope = collection_scope(collection)
        if "image" in p and p["image"] is not None:
            if self.policies.collection_of(int(p["image"])) != collection:
                raise self.deny(req, "mismatch", f"image {p['image']} is not in collection {collection!r}")
            scope = image_scope(int(p["image"]))
        if not self._owns(req.signer, collection):
            raise self.deny(req, "not-owner", f"signer does not own collection {collection!r}", collection)
        return collection, scope

    def _change_policy(self, req: VerifiedRequest, collection: str, scope: str) -> None:
        """Apply a grant, a revoke or a whole new policy to ``scope`` and audit it."""
        p, user = req.params, str(req.params.get("user", ""))
        where = {"collection": collection, "image": p.get("image")}
        if req.action == "grant":
            if self.policies.user(user) is None:
                raise self.deny(req, "unknown-user", f"user {user} is not registered")
            exp_ms, purposes = p.get("expires_ms"), p.get("purposes")
            outcome = Outcome[str(p.get("outcome", "ORIGINAL")).upper()]
            self._update(scope, collection, lambda pol: pol.grant(
                user, outcome, None if exp_ms is None else exp_ms / 1000.0,
                None if purposes is None else [str(x) for x in purposes], bool(p.get("search", True))))
            self.audit.append("grant", req.signer, subject=user, ref=req.request_id, **where, outcome=outcome.name,
                              expires=exp_ms, purposes=purposes)
        elif req.action == "revoke":
            self._update(scope, collection, lambda pol: pol.revoke(user))
            self.audit.append("revoke", req.signer, subject=user, ref=req.request_id, **where)
        else:  # policy: replace the whole policy (owner must stay the signer)
            pol = Policy.from_dict(p["policy"])
            if pol.owner != req.signer:
                raise self.deny(req, "not-owner", "a policy's owner must be its signer")
            v = self.policies.put(scope, pol)
            self.audit.append("policy", req.signer, subject=scope, ref=req.request_id, **where, version=v)

    def _update(self, scope: str, collection: str, change) -> None:
        if scope.startswith("image:") and self.policies.get(scope) is None:
            col = self.policies.get(collection_scope(collection))
            if col is None:
                raise ValueError(f"collection {collection!r} has no policy")
            self.policies.put(scope, Policy(col.owner))
        self.policies.update(scope, change)

    def _bootstrap(self, auth: bytes) -> dict:
        """Trust on first use: a self-signed register with bootstrap=true makes its signer the admin."""
        req = SignedRequest.from_bytes(auth)
        try:
            pub = PublicIdentity.from_dict(req.params["user"])
        except (IdentityError, KeyError, TypeError, ValueError) as exc:
            raise RequestRejected("malformed", f"bad bootstrap bundle: {exc}") from None
        if not req.params.get("bootstrap") or pub.user_id != req.signer:
            raise RequestRejected("unknown-signer", "no owner yet: the first request must be a self-signed bootstrap")
        with self._lock:
            if self.admin() is not None:
                raise RequestRejected("replayed", "this server already has an owner")
            verifier = RequestVerifier(":memory:", lambda uid: pub.sign_pub if uid == pub.user_id else None,
                                       self.audience)
            verifier.verify(req, "register")  # signature, audience, freshness
            self._register(pub, dict(pub.attributes), "self")
            self.policies.set_admin(pub.user_id)
            self.verifier.record_nonce(req, req.ts_ms)
            self.audit.append("register", pub.user_id, subject=pub.user_id, ref=f"{req.signer}:{req.nonce}",
                              attributes=dict(pub.attributes))
        return {"user": pub.user_id, "admin": True}

    # ---- search and retrieval -----------------------------------------------------------
    def start_search(self, req: VerifiedRequest, session_id: str, k: int) -> str:
        """Search permission on the signed collection (checked at session start); audited without the query."""
        p = req.params
        collection = str(p.get("collection") or DEFAULT_COLLECTION)
        if p.get("session") != session_id or ("k" in p and int(p["k"]) != int(k)):
            raise self.deny(req, "mismatch", "the signed request is for another search session", collection)
        if not self.policies.may_search(collection, self.policies.requester(req.signer, p.get("purpose"))):
            raise self.deny(req, "forbidden", f"user may not search collection {collection!r}", collection)
        self.audit.append("search", req.signer, subject=collection, ref=session_id, k=int(k), collection=collection)
        return collection

    def hidden_ids(self, req: VerifiedRequest, collection: str, image_ids: Sequence[int]) -> list[int]:
        """Public list of image ids the requester may not see in results (outside the collection or NOTHING)."""
        who = self.policies.requester(req.signer, req.params.get("purpose"))
        vis = self.policies.visibility(image_ids, who)
        return [int(i) for i, o in zip(image_ids, vis)
                if o == Outcome.NOTHING or self.policies.collection_of(int(i)) != collection]

    def decide(self, req: VerifiedRequest, image_id: int) -> Outcome:
        """This server's policy decision for the requester on one image (read fresh from SQLite)."""
        return self.policies.decide(image_id, self.policies.requester(req.signer, req.params.get("purpose")))

    def release(self, req: VerifiedRequest, image_id: int, want_deid: bool, has_deid: bool) -> Release:
        """Decide, at key-release time, which key share (if any) this server releases."""
        outcome = self.decide(req, image_id)
        if outcome == Outcome.ORIGINAL:
            rel = Release(outcome, want_deid)
        elif outcome == Outcome.DEIDENTIFIED and has_deid:
            rel = Release(outcome, True)
        else:
            outcome = Outcome.NOTHING
            rel = Release(outcome, False)
        self.audit.append("retrieve", req.signer, subject=str(int(image_id)), ref=req.request_id,
                          outcome=outcome.name, kind="none" if outcome == Outcome.NOTHING else
                          ("deid" if rel.deid else "orig"))
        return rel

    def kex_pub(self, user_id: str) -> bytes:
        """The requester's REGISTERED X25519 key (never one sent with the request)."""
        u = self.policies.user(user_id)
        if u is None:
            raise PolicyError(f"user {user_id} is not registered")
        return u.kex_pub
