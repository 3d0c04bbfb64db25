"""Video: intake (sniffing, probing, every bad-video kind), sampling, tracking, identity per
track, forgery aggregation, and the demo clip with a swapped segment.

Every video is made here with PyAV (``tests/videogen.py``) or by ``core.demo.video``
from images that installed packages ship; faces go through the offline dlib backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.video.intake import (
    ALLOWED_CONTAINERS,
    REJECTION_CODES,
    VideoLimits,
    probe_video,
    sniff_container,
    sniff_media,
)
from core.video.sampling import (
    SCENE_THRESHOLD,
    frames_at,
    interval_fps,
    plan_segments,
    sample_frames,
    sample_segment,
)
from core.video.tracking import (
    FaceObservation,
    FaceTracker,
    FrameFaces,
    Track,
    aggregate_scores,
    detect_faces,
    frames_to_score,
    identity_series,
    score_track,
    temporal_features,
    track_faces,
    track_identity,
)
from tests import imagegen, videogen

ROOT = Path(__file__).resolve().parents[1]


def outcome(source, limits: VideoLimits | None = None) -> str:
    """ "accepted" after probing and sampling the whole video, or the rejection code."""
    limits = limits or VideoLimits()
    try:
        probe = probe_video(source, limits)
        for _ in sample_frames(source, probe, limits):
            pass
    except Rejected as rej:
        assert rej.code in REJECTION_CODES, rej
        return rej.code
    return "accepted"


# --- sniffing and accepted containers ----------------------------------------------------------


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return videogen.container_clips()


def test_sniff_tells_images_videos_and_neither(clips):
    for name, data in clips.items():
        assert sniff_container(data[:1024]) == name
        assert sniff_media(data[:1024]) == "video"
    for data in (imagegen.png(), imagegen.jpeg(), imagegen.gif(), imagegen.webp(),
                 imagegen.heic_like(), imagegen.ico()):  # fmt: skip
        assert sniff_media(data[:1024]) == "image", data[:12]
    for data in (videogen.flv(), videogen.mpegts()):  # videos we refuse, by name
        assert sniff_media(data[:1024]) == "video"
    for data in (b"", imagegen.plain_text(), imagegen.html_page(), imagegen.random_bytes(),
                 videogen.wav(), imagegen.pdf_document()):  # fmt: skip
        assert sniff_media(data[:1024]) is None, data[:12]


@pytest.mark.parametrize("name", sorted(ALLOWED_CONTAINERS))
def test_each_container_is_probed(clips, name):
    probe = probe_video(clips[name])
    assert probe.container == name
    assert (probe.width, probe.height) == (videogen.W, videogen.H)
    assert probe.duration_s == pytest.approx(2.0, abs=0.15)
    assert probe.fps == pytest.approx(10.0)
    assert probe.n_streams == 1
    assert probe.size_bytes == len(clips[name])


def test_content_decides_not_the_name(tmp_path, clips):
    video_as_jpg = tmp_path / "holiday.jpg"
    video_as_jpg.write_bytes(clips["mp4"])
    assert outcome(video_as_jpg) == "accepted"
    assert probe_video(video_as_jpg).container == "mp4"
    image_as_mp4 = tmp_path / "clip.mp4"
    image_as_mp4.write_bytes(imagegen.png())
    with pytest.raises(Rejected) as exc:
        probe_video(image_as_mp4)
    assert exc.value.code == "not_a_video" and "PNG image" in exc.value.message


# --- every bad kind ends in a rejection with its code ---------------------------------------

_MP4 = lambda: videogen.clip(codec="libx264")  # noqa: E731

# kind -> (bytes builder, limits overrides, expected code)
BAD_VIDEOS: dict[str, tuple] = {
    "truncated_mp4": (lambda: videogen.truncated(_MP4()), {}, "truncated"),
    "truncated_mp4_moov": (lambda: videogen.truncated(_MP4(), 0.97), {}, "truncated"),
    "truncated_mov": (
        lambda: videogen.truncated(videogen.clip(container="mov", codec="libx264")),
        {},
        "truncated",
    ),
    "truncated_mkv": (
        lambda: videogen.truncated(videogen.clip(container="matroska")),
        {},
        "truncated",
    ),
    "truncated_webm": (
        lambda: videogen.truncated(videogen.clip(container="webm", codec="libvpx")),
        {},
        "truncated",
    ),
    "truncated_avi": (lambda: videogen.truncated(videogen.clip(container="avi")), {}, "truncated"),
    "truncated_header": (lambda: _MP4()[:40], {}, "truncated"),
    "audio_only": (videogen.audio_only, {}, "no_video_stream"),
    "zero_frames": (videogen.zero_frames, {}, "no_frames"),
    "undecodable": (videogen.undecodable, {}, "no_frames"),
    "absurd_frame_rate": (videogen.absurd_fps, {}, "absurd_frame_rate"),
    "bomb_many_streams": (videogen.many_streams, {}, "video_bomb"),
    "bomb_duration_lie": (videogen.duration_lie, {}, "video_bomb"),
    "bomb_size_switch": (videogen.size_switch, {"max_pixels": 100_000}, "too_many_pixels"),
    "too_long": (lambda: videogen.clip(40), {"max_duration_s": 2.0}, "too_long"),
    "too_large": (_MP4, {"max_bytes": 2000}, "too_large"),
    "too_many_pixels": (_MP4, {"max_pixels": 96 * 63}, "too_many_pixels"),
    "too_small": (_MP4, {"min_side": 65}, "too_small"),
    "empty": (lambda: b"", {}, "empty"),
    "image_named_mp4": (imagegen.png, {}, "not_a_video"),
    "heic_named_mp4": (imagegen.heic_like, {}, "not_a_video"),
    "html_named_mp4": (imagegen.html_page, {}, "not_a_video"),
    "audio_wav": (videogen.wav, {}, "not_a_video"),
    "random_bytes": (imagegen.random_bytes, {}, "not_a_video"),
    "flv": (videogen.flv, {}, "unsupported_format"),
    "mpegts": (videogen.mpegts, {}, "unsupported_format"),
    "corrupt_moov": (lambda: _garble_moov(_MP4()), {}, "corrupt"),
}


def _garble_moov(data: bytes) -> bytes:
    """Random bytes over the moov box's children (its own header kept)."""
    pos = data.index(b"moov") + 4
    noise = np.random.default_rng(1).integers(0, 256, len(data) - pos, dtype=np.uint8)
    return data[:pos] + noise.tobytes()


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory) -> Path:
    """Every BAD_VIDEOS kind written as ``<kind>.mp4`` (the name never matters)."""
    root = tmp_path_factory.mktemp("bad-videos")
    for kind, (make, _, _) in BAD_VIDEOS.items():
        (root / f"{kind}.mp4").write_bytes(make())
    return root


