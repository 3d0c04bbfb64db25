"""Videos through the whole embedded pipeline: submit -> crop (split into segments) ->
crop_segment -> embed -> index (tracks) -> classify (track verdicts) -> alerts.

Clips are the demo's (``core.demo.video``, made here from package-shipped images): a
real clip of two people, and the same clip with Eileen Collins' face swapped onto one of
them from 2.0 s to 3.5 s. Faces go through the configured face backend (MobileFaceNet
when installed, else dlib), the forgery detector through the packaged offline head.
Every bad-video kind of ``tests/test_video.py`` is scanned too and must end rejected
with its code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.alerts.listing import list_alerts
from core.alerts.report import write_report
from core.demo.dataset import EILEEN, _write, eileen_collins_portrait
from core.flow import FLOW, Split
from core.pipeline import detection, matching, verdicts, video_stages
from core.pipeline.dispatch import Dispatcher, InlineDispatcher
from core.pipeline.identities import register_identity
from core.pipeline.sources.admit import admit
from core.pipeline.sources.scan import scan
from core.pipeline.sources.submit import submit_path
from core.services import Services
from core.settings import Settings
from core.storage.models import Alert, Face, Match, Upload, VideoSegment
from tests import imagegen
from tests.test_video import BAD_VIDEOS

SWAP_S = (2.0, 3.5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    from core.demo.video import build_demo_video

    root = tmp_path_factory.mktemp("clips")
    real = build_demo_video(root / "real.mp4", identity=None)
    swap = build_demo_video(root / "swap.mp4", identity=EILEEN, swap_s=SWAP_S)
    ref = root / "eileen.jpg"  # JPEG: under the small image limit of the API test
    _write(ref, eileen_collins_portrait(), jpeg_quality=92)
    return {"real": real.path, "swap": swap.path, "eileen": ref}


def _upload(svc: Services, upload_id: int) -> Upload:
    with svc.db.session() as s:
        up = s.get(Upload, upload_id)
        s.expunge(up)
        return up


def _count(svc: Services, model, *where) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


# --- the two clips ---------------------------------------------------------------------------


def test_real_clip_is_tracked_and_raises_no_alert(make_services, clips):
    svc = make_services()
    register_identity(svc, EILEEN, [clips["eileen"]])
    summary = scan(svc, [clips["real"]])
    assert summary.done == 1 and summary.failed == summary.rejected == 0
    [uid] = summary.upload_ids
    up = _upload(svc, uid)
    assert up.media_kind == "video" and up.file_format == "mp4"
    assert up.duration_s == pytest.approx(5.0, abs=0.15)
    assert up.segments_total == 1 and up.segments_done == 1  # 5 s: one 20 s segment
    with svc.db.session() as s:
        faces = list(s.execute(select(Face.frame_time_s, Face.segment, Face.track_id)))
    # Two people in each of the 10 samples (2 a second), each on its own track.
    assert len(faces) == up.n_faces == 20
    assert sorted({t for t, _, _ in faces}) == pytest.approx([i * 0.5 for i in range(10)])
    assert {seg for _, seg, _ in faces} == {0}
    assert sorted({tr for _, _, tr in faces}) == [0, 1]
    assert _count(svc, Match) == 0 and _count(svc, Alert) == 0


def test_swapped_segment_alert_names_the_track_and_the_moment(make_services, clips, tmp_path):
    svc = make_services(video_segment_s=2.0)  # 3 segments: tracks must cross their borders
    register_identity(svc, EILEEN, [clips["eileen"]])
    summary = scan(svc, [clips["swap"]])
    assert summary.done == 1 and summary.judged_fake == 1, summary
    [uid] = summary.upload_ids
    up = _upload(svc, uid)
    assert (up.segments_done, up.segments_total) == (3, 3)
    with svc.db.session() as s:
        tracks = set(s.scalars(select(Face.track_id).where(Face.upload_id == uid)))
        [match] = s.scalars(select(Match))
        [alert] = s.scalars(select(Alert))
        face = s.get(Face, alert.face_id)
        match_face = s.get(Face, match.face_id)
        assert len(tracks) == 2  # one per person, across the three segments
        # One match for the track, on its best face, inside the swapped segment.
        assert match.track_id == match_face.track_id == alert.track_id == face.track_id
        assert SWAP_S[0] <= match_face.frame_time_s < SWAP_S[1]
        assert match.is_fake and match.fake_score >= svc.fake_threshold
        assert match.parts["frames_scored"] == 3  # the samples at 2.0, 2.5 and 3.0 s
        assert match.parts["temporal_identity_jump"] > 0.3
        # The alert points at the worst moment and the face seen then.
        assert SWAP_S[0] <= alert.frame_time_s < SWAP_S[1]
        assert face.frame_time_s == alert.frame_time_s and face.upload_id == uid
    [event] = svc.notifier("memory").events  # what a receiver gets names the moment too
    assert (event.frame_time_s, event.track_id) == (alert.frame_time_s, alert.track_id)
    [row] = list_alerts(svc)
    assert row["media_kind"] == "video" and row["identity"] == EILEEN
    assert row["frame_time_s"] == pytest.approx(alert.frame_time_s, abs=1e-3)
    assert row["track_id"] == alert.track_id
    report = tmp_path / "report.html"
    assert write_report(svc, report) == 1
    page = report.read_text()
    assert f"video frame at {alert.frame_time_s:.2f} s" in page
    assert page.count("data:image/jpeg;base64,") == 3  # the frame, the face, the reference


def test_an_image_alert_has_no_moment(make_services, demo_set):
    svc = make_services()
    from core.demo.dataset import load_references

    register_identity(svc, EILEEN, load_references(demo_set)[EILEEN])
    scan(svc, [demo_set / "uploads" / "fake_eileen_person5.png"])
    [row] = list_alerts(svc)
    assert row["media_kind"] == "image" and row["frame_time_s"] is None
    assert row["track_id"] is None


def test_backfill_finds_the_swapped_segment(make_services, clips):
    """Registered after the video was scanned: the face index holds every frame's face,
    and backfill decides by track (one match per track, not one per frame)."""
    svc = make_services()
    summary = scan(svc, [clips["swap"], clips["real"]])
    assert summary.done == 2 and _count(svc, Match) == 0
    reg = register_identity(svc, EILEEN, [clips["eileen"]])
    assert reg.backfill.matches == 1 and reg.backfill.alerts == 1
    with svc.db.session() as s:
        [alert] = s.scalars(select(Alert))
        assert alert.upload_id == summary.upload_ids[0]
        assert SWAP_S[0] <= alert.frame_time_s < SWAP_S[1] and alert.track_id is not None


# --- segments: split, idempotent, counted once -----------------------------------------------


class Recorder(Dispatcher):
    """Records what each stage hands on, runs nothing (the test plays the workers)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def send(self, stage, subject_id: int) -> None:
        self.sent.append((stage.name, subject_id))


