"""Pick a forgery detector by name; "auto" prefers UnivFD when real CLIP weights exist."""

from __future__ import annotations

from pathlib import Path

from core.forensics.base import ForgeryDetector
from core.registry import Registry

DETECTOR_CLASSES: Registry[ForgeryDetector] = Registry(
    "detector",
    {
        "offline": "core.forensics.offline:OfflineDetector",
        "univfd": "core.forensics.univfd:UnivFDDetector",
        "clip-ref": "core.forensics.clip_ref:ClipRefDetector",
    },
    setting="IDWATCH_DETECTOR",
)
DETECTORS = DETECTOR_CLASSES.names


def resolve_detector_name(name: str, model_dir: Path) -> str:
    if name == "auto":
        univfd = DETECTOR_CLASSES.load("univfd")
        return "univfd" if univfd.available(model_dir) else "offline"
    return DETECTOR_CLASSES.check(name)


def explain_detector(
    name: str, model_dir: Path, head_path: Path | None = None, cache_dir: Path | None = None
) -> tuple[str, str]:
    """The detector ``name`` resolves to, and what it runs on (for ``idwatch status``)."""
    chosen = resolve_detector_name(name, model_dir)
    why = "set by IDWATCH_DETECTOR" if name != "auto" else "auto"
    if chosen in ("offline", "clip-ref"):
        if head_path is not None:
            return chosen, f"{why}; head {head_path} (IDWATCH_DETECTOR_PATH)"
        if chosen == "offline":
            from core.forensics.offline import packaged_head

            return chosen, f"{why}; packaged head {packaged_head(model_dir, cache_dir)}"
    return chosen, f"{why}; model dir {model_dir}"


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
    cls = DETECTOR_CLASSES.load(name)
    if name == "clip-ref":
        return cls(model_dir, head_path=head_path, face_backend=getattr(embedder, "name", None))
    if name == "offline":
        return cls(model_dir=model_dir, head_path=head_path, embedder=embedder, cache_dir=cache_dir)
    return cls(model_dir)
