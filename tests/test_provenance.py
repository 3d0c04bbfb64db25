"""A head says what it was trained on and under which terms; `idwatch detector info`
shows it; a head trained on self-blended copies only never saw a real fake."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.forensics.head import Head
from core.forensics.offline import PACKAGED_HEADS
from core.forensics.provenance import describe, licence_terms
from workers.cli import app

runner = CliRunner()


def test_licence_terms_tell_shippable_data_from_binding_data():
    ok = licence_terms(["public domain (NASA)", "CC0 (scikit-image sample data)"] * 3)
    assert ok["permissive"] and "may be shipped" in ok["summary"]
    nc = licence_terms(
        ["CC BY-NC 4.0 (repo, non-commercial); photos third-party", "public domain (NASA)"]
    )
    assert nc["non_commercial"] and nc["third_party_photos"] and not nc["permissive"]
    assert "not cleared for commercial" in nc["summary"]
    assert licence_terms(["NVIDIA Source Code License-NC (non-commercial)"])["non_commercial"]
    assert licence_terms(["GPL-3.0 (repo)"])["copyleft"]
    # A source without a licence is not permissive.
    assert not licence_terms(["", "public domain"])["permissive"]


@pytest.mark.parametrize("name", sorted(PACKAGED_HEADS))
def test_packaged_heads_state_their_data_and_terms(name):
    head = Head.load(PACKAGED_HEADS[name])
    prov = head.training["provenance"]
    [data] = prov["datasets"]
    assert data["name"] == "faces-dev" and data["n_images"] == 283
    assert data["n_real"] + data["n_fake"] == 283 and len(data["manifest_sha256"]) == 64
    assert prov["terms"]["non_commercial"] and not prov["terms"]["permissive"]
    assert prov["command"] and prov["date"]
    lines = dict(describe(head.training, name))
    assert "not cleared for commercial" in lines["terms"]
    assert ("research-only" in lines["embedder terms"]) == (name == "mobilefacenet")


def test_a_head_without_provenance_says_so():
    assert dict(describe({"manifest": "x.csv"}))["terms"].startswith("not recorded")


def test_train_sbi_only_records_data_terms_and_command(tmp_path, demo_set):
    data = tmp_path / "data"
    out = tmp_path / "h.json"
    res = runner.invoke(
        app,
        [
            "--data-dir",
            str(data),
            "detector",
            "train",
            str(demo_set / "manifest.csv"),
            "--out",
            str(out),
            "--face-backend",
            "dlib",
            "--groups",
            "face,image,ref",
            "--normalise",
            "--sbi-only",
            "--sbi",
            "2",
            "--cv-folds",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    head = Head.load(out)
    t = head.training
    n_real = sum(
        1 for line in (demo_set / "manifest.csv").read_text().splitlines()[1:] if ",real," in line
    )
    # Every real image with a face gives two blends; the blends are the only fakes.
    assert t["n_self_blended_rows"] >= 2 * (n_real - 2)
    assert t["n_fake"] == t["n_self_blended_rows"]
    assert "self-blended copies" in t["fakes"]
    assert head.preprocess.get("normalise")  # the detector applies it at use
    prov = t["provenance"]
    assert prov["derived_rows"] == {"self_blended": t["n_self_blended_rows"]}
    assert prov["datasets"][0]["n_images"] == n_real + prov["datasets"][0]["n_fake"]
    # The demo set mixes public-domain photos with insightface's third-party samples.
    assert prov["terms"]["third_party_photos"] and not prov["terms"]["permissive"]
    cmd = prov["command"]
    assert cmd.startswith("idwatch detector train ") and "--sbi-only" in cmd and "--sbi 2" in cmd

    shown = runner.invoke(app, ["--data-dir", str(data), "detector", "info", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "self-blended copies" in shown.stdout and "not cleared for commercial" in shown.stdout
    rec = json.loads(
        runner.invoke(app, ["--data-dir", str(data), "detector", "info", str(out), "--json"]).stdout
    )
    assert rec["provenance"]["command"] == cmd and rec["preprocess"] == head.preprocess
    bad = runner.invoke(app, ["--data-dir", str(data), "detector", "info", str(tmp_path / "no")])
    assert bad.exit_code == 2

    # Calibration on the demo set's 11 real photos with a face: the threshold moves,
    # the weights stay, and the head says where its threshold came from.
    def calibrate(reals, dest):
        return runner.invoke(
            app,
            [
                "--data-dir",
                str(data),
                "detector",
                "calibrate",
                str(out),
                "--reals",
                str(reals),
                "--out",
                str(dest),
                "--face-backend",
                "dlib",
                "--target-real-accuracy",
                "0.9",
            ],
        )

    res = calibrate(demo_set / "manifest.csv", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    cal = Head.load(tmp_path / "c.json")
    assert list(cal.weights) == list(head.weights)
    assert cal.training["threshold_calibration"]["n_with_face"] == 11
    shown = runner.invoke(
        app, ["--data-dir", str(data), "detector", "info", str(tmp_path / "c.json")]
    )
    assert "threshold from" in shown.stdout and "11 real photos" in shown.stdout
    # Too few real photos: refused with a reason, nothing written.
    lines = (demo_set / "manifest.csv").read_text().splitlines()
    few = tmp_path / "few.csv"
    few.write_text(
        "\n".join(
            [lines[0], *[x.replace("uploads/", f"{demo_set}/uploads/", 1) for x in lines[1:4]]]
        )
        + "\n"
    )
    res = calibrate(few, tmp_path / "c2.json")
    assert res.exit_code == 2 and "at least" in res.output, res.output
    assert not (tmp_path / "c2.json").exists()


def test_calibration_moves_the_threshold_to_the_given_reals_only():
    import numpy as np

    from core.evaluation.calibrate import recalibrated
    from core.forensics.head import train_head

    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.4).astype(int)
    X = rng.normal(size=(n, 3))
    X[:, 0] += 2.0 * y
    X[:, 1] = (rng.random(n) < 0.5).astype(float)  # the ref gate: two strata
    names = ["face.a", "ref.available", "ref.b"]
    head = train_head(X, y, names, groups=np.arange(n) // 4)
    assert head.calibration.get("strata")
    # The operator's real photos score higher than the training reals did.
    reals = rng.normal(size=(300, 3))
    reals[:, 0] += 1.0
    reals[:, 1] = (rng.random(300) < 0.5).astype(float)
    assert np.mean(head.predict(reals)) > 0.2
    new, report = recalibrated(head, reals, 0.9)
    assert set(report) == {"0", "1"}
    for gate in (0.0, 1.0):
        sel = reals[:, 1] == gate
        assert np.mean(~new.predict(reals[sel])) == pytest.approx(0.9, abs=0.02)
    assert np.array_equal(new.weights, head.weights)  # the ranking is the head's own
    s_old, s_new = head.predict_proba(reals), new.predict_proba(reals)
    for gate in (0.0, 1.0):
        sel = reals[:, 1] == gate
        assert np.array_equal(np.argsort(s_old[sel]), np.argsort(s_new[sel]))
    again = Head.from_dict(new.to_dict())  # still a valid head file
    assert again.threshold == pytest.approx(new.threshold)
    with pytest.raises(ValueError, match="at least"):
        recalibrated(head, reals[:3], 0.9)


def test_the_permissive_head_may_ship_and_runs(demo_set):
    import numpy as np
    from PIL import Image

    from core.faces.crops import loose_crop
    from core.faces.dlib_backend import DlibFaceBackend
    from core.forensics import features as F
    from core.forensics.base import ForensicInput
    from core.forensics.offline import PERMISSIVE_HEAD, OfflineDetector, head_identity

    head = Head.load(PERMISSIVE_HEAD)
    head.check_features(F.feature_names())
    prov = head.training["provenance"]
    assert prov["terms"]["permissive"] and not prov["terms"]["third_party_photos"]
    assert head_identity(head) == "dlib" and head.preprocess.get("normalise")
    assert "self-blended" in head.training["fakes"]
    backend = DlibFaceBackend()
    backend.load()
    img = np.asarray(Image.open(demo_set / "uploads" / "person1.jpg").convert("RGB"))
    [face] = backend.detect(img)
    res = OfflineDetector(head_path=PERMISSIVE_HEAD, embedder=backend).score(
        ForensicInput(image=img, face=face, face_crop=loose_crop(img, face))
    )
    assert 0.0 <= res.score <= 1.0
