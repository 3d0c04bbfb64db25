"""The honest protocol: leakage groups, nested selection, LOGO, same-identity AUC,
the content-seeded normalisation, the pictures, and the residual confound on faces-dev."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.demo.dataset import ManifestRow
from core.evaluation import honest
from core.evaluation.grouping import (
    check_disjoint,
    figure_key,
    figure_table,
    grouped_folds,
    leakage_groups,
)
from core.evaluation.honest import (
    RowTable,
    cross_validate,
    family_of,
    fixed_fitter,
    leave_one_generator_out,
    select_and_fit,
)
from core.evaluation.protocol import same_identity_auc
from core.faces.base import DetectedFace
from core.forensics.normalise import Normaliser, content_seed, prepare_view

FACES_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"
needs_faces_dev = pytest.mark.skipif(
    not (FACES_DEV / "manifest.csv").exists(), reason="../shared/data/faces-dev is absent"
)

# --------------------------------------------------------------------------- grouping


def test_figure_key_strips_the_crop_note() -> None:
    def row(src: str, name: str = "x.png") -> ManifestRow:
        return ManifestRow(Path("/d") / name, "real", [], "original", src)

    assert figure_key(row("org/repo@abc:docs/total.PNG (crop)")) == "org/repo@abc:docs/total.PNG"
    assert figure_key(row("o/r@1:v.mp4 (frame, left half)")) == "o/r@1:v.mp4"
    assert figure_key(row("o/r@1:v.mp4 (frame, right half)")) == "o/r@1:v.mp4"
    assert figure_key(row("o/r@1:photo (2).jpg")) == "o/r@1:photo (2).jpg"  # notes only at the end
    assert figure_key(row("o/r@1:a.jpg")) == "o/r@1:a.jpg"
    assert figure_key(row("", "lonely.png")) == "file:lonely.png"


def _synthetic_rows() -> list[ManifestRow]:
    """12 people, 3 real photos and 2 fakes each; figures chain people together
    (figure k holds a crop of person k and of person k+1 for even k), anonymous
    fakes share figures with named people, one photo shows two people."""
    rows: list[ManifestRow] = []
    fams = ["simswap", "deepfacelab-dfm", "arc2face", "instantid", "stylegan2", "inswapper"]
    for p in range(12):
        name = f"P{p}"
        for r in range(3):
            src = f"own/{name}_{r}.jpg" if r else f"repo@1:fig{p - p % 2}.png (crop)"
            rows.append(ManifestRow(Path(f"/d/{name}_r{r}.png"), "real", [name], "original", src))
        for f in range(2):
            src = f"repo@1:fig{p - p % 2}.png (crop)" if f == 0 else f"gen/{name}_{f}.png"
            method = fams[(p + f) % len(fams)]
            rows.append(ManifestRow(Path(f"/d/{name}_f{f}.png"), "fake", [name], method, src))
    for a in range(6):  # anonymous fakes cropped from figures that also show named people
        rows.append(
            ManifestRow(
                Path(f"/d/anon{a}.png"), "fake", [], "stylegan2", f"repo@1:fig{2 * a}.png (crop)"
            )
        )
    rows.append(
        ManifestRow(Path("/d/couple.jpg"), "real", ["P1", "P4"], "original", "own/couple.jpg")
    )
    return rows


def test_grouped_folds_never_share_a_person_or_a_figure() -> None:
    rows = _synthetic_rows()
    groups = leakage_groups(rows)
    y = np.array([r.label == "fake" for r in rows], int)
    for seed in range(4):
        for k in (2, 3, 4):
            for tr, te in grouped_folds(y, groups, k, seed):
                assert check_disjoint(rows, tr, te) == []
                assert len(tr) + len(te) == len(rows)
    # The graph is what it should be: fig0 links P0 and P1, the couple links P1 and P4,
    # fig4 links P4 and P5, so P0, P1, P4, P5 and two anonymous fakes are one group.
    g = {r.path.name: groups[i] for i, r in enumerate(rows)}
    assert g["P0_r1.png"] == g["P1_f1.png"] == g["P4_r2.png"] == g["P5_f0.png"] == g["anon0.png"]
    assert g["anon2.png"] == g["P4_r0.png"] and g["P2_r1.png"] != g["P0_r1.png"]
    info = figure_table(rows, groups)
    assert info["figures"]["repo@1:fig0.png"]["n"] == 5  # P0 + P1: real, fake each; anon0
    # Identity-only folds (the older protocol) do put one figure on both sides here.
    from core.evaluation.dataset_features import identity_groups

    idg = identity_groups(rows)
    leaked = any(check_disjoint(rows, tr, te) for tr, te in grouped_folds(y, idg, 4, 0))
    assert leaked


# --------------------------------------------------------------------------- nested selection


def _table(rows: list[ManifestRow], seed: int = 0) -> RowTable:
    """Features: a weak real/fake signal in face.* and ref.*, noise in image.*."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    y = np.array([r.label == "fake" for r in rows], int)
    names = ["face.a", "face.b", "image.a", "image.b", "ref.available", "ref.sim"]
    X = np.c_[
        y * 1.2 + rng.normal(size=n),
        rng.normal(size=n),
        rng.normal(size=n),
        rng.normal(size=n),
        np.ones(n),
        -y * 1.0 + rng.normal(size=n),
    ]
    from core.evaluation.dataset_features import identity_groups

    return RowTable(
        rows=rows,
        names=names,
        X=X,
        y=y,
        has_face=np.ones(n, bool),
        has_ref=np.ones(n, bool),
        groups=leakage_groups(rows),
        id_groups=identity_groups(rows),
        methods=np.array([r.method for r in rows]),
        families=np.array([family_of(r.method, r.label) for r in rows]),
        claim_name=[(r.identities or [None])[0] for r in rows],
        claimed=np.array([bool(r.identities) for r in rows]),
        is_png=np.zeros(n, bool),
    )


