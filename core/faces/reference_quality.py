"""Is a reference photo usable, and how well do a person's references cover her?

Stage 1 matches an upload against every reference of a person and stage 2 compares it
with all of them, so each reference should be one clear face of her, big and sharp
enough, not turned far away, and not a copy of another reference (a copy adds nothing
and makes "how alike are her photos" look tighter than it is). ``check_photo`` says so
per photo; ``coverage`` sums up a person's references (``identity show``).

A photo that fails a check here is still registered (the operator chose it; refusals
are for photos with no face or several faces, see core.pipeline.identities): the report
says why it is weak, and the coverage counts only usable ones.

Thresholds (chosen, not fitted; checked against faces-dev's 171 real photos with a face,
where they flag 7 (4%) as small, 5 (3%) as turned and none as blurred):
- face at least ``MIN_FACE_PX`` (80) px on its shorter side: below that the 112-px
  chip is upsampled and identity vectors lose detail (faces-dev real: 1st percentile 75);
- sharpness (variance of the Laplacian of the 112-px aligned chip, i.e. at the
  resolution the embedder sees) at least ``MIN_SHARPNESS`` (40): faces-dev's real photos
  have 51 at the least, 73 at the 1st percentile, 760 at the median;
- estimated yaw within ``MAX_YAW_DEG`` (45) degrees (from the 5 landmarks; roll is
  reported, not held against a photo: alignment undoes it);
- near-duplicate: identity cosine at or above the backend's ``DUPLICATE_COSINE`` to
  another reference of the same person (the same photo re-saved or cropped), or the
  same bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from core.faces.align import norm_crop
from core.faces.base import DetectedFace
from core.faces.quality import sharpness

MIN_FACE_PX = 80
MIN_SHARPNESS = 40.0
MAX_YAW_DEG = 45.0
# Cosine above which two references are taken as the same photo, per face backend
# (same picture re-encoded/cropped: >= 0.95 with MobileFaceNet, >= 0.99 with dlib,
# whose different photos of one person already reach 0.97).
DUPLICATE_COSINE = {"mobilefacenet": 0.95, "insightface": 0.95, "dlib": 0.99}


def pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, rough, from the 5 points: yaw from the nose's
    offset between the eyes, pitch from the nose's height between eyes and mouth
    (0 for a frontal face, ~0.55 of the way down), roll from the eye line."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    le, re, nose, ml, mr = lm
    eye_c, mouth_c = (le + re) / 2, (ml + mr) / 2
    d = re - le
    half = max(float(np.linalg.norm(d)) / 2, 1e-6)
    roll = math.degrees(math.atan2(d[1], d[0]))
    # Work in the face's own frame (undo roll) so tilt does not read as yaw.
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    n = rot @ (nose - eye_c)
    m = rot @ (mouth_c - eye_c)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, n[0] / half))))
    pitch = 0.0
    if abs(m[1]) > 1e-6:
        pitch = (n[1] / m[1] - 0.55) * 90.0
    return yaw, pitch, roll


@dataclass
class PhotoCheck:
    """Per reference photo: usable or not, and why."""

    file: str
    usable: bool
    problems: list[str] = field(default_factory=list)  # each makes the photo weak
    notes: list[str] = field(default_factory=list)  # worth knowing, not a weakness
    faces_found: int = 1
    face_px: float = 0.0
    sharpness: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    duplicate_of: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("face_px", "sharpness", "yaw", "pitch", "roll"):
            d[k] = round(float(d[k]), 1)
        return d

    def line(self) -> str:
        ok = "usable" if self.usable else "weak: " + "; ".join(self.problems)
        return (
            f"{self.file}: {ok} (face {self.face_px:.0f} px, sharpness {self.sharpness:.0f}, "
            f"yaw {self.yaw:+.0f}, roll {self.roll:+.0f})"
        )


def check_photo(
    file: str,
    rgb: np.ndarray,
    face: DetectedFace,
    faces_found: int = 1,
) -> PhotoCheck:
    """Size, sharpness and pose of the chosen face (duplicates: see check_duplicates)."""
    chip = norm_crop(rgb, np.asarray(face.landmarks, np.float32), 112)
    yaw, pitch, roll = pose(face.landmarks)
    chk = PhotoCheck(
        file=file,
        usable=True,
        faces_found=faces_found,
        face_px=float(min(face.width, face.height)),
        sharpness=sharpness(chip),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
    )
    if faces_found > 1:
        chk.notes.append(f"{faces_found} faces in the photo (the largest is used)")
    if chk.face_px < MIN_FACE_PX:
        chk.problems.append(f"small face ({chk.face_px:.0f} px < {MIN_FACE_PX})")
    if chk.sharpness < MIN_SHARPNESS:
        chk.problems.append(f"blurred (sharpness {chk.sharpness:.0f} < {MIN_SHARPNESS:.0f})")
    if abs(yaw) > MAX_YAW_DEG:
        chk.problems.append(f"turned away (yaw ~{yaw:+.0f} degrees)")
    chk.usable = not chk.problems
    return chk


def check_duplicates(
    checks: list[PhotoCheck],
    embeddings: np.ndarray,
    existing: list[list[tuple[str, float]]],
    backend: str,
) -> None:
    """Mark new photos that repeat a stored reference or an earlier photo of the same
    call. ``existing[k]``: (stored reference's file name, cosine to photo k)."""
    thr = DUPLICATE_COSINE.get(backend, 0.95)
    for k, chk in enumerate(checks):
        cands = list(existing[k]) + [
            (checks[j].file, float(np.dot(embeddings[k], embeddings[j]))) for j in range(k)
        ]
        best = max(cands, key=lambda c: c[1], default=None)
        if best is not None and best[1] >= thr:
            chk.duplicate_of = best[0]
            chk.problems.append(f"near-duplicate of {best[0]} (cosine {best[1]:.2f})")
            chk.usable = False


def coverage(stored: list[dict | None]) -> dict:
    """Summary of a person's references from their stored checks (``PhotoCheck.as_dict``;
    None for a reference registered before checks existed): how many, how many usable,
    the pose spread, size and sharpness ranges, and advice."""
    checks = [c for c in stored if c]
    usable = [c for c in checks if c.get("usable")]
    yaws = [c["yaw"] for c in usable]
    out = {
        "references": len(stored),
        "usable": len(usable),
        "unchecked": len(stored) - len(checks),
        "weak": [
            f"{c['file']}: {'; '.join(c.get('problems') or [])}"
            for c in checks
            if not c.get("usable")
        ],
        "yaw_range": [min(yaws), max(yaws)] if yaws else None,
        "face_px_range": (
            [min(c["face_px"] for c in usable), max(c["face_px"] for c in usable)]
            if usable
            else None
        ),
        "min_sharpness": min(c["sharpness"] for c in usable) if usable else None,
        "pose_spread_deg": round(max(yaws) - min(yaws), 1) if yaws else None,
    }
    advice = []
    if not usable and not out["unchecked"]:
        advice.append("no usable reference: add a clear, frontal photo")
    elif len(usable) < 3:
        advice.append(
            f"{len(usable)} usable reference(s): 3 or more let stage 2 compare an upload "
            "with how her photos vary"
        )
    if yaws and max(yaws) - min(yaws) < 20 and len(usable) >= 2:
        advice.append("all references are about the same pose: add a three-quarter view")
    out["advice"] = advice
    return out


def coverage_lines(cov: dict) -> list[str]:
    """``coverage`` as text for ``identity show``."""
    head = f"coverage: {cov['usable']} usable of {cov['references']} reference(s)"
    if cov.get("unchecked"):
        head += f", {cov['unchecked']} registered before checks existed"
    if cov.get("yaw_range"):
        lo, hi = cov["yaw_range"]
        head += f"; yaw {lo:+.0f}..{hi:+.0f} degrees"
    if cov.get("face_px_range"):
        lo, hi = cov["face_px_range"]
        head += f"; faces {lo:.0f}-{hi:.0f} px"
    return [head] + [f"  weak: {w}" for w in cov.get("weak", [])] + [
        f"  advice: {a}" for a in cov.get("advice", [])
    ]
