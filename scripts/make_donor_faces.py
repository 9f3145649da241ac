"""Cut the public donor faces of ``dp_donor`` out of the SFHQ sample grids; write client/deid/assets/donor_faces.npz.

Source: the GitHub repository SelfishGene/SFHQ-dataset (MIT licence, "Synthetic Faces High
Quality": StyleGAN2-generated faces of no real person), whose ``images/`` folder holds grids of
sample faces (1024x1024 FFHQ-aligned images shown at 270-1800 px). The grids are read from a
local git snapshot of that repository (never from the network at run time, never from
../shared/data). Usage::

    python scripts/make_donor_faces.py --repo /path/to/SFHQ-dataset/.git [--commit HEAD]

Steps: find the grid cells (dark separators), skip the rows of babies, toddlers and small
children in the age grids and the few cells in EXCLUDE, run CenterFace on each cell (box + 5
landmarks, score >= 0.7), cut a rectangle of CROP_SCALE x the box around the box centre, resize
to ``--width`` x ``--height``, keep ``--max-donors`` of them (fixed seed), drop
near-duplicates (the same image shown in several grids), fit the public colour latent
(:func:`client.deid.donor.fit_donor_latent`) on the donors themselves, and store everything
(JPEG bytes, boxes, landmarks, latents, the latent's basis, source and licence) in one npz.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.deid.detect import face_detector
from client.deid.donor import CROP_SCALE, DONOR_ASSET, fit_donor_latent, save_donor_asset

REPO = "SelfishGene/SFHQ-dataset"
LICENCE = "MIT (LICENSE: Copyright (c) 2022 David Beniaguev)"
#: grid file -> rows to skip (children: a child's face pasted on an adult's head looks wrong)
GRIDS = {
    "images/SFHQ_variability_ethnicity.jpg": (),
    "images/SFHQ_variability_age.jpg": (0, 1, 2),
    "images/SFHQ_variability_age_X_ethnicity_1.jpg": (0, 1, 2),
    "images/SFHQ_variability_age_X_ethnicity_2.jpg": (0, 1, 2),
    "images/SFHQ_sample_4x8.jpg": (),
    "images/SFHQ_sample_3x6.jpg": (),
    "images/SFHQ_sample_2x4.jpg": (),
    "images/SFHQ_variability_expression.jpg": (),
    "images/SFHQ_variability_hair_color.jpg": (),
    "images/SFHQ_variability_hair_style.jpg": (),
}


#: cells left out by eye (children; doll-like renders): (grid, row, col); their copies in other grids go too
EXCLUDE = {
    ("images/SFHQ_variability_ethnicity.jpg", 2, 1),
    ("images/SFHQ_sample_4x8.jpg", 2, 1),
    ("images/SFHQ_sample_4x8.jpg", 3, 1),
    ("images/SFHQ_sample_3x6.jpg", 1, 3),
}


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True).stdout


def _runs(frac: np.ndarray, min_len: int = 100) -> list[tuple[int, int]]:
    on = frac > 0.5
    edges = np.r_[0, np.flatnonzero(np.diff(on.astype(np.int8))) + 1, len(frac)]
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if on[a] and b - a >= min_len]


def grid_cells(rgb: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
    """Cells (x0, y0, x1, y1) per grid row: runs of columns / rows that are mostly not the dark background."""
    bg = rgb[5, 5].astype(np.int32)
    fg = np.abs(rgb.astype(np.int32) - bg).sum(axis=2) >= 30
    cols, rows = _runs(fg.mean(axis=0)), _runs(fg.mean(axis=1))
    return [[(x0, y0, x1, y1) for x0, x1 in cols] for y0, y1 in rows]


def cut(cell: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(height x width RGB crop, box (x, y, w, h) and landmarks (5, 2) as fractions of the crop's width and
    height) or None if no clear face. The crop is CROP_SCALE x the box around the box centre, resized to
    width x height (the box's aspect is kept on average: the boxes are about 1.3 times taller than wide)."""
    found = face_detector().with_landmarks(cell)
    if not found:
        return None
    r, marks = max(found, key=lambda f: f[0].score)
    if r.score < 0.7:
        return None
    side = CROP_SCALE * max(r.w, r.h * width / height)
    cw, ch = side, side * height / width
    cx, cy = r.x + r.w / 2.0, r.y + r.h / 2.0
    x0, y0 = cx - cw / 2.0, cy - ch / 2.0
    m = np.array([[width / cw, 0.0, -x0 * width / cw], [0.0, height / ch, -y0 * height / ch]])
    crop = cv2.warpAffine(cell, m, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)
    box = np.array([(r.x - x0) / cw, (r.y - y0) / ch, r.w / cw, r.h / ch])
    return crop, box, (marks - [x0, y0]) / [cw, ch]


