"""De-identification benchmark over ../shared/data/deid: utility, re-identification, plates, speed.

``python -m benchmarks.deid --json`` prints one JSON line per method and epsilon, then one
``"method": "summary"`` line. Row keys: method, eps, ssim, dhash, l0, l2, reid_rank1, reid_self,
face_still_detected, latent_distance, naturalness, plate_recall, plate_covered, images_per_s, images_per_cpu_s.
Definitions:

* ssim / dhash / l0 / l2: means over the 53 scene images (whole image, original vs
  released; dhash = Hamming bits of 64, l0 = changed pixels, l2 in 0..255 units).
* reid_rank1: each de-identified face of faces/<identity>/* (369 images, 40 identities,
  largest detected face) is matched by dlib ResNet descriptors against the ORIGINAL faces
  of all other images; share whose nearest neighbour has the right identity (chance = 1/40 to
  1/20 depending on the identity). reid_self: share within 0.6 of its own original. null if
  dlib is not installed.
* face_still_detected: share of de-identified face regions (faces set + scenes) on
  which CenterFace still finds a face (IoU >= 0.3).
* expected_donor_distance (dp_donor): the exact expected latent distance between each identity
  image's original largest face and the donor the mechanism draws (from its selection
  probabilities, so without sampling noise); it must fall as eps grows.
* latent_distance: mean L2 distance, in dp_donor's public colour latent (16x16 CIELAB face box, PCA
  fitted on the SFHQ donors, clipped, k = 8), between the released and the original largest face
  of each identity image (grows as the face moves away).
* naturalness: over the same face regions, ``detector_confidence`` = mean CenterFace score on
  the released face / score on the original (0 where no face is found), and ``sharpness`` =
  mean variance of the Laplacian inside the face box, released / original (1 = as sharp).
* plate_recall: share of the 40 ground-truth plates matched by a detected plate box with
  IoU >= 0.3 (the detector in use: YOLOv8n, installed by setup, else Haar), also per
  US/EU/BR in the summary line.
* plate_covered: end to end, share of the 40 ground-truth plates of which at least 90% of the
  box lies inside regions replaced in the released image (a missed plate is released as is).
* images_per_s: deidentify() including face and plate detection on the 53 scene images resized
  to 640x480, one thread (torch, OpenCV and onnxruntime set to one thread); images_per_cpu_s:
  the same divided by this process's CPU time instead of wall time (the machine is shared:
  wall time includes waiting for a core). Measured on the eps = 1 (and baseline) rows and the first row of a run only:
  the work does not depend on eps (``--eps`` picks epsilons, e.g. to split a run over processes).
  ``scene_images_per_s`` in the summary is the first such row's figure (``speed_of`` names its method).
* The ``dp_plate_oracle_ocr`` line runs dp_plate alone on the ground-truth boxes with the
  true text as if from OCR (metric-DP on character codes): ``plate_text_edit_distance_*``.
  Without OCR (the product path) the characters are drawn uniformly, so no edit-distance
  figure is reported for the end-to-end rows: their privacy figure is plate_covered.
* ``--seed S`` makes the run reproducible: one NoiseSource(S) per method/eps row feeds
  every image in turn, so images get different noise. Default: os.urandom.
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
from client.deid.api import merge_plates_into_faces
from client.deid.detect import FACE, PLATE, Region, detect, face_detector, iou, plate_detector
from client.deid.donor import donor_set, expected_distance
from client.deid.image_io import load_image
from client.deid.metrics import dhash_distance, dlib_available, edit_distance, face_embedder, l0, l2, reid_rates, ssim
from client.deid.noise import NoiseSource

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deid"
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
RUNS = ([("dp_latent", e) for e in EPSILONS] + [("dp_donor", e) for e in EPSILONS]
        + [("dp_pixelize", 1.0), ("blur", None), ("mosaic", None)])
COVER_SHARE = 0.9


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


def _sharpness(img: np.ndarray, r: Region) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(img[r.y : r.y + r.h, r.x : r.x + r.w]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _face_checks(orig: np.ndarray, img: np.ndarray, regions: list[Region]) -> list[tuple[bool, float, float]]:
    """Per face region: (still detected, score ratio released/original, sharpness ratio)."""
    found = face_detector()(img)
    out = []
    for r in (r for r in regions if r.kind == FACE):
        scores = [d.score for d in found if iou(r, d) >= 0.3]
        sharp0 = _sharpness(orig, r)
        out.append((bool(scores), max(scores, default=0.0) / max(r.score, 1e-6),
                    _sharpness(img, r) / sharp0 if sharp0 > 0 else 1.0))
    return out


def _latent(img: np.ndarray, r: Region) -> np.ndarray:
    """The face box in dp_donor's public colour latent (clipped)."""
    return donor_set().latent.encode(img, r)


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _plate_boxes(rows: list[dict]) -> list[Region]:
    return [Region(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]), PLATE) for r in rows]


