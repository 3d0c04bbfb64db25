"""Pick a face backend by name; "auto" prefers the production model when present."""

from __future__ import annotations

from pathlib import Path

from core.faces.base import FaceBackend

BACKENDS = ("dlib", "insightface")


def resolve_face_backend_name(name: str, model_dir: Path) -> str:
    if name == "auto":
        from core.faces.insightface_backend import InsightFaceBackend

        return "insightface" if InsightFaceBackend.available(model_dir) else "dlib"
    if name not in BACKENDS:
        raise ValueError(f"unknown face backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def make_face_backend(name: str, model_dir: Path) -> FaceBackend:
    name = resolve_face_backend_name(name, model_dir)
    if name == "insightface":
        from core.faces.insightface_backend import InsightFaceBackend

        return InsightFaceBackend(model_dir)
    from core.faces.dlib_backend import DlibFaceBackend

    return DlibFaceBackend(model_dir)
