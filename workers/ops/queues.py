"""What the broker holds: queue lengths and workers seen (``idwatch status``), and the
subjects whose messages are still on their way (the sweeper's ``in_flight``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from core.flow import FLOW
from core.settings import Settings

# Celery's Redis transport keeps one list per queue and priority step.
_PRIORITY_SEP = "\x06\x16"
_SCAN_CHUNK = 1000


def _queue_keys(q: str) -> list[str]:
    return [q] + [f"{q}{_PRIORITY_SEP}{p}" for p in range(1, 10)]


def queue_lengths(settings: Settings) -> dict[str, int]:
    import redis

    r = redis.Redis.from_url(settings.broker_url, socket_timeout=2)
    return {q: sum(r.llen(k) for k in _queue_keys(q)) for q in FLOW.queues}


def _celery(settings: Settings | None):
    """The worker app, or one for another broker than this process's settings name."""
    from workers.app import app, make_celery

    if settings is None or app.conf.broker_url == settings.broker_url:
        return app
    return make_celery(settings)


def workers_seen(timeout: float = 1.0, settings: Settings | None = None) -> dict[str, list[str]]:
    """Worker name -> queues it consumes, from a broadcast ping."""
    active = _celery(settings).control.inspect(timeout=timeout).active_queues() or {}
    return {name: sorted(q["name"] for q in qs) for name, qs in active.items()}


def _subject(task: str | None, args: object) -> tuple[str, int] | None:
    """(subject kind, id) of a message of one of our tasks (``args=[id]``)."""
    if not task or not task.startswith("idwatch.") or not isinstance(args, list | tuple):
        return None
    try:
        stage = FLOW[task.removeprefix("idwatch.")]
        return stage.subject, int(args[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def queued(settings: Settings) -> set[tuple[str, int]]:
    """(subject kind, id) of every message waiting in a queue of the flow (Redis lists,
    read in chunks; a message is ~1 KB, so 10,000 waiting cost ~10 MB read once)."""
    import redis

    r = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
    out: set[tuple[str, int]] = set()
    for q in FLOW.queues:
        for key in _queue_keys(q):
            n = r.llen(key)
            for start in range(0, n, _SCAN_CHUNK):
                for raw in r.lrange(key, start, start + _SCAN_CHUNK - 1):
                    got = _parse_message(raw)
                    if got is not None:
                        out.add(got)
    return out


def _parse_message(raw: bytes | dict) -> tuple[str, int] | None:
    try:
        msg = json.loads(raw) if isinstance(raw, bytes | str) else raw
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # protocol 2: [args, kwargs, embed]
        return _subject(msg.get("headers", {}).get("task"), args)
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def recently_delivered(settings: Settings, within_s: float) -> set[tuple[str, int]]:
    """(subject kind, id) of messages a worker took less than ``within_s`` ago and has
    not acknowledged (kombu's ``unacked`` hash and its delivery-time index). A worker too
    busy to answer an inspect in time (a loaded machine, models loading) still holds
    these; one killed whole holds them too, until they age past ``within_s``."""
    import time

    import redis

    r = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
    tags = r.zrangebyscore("unacked_index", time.time() - within_s, "+inf")
    out: set[tuple[str, int]] = set()
    for start in range(0, len(tags), _SCAN_CHUNK):
        for raw in r.hmget("unacked", tags[start : start + _SCAN_CHUNK]):
            try:  # [message, exchange, routing key]
                got = _parse_message(json.loads(raw)[0]) if raw else None
            except (ValueError, TypeError, IndexError):
                got = None
            if got is not None:
                out.add(got)
    return out


def held_by_workers(settings: Settings | None = None, timeout: float = 2.0) -> set[tuple[str, int]]:
    """(subject kind, id) of the tasks live workers hold: running, prefetched, or waiting
    for a retry's countdown. A worker that died holds nothing here, although Redis keeps
    its messages (unacknowledged) until the visibility timeout."""
    insp = _celery(settings).control.inspect(timeout=timeout)
    out: set[tuple[str, int]] = set()
    for reply in (insp.active(), insp.reserved()):
        out.update(_from_requests(t for tasks in (reply or {}).values() for t in tasks))
    scheduled = insp.scheduled() or {}
    out.update(_from_requests(e["request"] for tasks in scheduled.values() for e in tasks))
    return out


def _from_requests(requests: Iterable[dict]) -> set[tuple[str, int]]:
    out = set()
    for req in requests:
        got = _subject(req.get("name"), req.get("args"))
        if got is not None:
            out.add(got)
    return out


def in_flight(settings: Settings, grace_s: float) -> dict[str, set[int]]:
    """Ids per subject kind (``core.flow``: upload, segment, notification, job) whose
    message is queued, held by a worker that answers, or taken by a worker less than
    ``grace_s`` ago: the sweeper leaves those alone. Queues are read first, workers
    second: a message moving from one to the other in between is seen in the queue; one
    handed on meanwhile has just touched its row."""
    found = queued(settings)
    found |= recently_delivered(settings, grace_s)
    found |= held_by_workers(settings)
    out: dict[str, set[int]] = {}
    for kind, subject_id in found:
        out.setdefault(kind, set()).add(subject_id)
    return out