@pytest.mark.parametrize("kind", sorted(BAD_VIDEOS))
def test_bad_video_is_rejected_with_its_code(bad_corpus, kind):
    _, overrides, code = BAD_VIDEOS[kind]
    assert outcome(bad_corpus / f"{kind}.mp4", VideoLimits(**overrides)) == code


def test_bad_files_on_disk(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it must not wait for a writer
    assert outcome(tmp_path / "folder.mp4") == "not_a_file"
    assert outcome(tmp_path / "pipe.mp4") == "not_a_file"
    assert outcome(tmp_path / "missing.mp4") == "not_found"


_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from core.errors import Rejected
from core.video.intake import VideoLimits, probe_video
from core.video.sampling import sample_frames
out = {}
for kind, overrides in json.loads(sys.argv[2]).items():
    t0 = time.perf_counter()
    limits = VideoLimits(**overrides)
    path = Path(sys.argv[1]) / f"{kind}.mp4"
    try:
        probe = probe_video(path, limits)
        for _ in sample_frames(path, probe, limits):
            pass
        code = "accepted"
    except Rejected as rej:
        code = rej.code
    out[kind] = [code, time.perf_counter() - t0]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would count the
# (large) test process this child was forked from.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
out["maxrss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def test_bad_videos_take_bounded_time_and_memory(bad_corpus):
    """All bad kinds in one fresh process under a 3 GiB address-space limit: each ends
    with its code within seconds, and the process stays small (no frame pile-up)."""

    def limit_memory():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    cases = {kind: overrides for kind, (_, overrides, _) in BAD_VIDEOS.items()}
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(bad_corpus), json.dumps(cases)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for kind, (_, _, code) in BAD_VIDEOS.items():
        got, seconds = out[kind]
        assert got == code, (kind, got)
        assert seconds < 10, (kind, seconds)
    assert out["maxrss_mb"] < 600, out["maxrss_mb"]


def test_streamed_webm_without_duration_is_measured():
    data = videogen.streamed_webm(50, 10)  # 5 s, as a browser records it: no Duration
    probe = probe_video(data)
    assert probe.container == "webm" and probe.duration_measured
    assert probe.duration_s == pytest.approx(5.0, abs=0.15)
    assert len(list(sample_frames(data, probe, VideoLimits(sample_fps=2.0)))) == 10
    assert outcome(data, VideoLimits(max_duration_s=3.0)) == "too_long"


def test_decoding_catches_what_headers_hide():
    ten_s = videogen.clip(100, 10)
    probe = probe_video(ten_s)
    # The header's rate is all the guard knows: a header that says 1 fps, but a stream
    # that yields 10, decodes far more frames than declared.
    lying_rate = dataclasses.replace(probe, fps=1.0)
    with pytest.raises(Rejected) as exc:
        list(sample_frames(ten_s, lying_rate, max_frames=1000))
    assert exc.value.code == "video_bomb"
    # No declared duration: the limit is enforced on the frames' own timestamps.
    no_duration = dataclasses.replace(probe, duration_s=None)
    with pytest.raises(Rejected) as exc:
        list(sample_frames(ten_s, no_duration, VideoLimits(max_duration_s=3.0)))
    assert exc.value.code == "too_long"


# --- sampling ---------------------------------------------------------------------------------


def _frame_index(rgb: np.ndarray) -> int:
    """Which frame of ``videogen.moving_pattern`` this is (its block starts at x = 2i,
    modulo the width it travels)."""
    bright = np.nonzero(rgb[8 + videogen.BLOCK // 2].min(axis=1) > 200)[0]
    return round((bright.mean() - (videogen.BLOCK - 1) / 2) / 2)


def _index_at(t: float, fps: float = 10) -> int:
    return round(t * fps) * 2 % (videogen.W - videogen.BLOCK) // 2


def test_interval_samples_on_a_time_grid(clips):
    data = videogen.clip(40, 10)  # 4 s
    probe = probe_video(data)
    frames = list(sample_frames(data, probe, VideoLimits(sample_fps=2.0)))
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert {f.reason for f in frames} == {"interval"}
    assert all(f.pixels.shape == (videogen.H, videogen.W, 3) for f in frames)
    assert all(f.pixels.dtype == np.uint8 and f.scale == 1.0 for f in frames)
    # The moving block says which frame each sample is.
    assert [_frame_index(f.pixels) for f in frames] == [_index_at(f.time_s) for f in frames]


def test_segments_sample_the_same_frames_as_one_pass():
    data = videogen.clip(70, 10, gop=10)  # 7 s, a keyframe a second
    probe = probe_video(data)
    limits = VideoLimits(sample_fps=3.0, segment_s=2.0)
    segments = plan_segments(probe, limits)
    assert [s.start_s for s in segments] == [0.0, 2.0, 4.0, 6.0]
    assert segments[-1].end_s == float("inf")
    assert sum(s.max_frames for s in segments) == limits.max_frames
    whole = [f.time_s for f in sample_frames(data, probe, limits)]
    pieces = [f.time_s for s in segments for f in sample_segment(data, probe, s, limits)]
    assert pieces == pytest.approx(whole)
    assert len(whole) == 21  # 3 per second over 7 s


def test_scene_change_adds_a_frame():
    data = videogen.cut_clip(cut_at=13)  # the cut is at 1.3 s, between samples at 1.0 and 1.5
    probe = probe_video(data)
    frames = list(sample_frames(data, probe, VideoLimits(sample_fps=2.0)))
    scene = [f for f in frames if f.reason == "scene"]
    assert [f.time_s for f in scene] == pytest.approx([1.3])
    assert scene[0].scene_score >= SCENE_THRESHOLD
    assert all(f.scene_score < SCENE_THRESHOLD for f in frames if f.reason == "interval")


def test_frame_cap_spreads_over_the_whole_video():
    data = videogen.clip(100, 10)  # 10 s
    probe = probe_video(data)
    limits = VideoLimits(max_frames=5, sample_fps=2.0)
    assert interval_fps(probe, limits) == pytest.approx(0.4)  # 80% of 5 frames over 10 s
    frames = list(sample_frames(data, probe, limits))
    assert 4 <= len(frames) <= 5
    assert frames[-1].time_s >= 7.5  # not the first five half-seconds


def test_frames_are_scaled_and_rotated_upright():
    data = videogen.clip(10, 10, width=320, height=240)
    probe = probe_video(data)
    [frame, *_] = sample_frames(data, probe, VideoLimits(max_side=160))
    assert frame.pixels.shape == (120, 160, 3) and frame.scale == pytest.approx(0.5)
    for degrees, corner in ((90, (-1, 0)), (-90, (0, -1)), (180, (-1, -1))):
        data = videogen.rotated(degrees)
        probe = probe_video(data)
        [frame, *_] = sample_frames(data, probe)
        px = frame.pixels
        assert px.shape[:2] == ((videogen.W, videogen.H) if degrees % 180 else px.shape[:2])
        # The stored top-left white block is where a player shows it after the rotation.
        ys, xs = np.nonzero(px[..., 0] > 200)
        at = (0 if ys.mean() < px.shape[0] / 2 else -1, 0 if xs.mean() < px.shape[1] / 2 else -1)
        assert at == corner, (degrees, at)


def test_sampling_streams_without_holding_frames():
    """Peak Python/numpy memory while sampling 30 s of 320x240 stays under a few frames,
    although all the decoded frames together are ~70 MB."""
    data = videogen.clip(300, 10, width=320, height=240, gop=50)
    probe = probe_video(data)
    frame_bytes = 320 * 240 * 3
    tracemalloc.start()
    try:
        n = 0
        for _ in sample_frames(data, probe, VideoLimits(sample_fps=10.0)):
            n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 300
    assert peak < len(data) + 8 * frame_bytes, peak  # the bytes themselves + a few frames


def test_frames_at_reads_the_shown_frames():
    data = videogen.clip(50, 10, gop=10)
    probe = probe_video(data)
    times = [3.27, 0.0, 4.95, 1.0, 99.0]
    by_time = frames_at(data, probe, times, VideoLimits(segment_s=1.0))
    got = [by_time[t] for t in times]
    assert [f.time_s for f in got] == pytest.approx([3.2, 0.0, 4.9, 1.0, 4.9])
    assert [_frame_index(f.pixels) for f in got] == [_index_at(f.time_s) for f in got]


# --- tracker and aggregation (synthetic faces) ---------------------------------------------


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _obs(t: float, x: float, person: int, noise: float = 0.05, seed: int = 0) -> FaceObservation:
    e = _unit(person) + noise * _unit(1000 + seed)
    box = (x, 10.0, x + 40.0, 50.0)
    marks = np.array([[x + 12, 25], [x + 28, 25], [x + 20, 33], [x + 14, 42], [x + 26, 42]])
    face = DetectedFace(box=box, landmarks=marks.astype(np.float32), score=0.9)
    return FaceObservation(t, face, e / np.linalg.norm(e))


def test_tracker_links_by_overlap_and_by_identity():
    frames = []
    for i in range(6):
        t = i * 0.5
        people = [_obs(t, 10 + 2 * i, 1, seed=i), _obs(t, 200 - 2 * i, 2, seed=50 + i)]
        if i == 3:  # person 1's face is swapped: same place, another identity
            people[0] = _obs(t, 16, 3, seed=i)
        frames.append(FrameFaces(t, people))
    # After a cut person 2 reappears elsewhere: only the embedding can link it.
    frames.append(FrameFaces(3.0, [_obs(3.0, 100, 2, seed=99)], cut=True))
    tracks = track_faces(frames, same_person=0.9)
    assert [len(t) for t in tracks] == [6, 7]
    swapped = tracks[0]
    feats = temporal_features(swapped)
    assert feats["identity_jump"] > 0.5 > temporal_features(tracks[1])["identity_flicker"]
    # A new face at the same place after a cut is a new track.
    tracker = FaceTracker(0.9)
    tracker.update(FrameFaces(0.0, [_obs(0.0, 10, 1)]))
    ids = tracker.update(FrameFaces(0.5, [_obs(0.5, 10, 4)], cut=True))
    assert ids == [1] and len(tracker.tracks) == 2
    # A track not seen for longer than max_gap_s is closed.
    tracker = FaceTracker(0.9, max_gap_s=1.0)
    tracker.update(FrameFaces(0.0, [_obs(0.0, 10, 1)]))
    assert tracker.update(FrameFaces(5.0, [_obs(5.0, 10, 1)])) == [1]


def test_identity_per_track_pooled_and_by_frames():
    track = Track(0, [_obs(i * 0.5, 10, 3 if 4 <= i < 6 else 1, seed=i) for i in range(10)])
    person1, person3 = _unit(1), _unit(3)

    def matcher(vecs):  # identity 7 = person 1, identity 9 = person 3; threshold 0.9
        out = []
        for v in vecs:
            hits = {}
            for ident, ref in ((7, person1), (9, person3)):
                sim = float(v @ ref)
                if sim >= 0.9:
                    hits[ident] = (sim, 100 + ident)
            out.append(hits)
        return out

    claims = {c.identity_id: c for c in track_identity(track, matcher)}
    assert claims[7].via == "pooled" and claims[7].reference_id == 107
    assert claims[9].via == "frames" and claims[9].matching == [4, 5]
    assert claims[9].best_index in (4, 5)
    assert frames_to_score(track, claims[9]) == [4, 5]
    assert len(frames_to_score(track, claims[7], k=4)) == 4
    # One matching frame is not enough to claim (a look-alike moment).
    single = Track(1, [_obs(i * 0.5, 10, 3 if i == 4 else 1, seed=i) for i in range(10)])
    assert 9 not in {c.identity_id for c in track_identity(single, matcher)}


def test_aggregate_is_a_high_quantile_with_the_worst_moment():
    times = [i * 0.5 for i in range(10)]
    one_outlier = [0.1] * 10
    one_outlier[6] = 0.99
    agg = aggregate_scores(times, one_outlier)
    assert agg.score < 0.5  # one bad frame in ten does not make the track fake
    assert agg.worst_time_s == 3.0 and agg.worst_index == 6
    fake_part = [0.1] * 7 + [0.9, 0.95, 0.92]
    assert aggregate_scores(times, fake_part).score > 0.85  # a fake fifth does
    assert aggregate_scores([1.0], [0.7]).score == pytest.approx(0.7)
    with pytest.raises(ValueError):
        aggregate_scores([], [])


# --- the demo clip through detection, tracking, identity and forgery (dlib) ----------------


@pytest.fixture(scope="module")
def eileen(dlib_backend):
    from core.demo.dataset import eileen_collins_portrait
    from core.faces.crops import loose_crop
    from core.forensics.base import ReferenceView

    rgb = eileen_collins_portrait()
    face = max(dlib_backend.detect(rgb), key=lambda f: f.area)
    emb = dlib_backend.embed(rgb, [face])[0]
    return ReferenceView(image=rgb, face=face, face_crop=loose_crop(rgb, face), embedding=emb)


@pytest.fixture(scope="module")
def demo_clips(tmp_path_factory, dlib_backend):
    from core.demo.video import build_demo_video

    root = tmp_path_factory.mktemp("demo-video")
    real = build_demo_video(root / "real.mp4", identity=None, backend=dlib_backend)
    swap = build_demo_video(root / "swap.mp4", backend=dlib_backend)
    return real, swap


@pytest.fixture(scope="module")
def demo_tracks(demo_clips, dlib_backend):
    """name -> (probe, frames with faces (and pixels), tracks) for the real and swapped clip."""
    out = {}
    for name, clip in zip(("real", "swap"), demo_clips, strict=True):
        probe = probe_video(clip.path)
        frames = list(detect_faces(dlib_backend, sample_frames(clip.path, probe), keep_frames=True))
        out[name] = (probe, frames, track_faces(frames, dlib_backend.match_threshold))
    return out


def _matcher(reference: np.ndarray, threshold: float, identity_id: int = 1):
    def match(vecs: np.ndarray):
        sims = vecs @ reference
        return [{identity_id: (float(s), 11)} if s >= threshold else {} for s in sims]

    return match


def test_demo_clip_is_what_it_says(demo_clips):
    real, swap = demo_clips
    assert real.swap_s is None and real.identity is None
    assert swap.swap_s == (2.0, 3.5) and swap.identity == "Eileen Collins"
    probe = probe_video(swap.path)
    assert probe.container == "mp4" and probe.codec in ("h264", "mpeg4")
    assert probe.duration_s == pytest.approx(swap.duration_s, abs=0.15)
    assert (probe.width, probe.height) == swap.size
    # The swap changes only its segment: frames outside it are the real clip's.
    times = [1.0, 2.5, 4.0]
    a = frames_at(real.path, probe_video(real.path), times).values()
    b = frames_at(swap.path, probe, times).values()
    diffs = [
        float(np.abs(x.pixels.astype(int) - y.pixels.astype(int)).mean())
        for x, y in zip(a, b, strict=True)
    ]
    assert diffs[0] < 1.0 and diffs[2] < 1.0 and diffs[1] > 1.0


def test_real_clip_one_track_per_person(demo_clips, demo_tracks, dlib_backend, eileen):
    real, _ = demo_clips
    _, frames, tracks = demo_tracks["real"]
    assert [f.time_s for f in frames] == pytest.approx([i * 0.5 for i in range(10)])
    assert len(tracks) == real.people
    for track in tracks:
        assert len(track) == len(frames)  # every sample, no breaks
        assert temporal_features(track)["identity_jump"] < 0.05
    thr = dlib_backend.match_threshold
    assert not any(track_identity(t, _matcher(eileen.embedding, thr)) for t in tracks)


def test_swapped_segment_claims_the_source_identity(demo_clips, demo_tracks, dlib_backend, eileen):
    """The swapped face's track matches Eileen Collins exactly during the segment; the
    forgery detector, shown those frames, calls them fake and names a moment inside it."""
    from core.forensics.offline import OfflineDetector

    _, swap = demo_clips
    probe, frames, tracks = demo_tracks["swap"]
    assert len(tracks) == swap.people
    thr = dlib_backend.match_threshold
    claims = {t.track_id: track_identity(t, _matcher(eileen.embedding, thr)) for t in tracks}
    claimed = [t for t in tracks if claims[t.track_id]]
    assert len(claimed) == 1
    track = claimed[0]
    [claim] = claims[track.track_id]
    sims = identity_series(track, eileen.embedding)
    inside = np.array([swap.is_swapped(t) for t in track.times])
    assert inside.sum() == 3  # samples at 2.0, 2.5, 3.0
    assert sims[inside].min() >= thr > sims[~inside].max()
    assert [track.observations[i].time_s for i in claim.matching] == pytest.approx([2.0, 2.5, 3.0])
    # The swap shows as temporal evidence: the identity jumps where the segment starts.
    _, _, real_tracks = demo_tracks["real"]
    real_jump = max(temporal_features(t)["identity_jump"] for t in real_tracks)
    assert temporal_features(track)["identity_jump"] > 2 * real_jump

    detector = OfflineDetector()
    # The frames re-read by time, as classify does (the sampled pixels were not kept).
    by_time = frames_at(swap.path, probe, [o.time_s for o in track.observations])
    kept = {f.time_s: f.frame for f in frames}
    assert all(np.array_equal(by_time[t].pixels, kept[t].pixels) for t in by_time)
    result, per_frame = score_track(
        detector, track, claim, by_time, [eileen], file_format=probe.container
    )
    assert len(per_frame) == 3
    assert result.score >= detector.threshold
    assert swap.swap_s[0] <= result.worst_time_s < swap.swap_s[1]
    assert result.parts["temporal_identity_jump"] == pytest.approx(
        temporal_features(track)["identity_jump"]
    )


def test_detection_respects_min_face_size(demo_clips, dlib_backend):
    real, _ = demo_clips
    probe = probe_video(real.path)
    frame = frames_at(real.path, probe, [1.0])[1.0]
    [kept] = detect_faces(dlib_backend, [frame], min_face_px=10)
    [none] = detect_faces(dlib_backend, [frame], min_face_px=500)
    assert len(kept.observations) == real.people and none.observations == []
