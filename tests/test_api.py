"""The HTTP ingest API over a real embedded system (TestClient, temp data dir)."""

from __future__ import annotations

import logging
import re
import threading
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from core.demo.dataset import EILEEN, insightface_path, load_references
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.identities import register_identity
from core.review.users import add_user
from core.storage.models import Alert, Face, Identity, Match, Upload
from tests.imagegen import raw_png
from tests.reviewkit import PASSWORD, REVIEW_SECRET, login
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
    """End to end with the demo identity and one of its fakes: the upload is judged
    (done, never failed), the fake raises an alert, and /alerts and /uploads/{id} tell
    the same story."""
    client, svc, _ = api()
    register_identity(svc, EILEEN, load_references(demo_set)[EILEEN])
    fake = demo_set / "uploads" / "fake_eileen_person3.png"  # one face, a face swap
    uid = _post(client, fake.read_bytes(), fake.name).json()["upload_id"]
    got = client.get(f"/uploads/{uid}").json()
    assert got["status"] == "done" and got["reason"] is None, got
    listed = client.get("/alerts", params={"identity": EILEEN}).json()
    mine = [a for a in listed if a["upload_id"] == uid]
    assert mine == got["alerts"] and got["alerts_total"] == len(mine)
    assert all(a["identity"] == EILEEN and "crop_path" not in a for a in mine)
    # One alert per face the classify stage judged fake, no more, no less; and the
    # detector does judge this fake: a dead detector (no alert) fails here.
    with svc.db.session() as s:
        verdicts = s.scalars(
            select(Match.is_fake).join(Face, Match.face_id == Face.id).where(Face.upload_id == uid)
        ).all()
    assert verdicts == [True], "the fake must match the protected identity and be judged fake"
    assert len(mine) == 1 and mine[0]["decision"] == "fake"
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
    assert view["alerts_total"] == 3
    assert view["alerts"][0]["created_at"].endswith("Z")
    # The upload's alerts are paged too, and /alerts filters by upload.
    page = client.get(f"/uploads/{uid}", params={"alerts_limit": 1, "alerts_offset": 2}).json()
    assert [a["id"] for a in page["alerts"]] == [view["alerts"][2]["id"]]
    assert page["alerts_total"] == 3
    by_upload = client.get("/alerts", params={"upload_id": other})
    assert [a["upload_id"] for a in by_upload.json()] == [other]
    assert by_upload.headers["X-Total-Count"] == "1"
    past = client.get("/alerts", params={"offset": 10})
    assert past.json() == [] and past.headers["X-Total-Count"] == "4"


def _selects(svc) -> list[tuple[str, object]]:
    """Every SQL statement the API's engine runs from now on, with its parameters."""
    seen: list[tuple[str, object]] = []
    event.listen(
        svc.db.engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, params, _ctx, _many: seen.append((statement, params)),
    )
    return seen


def test_alert_pages_are_read_in_the_query(api):
    """A page of /alerts and of /uploads/{id} reads that page from the database: the
    query carries LIMIT and OFFSET, and the rows fetched are the page, not every alert."""
    client, svc, _ = api(dispatcher_inner=_NoPipeline())
    uid = _post(client, b"not processed", "x.jpg").json()["upload_id"]
    with svc.db.session() as s:
        ident = Identity(name="Someone")
        s.add(ident)
        s.flush()
        for i in range(300):
            face = Face(
                upload_id=uid, idx=i, box=[1.0, 2.0, 30.0, 40.0], landmarks=[],
                det_score=0.9, quality=0.5, chip_path="c", crop_path="c", face_backend="dlib",
            )  # fmt: skip
            s.add(face)
            s.flush()
            s.add(
                Alert(
                    face_id=face.id, upload_id=uid, identity_key=ident.id,
                    identity_id=ident.id, identity_name=ident.name, similarity=0.8,
                    fake_score=0.9, decision="fake", detector="test",
                )
            )  # fmt: skip
    seen = _selects(svc)
    r = client.get("/alerts", params={"limit": 2, "offset": 5})
    assert r.headers["X-Total-Count"] == "300" and len(r.json()) == 2
    reads = [(q, p) for q, p in seen if "FROM alerts JOIN faces" in q]
    assert len(reads) == 1, reads
    query, params = reads[0]
    assert "LIMIT" in query and "OFFSET" in query
    assert 2 in tuple(params) and 5 in tuple(params)
    seen.clear()
    r = client.get(f"/uploads/{uid}", params={"alerts_limit": 3, "alerts_offset": 297})
    assert r.json()["alerts_total"] == 300 and len(r.json()["alerts"]) == 3
    reads = [(q, p) for q, p in seen if "FROM alerts JOIN faces" in q]
    assert len(reads) == 1 and "LIMIT" in reads[0][0] and 297 in tuple(reads[0][1])


