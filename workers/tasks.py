"""Every Celery task, one per stage of the flow (``core.flow``).

A task only loads its id, calls the stage's core function and hands the result on to
the next stage of the flow. What every task needs besides (one ``Services`` per worker
process, which errors are retried and how, what a final failure does to the upload,
job or notification, the cap on runs of one upload) is the base class's, as in
Warehouse's task base: the task bodies stay the work itself.

Messages are JSON holding one id (``args=[17]``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from core.alerts.notify import DeliveryFailed
from core.flow import FLOW, UPLOAD, Stage, fail
from core.pipeline.recovery import note_attempt
from core.settings import get_settings
from workers.app import app, services
from workers.dispatch import CeleryDispatcher

log = logging.getLogger(__name__)

_dispatcher = CeleryDispatcher()


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


class FlowTask(Task):
    """Base of every task: retries transient errors with backoff and records a final
    failure on the stage's subject (``core.flow.fail``). The cap on runs of one upload is
    counted in the task body (``flow_task``), inside these retries."""

    stage: Stage  # set by flow_task()
    autoretry_for = _transient()
    retry_backoff = 2  # 2, 4, 8, 16, 32, 60 s: rides out a database or Milvus restart
    retry_backoff_max = 60
    retry_jitter = False
    max_retries = get_settings().task_max_retries
    acks_late = True

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        subject_id = args[0] if args else kwargs.get("subject_id")
        if isinstance(exc, _broker_errors()):
            # The broker itself is down: neither a retry nor the next stage could be
            # queued. The work stays unfinished and `idwatch sweep` re-dispatches it
            # once the broker is back; failing it here would lose a good upload.
            log.warning("task %s for %s hit a broker outage: %r", self.name, subject_id, exc)
            return
        try:
            fail(
                services(), self.stage, int(subject_id), f"{self.name}: {type(exc).__name__}: {exc}"
            )
        except Exception:  # the database may be what failed; the log keeps the record
            log.exception("could not record the failure of %s %s", self.name, subject_id)


def flow_task(name: str, **options: Any) -> Task:
    """The Celery task of stage ``name``: its queue, core function and next stage come
    from the flow; ``options`` are Celery task options of this stage only."""
    stage = FLOW[name]
    run_stage = stage.function()

    def task(subject_id: int) -> None:
        # Count stage runs per upload: a message that kills its worker every time is
        # redelivered forever (acks_late + reject_on_worker_lost) unless someone stops it.
        # Counted here, inside the retries: a database restarting while it is counted is
        # retried like the stage (the 1,000-upload soak failed 2 uploads when it was not).
        if stage.subject == UPLOAD and not note_attempt(services(), int(subject_id)):
            return
        next_ids = run_stage(services(), subject_id)  # load ids, call the core stage
        _dispatcher.hand_on(stage, next_ids)  # hand on to the flow

    task.__name__ = task.__qualname__ = name
    task.__doc__ = f"{stage.run} on queue {stage.queue!r}, then {stage.then or 'nothing'}."
    return app.task(base=FlowTask, name=stage.task_name, stage=stage, **options)(task)


_settings = get_settings()

crop = flow_task("crop")
crop_segment = flow_task("crop_segment")  # one segment of a video (crop queue)
embed = flow_task("embed")
index = flow_task("index")
classify = flow_task("classify")
# A receiver that is away: Celery's exponential backoff with jitter, then the sweeper.
notify = flow_task(
    "notify",
    autoretry_for=(DeliveryFailed, *_transient()),
    retry_backoff=_settings.notify_backoff_s,
    retry_backoff_max=_settings.notify_backoff_max_s,
    retry_jitter=True,
    max_retries=_settings.notify_max_retries,
)
backfill = flow_task("backfill")
erasure = flow_task("erasure")
