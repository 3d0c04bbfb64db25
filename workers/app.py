"""The Celery application: four queues (crop, embed, index, classify) over Redis.

Deliberate settings (see README, "Distributed mode"):

- JSON only: tasks, results and events are JSON; a pickled message is refused.
- ``acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after its
  task finished, so a worker killed mid-task leaves it to be delivered again; every
  stage is idempotent, so a second delivery does no harm.
- ``worker_prefetch_multiplier=1``: a model worker holds one message at a time, so a
  slow face never blocks others queued behind it on the same worker.
- ``task_time_limit`` < ``visibility_timeout``: Redis re-delivers an unacknowledged
  message after the visibility timeout; a task that may still be running must never
  reach it, or it would run twice at once.
- transient errors (database, Redis, Milvus unreachable) are retried with exponential
  backoff; after the last retry the upload is marked ``failed`` with the error.
"""

from __future__ import annotations

import logging

from celery import Celery, Task, signals
from kombu import Queue

from core.services import Services
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUES = ("crop", "embed", "index", "classify")
TASK_MODULES = ["workers.crop", "workers.embed", "workers.index", "workers.classify"]


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
        task_default_queue="crop",
        task_routes={f"idwatch.{q}": {"queue": q} for q in QUEUES}
        | {"idwatch.backfill": {"queue": "classify"}},
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
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


@signals.worker_process_init.connect
def _fresh_services_after_fork(**_) -> None:
    global _services
    _services = None
    # Load the models now rather than on the first task, so the first upload after a
    # (re)start does not wait for them.
    try:
        svc = services()
        svc.face_backend.load()
        svc.detector.load()
    except Exception:  # a missing model shows up again, with its error, on the task
        log.exception("model preload failed")


def _transient() -> tuple[type[BaseException], ...]:
    import redis.exceptions
    import sqlalchemy.exc
    from pymilvus.exceptions import MilvusException

    return (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        MilvusException,
        ConnectionError,
        TimeoutError,
    )


def _broker_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis.exceptions

    return (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError)


class StageTask(Task):
    """Base of every pipeline task: retries transient errors with backoff and, when a
    task finally fails, records the error on the upload (terminal ``failed``)."""

    autoretry_for = _transient()
    retry_backoff = 2  # 2, 4, 8, 16, 32, 60 s: rides out a database or Milvus restart
    retry_backoff_max = 60
    retry_jitter = False
    max_retries = get_settings().task_max_retries
    acks_late = True

    def __call__(self, *args, **kwargs):
        # Count stage runs per upload: a message that kills its worker every time is
        # redelivered forever (acks_late + reject_on_worker_lost) unless someone stops it.
        upload_id = args[0] if args else kwargs.get("upload_id")
        if self.name != "idwatch.backfill" and upload_id is not None:
            from core.pipeline.recovery import note_attempt

            if not note_attempt(services(), int(upload_id)):
                return None
        return super().__call__(*args, **kwargs)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        upload_id = args[0] if args else kwargs.get("upload_id")
        if isinstance(exc, _broker_errors()):
            # The broker itself is down: neither a retry nor the next stage could be
            # queued. The upload stays non-terminal and `idwatch sweep` re-dispatches it
            # once the broker is back; failing it here would lose a good upload.
            log.warning("task %s for %s hit a broker outage: %r", self.name, upload_id, exc)
            return
        if self.name == "idwatch.backfill" or upload_id is None:
            log.error("task %s failed: %r", self.name, exc)
            return
        from core.pipeline.status import mark_failed

        try:
            mark_failed(services(), int(upload_id), f"{self.name}: {type(exc).__name__}: {exc}")
        except Exception:  # the database may be what failed; the log keeps the record
            log.exception("could not mark upload %s failed", upload_id)