def test_nested_selection_never_sees_the_test_fold(monkeypatch) -> None:
    table = _table(_synthetic_rows())
    shown: list[set[int]] = []  # rows each select_and_fit call was given
    fitted: list[set[int]] = []  # rows each head fit (any candidate, any inner fold) saw
    real_train_head = honest.train_head

    def spy_train_head(X, y, names, **kw):
        # Which table rows are these? (every row's features are distinct random floats)
        cols = [table.names.index(n) for n in names]
        where = {tuple(r): i for i, r in enumerate(table.X[:, cols])}
        fitted.append({where[tuple(r)] for r in X})
        return real_train_head(X, y, names, **kw)

    monkeypatch.setattr(honest, "train_head", spy_train_head)

    def spy_fit(train: RowTable, seed: int):
        shown.append({int(i) for i in train.row_ids})
        before = len(fitted)
        model = select_and_fit(train, seed, ("face,ref", "image", "face,image,ref"))
        assert len(fitted) - before == 3  # one head per candidate, all on this subset
        assert all(f <= shown[-1] for f in fitted[before:])
        return model

    cv = cross_validate(table, spy_fit, folds=4, seeds=2)
    tests = [set(f["test"]) for f in _oof(cv)]
    assert len(shown) == len(tests) == 8
    for seen, test in zip(shown, tests, strict=True):
        assert seen and test and not (seen & test)
        assert not check_disjoint(table.rows, sorted(seen), sorted(test))
    # every image is tested exactly once per seed
    assert sorted(i for t in tests[:4] for i in t) == list(range(len(table)))
    # the noise-only candidate is never the one kept
    assert "image" not in cv["feature_groups_chosen"]
    assert cv["leaks"] == 0 and 0.0 <= cv["pooled"]["auc"]["mean"] <= 1.0


def _oof(cv: dict) -> list[dict]:
    """Test rows of every fold, in order."""
    return [{"test": fr["test_rows"]} for fr in cv["fold_reports"]]


