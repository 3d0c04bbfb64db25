"""Offline face backend: dlib HOG detector, 68-point landmarks, 128-d ResNet embedding.

All weights ship in the ``face_recognition_models`` wheel, so this backend works
with no download. Embeddings are L2-normalised and compared by cosine.
The threshold 0.90 was measured on faces-dev (README, "Models"): 100% of real
same-person pairs and of fake-vs-victim pairs match, 2.9% of different-person pairs.
"""

from __future__ import annotations

import warnings

import numpy as np

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace, FaceBackend

# 68-point indices (iBUG layout) that give the standard 5 points.
_LEFT_EYE = slice(36, 42)  # image-left eye (the subject's right)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54


def five_from_68(pts68: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            pts68[_LEFT_EYE].mean(axis=0),
            pts68[_RIGHT_EYE].mean(axis=0),
            pts68[_NOSE_TIP],
            pts68[_MOUTH_LEFT],
            pts68[_MOUTH_RIGHT],
        ]
    ).astype(np.float32)


class DlibFaceBackend(FaceBackend):
    name = "dlib"
    embedding_dim = 128
    chip_size = 150
    match_threshold = 0.90

    # HOG finds faces from ~80 px; one upsampling step reaches ~40 px faces at 4x cost,
    # so it is tried only when the native scale finds no face, and only on images small
    # enough for it to stay cheap. Measured on faces-dev (283 images): median 12 ms per
    # image instead of 53 ms when every small image was upsampled, faces found in 278
    # images instead of 277 (scripts/measure_face_backends.py, README "Models").
    upsample_below_px = 1200

    def __init__(self, model_dir=None, *, load_encoder: bool = True) -> None:
        """``load_encoder=False``: detection and landmarks only (another backend embeds)."""
        super().__init__(model_dir)
        self.load_encoder = load_encoder

    def _load(self) -> None:
        try:
            import dlib

            with warnings.catch_warnings():  # it imports the deprecated pkg_resources
                warnings.simplefilter("ignore", UserWarning)
                import face_recognition_models as frm
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelUnavailable(
                f"dlib backend needs dlib-bin and face_recognition_models: {exc}"
            ) from exc
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(frm.pose_predictor_model_location())
        self._encoder = (
            dlib.face_recognition_model_v1(frm.face_recognition_model_location())
            if self.load_encoder
            else None
        )

    def _shape68(self, rgb: np.ndarray, box: tuple[float, float, float, float]):
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        return self._shape(rgb, rect)

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        rects, scores, _ = self._detector.run(rgb, 0, 0.0)
        if not len(rects) and max(rgb.shape[:2]) < self.upsample_below_px:
            rects, scores, _ = self._detector.run(rgb, 1, 0.0)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            shape = self._shape(rgb, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            faces.append(
                DetectedFace(
                    box=box,
                    landmarks=five_from_68(pts),
                    # HOG SVM margin mapped to (0, 1) so scores compare across backends.
                    score=float(1.0 / (1.0 + np.exp(-2.0 * score))),
                    extra={"landmarks68": pts.tolist()},
                )
            )
        return faces

    def _align(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        if "landmarks68" in face.extra:
            pts = np.asarray(face.extra["landmarks68"], dtype=np.float32)
            shape = self._dlib.full_object_detection(
                self._dlib.rectangle(*(int(round(v)) for v in face.box)),
                [self._dlib.point(int(round(x)), int(round(y))) for x, y in pts],
            )
        else:
            shape = self._shape68(rgb, face.box)
        return np.asarray(self._dlib.get_face_chip(rgb, shape, size=self.chip_size, padding=0.25))

    def _embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        if self._encoder is None:
            raise ModelUnavailable("this dlib backend was loaded for detection only")
        batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
        return np.array([np.array(d) for d in self._encoder.compute_face_descriptor(batch)])
