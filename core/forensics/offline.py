"""The offline forgery detector: hand-made forensic features + a small trained head.

Runs with nothing downloaded at run time: the features are signal statistics
(core.forensics.features) and an identity embedder; the head is a JSON file
(core.forensics.head). Two heads are packaged, one per identity embedder, each trained
on faces-dev (see its "training" field for the data, protocol and measured accuracy):
``offline_mobilefacenet_v2.json`` (MobileFaceNet, used when its verified file is
installed, see core.faces.mobilefacenet_model; trained with self-blended copies of the
real images and normalised pixels, which generalise better on the honest protocol than
``offline_mobilefacenet_v1.json``, kept for comparison) and ``offline_v1.json`` (dlib, which
ships in the ``face_recognition_models`` wheel; the fallback). A head names its
embedder in ``backbones.identity`` (absent: dlib); features of one embedder never go
into the other's head.

It is reference-aware: with the claimed person's authentic photos in
``ForensicInput.references`` it compares the upload face with them (identity, noise,
sharpness, colour, landmark geometry); without references those features are treated
as missing and the face/image statistics decide alone. Calibration and threshold are
per stratum (with / without references), so ``is_fake`` uses the row's own threshold
(reported in ``parts["threshold"]``); ``self.threshold`` is the pooled one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path

import numpy as np

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace
from core.forensics import features as F
from core.forensics.base import ForensicInput, ForensicResult, ForgeryDetector, ReferenceView
from core.forensics.head import Head
from core.forensics.normalise import prepare_view

log = logging.getLogger(__name__)

HEADS_DIR = Path(__file__).resolve().parent / "heads"
PACKAGED_HEADS = {
    "mobilefacenet": HEADS_DIR / "offline_mobilefacenet_v2.json",
    "dlib": HEADS_DIR / "offline_v1.json",
}
PACKAGED_HEAD = PACKAGED_HEADS["dlib"]  # the head that needs nothing but pip packages
# An option, never chosen automatically: trained only on public-domain portraits that
# packages ship and their self-blended copies (core.demo.permissive, core.forensics.sbi),
# with dlib's identity vectors, so its terms allow shipping it; its threshold is meant to
# be set on the operator's own real photos (`idwatch detector calibrate`). README.
PERMISSIVE_HEAD = HEADS_DIR / "offline_permissive_v1.json"


def packaged_head(model_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The packaged head of the best identity embedder installed here."""
    from core.faces.mobilefacenet_backend import MobileFaceNetBackend

    if MobileFaceNetBackend.available(model_dir, cache_dir):
        return PACKAGED_HEADS["mobilefacenet"]
    return PACKAGED_HEADS["dlib"]


def head_identity(head: Head) -> str:
    """The face backend whose identity vectors a head was trained on."""
    return head.backbones.get("identity") or "dlib"


_REF_CACHE_SIZE = 256
TOP_CONTRIBUTIONS = 8  # per-feature logit shares kept with each verdict


# Larger uploads are analysed in a window of this side around the face: the features
# compare the face with its neighbourhood, and whole 50-megapixel frames would cost
# gigabytes of float arrays per worker. Every faces-dev image fits, so the head's
# training data is unaffected.
MAX_ANALYSIS_SIDE = 2048


def bounded(inp: ForensicInput, side: int = MAX_ANALYSIS_SIDE) -> ForensicInput:
    h, w = inp.image.shape[:2]
    if max(h, w) <= side:
        return inp
    x1, y1, x2, y2 = inp.face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sw, sh = min(side, w), min(side, h)
    x0 = int(np.clip(cx - sw / 2, 0, w - sw))
    y0 = int(np.clip(cy - sh / 2, 0, h - sh))
    shift = np.array([x0, y0], np.float32)
    face = dataclasses.replace(
        inp.face,
        box=(x1 - x0, y1 - y0, x2 - x0, y2 - y0),
        landmarks=np.asarray(inp.face.landmarks, np.float32) - shift,
        extra={
            k: (np.asarray(v, np.float32) - shift).tolist() if k == "landmarks68" else v
            for k, v in (inp.face.extra or {}).items()
        },
    )
    return dataclasses.replace(
        inp, image=np.ascontiguousarray(inp.image[y0 : y0 + sh, x0 : x0 + sw]), face=face
    )


