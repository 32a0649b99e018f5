#!/usr/bin/env bash
# Create .venv (when missing) and install modgs-ns with its pinned stack. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# open3d (pulled in by nerfstudio) needs libusb at import time.
if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q libusb-1.0-0 >/dev/null)) \
      || echo "setup: warning: could not install libusb-1.0-0; open3d may fail to import" >&2
  else
    echo "setup: warning: libusb-1.0 not found; install it (Debian: apt-get install libusb-1.0-0)" >&2
  fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import modgs_ns, nerfstudio, gsplat, pytest, transformers, imageio_ffmpeg, plyfile, pycolmap" >/dev/null 2>&1 || [ ! -x .venv/bin/ruff ]; then
  echo "setup: creating .venv and installing (a few minutes on a fresh machine)" >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade "pip<26" >/dev/null 2>&1 || true
  .venv/bin/pip install -qq torch==2.14.1 torchvision==0.29.1 -e ".[test]"
fi
# Exactly one OpenCV distribution: opencv-python would overwrite the headless cv2/ folder.
if .venv/bin/pip show -q opencv-python >/dev/null 2>&1; then
  echo "setup: error: opencv-python is installed beside opencv-python-headless; run .venv/bin/pip uninstall opencv-python && .venv/bin/pip install --force-reinstall opencv-python-headless" >&2
  exit 1
fi
# Build the compiled CPU rasterizer now (cached under ~/.cache/modgs_ns, ~40 s once) rather than in
# the first training step. Without a C++ compiler this prints one warning and the PyTorch path is used.
TORCH_COMPILE_DISABLE=1 .venv/bin/python -m modgs_ns.model.rasterize_cpp || true
