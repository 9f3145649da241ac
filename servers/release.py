"""Release of an image to a recipient who is not its owner: marked pixel shares only.

An upload or rekey transaction may carry, per copy ``<id>[.deid]``, this server's pixel-share
pair and mark keys (``wire.pixel_shares``) as tensors ``pix/<id>[.deid]/{a,b,ka,kb,shape}``:
``a``/``b`` are components ``i``/``i+1`` (uint8: a 16-byte seed or the packed Z_2^9 array,
``wire.pixel_shares.pack``), ``ka``/``kb`` their mark keys, ``shape`` the public ``[H, W, 3]``. They
are kept as ``objects/pix/<id>[.deid].npz``.

At retrieval the owner of the image's collection gets the ciphertext and key shares
(unmarked, as before); anyone else gets only :func:`marked_bundle`: this server's pair plus
its two components of the recipient's mark, sealed to the recipient's registered key. No
key share, no ciphertext: a recipient never holds an unmarked copy.
"""

from __future__ import annotations

import torch

from wire import bundle as bd
from wire.pixel_shares import SEED_BYTES, Component, packed_size, release, unpack

from .policy import collection_scope
from .storage import StorageError, Store, npz_to_tensors, tensors_to_npz

MIN_CIPHERTEXT = 12 + 16  # AES-GCM nonce + tag
PARTS = ("a", "b", "ka", "kb", "shape")
MAX_SIDE = 16384


class ReleaseError(StorageError):
    """The image cannot be released marked (e.g. it has no pixel shares yet)."""


def stage_pixel_files(b: bd.Bundle, name: str) -> dict[str, bytes]:
    """The staged ``pix/<name>.npz`` file of one copy, or {} if the bundle carries none (checked)."""
    found = {p: b.tensors.get(f"pix/{name}/{p}") for p in PARTS}
    if all(v is None for v in found.values()):
        return {}
    t = {p: v for p, v in found.items() if v is not None}
    if len(t) != len(PARTS):
        raise bd.BundleError(f"pixel shares of {name}: need all of {', '.join(PARTS)}")
    shape = t["shape"]
    if shape.dtype != torch.int64 or tuple(shape.shape) != (3,) or int(shape[2]) != 3 \
            or not (0 < int(shape[0]) <= MAX_SIDE and 0 < int(shape[1]) <= MAX_SIDE):
        raise bd.BundleError(f"pixel shares of {name}: shape must be [H, W, 3] (H, W <= {MAX_SIDE})")
    full = (packed_size((int(shape[0]), int(shape[1]), 3)),)
    for p in ("a", "b"):
        v = t[p]
        if v.dtype != torch.uint8 or (tuple(v.shape) != (SEED_BYTES,) and tuple(v.shape) != full):
            raise bd.BundleError(f"pixel shares of {name}: component {p} must be a {SEED_BYTES}-byte seed or "
                                 f"{full[0]} packed bytes")
    for p in ("ka", "kb"):
        if t[p].dtype != torch.uint8 or tuple(t[p].shape) != (SEED_BYTES,):
            raise bd.BundleError(f"pixel shares of {name}: mark key {p} must be {SEED_BYTES} bytes")
    return {f"pix/{name}.npz": tensors_to_npz(t)}


def _component(t: torch.Tensor, image_id: int, shape: tuple[int, int, int]) -> Component:
    a = t.numpy()
    if a.ndim != 1:  # [H, W, 3, 2]: the Z_2^16 shares written before 2026-12-03
        raise ReleaseError(f"image {image_id} has pixel shares in the old 16-bit format: only its owner can open "
                           "it until the owner runs `trivault rekey ID`")
    return a.tobytes() if a.size == SEED_BYTES else unpack(a.tobytes(), shape)


