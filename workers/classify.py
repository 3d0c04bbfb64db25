"""Queue ``classify``: forgery verdicts, alerts, notifications; registration backfill."""

from __future__ import annotations

from core.pipeline import stages
from core.pipeline.identities import backfill as backfill_identity
from workers.app import StageTask, app, services


@app.task(base=StageTask, name="idwatch.classify")
def classify(upload_id: int) -> None:
    stages.classify(services(), upload_id)


@app.task(base=StageTask, name="idwatch.backfill")
def backfill(identity_id: int) -> None:
    backfill_identity(services(), identity_id)
