"""Pick a face backend by name; "auto" prefers the best model whose files are present.

``auto``: insightface (buffalo_l pack in the model dir, production), else mobilefacenet
(the pinned MobileFaceNet file on the search path, core.faces.mobilefacenet_model),
else dlib (ships with pip). Falling back is logged once per reason, so an operator
sees why the weaker backend runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.faces.base import FaceBackend

log = logging.getLogger(__name__)

BACKENDS = ("dlib", "mobilefacenet", "insightface")
_said: set[str] = set()


def resolve_face_backend_name(name: str, model_dir: Path, cache_dir: Path | None = None) -> str:
    if name == "auto":
        from core.faces.insightface_backend import InsightFaceBackend
        from core.faces.mobilefacenet_backend import MobileFaceNetBackend

        if InsightFaceBackend.available(model_dir):
            return "insightface"
        check = MobileFaceNetBackend.check(model_dir, cache_dir)
        if check.ok:
            return "mobilefacenet"
        why = check.explain()
        if why not in _said:
            _said.add(why)
            log.warning(
                "face backend auto -> dlib: no verified MobileFaceNet file (%s); "
                "scripts/setup.sh installs it",
                why,
            )
        return "dlib"
    if name not in BACKENDS:
        raise ValueError(f"unknown face backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def make_face_backend(name: str, model_dir: Path, cache_dir: Path | None = None) -> FaceBackend:
    name = resolve_face_backend_name(name, model_dir, cache_dir)
    if name == "insightface":
        from core.faces.insightface_backend import InsightFaceBackend

        return InsightFaceBackend(model_dir)
    if name == "mobilefacenet":
        from core.faces.mobilefacenet_backend import MobileFaceNetBackend

        return MobileFaceNetBackend(model_dir, cache_dir=cache_dir)
    from core.faces.dlib_backend import DlibFaceBackend

    return DlibFaceBackend(model_dir)
