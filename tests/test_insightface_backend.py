"""InsightFaceBackend on synthetic buffalo_l-shaped ONNX models (tests/onnx_builders.py).

The real buffalo_l pack cannot be downloaded here; the stand-ins have the exact
shapes insightface routes and decodes, and a detector whose output is known in
advance, so these tests check the loading, the BGR/RGB handling, SCRFD's decode
and rescaling as the backend uses them, alignment and embedding batching.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import insightface
import numpy as np
import onnxruntime as ort
import pytest
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils.face_align import norm_crop
from PIL import Image
from skimage.data import astronaut

from core.errors import ModelUnavailable
from core.faces.base import DetectedFace
from core.faces.insightface_backend import InsightFaceBackend, find_pack_files

# tests/ is not a package; pytest puts it on sys.path (rootdir-relative when it is one).
try:
    from onnx_builders import (
        ARCFACE_TEMPLATE,
        BOX_HALF_STRIDES,
        KPS_OFFSETS_STRIDES,
        build_arcface,
        build_buffalo_pack,
        build_scrfd,
    )
except ModuleNotFoundError:  # pragma: no cover - tests/ made a package
    from tests.onnx_builders import (
        ARCFACE_TEMPLATE,
        BOX_HALF_STRIDES,
        KPS_OFFSETS_STRIDES,
        build_arcface,
        build_buffalo_pack,
        build_scrfd,
    )

IMAGES = Path(insightface.__file__).parent / "data" / "images"
STRIDE = 32  # the builder's default active stride
DET_SIZE = 640


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_buffalo_pack(root)
    return root


@pytest.fixture(scope="module")
def backend(model_dir) -> InsightFaceBackend:
    b = InsightFaceBackend(model_dir)
    b.load()
    return b


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


def _det_scale(h: int, w: int) -> float:
    """SCRFD's letterbox scale for a square det size (SCRFD._detect_candidates)."""
    if h / w > 1.0:
        return DET_SIZE / h
    return int(DET_SIZE * h / w) / h


# --- loading ---------------------------------------------------------------------------


def test_model_zoo_routes_built_files(tmp_path):
    det = get_model(str(build_scrfd(tmp_path / "det_10g.onnx")), providers=["CPUExecutionProvider"])
    rec = get_model(
        str(build_arcface(tmp_path / "w600k_r50.onnx")), providers=["CPUExecutionProvider"]
    )
    assert isinstance(det, SCRFD)
    assert det.use_kps and det.fmc == 3 and det._num_anchors == 2
    assert list(det._feat_stride_fpn) == [8, 16, 32]
    assert isinstance(rec, ArcFaceONNX)
    assert rec.input_size == (112, 112)
    # Not mistaken for an MXNet export with built-in normalisation.
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)


def test_backend_loads_from_pack(backend, model_dir):
    assert isinstance(backend._det, SCRFD)
    assert isinstance(backend._rec, ArcFaceONNX)
    assert backend.name == "insightface"
    assert backend.embedding_dim == 512 and backend.chip_size == 112
    assert 0.0 < backend.match_threshold < 1.0
    det_path, rec_path = find_pack_files(model_dir)
    assert det_path.name == "det_10g.onnx" and rec_path.name == "w600k_r50.onnx"


def test_available(tmp_path, model_dir):
    assert InsightFaceBackend.available(model_dir)
    assert not InsightFaceBackend.available(tmp_path)
    assert not InsightFaceBackend.available(model_dir, pack="antelopev2")
    only_det = tmp_path / "insightface" / "buffalo_l"
    build_scrfd(only_det / "det_10g.onnx")
    assert not InsightFaceBackend.available(tmp_path)


def test_missing_files_raise_model_unavailable(tmp_path):
    build_arcface(tmp_path / "insightface" / "buffalo_l" / "w600k_r50.onnx")
    b = InsightFaceBackend(tmp_path)
    with pytest.raises(ModelUnavailable, match=r"det_\*\.onnx"):
        b.load()
    with pytest.raises(ModelUnavailable):
        b.detect(np.zeros((64, 64, 3), np.uint8))
    assert not b._loaded


