"""``trace``: the owner names the recipient a leaked copy was released to.

Steps: (1) read the suspect file; (2) for the image (``image_id``, else every image and copy
the owner holds, best thumbnail match first) fetch the owner's own unmarked copy (the
owner's retrieval is never marked); (3) candidates are the users whose retrieval of that
image the servers' audit logs record as released (or ``candidates`` if given); (4) regenerate
the image's mark keys from the owner's signing key and correlate (``client.watermark.detect``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

from .errors import TriVaultError
from .pixel_release import released_rgb
from .rekey import deid_copies
from .watermark import TraceResult, detect, load_rgb, owner_mark_keys, signing_key_bytes

THUMB = 64
MIN_MATCH = 0.8  # thumbnail correlation below which a copy is not the leaked image


def retrieved_by(exports: dict[int, list[dict]], image_id: int) -> list[str]:
    """Users the audit logs record as having been released ``image_id`` (any server)."""
    who = set()
    for entries in exports.values():
        for e in entries:
            if e.get("event") == "retrieve" and str(e.get("subject")) == str(int(image_id)) \
                    and (e.get("detail") or {}).get("outcome") not in (None, "NOTHING"):
                who.add(str(e.get("actor")))
    return sorted(who)


def _thumb(rgb: np.ndarray) -> np.ndarray:
    t = cv2.resize(rgb.astype(np.float32).mean(axis=2), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-9)


def _copies(client, image_ids: Iterable[int], progress: bool) -> Iterable[tuple[int, bool, np.ndarray]]:
    """(image id, is de-identified copy, its unmarked released form ``released_rgb``) per copy the owner opens."""
    known = deid_copies(client)
    for i in tqdm(list(image_ids), desc="trace", unit="img", disable=not progress):
        for deid in (False, True) if known.get(int(i), True) else (False,):
            try:
                r = client.retrieve(int(i), deid=deid)
            except TriVaultError:
                continue
            if r.watermarked:
                raise TriVaultError("only the image's owner can trace (others only receive marked copies)")
            if r.kind == ("deid" if deid else "orig"):
                yield int(i), deid, released_rgb(r.data)


def trace_file(client, path: str | Path, image_id: int | None = None, candidates: Sequence[str] | None = None,
               progress: bool = False) -> TraceResult | None:
    """The recipient ``path`` was released to (``TraceResult.user_id``, None if no sure match), or
    None if no image of the owner matches the file."""
    suspect = load_rgb(path)
    ids = [int(image_id)] if image_id is not None else client.info()["image_ids"]
    st = _thumb(suspect)
    best: tuple[float, int, bool, np.ndarray] | None = None
    for i, deid, rgb in _copies(client, ids, progress):
        score = float((st * _thumb(rgb)).sum())
        if best is None or score > best[0]:
            best = (score, i, deid, rgb)
    if best is None or (image_id is None and best[0] < MIN_MATCH):
        return None
    _, i, deid, original = best
    users = list(candidates) if candidates is not None else retrieved_by(client.audit_exports(), i)
    users = [u for u in users if u != client.identity.user_id]
    keys = owner_mark_keys(signing_key_bytes(client.identity), i, deid)
    return detect(suspect, original, keys, users, i)
