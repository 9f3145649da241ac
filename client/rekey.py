"""Revocation that lasts: re-key the images a revoked user could open.

After ``revoke`` the owner's client records the images in the revoked scope (the one image,
or every image of the collection in the owner's catalog) in ``owner_dir/rekey_pending.json``.
They are re-keyed on the owner's next action (upload, delete, grant) or by ``trivault rekey``.

Re-keying one image, per copy (original, de-identified): the owner retrieves its own copy
(decrypted and signature-checked), encrypts it under a fresh AES-256 key with a fresh
signed record, splits the new key into new key shares and the pixels into new pixel shares
(new seeds: every component changes), and replaces all of them on the three servers in one
two-phase transaction (``meta["rekeys"]``, staged by ``servers.release.stage_rekeys``; only
the image's owner may). Key shares or pixel-share components kept from before then open
nothing that is stored. Batches of ``BATCH`` images per transaction; nothing is lost on a
crash (the old files stay until the commit, the pending list until success).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

from wire import bundle as bd

from .encryption import encrypt_copy
from .errors import TriVaultError

BATCH = 16
PENDING = "rekey_pending.json"


class PendingRekeys:
    """The owner's list of image ids still to re-key (a small JSON file, written atomically)."""

    def __init__(self, owner_dir: str | Path) -> None:
        self.path = Path(owner_dir) / PENDING

    def ids(self) -> list[int]:
        """Image ids waiting to be re-keyed."""
        return sorted(json.loads(self.path.read_text())) if self.path.exists() else []

    def _write(self, ids: Iterable[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(sorted({int(i) for i in ids})))
        os.replace(tmp, self.path)

    def add(self, ids: Iterable[int]) -> None:
        """Record more images to re-key."""
        self._write([*self.ids(), *ids])

    def done(self, ids: Iterable[int]) -> None:
        """Forget images that were re-keyed (or no longer exist)."""
        gone = {int(i) for i in ids}
        rest = [i for i in self.ids() if i not in gone]
        if rest:
            self._write(rest)
        else:
            self.path.unlink(missing_ok=True)


def revoked_scope(catalog_entries: dict, server_ids: Sequence[int], collection: str,
                  image_id: int | None) -> list[int]:
    """Images a revocation on (collection, image) covers: the image, or the collection's images
    in the owner's catalog (every image on the servers if the catalog knows none of them)."""
    if image_id is not None:
        return [int(image_id)]
    live = set(int(i) for i in server_ids)
    mine = [i for i, e in catalog_entries.items() if e.collection in (collection, None) and i in live]
    return sorted(mine) if mine else sorted(live)


def deid_copies(client) -> dict[int, bool]:
    """Which images have a de-identified copy, as the owner's local catalog records it."""
    return {int(e.id): bool(e.deid) for e in client.ls(local_only=True)}


def rekey_bundles(client, image_ids: Sequence[int]) -> list[bd.Bundle]:
    """One transaction re-keying ``image_ids``: the owner's own copies, encrypted and shared anew."""
    per_server: list[dict[str, torch.Tensor]] = [{}, {}, {}]
    rekeys = []
    known = deid_copies(client)
    for i in image_ids:
        orig = client.retrieve(int(i))
        if orig.watermarked:
            raise TriVaultError(f"image {i}: only its owner can re-key it")
        copies = [(False, orig.data)]
        if known.get(int(i), True):  # a de-identified copy, or unknown to this owner directory: ask
            try:
                d = client.retrieve(int(i), deid=True)
                if d.kind == "deid":
                    copies.append((True, d.data))
            except TriVaultError:
                pass  # no de-identified copy
        for deid, blob in copies:
            for s, tensors in enumerate(encrypt_copy(client.identity, int(i), blob, deid)):
                per_server[s].update(tensors)
        rekeys.append({"id": int(i), "deid": len(copies) == 2})
    txn = str(uuid.uuid4())
    return [bd.Bundle("txn", txn, {"rekeys": rekeys}, per_server[s]) for s in range(3)]


def rekey(client, image_ids: Sequence[int], progress: bool = False) -> list[int]:
    """Re-key ``image_ids`` (those still on the servers) in batches; returns the ids re-keyed."""
    live = set(client.info()["image_ids"])
    todo = [int(i) for i in image_ids if int(i) in live]
    for s in tqdm(range(0, len(todo), BATCH), desc="rekey", unit="batch", disable=not progress):
        client._transact(rekey_bundles(client, todo[s:s + BATCH]), "upload")
    return todo