def test_logo_never_trains_on_the_left_out_family() -> None:
    table = _table(_synthetic_rows())
    seen: list[set[str]] = []

    def spy_fit(train: RowTable, seed: int):
        seen.append(set(train.families[train.y == 1].tolist()))
        return fixed_fitter("face,ref")(train, seed)

    res = leave_one_generator_out(table, spy_fit, folds=3, families=["simswap", "stylegan2"])
    assert set(res) == {"simswap", "stylegan2"}
    # 3 folds for simswap, then 3 for stylegan2
    assert all("simswap" not in s for s in seen[:3]) and all("stylegan2" not in s for s in seen[3:])
    assert all("stylegan2" in s for s in seen[:3])  # other families still trained on
    st = res["stylegan2"]
    assert st["n_fake"] == int(((table.families == "stylegan2") & (table.y == 1)).sum())
    for k in ("real_acc", "fake_acc", "auc"):
        assert 0.0 <= st[k]["mean"] <= 1.0


# --------------------------------------------------------------------------- same identity


def test_same_identity_auc_by_hand() -> None:
    #        identity, label, score, claimed by stage 1
    table = [
        ("A", 0, 0.1, True),
        ("A", 0, 0.4, True),
        ("A", 1, 0.3, True),
        ("A", 1, 0.9, True),
        ("A", 1, 0.0, False),  # stage 1 missed it: never scored as A
        ("B", 0, 0.5, True),
        ("B", 1, 0.6, True),
        ("C", 0, 0.2, True),  # C has no fake: no AUC
        (None, 1, 0.95, True),  # anonymous: claims nobody
    ]
    ident, y, s, c = zip(*table, strict=True)
    r = same_identity_auc(ident, y, s, c)
    assert r["per_identity"]["A"]["auc"] == pytest.approx(3 / 4)  # .3>.1, .9>.1, .9>.4
    assert r["per_identity"]["B"]["auc"] == 1.0
    assert set(r["per_identity"]) == {"A", "B"}
    assert r["mean"] == pytest.approx((3 / 4 + 1) / 2)
    # pooled over A's and B's claimed rows: reals .1 .4 .5, fakes .3 .9 .6 -> 7 of 9
    assert r["pooled"] == pytest.approx(7 / 9)
    assert (r["n_identities"], r["n_real"], r["n_fake"]) == (2, 3, 3)


# --------------------------------------------------------------------------- normalisation


def _face(x1: float, y1: float, size: float) -> DetectedFace:
    lm = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    pts68 = (np.linspace(0.1, 0.9, 68)[:, None] * [1, 1]) * size + [x1, y1]
    return DetectedFace(
        (x1, y1, x1 + size, y1 + size), lm * size + [x1, y1], 0.9, {"landmarks68": pts68.tolist()}
    )


def test_normalise_is_deterministic_and_maps_the_face() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (400, 500, 3), dtype=np.uint8)
    img[100:300, 150:350] = 230  # the "face": a bright square
    face = _face(150, 100, 200)
    norm = Normaliser()
    a, fa = norm.apply(img, face)
    b, fb = norm.apply(img.copy(), face)
    assert np.array_equal(a, b) and fa.box == fb.box  # same pixels, same verdict
    p = norm.draw(img, face)
    assert 0 <= p.dx <= 7 and 0 <= p.dy <= 7 and 65 <= p.quality <= 95
    assert 64 <= 200 * p.scale <= 96  # the face is brought to 64-96 px
    x1, y1, x2, y2 = (int(round(v)) for v in fa.box)
    inside = a[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].mean()
    outside = a[: max(y1 - 3, 1)].mean()
    assert inside > 200 and outside < 60
    lm68 = np.asarray(fa.extra["landmarks68"])
    assert lm68.shape == (68, 2) and x1 - 1 <= lm68[:, 0].min() and lm68[:, 0].max() <= x2 + 1
    other = img.copy()
    other[0, 0] += 1
    assert content_seed(other) != content_seed(img)
    # the hook a detector uses gives the same view and a crop of the mapped face
    image, f2, crop = prepare_view(img, face, {"normalise": norm.to_dict()}, 64)
    assert np.array_equal(image, a) and f2.box == fa.box and crop.shape == (64, 64, 3)
    image, f3, _ = prepare_view(img, face, {"reencode_jpeg_quality": 90}, 64)
    assert image.shape == img.shape and f3.box == face.box
    # small images are never up-scaled
    small = rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)
    out, _ = norm.apply(small, _face(10, 10, 40))
    assert out.shape[0] <= 60 and out.shape[1] <= 60