def test_unusable_file_raises_model_unavailable(tmp_path):
    pack = tmp_path / "insightface" / "buffalo_l"
    build_arcface(pack / "w600k_r50.onnx")
    (pack / "det_10g.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelUnavailable):
        InsightFaceBackend(tmp_path).load()


# --- embeddings ------------------------------------------------------------------------


def _chips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(n)]


def test_embeddings_unit_norm_deterministic_distinct(backend):
    chips = _chips(5) + [_rgb("Tom_Hanks_54745.png")]
    a = backend.embed_chips(chips)
    b = backend.embed_chips(chips)
    assert a.shape == (6, 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    sims = a @ a.T
    off_diag = sims[~np.eye(len(chips), dtype=bool)]
    assert off_diag.max() < 0.99
    assert backend.embed_chips([]).shape == (0, 512)


def test_embedding_batches_match_single(backend, monkeypatch):
    chips = _chips(7, seed=1)
    whole = backend.embed_chips(chips)
    monkeypatch.setattr(backend, "embed_batch_size", 3)  # forces batches of 3, 3, 1
    batched = backend.embed_chips(chips)
    single = np.concatenate([backend.embed_chips([c]) for c in chips])
    np.testing.assert_allclose(batched, whole, atol=1e-5)
    np.testing.assert_allclose(single, whole, atol=1e-5)


def test_embedding_feeds_the_network_rgb(backend, model_dir):
    """Chips are RGB; ArcFace networks take RGB normalised by 127.5 (insightface's BGR
    wrapper swaps back). Compare with the raw ONNX session on the RGB chip. (The Tom
    Hanks sample is grey, so a colour photo is used.)"""
    chip = cv2.resize(astronaut()[40:296, 120:376], (112, 112), interpolation=cv2.INTER_AREA)
    sess = ort.InferenceSession(
        str(model_dir / "insightface/buffalo_l/w600k_r50.onnx"),
        providers=["CPUExecutionProvider"],
    )
    blob = ((chip.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    raw = sess.run(None, {"input.1": blob})[0][0]
    expected = raw / np.linalg.norm(raw)
    got = backend.embed_chips([chip])[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    swapped = backend.embed_chips([np.ascontiguousarray(chip[:, :, ::-1])])[0]
    assert float(got @ swapped) < 0.999  # the channel order reaches the network


# --- alignment -------------------------------------------------------------------------


def test_norm_crop_of_template_points_is_identity():
    chip = _rgb("Tom_Hanks_54745.png")
    out = norm_crop(chip, ARCFACE_TEMPLATE.copy(), 112)
    assert out.shape == (112, 112, 3)
    assert np.abs(out.astype(int) - chip.astype(int)).mean() < 2.0


def test_align_recovers_scaled_and_shifted_face(backend):
    """Place the aligned face 2x larger at an offset in a bigger image; aligning with the
    correspondingly moved keypoints must give back (about) the original chip."""
    chip = _rgb("Tom_Hanks_54745.png")
    big = cv2.resize(chip, (224, 224), interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((400, 500, 3), np.uint8)
    ox, oy = 150, 90
    canvas[oy : oy + 224, ox : ox + 224] = big
    kps = ARCFACE_TEMPLATE * 2 + np.array([ox, oy], np.float32)
    face = DetectedFace(box=(ox, oy, ox + 224, oy + 224), landmarks=kps, score=1.0)
    out = backend.align(canvas, face)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - chip.astype(int)).mean() < 6.0


# --- detection -------------------------------------------------------------------------


def _painted(h: int, w: int, cell: tuple[int, int], rgb: tuple[int, int, int]) -> np.ndarray:
    """Black image with one stride-32 detector cell (row, col) painted in ``rgb``."""
    img = np.zeros((h, w, 3), np.uint8)
    s = STRIDE / _det_scale(h, w)  # cell side in original pixels
    r, c = cell
    img[int(r * s) : int((r + 1) * s), int(c * s) : int((c + 1) * s)] = rgb
    return img


def test_detect_decodes_one_face_where_the_red_cell_is(backend):
    h, w, cell = 960, 1280, (5, 7)  # non-square: letterboxed at scale 0.5
    img = _painted(h, w, cell, (255, 0, 0))
    faces = backend.detect(img)
    assert len(faces) == 1  # both anchors fire on the same box; NMS keeps one
    face = faces[0]
    scale = _det_scale(h, w)
    anchor = np.array([cell[1] * STRIDE, cell[0] * STRIDE], np.float32)
    half = BOX_HALF_STRIDES * STRIDE
    expected_box = np.concatenate([anchor - half, anchor + half]) / scale
    np.testing.assert_allclose(face.box, expected_box, atol=1e-3)
    expected_kps = (anchor + KPS_OFFSETS_STRIDES * STRIDE) / scale
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    np.testing.assert_allclose(face.landmarks, expected_kps, atol=1e-3)
    assert 0.99 < face.score <= 1.0


def test_detect_sees_rgb_not_bgr(backend):
    """The detector fires on the network's R channel: a blue cell (which would look red
    if the backend forgot to hand insightface BGR) and a black image give nothing."""
    assert backend.detect(_painted(640, 640, (3, 4), (0, 0, 255))) == []
    assert backend.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_detect_align_embed_on_red_cell(backend):
    img = _painted(640, 640, (6, 9), (255, 0, 0))
    (face,) = backend.detect(img)
    chip = backend.align(img, face)
    # The box spans the chip; the red cell is the box's third quarter in x and y.
    assert chip.shape == (112, 112, 3)
    centre = chip[60:80, 60:80].reshape(-1, 3)
    assert (centre[:, 0] > 200).all() and (centre[:, 1:] < 50).all()
    assert chip[5:45, 5:45].max() < 30
    emb = backend.embed(img, [face])
    assert emb.shape == (1, 512)
    np.testing.assert_allclose(np.linalg.norm(emb), 1.0, atol=1e-5)


def test_detect_on_group_photo_is_well_formed(backend):
    rgb = _rgb("t1.jpg")
    h, w = rgb.shape[:2]
    faces = backend.detect(rgb)
    assert faces, "t1.jpg has cells red enough for the synthetic detector"
    scale = _det_scale(h, w)
    side = 2 * BOX_HALF_STRIDES * STRIDE / scale
    xs = [f.box[0] for f in faces]
    assert xs == sorted(xs)  # FaceBackend.detect orders by position
    for f in faces:
        assert isinstance(f, DetectedFace)
        assert 0.5 <= f.score <= 1.0  # det_thresh
        assert f.width == pytest.approx(side) and f.height == pytest.approx(side)
        assert f.landmarks.shape == (5, 2) and f.landmarks.dtype == np.float32
        centre = np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])
        np.testing.assert_allclose(
            f.landmarks, centre + KPS_OFFSETS_STRIDES * STRIDE / scale, atol=1e-3
        )
        # Each box comes from an anchor on the stride grid of the letterboxed image.
        np.testing.assert_allclose(
            centre * scale / STRIDE, np.round(centre * scale / STRIDE), atol=1e-4
        )
    # Cross-check the decode against the detector's own definition: the cell with the
    # highest mean red in the letterboxed image always survives NMS, as the top score.
    nh, nw = int(round(h * scale)), int(round(w * scale))
    small = cv2.resize(rgb, (nw, nh)).astype(np.float32)
    letterbox = np.zeros((DET_SIZE, DET_SIZE), np.float32)
    letterbox[:nh, :nw] = (small[:, :, 0] - 127.5) / 128.0
    g = DET_SIZE // STRIDE
    red = letterbox.reshape(g, STRIDE, g, STRIDE).mean(axis=(1, 3))
    r, c = np.unravel_index(np.argmax(red), red.shape)
    best = max(faces, key=lambda f: f.score)
    best_centre = np.array([(best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2])
    np.testing.assert_allclose(best_centre * scale, [c * STRIDE, r * STRIDE], atol=1e-3)
    emb = backend.embed(rgb, faces)
    assert emb.shape == (len(faces), 512)
