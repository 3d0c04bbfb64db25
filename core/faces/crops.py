"""Loose face crops for forensic analysis (context around the aligned chip)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.faces.base import DetectedFace

FORENSIC_CROP_SIZE = 256
FORENSIC_CROP_SCALE = 1.6  # side of the square crop, relative to the larger box side


def square_box(face: DetectedFace, scale: float = FORENSIC_CROP_SCALE) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * scale / 2
    x1, y1, x2, y2 = (round(v) for v in (cx - half, cy - half, cx + half, cy + half))
    return (int(x1), int(y1), int(x2), int(y2))


def loose_crop(rgb: np.ndarray, face: DetectedFace, size: int = FORENSIC_CROP_SIZE) -> np.ndarray:
    """Square crop around the face, padded with edge pixels where it leaves the image,
    resized to ``size`` x ``size`` (resize, not centre-crop, as UnivFD expects)."""
    x1, y1, x2, y2 = square_box(face)
    h, w = rgb.shape[:2]
    pad = max(0, -x1, -y1, x2 - w, y2 - h)
    src = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else rgb
    crop = src[y1 + pad : y2 + pad, x1 + pad : x2 + pad]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
