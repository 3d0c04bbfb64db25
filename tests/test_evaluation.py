"""The evaluation protocol (idwatch eval), training (idwatch detector train) and splits."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer import Typer
from typer.testing import CliRunner

from core.evaluation.dataset_features import (
    DatasetFeatures,
    identity_groups,
    read_manifest,
    write_split,
)
from core.evaluation.protocol import (
    REQUIRED_KEYS,
    PairScorer,
    average_precision,
    detection_metrics,
    evaluate,
    mean_ap,
)
from core.faces.base import DetectedFace, FaceBackend
from core.forensics.head import Head, HeadFormatError
from core.forensics.offline import PACKAGED_HEAD

# --------------------------------------------------------------------------- AP by hand


def test_average_precision_by_hand() -> None:
    # ranked: +(1/1) -(.) +(2/3); the third positive was never retrieved -> adds 0
    ap = average_precision([0.9, 0.8, 0.7, None], [True, False, True, True])
    assert ap == pytest.approx((1 + 2 / 3) / 3)
    # every positive first
    assert average_precision([0.2, 0.9, 0.8], [False, True, True]) == pytest.approx(1.0)
    # ties rank negatives first (pessimistic): the positive is at rank 2
    assert average_precision([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    # nothing retrieved
    assert average_precision([None, None], [True, False]) == 0.0
    assert math.isnan(average_precision([0.3], [False]))


def test_map_is_mean_over_identities_not_queries() -> None:
    m, per_id = mean_ap([("A", 1.0), ("A", 0.5), ("B", 0.0)])
    assert per_id == {"A": 0.75, "B": 0.0}
    assert m == pytest.approx(0.375)  # the query mean would be 0.5


def test_detection_metrics_by_hand() -> None:
    y = [0, 0, 0, 1, 1, 1, 1]
    pred = [False, False, True, True, False, False, True]
    score = [0.1, 0.2, 0.9, 0.8, 0.3, 0.0, 0.95]
    methods = ["original"] * 3 + ["g1", "g1", "g2", "g2"]
    r = detection_metrics(y, score, pred, methods)
    assert r["real_acc"] == pytest.approx(2 / 3) and r["fake_acc"] == pytest.approx(0.5)
    assert r["avg_acc"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert r["per_method"] == {
        "g1": {"n": 2, "acc": 0.5},
        "g2": {"n": 2, "acc": 0.5},
        "original": {"n": 3, "acc": pytest.approx(2 / 3)},
    }
    # AUC: 12 real/fake pairs; fakes above reals in 7 of them (.3 > .1, .2; .8 > .1, .2;
    # .95 > all three; 0.0 above none)
    assert r["auc"] == pytest.approx(7 / 12)


# --------------------------------------------------------------------------- protocol, by hand


class ColourBackend(FaceBackend):
    """One face per image whose green channel is not 0; identity = the green value."""

    name = "colour"
    embedding_dim = 2
    match_threshold = 0.9

    def _load(self) -> None:
        pass

    def _detect(self, rgb):
        if rgb[..., 1].max() == 0:
            return []
        lm = np.array([[12, 14], [28, 14], [20, 20], [14, 28], [26, 28]], np.float32)
        return [DetectedFace((8.0, 8.0, 32.0, 32.0), lm, 1.0)]

    def _align(self, rgb, face):
        return rgb

    def _embed_chips(self, chips):
        return np.array([[1.0, 0.0] if c[0, 0, 1] < 150 else [0.0, 1.0] for c in chips])


class RedExtractor:
    """Entry = the red channel / 255; the 'detector' scores exactly that."""

    name = "red"
    key = "red-v1"
    reencode_quality = None

    def entry(self, rgb, face, metadata, embedding):
        return {"r": float(rgb[0, 0, 0]) / 255}

    def features(self, up, refs):
        return {"r": up["r"]}

    def feature_names(self):
        return ["r"]


class RedScorer(PairScorer):
    name = "red"

    def __init__(self) -> None:
        self.extractor = RedExtractor()

    def scores(self, pairs):
        s = np.array([up["r"] for up, _ in pairs])
        return s, np.full(len(s), 0.5)


# (file, label, identity, method, red, green); green 0 = no face, 100 = A, 200 = B
_TINY = [
    ("a_real1.png", "real", "A", "original", 10, 100),
    ("a_real2.png", "real", "A", "original", 60, 100),
    ("a_fake1.png", "fake", "A", "gen1", 200, 100),
    ("a_fake2.png", "fake", "A", "gen2", 100, 100),
    ("a_fake3.png", "fake", "A", "gen1", 250, 0),
    ("b_real1.png", "real", "B", "original", 150, 200),
    ("b_fake1.png", "fake", "B", "gen2", 220, 200),
]


def _tiny_manifest(root: Path) -> Path:
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "identity", "method", "source"])
        for name, label, ident, method, red, green in _TINY:
            img = np.zeros((40, 40, 3), np.uint8)
            img[..., 0], img[..., 1] = red, green
            Image.fromarray(img).save(root / name)
            w.writerow([name, label, ident, method, f"test {name}"])
    return root / "manifest.csv"


def test_protocol_on_a_tiny_manifest_matches_hand_computation(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path)
    r = evaluate(manifest, RedScorer(), ColourBackend(), cache_dir=tmp_path / "cache")
    # Queries: a_real1, a_real2 (A has 3 fakes), b_real1 (B has 1 fake).
    assert r["n_queries"] == 3
    # q = a_real1: claimed a_fake1 (.78, +), a_fake2 (.39, +), a_real2 (.24, -);
    # a_fake3 has no face -> unretrieved positive. AP = (1/1 + 2/2) / 3. Same for a_real2.
    # q = b_real1: b_fake1 is the only claimed image and positive: AP 1.
    assert r["ap_per_identity"] == {"A": pytest.approx(2 / 3), "B": pytest.approx(1.0)}
    assert r["map"] == pytest.approx((2 / 3 + 1) / 2)
    # Stage 1: 7 (query, fake) pairs, a_fake3 missed twice.
    assert r["stage1_fake_match_rate"] == pytest.approx(5 / 7)
    assert r["stage1_tar"] == 1.0 and r["stage1_far"] == 0.0
    # Detection at 0.5: reals .04 .24 .59 -> 2/3; fakes .78 .39 (no face) .86 -> 2/4.
    assert r["real_acc"] == pytest.approx(2 / 3) and r["fake_acc"] == pytest.approx(0.5)
    assert r["n_no_face"] == 1 and r["no_face"]["files"] == ["a_fake3.png"]
    assert r["per_method"]["gen1"] == {"n": 2, "acc": 0.5}
    assert list(r)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    # The cache is reused: a second run reads detections from disk.
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(_TINY)
    again = evaluate(manifest, RedScorer(), ColourBackend(), cache_dir=tmp_path / "cache")
    assert again["map"] == r["map"]


def test_higher_match_threshold_claims_nothing(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path)
    r = evaluate(manifest, RedScorer(), ColourBackend(), match_threshold=1.01)
    assert r["map"] == 0.0 and r["stage1_fake_match_rate"] == 0.0 and r["stage1_tar"] == 0.0


def test_split_is_identity_disjoint(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path)
    train, test = write_split(manifest, tmp_path / "split", test_fraction=0.5, seed=1)
    tr, te = read_manifest(train), read_manifest(test)
    assert len(tr) + len(te) == len(_TINY) and tr and te
    assert not {n for r in tr for n in r.identities} & {n for r in te for n in r.identities}
    assert all(r.path.is_absolute() and r.path.exists() for r in tr + te)
    groups = identity_groups(read_manifest(manifest))
    assert len(set(groups)) == 2


def test_identity_groups_merge_shared_photos(tmp_path: Path) -> None:
    from core.demo.dataset import ManifestRow

    rows = [
        ManifestRow(tmp_path / "1", "real", ["A", "B"], "original", "s1"),
        ManifestRow(tmp_path / "2", "real", ["B"], "original", "s2"),
        ManifestRow(tmp_path / "3", "fake", ["C"], "x", "s3"),
        ManifestRow(tmp_path / "4", "fake", [], "x", "fig (crop)"),
        ManifestRow(tmp_path / "5", "fake", [], "x", "fig (crop 2)"),
    ]
    g = identity_groups(rows)
    assert g[0] == g[1] != g[2] and g[3] == g[4] != g[0]


# --------------------------------------------------------------------------- head format


def test_packaged_v1_head_still_loads() -> None:
    head = Head.load(PACKAGED_HEAD)
    assert head.detector == "offline" and head.backbones == {} and head.feature_layout == {}


def test_head_versioning(tmp_path: Path) -> None:
    d = json.loads(PACKAGED_HEAD.read_text())
    d["backbones"] = {"identity": "dlib"}
    d["feature_layout"] = {"face": 3}
    p = tmp_path / "h.json"
    p.write_text(json.dumps(d))
    head = Head.load(p)
    assert head.backbones == {"identity": "dlib"} and head.to_dict()["feature_layout"] == {
        "face": 3
    }
    d["version"] = 2
    p.write_text(json.dumps(d))
    with pytest.raises(HeadFormatError, match="version 2 is not supported"):
        Head.load(p)


# --------------------------------------------------------------------------- CLI, end to end


def _cli() -> Typer:
    from workers.cli.eval import detector_app, eval_cmd

    app = Typer()
    app.command("eval")(eval_cmd)
    app.add_typer(detector_app, name="detector")
    return app


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory) -> Path:
    from core.demo.dataset import build_demo_set

    out = tmp_path_factory.mktemp("demo-eval")
    build_demo_set(out)
    return out / "manifest.csv"


def test_eval_cli_writes_exactly_the_required_keys(demo_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        _cli(),
        [
            "eval",
            str(demo_manifest),
            "--detector",
            "offline",
            "--face-backend",
            "dlib",
            "--cache",
            str(tmp_path / "c"),
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert list(r)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert r["n_images"] == len(read_manifest(demo_manifest)) and r["n_queries"] >= 2
    assert 0.0 <= r["same_identity_auc"] <= 1.0 or math.isnan(r["same_identity_auc"])
    page = (tmp_path / "plots" / "index.html").read_text()
    for name in ("roc_by_generator.png", "score_histograms.png", "tsne_real_fake.png"):
        assert name in page and (tmp_path / "plots" / name).stat().st_size > 5000
    assert r["face_backend"] == "dlib" and r["detector"].startswith("offline")
    for k in ("map", "real_acc", "fake_acc", "avg_acc", "auc", "stage1_tar", "stage1_far"):
        assert 0.0 <= r[k] <= 1.0, k
    assert set(r["per_method"]) == {row.method for row in read_manifest(demo_manifest)}
    assert "mAP" in res.output or "map" in res.output


def test_train_then_eval_round_trip(demo_manifest: Path, tmp_path: Path) -> None:
    head_path = tmp_path / "head.json"
    cache = tmp_path / "c"
    res = CliRunner().invoke(
        _cli(),
        [
            "detector",
            "train",
            str(demo_manifest),
            "--out",
            str(head_path),
            "--groups",
            "image,ref",
            "--face-backend",
            "dlib",
            "--cv-folds",
            "2",
            "--cache",
            str(cache),
        ],
    )
    assert res.exit_code == 0, res.output
    head = Head.load(head_path)
    assert head.detector == "offline" and head.preprocess == {"reencode_jpeg_quality": 90}
    assert {n.split(".")[0] for n in head.feature_names} == {"image", "ref"}
    assert set(head.feature_layout) == {"image", "ref"} and head.backbones["identity"] == "dlib"
    assert head.training["n"] > 0 and "metrics" in head.training
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        _cli(),
        [
            "eval",
            str(demo_manifest),
            "--detector",
            str(head_path),
            "--face-backend",
            "dlib",
            "--cache",
            str(cache),
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert str(head_path) in r["detector"] and 0.0 <= r["map"] <= 1.0
    # Trained on this very set: the detection table should beat chance.
    assert r["auc"] > 0.5


def test_eval_refuses_unknown_detector(demo_manifest: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _cli(),
        [
            "eval",
            str(demo_manifest),
            "--detector",
            str(tmp_path / "nope.json"),
            "--face-backend",
            "dlib",
        ],
    )
    assert res.exit_code != 0


def test_dataset_features_cache_round_trip(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path)
    ds = DatasetFeatures(read_manifest(manifest), ColourBackend(), tmp_path / "c")
    ds.detect_all()
    e = ds.entry(RedExtractor(), 0, 0)
    ds.save()
    ds2 = DatasetFeatures(read_manifest(manifest), ColourBackend(), tmp_path / "c")
    ds2.detect_all()
    assert ds2.entry(RedExtractor(), 0, 0) == e
    assert len(ds2.faces[4]) == 0 and ds2.embeddings[0].shape == (1, 2)


def test_train_clip_without_weights_is_a_clean_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _cli(),
        [
            "detector",
            "train",
            str(tmp_path / "m.csv"),
            "--out",
            str(tmp_path / "h.json"),
            "--backbone",
            "clip",
            "--face-backend",
            "dlib",
        ],
        env={"IDWATCH_MODEL_DIR": str(tmp_path)},
    )
    assert res.exit_code == 2 and "CLIP ViT-L/14" in res.output


def test_amended_image_is_neither_genuine_nor_impostor(tmp_path: Path, monkeypatch) -> None:
    """An anonymous photo that shows B (green 200): as labelled, stage 1 finding B in it
    is a false accept; with a recorded amendment (core.demo.amendments) it is excluded
    from the impostor pairs and both figures are reported."""
    from core.demo import amendments

    manifest = _tiny_manifest(tmp_path)
    img = np.zeros((40, 40, 3), np.uint8)
    img[..., 0], img[..., 1] = 30, 200
    Image.fromarray(img).save(tmp_path / "crowd.png")
    with manifest.open("a", newline="") as fh:
        csv.writer(fh).writerow(["crowd.png", "real", "", "original", "test crowd"])

    plain = evaluate(manifest, RedScorer(), ColourBackend(), cache_dir=tmp_path / "c")
    # b_real1 as the reference claims crowd.png: 1 false accept in 6 impostor pairs
    # (3 queries x the 2-3 real photos of other labels).
    assert plain["stage1_far"] > 0.0
    assert plain["stage1_far_as_labelled"] == plain["stage1_far"]
    assert plain["stage1_amended_pairs"]["pairs"] == 0

    # Another file under the amended name but other bytes is not amended.
    monkeypatch.setattr(
        amendments,
        "AMENDMENTS",
        (amendments.Amendment("crowd.png", "0" * 64, ("B",), "test"),),
    )
    assert amendments.amendment_for(tmp_path / "crowd.png") is None

    sha = amendments.file_sha256(tmp_path / "crowd.png")
    monkeypatch.setattr(
        amendments, "AMENDMENTS", (amendments.Amendment("crowd.png", sha, ("B",), "test"),)
    )
    fixed = evaluate(manifest, RedScorer(), ColourBackend(), cache_dir=tmp_path / "c")
    assert fixed["stage1_far"] == 0.0
    assert fixed["stage1_far_as_labelled"] == pytest.approx(plain["stage1_far"])
    assert fixed["stage1_amended_pairs"] == {
        "pairs": 1,
        "claimed": 1,
        "files": {"crowd.png": ["B"]},
    }
    assert fixed["stage1_tar"] == plain["stage1_tar"] == 1.0
