"""The review workflow over a real embedded system (no browser; tests/test_review_browser.py
drives the pages in Chromium): review states and the CLI, the review webhook event, the
login and CSRF gate of every /review route, evidence export, learning from reviews."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from core.demo.dataset import EILEEN
from core.pipeline import alert_rule
from core.pipeline.backfill import backfill
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.sources.scan import scan
from core.pipeline.verdicts import score_matches
from core.review.actions import set_review
from core.review.evidence import verify_evidence
from core.review.explain import PHRASES, signals
from core.review.queue import QueueFilter, queue
from core.review.states import ReviewState
from core.review.suppression import same_face_similarity
from core.review.thresholds import MIN_REVIEWS, best_cut, suggest
from core.review.users import add_user, hash_password, remove_user
from core.services import Services
from core.settings import Settings
from core.storage.db import downgrade, upgrade
from core.storage.models import Alert, Face, Identity, Match, Upload
from tests.reviewkit import (
    AI_DECLARED,
    API_KEY,
    EVIDENCE_SECRET,
    PASSWORD,
    copy_of,
    csrf_of,
    login,
    make_system,
    settings,
)
from workers.api import create_app
from workers.cli import app as cli_app


@pytest.fixture(scope="module")
def system(tmp_path_factory, demo_set):
    """(services, data dir): Eileen Collins registered, three alerts in her name."""
    data = tmp_path_factory.mktemp("review") / "data"
    svc = make_system(data, demo_set)
    add_user(svc, "alice", PASSWORD)
    yield svc, data
    svc.close()


def _ids(svc) -> dict[str, int]:
    from tests.reviewkit import alert_ids

    return alert_ids(svc)


@pytest.fixture
def client(system):
    svc, _ = system
    return TestClient(create_app(svc, InlineDispatcher(svc)), base_url="http://testserver")


def _cli(data: Path, *args: str, **env: str):
    run_env = {f"IDWATCH_{k.upper()}": str(v) for k, v in settings(data).items()}
    run_env.update(env)
    res = CliRunner().invoke(cli_app, list(args), env=run_env)
    return res


# ------------------------------------------------------------------------- states, CLI


def test_alerts_carry_review_state_and_the_cli_sets_and_filters_it(system):
    svc, data = system
    ids = _ids(svc)
    a, b = ids["fake_eileen_person5.png"], ids["fake_eileen_group2.png"]
    set_review(svc, a, ReviewState.new, "setup")
    set_review(svc, b, ReviewState.new, "setup")

    rows = json.loads(_cli(data, "alerts", "--json").stdout)
    assert {r["id"] for r in rows} >= {a, b}
    assert all(set(r["review"]) == {"state", "by", "at", "note"} for r in rows)

    res = _cli(
        data, "alerts", "review", str(a), "--confirm", "--note", "swap, takedown", "--by", "bob"
    )
    assert res.exit_code == 0, res.output
    assert "new -> confirmed" in res.stdout
    again = _cli(data, "alerts", "review", str(a), "--confirm", "--note", "swap, takedown")
    assert "already confirmed" in again.stdout  # the same decision twice records nothing

    mine = {r["id"]: r for r in json.loads(_cli(data, "alerts", "--json").stdout)}[a]
    assert mine["review"]["state"] == "confirmed" and mine["review"]["by"] == "bob"
    assert mine["review"]["note"] == "swap, takedown" and mine["review"]["at"]

    confirmed = json.loads(_cli(data, "alerts", "--review-state", "confirmed", "--json").stdout)
    assert a in {r["id"] for r in confirmed} and b not in {r["id"] for r in confirmed}
    new = json.loads(_cli(data, "alerts", "--review-state", "new", "--json").stdout)
    assert b in {r["id"] for r in new} and a not in {r["id"] for r in new}
    assert _cli(data, "alerts", "--review-state", "bogus").exit_code != 0
    assert _cli(data, "alerts", "review", str(a), "--confirm", "--dismiss").exit_code != 0
    assert _cli(data, "alerts", "review", "999999", "--dismiss").exit_code == 1

    table = _cli(data, "alerts").stdout  # the plain listing still works
    assert "Alerts (" in table and "confirmed" in table

    from core.review.actions import history

    h = history(svc, a)
    assert [x["state"] for x in h][-1] == "confirmed" and h[-1]["previous"] == "new"


def test_review_webhook_event_is_signed_and_sent_once(tmp_path, demo_set):
    from benchmarks.common import WebhookReceiver

    secret = "review-webhook-secret-0123"  # text: its UTF-8 bytes are the key
    rx = WebhookReceiver(secret)
    try:
        svc = make_system(
            tmp_path / "data",
            demo_set,
            notifier="memory,webhook",
            webhook_url=rx.url,
            webhook_secret=secret,
        )
        try:
            n_alerts = len(_ids(svc))
            assert len(rx.deliveries) == n_alerts and rx.bad == 0
            a = _ids(svc)["fake_eileen_person3.png"]
            out = set_review(svc, a, ReviewState.confirmed, "alice", "fake", InlineDispatcher(svc))
            assert len(out.notifications) == 2  # one per notifier
            reviews = [d for d in rx.deliveries if d["event"]["type"] == "review"]
            assert rx.bad == 0 and len(reviews) == 1
            ev = reviews[0]["event"]
            assert ev["alert_id"] == a and ev["state"] == "confirmed" and ev["previous"] == "new"
            assert ev["identity_name"] == EILEEN and ev["reviewer"] == "alice"
            assert reviews[0]["id"] == f"review-{out.review_id}-webhook"
            # The alert events say what they are too.
            assert {d["event"]["type"] for d in rx.deliveries} == {"alert", "review"}
            # Same decision again: nothing; a dismissal is not sent (review_notify_states).
            set_review(svc, a, ReviewState.confirmed, "alice", "fake", InlineDispatcher(svc))
            set_review(svc, a, ReviewState.dismissed, "alice", None, InlineDispatcher(svc))
            assert len([d for d in rx.deliveries if d["event"]["type"] == "review"]) == 1
            mem = [e for e in svc.notifier("memory").events if e.type == "review"]
            assert len(mem) == 1
            # A receiver without the secret cannot be fooled: the signature is checked.
            from standardwebhooks import Webhook, WebhookVerificationError

            body = json.dumps(ev, sort_keys=True)
            with pytest.raises(WebhookVerificationError):
                Webhook(base64.b64encode(b"wrong-key-xxxxxxxxxx").decode()).verify(
                    body, {"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,x"}
                )
        finally:
            svc.close()
    finally:
        rx.close()


# ------------------------------------------------------------------------- the gate


def _review_routes(client) -> list[tuple[str, str]]:
    """(method, path) of every route of the review app, with ids filled in."""
    review_app = next(r.app for r in client.app.routes if getattr(r, "path", "") == "/review")
    out = []
    for r in review_app.routes:
        path = getattr(r, "path", None)
        if path is None or path.startswith("/static"):
            continue
        for m in sorted(getattr(r, "methods", None) or {"GET"}):
            if m != "HEAD":
                out.append(
                    (m, "/review" + path.replace("{alert_id}", "1").replace("{ref_id}", "1"))
                )
    return out


def test_every_review_route_needs_a_login(client):
    routes = _review_routes(client)
    paths = {p for _, p in routes}
    assert {"/review/", "/review/alerts/1", "/review/alerts/1/evidence.zip"} <= paths
    anon = TestClient(client.app, base_url="http://testserver")
    for method, path in [*routes, ("GET", "/review/no-such-page"), ("GET", "/review")]:
        if path == "/review/login":
            continue  # the one page served to anyone (the form), besides CSS and JS
        for headers in ({}, {"X-API-Key": API_KEY}, {"Cookie": "idwatch_review=forged.value"}):
            r = anon.request(method, path, headers=headers, follow_redirects=False)
            if method == "GET":
                assert r.status_code in (303, 307), (method, path, r.status_code)
                if r.status_code == 303:
                    assert r.headers["location"].startswith("/review/login?next=")
            else:
                assert r.status_code == 401, (method, path, r.status_code)
            assert r.status_code != 200
    # What anyone gets: the login form and the static files, nothing about alerts.
    assert anon.get("/review/login").status_code == 200
    assert anon.get("/review/static/review.css").status_code == 200
    # The API's keys still guard the API, and a reviewer's session does not open it.
    login(anon)
    assert anon.get("/alerts").status_code == 401


def test_login_session_and_reviewers(system, client):
    svc, _ = system
    page = client.get("/review/login")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    token = csrf_of(page.text)
    bad = client.post(
        "/review/login",
        data={"username": "alice", "password": "wrong password!!", "csrf_token": token},
        follow_redirects=False,
    )
    assert bad.status_code == 401 and "Wrong name or password" in bad.text
    nobody = client.post(
        "/review/login",
        data={"username": "mallory", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert nobody.status_code == 401
    # Without the login form's token: refused before the password is even looked at.
    assert (
        client.post("/review/login", data={"username": "alice", "password": PASSWORD}).status_code
        == 403
    )
    r = client.post(
        "/review/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/review/"  # no open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/review" in cookie
    assert client.get("/review/").status_code == 200

    # A reviewer removed from the database is logged out at the next request.
    add_user(svc, "carol", PASSWORD)
    other = TestClient(client.app, base_url="http://testserver")
    login(other, "carol")
    assert other.get("/review/").status_code == 200
    remove_user(svc, "carol")
    assert other.get("/review/", follow_redirects=False).status_code == 303

    # Guessing is throttled per (client, name).
    guesser = TestClient(client.app, base_url="http://testserver")
    tok = csrf_of(guesser.get("/review/login").text)
    codes = [
        guesser.post(
            "/review/login",
            data={"username": "dave", "password": f"guess-{i}-xxxxx", "csrf_token": tok},
        ).status_code
        for i in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]


def test_reviewers_from_settings_argon2_and_pbkdf2(system, tmp_path):
    svc, data = system
    salt = b"0123456789abcdef"
    pbkdf2 = "pbkdf2_sha256$100000${}${}".format(
        base64.b64encode(salt).decode(),
        base64.b64encode(hashlib.pbkdf2_hmac("sha256", b"erin's password", salt, 100000)).decode(),
    )
    users = f"frank:{hash_password('franks password')};erin:{pbkdf2}"
    svc2 = Services(Settings(**settings(data, review_users=users)))
    try:
        c = TestClient(create_app(svc2, InlineDispatcher(svc2)), base_url="http://testserver")
        login(c, "frank", "franks password")
        login(TestClient(c.app, base_url="http://testserver"), "erin", "erin's password")
        # `idwatch review user hash` prints what goes into IDWATCH_REVIEW_USERS.
        res = CliRunner().invoke(
            cli_app, ["review", "user", "hash", "--password-stdin"], input="a long password\n"
        )
        assert res.exit_code == 0 and res.stdout.strip().startswith("$argon2id$")
        res = _cli(data, "review", "user", "list", "--json", IDWATCH_REVIEW_USERS=users)
        assert {(u["name"], u["source"]) for u in json.loads(res.stdout)} >= {
            ("frank", "settings"),
            ("erin", "settings"),
            ("alice", "database"),
        }
    finally:
        svc2.close()


def test_forms_need_the_session_csrf_token(system, client):
    svc, _ = system
    a = _ids(svc)["fake_eileen_group2.png"]
    set_review(svc, a, ReviewState.new, "setup")
    token = login(client)
    url = f"/review/alerts/{a}/review"
    assert client.post(url, data={"state": "dismissed"}).status_code == 403  # missing
    assert client.post(url, data={"state": "dismissed", "csrf_token": "x" * 43}).status_code == 403
    other = TestClient(client.app, base_url="http://testserver")
    other_token = login(other)
    assert other_token != token
    assert (
        client.post(url, data={"state": "dismissed", "csrf_token": other_token}).status_code == 403
    )
    assert (
        client.post(
            url,
            data={"state": "dismissed", "csrf_token": token},
            headers={"Origin": "https://evil.example"},
        ).status_code
        == 403
    )
    assert (
        client.post(f"{url}", json={"state": "dismissed", "csrf_token": token}).status_code == 403
    )
    assert client.post("/review/logout").status_code == 403  # logging out is a form too
    with svc.db.session() as s:
        assert s.get(Alert, a).review_state == "new"  # none of the above changed anything
    r = client.post(
        url,
        data={
            "state": "dismissed",
            "csrf_token": token,
            "note": "real photo",
            "after": f"/review/alerts/{a}",
        },
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/review/alerts/{a}"
    with svc.db.session() as s:
        row = s.get(Alert, a)
        assert (row.review_state, row.reviewed_by, row.review_note) == (
            "dismissed",
            "alice",
            "real photo",
        )
    page = client.get(f"/review/alerts/{a}")
    assert (
        page.status_code == 200
        and "Dismissed (real photo)" in page.text
        and "real photo" in page.text
    )
    # The API reports it as well.
    rows = client.get("/alerts", headers={"X-API-Key": API_KEY}).json()
    assert {r["id"]: r["review"]["state"] for r in rows}[a] == "dismissed"


def test_queue_filters_orders_and_pages(system, client):
    svc, _ = system
    ids = _ids(svc)
    wanted = [
        ids[n]
        for n in ("fake_eileen_person3.png", "fake_eileen_group2.png", "fake_eileen_person5.png")
    ]
    for i in wanted:
        set_review(svc, i, ReviewState.new, "setup")
    with svc.db.session() as s:
        scores = {i: s.get(Alert, i).fake_score for i in wanted}
    by_score = queue(svc, QueueFilter(state="new", identity=EILEEN, sort="score", per_page=100))
    got = [r["id"] for r in by_score.rows if r["id"] in scores]
    assert got == sorted(scores, key=lambda i: -scores[i])
    newest = queue(svc, QueueFilter(state="new", sort="newest", per_page=100))
    assert [r["id"] for r in newest.rows] == sorted((r["id"] for r in newest.rows), reverse=True)
    pages = [queue(svc, QueueFilter(state="new", per_page=1, page=p)) for p in (1, 2, 3, 99)]
    assert pages[0].pages == pages[0].total >= 3 and pages[3].page == pages[0].pages
    assert len({p.rows[0]["id"] for p in pages[:3]}) == 3
    assert queue(svc, QueueFilter(state="new", identity="Nobody")).total == 0
    assert QueueFilter.from_query("weird", None, "bad", "-4", "100000") == QueueFilter(
        state="new", per_page=100
    )
    login(client)
    page = client.get("/review/", params={"state": "new", "sort": "score", "per_page": 2})
    assert page.status_code == 200 and "page 1 of" in page.text
    assert client.get("/review/", params={"identity": "Nobody"}).text.count("data-row") == 0
    detail = client.get(f"/review/alerts/{wanted[0]}")
    assert "Why: the largest signals" in detail.text and "Provenance" in detail.text
    ai = client.get(f"/review/alerts/{_ids(svc)[AI_DECLARED]}").text
    assert "declares itself AI-made" in ai and "compositeWithTrainedAlgorithmicMedia" in ai
    assert "FaceFusion 3.1" in ai and "Metadata names an AI generator" in ai
    assert "towards fake" in detail.text or "towards real" in detail.text
    for suffix in ("upload.jpg", "face.png"):
        r = client.get(f"/review/alerts/{wanted[0]}/{suffix}")
        assert r.status_code == 200 and r.content[:4] in (b"\xff\xd8\xff\xe0", b"\x89PNG")


# ------------------------------------------------------------------------- evidence


def test_evidence_export_verifies_and_any_tampering_fails(system, tmp_path, client):
    svc, data = system
    a = _ids(svc)["fake_eileen_person3.png"]
    res = _cli(data, "alerts", "export", str(a), "--out", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.output
    folder = tmp_path / "ev" / f"alert-{a}"
    manifest = json.loads((folder / "manifest.json").read_text())
    roles = {f["role"] for f in manifest["files"]}
    assert {"upload", "face crop", "authentic reference", "alert, scores and review"} <= roles
    with svc.db.session() as s:
        upload_sha = s.get(Upload, s.get(Alert, a).upload_id).sha256
    up = next(f for f in manifest["files"] if f["role"] == "upload")
    assert up["sha256"] == upload_sha  # the upload exactly as received
    alert = json.loads((folder / "alert.json").read_text())
    assert alert["fake_score"] > 0 and alert["signals"] and "review" in alert
    assert verify_evidence(folder, EVIDENCE_SECRET).ok
    assert _cli(data, "alerts", "verify", str(folder)).exit_code == 0

    def tampered(change) -> list[str]:
        copy = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        import shutil

        shutil.copytree(folder, copy)
        change(copy)
        res = verify_evidence(copy, EVIDENCE_SECRET)
        assert not res.ok
        return res.problems

    def flip_byte(d: Path) -> None:
        p = d / "face.png"
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 1
        p.write_bytes(bytes(b))

    assert any("face.png: changed" in p for p in tampered(flip_byte))

    def edit_score(d: Path) -> None:
        m = json.loads((d / "manifest.json").read_text())
        m["identity"] = "Someone Else"
        (d / "manifest.json").write_text(json.dumps(m))

    assert any("signature" in p for p in tampered(edit_score))
    assert any("missing" in p for p in tampered(lambda d: (d / "alert.json").unlink()))
    assert any(
        "not in the manifest" in p for p in tampered(lambda d: (d / "extra.txt").write_text("x"))
    )
    assert not verify_evidence(folder, "another secret").ok
    bad = _cli(data, "alerts", "verify", str(folder), IDWATCH_EVIDENCE_SECRET="another secret")
    assert bad.exit_code == 1
    # Without a secret configured, nothing unsigned is written.
    none = _cli(
        data, "alerts", "export", str(a), "--out", str(tmp_path / "x"), IDWATCH_EVIDENCE_SECRET=""
    )
    assert none.exit_code == 2 and not (tmp_path / "x").exists()

    # The button: the same folder as a zip.
    login(client)
    r = client.get(f"/review/alerts/{a}/evidence.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zdir = tmp_path / "zip"
    with zipfile.ZipFile(__import__("io").BytesIO(r.content)) as z:
        z.extractall(zdir)
    res = verify_evidence(zdir / f"alert-{a}", EVIDENCE_SECRET)
    assert res.ok, res.problems
    assert res.manifest["exported_by"] == "review:alice"


# ------------------------------------------------------------------------- learning


def test_alert_rule_takes_the_review_history():
    assert alert_rule.raises_alert(0.9, 0.5, True, False)
    assert alert_rule.raises_alert(0.9, 0.5, True, False, ["confirmed"])
    assert alert_rule.raises_alert(0.9, 0.5, True, False, ["new"])
    assert not alert_rule.raises_alert(0.9, 0.5, True, False, ["dismissed"])
    assert not alert_rule.raises_alert(0.9, 0.5, True, False, ["confirmed", "wrong_person"])
    assert not alert_rule.raises_alert(0.4, 0.5, True, False, [])


def test_a_dismissed_face_does_not_alert_again_on_a_rescan(system, tmp_path):
    """Dismissed and wrong-person faces: copies of them (new files, new uploads) raise no
    alert for the same person, through classify, re-classification and backfill; a copy
    of an alert nobody dismissed does (so the copies would alert without the reviews)."""
    svc, data = system
    ids = _ids(svc)
    a, b, c = (
        ids[n]
        for n in ("fake_eileen_person3.png", "fake_eileen_group2.png", "fake_eileen_person5.png")
    )
    assert (
        _cli(data, "alerts", "review", str(a), "--dismiss", "--note", "real photo").exit_code == 0
    )
    assert _cli(data, "alerts", "review", str(b), "--wrong-person").exit_code == 0
    set_review(svc, c, ReviewState.confirmed, "alice")
    from core.storage.models import Upload as U

    with svc.db.session() as s:
        src = {
            n: svc.files.abs(s.get(U, s.get(Alert, i).upload_id).path)
            for n, i in (("a", a), ("b", b), ("c", c))
        }
    copies = [
        copy_of(src["a"], tmp_path / "rescan" / "a_copy.jpg"),
        copy_of(src["b"], tmp_path / "rescan" / "b_copy.png", fmt="PNG", scale=0.9),
        copy_of(src["c"], tmp_path / "rescan" / "c_copy.png", fmt="PNG", scale=0.95),
    ]
    before = set(_ids(svc).values())
    summary = scan(svc, copies)
    assert summary.done == 3 and summary.duplicates == 0  # new bytes: new uploads
    after = _ids(svc)
    new = {n: i for n, i in after.items() if i not in before}
    assert set(new) == {"c_copy.png"}  # only the copy of the confirmed fake alerts again

    with svc.db.session() as s:
        rows = s.execute(
            select(U.original_name, Match.id, Match.parts, Match.fake_score, Match.face_id)
            .join(Face, Face.upload_id == U.id)
            .join(Match, Match.face_id == Face.id)
            .where(U.original_name.in_([str(p) for p in copies]))
        ).all()
        threshold = svc.fake_threshold
    suppressed = {Path(r[0]).name: r for r in rows if (r[2] or {}).get("review_suppressed")}
    assert set(suppressed) == {"a_copy.jpg", "b_copy.png"}
    for name, (_n, _m, parts, score, _f) in suppressed.items():
        assert score >= parts.get("threshold", threshold), name  # judged fake, yet no alert

    # Re-classification (the verdict computed again) and backfill (the claim found
    # again from the person's references) decide the same way.
    match_a, face_a = suppressed["a_copy.jpg"][1], suppressed["a_copy.jpg"][4]
    with svc.db.session() as s:
        s.get(Match, match_a).fake_score = None
    assert score_matches(svc, match_ids=[match_a]) == 0
    with svc.db.session() as s:
        s.delete(s.get(Match, match_a))
        eileen = s.scalar(select(Identity.id).where(Identity.name == EILEEN))
    res = backfill(svc, eileen)
    assert res.matches == 1 and res.alerts == 0
    with svc.db.session() as s:
        assert s.scalar(select(Alert.id).where(Alert.face_id == face_a)) is None
        # The same face: cosine of the copy's embedding with the dismissed face's, at
        # least the backend's same-face cut (dlib 0.99, MobileFaceNet 0.95).
        emb = {
            f.id: np.frombuffer(f.embedding, np.float32)
            for f in s.scalars(select(Face).where(Face.id.in_([face_a, s.get(Alert, a).face_id])))
        }
    e1, e2 = emb.values()
    cut = same_face_similarity(svc, svc.face_backend.name)
    assert cut >= 0.95
    assert float(e1 @ e2 / np.linalg.norm(e1) / np.linalg.norm(e2)) >= cut


def test_threshold_suggestion_needs_enough_reviews_and_follows_the_rule(make_services):
    assert best_cut([0.9, 0.95], [0.6, 0.62, 0.7], 0.567) == pytest.approx((0.7001, 0.0))
    t, cost = best_cut([0.6, 0.9], [0.65, 0.7], 0.5)  # losing a fake costs 3 false alarms
    assert t == 0.5 and cost == 2.0
    svc = make_services()
    with svc.db.session() as s:
        ident = Identity(name="Pat")
        up = Upload(sha256="0" * 64, original_name="x.jpg", path="x", status="done")
        s.add_all([ident, up])
        s.flush()
        scores = [0.60, 0.61, 0.63, 0.64, 0.66, 0.9, 0.92, 0.95, 0.97, 0.99]
        states = ["dismissed"] * 5 + ["confirmed"] * 5
        for k, (score, st) in enumerate([*zip(scores, states, strict=True), (0.7, "wrong_person")]):
            f = Face(
                upload_id=up.id,
                idx=k,
                box=[0, 0, 1, 1],
                landmarks=[],
                det_score=1,
                quality=1,
                chip_path="",
                crop_path="",
                face_backend="dlib",
            )
            s.add(f)
            s.flush()
            s.add(
                Alert(
                    face_id=f.id,
                    upload_id=up.id,
                    identity_key=ident.id,
                    identity_id=ident.id,
                    identity_name="Pat",
                    similarity=0.95 if st != "wrong_person" else 0.91,
                    fake_score=score,
                    decision="fake",
                    detector="offline",
                    parts={"threshold": 0.567},
                    review_state=st,
                )
            )
        pat = ident.id
    sug = suggest(svc, pat)
    assert sug["confirmed"] == 5 and sug["dismissed"] == 5 and sug["wrong_person"] == 1
    fake = sug["fake_threshold"]
    assert fake["current"] == 0.567 and fake["change"] == "raise"
    assert fake["suggested"] == pytest.approx(0.6601) and fake["dismissed_avoided"] == 5
    assert fake["confirmed_lost"] == 0
    match = sug["match_threshold"]
    assert match["suggested"] == pytest.approx(0.9101) and match["wrong_person_avoided"] == 1
    with svc.db.session() as s:
        s.execute(text("UPDATE alerts SET review_state = 'new' WHERE fake_score > 0.95"))
    few = suggest(svc, pat)
    assert few["fake_threshold"] is None and f"of {MIN_REVIEWS}" in few["status"]


def test_identity_show_prints_the_suggestion(system):
    svc, data = system
    res = _cli(data, "identity", "show", EILEEN, "--json")
    info = json.loads(res.stdout)
    assert info["review_thresholds"]["needed"] == MIN_REVIEWS
    assert "not enough reviews" in info["review_thresholds"]["status"]
    assert (
        "threshold suggestion: not enough reviews" in _cli(data, "identity", "show", EILEEN).stdout
    )


def test_feedback_rows_label_reviews_and_group_by_person(system):
    from core.evaluation.dataset_features import OfflineExtractor
    from core.faces.dlib_backend import DlibFaceBackend
    from core.review.feedback import feedback_rows, group_of

    svc, _ = system
    ids = _ids(svc)
    set_review(svc, ids["fake_eileen_person3.png"], ReviewState.confirmed, "alice")
    set_review(svc, ids["fake_eileen_group2.png"], ReviewState.dismissed, "alice")
    set_review(svc, ids["fake_eileen_person5.png"], ReviewState.wrong_person, "alice")
    emb = DlibFaceBackend()
    emb.load()
    ex = OfflineExtractor(emb)
    names = ["ref.id_sim_max", "image.noise", "ref.available"]
    fb = feedback_rows(svc, ex, names, {"Eileen_Collins"})
    reviewed = {s: n for s, n in fb.counts.items()}
    assert fb.X.shape == (len(fb), 3) and np.isfinite(fb.X).all()
    assert sorted(fb.y.tolist()) == sorted(
        [1] * reviewed["confirmed"] + [0] * reviewed["dismissed"]
    )
    assert set(fb.groups) == {"id:Eileen_Collins"} and (fb.X[:, 2] == 1).all()
    assert "wrong_person" not in fb.counts
    with_wrong = feedback_rows(svc, ex, names, set(), wrong_person="real")
    assert len(with_wrong) == len(fb) + with_wrong.counts["wrong_person"]
    assert group_of("Eileen Collins", set()) == "id:Eileen Collins"


def test_detector_train_with_feedback_adds_the_reviewed_alerts(system, demo_set, tmp_path):
    from core.forensics.head import Head

    svc, data = system
    with svc.db.session() as s:
        n = len(
            s.scalars(
                select(Alert.id).where(
                    Alert.review_state.in_(["confirmed", "dismissed"]),
                    Alert.identity_id.is_not(None),
                )
            ).all()
        )
    assert n >= 2
    out = tmp_path / "head.json"
    res = _cli(
        data,
        "detector", "train", str(demo_set / "manifest.csv"), "--out", str(out),
        "--feedback", "--cv-folds", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"feedback rows (reviewed alerts): {n}" in res.stdout
    training = Head.load(out).training
    assert training["n_extra_rows"] == n and training["n_query_pair_rows"] == 0
    assert training["n"] == training["n_leave_one_out_rows"] + n


def test_explanations_cover_every_feature_in_words():
    from core.forensics.features import feature_names

    assert set(feature_names()) <= set(PHRASES)
    sig = signals({"contrib.ref.sim_io_gap": 1.4, "contrib.image.noise": -0.4, "logit.ref": 9})
    assert [s.name for s in sig] == ["ref.sim_io_gap", "image.noise"]
    assert sig[0].sentence.startswith("Inner face") and "strong, towards fake" in sig[0].sentence
    assert "towards real" in sig[1].sentence
    old = signals({"logit.ref": 1.2, "logit.image": -0.1, "logit.bias": 3})
    assert [s.name for s in old] == ["ref", "image"] and not old[0].per_feature


# ------------------------------------------------------------------------- migration


def _insert(c, table: str, **values) -> None:
    cols = ", ".join(values)
    c.execute(
        text(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(':' + k for k in values)})"), values
    )


def test_migration_0005_keeps_alerts_and_notifications(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0004")
    eng = create_engine(url)
    now = "2026-11-30 00:00:00"
    stamps = {"created_at": now}
    with eng.begin() as c:
        _insert(
            c,
            "uploads",
            id=1,
            sha256="x",
            source="cli",
            original_name="a",
            path="a",
            status="done",
            attempts=0,
            updated_at=now,
            **stamps,
        )
        _insert(
            c,
            "faces",
            id=1,
            upload_id=1,
            idx=0,
            box="[]",
            landmarks="[]",
            det_score=1,
            quality=1,
            chip_path="",
            crop_path="",
            face_backend="dlib",
        )
        _insert(
            c,
            "alerts",
            id=7,
            face_id=1,
            upload_id=1,
            identity_key=3,
            similarity=0.9,
            fake_score=0.8,
            decision="fake",
            detector="offline",
            **stamps,
        )
        _insert(
            c,
            "notifications",
            id=5,
            alert_id=7,
            notifier="log",
            status="delivered",
            attempts=1,
            updated_at=now,
            **stamps,
        )
    upgrade(url)
    with eng.begin() as c:
        assert c.execute(text("SELECT review_state FROM alerts WHERE id = 7")).scalar() == "new"
        assert c.execute(text("SELECT event FROM notifications WHERE id = 5")).scalar() == "alert"
        seq = dict(c.execute(text("SELECT name, seq FROM sqlite_sequence")).all())
        assert seq["alerts"] >= 7 and seq["notifications"] >= 5  # ids never handed out again
        _insert(
            c,
            "notifications",
            alert_id=7,
            notifier="log",
            event="review:1",
            status="pending",
            attempts=0,
            updated_at=now,
            **stamps,
        )
    downgrade(url, "0004")
    with eng.begin() as c:
        assert c.execute(text("SELECT count(*) FROM notifications")).scalar() == 1
    eng.dispose()


def test_erasure_drops_review_notes_and_sends_nothing_more(system):
    """Last in this module: erases Eileen Collins from the shared system."""
    from core.pipeline.erasure import open_erasure
    from core.storage.models import Review

    svc, _ = system
    a = _ids(svc)["fake_eileen_person3.png"]
    set_review(svc, a, ReviewState.new, "alice", "she called us about it")
    set_review(svc, a, ReviewState.confirmed, "alice", "her manager confirmed")
    job_id, *_ = open_erasure(svc, EILEEN)
    InlineDispatcher(svc).erase(job_id)
    with svc.db.session() as s:
        row = s.get(Alert, a)
        assert row.erased_at is not None and row.review_state == "confirmed"
        assert row.review_note is None
        assert all(r.note is None for r in s.scalars(select(Review).where(Review.alert_id == a)))
    # A decision on an anonymised alert is recorded, and no event goes out in her name.
    out = set_review(svc, a, ReviewState.dismissed, "alice")
    out = set_review(svc, a, ReviewState.confirmed, "alice")
    assert out.changed and out.notifications == []
