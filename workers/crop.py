"""Queue ``crop``: decode the upload, detect faces, store chips and crops."""

from __future__ import annotations

from core.pipeline import stages
from workers.app import StageTask, app, services


@app.task(base=StageTask, name="idwatch.crop")
def crop(upload_id: int) -> None:
    if stages.crop(services(), upload_id).proceed:
        from workers.embed import embed

        embed.delay(upload_id)
