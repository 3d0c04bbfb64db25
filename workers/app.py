"""The Celery application: one queue per stage of the flow (``core.flow``) over Redis.

Deliberate settings (see README, "Distributed mode"):

- JSON only: tasks, results and events are JSON; a pickled message is refused.
- ``acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after its
  task finished, so a worker killed mid-task leaves it to be delivered again; every
  stage is idempotent, so a second delivery does no harm.
- ``worker_prefetch_multiplier=1``: a model worker holds one message at a time, so a
  slow face never blocks others queued behind it on the same worker.
- task events off unless Flower runs (it switches them on): they cost Redis publishes
  on every task.
- ``task_time_limit`` < ``visibility_timeout``: Redis re-delivers an unacknowledged
  message after the visibility timeout; a task that may still be running must never
  reach it, or it would run twice at once.
- transient errors (database, Redis, Milvus unreachable) are retried with exponential
  backoff (``workers.tasks.FlowTask``); after the last retry the upload is marked
  ``failed`` with the error.

The queues and the queue of every task are read from the flow, never listed here.
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from kombu import Queue

from core.flow import FLOW, NOTIFICATION
from core.services import Services
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUES = FLOW.queues
TASK_MODULES = ["workers.tasks"]


def make_celery(settings: Settings) -> Celery:
    app = Celery("idwatch", broker=settings.broker_url or "memory://", include=TASK_MODULES)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue=FLOW.first.queue,
        task_routes={s.task_name: {"queue": s.queue} for s in FLOW.stages.values()},
        # Task events (several Redis publishes per task) only while someone watches:
        # Flower switches them on in every worker itself (its --enable_events, on by
        # default, re-sent every few seconds), so workers need not send them always.
        worker_send_task_events=False,
        task_send_sent_event=bool(settings.flower_basic_auth),
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery(get_settings())

_services: Services | None = None


def services() -> Services:
    """One Services per worker process, created after fork (never shared across it)."""
    global _services
    if _services is None:
        _services = Services(get_settings())
    return _services


def _needs_models(app: Celery) -> bool:
    """Whether this worker consumes a queue whose stages use the models (every queue but
    notify's); a worker started without -Q consumes them all."""
    consumed = set(app.amqp.queues.consume_from or {}) or set(QUEUES)
    return any(s.subject != NOTIFICATION for q in consumed for s in FLOW.queue_stages(q))


@signals.worker_process_init.connect
def _fresh_services_after_fork(**_) -> None:
    global _services
    _services = None
    if not _needs_models(app):
        return
    # Load the models now rather than on the first task, so the first upload after a
    # (re)start does not wait for them.
    try:
        svc = services()
        svc.face_backend.load()
        svc.detector.load()
    except Exception:  # a missing model shows up again, with its error, on the task
        log.exception("model preload failed")
