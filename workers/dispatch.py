"""Choose how uploads are run: Celery queues when a broker is configured, else inline."""

from __future__ import annotations

from core.pipeline.dispatch import Dispatcher, InlineDispatcher
from core.services import Services


class CeleryDispatcher:
    """Sends ``{"upload_id": N}``-sized JSON messages; workers do the rest."""

    def upload(self, upload_id: int) -> None:
        from workers.crop import crop

        crop.delay(upload_id)

    def backfill(self, identity_id: int) -> None:
        from workers.classify import backfill

        backfill.delay(identity_id)


def make_dispatcher(svc: Services) -> Dispatcher:
    return CeleryDispatcher() if svc.settings.broker_url else InlineDispatcher(svc)
