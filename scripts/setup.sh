#!/usr/bin/env bash
# Create .venv and install identity-watch with everything it needs, offline-safe:
# every package comes from PyPI (or the machine's local torch files); no model
# weights are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade "pip>=24" "setuptools<81" wheel
python -m pip install -q -e ".[dev]"
# Their declared pins are stale (dlib source build, torch<2.3, numpy<2); the code
# works with what is installed above, so install them without their metadata deps.
python -m pip install -q --no-deps face_recognition==1.3.0 facenet-pytorch==2.6.0
python -c "import core, workers, face_recognition_models, facenet_pytorch, dlib, insightface, open_clip" \
  && echo "setup: ok ($(python -c 'import torch; print("torch", torch.__version__)'))"
