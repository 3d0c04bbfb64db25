"""Queue lengths (Redis) and workers seen (Celery ping) for `idwatch status`."""

from __future__ import annotations

from core.flow import FLOW
from core.settings import Settings

# Celery's Redis transport keeps one list per queue and priority step.
_PRIORITY_SEP = "\x06\x16"


def queue_lengths(settings: Settings) -> dict[str, int]:
    import redis

    r = redis.Redis.from_url(settings.broker_url, socket_timeout=2)
    out = {}
    for q in FLOW.queues:
        keys = [q] + [f"{q}{_PRIORITY_SEP}{p}" for p in range(1, 10)]
        out[q] = sum(r.llen(k) for k in keys)
    return out


def workers_seen(timeout: float = 1.0) -> dict[str, list[str]]:
    """Worker name -> queues it consumes, from a broadcast ping."""
    from workers.app import app

    active = app.control.inspect(timeout=timeout).active_queues() or {}
    return {name: sorted(q["name"] for q in qs) for name, qs in active.items()}
