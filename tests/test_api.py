"""The HTTP ingest API over a real embedded system (TestClient, temp data dir)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.demo.dataset import EILEEN, insightface_path, load_references
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.identities import register_identity
from core.storage.models import Alert, Face, Identity, Match, Upload
from workers.api import ApiConfigError, create_app, safe_filename, upload_label

KEYS = "key-one,key-two"
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


class CountingDispatcher:
    """InlineDispatcher that records each call and whether the response was already sent."""

    def __init__(self, svc, inner=None) -> None:
        self.inner = inner if inner is not None else InlineDispatcher(svc)
        self.calls: list[int] = []
        self.after_response: list[bool] = []
        self.response_sent = threading.Event()

    def upload(self, upload_id: int) -> None:
        self.calls.append(upload_id)
        self.after_response.append(self.response_sent.is_set())
        if self.inner is not None:
            self.inner.upload(upload_id)

    def backfill(self, identity_id: int) -> None:
        self.inner.backfill(identity_id)


class _NoPipeline:
    def upload(self, upload_id: int) -> None:
        pass

    def backfill(self, identity_id: int) -> None:
        pass


def _watch_response(app, dispatcher: CountingDispatcher):
    """ASGI wrapper: flags the moment the last response byte has been sent."""

    async def wrapped(scope, receive, send):
        dispatcher.response_sent.clear()

        async def send_and_flag(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                dispatcher.response_sent.set()

        await app(scope, receive, send_and_flag)

    return wrapped


@pytest.fixture
def api(make_services):
    """(client with a valid key, services, counting dispatcher) over an embedded system."""

    def _make(dispatcher_inner=None, key: str = "key-two", **settings):
        svc = make_services(api_keys=KEYS, **settings)
        disp = CountingDispatcher(svc, dispatcher_inner)
        app = create_app(svc, disp)
        client = TestClient(_watch_response(app, disp), headers={"X-API-Key": key})
        return client, svc, disp

    return _make


def _post(client, data: bytes, name: str = "image.jpg", **form):
    return client.post("/uploads", files={"file": (name, data, "image/jpeg")}, data=form or None)


def _count(svc, model) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_refuses_to_start_without_api_keys(make_services):
    svc = make_services()
    with pytest.raises(ApiConfigError, match="API_KEYS"):
        create_app(svc, _NoPipeline())
    with pytest.raises(ApiConfigError):
        create_app(make_services(api_keys=" , "), _NoPipeline())
    # Explicitly unauthenticated (local experiments): every endpoint answers.
    client = TestClient(create_app(svc, _NoPipeline(), allow_no_auth=True))
    assert client.get("/alerts").status_code == 200


def test_api_key_required_except_health_and_docs(api):
    client, svc, disp = api()
    anon = TestClient(client.app)
    for method, path in (("get", "/alerts"), ("get", "/uploads/1"), ("post", "/uploads")):
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "key-one,key-two"}):
            r = getattr(anon, method)(path, headers=headers)
            assert r.status_code == 401, (method, path, headers)
    # A request without a valid key is refused before its body is read at all.
    read: list[int] = []

    async def counting(scope, receive, send):
        async def counted_receive():
            message = await receive()
            read.append(len(message.get("body", b"")))
            return message

        await client.app(scope, counted_receive, send)

    r = TestClient(counting).post(
        "/uploads", files={"file": ("a.jpg", b"x" * 1000)}, headers={"X-API-Key": "key-onx"}
    )
    assert r.status_code == 401 and read == []
    assert _count(svc, Upload) == 0 and disp.calls == []
    assert anon.get("/healthz").json() == {"ok": True}
    assert anon.get("/openapi.json").status_code == 200
    assert anon.get("/docs").status_code == 200
    # Both configured keys work (surrounding spaces in the setting are ignored).
    for key in ("key-one", "key-two"):
        assert anon.get("/alerts", headers={"X-API-Key": key}).status_code == 200


def test_post_image_runs_pipeline_after_response_and_deduplicates(api):
    client, svc, disp = api()
    data = insightface_path("t1.jpg").read_bytes()
    r = _post(client, data, "t1.jpg")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "received" and body["duplicate"] is False
    uid = body["upload_id"]
    # The pipeline ran as a background task, after the 202 had been sent.
    assert disp.calls == [uid] and disp.after_response == [True]

    got = client.get(f"/uploads/{uid}").json()
    assert got["upload_id"] == uid and got["status"] == "done" and got["n_faces"] == 6
    assert got["reason"] is None and got["alerts"] == [] and got["original_name"] == "t1.jpg"
    assert got["updated_at"] >= got["created_at"]

    again = _post(client, data, "renamed.jpg")
    assert again.status_code == 202
    assert again.json() == {"upload_id": uid, "status": "done", "duplicate": True}
    assert disp.calls == [uid]  # not dispatched twice
    assert _count(svc, Upload) == 1


def test_html_posted_as_image_is_rejected_with_reason(api):
    client, _, disp = api()
    r = _post(client, HTML, "photo.jpg")
    assert r.status_code == 202
    got = client.get(f"/uploads/{r.json()['upload_id']}").json()
    assert got["status"] == "rejected" and got["reason"].startswith("not_an_image")
    assert disp.calls == [r.json()["upload_id"]]


def test_unknown_upload_is_404(api):
    client, _, _ = api()
    assert client.get("/uploads/12345").status_code == 404
    assert client.get("/uploads/0").status_code == 422
    assert client.post("/uploads", data={"reference": "x"}).status_code == 422  # no file


def test_request_and_image_size_limits(api):
    client, svc, disp = api(api_max_request_bytes=4096, max_upload_bytes=2048)
    # Declared Content-Length over the request limit.
    r = _post(client, b"\xff" * 5000)
    assert r.status_code == 413
    # No Content-Length at all (chunked): the bytes are counted while reading.
    boundary = "b0undary"

    def chunks():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(10):
            yield b"\xff" * 1000

    r = client.post(
        "/uploads",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.request.headers.get("content-length") is None
    assert r.status_code == 413
    # Within the request limit but over the image limit.
    r = _post(client, b"\xff" * 3000)
    assert r.status_code == 413 and "2048" in r.json()["detail"]
    assert _count(svc, Upload) == 0 and disp.calls == []
    # At the image limit: accepted (and rejected by the pipeline as not an image).
    r = _post(client, b"\xff" * 2048)
    assert r.status_code == 202
    # A reference over its length cap is refused before anything is stored.
    r = _post(client, b"\x00" * 10, reference="p" * 129)
    assert r.status_code == 422 and _count(svc, Upload) == 1


def test_client_filename_is_only_a_label(api, tmp_path):
    client, svc, _ = api()
    data_dir = svc.settings.data_dir.resolve()
    before = {p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to(data_dir)}
    r = _post(client, HTML, "../../etc/passwd.jpg", reference="post-42")
    assert r.status_code == 202
    uid = r.json()["upload_id"]
    with svc.db.session() as s:
        up = s.get(Upload, uid)
        stored, label, source = up.path, up.original_name, up.source
    assert label == "passwd.jpg (reference:post-42)" and source == "api"
    assert client.get(f"/uploads/{uid}").json()["original_name"] == label
    # The stored copy is named by content under data_dir/uploads; nothing else appeared.
    assert svc.files.abs(stored).resolve().is_relative_to(data_dir / "uploads")
    assert "passwd" not in stored
    after = {p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to(data_dir)}
    assert after == before
    assert not list(tmp_path.rglob("passwd*"))


def test_label_sanitising():
    assert safe_filename("..\\..\\windows\\evil.png") == "evil.png"
    assert safe_filename("a/b/..") is None and safe_filename("") is None
    assert safe_filename("bad\x00\x1b[31m\u202ename\n.jpg") == "bad[31mname.jpg"
    assert len(safe_filename("x" * 5000 + ".jpg")) == 200
    assert upload_label(None, "post\n-7") == "reference:post-7"
    assert upload_label("a.jpg", None) == "a.jpg"
    assert upload_label(None, None) == "api-upload"


def test_alerts_listing_matches_upload_view(api, demo_set):
    """End to end with the demo identity and one of its fakes: whatever the detector
    decides, /alerts and /uploads/{id} must tell the same story."""
    client, svc, _ = api()
    register_identity(svc, EILEEN, load_references(demo_set)[EILEEN])
    fake = demo_set / "uploads" / "fake_eileen_person1.png"
    uid = _post(client, fake.read_bytes(), fake.name).json()["upload_id"]
    got = client.get(f"/uploads/{uid}").json()
    assert got["status"] in ("done", "failed"), got
    if got["status"] == "failed":  # only acceptable while no forgery detector is installed
        assert "ModelUnavailable" in got["reason"] and "\n" not in got["reason"]
    listed = client.get("/alerts", params={"identity": EILEEN}).json()
    mine = [a for a in listed if a["upload_id"] == uid]
    assert mine == got["alerts"]
    assert all(a["identity"] == EILEEN and "crop_path" not in a for a in mine)
    if got["status"] == "done":
        # One alert per face the classify stage judged fake, no more, no less.
        with svc.db.session() as s:
            verdicts = s.scalars(
                select(Match.is_fake)
                .join(Face, Match.face_id == Face.id)
                .where(Face.upload_id == uid)
            ).all()
        assert verdicts, "the fake should at least match the protected identity"
        assert len(mine) == sum(bool(v) for v in verdicts)
    assert client.get("/alerts", params={"identity": "Nobody"}).json() == []


def test_alert_rows_paging_and_shape(api):
    """Alert rows written straight into the database (the classify stage's output)."""
    client, svc, disp = api(dispatcher_inner=_NoPipeline())
    uid = _post(client, b"not processed", "x.jpg").json()["upload_id"]
    other = _post(client, b"also not processed", "y.jpg").json()["upload_id"]
    with svc.db.session() as s:
        ident = Identity(name="Someone")
        s.add(ident)
        s.flush()
        for up_id, n in ((uid, 3), (other, 1)):
            for i in range(n):
                face = Face(
                    upload_id=up_id, idx=i, box=[1.0, 2.0, 30.0, 40.0], landmarks=[],
                    det_score=0.9, quality=0.5, chip_path="c", crop_path="secret/crop.png",
                    face_backend="dlib",
                )  # fmt: skip
                s.add(face)
                s.flush()
                s.add(
                    Alert(
                        face_id=face.id, upload_id=up_id, identity_key=ident.id,
                        identity_id=ident.id, identity_name=ident.name, similarity=0.8 + i / 100,
                        fake_score=0.9, decision="fake", detector="test",
                    )
                )  # fmt: skip
    page = client.get("/alerts", params={"identity": "Someone", "limit": 2, "offset": 1})
    assert page.status_code == 200 and page.headers["X-Total-Count"] == "4"
    rows = page.json()
    assert len(rows) == 2 and "crop_path" not in rows[0]
    full = client.get("/alerts").json()
    assert [r["id"] for r in rows] == [r["id"] for r in full[1:3]]
    assert client.get("/alerts", params={"limit": 0}).status_code == 422
    view = client.get(f"/uploads/{uid}").json()
    assert [a["id"] for a in view["alerts"]] == [a["id"] for a in full if a["upload_id"] == uid]
    assert len(view["alerts"]) == 3 and view["alerts"][0]["box"] == [1.0, 2.0, 30.0, 40.0]
    assert view["alerts"][0]["created_at"].endswith("Z")


def test_broker_down_keeps_the_upload_for_the_sweeper(make_services):
    svc = make_services(api_keys=KEYS)

    class Broken:
        def upload(self, upload_id: int) -> None:
            raise ConnectionError("broker down")

        def backfill(self, identity_id: int) -> None:
            pass

    client = TestClient(
        create_app(svc, Broken(), background=False),
        headers={"X-API-Key": "key-one"},
        raise_server_exceptions=False,
    )
    r = _post(client, b"some bytes")
    # Accepted and stored: not lost, not failed; `idwatch sweep` queues it later.
    assert r.status_code == 202 and r.json()["status"] == "received"
    with svc.db.session() as s:
        up = s.scalar(select(Upload))
        assert up.status == "received" and up.reason is None


def test_openapi_declares_endpoints_and_key_scheme(api):
    client, _, _ = api()
    spec = TestClient(client.app).get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/uploads", "/uploads/{upload_id}", "/alerts", "/healthz"} <= set(paths)
    schemes = spec["components"]["securitySchemes"]
    (name,) = [k for k, v in schemes.items() if v == {**v, "type": "apiKey", "in": "header"}]
    assert schemes[name]["name"] == "X-API-Key"
    for path, method in (("/uploads", "post"), ("/uploads/{upload_id}", "get"), ("/alerts", "get")):
        assert paths[path][method]["security"] == [{name: []}]
    assert "security" not in paths["/healthz"]["get"]
    post = paths["/uploads"]["post"]
    assert "202" in post["responses"] and "413" in post["responses"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    models = spec["components"]["schemas"]
    assert {"UploadAccepted", "UploadOut", "AlertOut"} <= set(models)
    assert "crop_path" not in models["AlertOut"]["properties"]


def test_health_reports_database_failure(api):
    client, svc, _ = api()
    assert client.get("/healthz").json() == {"ok": True}
    svc.db.engine.dispose()
    Path(svc.settings.data_dir / "idwatch.db").unlink()
    (svc.settings.data_dir / "idwatch.db").mkdir()  # unopenable as a database
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json() == {"ok": False}
