"""Notifiers: tell someone that an impersonation was found.

A notifier receives a small JSON-able ``AlertEvent`` (ids, names, scores, never
pixels). ``log`` writes one structured line per alert; ``webhook`` POSTs it,
signed, to a receiver (``core.alerts.webhook``).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class Notifier(ABC):
    name: str = ""

    @abstractmethod
    def notify(self, event: AlertEvent) -> None:
        """Deliver one alert; raise on failure so the caller can retry later."""


class LogNotifier(Notifier):
    name = "log"

    def notify(self, event: AlertEvent) -> None:
        log.warning("ALERT %s", event.to_json())


class MemoryNotifier(Notifier):
    """Keeps events in a list (tests, embedding in other programs)."""

    name = "memory"

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def notify(self, event: AlertEvent) -> None:
        self.events.append(event)


def _webhook(settings: Settings, on_attempt: Callable | None) -> Notifier:
    # Imported here: webhook.py builds on this module (Notifier, AlertEvent).
    from core.alerts.webhook import WebhookNotifier

    return WebhookNotifier(settings, on_attempt=on_attempt)


# name -> factory(settings, on_attempt); on_attempt only matters to notifiers that retry.
_NOTIFIERS: dict[str, Callable[[Settings, Callable | None], Notifier]] = {
    "log": lambda _s, _cb: LogNotifier(),
    "memory": lambda _s, _cb: MemoryNotifier(),
    "webhook": _webhook,
}


def make_notifiers(settings: Settings, on_attempt: Callable | None = None) -> list[Notifier]:
    """Notifiers named in ``settings.notifier`` (comma-separated).

    ``on_attempt(alert_id, attempt_no, ok, status_code, error, seconds)`` is called for
    each delivery attempt of notifiers that make them (webhook): the delivery log.
    """
    out: list[Notifier] = []
    for name in filter(None, (n.strip() for n in settings.notifier.split(","))):
        if name not in _NOTIFIERS:
            raise ValueError(f"unknown notifier {name!r}; choose from {', '.join(_NOTIFIERS)}")
        out.append(_NOTIFIERS[name](settings, on_attempt))
    return out
