"""A 0..1 face quality: size, sharpness and detector confidence.

Low quality explains weak identity matches and weak forensic evidence; the
report shows it beside each alert.
"""

from __future__ import annotations

import numpy as np

from core.faces.base import DetectedFace


def sharpness(chip: np.ndarray) -> float:
    """Variance of a 4-neighbour Laplacian of the grey chip (higher is sharper)."""
    g = chip.astype(np.float32).mean(axis=2) if chip.ndim == 3 else chip.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def face_quality(face: DetectedFace, chip: np.ndarray) -> float:
    size = min(1.0, min(face.width, face.height) / 112.0)
    sharp = 1.0 - float(np.exp(-sharpness(chip) / 150.0))
    return round(float(size * sharp * min(1.0, max(face.score, 0.0))) ** (1 / 3), 4)
