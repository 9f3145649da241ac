"""Validation of an upload transaction bundle into staged files (phase 1 of two-phase commit).

A transaction bundle (kind ``txn``) may carry: new images (``img/<id>`` ciphertexts,
``key/<id>.lo|hi`` key-share pairs, optional ``.deid`` copies, optional ``meta/<id>`` encrypted
metadata with its ``mkey/<id>.lo|hi`` key-share pair; no plaintext name or label), ``deletes``, a new index
(``index/<name>`` tensors, public meta) and/or a model (``model/<name>.lo|hi`` + arch).
Every check here is about public structure; share values are never inspected.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from wire.bundle import Bundle, BundleError, tensors_to_pair

from .release import stage_pixel_files, stage_rekeys
from .storage import Store, tensors_to_npz

MIN_CIPHERTEXT = 12 + 16


def _check_key_pair(b: Bundle, prefix: str) -> dict[str, torch.Tensor]:
    lo, hi = tensors_to_pair(b.tensors, prefix)
    if tuple(lo.shape) != (4,):
        raise BundleError(f"{prefix}: a key share must be 4 int64 words, got shape {list(lo.shape)}")
    return {"lo": lo, "hi": hi}


def _apply_ivf_update(store: Store, version: int, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Current IVF index + fresh shares of the touched records -> the new version's tensors."""
    from index import IndexShares, IndexUpdateShares

    meta = store.current("index")[1] or {}
    if version == 0 or meta.get("format") != "ivf":
        raise BundleError("an index update needs a current IVF index")
    shares = IndexShares.from_tensors(store.load_tensors("index", version))
    slots = t.get("slots")
    rec = tensors_to_pair(t, "records")[0]
    if slots is None or slots.dim() != 2 or slots.shape[1] != 2 or rec.shape != (slots.shape[0], shares.record):
        raise BundleError(f"index update: slots must be [m,2] and records [m,{shares.record}]")
    if len(slots) and (slots.min() < 0 or (slots[:, 0] >= shares.n_centroids).any()
                       or (slots[:, 1] >= shares.bucket_size).any()):
        raise BundleError("index update: slot outside the index")
    upd = IndexUpdateShares(slots, tensors_to_pair(t, "records"), int(t["n_items"]))
    shares.apply_update(upd)
    return shares.to_tensors()


def _stage_images(b: Bundle, existing: set[int]) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """New images: ciphertexts, key-share pairs and sealed integrity records (each copy)."""
    metas: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for im in b.meta.get("images", []):
        i = int(im["id"])
        if i < 0 or i in existing or any(m["id"] == i for m in metas):
            raise BundleError(f"image id {i} already exists or is repeated")
        for deid in (False, True) if im.get("deid") else (False,):
            sfx = ".deid" if deid else ""
            ct = b.tensors.get(f"img/{i}{sfx}")
            if ct is None or ct.dtype != torch.uint8 or ct.dim() != 1 or ct.numel() < MIN_CIPHERTEXT:
                raise BundleError(f"image {i}{sfx}: missing or malformed ciphertext")
            files[f"img/{i}{sfx}.enc"] = ct.numpy().tobytes()
            files[f"key/{i}{sfx}.npz"] = tensors_to_npz(_check_key_pair(b, f"key/{i}{sfx}"))
            rec = b.tensors.get(f"rec/{i}{sfx}")  # owner-signed image hash, encrypted under the image key
            if rec is not None:
                if rec.dtype != torch.uint8 or rec.dim() != 1 or rec.numel() < MIN_CIPHERTEXT:
                    raise BundleError(f"image {i}{sfx}: malformed integrity record")
                files[f"img/{i}{sfx}.rec"] = rec.numpy().tobytes()
            files.update(stage_pixel_files(b, f"{i}{sfx}"))  # marked release to non-owners (servers.release)
        mct = b.tensors.get(f"meta/{i}")  # the owner's metadata (name, label), encrypted (``client.metadata``)
        if mct is not None:
            if mct.dtype != torch.uint8 or mct.dim() != 1 or mct.numel() < MIN_CIPHERTEXT:
                raise BundleError(f"image {i}: malformed encrypted metadata")
            files[f"img/{i}.meta"] = mct.numpy().tobytes()
            files[f"key/{i}.meta.npz"] = tensors_to_npz(_check_key_pair(b, f"mkey/{i}"))
        metas.append({"id": i, "nbytes": int(b.tensors[f"img/{i}"].numel()), "deid": bool(im.get("deid"))})
    return metas, files


def _stage_index(store: Store, b: Bundle, n_live: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The next index version (a full IVF index, or an update applied to the current one)."""
    m = b.meta["index"]
    version, _ = store.current("index")
    if int(m.get("base_version", -1)) != version:
        raise BundleError(f"index changed meanwhile (server has version {version}); rebuild and retry")
    t = {k[len("index/"):]: v for k, v in b.tensors.items() if k.startswith("index/")}
    if any(v.dtype != torch.int64 for v in t.values()):
        raise BundleError("index tensors must be int64")
    if m.get("format") != "ivf":
        raise BundleError(f"unknown index format {m.get('format')!r}")
    if m.get("update"):
        t = _apply_ivf_update(store, version, t)
    imeta = {k: v for k, v in m.items() if k not in ("base_version", "update")}
    imeta["n_images"] = n_live
    return {"version": version + 1, "meta": imeta}, {f"index/v{version + 1}.npz": tensors_to_npz(t)}


def _stage_model(store: Store, b: Bundle) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The next model version: public arch + this server's weight pairs."""
    arch = b.meta["model"].get("arch")
    if not isinstance(arch, dict) or "layers" not in arch or "input_shape" not in arch:
        raise BundleError("model: arch must describe layers and input_shape")
    w = {k[len("model/"):]: v for k, v in b.tensors.items() if k.startswith("model/")}
    for n in {k.rsplit(".", 1)[0] for k in w}:
        tensors_to_pair(w, n)
    version, _ = store.current("model")
    return {"version": version + 1, "meta": {"arch": arch}}, {f"model/v{version + 1}.npz": tensors_to_npz(w)}


def stage(store: Store, b: Bundle) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check a transaction bundle against the committed state; return (meta, files)."""
    existing = set(store.image_ids())
    images, files = _stage_images(b, existing)
    meta: dict[str, Any] = {"images": images, "deletes": []}
    for i in b.meta.get("deletes", []):
        if int(i) not in existing:
            raise BundleError(f"unknown image id {int(i)}")
        meta["deletes"].append(int(i))
    live = (existing | {im["id"] for im in images}) - set(meta["deletes"])
    if b.meta.get("rekeys"):  # new keys, ciphertexts and pixel shares of existing images (servers.release)
        meta["rekeys"], more = stage_rekeys(store, b, existing - set(meta["deletes"]))
        files.update(more)
    if "index" in b.meta:
        meta["index"], more = _stage_index(store, b, len(live))
        files.update(more)
    elif images or meta["deletes"]:
        raise BundleError("adding or deleting images needs the updated index in the same transaction")
    if "model" in b.meta:
        meta["model"], more = _stage_model(store, b)
        files.update(more)
    if not files:
        raise BundleError("empty transaction")
    json.dumps(meta)
    return meta, files