# --------------------------------------------------------------------------- pictures


def test_plots_are_written_and_not_empty(tmp_path: Path) -> None:
    from core.evaluation.plots import write_all

    rows = _synthetic_rows()
    table = _table(rows)
    cv = cross_validate(table, fixed_fitter("face,image,ref"), folds=3)
    logo = leave_one_generator_out(table, fixed_fitter("face,ref"), folds=3, families=["simswap"])
    run = cv["runs"][0]
    from core.evaluation.cv_eval import _score_rows

    report = {
        "map": 0.5,
        "real_acc": run["real_acc"],
        "fake_acc": run["fake_acc"],
        "avg_acc": run["avg_acc"],
        "auc": run["auc"],
        "same_identity_auc": run["same_identity_auc"],
        "detector": "synthetic",
        "face_backend": "none",
        "per_method": run["per_method"],
        "scores": _score_rows(table, run["scores"]),
        "logo": logo,
        "confound": {
            "bound": 0.65,
            "natural": {
                "baseline": {"png_vs_jpeg_origin": {"jpeg": 0.9, "face": 0.7}},
                "this": {
                    "png_vs_jpeg_origin": {"jpeg": 0.5, "face": 0.6},
                    "video_vs_jpeg_origin": {"jpeg": 0.8, "face": 0.85},
                },
            },
            "null": {"n": 5, "mean": 0.5, "p95": 0.6},
            "recompressed": {"jpeg": 0.5, "face": 0.55},
            "recompressed_baseline": {"jpeg": 0.95, "face": 0.6},
            "preprocess": {"normalise": {}},
        },
    }
    images = write_all(tmp_path / "plots", report, table, "face,image,ref")
    names = {p.name for p in images}
    assert names == {
        "roc_by_generator.png",
        "score_histograms.png",
        "tsne_real_fake.png",
        "tsne_identity.png",
        "confound.png",
    }
    for p in images:
        assert p.stat().st_size > 5000
        im = np.asarray(Image.open(p).convert("L"), float)
        assert im.std() > 5  # something is drawn
    page = (tmp_path / "plots" / "index.html").read_text()
    assert all(n in page for n in names) and "same_identity_auc" in page
    assert json.loads((tmp_path / "plots" / "report.json").read_text())["detector"] == "synthetic"


# --------------------------------------------------------------------------- faces-dev


@pytest.mark.dataset
@pytest.mark.slow
@needs_faces_dev
def test_png_origin_is_not_predictable_after_normalisation() -> None:
    """The residual-confound test (README, Detection quality). On faces-dev's real
    images, a probe trained on the detector's features (every group the nested
    selection may choose, and the jpeg group alone) must not tell PNG-origin from
    JPEG-origin photos, nor a PNG file from the same image saved as JPEG, better than
    AUC 0.65 once the pixels are normalised. The same probes on format-blind (JPEG q90)
    features exceed the bound: they see a compression history where there is one."""
    from core.evaluation.cv_eval import CONFOUND_BOUND, CONFOUND_SETS
    from core.evaluation.dataset_features import DatasetFeatures, OfflineExtractor, read_manifest
    from core.evaluation.honest import build_table, container_swap_confound, png_confound
    from core.faces.dlib_backend import DlibFaceBackend

    # Kept between runs (the suite runs without pytest's cache plugin): extraction on
    # faces-dev takes minutes the first time, seconds after.
    cache = Path.home() / ".cache" / "identity-watch" / "test-eval-cache"
    cache.mkdir(parents=True, exist_ok=True)
    backend = DlibFaceBackend()
    backend.load()
    ds = DatasetFeatures(read_manifest(FACES_DEV / "manifest.csv"), backend, cache)
    ds.detect_all()
    reals = [i for i, r in enumerate(ds.rows) if r.label == "real"]
    sets = {"jpeg": "jpeg", "detector": CONFOUND_SETS["all"]}
    found = {}
    for label, ex in (
        ("normalised", OfflineExtractor(backend, normaliser=Normaliser())),
        ("q90", OfflineExtractor(backend, 90)),
    ):
        table = build_table(ds, ex, backend.match_threshold, idx=reals)
        found[label] = (png_confound(table, sets), container_swap_confound(ds, ex, table, sets))
    natural, recompressed = found["normalised"]
    assert natural["n_positive"] >= 20 and natural["n_negative"] >= 80
    assert recompressed["n_images"] >= 40
    for g in sets:
        assert natural[g] <= CONFOUND_BOUND, (g, natural)
        assert recompressed[g] <= CONFOUND_BOUND, (g, recompressed)
    natural_q90, recompressed_q90 = found["q90"]
    assert natural_q90["jpeg"] > CONFOUND_BOUND and recompressed_q90["jpeg"] > CONFOUND_BOUND


