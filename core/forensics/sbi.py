"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): fakes made from real faces only.

A real face is blended with a slightly transformed copy of itself: the copy's colour,
contrast and sharpness are jittered and it is shifted and scaled a little, then pasted
back through a soft mask drawn from the face's landmark hull (randomly deformed,
eroded or dilated, blurred, and of random opacity). The result keeps the person, the
pose and the scene, and carries only what every face swap or face edit leaves: a
blending boundary, a colour and sharpness mismatch between the inner face and its
surroundings, a small misalignment. A detector trained with these as its fakes learns
those traces instead of one generator's fingerprint, which is what made SBI generalise
to unseen manipulation methods in the paper (Celeb-DF AUC 93 trained on FF++ reals).

Everything is drawn from a generator seeded by the image's pixels and the blend's
index, so the same real photo always gives the same blends (training is repeatable
and the feature cache stays valid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from core.faces.base import DetectedFace
from core.forensics.normalise import content_seed

SBI_VERSION = 1


def landmarks68(face: DetectedFace) -> np.ndarray | None:
    pts = (face.extra or {}).get("landmarks68")
    if pts is None:
        return None
    arr = np.asarray(pts, np.float64)
    return arr if arr.shape == (68, 2) else None


@dataclass(frozen=True)
class SBIParams:
    """The ranges each blend is drawn from (the paper's, scaled to faces of any size)."""

    hue_shift: float = 8.0  # degrees of OpenCV hue (0..180)
    sat_gain: tuple[float, float] = (0.8, 1.2)
    val_gain: tuple[float, float] = (0.85, 1.15)
    rgb_shift: float = 12.0  # per channel, 0..255 scale
    contrast: tuple[float, float] = (0.85, 1.15)
    sharpen_p: float = 0.5  # else blur
    sigma: tuple[float, float] = (0.4, 1.2)  # blur / unsharp-mask radius in pixels
    scale: tuple[float, float] = (0.95, 1.05)  # of the copy, around the face centre
    shift: float = 0.03  # of the face width, each axis
    hull_deform: float = 0.04  # landmark jitter before the hull, of the face width
    forehead_p: float = 0.5  # extend the hull above the brows
    morph: tuple[float, float] = (-0.06, 0.03)  # erode (<0) / dilate, of the face width
    blur: tuple[float, float] = (0.02, 0.08)  # mask feather, of the face width
    opacity: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def _face_width(pts: np.ndarray) -> float:
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 8.0))


def _colour_jitter(img: np.ndarray, rng: np.random.Generator, p: SBIParams) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-p.hue_shift, p.hue_shift)) % 180
    hsv[..., 1] *= rng.uniform(*p.sat_gain)
    hsv[..., 2] *= rng.uniform(*p.val_gain)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    out = out.astype(np.float32) + rng.uniform(-p.rgb_shift, p.rgb_shift, 3)
    c = rng.uniform(*p.contrast)
    out = (out - out.mean()) * c + out.mean()
    return np.clip(out, 0, 255).astype(np.uint8)


def _sharpness_jitter(img: np.ndarray, rng: np.random.Generator, p: SBIParams) -> np.ndarray:
    sigma = rng.uniform(*p.sigma)
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.uniform() < p.sharpen_p:  # unsharp mask
        amount = rng.uniform(0.5, 1.5)
        out = img.astype(np.float32) * (1 + amount) - blurred.astype(np.float32) * amount
        return np.clip(out, 0, 255).astype(np.uint8)
    return blurred


def _affine(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator, p: SBIParams):
    w = _face_width(pts)
    c = pts.mean(axis=0)
    s = rng.uniform(*p.scale)
    t = rng.uniform(-p.shift, p.shift, 2) * w
    M = np.array([[s, 0, (1 - s) * c[0] + t[0]], [0, s, (1 - s) * c[1] + t[1]]])
    h, ww = img.shape[:2]
    return cv2.warpAffine(img, M, (ww, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def blend_mask(
    shape: tuple[int, ...], pts68: np.ndarray, rng: np.random.Generator, p: SBIParams
) -> np.ndarray:
    """Soft mask in [0, 1]: the (deformed) landmark hull, eroded or dilated, feathered,
    times an opacity."""
    pts = np.asarray(pts68, np.float64)
    w = _face_width(pts)
    pts = pts + rng.normal(0.0, p.hull_deform * w, pts.shape)
    if rng.uniform() < p.forehead_p:
        up = pts[27] - pts[8]
        pts = np.vstack([pts, pts[17:27] + up * rng.uniform(0.2, 0.45)])
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    k = int(round(abs(rng.uniform(*p.morph)) * w))
    if k >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        grow = rng.uniform() < p.morph[1] / (p.morph[1] - p.morph[0])
        mask = cv2.dilate(mask, kernel) if grow else cv2.erode(mask, kernel)
    # As the paper's code: blur, keep the part that stayed fully inside, blur again,
    # rescale to a peak of 1 (an opaque core with a soft rim of random width).
    soft = cv2.GaussianBlur(
        mask.astype(np.float32) / 255.0, (0, 0), max(rng.uniform(*p.blur) * w, 0.5)
    )
    core = (soft >= 0.99 * max(float(soft.max()), 1e-6)).astype(np.float32)
    soft = cv2.GaussianBlur(core, (0, 0), max(rng.uniform(*p.blur) * w, 0.5))
    soft /= max(float(soft.max()), 1e-6)
    return np.clip(soft, 0.0, 1.0) * float(rng.choice(p.opacity))


def self_blend(
    rgb: np.ndarray, pts68: np.ndarray, rng: np.random.Generator, params: SBIParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One self-blended image of ``rgb`` (the face at ``pts68``) and its soft mask."""
    p = params or SBIParams()
    pts = np.asarray(pts68, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"self_blend needs 68x2 landmarks, got {pts.shape}")
    source = rgb
    # Either the source or the target is altered (the paper's source-target augment);
    # altering the source copy is the variant that keeps the scene as it was.
    source = _colour_jitter(source, rng, p)
    source = _sharpness_jitter(source, rng, p)
    source = _affine(source, pts, rng, p)
    mask = blend_mask(rgb.shape, pts, rng, p)[..., None]
    out = source.astype(np.float32) * mask + rgb.astype(np.float32) * (1.0 - mask)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), mask[..., 0]


def sbi_variant(
    face: DetectedFace, index: int, params: SBIParams | None = None
) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
    """(cache name, pixel transform) of blend ``index`` of ``face``, for
    core.evaluation.dataset_features (``DatasetFeatures.entry(..., variant=...)``);
    None when the face has no 68 landmarks to draw the mask from."""
    pts = landmarks68(face)
    if pts is None:
        return None

    def transform(rgb: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([content_seed(rgb), index, SBI_VERSION])
        return self_blend(rgb, pts, rng, params)[0]

    return f"sbi{SBI_VERSION}-{index}", transform
