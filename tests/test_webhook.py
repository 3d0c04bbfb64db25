"""Signed webhook notifier against a real HTTP receiver on 127.0.0.1 (no mocks of requests).

Receivers verify with the Standard Webhooks library (``standardwebhooks``), as a
platform's own receiver would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError

from core.alerts.notify import AlertEvent, LogNotifier, make_notifiers
from core.alerts.webhook import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    DeliveryFailed,
    WebhookNotifier,
    message_id,
    redact_url,
    secret_key,
)
from core.settings import Settings

SECRET = "s3cr3t-Wh00k-0f-the-test-9f2c"  # distinctive, so a leak is easy to find


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """Records each request, verifies it, answers the next scripted status (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)  # seconds to stall before answering
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = verified(SECRET, body, dict(self.headers))
            with rec.lock:
                rec.requests.append(Received(self.path, dict(self.headers), body, ok))
                status = rec.statuses.pop(0) if rec.statuses else 200
                delay = rec.delays.pop(0) if rec.delays else 0.0
            time.sleep(delay)
            try:
                self.send_response(status)
                for k, v in rec.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the client gave up (timeout test)
                pass

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/idwatch"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def verified(secret: str, body: bytes, headers: dict) -> bool:
    """What a receiver does: the Standard Webhooks library checks id, time and signature."""
    try:
        Webhook(secret.encode()).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_event(alert_id: int = 7) -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id,
        upload_id=3,
        face_id=11,
        identity_id=2,
        identity_name="Zoë Example",  # non-ASCII: the body is UTF-8 bytes
        similarity=0.8123,
        fake_score=0.9731,
        decision="fake",
        detector="offline",
        upload_name="clip 01.jpg",
        box=[10.0, 20.0, 110.0, 140.0],
        created_at="2026-11-26T08:00:00+00:00",
    )


def settings(url: str | None, **kw) -> Settings:
    kw.setdefault("webhook_secret", SECRET)
    kw.setdefault("webhook_backoff_s", 0.01)
    kw.setdefault("webhook_max_attempts", 3)
    kw.setdefault("webhook_timeout_s", 2.0)
    return Settings(webhook_url=url, **kw)


class Attempts:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, *args) -> None:
        self.calls.append(args)


# --- signing and verification --------------------------------------------------------


def _signed(secret: str = SECRET, ts: int | None = None, alert_id: int = 7) -> tuple[bytes, dict]:
    event = make_event(alert_id)
    body = event.to_json().encode()
    return body, WebhookNotifier(settings("http://127.0.0.1:9/x", webhook_secret=secret)).headers(
        event, body, timestamp=ts
    )


def test_signature_is_standard_webhooks_v1() -> None:
    body, h = _signed(ts=1_700_000_000)
    assert h[HEADER_ID] == message_id(7) == "alert-7-webhook"
    assert h[HEADER_TIMESTAMP] == "1700000000"
    # Computed here from the spec, not by the code under test.
    mac = hmac.new(SECRET.encode(), b"alert-7-webhook.1700000000." + body, hashlib.sha256)
    assert h[HEADER_SIGNATURE] == "v1," + base64.b64encode(mac.digest()).decode()
    assert _signed(ts=1_700_000_001)[1][HEADER_SIGNATURE] != h[HEADER_SIGNATURE]


def test_whsec_secret_is_the_standard_base64_key() -> None:
    key = bytes(range(24))
    whsec = "whsec_" + base64.b64encode(key).decode()
    assert secret_key(whsec) == key
    assert secret_key("plain text") == b"plain text"
    body, h = _signed(secret=whsec)
    Webhook(whsec).verify(body, h)  # a receiver passes the whsec_ secret as it is
    with pytest.raises(ValueError, match="not base64"):
        secret_key("whsec_not*base64")


def test_library_enforces_window_and_rejects_tampering() -> None:
    now = int(time.time())
    body, h = _signed(ts=now - 200)
    assert verified(SECRET, body, h)
    assert not verified(SECRET, *_signed(ts=now - 400))  # replayed later
    assert not verified(SECRET, *_signed(ts=now + 400))  # from the future
    assert not verified("another-secret", body, h)
    tampered = body.replace(b'"fake_score": 0.9731', b'"fake_score": 0.1')
    assert tampered != body and not verified(SECRET, tampered, h)
    # An old request re-sent with a fresh timestamp no longer matches its signature.
    assert not verified(SECRET, body, {**h, HEADER_TIMESTAMP: str(now)})
    # Another alert's id on this body does not match either.
    assert not verified(SECRET, body, {**h, HEADER_ID: message_id(8)})
    for missing in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        assert not verified(SECRET, body, {k: v for k, v in h.items() if k != missing})


# --- delivery over HTTP --------------------------------------------------------------