def plate_recall(det_scenes: dict[str, list[Region]], plates_gt: dict[str, list[dict]]) -> dict[str, float]:
    """Share of ground-truth plates matched by a detected plate box (IoU >= 0.3), overall and per region."""
    hits: dict[str, list[int]] = defaultdict(list)
    for name, rows in plates_gt.items():
        if name not in det_scenes:
            raise KeyError(f"ground truth names {name}, which is not among the scene images")
        found = [r for r in det_scenes[name] if r.kind == PLATE]
        for b in _plate_boxes(rows):
            ok = int(any(iou(b, d) >= 0.3 for d in found))
            hits["all"].append(ok), hits[name[:2]].append(ok)
    return {("plate_recall" if k == "all" else f"plate_recall_{k}"): float(np.mean(v)) for k, v in sorted(hits.items())}


def covered(regions: list[Region], shape: tuple[int, ...], rows: list[dict]) -> list[bool]:
    """Per ground-truth plate: is at least COVER_SHARE of its box inside the replaced regions?"""
    mask = np.zeros(shape[:2], bool)
    for r in regions:
        mask[r.y : r.y + r.h, r.x : r.x + r.w] = True
    return [bool(mask[b.y : b.y + b.h, b.x : b.x + b.w].mean() >= COVER_SHARE) for b in _plate_boxes(rows)]


def _noise(seed: int | None) -> NoiseSource | None:
    return None if seed is None else NoiseSource(seed)


