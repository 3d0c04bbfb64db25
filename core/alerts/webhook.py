"""Signed webhook notifier: POST each alert as JSON to a receiver's URL.

Signed the Standard Webhooks way (standardwebhooks.com), so a receiver in any language
verifies with that project's library instead of reading this code.

Request
    ``POST <webhook_url>`` with the body ``AlertEvent.to_json()`` encoded UTF-8
    (canonical JSON: sorted keys) and these headers:

    ``Content-Type``         ``application/json``
    ``webhook-id``           ``alert-<alert_id>-webhook`` (``review-<review_id>-webhook``
                             for a review event): the same for every attempt of one
                             (event, notifier), so a receiver drops duplicates (delivery
                             is at-least-once). The body's ``type`` says which it is.
    ``webhook-timestamp``    unix seconds when this attempt was signed.
    ``webhook-signature``    ``v1,<base64 HMAC-SHA256>`` over ``"<id>.<timestamp>.<body>"``
                             with the shared secret's key.

Secret
    ``IDWATCH_WEBHOOK_SECRET``: ``whsec_<base64 key>`` as the standard writes secrets
    (receivers pass it to ``Webhook(secret)`` as it is), or any other text, whose UTF-8
    bytes are the key (receivers pass ``Webhook(secret.encode())``).

Receiver
    ``standardwebhooks.Webhook(secret).verify(raw_body, headers)`` before parsing; it
    compares in constant time and refuses timestamps more than 5 minutes away (replay).
    Answer 2xx once the alert is stored; 429 or 5xx to have it retried; any other 4xx
    (or 3xx: redirects are not followed) is final.

Sender
    Connection errors, timeouts, 429 and 5xx are retried within one delivery run with
    exponential backoff (``webhook_backoff_s``, doubling, +0-10 % jitter, capped; a numeric
    ``Retry-After`` is honoured up to the cap) up to ``webhook_max_attempts``; each attempt
    is signed afresh. A run that still fails raises ``DeliveryFailed`` (``retryable``),
    and the notify stage runs it again later. The secret is used only to sign; it never
    appears in logs, exception messages or attempt records.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import requests
from standardwebhooks import Webhook

from core.alerts.notify import AttemptCallback, DeliveryFailed, Event, Notifier
from core.settings import Settings

log = logging.getLogger("idwatch.alerts.webhook")

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"

_MAX_ERROR_CHARS = 300

__all__ = ["DeliveryFailed", "WebhookNotifier", "message_id", "secret_key", "redact_url"]


def secret_key(secret: str) -> bytes:
    """The HMAC key of a configured secret: a ``whsec_`` secret's base64 payload decoded
    (strictly: a typo must not silently become another key), else the text's UTF-8."""
    if secret.startswith(SECRET_PREFIX):
        payload = secret[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except binascii.Error as exc:
            raise ValueError("IDWATCH_WEBHOOK_SECRET: whsec_ secret is not base64") from exc
        if not key:
            raise ValueError("IDWATCH_WEBHOOK_SECRET: empty whsec_ secret")
        return key
    return secret.encode("utf-8")


def message_id(alert_id: int, notifier: str = "webhook") -> str:
    """``webhook-id`` of one (alert, notifier): stable across attempts and runs."""
    return f"alert-{alert_id}-{notifier}"


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

    @classmethod
    def from_settings(
        cls, settings: Settings, on_attempt: AttemptCallback | None
    ) -> WebhookNotifier:
        return cls(settings, on_attempt)

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
        self._secret = secret
        self._signer = Webhook(secret_key(secret))
        self.timeout_s = settings.webhook_timeout_s
        self.max_attempts = settings.webhook_max_attempts
        self.backoff_s = settings.webhook_backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_attempt = on_attempt
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookNotifier(target={self.target!r}, max_attempts={self.max_attempts})"

    def headers(self, event: Event, body: bytes, timestamp: int | None = None) -> dict:
        ts = int(time.time()) if timestamp is None else timestamp
        msg_id = f"{event.key}-{self.name}"  # alerts: message_id(alert_id, name)
        return {
            "Content-Type": "application/json",
            "User-Agent": "idwatch-webhook/2",
            HEADER_ID: msg_id,
            HEADER_TIMESTAMP: str(ts),
            HEADER_SIGNATURE: self._signer.sign(
                msg_id, datetime.fromtimestamp(ts, UTC), body.decode("utf-8")
            ),
        }

    def notify(self, event: Event) -> None:
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
                raise DeliveryFailed(event.alert_id, attempt, status, error, retryable)
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
        text = text.replace(self._secret, "***")
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
