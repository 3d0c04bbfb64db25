"""Notifiers: tell someone that an impersonation was found.

A notifier receives a small JSON-able event (ids, names, scores, never pixels): an
``AlertEvent`` (``"type": "alert"``) or a ``ReviewEvent`` (``"type": "review"``, a
reviewer confirmed an alert). ``log`` writes one structured line per alert; ``webhook`` POSTs it,
signed, to a receiver (``core.alerts.webhook``). Notifiers are chosen by name
(``IDWATCH_NOTIFIER``) from ``NOTIFIERS``; the notify stage
(``core.pipeline.delivery``) calls one notifier per (alert, notifier) row.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

from core.registry import Registry
from core.settings import Settings

log = logging.getLogger("idwatch.alerts")


@dataclass(frozen=True)
class AlertEvent:
    alert_id: int
    upload_id: int
    face_id: int
    identity_id: int | None
    identity_name: str | None
    similarity: float
    fake_score: float
    decision: str
    detector: str
    upload_name: str
    box: list[float]
    created_at: str
    type: str = "alert"

    # Videos: the moment (seconds from the start) and the track; null for images.
    frame_time_s: float | None = None
    track_id: int | None = None

    @property
    def key(self) -> str:
        """Names this event across delivery attempts (the webhook-id before the notifier)."""
        return f"alert-{self.alert_id}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ReviewEvent:
    """A reviewer's decision on an alert (core.review), sent when it enters one of the
    ``review_notify_states`` (default: confirmed, i.e. a fake to take down)."""

    review_id: int
    alert_id: int
    upload_id: int
    face_id: int
    identity_id: int | None
    identity_name: str | None
    state: str
    previous: str
    reviewer: str
    note: str | None
    reviewed_at: str
    similarity: float
    fake_score: float
    upload_name: str
    box: list[float]
    alert_created_at: str
    type: str = "review"

    @property
    def key(self) -> str:
        return f"review-{self.review_id}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


Event = AlertEvent | ReviewEvent


class DeliveryFailed(Exception):
    """Delivering one alert failed. ``retryable``: worth trying again later (the receiver
    was unreachable, timed out, or answered 429/5xx); False: it refused for good."""

    def __init__(
        self,
        alert_id: int,
        attempts: int,
        status_code: int | None,
        error: str | None,
        retryable: bool = True,
    ) -> None:
        self.alert_id = alert_id
        self.attempts = attempts
        self.status_code = status_code
        self.error = error
        self.retryable = retryable
        super().__init__(
            f"delivery of alert {alert_id} failed after {attempts} attempt(s): {error}"
        )


# on_attempt(alert_id, attempt_no, ok, status_code, error, seconds): the delivery log.
AttemptCallback = Callable[[int, int, bool, int | None, str | None, float], None]


class Notifier(ABC):
    name: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, on_attempt: AttemptCallback | None) -> Notifier:
        return cls()

    @abstractmethod
    def notify(self, event: Event) -> None:
        """Deliver one event (an alert, or a review of one); raise (``DeliveryFailed``
        when the cause is known) on failure so the notify stage can try again later."""


class LogNotifier(Notifier):
    name = "log"

    def notify(self, event: Event) -> None:
        log.warning("%s %s", event.type.upper(), event.to_json())


class MemoryNotifier(Notifier):
    """Keeps events in a list (tests, embedding in other programs)."""

    name = "memory"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)


NOTIFIERS: Registry[Notifier] = Registry(
    "notifier",
    {
        "log": "core.alerts.notify:LogNotifier",
        "memory": "core.alerts.notify:MemoryNotifier",
        "webhook": "core.alerts.webhook:WebhookNotifier",
    },
    setting="IDWATCH_NOTIFIER",
)


def notifier_names(settings: Settings) -> list[str]:
    """The notifiers named in ``settings.notifier`` (comma-separated), checked."""
    names = [n.strip() for n in settings.notifier.split(",") if n.strip()]
    return [NOTIFIERS.check(n) for n in dict.fromkeys(names)]


def make_notifiers(settings: Settings, on_attempt: AttemptCallback | None = None) -> list[Notifier]:
    """Notifiers named in ``settings.notifier``, built from the settings.

    ``on_attempt(alert_id, attempt_no, ok, status_code, error, seconds)`` is called for
    each delivery attempt of notifiers that make them (webhook): the delivery log.
    """
    return [NOTIFIERS.load(n).from_settings(settings, on_attempt) for n in notifier_names(settings)]
