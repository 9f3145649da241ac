"""Access-control administration: register users, grant, revoke, and read the audit logs.

Every change is one owner-signed request sent, unchanged, to all three servers; each
server verifies and applies it on its own (``servers.acl``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from protos.trivault.v1 import trivault_pb2 as pb
from wire.audit import Divergence, compare_chains
from wire.identity import PublicIdentity

from .errors import TriVaultError
from .transport import Fanout, Sign


class AclAdmin:
    """The owner's ACL actions and the cross-server audit check."""

    def __init__(self, fan: Fanout, sign: Sign, me: PublicIdentity) -> None:
        self.fan, self.sign, self.me = fan, sign, me

    def manage(self, action: str, params: dict[str, Any]) -> dict:
        """Send one signed register / grant / revoke / policy request to all three servers."""
        auth = self.sign(action, params)  # the SAME signed request goes to all three servers
        outs = self.fan.all(lambda i: json.loads(self.fan.stubs[i].Manage(pb.SignedCall(auth=auth),
                                                                          timeout=10).meta_json))
        return outs[0]

    def register_user(self, user: PublicIdentity, attributes: dict[str, str] | None = None) -> str:
        """Owner: register a user's public identity with owner-attested attributes; returns its id."""
        self.manage("register", {"user": user.to_dict(), "attributes": dict(attributes or {})})
        return user.user_id

    def bootstrap(self) -> str:
        """First use of a deployment without ``owner_identity`` in its config: become its owner."""
        return self.manage("register", {"user": self.me.to_dict(), "bootstrap": True})["user"]

    def grant(self, user_id: str, collection: str = "default", outcome: str = "ORIGINAL",
              expires: float | None = None, purposes: Sequence[str] | None = None, image_id: int | None = None,
              search: bool = True) -> None:
        """Owner: give ``user_id`` at least ``outcome`` on a collection (or one image) until ``expires``."""
        self.manage("grant", {"user": user_id, "collection": collection, "outcome": outcome.upper(),
                              "expires_ms": None if expires is None else int(expires * 1000),
                              "purposes": None if purposes is None else list(purposes), "image": image_id,
                              "search": bool(search)})

    def revoke(self, user_id: str, collection: str = "default", image_id: int | None = None) -> None:
        """Owner: revoke every grant and membership of ``user_id`` (effective at the next key release)."""
        self.manage("revoke", {"user": user_id, "collection": collection, "image": image_id})

    def audit_exports(self, page_size: int = 1000) -> dict[int, list[dict]]:
        """Each answering server's audit chain as this user may see it: own entries and those
        touching collections this user owns in full, the rest redacted (signed, paged reads)."""
        def one(i: int) -> list[dict]:
            out: list[dict] = []
            while True:  # bounded: every page must advance past the last seq seen
                auth = self.sign("audit", {"after": out[-1]["seq"] if out else 0, "limit": page_size})
                r = json.loads(self.fan.stubs[i].Audit(pb.SignedCall(auth=auth), timeout=30).meta_json)
                page = [e for e in r["entries"] if not out or e["seq"] > out[-1]["seq"]]
                out += page
                if not page or out[-1]["seq"] >= int(r["last_seq"]):
                    return out

        outs = self.fan.all(one, tolerate=True)
        return {i: o for i, o in enumerate(outs) if o is not None}

    def audit(self) -> Divergence:
        """Fetch the three logs and compare them (``wire.audit.Divergence``: ok, suspects, summary)."""
        return compare_chains(self.audit_exports())

    def owner_identity(self) -> PublicIdentity:
        """The deployment owner's public identity, as at least two servers report it."""
        votes: dict[str, int] = {}
        for x in self.fan.infos(tolerate=True):
            if x and x.get("owner"):
                k = json.dumps(x["owner"], sort_keys=True)
                votes[k] = votes.get(k, 0) + 1
        best = [k for k, n in votes.items() if n >= 2]
        if not best:
            raise TriVaultError("the servers do not agree on the deployment owner")
        return PublicIdentity.from_dict(json.loads(best[0]))
