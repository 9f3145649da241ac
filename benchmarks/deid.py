"""De-identification benchmark over ../shared/data/deid: utility, re-identification, plates, speed.

``python -m benchmarks.deid --json`` prints one JSON line per method and epsilon with
method, eps, ssim, dhash, l0, l2, reid_rank1, reid_self, face_still_detected,
plate_edit_distance_min, plate_edit_ge3_share, images_per_s. Definitions:

* ssim / dhash / l0 / l2: means over the 56 scene images (whole image, original vs
  released; dhash = Hamming bits of 64, l0 = changed pixels, l2 in 0..255 units).
* reid_rank1: each de-identified face of faces/<identity>/* (369 images, 40 identities,
  largest detected face) is matched by dlib ResNet descriptors against the ORIGINAL faces
  of all other images; share whose nearest neighbour has the right identity.
  reid_self: share within 0.6 of its own original. null if dlib is not installed.
* face_still_detected: share of de-identified face regions (faces set + scenes) on
  which CenterFace still finds a face (IoU >= 0.3).
* plate_*: end to end over the 40 ground-truth plates (detector boxes). A plate not
  covered (>= 50%) by a detected box is released unchanged (edit distance 0). The
  released text is known for dp_plate (used by dp_latent); for pixel baselines no OCR
  engine is available offline, so these are null. The extra line ``dp_plate_gt_text``
  runs dp_plate alone on the ground-truth boxes with the true text as if from OCR.
* images_per_s: deidentify() including detection on the scene images resized to
  640x480, on one thread (OpenCV and onnxruntime set to one thread).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from client.deid import deidentify
from client.deid import mechanisms as M
from client.deid.detect import FACE, PLATE, Region, detect, face_detector, iou
from client.deid.image_io import load_image
from client.deid.metrics import (dhash_distance, dlib_available, edit_distance, face_embedder, l0, l2,
                                 reid_rates, ssim)
from client.deid.noise import NoiseSource

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deid"
RUNS = [("dp_latent", 0.5), ("dp_latent", 1.0), ("dp_latent", 4.0), ("dp_pixelize", 1.0), ("blur", None),
        ("mosaic", None)]


def _gt(name: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for row in csv.DictReader((DATA / "scenes" / name).open()):
        out[row["file"]].append(row)
    return out


def _load_sets() -> tuple[list[tuple[str, str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    faces = []
    for p in sorted((DATA / "faces").glob("*/*")):
        if p.parent.is_dir() and p.suffix.lower() not in (".txt", ".csv"):
            faces.append((p.parent.name, f"{p.parent.name}/{p.name}", load_image(p)))
    scenes = [(p.name, load_image(p)) for p in sorted((DATA / "scenes").iterdir()) if p.suffix.lower() in
              (".jpg", ".jpeg", ".png", ".gif", ".pgm")]
    return faces, scenes


def _largest_face(regions: list[Region]) -> Region | None:
    fs = [r for r in regions if r.kind == FACE]
    return max(fs, key=lambda r: r.w * r.h) if fs else None


def _still_detected(img: np.ndarray, regions: list[Region]) -> list[bool]:
    found = face_detector()(img)
    return [any(iou(r, d) >= 0.3 for d in found) for r in regions if r.kind == FACE]


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def run(seed: int | None, log) -> list[dict]:
    """Run every method and return the result rows."""
    faces, scenes = _load_sets()
    log(f"{len(faces)} identity images, {len(scenes)} scenes")
    det_faces = [detect(img) for _, _, img in faces]
    det_scenes = [detect(img) for _, img in scenes]
    plates_gt = _gt("plates.csv")
    reid_ok = dlib_available()
    emb = face_embedder() if reid_ok else None
    gallery, g_ids, g_keys, orig_of = [], [], [], {}
    if reid_ok:
        for (ident, key, img), regs in zip(faces, det_faces):
            f = _largest_face(regs)
            if f is not None:
                v = emb(img, f)
                gallery.append(v), g_ids.append(ident), g_keys.append(key)
                orig_of[key] = v
        gallery = np.array(gallery)
    small = [cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA) for _, img in scenes]
    rows = []
    for method, eps in RUNS:
        e = 1.0 if eps is None else eps
        t0 = time.time()
        probes, p_ids, p_keys, p_orig, still = [], [], [], [], []
        for (ident, key, img), regs in zip(faces, det_faces):
            res = deidentify(img, e, method, boxes=regs, seed=seed)
            still += _still_detected(res.image, regs)
            f = _largest_face(regs)
            if reid_ok and f is not None:
                probes.append(emb(res.image, f)), p_ids.append(ident), p_keys.append(key), p_orig.append(orig_of[key])
        s_ssim, s_dh, s_l0, s_l2, edits = [], [], [], [], []
        for (name, img), regs in zip(scenes, det_scenes):
            res = deidentify(img, e, method, boxes=regs, seed=seed)
            s_ssim.append(ssim(img, res.image)), s_dh.append(dhash_distance(img, res.image))
            s_l0.append(l0(img, res.image)), s_l2.append(l2(img, res.image))
            still += _still_detected(res.image, regs)
            for row in plates_gt.get(name, []):
                b = Region(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]), PLATE)
                cover = np.zeros(img.shape[:2], bool)
                text = row["text"]
                for r, released in zip(res.regions, res.released_texts):
                    if r.kind == PLATE:
                        cover[r.y : r.y + r.h, r.x : r.x + r.w] = True
                        if released is not None and iou(r, b) > 0:
                            text = released
                covered = cover[b.y : b.y + b.h, b.x : b.x + b.w].mean() >= 0.5
                if not covered:
                    edits.append(0)
                elif method == "dp_latent":
                    edits.append(edit_distance(row["text"], text))
        n_scene_faces = sum(1 for regs in det_scenes for r in regs if r.kind == FACE)
        log(f"{method} eps={eps}: quality pass {time.time() - t0:.0f}s, {len(still)} face regions "
            f"({n_scene_faces} in scenes)")
        t1 = time.time()
        for img in small:
            deidentify(img, e, method, seed=seed)
        ips = len(small) / (time.time() - t1)
        rank1, self_share = reid_rates(np.array(probes), p_ids, p_keys, gallery, g_ids, g_keys,
                                       np.array(p_orig)) if reid_ok and probes else (None, None)
        plate_known = method == "dp_latent" or len(edits) == len(sum(plates_gt.values(), []))
        rows.append({
            "method": method, "eps": eps, "ssim": _mean(s_ssim), "dhash": _mean(s_dh), "l0": _mean(s_l0),
            "l2": _mean(s_l2), "reid_rank1": rank1, "reid_self": self_share,
            "face_still_detected": _mean([float(x) for x in still]),
            "plate_edit_distance_min": (min(edits) if edits and plate_known else None),
            "plate_edit_ge3_share": (_mean([float(x >= 3) for x in edits]) if edits and plate_known else None),
            "images_per_s": ips,
        })
    rows.append(_plate_only(seed, plates_gt, scenes))
    return rows


def _plate_only(seed: int | None, plates_gt: dict, scenes) -> dict:
    """dp_plate on ground-truth boxes with the true text (oracle OCR), eps = 1 per plate."""
    noise = NoiseSource(seed)
    images = dict(scenes)
    edits, t0, n = [], time.time(), 0
    for name, rows in plates_gt.items():
        for row in rows:
            r = Region(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]), PLATE)
            _, released, _ = M.dp_plate(images[name], r, 1.0, noise, text=row["text"])
            edits.append(edit_distance(row["text"], released))
            n += 1
    return {"method": "dp_plate_gt_text", "eps": 1.0, "ssim": None, "dhash": None, "l0": None, "l2": None,
            "reid_rank1": None, "reid_self": None, "face_still_detected": None,
            "plate_edit_distance_min": min(edits), "plate_edit_ge3_share": float(np.mean([x >= 3 for x in edits])),
            "images_per_s": n / (time.time() - t0)}


def main() -> None:
    """Entry point."""
    ap = argparse.ArgumentParser(description="TriVault de-identification benchmark")
    ap.add_argument("--json", action="store_true", help="print one JSON line per method/eps (default: a table)")
    ap.add_argument("--seed", type=int, default=None, help="fixed noise seed (default: os.urandom)")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = run(args.seed, log)
    for row in rows:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
