"""The owner's de-identification workbench: images dropped in, releases at a chosen eps, approval.

State behind ``trivault deid serve`` (see serve.py), kept apart from HTTP so it is plain Python.
Every preview is a fresh DP release (noise from os.urandom) shown only to the owner, on the
owner's machine; only the release the owner approves leaves it (written to the output folder),
so the privacy cost that counts is the eps of the approved release, stated in its metadata.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..preprocess import ImageInputError, check_size, rgb_uint8, viewed_rgb
from .api import MECHANISMS, DeidResult, deidentify, merge_plates_into_faces
from .detect import FACE, PLATE, Region, detect
from .latent import load_basis
from .metrics import ssim

#: Mechanisms with an eps-DP guarantee for a whole face (any face swapped for any other).
FACE_DP = ("dp_donor", "dp_latent")
#: Candidate identities assumed by the re-identification bound (a 1-in-100 guess).
REID_CANDIDATES = 100


def reid_risk_bound(eps: float, mechanism: str, candidates: int = REID_CANDIDATES) -> float | None:
    """Upper bound on the chance that an attacker names the right person among ``candidates``
    equally likely ones from one face released eps-DP: e^eps / (e^eps + candidates - 1)
    (the posterior of any candidate grows by at most e^eps). None: the mechanism gives no bound."""
    if mechanism not in FACE_DP:
        return None
    return math.exp(eps) / (math.exp(eps) + candidates - 1)


def decode_image(data: bytes) -> np.ndarray:
    """Image file bytes -> HxWx3 uint8 RGB, with clear errors (size checked before decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_size(im.width, im.height)
            return rgb_uint8(np.asarray(viewed_rgb(im)))
    except UnidentifiedImageError as exc:
        raise ImageInputError("not a readable image (unknown or corrupt format)") from exc
    except (OSError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"could not decode image ({exc})") from exc


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> str:
    """RGB array -> ``data:image/jpeg;base64,...`` URL for the page."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def covered_share(targets: list[Region], regions: list[Region], shape: tuple[int, ...], share: float = 0.9) -> float:
    """Share of ``targets`` with at least ``share`` of their box inside ``regions`` (1.0 if none)."""
    if not targets:
        return 1.0
    mask = np.zeros(shape[:2], bool)
    for r in regions:
        mask[r.y : r.y + r.h, r.x : r.x + r.w] = True
    return float(np.mean([mask[t.y : t.y + t.h, t.x : t.x + t.w].mean() >= share for t in targets]))


@dataclass
class Item:
    """One dropped image, what the detectors found, and its latest release."""

    name: str
    rgb: np.ndarray
    detected: list[Region]
    release: DeidResult | None = None
    settings: dict = field(default_factory=dict)


def _region_dict(r: Region) -> dict:
    return {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "kind": r.kind, "source": r.source}


def parse_regions(raw: list[dict], width: int, height: int) -> list[Region]:
    """Boxes from the page ({x, y, w, h, kind, source?}) -> regions clipped to the image."""
    out = []
    for b in raw:
        kind = str(b.get("kind", FACE))
        if kind not in (FACE, PLATE):
            raise ValueError(f"box kind must be 'face' or 'plate', not {kind!r}")
        r = Region(int(b["x"]), int(b["y"]), int(b["w"]), int(b["h"]), kind, 1.0, str(b.get("source", "manual")))
        clipped = r.clip(width, height)
        if clipped is not None:
            out.append(clipped)
    return out


class Workbench:
    """Images in memory, releases on demand, approved releases written to ``out_dir``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.items: dict[str, Item] = {}
        self._lock = threading.Lock()

    @staticmethod
    def warm() -> None:
        """Load the detectors, the face basis and the donors now, so the first drop answers quickly."""
        from .donor import donor_set

        detect(np.full((64, 64, 3), 128, np.uint8))
        load_basis(), donor_set()

    def add(self, name: str, data: bytes) -> dict:
        """Decode and detect one image; returns its id, size and detected boxes."""
        rgb = decode_image(data)
        found = [r for r in (b.clip(rgb.shape[1], rgb.shape[0]) for b in merge_plates_into_faces(detect(rgb)))
                 if r is not None]
        with self._lock:
            item_id = f"img{len(self.items) + 1}"
            self.items[item_id] = Item(Path(name).name or item_id, rgb, found)
        return {"id": item_id, "name": self.items[item_id].name, "width": rgb.shape[1], "height": rgb.shape[0],
                "regions": [_region_dict(r) for r in found]}

    def release(self, item_id: str, eps: float, mechanism: str, boxes: list[dict]) -> dict:
        """A fresh release of one image with the owner's settings, and its metrics."""
        item = self._item(item_id)
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown mechanism {mechanism!r}")
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError("eps must be a positive number")
        regions = parse_regions(boxes, item.rgb.shape[1], item.rgb.shape[0])
        result = deidentify(item.rgb, eps, mechanism, boxes=regions)
        item.release, item.settings = result, {"eps": eps, "mechanism": mechanism}
        return {"image": encode_jpeg(result.image), "metrics": self.metrics(item, result, eps, mechanism)}

    def metrics(self, item: Item, result: DeidResult, eps: float, mechanism: str) -> dict:
        """Re-identification bound, SSIM, plates and faces covered, face distance in the public latent."""
        from .donor import donor_set

        latent = donor_set().latent
        faces = [r for r in result.regions if r.kind == FACE]
        dist = [float(np.linalg.norm(latent.encode(result.image, r) - latent.encode(item.rgb, r))) for r in faces]
        detected_plates = [r for r in item.detected if r.kind == PLATE]
        detected_faces = [r for r in item.detected if r.kind == FACE]
        return {
            "reid_risk": reid_risk_bound(eps, mechanism) if faces else 0.0,
            "ssim": ssim(item.rgb, result.image) if min(item.rgb.shape[:2]) >= 7 else None,
            "plates_covered": covered_share(detected_plates, result.regions, item.rgb.shape),
            "plates_detected": len(detected_plates),
            "faces_covered": covered_share(detected_faces, result.regions, item.rgb.shape),
            "faces": len(faces),
            "face_distance": float(np.mean(dist)) if dist else None,
            "eps_total": result.metadata.get("eps_total"),
        }

    def approve(self) -> list[str]:
        """Write every image's latest release (PNG) and its privacy metadata (JSON) to ``out_dir``."""
        pending = [(i, it) for i, it in self.items.items() if it.release is not None]
        if not pending:
            raise ValueError("nothing to approve: drop an image first")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for item_id, it in pending:
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(it.name).stem) or item_id
            png, meta = self.out_dir / f"{stem}.deid.png", self.out_dir / f"{stem}.deid.json"
            release = it.release
            assert release is not None  # pending holds released items only, and a release is never unset
            Image.fromarray(release.image).save(png)
            meta.write_text(json.dumps({**release.metadata, "approved": True, **it.settings,
                                        "regions": [_region_dict(r) for r in release.regions]}, indent=2))
            written += [str(png), str(meta)]
        return written

    def _item(self, item_id: str) -> Item:
        if item_id not in self.items:
            raise KeyError(f"no image {item_id!r}")
        return self.items[item_id]
