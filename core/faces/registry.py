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
from core.registry import Registry

log = logging.getLogger(__name__)

FACE_BACKENDS: Registry[FaceBackend] = Registry(
    "face backend",
    {
        "dlib": "core.faces.dlib_backend:DlibFaceBackend",
        "mobilefacenet": "core.faces.mobilefacenet_backend:MobileFaceNetBackend",
        "insightface": "core.faces.insightface_backend:InsightFaceBackend",
    },
    setting="IDWATCH_FACE_BACKEND",
)
BACKENDS = FACE_BACKENDS.names
_said: set[str] = set()


def explain_face_backend(
    name: str, model_dir: Path, cache_dir: Path | None = None
) -> tuple[str, str]:
    """The backend ``name`` resolves to, and why (for ``idwatch status``)."""
    if name != "auto":
        return FACE_BACKENDS.check(name), "set by IDWATCH_FACE_BACKEND"
    if FACE_BACKENDS.load("insightface").available(model_dir):
        from core.faces.insightface_backend import pack_dir

        return "insightface", f"buffalo_l pack at {pack_dir(model_dir)}"
    check = FACE_BACKENDS.load("mobilefacenet").check(model_dir, cache_dir)
    if check.ok:
        return "mobilefacenet", f"verified model at {check.path}"
    return "dlib", f"fallback: no verified MobileFaceNet file ({check.explain()})"


def resolve_face_backend_name(name: str, model_dir: Path, cache_dir: Path | None = None) -> str:
    chosen, why = explain_face_backend(name, model_dir, cache_dir)
    if name == "auto" and chosen == "dlib" and why not in _said:  # once per reason
        _said.add(why)
        log.warning("face backend auto -> dlib, %s; scripts/setup.sh installs it", why)
    return chosen


def make_face_backend(
    name: str, model_dir: Path, cache_dir: Path | None = None, threads: int | None = None
) -> FaceBackend:
    """``threads``: intra-op threads of the backend's onnxruntime session (MobileFaceNet;
    None or 0: the runtime's default)."""
    name = resolve_face_backend_name(name, model_dir, cache_dir)
    cls = FACE_BACKENDS.load(name)
    if name == "mobilefacenet":
        return cls(model_dir, cache_dir=cache_dir, threads=threads or None)
    return cls(model_dir)
