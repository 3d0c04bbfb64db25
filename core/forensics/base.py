"""The forgery detector interface.

Every detector sees the same evidence, even if it uses only part of it: the
face crop, the whole image, the face's identity similarity to the claimed
person, and that person's authentic references. This is what makes
reference-aware detection possible (the research baseline, UnivFD, looked at
the image alone).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np

from core.faces.base import DetectedFace
from core.lazy_model import LazyModel


@dataclass
class ReferenceView:
    """One authentic reference photo of the claimed identity."""

    image: np.ndarray  # whole reference photo, RGB uint8
    face: DetectedFace
    face_crop: np.ndarray  # loose crop around the face, RGB uint8
    embedding: np.ndarray | None = None  # identity vector of the face backend


@dataclass
class ForensicInput:
    image: np.ndarray  # whole upload, RGB uint8
    face: DetectedFace
    face_crop: np.ndarray  # loose crop around the face (see core.faces.crops)
    references: list[ReferenceView] = field(default_factory=list)
    identity_similarity: float | None = None  # cosine to the claimed identity
    embedding: np.ndarray | None = None  # identity vector of the upload face
    metadata: dict[str, str] = field(default_factory=dict)  # provenance text (EXIF/XMP/PNG)
    file_format: str | None = None  # container format as decoded (JPEG, PNG, ...)


@dataclass
class ForensicResult:
    score: float  # calibrated probability of fake, in [0, 1]
    is_fake: bool
    detector: str
    parts: dict[str, float] = field(default_factory=dict)  # per-signal scores, for reports


class ForgeryDetector(LazyModel):
    """Lazy-loading detector; subclasses implement ``_load`` and ``_score``."""

    threshold: float = 0.5

    def score(self, inp: ForensicInput) -> ForensicResult:
        self.load()
        return self._score(inp)

    @abstractmethod
    def _score(self, inp: ForensicInput) -> ForensicResult: ...
