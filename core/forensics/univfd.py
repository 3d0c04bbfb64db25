"""UnivFD: a linear probe on frozen CLIP ViT-L/14 features (the research baseline).

"Towards Universal Fake Image Detectors that Generalize Across Generative Models"
(Ojha et al., CVPR 2023) showed that one linear layer on OpenAI CLIP ViT-L/14
``encode_image`` features separates real from generated images across generators.
The released head (``fc_weights.pth``: a torch state dict with ``weight`` [1, 768]
and ``bias`` [1]) is read from ``<model_dir>/univfd/fc_weights.pth``; the backbone
weights from ``<model_dir>/clip/`` (see core.forensics.clip_features).

Here it scores the loose face crop only (``ForensicInput.face_crop``), resized to
224 x 224; score = sigmoid(w . f + b), fake when score >= threshold (0.5, the
released model's decision point: logit 0). The released head was trained on
ProGAN whole images, not face crops, so its scores on faces are a baseline to
beat, not a calibrated probability; ``IDWATCH_FAKE_THRESHOLD`` overrides the cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import expit

from core.errors import ModelUnavailable
from core.forensics.base import ForensicInput, ForensicResult, ForgeryDetector
from core.forensics.clip_features import (
    CLIP_FEATURE_DIM,
    ClipImageEncoder,
    find_clip_checkpoint,
)

HEAD_SUBPATH = Path("univfd") / "fc_weights.pth"


def head_path(model_dir: Path) -> Path:
    return Path(model_dir) / HEAD_SUBPATH


def load_univfd_head(path: Path) -> tuple[np.ndarray, float]:
    """(weight (768,), bias) from a UnivFD head file; ModelUnavailable if unusable.

    Accepts the released format (``weight``/``bias``) and the same keys under ``fc.``
    (a whole-model state dict from UnivFD's training code).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelUnavailable(f"UnivFD head not found: {path}")
    try:
        # weights_only: a state dict of tensors needs no arbitrary unpickling. The released
        # file was saved on cuda:0, hence map_location.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise ModelUnavailable(f"cannot read UnivFD head {path}: {exc}") from exc
    if isinstance(state, dict) and "weight" not in state and "fc.weight" in state:
        state = {"weight": state["fc.weight"], "bias": state["fc.bias"]}
    if not isinstance(state, dict) or "weight" not in state or "bias" not in state:
        raise ModelUnavailable(f"{path} is not a UnivFD head (needs 'weight' and 'bias')")
    weight = state["weight"].detach().float().cpu().numpy()
    bias = state["bias"].detach().float().cpu().numpy()
    if weight.shape != (1, CLIP_FEATURE_DIM) or bias.shape != (1,):
        raise ModelUnavailable(
            f"{path}: weight {tuple(weight.shape)} / bias {tuple(bias.shape)}, expected "
            f"(1, {CLIP_FEATURE_DIM}) / (1,)"
        )
    return weight[0].astype(np.float32), float(bias[0])


class UnivFDDetector(ForgeryDetector):
    name = "univfd"
    threshold = 0.5
    weight: np.ndarray  # (768,) float32, set by _load
    bias: float

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        threshold: float | None = None,
        allow_random_backbone: bool = False,
        encoder: ClipImageEncoder | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
    ) -> None:
        """``encoder`` shares one loaded CLIP backbone with other heads (ViT-L/14 is
        ~1.2 GB in RAM). ``allow_random_backbone`` is for tests only: with no CLIP
        checkpoint it builds the network with random weights instead of refusing."""
        if model_dir is None:
            from core.settings import get_settings

            model_dir = get_settings().resolved_model_dir
        super().__init__(Path(model_dir))
        if threshold is not None:
            self.threshold = threshold
        self.allow_random_backbone = allow_random_backbone
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._encoder = encoder

    @classmethod
    def available(cls, model_dir: Path) -> bool:
        """True when the head and a CLIP checkpoint are present (not loaded)."""
        return head_path(model_dir).is_file() and find_clip_checkpoint(model_dir) is not None

    @property
    def encoder(self) -> ClipImageEncoder:
        self.load()
        assert self._encoder is not None
        return self._encoder

    def _load(self) -> None:
        assert self.model_dir is not None
        path = head_path(self.model_dir)
        if not path.is_file():
            raise ModelUnavailable(
                f"UnivFD needs its linear head at {path} (UniversalFakeDetect's "
                "pretrained_weights/fc_weights.pth)"
            )
        self.weight, self.bias = load_univfd_head(path)
        if self._encoder is None:
            checkpoint = find_clip_checkpoint(self.model_dir)
            if checkpoint is None and not self.allow_random_backbone:
                raise ModelUnavailable(
                    f"UnivFD needs OpenAI CLIP ViT-L/14 weights in {self.model_dir / 'clip'} "
                    "(ViT-L-14.pt, open_clip_pytorch_model.bin or *.safetensors); none can "
                    "be downloaded at run time"
                )
            self._encoder = ClipImageEncoder(
                checkpoint, batch_size=self.batch_size, num_threads=self.num_threads
            )

    def clip_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (n, 768) CLIP ``encode_image`` features of RGB uint8 images (resized,
        not cropped, to 224 x 224). Also for reference-aware heads (face crops, whole
        images, reference photos)."""
        return self.encoder.features(images)

    def logits(self, features: np.ndarray) -> np.ndarray:
        self.load()
        return np.asarray(features, dtype=np.float32) @ self.weight + np.float32(self.bias)

    def score_many(self, inputs: Sequence[ForensicInput]) -> list[ForensicResult]:
        """Score several faces with batched CLIP forward passes."""
        if not inputs:
            return []
        logits = self.logits(self.clip_features([inp.face_crop for inp in inputs]))
        return [self._result(float(z)) for z in logits]

    def _score(self, inp: ForensicInput) -> ForensicResult:
        return self.score_many([inp])[0]

    def _result(self, logit: float) -> ForensicResult:
        score = float(expit(logit))
        return ForensicResult(
            score=score,
            is_fake=score >= self.threshold,
            detector=self.name,
            parts={"univfd": score, "univfd_logit": logit},
        )
