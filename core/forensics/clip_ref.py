""" "clip-ref": a reference-aware head on frozen CLIP ViT-L/14 features.

UnivFD looks at one image. Here the same backbone (core.forensics.clip_features) sees
the upload's face crop, the whole upload, and the claimed person's authentic
references, and a JSON head (core.forensics.head, the offline detector's machinery)
fuses, for a face matched to identity X:

- ``face.clip_*``   L2-normalised CLIP feature of the loose face crop (768);
- ``image.clip_*``  L2-normalised CLIP feature of the whole image (768);
- ``ref.available`` 1 with references, else 0 (the ``ref.`` group is then neutral);
- ``ref.cos_max`` / ``ref.cos_mean``  cosine of the face feature to each reference's
  face feature; ``ref.img_cos_max`` the same for whole images;
- ``ref.id_sim_max`` / ``ref.id_sim_mean`` / ``ref.id_sim_min``  identity cosine (face
  backend embedding: a head records its ``face_backend`` and is refused with another);
  with several references ``ref.id_gap_refs``: the best cosine minus how well the
  references match each other (median of each one's best match), ``ref.multi`` = 1;
- ``ref.diff_*``  face feature minus the mean reference face feature (768): the
  direction in which this face departs from the person's authentic photos
  (ICT-Ref / VIP-Guard style reference comparison, linearised).

Weights are never downloaded: the backbone comes from ``<model_dir>/clip/``; with
``allow_random_backbone`` (tests only) random weights are used.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import expit

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace
from core.faces.crops import loose_crop
from core.forensics.base import ForensicInput, ForensicResult, ForgeryDetector
from core.forensics.clip_features import CLIP_FEATURE_DIM, CLIP_MODEL, ClipImageEncoder
from core.forensics.head import Head

log = logging.getLogger(__name__)

DIM = CLIP_FEATURE_DIM
REF_SCALARS = (
    "ref.available",
    "ref.cos_max",
    "ref.cos_mean",
    "ref.img_cos_max",
    "ref.id_sim_max",
    "ref.id_sim_mean",
    "ref.id_sim_min",
    "ref.multi",
    "ref.id_gap_refs",
)


def clip_ref_feature_names(dim: int = DIM) -> list[str]:
    return (
        [f"face.clip_{i:03d}" for i in range(dim)]
        + [f"image.clip_{i:03d}" for i in range(dim)]
        + list(REF_SCALARS)
        + [f"ref.diff_{i:03d}" for i in range(dim)]
    )


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / (np.linalg.norm(v) + 1e-9)


def make_encoder(
    model_dir: Path | None, allow_random_backbone: bool = False, num_threads: int | None = None
) -> ClipImageEncoder:
    """The CLIP ViT-L/14 encoder from ``<model_dir>/clip``; random weights only when
    allowed (tests), else ModelUnavailable."""
    from core.forensics.clip_features import find_clip_checkpoint

    ckpt = find_clip_checkpoint(model_dir) if model_dir is not None else None
    if ckpt is None and not allow_random_backbone:
        raise ModelUnavailable(
            f"OpenAI CLIP ViT-L/14 weights are needed in {Path(model_dir or '.') / 'clip'} "
            "(ViT-L-14.pt, open_clip_pytorch_model.bin or *.safetensors)"
        )
    return ClipImageEncoder(ckpt, num_threads=num_threads)


class ClipRefExtractor:
    """Per-face CLIP entries (cached by core.evaluation) and the pair features above.

    Implements core.evaluation.dataset_features.FeatureExtractor (duck-typed here so
    the detector does not import the evaluation package)."""

    name = "clip-ref"

    def __init__(self, encoder: ClipImageEncoder, reencode_quality: int | None = None) -> None:
        self.encoder = encoder
        self.reencode_quality = reencode_quality
        self._image_cache: tuple[str, list[float]] | None = None

    @property
    def key(self) -> str:
        w = "random" if self.encoder.random_weights else Path(str(self.encoder.checkpoint)).name
        return f"clip-ref-v1-{w}-q{self.reencode_quality or 0}"

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        from core.forensics.features import reencode_jpeg

        return reencode_jpeg(rgb, self.reencode_quality) if self.reencode_quality else rgb

    def entry(
        self,
        rgb: np.ndarray,
        face: DetectedFace,
        metadata: dict[str, str] | None = None,
        embedding: np.ndarray | None = None,
        crop: np.ndarray | None = None,
    ) -> dict:
        crop = loose_crop(rgb, face) if crop is None else crop
        # The whole image is shared by all its faces: encode it once.
        key = hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=16).hexdigest()
        if self._image_cache is not None and self._image_cache[0] == key:
            img_feat = self._image_cache[1]
            face_feat = self.encoder.features([crop])[0]
        else:
            both = self.encoder.features([crop, rgb])
            face_feat, img_feat = both[0], both[1].tolist()
            self._image_cache = (key, img_feat)
        return {
            "clip_face": np.asarray(face_feat, np.float64).tolist(),  # raw (UnivFD uses raw)
            "clip_image": list(img_feat),
            "embedding": None if embedding is None else np.asarray(embedding, float).tolist(),
        }

    def features(self, upload: dict, refs: Sequence[dict]) -> dict[str, float]:
        f = _unit(upload["clip_face"])
        g = _unit(upload["clip_image"])
        out = {f"face.clip_{i:03d}": float(v) for i, v in enumerate(f)}
        out.update({f"image.clip_{i:03d}": float(v) for i, v in enumerate(g)})
        out.update(dict.fromkeys(REF_SCALARS, 0.0))
        diff = np.zeros(len(f))
        if refs:
            rf = np.array([_unit(r["clip_face"]) for r in refs])
            rg = np.array([_unit(r["clip_image"]) for r in refs])
            cos = rf @ f
            out["ref.available"] = 1.0
            out["ref.cos_max"] = float(cos.max())
            out["ref.cos_mean"] = float(cos.mean())
            out["ref.img_cos_max"] = float((rg @ g).max())
            embs = [r["embedding"] for r in refs if r.get("embedding") is not None]
            if upload.get("embedding") is not None and embs:
                ids = np.array([_unit(e) for e in embs]) @ _unit(upload["embedding"])
                out["ref.id_sim_max"] = float(ids.max())
                out["ref.id_sim_mean"] = float(ids.mean())
                out["ref.id_sim_min"] = float(ids.min())
                if len(embs) >= 2:  # compared with how well her photos match each other
                    from core.forensics.features import loo_best

                    out["ref.multi"] = 1.0
                    loo = loo_best([_unit(e) for e in embs])
                    out["ref.id_gap_refs"] = float(ids.max() - np.median(loo))
            diff = f - rf.mean(axis=0)
        out.update({f"ref.diff_{i:03d}": float(v) for i, v in enumerate(diff)})
        return out

    def feature_names(self) -> list[str]:
        return clip_ref_feature_names(self.encoder.feature_dim)

    def backbones(self) -> dict[str, str]:
        w = (
            "random weights (test only)"
            if self.encoder.random_weights
            else str(self.encoder.checkpoint)
        )
        return {"clip": f"{CLIP_MODEL} ({w})", "identity": "face backend embedding"}


class UnivFDScorer:
    """The plain UnivFD baseline as an evaluation scorer (core.evaluation.protocol
    PairScorer): sigmoid(w . clip(face crop) + b), references ignored."""

    name = "univfd"

    def __init__(
        self, extractor: ClipRefExtractor, weight: np.ndarray, bias: float, threshold: float = 0.5
    ) -> None:
        self.extractor = extractor
        self.weight = np.asarray(weight, np.float64)
        self.bias = float(bias)
        self.threshold = threshold

    def scores(self, pairs):
        if not pairs:
            return np.zeros(0), np.zeros(0)
        z = np.array([np.asarray(up["clip_face"]) @ self.weight + self.bias for up, _ in pairs])
        return expit(z), np.full(len(z), self.threshold)

    def describe(self) -> str:
        return "univfd (released linear head on CLIP ViT-L/14)"


class ClipRefDetector(ForgeryDetector):
    """The pipeline's detector for a head trained by ``idwatch detector train
    --backbone clip`` (``detector: "clip-ref"`` in the head file)."""

    name = "clip-ref"

    def __init__(
        self,
        model_dir: Path | None = None,
        head_path: Path | str | None = None,
        *,
        allow_random_backbone: bool = False,
        encoder: ClipImageEncoder | None = None,
        face_backend: str | None = None,
    ) -> None:
        """``face_backend``: the backend whose embeddings the inputs carry; a head trained
        on another backend's identity cosines is refused."""
        super().__init__(model_dir)
        self.face_backend = face_backend
        self.head_path = Path(head_path) if head_path is not None else None
        self.allow_random_backbone = allow_random_backbone
        self._encoder = encoder
        self.head: Head | None = None
        self.extractor: ClipRefExtractor | None = None

    def _load(self) -> None:
        if self.head_path is None:
            raise ModelUnavailable(
                "clip-ref needs a head file (idwatch detector train --backbone clip)"
            )
        head = Head.load_for(self.head_path, self.name)
        trained_on = head.backbones.get("face_backend")
        if self.face_backend and trained_on and trained_on != self.face_backend:
            raise ModelUnavailable(
                f"{self.head_path.name} was trained on {trained_on} identity vectors; "
                f"this system embeds with {self.face_backend}: retrain the head"
            )
        enc = self._encoder or make_encoder(self.model_dir, self.allow_random_backbone)
        self.extractor = ClipRefExtractor(enc, head.preprocess.get("reencode_jpeg_quality"))
        head.check_features(self.extractor.feature_names())
        self.head = head
        self.threshold = head.threshold

    def _score(self, inp: ForensicInput) -> ForensicResult:
        assert self.head is not None and self.extractor is not None
        ex = self.extractor
        image = ex.prepare(inp.image)
        up = ex.entry(image, inp.face, inp.metadata, inp.embedding)
        refs = [ex.entry(ex.prepare(r.image), r.face, None, r.embedding) for r in inp.references]
        feats = ex.features(up, refs)
        x = self.head.vector(feats)
        score = float(np.clip(self.head.predict_proba(x)[0], 0.0, 1.0))
        threshold = float(self.head.thresholds(x)[0])
        parts = {f"logit.{g}": round(v, 4) for g, v in self.head.contributions(x).items()}
        parts.update(references=float(len(refs)), threshold=round(threshold, 4))
        return ForensicResult(score, score >= threshold, self.name, parts)
