"""Test videos made on the fly with PyAV, as the bytes an upload would carry.

Like ``tests/imagegen.py``: every function returns ``bytes``; clips are tiny (64x48 to
160x120, a few seconds) so a test can make dozens of them. The default picture is
:func:`moving_pattern`: a gradient with a white block that moves one step per frame,
so consecutive frames differ and a frame's index can be read back from the block.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np

from core.demo.video import encode_video

W, H = 96, 64
BLOCK = 8


def moving_pattern(n: int, width: int = W, height: int = H, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` RGB frames: a smooth gradient with a white 8x8 block at x = i (mod width)."""
    x = np.linspace(0, 200, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 120, height, dtype=np.float32)[:, None].repeat(width, 1)
    base = np.stack([x, y, np.full_like(x, 60 + seed * 40)], axis=-1).astype(np.uint8)
    for i in range(n):
        frame = base.copy()
        col = (i * 2) % (width - BLOCK)
        frame[8 : 8 + BLOCK, col : col + BLOCK] = 255
        yield frame


def flat(n: int, value: int, width: int = W, height: int = H) -> Iterator[np.ndarray]:
    for _ in range(n):
        yield np.full((height, width, 3), value, np.uint8)


def clip(
    n: int = 20,
    fps: float = 10,
    *,
    container: str = "mp4",
    codec: str = "mpeg4",
    width: int = W,
    height: int = H,
    frames: Iterable[np.ndarray] | None = None,
    gop: int | None = None,
) -> bytes:
    """A clip of ``n`` frames (default :func:`moving_pattern`) in ``container``."""
    buf = io.BytesIO()
    pictures = frames if frames is not None else moving_pattern(n, width, height)
    encode_video(None, pictures, fps, codec=codec, container=container, buffer=buf, gop=gop)
    return buf.getvalue()


def container_clips() -> dict[str, bytes]:
    """One valid clip per accepted container (2 s at 10 fps)."""
    return {
        "mp4": clip(container="mp4", codec="libx264"),
        "mov": clip(container="mov", codec="libx264"),
        "matroska": clip(container="matroska", codec="mpeg4"),
        "webm": clip(container="webm", codec="libvpx"),
        "avi": clip(container="avi", codec="mpeg4"),
    }


def cut_clip(cut_at: int = 13, n: int = 30, fps: float = 10) -> bytes:
    """Dark frames, then from frame ``cut_at`` bright, different frames: one scene cut."""
    dark = list(moving_pattern(cut_at, seed=0))
    bright = [255 - f for f in moving_pattern(n - cut_at, seed=3)]
    return clip(n, fps, frames=[*dark, *bright])


def rotated(degrees: int) -> bytes:
    """MP4 with a display rotation; the stored frames have a white block top-left."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.set_display_rotation(degrees)
        for _ in range(5):
            a = np.zeros((H, W, 3), np.uint8)
            a[:16, :16] = 255
            out.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(s.encode())
    return buf.getvalue()


# --- bad videos ------------------------------------------------------------------------------


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def audio_only() -> bytes:
    """An MP4 (M4A) with one AAC track and no video."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 16000
            out.mux(s.encode(frame))
        out.mux(s.encode())
    return buf.getvalue()


def zero_frames() -> bytes:
    """An AVI whose header declares a video stream with no frames in it."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="avi")
    s = out.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    out.start_encoding()
    out.close()
    return buf.getvalue()


def undecodable(n: int = 30) -> bytes:
    """An MP4 with a valid MPEG-4 video track whose packets are random bytes."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    s = out.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    out.start_encoding()
    rng = np.random.default_rng(0)
    for i in range(n):
        packet = av.Packet(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
        packet.stream = s
        packet.pts = packet.dts = i
        packet.time_base = Fraction(1, 10)
        packet.is_keyframe = True
        out.mux(packet)
    out.close()
    return buf.getvalue()


def absurd_fps(fps: int = 1000) -> bytes:
    return clip(10, fps, codec="libx264")


def many_streams(n_audio: int = 40) -> bytes:
    """A Matroska file with one short video stream and ``n_audio`` (empty) audio streams."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for _ in range(n_audio):
            out.add_stream("pcm_s16le", rate=8000)
        for rgb in moving_pattern(10):
            out.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(s.encode())
    return buf.getvalue()


def duration_lie(declared_ms: float = 500.0, n: int = 100) -> bytes:
    """A 10 s Matroska clip whose Segment Info declares ``declared_ms`` milliseconds
    (the Duration element, ID 0x4489, patched in place)."""
    data = bytearray(clip(n, 10, container="matroska"))
    pos = data.find(b"\x44\x89")
    size = data[pos + 2] & 0x7F
    fmt = {8: ">d", 4: ">f"}[size]
    data[pos + 3 : pos + 3 + size] = struct.pack(fmt, declared_ms)
    return bytes(data)


def flv() -> bytes:
    return clip(10, container="flv", codec="flv")


def mpegts() -> bytes:
    return clip(10, container="mpegts")


def wav() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        out.mux(s.encode(frame))
        out.mux(s.encode())
    return buf.getvalue()


def size_switch(small: tuple[int, int] = (W, H), big: tuple[int, int] = (960, 640)) -> bytes:
    """An AVI whose header (and first second) is ``small`` but whose MPEG-4 stream
    switches to ``big`` frames after 1 s (a new in-band VOL header, as a spliced file
    has): only decoding can see it."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="avi")
    s = out.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = *small, "yuv420p"
    out.start_encoding()
    enc = av.CodecContext.create("mpeg4", "w")
    enc.width, enc.height, enc.pix_fmt = *big, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 10), 10
    enc.open()
    n = 0
    for rgb in moving_pattern(10, *small):
        for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            out.mux(p)
            n += 1
    for p in s.encode():
        out.mux(p)
        n += 1
    frames = [av.VideoFrame.from_ndarray(rgb, format="rgb24") for rgb in moving_pattern(10, *big)]
    for i, frame in enumerate([*frames, None]):
        if frame is not None:
            frame.pts = i
        for p in enc.encode(frame):
            p.stream, p.pts, p.dts, p.time_base = s, n, n, Fraction(1, 10)
            out.mux(p)
            n += 1
    out.close()
    return buf.getvalue()


class _Unseekable:
    """A write-only sink: FFmpeg then writes a "live" file, as a browser's MediaRecorder
    does (Matroska sizes unknown, no Duration element)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk) -> int:
        self.data += bytes(chunk)
        return len(chunk)

    def seekable(self) -> bool:
        return False


def streamed_webm(n: int = 50, fps: int = 10) -> bytes:
    sink = _Unseekable()
    with av.open(sink, "w", format="webm") as out:
        s = out.add_stream("libvpx", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for rgb in moving_pattern(n):
            out.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(s.encode())
    return bytes(sink.data)
