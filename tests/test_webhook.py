"""Signed webhook notifier against a real HTTP receiver on 127.0.0.1 (no mocks of requests)."""

from __future__ import annotations

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

from core.alerts.notify import AlertEvent, LogNotifier, make_notifiers
from core.alerts.webhook import (
    HEADER_DELIVERY,
    HEADER_EVENT,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    DeliveryFailed,
    WebhookNotifier,
    redact_url,
    sign,
    verify,
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
            ok = verify(
                SECRET.encode(),
                body,
                self.headers.get(HEADER_TIMESTAMP, ""),
                self.headers.get(HEADER_SIGNATURE, ""),
            )
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


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = make_event().to_json().encode()
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET.encode(), 1700000000, body) == "sha256=" + expected
    assert sign(SECRET.encode(), 1700000001, body) != sign(SECRET.encode(), 1700000000, body)


def test_verify_window_and_replay() -> None:
    body, ts = b'{"a": 1}', 1_800_000_000
    sig = sign(SECRET.encode(), ts, body)
    assert verify(SECRET.encode(), body, str(ts), sig, now=ts)
    assert verify(SECRET.encode(), body, str(ts), sig, now=ts + 299)
    assert not verify(SECRET.encode(), body, str(ts), sig, now=ts + 301)  # replayed later
    assert not verify(SECRET.encode(), body, str(ts), sig, now=ts - 301)  # from the future
    assert verify(SECRET.encode(), body, str(ts), sig, tolerance_s=1000, now=ts + 900)
    # An old request re-sent with a fresh timestamp header no longer matches its signature.
    assert not verify(SECRET.encode(), body, str(ts + 400), sig, now=ts + 400)


@pytest.mark.parametrize(
    ("ts", "sig"),
    [
        ("", "VALID"),
        ("abc", "VALID"),
        ("+TS", "VALID"),
        ("TS.0", "VALID"),
        ("TS", ""),
        ("TS", "sha1=HEX"),
        ("TS", "HEX"),  # prefix missing
        ("TS", "sha256="),
        ("TS", "sha256=zz"),
        ("TS", "sha256=HEXé"),
        ("TS", None),
        (None, "VALID"),
    ],
)
def test_verify_malformed_headers_are_false(ts, sig) -> None:
    body, now = b"{}", int(time.time())
    valid = sign(SECRET.encode(), now, body)
    ts_h = ts.replace("TS", str(now)) if isinstance(ts, str) else ts
    sig_h = sig.replace("VALID", valid).replace("HEX", valid[7:]) if isinstance(sig, str) else sig
    assert verify(SECRET.encode(), body, ts_h, sig_h) is False
    assert verify(SECRET.encode(), body, str(now), valid) is True  # the control case


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
    assert got.headers[HEADER_EVENT] == "alert"
    assert got.headers[HEADER_DELIVERY] == f"alert-{event.alert_id}"
    assert abs(int(got.headers[HEADER_TIMESTAMP]) - time.time()) < 5
    assert len(attempts.calls) == 1
    alert_id, n, ok, status, error, seconds = attempts.calls[0]
    assert (alert_id, n, ok, status, error) == (event.alert_id, 1, True, 200, None)
    assert 0 <= seconds < 2


def test_receiver_rejects_wrong_secret_and_tampered_body(receiver: Receiver) -> None:
    WebhookNotifier(settings(receiver.url)).notify(make_event())
    got = receiver.requests[0]
    ts, sig = got.headers[HEADER_TIMESTAMP], got.headers[HEADER_SIGNATURE]
    assert verify(SECRET.encode(), got.body, ts, sig)
    assert not verify(b"another-secret", got.body, ts, sig)
    tampered = got.body.replace(b'"fake_score": 0.9731', b'"fake_score": 0.1')
    assert tampered != got.body
    assert not verify(SECRET.encode(), tampered, ts, sig)
    assert not verify(SECRET.encode(), got.body + b" ", ts, sig)


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
    assert {r.headers[HEADER_DELIVERY] for r in receiver.requests} == {"alert-42"}
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
    assert [(c[1], c[2], c[3]) for c in attempts.calls] == [(1, False, 400)]


def test_unreachable_port_fails_after_max_attempts() -> None:
    attempts = Attempts()
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(DeliveryFailed) as err:
        WebhookNotifier(settings(url, webhook_max_attempts=3), on_attempt=attempts).notify(
            make_event()
        )
    assert err.value.attempts == 3 and err.value.status_code is None
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


def test_notify_pending_retries_later_until_delivered(receiver: Receiver, make_services) -> None:
    """DeliveryFailed leaves the alert undelivered; the next run delivers it once."""
    from core.pipeline.verdicts import notify_pending
    from core.storage.models import Alert, Face, Identity, Upload

    receiver.statuses = [500, 500]
    svc = make_services(
        notifier="webhook",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_max_attempts=2,
        webhook_backoff_s=0.01,
    )
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
        s.add(
            Alert(
                face_id=face.id, upload_id=up.id, identity_key=ident.id, identity_id=ident.id,
                identity_name=ident.name, similarity=0.8, fake_score=0.9, decision="fake",
                detector="offline",
            )
        )  # fmt: skip

    assert notify_pending(svc) == 0  # both attempts answered 500
    with svc.db.session() as s:
        alert = s.query(Alert).one()
        assert alert.notified_at is None
    assert notify_pending(svc) == 1
    assert notify_pending(svc) == 0  # delivered alerts are not sent again
    assert len(receiver.requests) == 3 and all(r.verified for r in receiver.requests)
    assert {r.headers[HEADER_DELIVERY] for r in receiver.requests} == {f"alert-{alert.id}"}