def test_segments_are_split_redelivered_and_counted_once(make_services, clips):
    svc = make_services(video_segment_s=2.0)
    register_identity(svc, EILEEN, [clips["eileen"]])
    uid = submit_path(svc, clips["swap"]).upload_id

    out = detection.crop(svc, uid)
    assert isinstance(out, Split) and len(out.ids) == 3
    rec = Recorder()
    rec.hand_on(FLOW["crop"], out)
    assert rec.sent == [("crop_segment", i) for i in out.ids]  # one message per segment
    assert video_stages.progress(svc) == [
        {"upload_id": uid, "status": "received", "segments_done": 0, "segments_total": 3,
         "duration_s": pytest.approx(5.0, abs=0.15)}
    ]  # fmt: skip
    s0, s1, s2 = out.ids

    # Segment 0, delivered twice: the same faces, written once.
    assert video_stages.crop_segment(svc, s0) == [uid]
    n0 = _count(svc, Face, Face.upload_id == uid)
    assert n0 > 0 and video_stages.crop_segment(svc, s0) == [uid]
    assert _count(svc, Face, Face.upload_id == uid) == n0
    assert detection.embed(svc, uid) == []  # 1 of 3: nothing goes on yet
    assert video_stages.progress(svc)[0]["segments_done"] == 1
    # A redelivered crop re-sends only the segments not done.
    assert detection.crop(svc, uid) == Split((s1, s2))

    video_stages.crop_segment(svc, s1)
    video_stages.crop_segment(svc, s2)
    assert detection.embed(svc, uid) == [uid]  # counts both; the last one hands on
    assert detection.embed(svc, uid) == []  # a late embed run of another segment: nothing
    assert _upload(svc, uid).status == "embedded"
    with svc.db.session() as s:
        assert set(s.scalars(select(VideoSegment.state))) == {"embedded"}
        assert s.scalar(select(func.count()).where(Face.embedding.is_(None))) == 0

    # The message after embed was lost; the sweeper starts the flow again: exactly one
    # embed run hands it on.
    assert detection.crop(svc, uid) == [uid]
    assert detection.embed(svc, uid) == [uid] and detection.embed(svc, uid) == []

    assert matching.index(svc, uid) == [uid]
    assert matching.index(svc, uid) == [uid]  # redelivered: no second match
    assert _count(svc, Match) == 1
    verdicts.classify(svc, uid)
    assert _upload(svc, uid).status == "done" and _count(svc, Alert) == 1


