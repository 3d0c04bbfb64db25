"""Signed webhook notifier: POST each alert as JSON to a receiver's URL.

Request
    ``POST <webhook_url>`` with the body ``AlertEvent.to_json()`` encoded UTF-8
    (canonical JSON: sorted keys) and these headers:

    ``Content-Type``         ``application/json``
    ``X-Idwatch-Event``      ``alert``
    ``X-Idwatch-Delivery``   ``alert-<alert_id>``: the same on every retry of one alert,
                             so a receiver can drop duplicates (delivery is at-least-once).
    ``X-Idwatch-Timestamp``  unix seconds when this attempt was signed (decimal integer).
    ``X-Idwatch-Signature``  ``sha256=<hex>``: HMAC-SHA256 with the shared secret over
                             ``b"<timestamp>." + body`` (the raw body bytes, as received).

Receiver
    Call ``verify(secret, raw_body, timestamp_header, signature_header)`` before
    parsing the JSON. It compares in constant time and refuses timestamps more than
    ``tolerance_s`` (default 300 s) away from the receiver's clock, so a captured
    request cannot be replayed later. Answer 2xx once the alert is stored; answer
    429 or 5xx to have it retried; any other 4xx (or 3xx: redirects are not followed)
    is treated as final.

Sender
    Connection errors, timeouts, 429 and 5xx are retried with exponential backoff
    (``webhook_backoff_s``, doubling, +0-10 % jitter, capped; a numeric ``Retry-After``
    is honoured up to the cap) up to ``webhook_max_attempts``. Each attempt is signed
    afresh. When every attempt failed, ``DeliveryFailed`` is raised and the alert stays
    undelivered for the next ``notify_pending`` run. The secret is used only to sign;
    it never appears in logs, exception messages or attempt records.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import requests

from core.alerts.notify import AlertEvent, Notifier
from core.settings import Settings

log = logging.getLogger("idwatch.alerts.webhook")

HEADER_EVENT = "X-Idwatch-Event"
HEADER_DELIVERY = "X-Idwatch-Delivery"
HEADER_TIMESTAMP = "X-Idwatch-Timestamp"
HEADER_SIGNATURE = "X-Idwatch-Signature"
SIGNATURE_PREFIX = "sha256="
EVENT_ALERT = "alert"

# on_attempt(alert_id, attempt_no, ok, status_code, error, seconds)
AttemptCallback = Callable[[int, int, bool, int | None, str | None, float], None]

_MAX_ERROR_CHARS = 300


class DeliveryFailed(Exception):
    """Every attempt to deliver one alert failed (or the receiver refused it for good)."""

    def __init__(
        self, alert_id: int, attempts: int, status_code: int | None, error: str | None
    ) -> None:
        self.alert_id = alert_id
        self.attempts = attempts
        self.status_code = status_code
        self.error = error
        super().__init__(
            f"webhook delivery of alert {alert_id} failed after {attempts} attempt(s): {error}"
        )


def _as_bytes(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``"sha256=" + hex(HMAC-SHA256(secret, b"<timestamp>." + body))``."""
    mac = hmac.new(_as_bytes(secret), b"%d." % timestamp + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(
    secret: bytes,
    body: bytes,
    timestamp_header: str,
    signature_header: str,
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """True only if the signature matches and the timestamp is within ``tolerance_s``.

    Malformed or missing headers give False, never an exception, so a receiver can
    answer 401 on any False.
    """
    if not isinstance(body, bytes | bytearray) or not secret:
        return False
    if not isinstance(timestamp_header, str) or not isinstance(signature_header, str):
        return False
    ts_text = timestamp_header.strip()
    # Digits only: int() would also take "+5", " 5", "5_000" or non-ASCII digits.
    if not (ts_text.isascii() and ts_text.isdigit()) or len(ts_text) > 12:
        return False
    timestamp = int(ts_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    sig = signature_header.strip()
    if not sig.startswith(SIGNATURE_PREFIX) or not sig.isascii():
        return False
    expected = sign(secret, timestamp, bytes(body))
    return hmac.compare_digest(expected.encode("ascii"), sig.lower().encode("ascii"))


def redact_url(url: str) -> str:
    """The URL without user:password and query string (tokens often live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class WebhookNotifier(Notifier):
    """POSTs signed alerts to ``settings.webhook_url``; see the module docstring."""

    name = "webhook"

    def __init__(
        self,
        settings: Settings,
        on_attempt: AttemptCallback | None = None,
        *,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = (settings.webhook_url or "").strip()
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        if not url:
            raise ValueError("webhook notifier needs IDWATCH_WEBHOOK_URL (settings.webhook_url)")
        if not secret:
            raise ValueError(
                "webhook notifier needs IDWATCH_WEBHOOK_SECRET (settings.webhook_secret)"
            )
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError(f"webhook_url must be an http(s) URL, got {redact_url(url)!r}")
        if settings.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be at least 1")
        if settings.webhook_timeout_s <= 0 or settings.webhook_backoff_s < 0:
            raise ValueError("webhook_timeout_s must be > 0 and webhook_backoff_s >= 0")
        self.url = url
        self.target = redact_url(url)  # what logs and the delivery log may show
        self._secret = secret.encode("utf-8")
        self.timeout_s = settings.webhook_timeout_s
        self.max_attempts = settings.webhook_max_attempts
        self.backoff_s = settings.webhook_backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_attempt = on_attempt
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookNotifier(target={self.target!r}, max_attempts={self.max_attempts})"

    def headers(self, event: AlertEvent, body: bytes, timestamp: int | None = None) -> dict:
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "Content-Type": "application/json",
            "User-Agent": "idwatch-webhook/1",
            HEADER_EVENT: EVENT_ALERT,
            HEADER_DELIVERY: f"alert-{event.alert_id}",
            HEADER_TIMESTAMP: str(ts),
            HEADER_SIGNATURE: sign(self._secret, ts, body),
        }

    def notify(self, event: AlertEvent) -> None:
        body = event.to_json().encode("utf-8")
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            started = time.monotonic()
            try:
                # Signed just before sending, so a slow retry schedule never sends a stale
                # timestamp. Redirects are not followed: the signature is for this URL.
                resp = requests.post(
                    self.url,
                    data=body,
                    headers=self.headers(event, body),
                    timeout=self.timeout_s,
                    allow_redirects=False,
                )
                status, error = resp.status_code, None
                ok = 200 <= status < 300
                if not ok:
                    error = f"HTTP {status} {resp.reason or ''}".strip()
                    retry_after = _retry_after(resp)
                resp.close()
            except requests.RequestException as exc:
                status, ok = None, False
                error = self._describe(exc)
            seconds = time.monotonic() - started
            self._report(event.alert_id, attempt, ok, status, error, seconds)
            if ok:
                log.info(
                    "webhook alert %s delivered to %s (attempt %d, %.2fs)",
                    event.alert_id,
                    self.target,
                    attempt,
                    seconds,
                )
                return
            retryable = status is None or status == 429 or status >= 500
            log.warning(
                "webhook alert %s to %s attempt %d/%d failed: %s",
                event.alert_id,
                self.target,
                attempt,
                self.max_attempts,
                error,
            )
            if not retryable or attempt == self.max_attempts:
                raise DeliveryFailed(event.alert_id, attempt, status, error)
            self._sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover - loop always returns/raises

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = self.backoff_s * (2 ** (attempt - 1))
        delay = base + random.uniform(0.0, 0.1 * base)  # jitter: spread retries of a batch
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff_s)

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        # The URL is in requests' messages; show only the redacted target.
        text = text.replace(self.url, self.target)
        # Defence in depth: the secret is never sent anywhere it could be echoed, but an
        # error string must not be able to carry it into logs or the delivery table.
        text = text.replace(self._secret.decode("utf-8"), "***")
        return text[:_MAX_ERROR_CHARS]

    def _report(
        self,
        alert_id: int,
        attempt: int,
        ok: bool,
        status: int | None,
        error: str | None,
        seconds: float,
    ) -> None:
        if self.on_attempt is None:
            return
        try:
            self.on_attempt(alert_id, attempt, ok, status, error, round(seconds, 4))
        except Exception:  # a broken delivery log must not turn a delivery into a retry
            log.exception("on_attempt callback failed for alert %s", alert_id)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    return None  # HTTP-date form is rare for webhooks; fall back to our own backoff
