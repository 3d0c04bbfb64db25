"""Operator experience (issue 14): nothing skipped silently, always say where the data
lives, names that cannot split, honest demo counts, validated arguments, configuration
errors in one line, report pictures without artefacts of their own, calibrated scores,
a word while models load. The CLI runs in-process (typer's runner) on temp data dirs."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import typer.main
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError
from typer.core import TyperOption
from typer.testing import CliRunner

from core.alerts.report import PAD, face_view
from core.alerts.scores import ranks, score_text
from core.demo.dataset import EILEEN, load_references
from core.forensics.head import Head, laplace_bounds, train_head
from core.forensics.offline import PACKAGED_HEADS
from core.names import name_key
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.identities import register_identity
from core.pipeline.retention import purge_uploads
from core.pipeline.sources.admit import admit
from core.pipeline.sources.scan import scan
from core.pipeline.sources.watchfolder import FolderWatcher
from core.settings import Settings
from core.storage.db import upgrade
from core.storage.models import Alert, Face, Identity, Match, Notification, Upload
from tests.videogen import clip
from workers.api import create_app
from workers.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _run(args: list[str], code: int = 0, env: dict | None = None):
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == code, res.output
    return res


def _json(res):
    return json.loads(res.stdout)


def _mp4() -> bytes:
    return clip(n=5)


# --- 1. content decides; every file seen is submitted or listed with its reason -----------


def test_admit_decides_by_content_in_one_place(demo_set):
    png = (demo_set / "uploads" / "fake_eileen_person3.png").read_bytes()[:1024]
    assert admit(png).submit and admit(png).kind == "image"
    video = admit(_mp4()[:1024])
    assert (video.submit, video.kind, video.reason) == (True, "video", None)
    assert admit(b"hello\n").reason == "not an image or video (plain text)"
    assert admit(b"").reason == "empty file"
    # Named by hand (command line, API, watched folder): an upload that gets its reason.
    assert admit(b"hello\n", named=True).submit
    assert admit(_mp4()[:1024], named=True).kind == "video"


@pytest.fixture
def drop(tmp_path, demo_set) -> Path:
    """A folder as a platform fills it: images without an image name, and the rest."""
    d = tmp_path / "drop"
    d.mkdir()
    up = demo_set / "uploads"
    (d / "9f2c1a").write_bytes((up / "fake_eileen_person3.png").read_bytes())
    (d / "x.jpeg.bak").write_bytes((up / "fake_eileen_person5.png").read_bytes())
    (d / "notes.txt").write_text("a note\n")
    (d / "empty").write_bytes(b"")
    (d / "clip.mp4").write_bytes(_mp4())
    os.mkfifo(d / "pipe")
    outside = tmp_path / "outside.png"
    outside.write_bytes((up / "eileen_headshot.png").read_bytes())
    (d / "link").symlink_to(outside)
    (d / "broken").symlink_to(tmp_path / "nothing-here")
    return d


def test_scan_lists_every_file_it_did_not_submit(tmp_path, demo_set, drop):
    data = tmp_path / "data"
    ref = load_references(demo_set)[EILEEN][0]
    _run(["--data-dir", str(data), "identity", "add", EILEEN, str(ref)])
    summary = _json(_run(["--data-dir", str(data), "scan", str(drop), "--json"]))
    assert (summary["seen"], summary["submitted"], summary["new"]) == (8, 3, 3)
    assert summary["judged_fake"] == 2  # the two JPEG-less fakes were scanned for real
    assert {Path(r["path"]).name: r["reason"] for r in summary["skipped"]} == {
        "notes.txt": "not an image or video (plain text)",
        "empty": "empty file",
        "pipe": "not a regular file (FIFO, socket or device; never opened)",
        "link": f"symbolic link out of the folder (to {tmp_path / 'outside.png'}; not followed)",
        "broken": "broken symbolic link",
    }
    # The same folder again: nothing new, and the list again, in the human output.
    res = _run(["--data-dir", str(data), "scan", str(drop)])
    assert "scanned 0 new upload(s), 3 already known:" in res.stdout
    assert "not submitted: 5 of 8 file(s) seen" in res.stdout
    assert f"{drop / 'notes.txt'}: not an image or video (plain text)" in res.stdout


def test_named_files_are_uploads_whatever_their_name(svc, tmp_path):
    text_file, video = tmp_path / "notes.jpg", tmp_path / "movie"
    text_file.write_text("not a picture")
    video.write_bytes(_mp4())
    s = scan(svc, [text_file, video])
    assert s.submitted == 2 and s.rejected_reasons == {"not_an_image": 1}
    assert s.skipped == [] and s.done == 1  # the extension-less video was analysed


def test_watched_folder_says_what_it_does_not_submit(make_services, tmp_path, caplog):
    svc = make_services()
    root = tmp_path / "watched"
    root.mkdir()
    os.mkfifo(root / "pipe")
    w = FolderWatcher(svc, root, InlineDispatcher(svc), settle_s=0.0, poll_s=0.01)
    with caplog.at_level(logging.WARNING, logger="core.pipeline.sources.watchfolder"):
        assert w.poll_once() == [] and w.poll_once() == []
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("watch: not submitting pipe: not a regular file") == 1
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Upload)) == 0


def test_api_takes_a_video_by_its_content_not_its_name(make_services):
    svc = make_services(api_keys="k")
    client = TestClient(create_app(svc, InlineDispatcher(svc)), headers={"X-API-Key": "k"})
    r = client.post("/uploads", files={"file": ("clip.jpg", _mp4(), "image/jpeg")})
    assert r.status_code == 202, r.text
    with svc.db.session() as s:
        assert s.scalar(select(Upload.media_kind)) == "video"


# --- 2. where the data lives; read-only commands never create a store --------------------


READ_ONLY = [
    ["status"],
    ["alerts"],
    ["identity", "list"],
    ["identity", "show", "Anyone"],
    ["report", "out.html"],
    ["purge", "--older-than-days", "1", "--dry-run"],
    ["identity", "remove", "Anyone", "--yes"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_read_only_commands_do_not_create_a_store(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    res = _run(["--data-dir", "typo-data", *args], code=2)
    where = tmp_path / "typo-data"
    assert f"no identity-watch store at {where} (set IDWATCH_DATA_DIR or --data-dir)" in res.output
    assert "Traceback" not in res.output
    assert not where.exists() and not (tmp_path / "out.html").exists()


def test_status_says_where_everything_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(["--data-dir", "rel-data", "migrate"])
    res = _run(["--data-dir", "rel-data", "status", "--json"])
    st = _json(res)
    data = tmp_path / "rel-data"
    assert st["store"] == {
        "data_dir": str(data),
        "database": f"sqlite:///{data}/idwatch.db",
        "vectors": str(data / "vectors.db"),
        "broker": None,
        "mode": "embedded",
    }
    assert f"store: {data}" in res.stderr  # every store command says it, on stderr
    face = st["face_backend"]
    if face["name"] == "mobilefacenet":
        assert face["why"].startswith("verified model at ") and face["why"].endswith(".tflite")
    else:
        assert face["name"] == "dlib" and face["why"].startswith("fallback: ")
    assert st["detector"]["name"] == "offline"
    assert "packaged head " in st["detector"]["why"]
    human = _run(["--data-dir", "rel-data", "status"]).stdout
    assert f"data dir:      {data}" in human
    assert f"face backend:  {face['name']} ({face['why']})" in human


@pytest.mark.postgres
def test_status_hides_the_database_password(pg_url, tmp_path):
    url = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    env = {"IDWATCH_DATABASE_URL": url, "IDWATCH_DATA_DIR": str(tmp_path / "d")}
    res = _run(["status"], code=2, env=env)
    assert "no identity-watch store in the database" in res.output and "s3cret" not in res.output
    _run(["migrate"], env=env)
    res = _run(["status", "--json"], env=env)
    assert _json(res)["store"]["database"] == url.replace("s3cret", "***")
    assert "s3cret" not in res.output


# --- 3. names: one identity per normalised name --------------------------------------------


def test_name_key_normalises_case_spacing_and_unicode():
    assert name_key("  Leonardo   DiCaprio ") == name_key("leonardo dicaprio")
    assert name_key("ＡＢＣ") == name_key("abc")  # full-width letters (NFKC)
    assert name_key("Zoe\u0308") == name_key("Zoë")  # decomposed accent
    assert name_key("Straße") == name_key("STRASSE")  # casefold, not lower
    assert name_key("Anne Hathaway") != name_key("Anne Hathway")


def test_second_spelling_adds_to_the_same_person(svc, demo_set):
    ref = load_references(demo_set)[EILEEN][0]
    first = register_identity(svc, "Eileen Collins", [ref])
    again = register_identity(svc, "  eileen   COLLINS", [ref])
    assert (again.identity_id, again.name, again.created) == (first.identity_id, EILEEN, False)
    assert again.given_name == "eileen   COLLINS" and again.references_added == 0
    with svc.db.session() as s:
        assert list(s.scalars(select(Identity.name))) == [EILEEN]
    with pytest.raises(IntegrityError), svc.db.session() as s:  # the database keeps it so
        s.add(Identity(name="EILEEN COLLINS"))


def test_identity_filters_normalise_and_fail_clearly(tmp_path, demo_set):
    data = tmp_path / "data"
    ref = load_references(demo_set)[EILEEN][0]
    _run(["--data-dir", str(data), "identity", "add", EILEEN, str(ref)])
    _run(["--data-dir", str(data), "scan", str(demo_set / "uploads" / "fake_eileen_person3.png")])
    res = _run(["--data-dir", str(data), "identity", "add", "eileen collins", str(ref)])
    assert (
        "'eileen collins' is the registered identity 'Eileen Collins' (names match ignoring "
        "case and spacing): photos added to it" in res.stdout
    )
    rows = _json(
        _run(["--data-dir", str(data), "alerts", "--identity", "EILEEN  collins", "--json"])
    )
    assert len(rows) == 1 and rows[0]["identity"] == EILEEN
    for args in (["alerts"], ["report", str(tmp_path / "r.html")]):
        res = _run(["--data-dir", str(data), *args, "--identity", "anne hathaway"], code=2)
        assert "no identity named 'anne hathaway'; known: 'Eileen Collins'" in res.output
    res = _run(["--data-dir", str(data), "identity", "show", "Eileen Colins"], code=2)
    assert "no identity named 'Eileen Colins'; did you mean 'Eileen Collins'?" in res.output
    assert not (tmp_path / "r.html").exists()


def _sqlite_at_0004(path: Path, names: list[str]) -> str:
    url = f"sqlite:///{path}"
    upgrade(url, "0004")
    engine = create_engine(url)
    with engine.begin() as conn:
        for i, n in enumerate(names, 1):
            conn.execute(
                text("INSERT INTO identities (id, name, created_at) VALUES (:i, :n, '2026-01-01')"),
                {"i": i, "n": n},
            )
    engine.dispose()
    return url


def test_migration_backfills_name_keys_and_refuses_collisions(tmp_path):
    url = _sqlite_at_0004(tmp_path / "ok.db", ["Leonardo DiCaprio", "Anne  Hathaway"])
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT name, name_key FROM identities ORDER BY id")).all()
    engine.dispose()
    assert keys == [("Leonardo DiCaprio", "leonardo dicaprio"), ("Anne  Hathaway", "anne hathaway")]

    url = _sqlite_at_0004(tmp_path / "clash.db", ["Leonardo DiCaprio", "Leonardo Dicaprio"])
    with pytest.raises(
        Exception,
        match=r"'Leonardo DiCaprio' \(id 1\) and 'Leonardo Dicaprio' "
        r"\(id 2\) match as 'leonardo dicaprio'.*idwatch identity remove",
    ):
        upgrade(url)


# --- 4. the demo: its summary counts its table; it honours the data dir --------------------


def test_demo_counts_what_its_table_shows_and_uses_the_data_dir(tmp_path):
    data, work = tmp_path / "my-data", tmp_path / "work"
    res = _run(["--data-dir", str(data), "demo", "--workdir", str(work)])
    table_n = int(re.search(r"Alerts \((\d+)\)", res.stdout).group(1))
    total = re.search(
        r"in all: (\d+) alert\(s\) on \d+ upload\(s\) \((\d+) raised by the scan, (\d+) by "
        r"backfill for people registered after it\)",
        res.stdout,
    )
    assert total, res.stdout
    n, by_scan, by_backfill = map(int, total.groups())
    assert n == table_n == by_scan + by_backfill and by_backfill >= 1
    assert "registered Tom Hanks after the scan: backfill matched" in res.stdout  # stdout
    # The demo's store is the one asked for: the alerts are there afterwards.
    assert len(_json(_run(["--data-dir", str(data), "alerts", "--json"]))) == n
    assert f"data dir: {data}" in res.stdout
    # A data dir that is not the demo's (or empty) is never wiped.
    other = tmp_path / "precious"
    other.mkdir()
    (other / "idwatch.db").write_bytes(b"x")
    res = _run(["--data-dir", str(other), "demo", "--workdir", str(work)], code=2)
    assert "is not empty and was not made by `idwatch demo`" in res.output
    assert (other / "idwatch.db").read_bytes() == b"x"


# --- 5. arguments checked; dry runs count everything ----------------------------------------


def _commands():
    root = typer.main.get_command(app)
    stack = [([], root)]
    while stack:
        path, cmd = stack.pop()
        yield path, cmd
        stack.extend((path + [n], c) for n, c in getattr(cmd, "commands", {}).items())


def test_every_numeric_option_has_a_range_and_every_option_help():
    numeric = []
    for path, cmd in _commands():
        for p in cmd.params:
            if not isinstance(p, TyperOption) or p.hidden:
                continue
            assert p.help, f"{' '.join(path)} {p.opts} has no help text"
            if p.type_descriptor.annotation in (int, float):
                numeric.append(" ".join(path) + " " + p.opts[0])
                assert p.min is not None or p.max is not None, numeric[-1]
    assert "purge --older-than-days" in numeric and "scan --wait" in numeric


@pytest.mark.parametrize(
    ("args", "opt"),
    [
        (["purge", "--older-than-days", "-1", "--dry-run"], "--older-than-days"),
        (["scan", ".", "--wait", "-1"], "--wait"),
        (["identity", "remove", "X", "--wait", "-5", "--yes"], "--wait"),
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["flower", "--port", "70000"], "--port"),
        (["sweep", "--every", "-3"], "--every"),
    ],
)
def test_out_of_range_values_are_usage_errors(tmp_path, args, opt):
    res = _run(["--data-dir", str(tmp_path / "d"), *args], code=2)
    assert f"Invalid value for '{opt}'" in res.output
    assert not (tmp_path / "d").exists()  # refused before anything ran


def test_purge_dry_run_counts_what_the_purge_deletes(svc, demo_set):
    register_identity(svc, EILEEN, load_references(demo_set)[EILEEN])
    scan(svc, [demo_set / "uploads"])

    def counts():
        with svc.db.session() as s:
            n = {
                m.__name__: s.scalar(select(func.count()).select_from(m))
                for m in (Upload, Face, Match, Alert, Notification)
            }
        root = svc.files.abs(".")
        n["files"] = sum(
            1 for sub in ("uploads", "crops") for f in (root / sub).rglob("*") if f.is_file()
        )
        n["vectors"] = svc.vectors.count(svc.vectors.faces_name(svc.face_backend.name))
        return n

    before = counts()
    assert before["Alert"] >= 1 and before["Match"] >= 1
    dry = purge_uploads(svc, 0, dry_run=True)
    assert counts() == before
    real = purge_uploads(svc, 0)
    after = counts()
    assert dry == real
    assert (dry.uploads, dry.faces, dry.matches, dry.alerts, dry.notifications) == (
        before["Upload"] - after["Upload"],
        before["Face"] - after["Face"],
        before["Match"] - after["Match"],
        before["Alert"] - after["Alert"],
        before["Notification"] - after["Notification"],
    )
    assert dry.vectors == before["vectors"] - after["vectors"]
    assert dry.files == before["files"] - after["files"] > dry.uploads


def test_yes_flags_have_help_and_no_help_shows_bool():
    for path, cmd in _commands():
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0 and "<bool>" not in res.output, " ".join(path)
        for p in cmd.params:
            if "--yes" in getattr(p, "opts", []):
                assert p.help and "confirmation" in p.help


# --- 6. configuration mistakes: one line, the setting to change ---------------------------


@pytest.mark.parametrize(
    ("env", "args", "line"),
    [
        (
            {"IDWATCH_API_KEYS": None},
            ["api"],
            "error: no API keys configured: set IDWATCH_API_KEYS",
        ),
        (
            {"IDWATCH_DATABASE_URL": "nonsense"},
            ["status"],
            "error: IDWATCH_DATABASE_URL is not a database URL this system can use: Could not "
            "parse SQLAlchemy URL",
        ),
        (
            {"IDWATCH_DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/x"},
            ["status"],
            "error: database postgresql+psycopg2://postgres@127.0.0.1:1/x: connection to server",
        ),
        (
            {"IDWATCH_FACE_BACKEND": "nope"},
            ["status"],
            "error: unknown face backend 'nope'; choose one of dlib, mobilefacenet, insightface "
            "(set IDWATCH_FACE_BACKEND)",
        ),
        (
            {"IDWATCH_API_PORT": "eighty"},
            ["status"],
            "error: invalid setting: IDWATCH_API_PORT='eighty': Input should be a valid integer",
        ),
        (
            {"IDWATCH_BROKER_URL": "redis://127.0.0.1:1/0"},
            ["status"],
            "error: cannot reach the broker redis://127.0.0.1:1/0: Error 111 connecting",
        ),
    ],
    ids=["no-api-keys", "bad-db-url", "db-unreachable", "unknown-backend", "bad-int", "broker"],
)
def test_configuration_errors_are_one_line(tmp_path, env, args, line):
    data = tmp_path / "d"
    _run(["--data-dir", str(data), "migrate"])
    res = _run(["--data-dir", str(data), *args], code=2, env=env)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(line), res.stderr
    assert "Traceback" not in res.output
    debug = runner.invoke(app, ["--debug", "--data-dir", str(data), *args], env=env)
    assert debug.exit_code == 1 and debug.exception is not None  # the real exception


def test_vector_store_and_data_dir_errors_are_one_line(tmp_path, monkeypatch):
    """Milvus unreachable (pymilvus' own exception), its file locked by another process
    (milvus-lite's), a data dir that cannot be written: one line with the setting."""
    from milvus_lite.exceptions import DataDirLockedError
    from pymilvus.exceptions import MilvusException

    from workers.cli.errors import explain

    monkeypatch.setenv("IDWATCH_MILVUS_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("IDWATCH_DATA_DIR", str(tmp_path / "d"))
    assert explain(MilvusException(code=2, message="Fail connecting to server")) == (
        "vector store http://127.0.0.1:1: Fail connecting to server (check IDWATCH_MILVUS_URI)"
    )
    assert explain(DataDirLockedError("locked")).startswith(
        "the vector store file http://127.0.0.1:1 is open in another process"
    )
    denied = PermissionError(13, "Permission denied", str(tmp_path / "d" / "uploads"))
    assert explain(denied) == (
        f"cannot use the data dir {tmp_path / 'd'}: Permission denied "
        "(set IDWATCH_DATA_DIR or --data-dir)"
    )
    assert explain(RuntimeError("a bug")) is None  # keeps its traceback


def _settings_table_names() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("| setting | default | meaning |", 1)[1].split("\n\n", 1)[0]
    names = set()
    for row in section.splitlines()[1:]:
        first = row.split("|")[1]
        names |= set(re.findall(r"`(IDWATCH_[A-Z0-9_]+)`", first))
    return names


def test_readme_settings_table_lists_every_setting_the_code_reads():
    documented = _settings_table_names()
    fields = {f"IDWATCH_{name.upper()}" for name in Settings.model_fields}
    read_directly = set()
    for d in ("core", "workers"):
        for f in (ROOT / d).rglob("*.py"):
            read_directly |= set(
                re.findall(r"environ\.get\(\s*\"(IDWATCH_[A-Z0-9_]+)\"", f.read_text())
            )
    assert fields - documented == set(), "settings missing from the README table"
    assert read_directly - documented == set(), "environment variables missing"
    assert documented - fields - read_directly == set(), "README rows nothing reads"


# --- 7. report pictures and scores ---------------------------------------------------------


def test_face_view_never_smears_the_border():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    box = [-20.0, 120.0, 60.0, 200.0]  # a face running off the left and bottom edges
    view = np.asarray(face_view(rgb, box, side=256))
    # The square is 128 px around (20, 160): x from -44, y from 96; scale 2 px per px.
    assert (view[:, : 44 * 2 - 1] == PAD).all()  # left of the picture: flat
    assert (view[(200 - 96) * 2 + 1 :, :] == PAD).all()  # below it: flat
    inside = view[2:200, 92:254].astype(int)
    expected = np.asarray(
        Image.fromarray(rgb[96:200, 0:84]).resize((168, 208), Image.Resampling.LANCZOS)
    )[2:200, 4:166].astype(int)
    assert np.abs(inside - expected).max() <= 1  # the picture itself, resampled once


def test_scores_keep_enough_digits_to_rank():
    assert score_text(0.775) == "0.775"
    assert score_text(0.99466) == "0.99466"  # 3 significant digits of 1 - p
    assert score_text(0.0004204) == "0.000420"
    assert score_text(0.99999999) == "> 0.999999"
    assert ranks([0.2, 0.99466, 0.99452, 0.5]) == [4, 1, 2, 3]


def test_packaged_heads_are_bounded_and_decide_as_before():
    for path in PACKAGED_HEADS.values():
        head = Head.load(path)
        d = json.loads(path.read_text())
        n_fake = d["training"]["n_fake"]
        lo, hi = laplace_bounds(d["training"]["n"] - n_fake, n_fake)
        assert head.bounds == pytest.approx((lo, hi)) and hi < 0.9995  # never "1.000"
        # The same head without bounds, thresholds mapped back: the same decisions.
        raw = json.loads(path.read_text())
        raw["calibration"].pop("bounds")
        raw["threshold"] = (raw["threshold"] - lo) / (hi - lo)
        for v in raw["calibration"].get("strata", {}).get("values", {}).values():
            v["threshold"] = (v["threshold"] - lo) / (hi - lo)
        old = Head.from_dict(raw)
        X = np.random.default_rng(1).normal(0, 3, (4000, len(head.feature_names)))
        X[:, head.feature_names.index("ref.available")] = np.arange(4000) % 2
        X = head.mean + X * head.std
        p, p_old = head.predict_proba(X), old.predict_proba(X)
        assert (p <= hi).all() and (p >= lo).all() and p_old.max() > 0.9995  # it was 1.000
        assert (head.predict(X) == old.predict(X)).all()
        assert (np.diff(p[np.argsort(p_old, kind="stable")]) >= -1e-12).all()  # same order


def test_training_bounds_scores_by_its_counts():
    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 30)
    X = rng.normal(0, 1, (90, 3)) + y[:, None] * 4  # separable: Platt would say 1.000
    head = train_head(X, y, ["a", "b", "c"], target_real_accuracy=0.9, inner_folds=3)
    assert head.bounds == pytest.approx((1 / 62, 31 / 32))
    p = head.predict_proba(X)
    assert p.max() <= 31 / 32 and (head.predict(X) == (p >= head.threshold)).all()
    assert head.training["inner_cv"]["fake_accuracy"] > 0.9


# --- 8. a word while models load; help without <bool> --------------------------------------


def test_models_loading_is_said(tmp_path, demo_set):
    ref = load_references(demo_set)[EILEEN][0]
    t0 = time.monotonic()
    res = _run(["--data-dir", str(tmp_path / "d"), "identity", "add", EILEEN, str(ref)])
    assert re.search(r"loading models: face backend \w+, forgery detector \w+ \.\.\.", res.stderr)
    seconds = float(re.search(r"models loaded in ([\d.]+) s", res.stderr).group(1))
    assert 0 <= seconds <= time.monotonic() - t0
    assert f"new store: {tmp_path / 'd'}" in res.stderr