def test_delivery_arrives_signed_with_exact_body(receiver: Receiver) -> None:
    attempts = Attempts()
    event = make_event()
    WebhookNotifier(settings(receiver.url), on_attempt=attempts).notify(event)

    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert got.verified
    assert got.path == "/hooks/idwatch"
    assert got.body == event.to_json().encode("utf-8")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers[HEADER_ID] == f"alert-{event.alert_id}-webhook"
    assert abs(int(got.headers[HEADER_TIMESTAMP]) - time.time()) < 5
    assert len(attempts.calls) == 1
    alert_id, n, ok, status, error, seconds = attempts.calls[0]
    assert (alert_id, n, ok, status, error) == (event.alert_id, 1, True, 200, None)
    assert 0 <= seconds < 2


def test_sender_with_wrong_secret_fails_receiver_check(receiver: Receiver) -> None:
    WebhookNotifier(settings(receiver.url, webhook_secret="not-the-shared-one")).notify(
        make_event()
    )
    assert len(receiver.requests) == 1 and not receiver.requests[0].verified


def test_500_twice_then_200_is_delivered_on_attempt_3(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    attempts = Attempts()
    WebhookNotifier(settings(receiver.url, webhook_max_attempts=5), on_attempt=attempts).notify(
        make_event(42)
    )
    assert [(c[1], c[2], c[3]) for c in attempts.calls] == [
        (1, False, 500),
        (2, False, 503),
        (3, True, 200),
    ]
    assert all(c[0] == 42 for c in attempts.calls)
    assert attempts.calls[0][4].startswith("HTTP 500")
    assert len(receiver.requests) == 3
    assert all(r.verified for r in receiver.requests)  # each attempt signed afresh
    assert {r.headers[HEADER_ID] for r in receiver.requests} == {"alert-42-webhook"}
    assert len({r.body for r in receiver.requests}) == 1


def test_429_is_retried_and_retry_after_honoured(receiver: Receiver) -> None:
    receiver.statuses = [429]
    receiver.extra_headers = {"Retry-After": "1"}
    slept: list[float] = []
    attempts = Attempts()
    WebhookNotifier(settings(receiver.url), on_attempt=attempts, sleep=slept.append).notify(
        make_event()
    )
    assert [(c[1], c[3]) for c in attempts.calls] == [(1, 429), (2, 200)]
    assert slept == [1.0]  # Retry-After beats the 0.01 s backoff


def test_backoff_doubles_with_small_jitter_and_cap(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    slept: list[float] = []
    notifier = WebhookNotifier(
        settings(receiver.url, webhook_backoff_s=1.0, webhook_max_attempts=6),
        sleep=slept.append,
        max_backoff_s=5.0,
    )
    with pytest.raises(DeliveryFailed):
        notifier.notify(make_event())
    assert len(slept) == 5  # no sleep after the last attempt
    for delay, base in zip(slept, [1.0, 2.0, 4.0, 5.0, 5.0], strict=True):
        assert base <= delay <= min(base * 1.1, 5.0)


def test_permanent_400_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    attempts = Attempts()
    with pytest.raises(DeliveryFailed) as err:
        WebhookNotifier(settings(receiver.url, webhook_max_attempts=5), on_attempt=attempts).notify(
            make_event(5)
        )
    assert len(receiver.requests) == 1
    assert (err.value.alert_id, err.value.attempts, err.value.status_code) == (5, 1, 400)
    assert not err.value.retryable
    assert [(c[1], c[2], c[3]) for c in attempts.calls] == [(1, False, 400)]


def test_unreachable_port_fails_after_max_attempts() -> None:
    attempts = Attempts()
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(DeliveryFailed) as err:
        WebhookNotifier(settings(url, webhook_max_attempts=3), on_attempt=attempts).notify(
            make_event()
        )
    assert err.value.attempts == 3 and err.value.status_code is None and err.value.retryable
    assert [c[1] for c in attempts.calls] == [1, 2, 3]
    assert all(c[2] is False and c[3] is None for c in attempts.calls)
    assert all("ConnectionError" in c[4] for c in attempts.calls)


def test_timeout_is_retried(receiver: Receiver) -> None:
    receiver.delays = [1.5]  # first answer comes after the client's timeout
    attempts = Attempts()
    WebhookNotifier(settings(receiver.url, webhook_timeout_s=0.3), on_attempt=attempts).notify(
        make_event()
    )
    assert [(c[1], c[2]) for c in attempts.calls] == [(1, False), (2, True)]
    assert "Timeout" in attempts.calls[0][4]


def test_secret_never_in_errors_records_or_logs(receiver: Receiver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500, 500]
    attempts = Attempts()
    notifier = WebhookNotifier(settings(receiver.url, webhook_max_attempts=2), on_attempt=attempts)
    with pytest.raises(DeliveryFailed) as err_http:
        notifier.notify(make_event())
    unreachable = WebhookNotifier(
        settings(f"http://127.0.0.1:{free_port()}/x", webhook_max_attempts=2), on_attempt=attempts
    )
    with pytest.raises(DeliveryFailed) as err_conn:
        unreachable.notify(make_event())
    assert len(attempts.calls) == 4
    texts = [
        str(err_http.value),
        repr(err_http.value),
        str(err_conn.value),
        repr(notifier),
        repr(unreachable),
        repr(attempts.calls),
        caplog.text,
    ]
    assert caplog.text  # the failures were logged
    for text in texts:
        assert SECRET not in text


def test_url_credentials_and_query_are_redacted() -> None:
    assert redact_url("https://u:pw@example.org:8443/h?token=abc") == "https://example.org:8443/h"
    n = WebhookNotifier(settings("https://u:pw@example.org/h?token=abc"))
    assert "pw" not in repr(n) and "token" not in n.target


@pytest.mark.parametrize(
    ("url", "secret", "needle"),
    [
        (None, SECRET, "WEBHOOK_URL"),
        ("", SECRET, "WEBHOOK_URL"),
        ("http://127.0.0.1:9/x", None, "WEBHOOK_SECRET"),
        ("http://127.0.0.1:9/x", "", "WEBHOOK_SECRET"),
        ("ftp://127.0.0.1/x", SECRET, r"http\(s\) URL"),
    ],
)
def test_missing_url_or_secret_is_a_clear_error(url, secret, needle) -> None:
    s = Settings(webhook_url=url, webhook_secret=secret, notifier="log,webhook")
    with pytest.raises(ValueError, match=needle) as err:
        WebhookNotifier(s)
    assert SECRET not in str(err.value)
    with pytest.raises(ValueError, match=needle):
        make_notifiers(s)


def test_make_notifiers_builds_webhook_with_callback(receiver: Receiver) -> None:
    attempts = Attempts()
    notifiers = make_notifiers(settings(receiver.url, notifier="log, webhook"), attempts)
    assert [type(n) for n in notifiers] == [LogNotifier, WebhookNotifier]
    notifiers[1].notify(make_event())
    assert len(attempts.calls) == 1 and receiver.requests[0].verified


def _alert_with_notification(svc) -> tuple[int, int]:
    from core.pipeline.delivery import open_notifications
    from core.storage.models import Alert, Face, Identity, Upload

    with svc.db.session() as s:
        ident = Identity(name="Zoë Example")
        up = Upload(sha256="0" * 64, original_name="clip.jpg", path="uploads/x.jpg")
        s.add_all([ident, up])
        s.flush()
        face = Face(
            upload_id=up.id, idx=0, box=[1, 2, 3, 4], landmarks=[[0, 0]] * 5, det_score=1.0,
            quality=1.0, chip_path="c", crop_path="c", face_backend="dlib",
        )  # fmt: skip
        s.add(face)
        s.flush()
        alert = Alert(
            face_id=face.id, upload_id=up.id, identity_key=ident.id, identity_id=ident.id,
            identity_name=ident.name, similarity=0.8, fake_score=0.9, decision="fake",
            detector="offline",
        )  # fmt: skip
        s.add(alert)
        s.flush()
        open_notifications(s, svc, alert.id)
        s.flush()
        from core.storage.models import Notification

        return alert.id, s.scalar(select(Notification.id))


def test_delivery_run_retried_later_is_delivered_once(receiver: Receiver, make_services) -> None:
    """A failed run leaves the notification pending with the error; the next run
    delivers it; later runs send nothing (one delivery per (alert, notifier))."""
    from core.pipeline.delivery import deliver
    from core.storage.models import Alert, Delivery, Notification

    receiver.statuses = [500, 500]
    svc = make_services(
        notifier="webhook",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_max_attempts=2,
        webhook_backoff_s=0.01,
    )
    alert_id, nid = _alert_with_notification(svc)
    with pytest.raises(DeliveryFailed):  # both attempts of the run answered 500
        deliver(svc, nid)
    with svc.db.session() as s:
        n = s.get(Notification, nid)
        assert (n.status, n.attempts, n.claimed_at) == ("pending", 1, None)
        assert "HTTP 500" in n.error
        assert s.get(Alert, alert_id).notified_at is None
    assert deliver(svc, nid) == []
    assert deliver(svc, nid) == []  # delivered: not sent again
    with svc.db.session() as s:
        n = s.get(Notification, nid)
        assert (n.status, n.attempts) == ("delivered", 2) and n.delivered_at is not None
        assert s.get(Alert, alert_id).notified_at is not None
        assert [d.ok for d in s.scalars(select(Delivery).order_by(Delivery.id))] == [
            False,
            False,
            True,
        ]
    assert len(receiver.requests) == 3 and all(r.verified for r in receiver.requests)
    assert {r.headers[HEADER_ID] for r in receiver.requests} == {f"alert-{alert_id}-webhook"}


def test_refused_delivery_is_failed_for_good(receiver: Receiver, make_services) -> None:
    from core.pipeline.delivery import deliver
    from core.storage.models import Notification

    receiver.statuses = [410]
    svc = make_services(notifier="webhook", webhook_url=receiver.url, webhook_secret=SECRET)
    _, nid = _alert_with_notification(svc)
    assert deliver(svc, nid) == []  # no exception: nothing to retry
    assert deliver(svc, nid) == []
    with svc.db.session() as s:
        assert s.get(Notification, nid).status == "failed"
    assert len(receiver.requests) == 1
