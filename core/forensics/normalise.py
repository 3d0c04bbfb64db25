"""Pixel normalisation that hides an image's compression history from the features.

On faces-dev most fakes are PNG and most real photos JPEG. Re-encoding everything as
JPEG q90 ("format-blind") is not enough: a JPEG-origin photo re-encoded on the same
8x8 grid keeps its first compression's block edges and high-frequency deficit, and
an 8x8 blockiness statistic still told PNG-origin from JPEG-origin real photos at
AUC 0.72-0.76. This module applies, before any feature is computed:

1. a random crop of 0..``max_offset`` pixels at the top-left, so that an earlier
   8x8 grid no longer lines up with the new one;
2. a down-scale (area interpolation) that brings the face to a random size of about
   64-96 pixels: an earlier grid's period becomes 8*scale pixels, off the new grid;
   the top of the spectrum, where quantisation left its deficit, is removed for every
   image alike; and what the native resolution tells of an image's history (a small
   figure crop, a video frame) is gone;
3. one JPEG round trip at a random quality, so every image ends with the same kind
   of (new) compression history.

The draw is deterministic per image: it is seeded by a hash of the decoded pixels,
so the same upload always gets the same verdict, and training and use see the same
transform of the same image. Faces are mapped along (box, 5 and 68 landmarks).

At use a detector applies it with :func:`prepare_view`, with the parameters stored
in its head file (``preprocess["normalise"]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core.faces.base import DetectedFace

NORMALISE_VERSION = 1


@dataclass(frozen=True)
class NormaliseParams:
    """One draw: crop offset, scale and JPEG quality."""

    dx: int
    dy: int
    scale: float
    quality: int


def content_seed(rgb: np.ndarray) -> int:
    """A 64-bit seed from the decoded pixels (and their shape)."""
    h = hashlib.sha256(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return int.from_bytes(h.digest()[:8], "little")


def map_face(face: DetectedFace, dx: float, dy: float, sx: float, sy: float) -> DetectedFace:
    """The face after cropping (dx, dy) off the top-left and scaling by (sx, sy)."""
    x1, y1, x2, y2 = face.box
    shift = np.array([dx, dy], np.float32)
    scale = np.array([sx, sy], np.float32)
    extra = dict(face.extra or {})
    if extra.get("landmarks68") is not None:
        extra["landmarks68"] = (
            (np.asarray(extra["landmarks68"], np.float32) - shift) * scale
        ).tolist()
    return dataclasses.replace(
        face,
        box=((x1 - dx) * sx, (y1 - dy) * sy, (x2 - dx) * sx, (y2 - dy) * sy),
        landmarks=((np.asarray(face.landmarks, np.float32) - shift) * scale).astype(np.float32),
        extra=extra,
    )


@dataclass(frozen=True)
class Normaliser:
    """Random crop offset, down-scale and JPEG quality, seeded by the image content.

    The scale brings the face's larger box side to a random size in
    [``face_min``, ``face_max``] pixels (never up: up-sampling leaves its own trace);
    without a face, or with ``face_min`` = 0, it is drawn in [``scale_min``,
    ``scale_max``]. Down-scaling every face to about the same size also removes what
    the native resolution says about an image's history (a small figure crop, a
    video frame), which on faces-dev is as telling of "was it a PNG" as 8x8 blocks.
    """

    face_min: int = 64
    face_max: int = 96
    scale_min: float = 0.5
    scale_max: float = 0.8
    quality_min: int = 65
    quality_max: int = 95
    max_offset: int = 7

    @property
    def key(self) -> str:
        """Changes whenever the transform would (used in feature cache keys)."""
        return (
            f"norm{NORMALISE_VERSION}-f{self.face_min}-{self.face_max}"
            f"-s{self.scale_min:g}-{self.scale_max:g}"
            f"-q{self.quality_min}-{self.quality_max}-o{self.max_offset}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"version": NORMALISE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normaliser:
        if int(d.get("version", NORMALISE_VERSION)) != NORMALISE_VERSION:
            raise ValueError(f"normalise version {d.get('version')!r} is not supported")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def draw(self, rgb: np.ndarray, face: DetectedFace | None = None) -> NormaliseParams:
        """The transform of ``rgb`` (for ``face``), from a seed of the pixels."""
        rng = np.random.default_rng(content_seed(rgb))
        dx, dy = (int(v) for v in rng.integers(0, self.max_offset + 1, 2))
        quality = int(rng.integers(self.quality_min, self.quality_max + 1))
        u = float(rng.uniform())
        if face is not None and self.face_min > 0:
            target = self.face_min + u * (self.face_max - self.face_min)
            scale = min(1.0, target / max(face.width, face.height, 1.0))
        else:
            scale = self.scale_min + u * (self.scale_max - self.scale_min)
        return NormaliseParams(dx, dy, scale, quality)

    def _geometry(self, rgb: np.ndarray, p: NormaliseParams) -> tuple[int, int, int, int]:
        """(dx, dy, new width, new height) of ``p`` applied to ``rgb``."""
        h, w = rgb.shape[:2]
        dx, dy = min(p.dx, max(w - 1, 0)), min(p.dy, max(h - 1, 0))
        ww, hh = w - dx, h - dy
        return dx, dy, max(1, round(ww * p.scale)), max(1, round(hh * p.scale))

    def apply(
        self, rgb: np.ndarray, face: DetectedFace | None = None
    ) -> tuple[np.ndarray, DetectedFace | None]:
        """The normalised image (for ``face``) and ``face`` mapped into it."""
        p = self.draw(rgb, face)
        dx, dy, nw, nh = self._geometry(rgb, p)
        img = np.ascontiguousarray(rgb[dy:, dx:])
        hh, ww = img.shape[:2]
        if (nw, nh) != (ww, hh):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=p.quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
        if face is None:
            return out, None
        return out, map_face(face, dx, dy, nw / max(ww, 1), nh / max(hh, 1))


def prepare_view(
    image: np.ndarray, face: DetectedFace, preprocess: dict[str, Any], crop_size: int
) -> tuple[np.ndarray, DetectedFace, np.ndarray]:
    """(image, face, loose crop) as a head with ``preprocess`` expects them: the
    normalisation above (``{"normalise": {...}}``), the older format-blind re-encode
    (``{"reencode_jpeg_quality": q}``), or the image as it is."""
    from core.faces.crops import loose_crop

    if preprocess.get("normalise"):
        image, mapped = Normaliser.from_dict(preprocess["normalise"]).apply(image, face)
        assert mapped is not None
        face = mapped
    elif preprocess.get("reencode_jpeg_quality"):
        from core.forensics.features import reencode_jpeg

        image = reencode_jpeg(image, int(preprocess["reencode_jpeg_quality"]))
    return image, face, loose_crop(image, face, crop_size)