class OfflineDetector(ForgeryDetector):
    name = "offline"

    def __init__(
        self,
        model_dir: Path | None = None,
        head_path: Path | str | None = None,
        embedder=None,
        cache_dir: Path | None = None,
    ) -> None:
        """``head_path``: a head JSON (default: the packaged head of the best identity
        embedder installed, see packaged_head). ``embedder``: a FaceBackend to reuse for
        the identity features when it is the head's (else one is made on load)."""
        super().__init__(model_dir)
        self.cache_dir = cache_dir
        self.head_path = (
            Path(head_path) if head_path is not None else packaged_head(model_dir, cache_dir)
        )
        self._embedder = embedder
        self._ref_cache: OrderedDict[str, F.FaceProfile] = OrderedDict()
        self.head: Head | None = None

    def _load(self) -> None:
        head = Head.load_for(self.head_path, self.name)
        head.check_features(F.feature_names())
        self.head = head
        self.threshold = head.threshold
        wanted = head_identity(head)
        if self._embedder is not None and self._embedder.name != wanted:
            self._embedder = None  # the head's features come from another embedder
        needs = any(n.startswith(("ref.", "id.")) for n in head.feature_names)
        if self._embedder is None and needs:
            from core.faces.registry import make_face_backend

            try:
                emb = make_face_backend(wanted, self.model_dir, self.cache_dir)
                emb.load()
                self._embedder = emb
            except ModelUnavailable as exc:
                if wanted != "dlib":
                    raise ModelUnavailable(
                        f"head {self.head_path.name} was trained on {wanted} identity "
                        f"vectors, which are not available here: {exc}"
                    ) from exc
                # identity features then use the input's embeddings
                log.warning("offline detector without dlib identity features: %s", exc)

    def _prepare(
        self, image: np.ndarray, face: DetectedFace, crop: np.ndarray
    ) -> tuple[np.ndarray, DetectedFace, np.ndarray]:
        """Apply the head's preprocessing, as its training did (its ``preprocess``):
        the normalisation (random crop offset, down-scale, JPEG quality, all seeded by
        the pixels, face mapped along; core.forensics.normalise), the older format-blind
        re-encode, or nothing. A head trained on normalised pixels must see normalised
        uploads and references, or its features mean something else."""
        pre = self.head.preprocess if self.head else {}
        if not (pre.get("normalise") or pre.get("reencode_jpeg_quality")):
            return image, face, crop
        return prepare_view(image, face, pre, crop.shape[0])

    def _ref_profile(self, ref: ReferenceView) -> F.FaceProfile:
        # References of a protected person recur across uploads; profile each once.
        h = hashlib.blake2b(np.ascontiguousarray(ref.face_crop).tobytes(), digest_size=16)
        h.update(repr(ref.face.box).encode())
        key = h.hexdigest()
        prof = self._ref_cache.get(key)
        if prof is None:
            image, face, crop = self._prepare(ref.image, ref.face, ref.face_crop)
            prof = F.face_profile(crop, face, ref.embedding, self._embedder, image=image)
            self._ref_cache[key] = prof
            if len(self._ref_cache) > _REF_CACHE_SIZE:
                self._ref_cache.popitem(last=False)
        else:
            self._ref_cache.move_to_end(key)
        return prof

    def features(
        self, inp: ForensicInput, groups: Collection[str] | None = None
    ) -> dict[str, float]:
        """Every feature (``groups``: see ``features.extract_features``)."""
        self.load()
        refs = [self._ref_profile(r) for r in inp.references]
        inp = bounded(inp)
        image, face, crop = self._prepare(inp.image, inp.face, inp.face_crop)
        if image is not inp.image:
            inp = dataclasses.replace(inp, image=image, face=face, face_crop=crop)
        return F.extract_features(inp, self._embedder, refs, groups)

    def _score(self, inp: ForensicInput) -> ForensicResult:
        assert self.head is not None
        # Only the groups the head weighs, and meta (reported beside the score): the
        # others (e.g. jpeg.* for the packaged heads) would be computed for nothing.
        groups = {F.group_of(n) for n in self.head.feature_names} | {"meta"}
        feats = self.features(inp, groups)
        x = self.head.vector(feats)
        score = float(np.clip(self.head.predict_proba(x)[0], 0.0, 1.0))
        threshold = float(self.head.thresholds(x)[0])
        parts = {f"logit.{g}": round(v, 4) for g, v in self.head.contributions(x).items()}
        parts["logit.bias"] = round(float(self.head.bias), 4)
        # The features that moved this score most, for reviewers (core/review/explain.py).
        for name, v in self.head.feature_contributions(x, top=TOP_CONTRIBUTIONS).items():
            parts[f"contrib.{name}"] = round(v, 4)
        parts["references"] = float(len(inp.references))
        parts["threshold"] = round(threshold, 4)
        if inp.references:
            parts["ref.id_sim_max"] = round(feats["ref.id_sim_max"], 4)
        # Provenance is reported beside the score, never inside it (see features.py).
        for k in ("meta.camera", "meta.edit_software", "meta.ai_marker", "meta.c2pa"):
            parts[k] = feats[k]
        return ForensicResult(
            score=score, is_fake=score >= threshold, detector=self.name, parts=parts
        )
