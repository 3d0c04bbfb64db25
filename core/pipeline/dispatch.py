"""How submitted work gets run: in this process, or on the Celery queues.

Upload sources (CLI scan, watched folder, HTTP API, registration backfill) call a
``Dispatcher`` and do not care which. ``InlineDispatcher`` (embedded default) runs the
stages here and now; ``workers.dispatch.CeleryDispatcher`` sends small JSON messages
(ids only) to the queues. ``workers.dispatch.make_dispatcher(svc)`` picks by settings.
"""

from __future__ import annotations

from typing import Protocol

from core.services import Services


class Dispatcher(Protocol):
    def upload(self, upload_id: int) -> None:
        """Run (or enqueue) the pipeline for a submitted upload."""

    def backfill(self, identity_id: int) -> None:
        """Run (or enqueue) the backfill scan for a newly registered identity."""


class InlineDispatcher:
    """Runs everything synchronously in the calling process."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def upload(self, upload_id: int) -> None:
        from core.pipeline.runner import run_upload

        run_upload(self.svc, upload_id)

    def backfill(self, identity_id: int) -> None:
        from core.pipeline.identities import backfill

        backfill(self.svc, identity_id)
