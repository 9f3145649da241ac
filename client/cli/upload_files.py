"""Which files ``trivault upload`` sends: a recursive scan for every format Pillow reads, each
file checked (decodes fully) and hashed, duplicates (same bytes) found before any upload.

A file whose extension is not an image extension is still taken when its content is a common
image format (:data:`SNIFFED_FORMATS`, recognised by Pillow from its first bytes): datasets ship
images without one (the Yale faces are GIFs named ``subject01.happy``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..images import HEIF_UNSUPPORTED, is_heif
from ..preprocess import check_size, viewed_rgb

SNIFFED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "TIFF", "PPM", "WEBP", "MPO"})
#: Phone formats Pillow cannot read here: scanned as images so that they are listed as failed with
#: what to do (``client.images.is_heif``), not silently skipped.
UNREADABLE_SUFFIXES = frozenset({".heic", ".heif", ".hif"})


def image_extensions() -> set[str]:
    """Every file extension Pillow can open (``.png``, ``.jpg``, ``.pgm``, ``.tif``, ``.webp`` ...)."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


@dataclass
class Candidate:
    """One file found under the upload folder and what became of it."""

    path: Path
    name: str  # path relative to the upload folder (the image's label)
    size: int = 0
    sha256: str = ""
    status: str = "new"  # new | failed | duplicate | uploaded
    detail: str = ""
    image_id: int | None = None
    deid: dict = field(default_factory=dict)


def scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, recursively, sorted; hidden entries skipped."""
    exts = image_extensions()
    images: list[Path] = []
    others: list[Path] = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        suffix = p.suffix.lower()
        (images if suffix in exts or suffix in UNREADABLE_SUFFIXES or sniffed_image(p) else others).append(p)
    return images, others


def sniffed_image(path: Path) -> bool:
    """True when Pillow recognises the file's first bytes as one of :data:`SNIFFED_FORMATS` (header only)."""
    try:
        with Image.open(path) as im:
            return im.format in SNIFFED_FORMATS
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def check(path: Path, folder: Path) -> Candidate:
    """Read, hash and fully decode one file; ``status`` is ``failed`` with the reason if it is unusable."""
    c = Candidate(path, str(path.relative_to(folder)))
    try:
        data = path.read_bytes()
        c.size, c.sha256 = len(data), hashlib.sha256(data).hexdigest()
        if is_heif(data):
            c.status, c.detail = "failed", HEIF_UNSUPPORTED
            return c
        with Image.open(path) as im:
            check_size(im.width, im.height)
            if im.format == "JPEG":  # decode the whole stream at 1/8 scale: 14 instead of 66 ms for 8 MP,
                im.draft("RGB", (im.width // 8, im.height // 8))  # a truncated file still fails
            viewed_rgb(im)  # the decode every later step does (size limit, colour mode) fails here first
    except OSError as exc:
        c.status, c.detail = "failed", _reason(exc)
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        c.status, c.detail = "failed", f"cannot decode ({exc})"
    return c


def _reason(exc: OSError) -> str:
    text = str(exc)
    if "cannot identify image file" in text:
        return "not an image Pillow can read"
    if "truncated" in text.lower():
        return "truncated image"
    return text


def mark_duplicates(found: list[Candidate], known: dict[str, int]) -> None:
    """Mark files whose bytes are already uploaded (``known``: sha256 -> id) or appear earlier in ``found``."""
    seen: dict[str, str] = {}
    for c in found:
        if c.status != "new":
            continue
        if c.sha256 in known:
            c.status, c.detail = "duplicate", f"same bytes as image {known[c.sha256]} (skipped)"
        elif c.sha256 in seen:
            c.status, c.detail = "duplicate", f"same bytes as {seen[c.sha256]} (skipped)"
        else:
            seen[c.sha256] = c.name


def deid_summary(metadata: dict) -> dict:
    """Counts of regions changed by kind (``faces``, ``plates``) from ``client.deid``'s metadata dict."""
    regions = metadata.get("regions", []) or []
    kinds = [str((r.get("region") or {}).get("kind", r.get("kind", ""))) for r in regions if isinstance(r, dict)]
    return {"faces": sum(k == "face" for k in kinds), "plates": sum(k == "plate" for k in kinds),
            "eps_total": metadata.get("eps_total"), "unchanged": bool(metadata.get("unchanged", not regions))}
