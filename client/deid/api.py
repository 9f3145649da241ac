"""``deidentify``: detect private regions and release them through one mechanism, with accounting."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..preprocess import rgb_uint8
from . import mechanisms as mech
from .accounting import PrivacyLedger, RegionCharge
from .detect import FACE, PLATE, Region, detect, iou, parse_boxes
from .donor import dp_donor
from .noise import NoiseSource

MECHANISMS = ("dp_latent", "dp_donor", "dp_pixelize", "blur", "mosaic")

_GUARANTEE = {
    ("dp_latent", FACE): "eps-DP for any change inside the face ellipse (Laplace on clipped eigenface latent)",
    ("dp_latent", PLATE): "dp_plate: text drawn uniformly without OCR (0-DP); metric-DP on codes with OCR text",
    (
        "dp_donor",
        FACE,
    ): "eps-DP for any change inside the face ellipse (exponential mechanism over 240 public synthetic SFHQ faces)",
    ("dp_donor", PLATE): "dp_plate: text drawn uniformly without OCR (0-DP); metric-DP on codes with OCR text",
    ("dp_pixelize", FACE): "eps-DP for changes of up to m pixels in the box (DP-Pix)",
    ("dp_pixelize", PLATE): "eps-DP for changes of up to m pixels in the box (DP-Pix)",
    ("blur", FACE): "none (baseline)",
    ("blur", PLATE): "none (baseline)",
    ("mosaic", FACE): "none (baseline)",
    ("mosaic", PLATE): "none (baseline)",
}


@dataclass
class DeidResult:
    """De-identified image (HxWx3 uint8 RGB), the regions handled and the accounting metadata."""

    image: np.ndarray
    regions: list[Region]
    metadata: dict = field(default_factory=dict)
    released_texts: list[str | None] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        """True when nothing was detected or given, so the image came back as it was."""
        return not self.regions


#: A detected plate box under this score that overlaps a face box at IoU >= PLATE_ON_FACE_IOU is a face
#: mistaken for a plate (seen on a VOC scene): the face's box grows to cover both, so every pixel of the
#: plate box is still replaced, by a face instead of a synthetic plate pasted over one.
PLATE_ON_FACE_SCORE, PLATE_ON_FACE_IOU = 0.5, 0.3


def merge_plates_into_faces(found: list[Region]) -> list[Region]:
    """Detected regions with each unsure plate box lying on a face merged into that face's box (see above)."""
    faces = [r for r in found if r.kind == FACE]
    out_plates = []
    for p in (r for r in found if r.kind == PLATE):
        hits = [i for i, f in enumerate(faces) if p.score < PLATE_ON_FACE_SCORE and iou(p, f) >= PLATE_ON_FACE_IOU]
        if not hits:
            out_plates.append(p)
            continue
        i = max(hits, key=lambda k: iou(p, faces[k]))
        f = faces[i]
        x0, y0 = min(f.x, p.x), min(f.y, p.y)
        x1, y1 = max(f.x + f.w, p.x + p.w), max(f.y + f.h, p.y + p.h)
        faces[i] = Region(x0, y0, x1 - x0, y1 - y0, FACE, f.score, f.source)
    return faces + out_plates


BoxesArg = str | Sequence[Region] | Sequence[Sequence[int]] | None


def _as_regions(boxes: BoxesArg) -> list[Region]:
    """Accept "x,y,w,h;...", Region objects, or (x, y, w, h[, kind]) tuples."""
    if boxes is None:
        return []
    if isinstance(boxes, str):
        return parse_boxes(boxes)
    out = []
    for b in boxes:
        if isinstance(b, Region):
            out.append(b)
        else:
            x, y, w, h, *rest = b
            out.append(Region(int(x), int(y), int(w), int(h), str(rest[0]) if rest else FACE, 1.0, "manual"))
    return out


def deidentify(image: np.ndarray, eps: float, mechanism: str = "dp_donor", boxes: BoxesArg = None,
               seed: int | None = None, *, detect_faces: bool = True, detect_plates: bool = True,
               plate_ocr: Callable[[np.ndarray], str | None] | None = None, pixelize_m: int = 16,
               noise: NoiseSource | None = None) -> DeidResult:
    """De-identify faces and plates of ``image`` with ``mechanism`` at ``eps`` per region.

    ``boxes`` (by hand) replaces detection. ``seed`` and ``noise`` are for tests and
    benchmarks only: without them all DP noise comes from os.urandom. ``seed`` starts a
    fresh stream for this image; to give many images different noise from one seed,
    pass the same ``noise=NoiseSource(seed)`` to every call (a reproducible sequence).
    The total eps of the image is the sum over regions.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose one of {', '.join(MECHANISMS)}")
    if not (isinstance(eps, (int, float)) and eps > 0 and not math.isnan(eps)):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    rgb = rgb_uint8(image)
    H, W = rgb.shape[:2]
    if boxes is not None:
        found, how = _as_regions(boxes), "given boxes"
    else:
        found, how = merge_plates_into_faces(detect(rgb, faces=detect_faces, plates=detect_plates)), "detection"
    regions = [r for r in (b.clip(W, H) for b in found) if r is not None]
    if noise is None:
        noise = NoiseSource(seed)
    elif seed is not None:
        raise ValueError("give either seed or noise, not both")
    ledger = PrivacyLedger(noise.describe())
    out, texts = rgb, []
    for r in regions:
        text, spent = None, (None if mechanism in ("blur", "mosaic") else float(eps))
        if mechanism == "blur":
            out = mech.gaussian_blur(out, r)
        elif mechanism == "mosaic":
            out = mech.mosaic(out, r)
        elif mechanism == "dp_pixelize":
            out = mech.dp_pixelize(out, r, eps, noise, m=pixelize_m)
        elif r.kind == PLATE:
            ocr_text = plate_ocr(rgb[r.y : r.y + r.h, r.x : r.x + r.w]) if plate_ocr else None
            out, text, spent = mech.dp_plate(out, r, eps, noise, text=ocr_text)
        elif mechanism == "dp_donor":
            out = dp_donor(out, r, eps, noise)
        else:
            out = mech.dp_latent(out, r, eps, noise)
        texts.append(text)
        ledger.charge(RegionCharge(r, mechanism, spent, _GUARANTEE[(mechanism, r.kind)], text))
    if regions:
        message = f"{len(regions)} region(s) from {how} de-identified with {mechanism}"
    else:
        message = f"no faces or plates found ({how}); image returned unchanged"
    meta = ledger.metadata(mechanism, float(eps), message)
    return DeidResult(out if regions else rgb.copy(), regions, meta, texts)
