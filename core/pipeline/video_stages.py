"""The video side of the four stages (the plan is in ``core/video/__init__.py``).

A video upload takes the same stages on the same queues as an image; only what
happens inside differs. Each stage module calls in here when ``Upload.media_kind`` is
"video" (this module imports none of them: the matcher and the writes stay theirs).

crop
    ``plan``: probe under the video limits (``Rejected`` -> ``rejected`` with the
    video code), keep the probe on the upload, plan segments (``video_segments`` rows,
    ``segments_total``) and return a ``Split``: one ``crop_segment`` message per
    segment not yet done. Run again (redelivery, sweeper) it plans nothing new and
    re-sends only the unfinished segments.
    ``crop_segment``: sample the segment's frames, detect and align faces, store chips
    and loose crops, write face rows with ``frame_time_s``, ``segment``, ``scene_cut``
    -- at most a segment's share of the frame cap per task, so no task holds a worker
    for minutes. Idempotent per segment: it writes only while the segment is pending
    (row locked), replacing any faces a dead attempt left. Then embed.
embed
    ``segments_to_count`` / ``count_embedded``: the embed stage embeds a video's faces
    with everything else in its batch, then counts the segments whose faces it saw as
    done (``segments_done``, under the upload row's lock); the run that completes the
    last segment moves the video to ``embedded`` and hands it on to index, once.
    The video skips the status ``cropped``: its segments are cropped and embedded
    interleaved, so ``segments_done / segments_total`` is its progress.
index
    ``track_upload``: every face by time -> ``track_faces`` over the whole video (tracks
    cross segment borders) -> ``track_id`` on each face; the index stage then decides
    one identity claim per track (``tracking.track_identity``) and writes one match per
    (track, identity) on the track's best face.
classify
    ``score_match``: the track's frames (``frames_to_score``, re-read with
    ``frames_at``), scored and aggregated (``score_track``, the 0.8 quantile, with
    ``temporal_*`` parts); the verdict names the worst moment and the face seen then.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.flow import Split
from core.forensics.base import ReferenceView
from core.pipeline.face_rows import face_row, keep_faces
from core.pipeline.status import mark_failed, mark_rejected, reached
from core.services import Services
from core.storage.models import Face, Upload, UploadStatus, VideoSegment
from core.video.intake import VideoLimits, VideoProbe, probe_video
from core.video.sampling import Segment, frames_at, plan_segments, sample_segment
from core.video.tracking import (
    FaceObservation,
    FrameFaces,
    Matcher,
    Track,
    TrackClaim,
    frames_to_score,
    score_track,
    track_faces,
    track_identity,
)

log = logging.getLogger(__name__)

VIDEO = "video"
# Face rows of segment k get idx k * stride + n: unique in the upload, and fixed per
# segment, so a segment cropped again rewrites the same rows and files.
SEGMENT_IDX_STRIDE = 1_000_000
# Runs of one segment before its upload is failed (a segment that kills its worker).
MAX_SEGMENT_RUNS = 6
# Frames of a track the forgery detector sees (spread in time, best match included).
FRAMES_TO_SCORE = 8
_PROBE_FIELDS = {f.name for f in dataclasses.fields(VideoProbe)}


def is_video(up: Upload) -> bool:
    return up.media_kind == VIDEO


def limits_for(svc: Services, up: Upload | None = None) -> VideoLimits:
    """The video limits; for a planned upload, with the analysis size it was cropped at
    (face boxes are in those pixels, and classify and reports re-read frames in them)."""
    limits = VideoLimits.from_settings(svc.settings)
    side = (up.video or {}).get("analysis_max_side") if up is not None else None
    return dataclasses.replace(limits, max_side=int(side)) if side else limits


def probe_of(up: Upload) -> VideoProbe:
    return VideoProbe(**{k: v for k, v in (up.video or {}).items() if k in _PROBE_FIELDS})


# -- crop: plan ------------------------------------------------------------------------
def plan(svc: Services, up: Upload) -> list[int] | Split:
    """The crop stage of a video: probe and plan once, then split into segments."""
    if UploadStatus(up.status).terminal:
        return []
    if reached(up.status, UploadStatus.embedded):
        # Every segment is done, yet the video is here again: the sweeper found it
        # stuck after embed (a lost message). Only the embed run that counts a segment
        # hands a video on (late runs of other segments must not), so give that run a
        # segment to count: the last one, opened again.
        _reopen_last_segment(svc, up.id)
        return [up.id]
    if up.segments_total is None:
        limits = limits_for(svc)
        try:
            probe = probe_video(svc.files.abs(up.path), limits)
        except Rejected as rej:
            mark_rejected(svc, up.id, str(rej))
            return []
        segments = plan_segments(probe, limits)
        _store_plan(svc, up.id, probe, limits, segments)
    with svc.db.session() as s:
        row = s.get(Upload, up.id)
        if row is None or UploadStatus(row.status).terminal:
            return []
        todo = list(
            s.scalars(
                select(VideoSegment.id)
                .where(VideoSegment.upload_id == up.id, VideoSegment.state != "embedded")
                .order_by(VideoSegment.idx)
            )
        )
    return Split(tuple(todo)) if todo else [up.id]


def _reopen_last_segment(svc: Services, upload_id: int) -> None:
    with svc.db.session() as s:
        last = s.scalar(
            select(VideoSegment)
            .where(VideoSegment.upload_id == upload_id, VideoSegment.state == "embedded")
            .order_by(VideoSegment.idx.desc())
            .limit(1)
            .with_for_update()
        )
        if last is not None:
            last.state = "cropped"
            s.execute(
                update(Upload)
                .where(Upload.id == upload_id)
                .values(segments_done=func.coalesce(Upload.segments_done, 1) - 1)
            )


def _store_plan(
    svc: Services, upload_id: int, probe: VideoProbe, limits: VideoLimits, segments: list[Segment]
) -> None:
    try:
        with svc.db.session() as s:
            row = s.get(Upload, upload_id)
            if row is None or row.segments_total is not None:
                return
            row.video = {**dataclasses.asdict(probe), "analysis_max_side": limits.max_side}
            row.duration_s = probe.duration_s
            row.width, row.height, row.file_format = probe.width, probe.height, probe.container
            row.segments_total, row.segments_done = len(segments), 0
            for seg in segments:
                s.add(
                    VideoSegment(
                        upload_id=upload_id,
                        idx=seg.index,
                        start_s=seg.start_s,
                        end_s=seg.end_s if math.isfinite(seg.end_s) else None,
                        max_frames=seg.max_frames,
                        fps=seg.fps,
                    )
                )
    except IntegrityError:  # planned at the same moment by a redelivered crop: same plan
        log.info("upload %s: segments already planned", upload_id)


# -- crop: one segment -------------------------------------------------------------------
def crop_segment(svc: Services, segment_id: int) -> list[int]:
    """Crop one segment of a video (stage ``crop_segment``); returns the upload for embed."""
    with svc.db.session() as s:
        seg = s.get(VideoSegment, segment_id)
        up = s.get(Upload, seg.upload_id) if seg is not None else None
        if seg is None or up is None or UploadStatus(up.status).terminal:
            return []
        if seg.state != "pending":
            return [up.id]  # done before (redelivered): embed counts it
        seg.attempts += 1
        runs = seg.attempts
        s.flush()
        s.expunge(seg)
        s.expunge(up)
    if runs > MAX_SEGMENT_RUNS:
        mark_failed(svc, up.id, f"segment {seg.idx}: gave up after {runs - 1} runs")
        return []
    try:
        rows, frames, cuts = _faces_of_segment(svc, up, seg)
    except Rejected as rej:  # a header that lied, seen while decoding: the whole video
        mark_rejected(svc, up.id, f"{rej} (segment {seg.idx})")
        return []
    with svc.db.session() as s:
        row = s.get(VideoSegment, segment_id, with_for_update=True)  # one writer per segment
        upload = s.get(Upload, up.id)
        if row is None or upload is None or UploadStatus(upload.status).terminal:
            return []
        if row.state != "pending":
            return [up.id]
        # A run that died after writing faces left them: replace them.
        s.execute(delete(Face).where(Face.upload_id == up.id, Face.segment == seg.idx))
        for r in rows:
            s.add(Face(upload_id=up.id, **r))
        row.state, row.faces, row.frames, row.cuts = "cropped", len(rows), frames, cuts
    return [up.id]


def _faces_of_segment(
    svc: Services, up: Upload, seg: VideoSegment
) -> tuple[list[dict], int, list[float]]:
    """Face rows (without ids) of one segment, their chips and crops stored; the number
    of frames sampled; the times of the scene-cut samples."""
    st, backend = svc.settings, svc.face_backend
    limits = limits_for(svc, up)
    segment = Segment(
        seg.idx,
        seg.start_s,
        math.inf if seg.end_s is None else seg.end_s,
        seg.max_frames,
        seg.fps,
    )
    rows: list[dict] = []
    frames = 0
    cuts: list[float] = []
    for frame in sample_segment(svc.files.abs(up.path), probe_of(up), segment, limits):
        frames += 1
        cut = frame.reason == "scene"
        if cut:
            cuts.append(round(frame.time_s, 4))
        found, _notes = keep_faces(backend.detect(frame.pixels), st)
        for face in found:
            idx = seg.idx * SEGMENT_IDX_STRIDE + len(rows)
            rows.append(
                face_row(
                    svc,
                    backend,
                    frame.pixels,
                    face,
                    up.id,
                    idx,
                    frame_time_s=float(frame.time_s),
                    segment=seg.idx,
                    scene_cut=cut,
                )
            )
    return rows, frames, cuts


def mark_segment_failed(svc: Services, segment_id: int, error: str) -> None:
    """The last failure of a ``crop_segment`` task fails its video (``ON_FAILURE``)."""
    with svc.db.session() as s:
        seg = s.get(VideoSegment, segment_id)
        upload_id = seg.upload_id if seg is not None else None
    if upload_id is not None:
        mark_failed(svc, upload_id, error)


# -- embed: counting segments -------------------------------------------------------------
def segments_to_count(s, upload_ids: list[int]) -> dict[int, list[int]]:
    """For the videos among ``upload_ids``: {upload: its cropped segments, not yet
    counted}. Read before the faces to embed are read, so every face of these segments
    is in that batch (a segment's faces commit with its state)."""
    rows = s.execute(
        select(VideoSegment.upload_id, VideoSegment.id)
        .join(Upload, Upload.id == VideoSegment.upload_id)
        .where(
            VideoSegment.upload_id.in_(upload_ids),
            Upload.media_kind == VIDEO,
            Upload.status.in_(_COUNTING),
            VideoSegment.state == "cropped",
        )
    ).all()
    out: dict[int, list[int]] = {}
    for uid, sid in rows:
        out.setdefault(uid, []).append(sid)
    return out


_COUNTING = [str(UploadStatus.received), str(UploadStatus.embedded), str(UploadStatus.indexed)]


def count_embedded(s, upload_id: int, segment_ids: list[int]) -> list[int]:
    """Count these segments as done (once each: only a run that moves a segment from
    cropped to embedded counts it). The run that counts the video's last segment moves
    it to ``embedded`` and returns it for index; every other run returns nothing, so a
    video goes on to index once however many embed runs its segments caused (the
    upload row's lock orders concurrent runs)."""
    if not segment_ids:
        return []
    n = s.execute(
        update(VideoSegment)
        .where(VideoSegment.id.in_(segment_ids), VideoSegment.state == "cropped")
        .values(state="embedded")
    ).rowcount
    if not n:
        return []
    s.execute(
        update(Upload)
        .where(Upload.id == upload_id)
        .values(segments_done=func.coalesce(Upload.segments_done, 0) + n)
    )
    row = s.get(Upload, upload_id, populate_existing=True)
    if row is None or row.segments_total is None or row.segments_done < row.segments_total:
        return []
    if row.status == UploadStatus.received:
        row.n_faces = s.scalar(select(func.count(Face.id)).where(Face.upload_id == upload_id))
        # No face anywhere: done, as an image with no face is done at crop.
        row.status = UploadStatus.embedded if row.n_faces else UploadStatus.done
        if not row.n_faces:
            return []
    elif row.status not in _COUNTING:
        return []
    return [upload_id]


# -- index: tracks ----------------------------------------------------------------------------
def _observation(face_id: int, t: float, box, landmarks, score: float, emb: bytes):
    vec = np.frombuffer(emb, np.float32)
    vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
    face = DetectedFace(tuple(box), np.asarray(landmarks, np.float32), float(score))
    return FaceObservation(float(t), face, vec.astype(np.float32), key=face_id)


def _frames(rows, cuts: list[float]) -> list[FrameFaces]:
    """Face rows (id, time, box, landmarks, score, embedding) -> frames in time order;
    a frame starts a new shot when a scene cut was sampled since the previous one."""
    by_time: dict[float, list[FaceObservation]] = {}
    for fid, t, box, marks, score, emb in rows:
        by_time.setdefault(float(t), []).append(_observation(fid, t, box, marks, score, emb))
    out, prev = [], -math.inf
    for t in sorted(by_time):
        cut = any(prev < c <= t + 1e-6 for c in cuts)
        out.append(FrameFaces(t, by_time[t], cut=cut))
        prev = t
    return out


def track_upload(svc: Services, upload_id: int) -> list[Track]:
    """Track every face of the video (``track_faces``, whole video) and store each
    face's ``track_id``. Deterministic, so a redelivered index writes the same ids."""
    with svc.db.session() as s:
        rows = s.execute(
            select(Face.id, Face.frame_time_s, Face.box, Face.landmarks, Face.det_score,
                   Face.embedding)
            .where(Face.upload_id == upload_id)
            .order_by(Face.frame_time_s, Face.idx)
        ).all()  # fmt: skip
        cuts = [
            c for cs in s.scalars(select(VideoSegment.cuts).where(
                VideoSegment.upload_id == upload_id)) for c in (cs or [])
        ]  # fmt: skip
    if any(r.embedding is None for r in rows):
        raise RuntimeError(f"upload {upload_id} has faces without embeddings")
    tracks = track_faces(_frames(rows, cuts), svc.match_threshold)
    with svc.db.session() as s:
        for track in tracks:
            ids = [o.key for o in track.observations]
            s.execute(update(Face).where(Face.id.in_(ids)).values(track_id=track.track_id))
    return tracks


def load_track(svc: Services, upload_id: int, track_id: int) -> Track:
    with svc.db.session() as s:
        rows = s.execute(
            select(Face.id, Face.frame_time_s, Face.box, Face.landmarks, Face.det_score,
                   Face.embedding)
            .where(Face.upload_id == upload_id, Face.track_id == track_id)
            .order_by(Face.frame_time_s, Face.idx)
        ).all()  # fmt: skip
    return Track(track_id, [_observation(*r) for r in rows])


def track_claims(
    svc: Services, face_ids: list[int], identity_id: int, matcher: Matcher
) -> list[tuple[int, float, int | None, int]]:
    """Backfill: of the tracks these video faces lie on, those that claim
    ``identity_id`` as the index stage decides it (``track_identity``): one
    ``(best face id, similarity, reference id, track id)`` per track."""
    with svc.db.session() as s:
        keys = set(
            s.execute(
                select(Face.upload_id, Face.track_id).where(
                    Face.id.in_(face_ids), Face.track_id.is_not(None)
                )
            ).all()
        )
    out = []
    for upload_id, track_id in sorted(keys):
        track = load_track(svc, upload_id, track_id)
        for claim in track_identity(track, matcher):
            if claim.identity_id == identity_id:
                best = track.observations[claim.best_index].key
                out.append((best, claim.similarity, claim.reference_id, track_id))
    return out


def video_faces(svc: Services, face_ids: list[int]) -> set[int]:
    """Which of these faces were seen in a video."""
    if not face_ids:
        return set()
    with svc.db.session() as s:
        return set(
            s.scalars(
                select(Face.id)
                .join(Upload, Upload.id == Face.upload_id)
                .where(Face.id.in_(face_ids), Upload.media_kind == VIDEO)
            )
        )


# -- classify: one verdict per (track, identity) ----------------------------------------------
@dataclass
class VideoVerdict:
    score: float  # the track's aggregate (0.8 quantile of its frames' scores)
    detector: str
    parts: dict[str, float]  # the worst frame's parts, temporal_*, frames scored
    face_id: int  # the face seen at the worst moment (the alert points at it)
    frame_time_s: float  # the worst moment
    track_id: int


def score_match(
    svc: Services,
    up: Upload,
    face_id: int,
    identity_id: int,
    similarity: float,
    reference_id: int | None,
    references: list[ReferenceView],
    matcher: Matcher,
) -> VideoVerdict:
    """Score the track of a video match (the match sits on ``face_id``)."""
    with svc.db.session() as s:
        track_id = s.scalar(select(Face.track_id).where(Face.id == face_id))
    if track_id is None:
        raise RuntimeError(f"video face {face_id} has no track (index did not run?)")
    track = load_track(svc, up.id, track_id)
    keys = [o.key for o in track.observations]
    claim = next((c for c in track_identity(track, matcher) if c.identity_id == identity_id), None)
    if claim is None:  # the references changed since index: score the track as claimed then
        claim = TrackClaim(
            identity_id, similarity, reference_id, "pooled", [None] * len(track),
            keys.index(face_id),
        )  # fmt: skip
    probe, limits = probe_of(up), limits_for(svc, up)
    picked = frames_to_score(track, claim, FRAMES_TO_SCORE)
    frames = frames_at(
        svc.files.abs(up.path), probe, [track.observations[i].time_s for i in picked], limits
    )
    result, per_frame = score_track(
        svc.detector, track, claim, frames, references, k=FRAMES_TO_SCORE,
        file_format=probe.container,
    )  # fmt: skip
    worst = next(o for o in track.observations if o.time_s == result.worst_time_s)
    parts = dict(result.parts)
    parts["frames_scored"] = float(len(per_frame))
    parts["frame_score_max"] = float(max(result.frame_scores))
    return VideoVerdict(
        score=result.score,
        detector=per_frame[result.worst_index].detector,
        parts=parts,
        face_id=int(worst.key),
        frame_time_s=result.worst_time_s,
        track_id=track_id,
    )


# -- reading frames back (reports, review pages) ------------------------------------------------
def frame_at(svc: Services, up: Upload, time_s: float) -> np.ndarray | None:
    """The analysis frame shown at ``time_s`` (face boxes are in its pixels), or None."""
    try:
        got = frames_at(svc.files.abs(up.path), probe_of(up), [time_s], limits_for(svc, up))
    except Rejected:
        return None
    frame = got.get(float(time_s))
    return None if frame is None else frame.pixels


def progress(svc: Services, upload_ids: list[int] | None = None) -> list[dict]:
    """Videos not finished (or these uploads, finished or not): id, status, segments
    done of total, duration."""
    q = select(Upload).where(Upload.media_kind == VIDEO).order_by(Upload.id)
    if upload_ids is None:
        q = q.where(Upload.status.not_in([str(s) for s in UploadStatus if s.terminal]))
    else:
        q = q.where(Upload.id.in_(upload_ids))
    with svc.db.session() as s:
        return [
            {
                "upload_id": u.id,
                "status": u.status,
                "segments_done": u.segments_done or 0,
                "segments_total": u.segments_total,
                "duration_s": u.duration_s,
            }
            for u in s.scalars(q)
        ]
