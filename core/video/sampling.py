"""Frame sampling: a few frames per second plus scene changes, streamed, capped, segmentable.

Every frame of the chosen video stream is decoded (a sample can only be told from its
neighbours by decoding them, and a scene change needs each frame), but only a 32x32
grey thumbnail is made of most of them; the frames kept for analysis are converted to
RGB, rotated upright (phone videos carry a display rotation) and scaled so their long
side is at most ``limits.max_side``. At most one analysis frame is held at a time:
``sample_frames`` is a generator, and the container is read from the file as it goes.

Which frames are kept:

- **interval samples**: the first frame at or after each multiple of ``1 / fps``
  seconds. The times are a grid from 0, so splitting a video into segments picks the
  same frames as sampling it in one go;
- **scene changes**: a frame whose thumbnail differs from the previous frame's by
  more than ``SCENE_THRESHOLD`` (half grey-histogram distance, half mean absolute
  difference), at least ``SCENE_MIN_GAP_S`` after the last kept frame, while the
  budget lasts (it never takes frames from the interval samples still to come).

``plan_segments`` splits a video into ``limits.segment_s`` pieces, each with its share
of ``limits.max_frames``, and lowers the interval rate when a long video would exceed
the cap, so the samples cover the whole video instead of stopping part-way.

The decode-time checks that headers cannot settle live here too, as ``Rejected``:
a frame over ``max_pixels`` (a stream can change size), frames past ``max_duration_s``
(``too_long``) or well past the declared duration, and more frames than the declared
rate (or ``max_fps``) allows (``video_bomb``), and a stream that keeps failing to
decode (``corrupt``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.errors import Rejected
from core.video.intake import (
    VideoLimits,
    VideoProbe,
    VideoSource,
    configure_decoder,
    open_container,
    open_source,
)

SCENE_THRESHOLD = 0.3
SCENE_MIN_GAP_S = 0.25
# Share of the frame cap that the interval samples may use; the rest is for scene changes.
INTERVAL_SHARE = 0.8
THUMB_SIDE = 32
# Decode errors tolerated per call before the stream counts as corrupt (real files
# often have a broken packet or two; a stream of garbage has many).
MAX_DECODE_ERRORS = 25
# Slack on the declared duration and frame count before decoding counts as a bomb.
DURATION_SLACK_S, DURATION_SLACK = 2.0, 0.10
FRAMES_SLACK = 1.5


@dataclass
class SampledFrame:
    time_s: float  # seconds from the start of the video stream
    pixels: np.ndarray  # H x W x 3 uint8 RGB, upright, long side <= limits.max_side
    scale: float  # analysis pixels per decoded pixel (1.0 unless scaled down)
    reason: Literal["interval", "scene", "requested"]
    scene_score: float = 0.0  # difference to the previous decoded frame, 0..1


@dataclass(frozen=True)
class Segment:
    """A piece of a video analysed by one task: frames with ``start_s <= t < end_s``."""

    index: int
    start_s: float
    end_s: float
    max_frames: int  # this segment's share of the video's frame cap
    fps: float  # interval sampling rate (same for every segment of a video)

    @property
    def span_s(self) -> float:
        return self.end_s - self.start_s


def interval_fps(probe: VideoProbe, limits: VideoLimits) -> float:
    """The interval sampling rate: ``limits.sample_fps``, lowered for a long video so
    the interval samples use at most ``INTERVAL_SHARE`` of ``limits.max_frames``."""
    duration = probe.duration_s or limits.max_duration_s
    rate = limits.sample_fps
    if duration > 0:
        rate = min(rate, INTERVAL_SHARE * limits.max_frames / duration)
    if probe.fps:
        rate = min(rate, probe.fps)  # never more samples than frames
    return max(rate, 1e-3)


def plan_segments(probe: VideoProbe, limits: VideoLimits) -> list[Segment]:
    """Split the video into ``limits.segment_s`` pieces (the last one open-ended, so
    frames past a wrong declared duration are still seen and checked). The frame cap
    is shared out by duration and the shares add up to ``limits.max_frames``."""
    duration = probe.duration_s or 0.0
    fps = interval_fps(probe, limits)
    n = max(1, math.ceil(duration / limits.segment_s)) if duration > 0 else 1
    bounds = [min(i * limits.segment_s, duration) for i in range(n)] + [math.inf]
    segments = []
    for i in range(n):
        lo = bounds[i] / duration if duration else 0.0
        hi = min(bounds[i + 1], duration) / duration if duration else 1.0
        share = math.floor(limits.max_frames * hi) - math.floor(limits.max_frames * lo)
        segments.append(Segment(i, bounds[i], bounds[i + 1], max(share, 1), fps))
    return segments


# --- scene-change test ---------------------------------------------------------------------


def thumbnail(frame) -> np.ndarray:
    """32x32 grey float32 in [0, 1] of a decoded frame (cheap: done in swscale)."""
    grey = frame.to_ndarray(format="gray", width=THUMB_SIDE, height=THUMB_SIDE)
    return grey.astype(np.float32) / 255.0


def scene_score(prev: np.ndarray, cur: np.ndarray) -> float:
    """0 for identical thumbnails, ~1 for unrelated pictures.

    Half the L1 distance of 16-bin grey histograms (robust to motion, blind to a cut
    between two pictures of the same tones) and half the mean absolute difference
    scaled so 0.25 counts fully (sees such cuts, but also fast motion)."""
    h1 = np.histogram(prev, bins=16, range=(0.0, 1.0))[0] / prev.size
    h2 = np.histogram(cur, bins=16, range=(0.0, 1.0))[0] / cur.size
    hist = 0.5 * float(np.abs(h1 - h2).sum())
    mad = min(float(np.abs(prev - cur).mean()) / 0.25, 1.0)
    return 0.5 * hist + 0.5 * mad


# --- decoding --------------------------------------------------------------------------------


def _analysis_array(frame, probe: VideoProbe, limits: VideoLimits) -> tuple[np.ndarray, float]:
    """RGB uint8 of the frame, scaled to ``max_side`` in swscale, rotated upright."""
    w, h = int(frame.width), int(frame.height)
    scale = min(1.0, limits.max_side / max(w, h))
    if scale < 1.0:
        tw, th = max(2, round(w * scale)), max(2, round(h * scale))
        rgb = frame.to_ndarray(format="rgb24", width=tw, height=th, interpolation="AREA")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    k = (probe.rotation // 90) % 4  # counter-clockwise quarter turns, as np.rot90
    if k:
        rgb = np.rot90(rgb, k)
    return np.ascontiguousarray(rgb), scale


@dataclass
class _Guards:
    """Decode-time limits for one call over [start_s, end_s)."""

    probe: VideoProbe
    limits: VideoLimits
    start_s: float
    end_s: float
    in_span: int = 0  # frames decoded from just before start_s on
    total: int = 0  # every frame decoded, including those from the keyframe before start_s
    errors: int = 0

    def _allowance(self, span: float) -> int:
        # Frames the header's own rate promises over the span (with slack); a stream
        # without a rate may still not exceed what max_fps allows.
        p, lim = self.probe, self.limits
        declared = p.fps * span * FRAMES_SLACK + 30 if p.fps else math.inf
        return math.ceil(min(declared, lim.max_fps * span + 30))

    def __post_init__(self) -> None:
        p, lim = self.probe, self.limits
        end = min(self.end_s, p.duration_s or lim.max_duration_s, lim.max_duration_s)
        self.max_in_span = self._allowance(max(end - self.start_s, 0.0) + DURATION_SLACK_S)
        # Seeking lands on the keyframe before start_s, which may be the very first one.
        self.max_total = self._allowance(end + DURATION_SLACK_S)
        self.late_s = (
            p.duration_s * (1 + DURATION_SLACK) + DURATION_SLACK_S if p.duration_s else math.inf
        )

    def frame(self, frame, t: float, in_span: bool) -> None:
        self.total += 1
        self.in_span += in_span
        if self.in_span > self.max_in_span or self.total > self.max_total:
            raise Rejected(
                "video_bomb",
                f"decoding yields more than {min(self.max_in_span, self.total)} frames up to "
                f"{t:.1f} s; the header declares {self.probe.fps or 'no'} frames per second",
            )
        if t > self.limits.max_duration_s:
            raise Rejected(
                "too_long",
                f"frames continue past {self.limits.max_duration_s:.0f} s (the limit)",
            )
        if t > self.late_s:
            raise Rejected(
                "video_bomb",
                f"frames continue at {t:.1f} s; the header declares {self.probe.duration_s:.1f} s",
            )
        w, h = int(frame.width), int(frame.height)
        if w * h > self.limits.max_pixels:
            raise Rejected(
                "too_many_pixels",
                f"a frame at {t:.1f} s is {w}x{h}; the limit is {self.limits.max_pixels} pixels",
            )

    def error(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors > MAX_DECODE_ERRORS:
            raise Rejected(
                "corrupt", f"more than {MAX_DECODE_ERRORS} decode errors; last: {exc}"
            ) from exc


def _decoded_frames(
    source: VideoSource, probe: VideoProbe, limits: VideoLimits, start_s: float, end_s: float
) -> Iterator[tuple[object, float, _Guards]]:
    """(frame, time_s) for every decoded frame with ``start_s <= time_s < end_s``, plus
    the one frame just before ``start_s`` when decoding from a keyframe reaches it (the
    scene test needs a predecessor). Applies the decode-time guards."""
    import av

    guards = _Guards(probe, limits, start_s, end_s)
    with open_source(source, limits) as fh, open_container(fh, probe.container) as c:
        stream = c.streams[probe.stream_index]
        configure_decoder(stream, limits)
        tb = stream.time_base
        if start_s > 0:
            target = int((start_s + probe.start_time_s) / tb) if tb else 0
            try:
                c.seek(target, stream=stream, backward=True)
            except av.FFmpegError:  # unseekable: decode from the start instead
                c.seek(0)
        step = 1.0 / probe.fps if probe.fps else 0.0
        last_t = -math.inf
        try:
            for packet in c.demux(stream):
                try:
                    frames = stream.decode(packet)
                except av.FFmpegError as e:
                    cc = stream.codec_context
                    if not (cc.width and cc.height):
                        # FFmpeg resets the size when a new header asks for frames over
                        # its max_pixels (set to ours by configure_decoder).
                        raise Rejected(
                            "too_many_pixels",
                            f"after {last_t:.1f} s the stream switches to a frame size the "
                            f"decoder refuses (over {limits.max_pixels} pixels, or invalid)",
                        ) from e
                    guards.error(e)
                    continue
                for frame in frames:
                    t = frame.time
                    # Missing timestamps: one frame interval after the previous one.
                    t = (t - probe.start_time_s) if t is not None else last_t + step
                    if not math.isfinite(t):
                        t = last_t + step if math.isfinite(last_t) else 0.0
                    last_t = t
                    guards.frame(frame, t, t >= start_s - 2 * step - 1e-6)
                    if t >= end_s:
                        return
                    yield frame, t, guards
        except av.error.EOFError as e:
            raise Rejected("truncated", f"the file ends at {last_t:.1f} s of video") from e
        except av.FFmpegError as e:
            raise Rejected("corrupt", f"demuxing failed after {last_t:.1f} s: {e}") from e


def sample_frames(
    source: VideoSource,
    probe: VideoProbe,
    limits: VideoLimits | None = None,
    *,
    start_s: float = 0.0,
    end_s: float = math.inf,
    fps: float | None = None,
    max_frames: int | None = None,
    scene_threshold: float = SCENE_THRESHOLD,
) -> Iterator[SampledFrame]:
    """Stream the analysis frames of [start_s, end_s), in time order (module doc).

    ``fps`` defaults to ``interval_fps(probe, limits)``, ``max_frames`` to
    ``limits.max_frames``. May raise ``Rejected`` part-way (decode-time limits)."""
    limits = limits or VideoLimits()
    fps = fps or interval_fps(probe, limits)
    cap = limits.max_frames if max_frames is None else max_frames
    if cap <= 0:
        return
    # The next interval time is a multiple of 1/fps (a grid from 0, segment-independent).
    next_k = math.ceil(start_s * fps - 1e-9)
    span_end = min(end_s, probe.duration_s or end_s)
    expected_interval = 0
    if span_end < math.inf:
        expected_interval = max(0, math.ceil(span_end * fps - 1e-9) - next_k)
    kept = scene_kept = 0
    prev_thumb: np.ndarray | None = None
    last_kept = -math.inf
    for frame, t, _ in _decoded_frames(source, probe, limits, start_s, end_s):
        thumb = thumbnail(frame)
        score = scene_score(prev_thumb, thumb) if prev_thumb is not None else 0.0
        prev_thumb = thumb
        if t < start_s - 1e-9:
            continue
        reason: Literal["interval", "scene"] | None = None
        if t >= next_k / fps - 1e-6:
            reason = "interval"
            next_k = math.floor(t * fps + 1e-6) + 1
        elif score >= scene_threshold and t - last_kept >= SCENE_MIN_GAP_S:
            interval_left = max(0, expected_interval - (kept - scene_kept))
            if kept + interval_left < cap:
                reason = "scene"
        if reason is None:
            continue
        pixels, scale = _analysis_array(frame, probe, limits)
        kept += 1
        scene_kept += reason == "scene"
        last_kept = t
        yield SampledFrame(time_s=float(t), pixels=pixels, scale=scale, reason=reason,
                           scene_score=score)  # fmt: skip
        if kept >= cap:
            return


def sample_segment(
    source: VideoSource, probe: VideoProbe, segment: Segment, limits: VideoLimits | None = None
) -> Iterator[SampledFrame]:
    """The analysis frames of one planned segment (see ``plan_segments``)."""
    return sample_frames(
        source,
        probe,
        limits,
        start_s=segment.start_s,
        end_s=segment.end_s,
        fps=segment.fps,
        max_frames=segment.max_frames,
    )


def _frames_in_one_pass(
    source: VideoSource, probe: VideoProbe, limits: VideoLimits, times: list[float]
) -> dict[float, SampledFrame]:
    """{time: frame shown at that time} for sorted ``times``, decoding once from the
    keyframe before the first of them."""
    found: dict[float, SampledFrame] = {}
    prev: tuple[object, float] | None = None
    k = 0

    def take(until: float) -> None:
        nonlocal k
        converted = None
        while k < len(times) and times[k] < until:
            if prev is not None:
                if converted is None:
                    pixels, scale = _analysis_array(prev[0], probe, limits)
                    converted = SampledFrame(prev[1], pixels, scale, "requested")
                found[times[k]] = converted
            k += 1

    for frame, t, _ in _decoded_frames(source, probe, limits, times[0], math.inf):
        take(t - 1e-6)  # every wanted time before this frame shows the previous one
        if k >= len(times):
            break
        prev = (frame, float(t))
    take(math.inf)  # times after the last frame show the last frame
    return found


def frames_at(
    source: VideoSource,
    probe: VideoProbe,
    times_s: Sequence[float],
    limits: VideoLimits | None = None,
) -> dict[float, SampledFrame]:
    """{requested time: the frame shown then} (the last frame at or before it; times
    past the end get the last frame; times before the first frame are left out), e.g.
    to re-read a track's frames for the forgery detector (``tracking.score_track`` takes
    this mapping, keyed by the observations' ``time_s``) or a report. Nearby times
    share one decoding pass."""
    limits = limits or VideoLimits()
    wanted = sorted({float(t) for t in times_s})
    runs: list[list[float]] = []
    for t in wanted:
        if runs and t - runs[-1][-1] < limits.segment_s:
            runs[-1].append(t)
        else:
            runs.append([t])
    found: dict[float, SampledFrame] = {}
    for run in runs:
        found.update(_frames_in_one_pass(source, probe, limits, run))
    return found
