"""The reference-aware CLIP head ("clip-ref") and the UnivFD scorer, on random ViT-L/14
weights (no CLIP weights exist here) and a handful of generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace
from core.faces.crops import loose_crop
from core.forensics.base import ForensicInput, ReferenceView
from core.forensics.clip_ref import (
    REF_SCALARS,
    ClipRefDetector,
    ClipRefExtractor,
    UnivFDScorer,
    clip_ref_feature_names,
    make_encoder,
)
from core.forensics.head import Head, train_head

_LM = np.array([[44, 52], [84, 52], [64, 72], [48, 92], [80, 92]], np.float32)
_FACE = DetectedFace((24.0, 24.0, 104.0, 120.0), _LM, 1.0)


class StubEncoder:
    """ClipImageEncoder's interface without ViT-L (1-8 s per image on this CPU): a fixed
    random projection of a 16x16 thumbnail to 768-d."""

    feature_dim = 768
    random_weights = True
    checkpoint = None

    def __init__(self) -> None:
        self._w = np.random.default_rng(0).normal(size=(16 * 16 * 3, 768))

    def features(self, images):
        from PIL import Image

        thumbs = [
            np.asarray(Image.fromarray(im).resize((16, 16)), np.float64).ravel() / 255 - 0.5
            for im in images
        ]
        return (np.array(thumbs) @ self._w).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    return StubEncoder()


@pytest.fixture(scope="module")
def vit_l():
    """The real ViT-L/14 network with random weights (no CLIP weights exist here)."""
    enc = make_encoder(None, allow_random_backbone=True)
    enc.batch_size = 16
    return enc


def _images(n: int, fake: bool, seed: int) -> list[np.ndarray]:
    """'Real': smooth gradients + noise; 'fake': blocky, saturated. Different enough
    that even random CLIP features separate them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        yy, xx = np.mgrid[0:144, 0:128]
        if fake:
            img = (rng.integers(0, 4, (9, 8, 3)) * 80).repeat(16, 0).repeat(16, 1)
        else:
            base = np.stack([xx * 1.5, yy * 1.2, (xx + yy) * 0.6], -1)
            img = base + rng.normal(0, 12, (144, 128, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def test_make_encoder_refuses_without_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="CLIP ViT-L/14 weights are needed"):
        make_encoder(tmp_path)


def test_clip_ref_train_save_load_score(encoder, tmp_path: Path) -> None:
    ex = ClipRefExtractor(encoder)
    reals, fakes = _images(4, False, 0), _images(4, True, 1)
    ref_imgs = _images(2, False, 2)
    rng = np.random.default_rng(3)
    emb = [rng.normal(size=8) for _ in range(12)]
    refs = [ex.entry(img, _FACE, {}, emb[k]) for k, img in enumerate(ref_imgs)]
    rows = [ex.entry(img, _FACE, {}, emb[2 + k]) for k, img in enumerate(reals + fakes)]
    assert len(rows[0]["clip_face"]) == 768 and len(rows[0]["clip_image"]) == 768

    names = clip_ref_feature_names()
    feats = [ex.features(r, refs if k % 2 == 0 else []) for k, r in enumerate(rows)]
    assert all(list(f) == names for f in feats)
    with_refs = feats[0]
    assert with_refs["ref.available"] == 1.0 and -1 <= with_refs["ref.cos_max"] <= 1
    assert feats[1]["ref.available"] == 0.0 and feats[1]["ref.diff_000"] == 0.0
    # the difference vector is the face feature minus the mean reference face feature
    f = np.array([with_refs[f"face.clip_{i:03d}"] for i in range(768)])
    d = np.array([with_refs[f"ref.diff_{i:03d}"] for i in range(768)])
    assert np.linalg.norm(f) == pytest.approx(1.0, abs=1e-6) and not np.allclose(d, f)

    X = np.array([[r[n] for n in names] for r in feats])
    y = np.array([0] * 4 + [1] * 4)
    head = train_head(X, y, names, C=0.1, inner_folds=2)
    head.detector = "clip-ref"
    head.backbones = ex.backbones()
    head.feature_layout = {"face": 768, "image": 768, "ref": 768 + len(REF_SCALARS)}
    path = tmp_path / "clip_ref.json"
    head.save(path)
    assert json.loads(path.read_text())["backbones"]["clip"].startswith("ViT-L-14")

    det = ClipRefDetector(head_path=path, encoder=encoder)
    views = [
        ReferenceView(img, _FACE, loose_crop(img, _FACE), emb[k]) for k, img in enumerate(ref_imgs)
    ]
    img = fakes[0]
    inp = ForensicInput(img, _FACE, loose_crop(img, _FACE), references=views, embedding=emb[6])
    res = det.score(inp)
    assert res.detector == "clip-ref" and 0.0 <= res.score <= 1.0
    # the detector computes exactly the features the trainer saw
    x = Head.load(path).vector(ex.features(rows[4], refs))
    assert res.score == pytest.approx(float(head.predict_proba(x)[0]), abs=1e-6)
    assert res.parts["references"] == 2.0


def test_clip_ref_detector_refuses_other_heads(encoder, tmp_path: Path) -> None:
    from core.forensics.offline import PACKAGED_HEAD

    det = ClipRefDetector(head_path=PACKAGED_HEAD, encoder=encoder)
    with pytest.raises(ModelUnavailable, match="not 'clip-ref'"):
        det.load()


@pytest.mark.slow
def test_vit_l_entries_and_univfd_scorer(vit_l) -> None:
    """Two ViT-L forward passes (face crop, whole image) for one face."""
    ex = ClipRefExtractor(vit_l)
    assert ex.key.startswith("clip-ref-v1-random") and "random" in ex.backbones()["clip"]
    e = ex.entry(_images(1, True, 4)[0], _FACE, {}, None)
    w = np.random.default_rng(0).normal(size=768) * 0.01
    s, t = UnivFDScorer(ex, w, 0.2).scores([(e, [])])
    z = np.asarray(e["clip_face"]) @ w + 0.2
    assert s[0] == pytest.approx(1 / (1 + np.exp(-z))) and t[0] == 0.5
