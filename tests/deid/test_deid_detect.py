"""Detection recall on the shared ground truth (floors stated here; measured figures in the note)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from client.deid.detect import PLATE, Region, face_detector, iou, parse_boxes, plate_detector
from client.deid.image_io import load_image
from client.deid.plates import YoloPlateDetector

# Measured 2026-11-23: CenterFace 43/43 scene faces at IoU >= 0.3; Haar plate cascade 25/40
# plates at least half covered. Measured 2026-12-01: the YOLOv8n plate model (safelicensing
# weights, long side 640) matched 40/40 plates at IoU >= 0.3. Floors leave a margin for
# onnxruntime/OpenCV version drift; the YOLO floors are the goals (0.90 / 0.95).
FACE_RECALL_FLOOR = 0.90
FACE_DATASET_FLOOR = 0.95
PLATE_COVER_FLOOR = 0.55
PLATE_RECALL_FLOOR_YOLO = 0.90
PLATE_COVER_FLOOR_YOLO = 0.95


def _gt(path: Path) -> dict[str, list[Region]]:
    boxes: dict[str, list[Region]] = defaultdict(list)
    for row in csv.DictReader(path.open()):
        if row.get("ignore", "0") == "1":
            continue
        boxes[row["file"]].append(Region(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])))
    return boxes


def test_face_recall_on_scene_ground_truth(deid_data: Path) -> None:
    gt = _gt(deid_data / "scenes" / "faces.csv")
    det = face_detector()
    hit = total = 0
    for name, boxes in gt.items():
        found = det(load_image(deid_data / "scenes" / name))
        total += len(boxes)
        hit += sum(any(iou(b, d) >= 0.3 for d in found) for b in boxes)
    assert total >= 40
    assert hit / total >= FACE_RECALL_FLOOR, f"face recall {hit}/{total}"


def test_face_found_in_identity_images(deid_data: Path) -> None:
    files = sorted(p for p in (deid_data / "faces").glob("*/*") if p.suffix.lower() != ".txt")[::5]
    det = face_detector()
    found = sum(bool(det(load_image(p))) for p in files)
    assert len(files) >= 60
    assert found / len(files) >= FACE_DATASET_FLOOR, f"{found}/{len(files)}"


def test_plate_coverage_on_ground_truth(deid_data: Path) -> None:
    """The default plate detector: the YOLOv8n model when the 'plates' extra is installed, else Haar."""
    gt = _gt(deid_data / "scenes" / "plates.csv")
    det = plate_detector()
    yolo = isinstance(det, YoloPlateDetector)
    covered = matched = total = 0
    for name, boxes in gt.items():
        img = load_image(deid_data / "scenes" / name)
        found = det(img)
        mask = np.zeros(img.shape[:2], bool)
        for d in found:
            assert d.kind == PLATE
            mask[d.y : d.y + d.h, d.x : d.x + d.w] = True
        for b in boxes:
            total += 1
            covered += mask[b.y : b.y + b.h, b.x : b.x + b.w].mean() >= (0.9 if yolo else 0.5)
            matched += any(iou(b, d) >= 0.3 for d in found)
    assert total == 40
    if yolo:
        assert matched / total >= PLATE_RECALL_FLOOR_YOLO, f"plate recall {matched}/{total}"
        assert covered / total >= PLATE_COVER_FLOOR_YOLO, f"plates 90% covered {covered}/{total}"
    else:
        assert covered / total >= PLATE_COVER_FLOOR, f"plates half-covered {covered}/{total}"


def test_parse_boxes() -> None:
    assert parse_boxes("1,2,3,4; 5,6,7,8,plate") == [Region(1, 2, 3, 4, "face", 1.0, "manual"),
                                                   Region(5, 6, 7, 8, "plate", 1.0, "manual")]
    for bad in ("1,2,3", "1,2,0,4", "a,b,c,d", "1,2,3,4,car"):
        with pytest.raises(ValueError):
            parse_boxes(bad)


def test_region_clip_and_iou() -> None:
    assert Region(-5, -5, 20, 20).clip(10, 10) == Region(0, 0, 10, 10)
    assert Region(50, 50, 5, 5).clip(10, 10) is None
    assert iou(Region(0, 0, 10, 10), Region(5, 0, 10, 10)) == pytest.approx(50 / 150)
