"""The Celery dispatcher: each stage of the flow is a message on the stage's queue.

Registered by name in ``core.pipeline.dispatch.DISPATCHERS`` ("celery") and chosen by
``make_dispatcher`` when a broker is configured; ``core`` never imports this module.
"""

from __future__ import annotations

from core.flow import Stage
from core.pipeline.dispatch import Dispatcher
from core.services import Services


class CeleryDispatcher(Dispatcher):
    """Sends ``{"args": [id]}``-sized JSON messages to the stage's queue; workers do the
    rest and hand on from there."""

    def __init__(self, svc: Services | None = None) -> None:
        self.svc = svc

    def send(self, stage: Stage, subject_id: int) -> None:
        from workers.app import app  # the Celery app is built on first use, not on import

        app.send_task(stage.task_name, args=[int(subject_id)], queue=stage.queue)
