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