def choose_cap(caps: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)) -> None:
    """Print, per utility cap C, the leave-one-out expected donor distance at eps 0.5..8 over the shipped donors
    (public data only); UTILITY_CAP in donor.py is the C with the largest fall from eps 0.5 to 8."""
    from client.deid.donor import donor_set

    lat = donor_set().latents
    dist = np.linalg.norm(lat[:, None] - lat[None], axis=2)
    for cap in caps:
        row = []
        for eps in (0.5, 1.0, 2.0, 4.0, 8.0):
            e = []
            for i in range(len(lat)):
                d = np.delete(dist[i], i)
                w = np.exp(eps * -np.minimum(d, cap) / (2 * cap))
                e.append(float(w @ d / w.sum()))
            row.append(np.mean(e))
        print(f"C={cap}: " + " ".join(f"{v:.3f}" for v in row) + f"  fall {row[0] - row[-1]:.3f}")


def main() -> None:
    """Cut, deduplicate, encode and save the donors."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, help=f"git directory of a snapshot of {REPO}")
    ap.add_argument("--choose-cap", action="store_true", help="print the utility-cap table for the shipped donors")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--width", type=int, default=76, help="crop width in pixels")
    ap.add_argument("--height", type=int, default=100, help="crop height in pixels")
    ap.add_argument("--quality", type=int, default=82, help="JPEG quality of the stored crops")
    ap.add_argument("--max-donors", type=int, default=240,
                    help="keep this many, drawn with a fixed public seed (asset size)")
    ap.add_argument("-o", "--out", type=Path, default=DONOR_ASSET)
    args = ap.parse_args()
    if args.choose_cap:
        choose_cap()
        return
    if args.repo is None:
        ap.error("--repo is required")
    commit = _git(args.repo, "rev-parse", args.commit).decode().strip()
    licence = _git(args.repo, "show", f"{commit}:LICENSE").decode()
    if "MIT License" not in licence:
        sys.exit("the snapshot's LICENSE is not the MIT licence checked when this script was written: check it")
    crops, boxes, marks, origin, thumbs, banned = [], [], [], [], [], []
    for path, skip in GRIDS.items():
        data = np.frombuffer(_git(args.repo, "show", f"{commit}:{path}"), np.uint8)
        rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        n = 0
        for i, row in enumerate(grid_cells(rgb)):
            if i in skip:
                continue
            for j, (x0, y0, x1, y1) in enumerate(row):
                got = cut(np.ascontiguousarray(rgb[y0:y1, x0:x1]), args.width, args.height)
                if got is None:
                    continue
                thumb = cv2.resize(cv2.cvtColor(got[0], cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
                t = thumb.astype(np.float64).ravel()
                t = (t - t.mean()) / (t.std() + 1e-6)
                if (path, i, j) in EXCLUDE:
                    banned.append(t)
                    continue
                if any(float(t @ s) / t.size > 0.95 for s in thumbs + banned):
                    continue  # the same face in another grid (or a copy of an excluded one)
                thumbs.append(t)
                crops.append(got[0]), boxes.append(got[1]), marks.append(got[2])
                origin.append(f"{path} row {i} col {j}")
                n += 1
        print(f"{path}: {n} donors", file=sys.stderr)
    keep = np.sort(np.random.default_rng(0).permutation(len(crops))[: args.max_donors])
    crops, boxes, marks, origin = ([x[i] for i in keep] for x in (crops, boxes, marks, origin))
    latent = fit_donor_latent(np.stack(crops), np.stack(boxes))
    source = (f"github.com/{REPO} @ {commit}, images/*.jpg sample grids ({len(crops)} faces, "
              f"{args.width}x{args.height} px)")
    save_donor_asset(args.out, np.stack(crops), np.stack(boxes), np.stack(marks), latent, source, LICENCE,
                     origin, args.quality)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB, {len(crops)} donors)", file=sys.stderr)


if __name__ == "__main__":
    main()