def owns_image(acl, user_id: str, image_id: int) -> bool:
    """Is ``user_id`` the owner of the image's collection (the deployment owner for an unassigned image)?"""
    c = acl.policies.collection_of(int(image_id))
    if c is None:
        return user_id == acl.admin()
    pol = acl.policies.get(collection_scope(c))
    return pol is not None and pol.owner == user_id


def has_pixels(store: Store, image_id: int, deid: bool) -> bool:
    """Whether this copy has pixel shares on this server."""
    return (store.objects / "pix" / f"{int(image_id)}{'.deid' if deid else ''}.npz").exists()


def marked_bundle(store: Store, server_id: int, image_id: int, deid: bool, recipient: str, kex_pub: bytes,
                  meta: dict) -> bd.Bundle:
    """This server's marked pixel-share pair of one copy, sealed to ``recipient``."""
    path = store.objects / "pix" / f"{int(image_id)}{'.deid' if deid else ''}.npz"
    if not path.exists():
        raise ReleaseError(f"image {image_id} has no pixel shares on server {server_id} (uploaded before marks "
                           "on shares): only its owner can open it until the owner runs `trivault rekey ID`")
    t = npz_to_tensors(path)
    h, w, c = (int(d) for d in t["shape"].tolist())
    shape = (h, w, c)
    sealed = release(server_id, (_component(t["a"], image_id, shape), _component(t["b"], image_id, shape)),
                     (t["ka"].numpy().tobytes(), t["kb"].numpy().tobytes()), recipient, kex_pub, int(image_id),
                     deid, shape)
    tensors = {"sealed_pixels": torch.frombuffer(bytearray(sealed), dtype=torch.uint8)}
    return bd.Bundle("image", "", {**meta, "form": "marked", "shape": list(shape)}, tensors)


def _copy_files(b: bd.Bundle, name: str) -> dict[str, bytes]:
    """Ciphertext, key-share pair, integrity record and pixel shares of one re-keyed copy (checked)."""
    ct, rec = b.tensors.get(f"img/{name}"), b.tensors.get(f"rec/{name}")
    for what, t in (("ciphertext", ct), ("integrity record", rec)):
        if t is None or t.dtype != torch.uint8 or t.dim() != 1 or t.numel() < MIN_CIPHERTEXT:
            raise bd.BundleError(f"rekey of {name}: missing or malformed {what}")
    lo, hi = bd.tensors_to_pair(b.tensors, f"key/{name}")
    if tuple(lo.shape) != (4,):
        raise bd.BundleError(f"rekey of {name}: a key share must be 4 int64 words")
    pix = stage_pixel_files(b, name)
    if not pix:
        raise bd.BundleError(f"rekey of {name}: new pixel shares are required")
    return {f"img/{name}.enc": ct.numpy().tobytes(), f"img/{name}.rec": rec.numpy().tobytes(),  # type: ignore
            f"key/{name}.npz": tensors_to_npz({"lo": lo, "hi": hi}), **pix}


def stage_rekeys(store: Store, b: bd.Bundle, live: set[int]) -> tuple[list[dict], dict[str, bytes]]:
    """Re-keyed copies of existing images (``meta["rekeys"]``: ``[{"id", "deid"}]``): staged files
    replace the old ones at commit. Every copy the image has must be re-keyed together."""
    out: list[dict] = []
    files: dict[str, bytes] = {}
    for r in b.meta.get("rekeys", []):
        i = int(r["id"])
        if i not in live or any(o["id"] == i for o in out):
            raise bd.BundleError(f"rekey: image {i} is unknown, deleted in this transaction, or repeated")
        has_deid = store.image_row(i)["has_deid"]
        if bool(r.get("deid")) != has_deid:
            raise bd.BundleError(f"rekey: image {i} {'has' if has_deid else 'has no'} de-identified copy")
        for name in (f"{i}", f"{i}.deid") if has_deid else (f"{i}",):
            files.update(_copy_files(b, name))
        out.append({"id": i, "deid": has_deid})
    return out, files
