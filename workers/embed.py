"""Queue ``embed``: identity embeddings, batched across uploads.

A task embeds its own upload together with other uploads already waiting in
status ``cropped`` (up to ``embed_batch_size``), so a backlog is embedded in batches
(one model call for many chips) without adding latency when the queue is idle. The
other uploads' own embed messages then find them embedded and only pass them on.
"""

from __future__ import annotations

from sqlalchemy import select

from core.pipeline import stages
from core.storage.models import Upload, UploadStatus
from workers.app import StageTask, app, services


def _batch(upload_id: int) -> list[int]:
    svc = services()
    with svc.db.session() as s:
        others = s.scalars(
            select(Upload.id)
            .where(Upload.status == UploadStatus.cropped, Upload.id != upload_id)
            .order_by(Upload.id)
            .limit(max(0, svc.settings.embed_batch_size - 1))
        )
        return [upload_id, *others]


@app.task(base=StageTask, name="idwatch.embed")
def embed(upload_id: int) -> None:
    from workers.index import index

    for r in stages.embed(services(), _batch(upload_id)):
        if r.proceed:
            index.delay(r.upload_id)
