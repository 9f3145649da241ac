"""Signed reads: a user's view of the audit log, and image metadata for those allowed to see it.

``audit`` (params ``after``, ``limit``): one page of this server's chain as the signer may see
it (``servers.audit.AuditLog.page_for``): the signer's own entries and every entry touching a
collection the signer owns in full, the rest redacted, so the owner's client verifies the whole
chain and compares the three servers without reading anything of another owner.

``names`` (params ``collection`` or ``image``, ``after``, ``limit``, ``purpose``): for each image
the policy lets the signer see (outcome above NOTHING), the owner's encrypted metadata blob
(identical on every server) and this server's metadata-key share pair, all pairs sealed in one
message to the signer's REGISTERED X25519 key (``wire.metadata``). The server sees ids and
sizes only. Asking for a whole collection (not for the ids of a search result) keeps search
results hidden from the servers. Each names request is audited (count, collection or image).
"""

from __future__ import annotations

from typing import Any

from wire.metadata import seal_pairs

from .acl import DEFAULT_COLLECTION, Acl
from .audit import MAX_PAGE
from .policy import Outcome
from .request_auth import VerifiedRequest
from .storage import StorageError, Store, npz_to_tensors


def audit_page(acl: Acl, req: VerifiedRequest) -> dict[str, Any]:
    """One page of the audit chain as ``req.signer`` may see it, and this server's head."""
    owned: dict[str, bool] = {}

    def owns(collection: str) -> bool:
        if collection not in owned:
            owned[collection] = acl.owns(req.signer, collection)
        return owned[collection]

    p = req.params
    page = acl.audit.page_for(req.signer, owns, acl.policies.collection_of, int(p.get("after") or 0),
                              int(p.get("limit") or MAX_PAGE), admin=req.signer == acl.admin())
    last, _ = acl.audit.head()
    return {"server_id": acl.server_id, "entries": [e.to_dict() for e in page], "last_seq": last}


def _meta_files(store: Store, image_id: int) -> tuple[bytes, dict] | None:
    """(encrypted metadata, metadata-key share tensors) of an image, or None if it has none."""
    ct = store.objects / "img" / f"{int(image_id)}.meta"
    key = store.objects / "key" / f"{int(image_id)}.meta.npz"
    if not ct.exists() or not key.exists():
        return None
    return ct.read_bytes(), npz_to_tensors(key)


def names(acl: Acl, store: Store, req: VerifiedRequest) -> dict[str, Any]:
    """Encrypted metadata and sealed metadata-key pairs of the images the signer may see."""
    p = req.params
    limit = max(1, min(int(p.get("limit") or MAX_PAGE), MAX_PAGE))
    where: dict[str, Any]
    if p.get("image") is not None:
        image_id = int(p["image"])
        if image_id not in set(store.image_ids()):
            raise StorageError(f"unknown image id {image_id}")
        ids, where = [image_id], {"image": image_id}
    else:
        collection = str(p.get("collection") or DEFAULT_COLLECTION)
        after_raw = p.get("after")
        after = int(after_raw) if after_raw is not None else -1
        ids = [i for i in store.image_ids() if i > after and acl.policies.collection_of(i) == collection]
        where = {"collection": collection}
    more = len(ids) > limit
    ids = ids[:limit]
    who = acl.policies.requester(req.signer, p.get("purpose"))
    shown = [i for i, o in zip(ids, acl.policies.visibility(ids, who)) if o != Outcome.NOTHING]
    blobs: dict[str, str] = {}
    pairs = {}
    for i in shown:
        found = _meta_files(store, i)
        if found is not None:
            blobs[str(i)] = found[0].hex()
            pairs[i] = (found[1]["lo"], found[1]["hi"])
    acl.audit.append("names", req.signer, subject=str(where.get("collection", where.get("image"))),
                     ref=req.request_id, n_images=len(pairs), **where)
    sealed = seal_pairs(pairs, acl.kex_pub(req.signer), acl.server_id)
    return {"server_id": acl.server_id, "meta": blobs, "sealed": sealed.hex(),
            "next": ids[-1] if more and ids else None}
