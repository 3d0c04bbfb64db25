"""Queue ``index``: add faces to the face index, match them to protected identities."""

from __future__ import annotations

from core.pipeline import stages
from workers.app import StageTask, app, services


@app.task(base=StageTask, name="idwatch.index")
def index(upload_id: int) -> None:
    if stages.index(services(), upload_id).proceed:
        from workers.classify import classify

        classify.delay(upload_id)
