"""Response models of the ingest API (they make its OpenAPI schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field


def _utc(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time stored is UTC.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class UploadAccepted(BaseModel):
    upload_id: int
    status: str = Field(description="Status now; a new upload starts as 'received'.")
    duplicate: bool = Field(description="The same bytes were submitted before; same upload_id.")


class ReviewOut(BaseModel):
    state: str = Field(description="new, confirmed, dismissed or wrong_person.")
    by: str | None = Field(description="The reviewer.")
    at: UtcDatetime | None
    note: str | None


class AlertOut(BaseModel):
    id: int
    upload_id: int
    upload: str = Field(description="The upload's label (client filename or reference).")
    face_id: int
    box: list[float] = Field(description="Face box in the upload: x1, y1, x2, y2 (pixels).")
    identity: str | None = Field(description="Protected identity; null once erased.")
    identity_id: int | None
    similarity: float
    fake_score: float
    decision: str
    detector: str
    quality: float
    reference_id: int | None
    erased: bool
    notified: bool
    created_at: UtcDatetime
    review: ReviewOut
    media_kind: str = Field("image", description="image or video.")
    frame_time_s: float | None = Field(
        None, description="Video: the moment (s from the start) the face was seen; null for images."
    )
    track_id: int | None = Field(None, description="Video: the face's track; null for images.")


class UploadOut(BaseModel):
    upload_id: int
    status: str = Field(description="received, cropped, embedded, indexed; done/rejected/failed.")
    reason: str | None = Field(description="Rejection code and message, or the failure.")
    n_faces: int | None
    original_name: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    alerts: list[AlertOut] = Field(
        description="One page of the upload's alerts (alerts_limit, alerts_offset), oldest first."
    )
    alerts_total: int = Field(0, description="All of the upload's alerts.")
    media_kind: str = Field("image", description="image or video (told from the bytes).")
    duration_s: float | None = Field(None, description="Video: its duration in seconds.")
    segments_done: int | None = Field(
        None, description="Video: segments analysed so far (progress); null for images."
    )
    segments_total: int | None = Field(None, description="Video: segments planned.")


class Health(BaseModel):
    ok: bool


class ErrorOut(BaseModel):
    detail: str


ERRORS = {
    401: {"model": ErrorOut, "description": "Missing or wrong X-API-Key."},
}
