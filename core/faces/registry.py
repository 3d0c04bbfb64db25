"""Pick a face backend by name; "auto" prefers the production model when present."""

from __future__ import annotations

from pathlib import Path

from core.faces.base import FaceBackend
from core.registry import Registry

FACE_BACKENDS: Registry[FaceBackend] = Registry(
    "face backend",
    {
        "dlib": "core.faces.dlib_backend:DlibFaceBackend",
        "insightface": "core.faces.insightface_backend:InsightFaceBackend",
    },
)
BACKENDS = FACE_BACKENDS.names


def resolve_face_backend_name(name: str, model_dir: Path) -> str:
    if name == "auto":
        insightface = FACE_BACKENDS.load("insightface")
        return "insightface" if insightface.available(model_dir) else "dlib"
    return FACE_BACKENDS.check(name)


def make_face_backend(name: str, model_dir: Path) -> FaceBackend:
    return FACE_BACKENDS.load(resolve_face_backend_name(name, model_dir))(model_dir)
