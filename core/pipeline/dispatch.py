"""How work enters the flow: one ``Dispatcher`` interface, two implementations.

Every entry point (``scan``, the HTTP API, the watched folder, registration backfill,
erasure, the sweeper) calls a dispatcher and does not care which one it got:

- ``InlineDispatcher`` (embedded default) runs a stage here and now, then hands its
  output to the next stage of the flow, depth first, until the flow ends;
- ``workers.dispatch.CeleryDispatcher`` sends a small JSON message (one id) to the
  stage's queue; the worker's task runs the stage and hands on the same way.

``make_dispatcher(svc)`` picks one by the ``dispatcher`` setting (``auto``: celery when
a broker is configured). The Celery one is named by its path, so ``core`` never imports
Celery.
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable

from core.flow import FLOW, Split, Stage, UploadStatus, fail
from core.pipeline.status import get_status, mark_failed
from core.registry import Registry
from core.services import Services

log = logging.getLogger(__name__)

DISPATCHERS: Registry[Dispatcher] = Registry(
    "dispatcher",
    {
        "inline": "core.pipeline.dispatch:InlineDispatcher",
        "celery": "workers.dispatch:CeleryDispatcher",
    },
    setting="IDWATCH_DISPATCHER",
)


class Dispatcher(ABC):
    # True when the work is finished by the time ``send`` returns (callers need not wait).
    synchronous: bool = False

    @abstractmethod
    def send(self, stage: Stage, subject_id: int) -> None:
        """Run (or queue) ``stage`` for one id."""

    def hand_on(self, stage: Stage, next_ids: Iterable[int] | Split) -> None:
        """Give what ``stage`` produced to the stage after it in the flow (a ``Split``:
        each part to the stage's ``split`` stage)."""
        if isinstance(next_ids, Split):
            if stage.split is None:
                raise ValueError(f"stage {stage.name} declares no split stage")
            part = FLOW[stage.split]
            for part_id in next_ids.ids:
                self.send(part, part_id)
            return
        nxt = FLOW.after(stage.name)
        if nxt is not None:
            for subject_id in next_ids:
                self.send(nxt, subject_id)

    # The entry points' words for the flow's starts.
    def upload(self, upload_id: int) -> None:
        self.send(FLOW.first, upload_id)

    def backfill(self, job_id: int) -> None:
        self.send(FLOW["backfill"], job_id)

    def erase(self, job_id: int) -> None:
        self.send(FLOW["erasure"], job_id)

    def notify(self, notification_id: int) -> None:
        self.send(FLOW["notify"], notification_id)


class InlineDispatcher(Dispatcher):
    """Runs every stage synchronously in the calling process. A stage that raises is
    recorded on its subject the way a Celery task's last failure is (``core.flow.fail``:
    the upload failed, the job failed, the notification left pending), and the flow
    stops there for that id."""

    synchronous = True

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def send(self, stage: Stage, subject_id: int) -> None:
        try:
            next_ids = stage.function()(self.svc, subject_id)
        except Exception as exc:
            log.warning("%s %s failed: %s: %s", stage.name, subject_id, type(exc).__name__, exc)
            log.debug("%s", traceback.format_exc())
            fail(
                self.svc,
                stage,
                subject_id,
                f"{stage.name}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}",
            )
            return
        self.hand_on(stage, next_ids)

    def upload(self, upload_id: int) -> None:
        super().upload(upload_id)
        status = get_status(self.svc, upload_id)
        if not UploadStatus(status).terminal:  # defensive: no upload may stay half-done
            mark_failed(self.svc, upload_id, f"pipeline stopped at {status}")


def make_dispatcher(svc: Services) -> Dispatcher:
    """The dispatcher the settings ask for; ``auto``: Celery with a broker, else inline."""
    name = svc.settings.dispatcher
    if name == "auto":
        name = "celery" if svc.settings.broker_url else "inline"
    return DISPATCHERS.load(name)(svc)
