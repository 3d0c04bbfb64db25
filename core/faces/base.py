"""The face backend interface.

A backend is one small class with a fixed name, a model directory it loads from
lazily (under a lock, so concurrent callers load once) and three operations:
``detect`` faces in an RGB image, ``align`` one face to the backend's chip, and
``embed_chips`` to unit-norm identity vectors. Splitting align from embed lets the
crop stage store chips and the embed stage batch them across uploads.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np

from core.lazy_model import LazyModel


@dataclass
class DetectedFace:
    """One face found in an image.

    ``landmarks`` are the 5 standard points in insightface order: left eye,
    right eye, nose tip, left mouth corner, right mouth corner (image left/right).
    """

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    landmarks: np.ndarray  # (5, 2) float32
    score: float
    extra: dict = field(default_factory=dict)  # backend-specific (e.g. 68 landmarks)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


class FaceBackend(LazyModel):
    """Detect + align + embed. Subclasses implement ``_load`` and the ``_`` methods."""

    embedding_dim: int = 0
    chip_size: int = 112
    # Cosine similarity at or above which two faces are taken as the same person.
    match_threshold: float = 0.5

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self.load()
        faces = self._detect(np.ascontiguousarray(rgb))
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))

    def align(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        self.load()
        return self._align(np.ascontiguousarray(rgb), face)

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """Unit-norm float32 embeddings, shape (len(chips), embedding_dim)."""
        if not chips:
            return np.zeros((0, self.embedding_dim), np.float32)
        self.load()
        vecs = np.asarray(self._embed_chips(chips), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)

    def embed(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        return self.embed_chips([self.align(rgb, f) for f in faces])

    @abstractmethod
    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...

    @abstractmethod
    def _align(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray: ...

    @abstractmethod
    def _embed_chips(self, chips: list[np.ndarray]) -> np.ndarray: ...
