"""Alignment onto ArcFace's 112x112 5-point template (a least-squares similarity).

The same geometry as insightface's ``face_align.norm_crop`` (Umeyama's estimate of
rotation + uniform scale + translation, then an affine warp), written out here so the
offline backends need nothing from insightface.
"""

from __future__ import annotations

import cv2
import numpy as np

# insightface.utils.face_align.arcface_dst: eyes, nose tip, mouth corners (image left
# first) on a 112x112 chip.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)  # fmt: skip


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the similarity transform that maps ``src`` points onto ``dst``
    with least squared error (Umeyama 1991, no reflection)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = float((sig * sign).sum() / var) if var > 1e-12 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def norm_crop(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped so its 5 landmarks sit on the ArcFace template (scaled to
    ``size``); uint8, same channel order as ``rgb``."""
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    m = similarity_matrix(landmarks, dst)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
