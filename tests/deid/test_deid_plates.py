"""The YOLOv8 plate detector: allow-listed checkpoint loading, letterbox, box decoding, ONNX = torch."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from client.deid.detect import PLATE, HaarDetector, plate_detector
from client.deid.plates import ONNX_PATH, YoloPlateDetector, installed_weights, letterbox, ort_session
from client.deid.yolo import load_yolov8, to_onnx

needs_weights = pytest.mark.skipif(installed_weights() is None,
                                   reason="plate model not installed (setup.sh --no-plates, or its install failed)")


class _RunsCode:
    """Unpickling this would call os.getcwd: a stand-in for arbitrary code in a checkpoint."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoint_with_foreign_globals_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_yolov8(path)


def test_letterbox_pads_to_stride_and_keeps_scale() -> None:
    img = np.full((310, 1000, 3), 200, np.uint8)
    blob, scale = letterbox(img, 640)
    assert scale == pytest.approx(0.64)
    assert blob.shape == (1, 3, 224, 640) and blob.dtype == np.float32  # 310 * 0.64 = 198 rows -> 224
    assert np.allclose(blob[0, :, :198, :], 200 / 255)
    assert np.allclose(blob[0, :, 198:, :], 114 / 255)


def _pred(rows: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """A [1, 5, A] model output (cx, cy, w, h, score per anchor)."""
    return np.array(rows, np.float32).T[None]


def test_boxes_decoded_to_image_pixels_with_nms_threshold_and_margin() -> None:
    # Image 1280x640 -> letterboxed at long side 640: scale 0.5.
    pred = _pred([(100, 50, 40, 20, 0.9), (101, 50, 40, 20, 0.8), (300, 200, 60, 30, 0.1)])
    det = YoloPlateDetector(lambda blob: pred, "test", long_side=640, threshold=0.15, expand=0.1)
    textured = np.random.default_rng(0).integers(0, 256, (640, 1280, 3), dtype=np.uint8)
    regions = det(textured)
    assert len(regions) == 1  # duplicate removed by NMS, low score dropped
    r = regions[0]
    assert r.kind == PLATE and r.source == "test" and r.score == pytest.approx(0.9)
    # centre (200, 100), size 80x40 in the image, grown by 10% of the size on each side
    assert (r.x, r.y, r.w, r.h) == (152, 76, 96, 48)


def test_no_detection_gives_no_region_and_flat_boxes_are_dropped() -> None:
    det = YoloPlateDetector(lambda blob: np.zeros((1, 5, 0), np.float32), "test")
    assert det(np.zeros((48, 64, 3), np.uint8)) == []
    whole = YoloPlateDetector(lambda blob: _pred([(32, 24, 64, 48, 0.9)]), "test", long_side=64)
    assert whole(np.full((48, 64, 3), 90, np.uint8)) == []  # no characters, nothing to hide
    assert len(whole(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))) == 1


@needs_weights
def test_onnx_export_matches_torch() -> None:
    torch.set_num_threads(1)
    model = load_yolov8(installed_weights())
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(x).numpy()
    got = ort_session(to_onnx(model)).run(None, {"images": x.numpy()})[0]
    assert got.shape == ref.shape == (1, 5, (16 * 24) + (8 * 12) + (4 * 6))
    assert np.abs(got - ref).max() < 1e-2


def test_default_plate_detector_is_the_model_when_installed() -> None:
    det = plate_detector()
    if installed_weights() is None and not ONNX_PATH.is_file():
        assert isinstance(det, HaarDetector)
    else:
        assert isinstance(det, YoloPlateDetector)
