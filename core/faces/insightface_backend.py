"""Production face backend: insightface buffalo_l (SCRFD detector + ArcFace r50).

Model files are read from a buffalo_l-style pack directory,
``<model_dir>/insightface/<pack>/`` holding ``det_*.onnx`` (SCRFD, e.g.
``det_10g.onnx``) and ``w600k_*.onnx`` (ArcFace, e.g. ``w600k_r50.onnx``); the
pack's other models (landmarks, gender/age) are not used. Nothing is downloaded:
insightface's own ``FaceAnalysis`` would try to fetch the pack, so the two models
are loaded directly with ``insightface.model_zoo.get_model``, which picks the
SCRFD or ArcFace wrapper from the ONNX file's input/output shapes.

Colour order: the rest of the system passes RGB arrays, insightface's models
expect OpenCV BGR (their ``blobFromImage(..., swapRB=True)`` turns it back into
the RGB the networks were trained on). This module converts RGB -> BGR in exactly
two places, right before ``SCRFD.detect`` and right before ``ArcFaceONNX.get_feat``.
Alignment is purely geometric, so chips stay RGB like every other backend's.

The buffalo packs are licensed for non-commercial research use only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace, FaceBackend

DET_GLOB = "det_*.onnx"
REC_GLOB = "w600k_*.onnx"
DEFAULT_PACK = "buffalo_l"
_CPU = ["CPUExecutionProvider"]


def pack_dir(model_dir: Path, pack: str = DEFAULT_PACK) -> Path:
    return Path(model_dir) / "insightface" / pack


def find_pack_files(model_dir: Path, pack: str = DEFAULT_PACK) -> tuple[Path, Path] | None:
    """(detector, recogniser) ONNX paths of the pack, or None if either is missing."""
    root = pack_dir(model_dir, pack)
    if not root.is_dir():
        return None
    det = sorted(p for p in root.glob(DET_GLOB) if p.is_file())
    rec = sorted(p for p in root.glob(REC_GLOB) if p.is_file())
    if not det or not rec:
        return None
    return det[0], rec[0]


class InsightFaceBackend(FaceBackend):
    name = "insightface"
    embedding_dim = 512
    chip_size = 112
    # ArcFace (w600k_r50) cosine similarity. Genuine pairs of buffalo_l typically score
    # above ~0.4 and unrelated people below ~0.2; insightface 2.1's own verification
    # GUI calls >= 0.40 "same person" and 0.35-0.40 "uncertain". We take the lower
    # edge, 0.35: here a match only sends the face on to forgery analysis, and face
    # swaps tend to sit below genuine pairs in identity similarity to the person they
    # imitate, so a missed match (an impersonation never checked) costs more than an
    # extra forensic pass. Override with IDWATCH_MATCH_THRESHOLD once calibrated on
    # real data (faces-dev) with the real weights.
    match_threshold = 0.35

    embed_batch_size = 32

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        pack: str = DEFAULT_PACK,
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
    ) -> None:
        if model_dir is None:
            from core.settings import get_settings

            model_dir = get_settings().resolved_model_dir
        super().__init__(Path(model_dir))
        self.pack = pack
        self.det_size = det_size
        self.det_thresh = det_thresh

    @classmethod
    def available(cls, model_dir: Path, pack: str = DEFAULT_PACK) -> bool:
        """True when the pack's detector and recogniser files are present (not loaded)."""
        return find_pack_files(model_dir, pack) is not None

    def _load(self) -> None:
        assert self.model_dir is not None
        files = find_pack_files(self.model_dir, self.pack)
        if files is None:
            raise ModelUnavailable(
                f"insightface backend needs {DET_GLOB} (SCRFD) and {REC_GLOB} (ArcFace) in "
                f"{pack_dir(self.model_dir, self.pack)}; copy the {self.pack} pack there "
                "(it cannot be downloaded at run time) or use the dlib backend"
            )
        try:
            from insightface.model_zoo import get_model
            from insightface.model_zoo.arcface_onnx import ArcFaceONNX
            from insightface.model_zoo.scrfd import SCRFD
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelUnavailable(f"insightface backend needs insightface: {exc}") from exc
        det_path, rec_path = files
        try:
            det = get_model(str(det_path), providers=_CPU)
            rec = get_model(str(rec_path), providers=_CPU)
        except Exception as exc:  # onnxruntime/onnx raise many types for a bad file
            raise ModelUnavailable(
                f"cannot load insightface models from {det_path.parent}: {exc}"
            ) from exc
        if not isinstance(det, SCRFD):
            raise ModelUnavailable(f"{det_path} is not an SCRFD detector (got {type(det)})")
        if not isinstance(rec, ArcFaceONNX):
            raise ModelUnavailable(f"{rec_path} is not an ArcFace recogniser (got {type(rec)})")
        if rec.output_shape[-1] != self.embedding_dim:
            raise ModelUnavailable(
                f"{rec_path} gives {rec.output_shape[-1]}-d embeddings, expected "
                f"{self.embedding_dim}"
            )
        # SCRFD.prepare takes input_size (FaceAnalysis calls it det_size); one fixed size
        # instead of SCRFD's default pair (128 and 640), which would run it twice.
        det.prepare(ctx_id=-1, input_size=self.det_size, det_thresh=self.det_thresh)
        rec.prepare(ctx_id=-1)
        self._det = det
        self._rec = rec

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # RGB -> BGR for SCRFD (see module doc)
        boxes, kpss = self._det.detect(bgr, max_num=0)
        faces = []
        for i, row in enumerate(boxes):
            x1, y1, x2, y2, score = (float(v) for v in row[:5])
            faces.append(
                DetectedFace(
                    box=(x1, y1, x2, y2),
                    landmarks=np.asarray(kpss[i], dtype=np.float32).reshape(5, 2),
                    score=score,
                )
            )
        return faces

    def _align(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        from insightface.utils.face_align import norm_crop

        kps = np.asarray(face.landmarks, dtype=np.float32).reshape(5, 2)
        # A similarity transform onto ArcFace's 5-point template: colour order does not
        # matter here, so the chip stays RGB.
        return norm_crop(rgb, kps, self.chip_size)

    def _embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(chips), self.embed_batch_size):
            # RGB -> BGR for ArcFaceONNX.get_feat (see module doc).
            batch = [
                np.ascontiguousarray(np.asarray(c, dtype=np.uint8)[:, :, ::-1])
                for c in chips[start : start + self.embed_batch_size]
            ]
            out.append(np.asarray(self._rec.get_feat(batch), dtype=np.float32))
        return np.concatenate(out, axis=0)
