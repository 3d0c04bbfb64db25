"""UnivFDDetector: head format, preprocessing, scoring maths, refusal without weights.

No CLIP weights exist on these machines, so the ViT-L/14 backbone runs with random
weights (built once per module: ~12 s, then ~2-4 s per image on 2 CPU threads).
The released linear head is read from ../shared/models/univfd when present.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import insightface
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace
from core.forensics.base import ForensicInput
from core.forensics.clip_features import (
    CLIP_FEATURE_DIM,
    CLIP_MEAN,
    CLIP_STD,
    ClipImageEncoder,
    find_clip_checkpoint,
    preprocess,
)
from core.forensics.univfd import UnivFDDetector, head_path, load_univfd_head

RELEASED_HEAD = Path(__file__).resolve().parents[2] / "shared/models/univfd/fc_weights.pth"
needs_released_head = pytest.mark.skipif(
    not RELEASED_HEAD.exists(), reason="released UnivFD head not present"
)


def _save_head(model_dir: Path, weight: torch.Tensor, bias: torch.Tensor) -> Path:
    path = head_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(OrderedDict(weight=weight, bias=bias), path)
    return path


def _random_head(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Small weights keep logits of random-backbone features (norm ~30) near 0, so the
    # sigmoid is not saturated and the by-hand comparison is sensitive.
    return torch.randn(1, CLIP_FEATURE_DIM, generator=g) * 0.01, torch.randn(1, generator=g)


def _input(crop: np.ndarray) -> ForensicInput:
    face = DetectedFace(
        box=(0, 0, crop.shape[1], crop.shape[0]), landmarks=np.zeros((5, 2)), score=1
    )
    return ForensicInput(image=crop, face=face, face_crop=crop)


@pytest.fixture(scope="module")
def encoder() -> ClipImageEncoder:
    return ClipImageEncoder(None, batch_size=4)


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    root = tmp_path_factory.mktemp("models")
    weight, bias = _random_head()
    _save_head(root, weight, bias)
    return root, weight, bias


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    tom = np.asarray(
        Image.open(Path(insightface.__file__).parent / "data/images/Tom_Hanks_54745.png").convert(
            "RGB"
        )
    )
    return [astronaut()[30:230, 140:300], tom]  # 200x160 colour crop, 112x112 grey chip


# --- head file -------------------------------------------------------------------------


@needs_released_head
def test_released_head_has_univfd_format():
    raw = torch.load(RELEASED_HEAD, map_location="cpu", weights_only=True)
    assert set(raw) == {"weight", "bias"}
    assert tuple(raw["weight"].shape) == (1, 768) and tuple(raw["bias"].shape) == (1,)
    weight, bias = load_univfd_head(RELEASED_HEAD)
    assert weight.shape == (768,) and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, raw["weight"][0].numpy())
    assert bias == pytest.approx(float(raw["bias"][0]))
    assert np.isfinite(weight).all() and np.linalg.norm(weight) > 0


@needs_released_head
def test_released_head_loads_through_detector(tmp_path, encoder, crops):
    (tmp_path / "univfd").mkdir()
    (tmp_path / "univfd" / "fc_weights.pth").symlink_to(RELEASED_HEAD)  # never copied
    det = UnivFDDetector(tmp_path, encoder=encoder)
    result = det.score(_input(crops[1]))
    assert 0.0 <= result.score <= 1.0 and result.detector == "univfd"
    np.testing.assert_array_equal(det.weight, load_univfd_head(RELEASED_HEAD)[0])


def test_random_head_round_trips(head_dir, encoder):
    root, weight, bias = head_dir
    det = UnivFDDetector(root, encoder=encoder)
    det.load()
    np.testing.assert_array_equal(det.weight, weight[0].numpy())
    assert det.bias == pytest.approx(float(bias[0]))
    # Training code's whole-model state dict keys ("fc.weight") are accepted too.
    alt = Path(root) / "alt.pth"
    torch.save({"fc.weight": weight, "fc.bias": bias}, alt)
    np.testing.assert_array_equal(load_univfd_head(alt)[0], weight[0].numpy())


def test_bad_head_refused(tmp_path):
    _save_head(tmp_path, torch.zeros(1, 512), torch.zeros(1))
    with pytest.raises(ModelUnavailable, match="expected"):
        load_univfd_head(head_path(tmp_path))
    head_path(tmp_path).write_bytes(b"garbage")
    with pytest.raises(ModelUnavailable):
        load_univfd_head(head_path(tmp_path))


# --- scoring ---------------------------------------------------------------------------


def test_score_is_sigmoid_of_linear_head(head_dir, encoder, crops):
    root, weight, bias = head_dir
    det = UnivFDDetector(root, encoder=encoder)
    results = det.score_many([_input(c) for c in crops])  # one batch of 2
    feats = det.clip_features(crops[:1])  # separately, batch of 1
    assert feats.shape == (1, CLIP_FEATURE_DIM) and feats.dtype == np.float32
    logit = float(torch.from_numpy(feats[0]).double() @ weight[0].double() + bias.double())
    expected = 1.0 / (1.0 + np.exp(-logit))
    assert results[0].score == pytest.approx(expected, abs=1e-4)
    assert results[0].parts["univfd_logit"] == pytest.approx(logit, abs=1e-3)
    for res in results:
        assert 0.0 <= res.score <= 1.0
        assert res.is_fake == (res.score >= 0.5) and res.detector == "univfd"
    # Different images, different evidence (the features are not degenerate).
    assert abs(results[0].parts["univfd_logit"] - results[1].parts["univfd_logit"]) > 1e-3


def test_threshold_override():
    det = UnivFDDetector(Path("/nonexistent"), threshold=0.9)
    assert det._result(2.0).score == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert not det._result(2.0).is_fake and det._result(2.5).is_fake
    assert UnivFDDetector(Path("/nonexistent"))._result(0.0).is_fake  # 0.5 >= 0.5


# --- preprocessing ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(200, 300), (320, 120)])
def test_preprocess_resizes_whole_crop_without_cropping(shape):
    h, w = shape
    img = np.full((h, w, 3), 128, np.uint8)
    mh, mw = h // 8, w // 8  # corner markers, 1/8 of each side
    corners = {  # (y0, y1, x0, x1) -> colour
        (0, mh, 0, mw): (255, 0, 0),
        (0, mh, w - mw, w): (0, 255, 0),
        (h - mh, h, 0, mw): (0, 0, 255),
        (h - mh, h, w - mw, w): (255, 255, 0),
    }
    for (y0, y1, x0, x1), colour in corners.items():
        img[y0:y1, x0:x1] = colour
    x = preprocess([img])
    assert tuple(x.shape) == (1, 3, 224, 224) and x.dtype == torch.float32
    rgb = x[0] * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)
    rgb = (rgb.permute(1, 2, 0).numpy() * 255).round()
    # Every corner marker survives at the corresponding corner of the 224x224 input
    # (a centre crop of the long side would have cut two of them off).
    for (y0, _, x0, _), colour in corners.items():
        py = 5 if y0 == 0 else 218
        px = 5 if x0 == 0 else 218
        np.testing.assert_allclose(rgb[py, px], colour, atol=3)
    np.testing.assert_allclose(rgb[112, 112], (128, 128, 128), atol=3)


def test_preprocess_accepts_grey_and_rgba():
    grey = np.full((50, 60), 200, np.uint8)
    rgba = np.zeros((40, 40, 4), np.uint8)
    assert tuple(preprocess([grey, rgba]).shape) == (2, 3, 224, 224)


# --- availability ----------------------------------------------------------------------


def test_missing_files_raise_model_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="fc_weights"):
        UnivFDDetector(tmp_path, allow_random_backbone=True).load()
    _save_head(tmp_path, *_random_head())
    det = UnivFDDetector(tmp_path)  # production: no CLIP weights -> refuse, never random
    with pytest.raises(ModelUnavailable, match="ViT-L/14"):
        det.score(_input(np.zeros((64, 64, 3), np.uint8)))
    assert not det._loaded
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-L-14.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="cannot load CLIP"):
        UnivFDDetector(tmp_path).load()


def test_available(tmp_path):
    assert not UnivFDDetector.available(tmp_path)
    _save_head(tmp_path, *_random_head())
    assert not UnivFDDetector.available(tmp_path)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "some-vit-l.safetensors").write_bytes(b"x")
    assert UnivFDDetector.available(tmp_path)
    assert find_clip_checkpoint(tmp_path).name == "some-vit-l.safetensors"
    (tmp_path / "clip" / "ViT-L-14.pt").write_bytes(b"x")
    assert find_clip_checkpoint(tmp_path).name == "ViT-L-14.pt"  # preferred name first


# --- real checkpoint formats (slow: writes and reloads 1.7 GB) --------------------------


@pytest.mark.slow
def test_checkpoint_files_load_into_the_same_network(tmp_path, crops):
    """A ViT-L-14 (QuickGELU) state dict saved as OpenAI's ViT-L-14.pt and as open_clip's
    .bin loads through both code paths and gives the saved network's features."""
    import open_clip

    src = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True).eval()
    # OpenAI's weights are fp16 values and load_openai_model round-trips through fp16;
    # make the random weights fp16-exact so both paths must match to float precision.
    src = src.half().float()
    with torch.inference_mode():
        expected = src.encode_image(preprocess(crops[:1])).numpy()
    state = src.state_dict()
    del src
    for name in ("ViT-L-14.pt", "open_clip_pytorch_model.bin"):
        path = tmp_path / "clip" / name
        path.parent.mkdir(exist_ok=True)
        torch.save(state, path)
        assert find_clip_checkpoint(tmp_path) == path
        got = ClipImageEncoder(path).features(crops[:1])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        path.unlink()