def test_segment_that_keeps_failing_fails_its_video(make_services, clips):
    svc = make_services(video_segment_s=2.0)
    uid = submit_path(svc, clips["real"]).upload_id
    first, seg, _ = detection.crop(svc, uid).ids
    with svc.db.session() as s:
        s.get(VideoSegment, seg).attempts = video_stages.MAX_SEGMENT_RUNS
    assert video_stages.crop_segment(svc, seg) == []
    up = _upload(svc, uid)
    assert up.status == "failed" and "segment 1" in up.reason
    # The other segments find the video terminal and stop.
    assert video_stages.crop_segment(svc, first) == []


# --- every bad video through the whole pipeline ----------------------------------------------

# VideoLimits overrides in tests/test_video.py -> the settings that set them.
_SETTING = {
    "max_bytes": "max_video_bytes",
    "max_duration_s": "max_video_duration_s",
    "max_pixels": "max_video_pixels",
    "min_side": "min_side",
}
# Kinds whose bytes are not a video at all take the image path (content decides).
_NOT_VIDEO = {
    "image_named_mp4": ("done", None),  # a real PNG: an image with no face
    "heic_named_mp4": ("rejected", "unsupported_format"),
    "html_named_mp4": ("rejected", "not_an_image"),
    "audio_wav": ("rejected", "not_an_image"),
    "random_bytes": ("rejected", "not_an_image"),
    "empty": ("rejected", "empty"),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Each bad kind written as ``<kind>.mp4`` and scanned, one Services per distinct
    set of limits; kind -> (status, reason, media_kind)."""
    root = tmp_path_factory.mktemp("bad-pipeline")
    groups: dict[tuple, list[str]] = {}
    for kind, (make, overrides, _) in BAD_VIDEOS.items():
        (root / f"{kind}.mp4").write_bytes(make())
        groups.setdefault(tuple(sorted(overrides.items())), []).append(kind)
    out = {}
    for n, (overrides, kinds) in enumerate(groups.items()):
        settings = {_SETTING[k]: v for k, v in overrides}
        svc = Services(Settings(data_dir=root / f"data{n}", notifier="memory", **settings))
        try:
            summary = scan(svc, [root / f"{k}.mp4" for k in kinds])
            assert summary.failed == 0 and summary.pending == 0, summary
            with svc.db.session() as s:
                for up in s.scalars(select(Upload)):
                    out[Path(up.original_name).stem] = (up.status, up.reason, up.media_kind)
        finally:
            svc.close()
    return out


@pytest.mark.parametrize("kind", sorted(BAD_VIDEOS))
def test_bad_video_through_the_pipeline_is_rejected_with_its_code(bad_runs, kind):
    status, reason, media_kind = bad_runs[kind]
    data = BAD_VIDEOS[kind][0]()
    if kind in _NOT_VIDEO:
        want_status, want_code = _NOT_VIDEO[kind]
        assert admit(data[:1024]).kind != "video" and media_kind == "image"
    else:
        want_status, want_code = "rejected", BAD_VIDEOS[kind][2]
        assert media_kind == "video"
    assert status == want_status, (kind, status, reason)
    if want_code is not None:
        assert reason.split(":")[0] == want_code, (kind, reason)


def test_a_fifo_named_like_a_video_is_never_opened(make_services, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.mp4")
    svc = make_services()
    summary = scan(svc, [tmp_path / "pipe.mp4", tmp_path / "missing.mp4"])
    assert summary.rejected_reasons == {"not_a_file": 1, "not_found": 1}


# --- the API: videos under their own limit, progress in the upload JSON ------------------------


def test_api_takes_a_video_under_its_own_limit(make_services, clips):
    from workers.api import create_app

    data = clips["swap"].read_bytes()
    limit = len(data) // 2  # the image limit is under the video's size
    svc = make_services(api_keys="k", max_upload_bytes=limit, video_segment_s=2.0)
    register_identity(svc, EILEEN, [clips["eileen"]])
    client = TestClient(create_app(svc, InlineDispatcher(svc)), headers={"X-API-Key": "k"})

    def post(blob: bytes, name: str):
        return client.post("/uploads", files={"file": (name, blob, "application/octet-stream")})

    assert post(imagegen.random_bytes(limit + 1), "big.jpg").status_code == 413
    r = post(data, "clip.jpg")  # the name never matters
    assert r.status_code == 202, r.text
    got = client.get(f"/uploads/{r.json()['upload_id']}").json()
    assert got["status"] == "done" and got["media_kind"] == "video"
    assert got["segments_done"] == got["segments_total"] == 3
    assert got["duration_s"] == pytest.approx(5.0, abs=0.15)
    [alert] = got["alerts"]
    assert SWAP_S[0] <= alert["frame_time_s"] < SWAP_S[1] and alert["track_id"] is not None
    assert client.get("/alerts").json()[0]["frame_time_s"] == alert["frame_time_s"]

    small = make_services(api_keys="k", max_video_bytes=limit)
    client2 = TestClient(create_app(small, InlineDispatcher(small)), headers={"X-API-Key": "k"})
    r = client2.post("/uploads", files={"file": ("clip.mp4", data, "video/mp4")})
    assert r.status_code == 413 and str(limit) in r.json()["detail"]
    assert _count(small, Upload) == 0
    assert not list(small.files.abs("uploads").rglob("*.mp4"))  # nothing left behind


# --- sources: one rule for every source --------------------------------------------------------


def test_admit_submits_images_and_videos_and_skips_the_rest():
    from tests import videogen

    def decide(head):
        a = admit(head)
        return a.kind if a.submit else None, a.reason

    assert decide(videogen.clip(container="matroska")) == ("video", None)
    assert decide(videogen.flv()) == ("video", None)  # rejected later, with its name
    assert decide(imagegen.png()) == ("image", None)
    kind, reason = decide(imagegen.html_page())
    assert kind is None and "not an image or video" in reason
    assert decide(b"") == (None, "empty file")


def test_watched_folder_takes_a_video(make_services, tmp_path):
    from core.pipeline.sources.watchfolder import FolderWatcher
    from tests import videogen

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "clip.bin").write_bytes(videogen.clip(40, container="webm", codec="libvpx"))
    svc = make_services()
    watcher = FolderWatcher(svc, inbox, InlineDispatcher(svc), settle_s=0.0)
    [uid] = watcher.poll_once() + watcher.poll_once()  # taken once, on the first settled pass
    up = _upload(svc, uid)
    assert up.media_kind == "video" and up.status == "done" and up.path.endswith(".webm")
    assert up.duration_s == pytest.approx(4.0, abs=0.15) and up.n_faces == 0
