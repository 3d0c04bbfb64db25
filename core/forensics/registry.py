"""Pick a forgery detector by name; "auto" prefers UnivFD when real CLIP weights exist."""

from __future__ import annotations

from pathlib import Path

from core.forensics.base import ForgeryDetector

DETECTORS = ("offline", "univfd", "clip-ref")


def resolve_detector_name(name: str, model_dir: Path) -> str:
    if name == "auto":
        from core.forensics.univfd import UnivFDDetector

        return "univfd" if UnivFDDetector.available(model_dir) else "offline"
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return name


def make_detector(
    name: str,
    model_dir: Path,
    head_path: Path | None = None,
    embedder=None,
    cache_dir: Path | None = None,
) -> ForgeryDetector:
    """``embedder``: the stage-1 face backend, reused by the offline detector when its
    head was trained on that backend's identity vectors."""
    name = resolve_detector_name(name, model_dir)
    if name == "univfd":
        from core.forensics.univfd import UnivFDDetector

        return UnivFDDetector(model_dir)
    if name == "clip-ref":
        from core.forensics.clip_ref import ClipRefDetector

        return ClipRefDetector(
            model_dir, head_path=head_path, face_backend=getattr(embedder, "name", None)
        )
    from core.forensics.offline import OfflineDetector

    return OfflineDetector(
        model_dir=model_dir, head_path=head_path, embedder=embedder, cache_dir=cache_dir
    )
