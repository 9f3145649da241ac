"""Preview contact sheet: original, a DP mechanism at several eps, and blur/mosaic baselines, with metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .api import BoxesArg, deidentify, merge_plates_into_faces
from .detect import detect
from .metrics import dhash_distance, ssim
from .noise import NoiseSource

TILE_WIDTH = 320
LABEL_HEIGHT = 54
COLUMNS = 4


def sheet_size(image_shape: tuple[int, ...], n_tiles: int, tile_width: int = TILE_WIDTH,
               columns: int = COLUMNS) -> tuple[int, int]:
    """(width, height) in pixels of a contact sheet with ``n_tiles`` tiles."""
    h, w = image_shape[:2]
    tile_h = max(1, round(h * tile_width / w))
    cols = min(columns, n_tiles)
    rows = -(-n_tiles // cols)
    return cols * tile_width, rows * (tile_h + LABEL_HEIGHT)


def _tile(img: np.ndarray, lines: list[str], tile_width: int) -> np.ndarray:
    h, w = img.shape[:2]
    tile_h = max(1, round(h * tile_width / w))
    body = cv2.resize(img, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
    label = np.full((LABEL_HEIGHT, tile_width, 3), 255, np.uint8)
    for i, line in enumerate(lines[:3]):
        cv2.putText(label, line, (6, 16 + 17 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([body, label])


def contact_sheet(image: np.ndarray, eps_values: Sequence[float], mechanism: str = "dp_donor",
                  boxes: BoxesArg = None, seed: int | None = None,
                  tile_width: int = TILE_WIDTH) -> tuple[np.ndarray, list[dict]]:
    """Build the sheet (RGB uint8) and the per-tile metrics (name, eps, ssim, dhash, eps_total)."""
    regions = merge_plates_into_faces(detect(image)) if boxes is None else boxes
    noise = None if seed is None else NoiseSource(seed)  # one stream: every tile gets its own draw
    variants: list[tuple[str, float | None, np.ndarray, dict]] = [("original", None, image, {"eps_total": None})]
    eps: float | None  # float here; the loop over variants below also binds None (original, blur, mosaic)
    for eps in eps_values:
        r = deidentify(image, eps, mechanism, boxes=regions, noise=noise)
        variants.append((mechanism, eps, r.image, r.metadata))
    for base in ("blur", "mosaic"):
        r = deidentify(image, 1.0, base, boxes=regions, noise=noise)
        variants.append((base, None, r.image, r.metadata))
    tiles, rows = [], []
    n_regions = len(regions)
    for name, eps, img, meta in variants:
        s, d = ssim(image, img), dhash_distance(image, img)
        rows.append({"name": name, "eps": eps, "ssim": s, "dhash": d, "eps_total": meta.get("eps_total")})
        title = name if eps is None else f"{name} eps={eps:g}/region"
        if name == "original":
            second = f"{n_regions} region(s) found" if n_regions else "no faces/plates found"
        else:
            second = f"SSIM {s:.3f}  dHash {d}/64"
        third = "no DP guarantee" if name in ("blur", "mosaic") else (
            "" if name == "original" else f"image total eps={meta.get('eps_total'):g}")
        tiles.append(_tile(img, [title, second, third], tile_width))
    cols = min(COLUMNS, len(tiles))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    return grid, rows


def write_contact_sheet(path: str | Path, image: np.ndarray, eps_values: Sequence[float], **kwargs) -> list[dict]:
    """Write the contact sheet as PNG to ``path``; return the per-tile metrics."""
    grid, rows = contact_sheet(image, eps_values, **kwargs)
    Image.fromarray(grid).save(Path(path), format="PNG")
    return rows


def face_sheet(images: Sequence[tuple[str, np.ndarray]], eps_values: Sequence[float], mechanism: str = "dp_donor",
               seed: int | None = None, tile: int = 160) -> np.ndarray:
    """One row per image: the original and each eps, zoomed on the largest detected face (2x its box)."""
    from .detect import FACE

    noise = None if seed is None else NoiseSource(seed)
    rows = []
    for name, img in images:
        regions = merge_plates_into_faces(detect(img))
        faces = [r for r in regions if r.kind == FACE]
        if not faces:
            continue
        f = max(faces, key=lambda r: r.w * r.h)
        side = int(2.2 * max(f.w, f.h))
        cx, cy = f.x + f.w // 2, f.y + f.h // 2
        x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
        x1, y1 = min(img.shape[1], x0 + side), min(img.shape[0], y0 + side)
        variants = [("original", img)] + [
            (f"eps={e:g}", deidentify(img, e, mechanism, boxes=regions, noise=noise).image) for e in eps_values]
        cells = []
        for label, out in variants:
            crop = cv2.resize(np.ascontiguousarray(out[y0:y1, x0:x1]), (tile, tile), interpolation=cv2.INTER_AREA)
            cell = np.vstack([crop, np.full((18, tile, 3), 255, np.uint8)])
            text = f"{name[:14]} {label}" if label == "original" else label
            cv2.putText(cell, text, (4, tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            cells.append(np.pad(cell, ((0, 2), (0, 2), (0, 0)), constant_values=255))
        rows.append(np.hstack(cells))
    return np.vstack(rows)


def main() -> None:
    """``python -m client.deid.contact_sheet OUT.png IMG... [--eps 0.5,1,2,4,8] [--seed S]``: face rows."""
    import argparse

    from .image_io import load_image

    ap = argparse.ArgumentParser(description="zoomed face contact sheet: original and each eps per image")
    ap.add_argument("out", type=Path)
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--eps", default="0.5,1,2,4,8")
    ap.add_argument("--mechanism", default="dp_donor")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    named = [(p.stem if p.parent.name in ("scenes", ".") else f"{p.parent.name}/{p.stem}", load_image(p))
             for p in args.images]
    sheet = face_sheet(named, [float(e) for e in args.eps.split(",")], args.mechanism, args.seed)
    Image.fromarray(sheet).save(args.out, format="PNG")
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
