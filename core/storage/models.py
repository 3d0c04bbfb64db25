"""SQLAlchemy 2 models: identities, reference photos, uploads, faces, matches, alerts,
reviews, review users, notifications, jobs, video segments.

The schema itself is created by the Alembic migrations in ``migrations/``;
these classes must stay in step with them (a test compares the two).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from core.flow import UploadStatus
from core.names import name_key

__all__ = ["UploadStatus"]  # the statuses come from the flow; re-exported for the models


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


# SQLite reuses the largest deleted rowid unless a table is AUTOINCREMENT; ids here key
# vectors, files and alerts, so a reused id would hand one person's data to another.
# (PostgreSQL sequences never go back.)
NO_ID_REUSE = {"sqlite_autoincrement": True}


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("name_key", name="uq_identities_name_key"), NO_ID_REUSE)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # The name as it is matched (core.names.name_key): unique, so "Leonardo Dicaprio"
    # can never become a second identity beside "Leonardo DiCaprio". Set with the name.
    name_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set when erasure starts: from then on the person matches nothing, and a crashed
    # erasure is finished by running it again (the row is deleted last).
    erasing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    references: Mapped[list[ReferencePhoto]] = relationship(
        back_populates="identity", cascade="all, delete-orphan", order_by="ReferencePhoto.id"
    )

    @validates("name")
    def _keep_key(self, _attr: str, value: str) -> str:
        self.name_key = name_key(value)
        return value


class ReferencePhoto(Base):
    __tablename__ = "reference_photos"
    # One row per photo and person: two registrations adding the same photo at once
    # store it once (core.storage.inserts).
    __table_args__ = (
        Index("uq_reference_photos_identity_sha256", "identity_id", "sha256", unique=True),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # stored copy under data_dir/references
    original_name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    box: Mapped[list] = mapped_column(JSON)
    landmarks: Mapped[list] = mapped_column(JSON)
    extra: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    face_backend: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    identity: Mapped[Identity] = relationship(back_populates="references")


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # de-duplication
    source: Mapped[str] = mapped_column(String(40), default="cli")
    original_name: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)  # stored copy under data_dir/uploads
    status: Mapped[str] = mapped_column(String(20), default=UploadStatus.received, index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # rejection code / error
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    n_faces: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # "image" or "video" (decided from the bytes at submission, core.video.intake.sniff_media).
    media_kind: Mapped[str] = mapped_column(String(10), default="image", server_default="image")
    # Videos: what the probe found (core.video.intake.VideoProbe as JSON), its duration,
    # and progress: segments planned by crop, segments cropped and embedded so far.
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    video: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    segments_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    segments_done: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    faces: Mapped[list[Face]] = relationship(
        back_populates="upload", cascade="all, delete-orphan", order_by="Face.idx"
    )


class Face(Base):
    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("upload_id", "idx", name="uq_face_upload_idx"), NO_ID_REUSE)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)  # order within the upload
    box: Mapped[list] = mapped_column(JSON)
    landmarks: Mapped[list] = mapped_column(JSON)  # 5 points
    extra: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # backend extras (68 points)
    det_score: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)  # 0..1: size, sharpness, detector confidence
    chip_path: Mapped[str] = mapped_column(Text)  # aligned chip for the embedder
    crop_path: Mapped[str] = mapped_column(Text)  # loose crop for forensics and reports
    face_backend: Mapped[str] = mapped_column(String(40))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32
    # Videos (null for images): when the face was seen, in which segment, whether that
    # frame starts a new shot, and the track (the same person across frames) it is on.
    frame_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    segment: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scene_cut: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    track_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    upload: Mapped[Upload] = relationship(back_populates="faces")


class Match(Base):
    """A face judged to claim a protected identity, with the forgery verdict."""

    __tablename__ = "matches"
    __table_args__ = (
        UniqueConstraint("face_id", "identity_id", name="uq_match_face_identity"),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), index=True
    )
    similarity: Mapped[float] = mapped_column(Float)
    reference_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # closest reference
    fake_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    is_fake: Mapped[bool | None] = mapped_column(nullable=True)
    detector: Mapped[str | None] = mapped_column(String(40), nullable=True)
    parts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Videos: the track that claims the identity (one match per track and identity, on
    # the track's best-matching face); null for images.
    track_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alert(Base):
    """One per (upload face, identity). Survives identity removal, anonymised."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("face_id", "identity_key", name="uq_alert_face_identity"),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    # identity_key keeps the uniqueness after erasure nulls identity_id.
    identity_key: Mapped[int] = mapped_column(Integer)
    identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identities.id", ondelete="SET NULL"), nullable=True, index=True
    )
    identity_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reference_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    similarity: Mapped[float] = mapped_column(Float)
    fake_score: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(20))  # "fake"
    detector: Mapped[str] = mapped_column(String(40))
    parts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Set once every notifier has taken it (see ``Notification``).
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Videos: the moment (the frame the detector found most fake, ``face_id`` is the
    # face seen then) and the track; null for images.
    frame_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    track_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The latest review (core.review): new, confirmed, dismissed or wrong_person; each
    # change is also kept in ``reviews``.
    review_state: Mapped[str] = mapped_column(
        String(20), default="new", server_default="new", index=True
    )
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class Review(Base):
    """One review decision on an alert (the history; the alert holds the latest)."""

    __tablename__ = "reviews"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    previous: Mapped[str] = mapped_column(String(20))
    reviewer: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewUser(Base):
    """A reviewer of the web pages, added by ``idwatch review user add`` (never the
    password: its argon2 hash)."""

    __tablename__ = "review_users"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotificationStatus(enum.StrEnum):
    """pending -> delivered; or failed (the receiver refused it for good)."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class Notification(Base):
    """One alert for one notifier: the unit the notify stage delivers, exactly once.

    Created with the alert (one per configured notifier). The unique (alert, notifier,
    event) triple keeps a redelivered classify or notify task from sending anything
    twice; ``claimed_at`` keeps two workers from sending it at the same moment.
    ``event`` is ``alert`` (the alert itself) or ``review:<review id>`` (a review
    decision on it, core.review)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint(
            "alert_id", "notifier", "event", name="uq_notification_alert_notifier_event"
        ),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    notifier: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(40), default="alert", server_default="alert")
    status: Mapped[str] = mapped_column(String(20), default=NotificationStatus.pending, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # delivery runs
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Delivery(Base):
    """One notification attempt (webhook delivery log)."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    notifier: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(Text, nullable=True)  # URL, never the secret
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column()
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WatchedFile(Base):
    """A file seen in a watched folder; a file is submitted once per (path, size, mtime)."""

    __tablename__ = "watched_files"
    __table_args__ = (
        UniqueConstraint("root", "relpath", "size", "mtime_ns", name="uq_watched_file_version"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(Text)
    relpath: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    upload_id: Mapped[int | None] = mapped_column(
        ForeignKey("uploads.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobStatus(enum.StrEnum):
    """pending -> running -> done; or failed (kept with the error, retried by the sweeper)."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class Job(Base):
    """A durable unit of identity work (erasure; backfill) with a status row that ends
    terminal. Holds the identity's id only, never its name: an erasure's record must not
    keep what it erased."""

    __tablename__ = "jobs"
    # At most one unfinished job per kind and person: a registration reopens it rather
    # than open a second one (core.pipeline.jobs.open_job).
    __table_args__ = (
        Index(
            "uq_jobs_open_kind_identity",
            "kind",
            "identity_id",
            unique=True,
            sqlite_where=text("status != 'done'"),
            postgresql_where=text("status != 'done'"),
        ),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)  # erasure | backfill
    identity_id: Mapped[int] = mapped_column(Integer, index=True)  # no FK: outlives the row
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.pending, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # counts
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SegmentState(enum.StrEnum):
    """pending -> cropped (faces stored) -> embedded (faces embedded: counted as done)."""

    pending = "pending"
    cropped = "cropped"
    embedded = "embedded"


class VideoSegment(Base):
    """One piece of a video upload, cropped by one ``crop_segment`` task (its id is the
    message). Planned by crop (``core.video.sampling.plan_segments``); the unique
    (upload, idx) pair keeps a redelivered crop from planning twice."""

    __tablename__ = "video_segments"
    __table_args__ = (
        UniqueConstraint("upload_id", "idx", name="uq_video_segment_upload_idx"),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)  # order within the video
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # null: to the end
    max_frames: Mapped[int] = mapped_column(Integer)  # its share of the frame cap
    fps: Mapped[float] = mapped_column(Float)  # interval sampling rate
    state: Mapped[str] = mapped_column(String(20), default=SegmentState.pending)
    faces: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True)  # frames sampled
    cuts: Mapped[list | None] = mapped_column(JSON, nullable=True)  # scene-cut sample times
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
