"""Frozen CLIP ViT-L/14 image features (the backbone of UnivFD and of later heads).

UnivFD (Ojha et al., CVPR 2023) trains only a linear layer on the 768-d output of
OpenAI's CLIP ViT-L/14 ``encode_image``; any head built on the same features must
therefore use OpenAI's weights and OpenAI's architecture details, which include
QuickGELU activations (open_clip's plain "ViT-L-14" config uses nn.GELU and would
silently give different features from the same weights).

Weights are never downloaded. They are looked up in ``<model_dir>/clip/``:

* ``ViT-L-14.pt``: the OpenAI release (TorchScript archive) as fetched by the
  ``clip`` package; loaded with ``open_clip.load_openai_model``, which reads the
  archive without unpickling arbitrary objects;
* ``open_clip_pytorch_model.bin`` / ``*.safetensors``: the same weights as
  published for open_clip (HF ``timm/vit_large_patch14_clip_224.openai``), loaded
  with ``open_clip.create_model("ViT-L-14", pretrained=<file>, force_quick_gelu=True)``.

Only the vision tower is kept (the text tower would be another ~0.5 GB of RAM).

Preprocessing follows the project's choice for face crops: the whole crop is
RESIZED to 224 x 224 (bicubic, aspect ratio not kept), never centre-cropped, so
nothing at the crop's edges is lost; then CLIP's mean/std normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import ModelUnavailable

CLIP_MODEL = "ViT-L-14"
CLIP_INPUT_SIZE = 224
CLIP_FEATURE_DIM = 768
# open_clip.constants.OPENAI_DATASET_MEAN / _STD (copied so preprocessing needs no
# open_clip import).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Checked in this order; then any other *.safetensors in the folder.
CHECKPOINT_NAMES = (
    "ViT-L-14.pt",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def find_clip_checkpoint(model_dir: Path) -> Path | None:
    """The CLIP ViT-L/14 weight file under ``<model_dir>/clip/``, or None."""
    root = Path(model_dir) / "clip"
    for name in CHECKPOINT_NAMES:
        if (root / name).is_file():
            return root / name
    others = sorted(p for p in root.glob("*.safetensors") if p.is_file()) if root.is_dir() else []
    return others[0] if others else None


def preprocess(images: Sequence[np.ndarray], size: int = CLIP_INPUT_SIZE) -> torch.Tensor:
    """RGB uint8 images (any size, grey or RGBA accepted) -> normalised [n, 3, size, size]."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    arrays = []
    for img in images:
        pil = Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB")
        arrays.append(np.asarray(pil.resize((size, size), Image.BICUBIC)))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def _load_visual(checkpoint: Path | None) -> torch.nn.Module:
    import open_clip

    if checkpoint is None:
        model = open_clip.create_model(CLIP_MODEL, pretrained=None, force_quick_gelu=True)
    elif checkpoint.suffix == ".pt":
        # OpenAI's TorchScript archive (or a plain state dict of it); the architecture is
        # read from the weights and QuickGELU is OpenAI's default there.
        model = open_clip.load_openai_model(str(checkpoint), precision="fp32", device="cpu")
    else:
        model = open_clip.create_model(
            CLIP_MODEL, pretrained=str(checkpoint), force_quick_gelu=True
        )
    visual = model.visual
    del model
    visual.eval().requires_grad_(False)
    return visual


class ClipImageEncoder:
    """Batched, frozen CLIP ViT-L/14 ``encode_image`` on CPU.

    ``checkpoint=None`` builds the network with random weights: only for tests;
    callers decide whether that is acceptable (UnivFDDetector refuses by default).
    ``num_threads`` sets torch's intra-op threads for the whole process (torch has
    no per-model setting); None keeps torch's default (physical cores, or
    OMP_NUM_THREADS). Thread-safe: forward passes hold no state.
    """

    feature_dim = CLIP_FEATURE_DIM

    def __init__(
        self,
        checkpoint: Path | None,
        *,
        batch_size: int = 8,
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(max(1, num_threads))
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.random_weights = checkpoint is None
        try:
            self._visual = _load_visual(checkpoint)
        except Exception as exc:  # torch/open_clip raise many types for a bad file
            raise ModelUnavailable(
                f"cannot load CLIP {CLIP_MODEL} from {checkpoint}: {exc}"
            ) from exc
        out_dim = getattr(self._visual, "output_dim", CLIP_FEATURE_DIM)
        if out_dim != CLIP_FEATURE_DIM:
            raise ModelUnavailable(
                f"{checkpoint} gives {out_dim}-d image features; UnivFD needs CLIP ViT-L/14 "
                f"({CLIP_FEATURE_DIM}-d)"
            )

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Already preprocessed [n, 3, 224, 224] -> [n, 768] (unnormalised, as UnivFD)."""
        with torch.inference_mode():
            return self._visual(pixels)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images -> float32 (n, 768) ``encode_image`` features."""
        if len(images) == 0:
            return np.zeros((0, CLIP_FEATURE_DIM), np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = preprocess(images[start : start + self.batch_size])
            out.append(self.encode(pixels).float().numpy())
        return np.concatenate(out, axis=0)