@pytest.mark.parametrize(
    "path",
    [
        "/uploads/99999999999999999999",
        "/uploads/2147483648",
        "/uploads/-1",
        "/alerts?upload_id=99999999999999999999",
        "/alerts?offset=99999999999999999999",
        "/uploads/1?alerts_offset=99999999999999999999",
    ],
)
def test_ids_past_their_column_are_refused_not_500(api, caplog, path):
    client, _, _ = api(dispatcher_inner=_NoPipeline())
    client = TestClient(client.app, headers={"X-API-Key": "key-one"}, raise_server_exceptions=False)
    with caplog.at_level(logging.DEBUG):
        r = client.get(path)
    assert r.status_code == 422, (r.status_code, r.text)
    assert "Traceback" not in caplog.text and "Overflow" not in caplog.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    # The largest id that fits is an ordinary "no such upload".
    assert client.get("/uploads/2147483647").status_code == 404


def test_review_page_ids_past_their_column_are_refused(make_services, caplog):
    svc = make_services(api_keys=KEYS, review_secret=REVIEW_SECRET)
    add_user(svc, "alice", PASSWORD)
    client = TestClient(
        create_app(svc, _NoPipeline()), base_url="http://testserver", raise_server_exceptions=False
    )
    login(client)
    with caplog.at_level(logging.DEBUG):
        for path in (
            "/review/alerts/99999999999999999999",
            "/review/alerts/99999999999999999999/face.png",
            "/review/references/99999999999999999999.jpg",
        ):
            assert client.get(path).status_code in (404, 422), path
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert client.get("/review/alerts/2147483647").status_code == 404


def _png16_rgba(width: int, height: int) -> bytes:
    """A 16-bit RGBA PNG of black (8 bytes a pixel decoded; a few hundred kB on disk)."""
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes(width * 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return raw_png(width, height, idat, bit_depth=16, color_type=6)


def test_image_over_the_decoded_bytes_limit_is_rejected_unread(api):
    """The reported case, with the default limits: a ~400 kB 16-bit RGBA PNG just under
    the pixel limit would hold ~0.4 GB decoded (and ~1 GB while converted). Refused from
    its header, with the reason, and the upload ends rejected."""
    client, svc, _ = api()
    side = int(svc.settings.max_pixels**0.5) - 10  # just under the pixel limit
    data = _png16_rgba(side, side)
    assert side * side < svc.settings.max_pixels and len(data) < 1_000_000
    r = _post(client, data, "deep.png")
    assert r.status_code == 202
    got = client.get(f"/uploads/{r.json()['upload_id']}").json()
    assert got["status"] == "rejected", got
    assert got["reason"].startswith("too_large_decoded")
    assert f"{side * side * 8} bytes" in got["reason"]
    assert str(svc.settings.max_decoded_bytes) in got["reason"]


def _assets_of(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_docs_are_served_from_local_files(api):
    """The docs page names no other site: every script, style and icon comes from this
    server (the pinned fastapi-offline package's files), and its policy allows nothing
    else."""
    import fastapi_offline

    client, _, _ = api()
    anon = TestClient(client.app)
    r = anon.get("/docs")
    assert r.status_code == 200
    assert "http://" not in r.text and "https://" not in r.text and "//" not in r.text
    assets = _assets_of(r.text)
    assert any(a.endswith(".js") for a in assets)
    vendored = Path(fastapi_offline.__file__).parent / "static"
    for asset in assets:
        got = anon.get(asset)
        assert got.status_code == 200, asset
        name = asset.rsplit("/", 1)[-1]
        if (vendored / name).exists():
            assert got.content == (vendored / name).read_bytes()
    csp = r.headers["content-security-policy"]
    assert "http" not in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "<script>" not in r.text  # no inline script: the policy forbids them
    # FastAPI's own pages, which load from a CDN, are off.
    assert client.get("/redoc").status_code == 404
    assert anon.get("/docs/oauth2-redirect").status_code == 404


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def test_security_headers_on_every_response(make_services):
    svc = make_services(api_keys=KEYS, review_secret=REVIEW_SECRET, api_max_request_bytes=4096)
    client = TestClient(create_app(svc, _NoPipeline()), raise_server_exceptions=False)
    key = {"X-API-Key": "key-one"}
    responses = {
        "healthz": client.get("/healthz"),
        "alerts": client.get("/alerts", headers=key),
        "no key": client.get("/alerts"),
        "unknown upload": client.get("/uploads/5", headers=key),
        "bad id": client.get("/uploads/x", headers=key),
        "no route": client.get("/nothing-here", headers=key),
        "too large": client.post("/uploads", content=b"x" * 5000, headers=key),
        "openapi": client.get("/openapi.json"),
        "docs": client.get("/docs"),
        "docs asset": client.get("/docs/assets/swagger-ui.css"),
        "review login": client.get("/review/login"),
        "review static": client.get("/review/static/review.css"),
    }
    for what, r in responses.items():
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (what, r.status_code, name)
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (what, csp)
    assert responses["no key"].status_code == 401
    assert responses["too large"].status_code == 413
    # JSON answers load nothing; the review pages keep their own stricter headers.
    assert (
        responses["alerts"]
        .headers["content-security-policy"]
        .startswith("default-src 'none'; form-action 'none'")
    )
    assert responses["review login"].headers["cache-control"] == "no-store"
    assert "form-action 'self'" in responses["review login"].headers["content-security-policy"]


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
