"""Upload status transitions. Every upload ends in done, rejected or failed.

The order of the statuses is the flow's (``core.flow``): received, then what each stage
reaches.
"""

from __future__ import annotations

from core.flow import FLOW
from core.services import Services
from core.storage.models import Upload, UploadStatus

ORDER = [UploadStatus(s) for s in FLOW.order]
NON_TERMINAL = [UploadStatus(s) for s in FLOW.non_terminal]


def load_upload(svc: Services, upload_id: int) -> Upload:
    """The upload row, detached (a stage reads it, then writes in its own transaction)."""
    with svc.db.session() as s:
        up = s.get(Upload, upload_id)
        if up is None:
            raise LookupError(f"upload {upload_id} does not exist")
        s.expunge(up)
        return up


def get_status(svc: Services, upload_id: int) -> str:
    with svc.db.session() as s:
        up = s.get(Upload, upload_id)
        if up is None:
            raise LookupError(f"upload {upload_id} does not exist")
        return up.status


def is_terminal(status: str) -> bool:
    return UploadStatus(status).terminal


def reached(status: str, stage_status: str) -> bool:
    """True if an upload in ``status`` has already passed ``stage_status``."""
    if status in (UploadStatus.rejected, UploadStatus.failed):
        return True
    return ORDER.index(UploadStatus(status)) >= ORDER.index(UploadStatus(stage_status))


def mark_rejected(svc: Services, upload_id: int, reason: str) -> None:
    _finish(svc, upload_id, UploadStatus.rejected, reason)


def mark_failed(svc: Services, upload_id: int, error: str) -> None:
    _finish(svc, upload_id, UploadStatus.failed, error[:4000])


def _finish(svc: Services, upload_id: int, status: UploadStatus, reason: str) -> None:
    with svc.db.session() as s:
        up = s.get(Upload, upload_id)
        if up is not None and not UploadStatus(up.status).terminal:
            up.status = status
            up.reason = reason
