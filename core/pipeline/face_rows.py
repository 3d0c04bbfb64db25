"""What the crop stage keeps of a detected face, for images and video frames alike: which
faces count (size and number limits) and the row stored for each (box, landmarks,
quality, the aligned chip and the loose crop as files)."""

from __future__ import annotations

import numpy as np

from core.faces.base import DetectedFace, FaceBackend
from core.faces.crops import loose_crop
from core.faces.quality import face_quality
from core.services import Services
from core.settings import Settings


def keep_faces(found: list[DetectedFace], st: Settings) -> tuple[list[DetectedFace], list[str]]:
    """Faces at least ``min_face_px`` on their short side, at most the
    ``max_faces_per_image`` largest (left to right); notes say what was dropped."""
    big = [f for f in found if min(f.width, f.height) >= st.min_face_px]
    notes = []
    if len(big) < len(found):
        notes.append(f"{len(found) - len(big)} face(s) under {st.min_face_px} px ignored")
    if len(big) > st.max_faces_per_image:
        notes.append(f"kept the {st.max_faces_per_image} largest of {len(big)} faces")
        big = sorted(big, key=lambda f: -f.area)[: st.max_faces_per_image]
        big.sort(key=lambda f: (f.box[0], f.box[1]))
    return big, notes


def face_row(
    svc: Services,
    backend: FaceBackend,
    pixels: np.ndarray,
    face: DetectedFace,
    upload_id: int,
    idx: int,
    **extra,
) -> dict:
    """The ``Face`` row values of one kept face; its chip and crop are written as PNGs."""
    chip = backend.align(pixels, face)
    base = f"crops/{upload_id}/{idx}"
    return dict(
        idx=idx,
        box=[float(v) for v in face.box],
        landmarks=np.asarray(face.landmarks).round(2).tolist(),
        extra=face.extra or None,
        det_score=float(face.score),
        quality=face_quality(face, chip),
        chip_path=svc.files.put_png(f"{base}_chip.png", chip),
        crop_path=svc.files.put_png(f"{base}_crop.png", loose_crop(pixels, face)),
        face_backend=backend.name,
        **extra,
    )