def _speed(small: list[np.ndarray], e: float, method: str, seed: int | None) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of deidentify() with detection."""
    noise = _noise(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    for img in small:
        deidentify(img, e, method, noise=noise)
    return len(small) / (time.perf_counter() - t0), len(small) / max(time.process_time() - c0, 1e-9)


def _gallery(faces, det_faces, emb) -> tuple[np.ndarray, list[str], list[str], dict]:
    gallery, g_ids, g_keys, orig_of = [], [], [], {}
    for (ident, key, img), regs in zip(faces, det_faces):
        f = _largest_face(regs)
        if f is not None:
            v = emb(img, f)
            gallery.append(v), g_ids.append(ident), g_keys.append(key)
            orig_of[key] = v
    return np.array(gallery), g_ids, g_keys, orig_of


def _one_run(method, e, seed, faces, det_faces, scenes, det_scenes, plates_gt, emb, orig_of):
    noise = _noise(seed)
    probes, p_ids, p_keys, p_orig, checks = [], [], [], [], []
    q: dict[str, list] = defaultdict(list)
    for (ident, key, img), regs in zip(faces, det_faces):
        res = deidentify(img, e, method, boxes=regs, noise=noise)
        checks += _face_checks(img, res.image, regs)
        f = _largest_face(regs)
        if f is not None:
            q["latent_distance"].append(_latent(res.image, f) - _latent(img, f))
            if method == "dp_donor":
                q["expected_donor_distance"].append(expected_distance(_latent(img, f), donor_set(), e))
        if emb is not None and f is not None:
            probes.append(emb(res.image, f)), p_ids.append(ident), p_keys.append(key), p_orig.append(orig_of[key])
    cover: list[bool] = []
    for name, img in scenes:
        regs = det_scenes[name]
        res = deidentify(img, e, method, boxes=regs, noise=noise)
        q["ssim"].append(ssim(img, res.image)), q["dhash"].append(dhash_distance(img, res.image))
        q["l0"].append(l0(img, res.image)), q["l2"].append(l2(img, res.image))
        checks += _face_checks(img, res.image, regs)
        cover += covered([r for r in res.regions if r.kind == PLATE] if res.regions else [], img.shape,
                         plates_gt.get(name, []))
    return probes, p_ids, p_keys, p_orig, checks, q, cover


def run(seed: int | None, log, emit=lambda row: None, methods: set[str] | None = None,
        eps_values: set[float] | None = None) -> list[dict]:
    """Run every method (or those in ``methods``, at the eps in ``eps_values``) and return the result
    rows (the summary row last); ``emit`` gets each row when done."""
    faces, scenes = _load_sets()
    log(f"{len(faces)} identity images, {len(scenes)} scenes; plate detector: {getattr(plate_detector(), 'name', '?')}")
    det_faces = [detect(img, plates=False) for _, _, img in faces]
    det_scenes = {name: merge_plates_into_faces(detect(img)) for name, img in scenes}
    plates_gt = _gt("plates.csv")
    recall = plate_recall(det_scenes, plates_gt)
    emb = face_embedder() if dlib_available() else None
    gallery, g_ids, g_keys, orig_of = _gallery(faces, det_faces, emb) if emb else (None, [], [], {})
    small = [cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA) for _, img in scenes]
    rows = []
    chosen = [r for r in RUNS if (methods is None or r[0] in methods)
              and (eps_values is None or r[1] is None or r[1] in eps_values)]
    for method, eps in chosen:
        e = 1.0 if eps is None else eps
        t0 = time.time()
        probes, p_ids, p_keys, p_orig, checks, q, cover = _one_run(method, e, seed, faces, det_faces, scenes,
                                                                    det_scenes, plates_gt, emb, orig_of)
        first = (method, eps) == chosen[0]  # the work does not depend on eps: time the first row of a run
        ips, ipc = _speed(small, e, method, seed) if e == 1.0 or first else (None, None)
        log(f"{method} eps={eps}: {time.time() - t0:.0f}s, {len(checks)} face regions, {ips} images/s")
        rank1, self_share = reid_rates(np.array(probes), p_ids, p_keys, gallery, g_ids, g_keys,
                                       np.array(p_orig)) if emb is not None and probes else (None, None)
        rows.append({
            "method": method, "eps": eps, **{k: _mean(v) for k, v in q.items() if k != "latent_distance"},
            "latent_distance": _mean([float(np.linalg.norm(d)) for d in q["latent_distance"]]),
            "reid_rank1": rank1, "reid_self": self_share,
            "face_still_detected": _mean([float(c[0]) for c in checks]),
            "naturalness": {"detector_confidence": _mean([c[1] for c in checks]),
                            "sharpness": _mean([c[2] for c in checks])},
            "plate_recall": recall["plate_recall"], "plate_covered": _mean([float(c) for c in cover]),
            "images_per_s": ips, "images_per_cpu_s": ipc,
        })
        emit(rows[-1])
    rows.append(_plate_only(seed, plates_gt, scenes))
    emit(rows[-1])
    default = next(r for r in rows if r.get("images_per_s") is not None)
    face_rows = [r for r in rows if r["method"] == default["method"] and r.get("eps") is not None]
    rows.append(
        {
            "method": "summary",
            "speed_of": default["method"],
            "plate_detector": getattr(plate_detector(), "name", "?"),
            **recall,
            "plate_covered": default["plate_covered"],
            "naturalness": {str(r["eps"]): r["naturalness"] for r in face_rows},
            "scene_images_per_s": default["images_per_s"],
            "scene_images_per_cpu_s": default["images_per_cpu_s"],
            "cores": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
        }
    )
    emit(rows[-1])
    return rows


def _plate_only(seed: int | None, plates_gt: dict, scenes) -> dict:
    """dp_plate on ground-truth boxes with the true text (oracle OCR), eps = 1 per plate."""
    noise = NoiseSource(seed)
    images = dict(scenes)
    edits = []
    for name, rows in plates_gt.items():
        for row, r in zip(rows, _plate_boxes(rows)):
            _, released, _ = M.dp_plate(images[name], r, 1.0, noise, text=row["text"])
            edits.append(edit_distance(row["text"], released))
    return {"method": "dp_plate_oracle_ocr", "eps": 1.0, "plate_text_edit_distance_min": min(edits),
            "plate_text_edit_distance_mean": float(np.mean(edits)),
            "plate_text_edit_ge3_share": float(np.mean([x >= 3 for x in edits]))}


def main() -> None:
    """Entry point."""
    ap = argparse.ArgumentParser(description="TriVault de-identification benchmark")
    ap.add_argument("--json", action="store_true", help="print one JSON line per method/eps (default: a table)")
    ap.add_argument("--seed", type=int, default=None, help="fixed noise seed (default: os.urandom)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods (default: all)")
    ap.add_argument("--eps", default=None, help="comma-separated subset of epsilons (default: 0.5,1,2,4,8)")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def emit(row: dict) -> None:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    run(args.seed, log, emit, set(args.methods.split(",")) if args.methods else None,
        {float(e) for e in args.eps.split(",")} if args.eps else None)


if __name__ == "__main__":
    main()