# --------------------------------------------------------------------------- CLI


def _distinct_sources_manifest(demo_set: Path, out: Path) -> Path:
    """The demo set's uploads, each declared as its own source file (the demo set
    derives everything from one group photo, which would make a single leakage
    group), half of the swaps relabelled as a second method so that a generator
    family can be left out."""
    import csv

    rows = list(csv.DictReader((demo_set / "manifest.csv").open()))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        n_fake = 0
        for r in rows:
            r = dict(r, path=str((demo_set / r["path"]).resolve()))
            r["source"] = f"test/{Path(r['path']).name}"
            if r["label"] == "fake":
                r["method"] = "simswap" if n_fake % 2 else "inswapper"
                n_fake += 1
            w.writerow(r)
    return out


@pytest.mark.slow
def test_eval_cv_cli_end_to_end(demo_set: Path, tmp_path: Path) -> None:
    from typer import Typer
    from typer.testing import CliRunner

    from core.evaluation.protocol import REQUIRED_KEYS
    from workers.cli.eval import eval_cmd

    app = Typer()
    app.command("eval")(eval_cmd)
    app.command("other")(lambda: None)  # keep "eval" a sub-command
    manifest = _distinct_sources_manifest(demo_set, tmp_path / "m" / "manifest.csv")
    out = tmp_path / "r.json"
    plots = tmp_path / "plots"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            str(manifest),
            "--cv",
            "grouped",
            "--folds",
            "2",
            "--logo",
            "--groups",
            "face,ref;image,ref",
            "--face-backend",
            "dlib",
            "--cache",
            str(tmp_path / "c"),
            "--json",
            str(out),
            "--plots",
            str(plots),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert list(r)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert r["protocol"]["group_by"] == "leakage" and r["leaks"] == 0
    assert r["protocol"]["preprocess"]["normalise"]["version"] == 1
    assert set(r["feature_groups_chosen"]) <= {"face,ref", "image,ref"}
    assert len(r["folds"]) == 2 and sum(f["test"]["n_images"] for f in r["folds"]) == r["n_images"]
    assert set(r["logo"]) == {"simswap", "inswapper"}
    for k in ("real_acc", "fake_acc", "auc", "same_identity_auc"):
        assert 0.0 <= r[k] <= 1.0, k
    assert "same_identity_auc" in res.output and "leave one generator out" in res.output
    assert (plots / "index.html").exists() and (plots / "report.json").exists()
    for name in ("roc_by_generator.png", "score_histograms.png", "tsne_real_fake.png"):
        assert (plots / name).stat().st_size > 5000


def test_a_normalised_head_is_evaluated_with_its_normalisation(tmp_path: Path) -> None:
    """`detector train --normalise` records the transform in the head; `idwatch eval
    --detector HEAD` then extracts features from normalised pixels, as trained."""
    from core.faces.dlib_backend import DlibFaceBackend
    from core.forensics.offline import PACKAGED_HEAD
    from workers.cli.eval import make_scorer

    d = json.loads(PACKAGED_HEAD.read_text())
    d["preprocess"] = {"normalise": Normaliser(face_min=70, face_max=90).to_dict()}
    path = tmp_path / "head.json"
    path.write_text(json.dumps(d))
    scorer = make_scorer(str(path), DlibFaceBackend(), tmp_path)
    ex = scorer.extractor
    assert ex.normaliser == Normaliser(face_min=70, face_max=90) and ex.reencode_quality is None
    assert ex.preprocess() == d["preprocess"] and "norm1-f70-90" in ex.key
