"""Video intake: tell images from videos, and probe a video under limits before decoding.

``sniff_media(head)`` says from the first bytes whether an upload is an image, a video
or neither (the scanner and the submit path route on it). ``probe_video(source, limits)``
checks a video the cheap way first and refuses it with ``core.errors.Rejected(code,
message)``; nothing else escapes it. Codes (stable, machine-readable; the ones shared
with ``core.intake`` mean the same thing there):

=======================  =================================================================
``not_found``            the path does not exist
``not_a_file``           a directory, FIFO, device or socket
``unreadable``           the OS refused to read it
``empty``                zero bytes
``too_large``            more bytes than ``max_bytes``
``not_a_video``          an image, text, an audio-only format, random bytes...
``unsupported_format``   a real video container outside the allow-list (FLV, MPEG-TS, Ogg...)
``truncated``            the file ends before its container says it does
``corrupt``              the container is unreadable
``no_video_stream``      no video stream (audio only, or only a cover picture)
``no_frames``            a video stream with zero frames, or none of them decodes
``unsupported_codec``    the video codec has no decoder here
``absurd_frame_rate``    declared frame rate over ``max_fps`` (or not a number)
``too_many_pixels``      frame width x height over ``max_pixels`` (declared or decoded)
``too_small``            a frame side under ``min_side``
``too_long``             duration over ``max_duration_s`` (declared, or reached while decoding)
``video_bomb``           more streams than ``max_streams``, a frame count the duration
                         cannot hold, or decoding that yields far more frames (or later
                         ones) than the header declared
=======================  =================================================================

Order of work, cheapest first: file size; the container from the magic bytes
(allow-list: MP4, MOV, MKV, WebM, AVI, never the file name); whether the file is as
long as its container structure says (top-level ISO-BMFF boxes, the Matroska Segment
size, the RIFF size), which is how a truncated upload is told from a broken one; the
headers through FFmpeg (streams, codec, size, rate, duration, frame count) against
the limits; last, decoding of the first frame only. ``core.video.sampling`` keeps the
decode-time checks (frame size, duration, frame count) for the rest of the stream.

FFmpeg is only ever handed a Python file object, with the demuxer forced to the one
the magic bytes named and every nested open refused: a path string could be read as
a protocol (``concat:``, ``subfile,``) and a probed format could be a playlist that
opens other files or URLs.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from core.errors import Rejected
from core.intake import sniff_image_format
from core.settings import Settings

REJECTION_CODES: frozenset[str] = frozenset(
    {
        "not_found", "not_a_file", "unreadable", "empty", "too_large", "not_a_video",
        "unsupported_format", "truncated", "corrupt", "no_video_stream", "no_frames",
        "unsupported_codec", "absurd_frame_rate", "too_many_pixels", "too_small", "too_long",
        "video_bomb",
    }
)  # fmt: skip

# Container names used here -> the FFmpeg demuxer that reads them.
ALLOWED_CONTAINERS: dict[str, str] = {
    "mp4": "mov",
    "mov": "mov",
    "matroska": "matroska",
    "webm": "matroska",
    "avi": "avi",
}

SNIFF_BYTES = 1024  # what sniff_media needs to see (an MPEG-TS sync needs 3 x 188)

# How many packets the first-frame check may read before it calls the stream undecodable.
FIRST_FRAME_MAX_PACKETS = 600
# Top-level ISO-BMFF boxes walked at most (a fragmented MP4 has two per fragment).
_MAX_TOP_BOXES = 200_000
_MAX_NESTED_BOXES = 4096
_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: a cover image, not a video


def _default(name: str) -> float:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class VideoLimits:
    """What a video upload may be and how much of it is analysed.

    Defaults are those of ``core.settings.Settings``."""

    max_bytes: int = field(default_factory=lambda: int(_default("max_video_bytes")))
    max_duration_s: float = field(default_factory=lambda: _default("max_video_duration_s"))
    max_pixels: int = field(default_factory=lambda: int(_default("max_video_pixels")))
    min_side: int = field(default_factory=lambda: int(_default("min_side")))
    max_fps: float = field(default_factory=lambda: _default("max_video_fps"))
    max_streams: int = field(default_factory=lambda: int(_default("max_video_streams")))
    max_frames: int = field(default_factory=lambda: int(_default("max_video_frames")))
    sample_fps: float = field(default_factory=lambda: _default("video_sample_fps"))
    max_side: int = field(default_factory=lambda: int(_default("video_max_side")))
    segment_s: float = field(default_factory=lambda: _default("video_segment_s"))

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            max_bytes=settings.max_video_bytes,
            max_duration_s=settings.max_video_duration_s,
            max_pixels=settings.max_video_pixels,
            min_side=settings.min_side,
            max_fps=settings.max_video_fps,
            max_streams=settings.max_video_streams,
            max_frames=settings.max_video_frames,
            sample_fps=settings.video_sample_fps,
            max_side=settings.video_max_side,
            segment_s=settings.video_segment_s,
        )


@dataclass(frozen=True)
class VideoProbe:
    """What the headers (and the first decoded frame) say about a video."""

    container: str  # mp4 | mov | matroska | webm | avi (from the magic bytes)
    size_bytes: int
    stream_index: int  # the analysed video stream
    codec: str  # FFmpeg decoder name: h264, hevc, vp9, mpeg4...
    width: int  # coded frame size (before display rotation)
    height: int
    duration_s: float | None  # None when the container does not say
    fps: float | None  # average frame rate, None when unknown
    declared_frames: int | None  # frame count the container declares, None when it doesn't
    n_streams: int
    rotation: int = 0  # display rotation, degrees counter-clockwise (phone videos)
    start_time_s: float = 0.0  # the stream's first timestamp; sample times count from it
    duration_measured: bool = False  # the container declared none: measured from packets

    @property
    def frame_pixels(self) -> int:
        return self.width * self.height

    def expected_frames(self, span_s: float | None = None) -> int | None:
        """Frames the headers promise over ``span_s`` seconds (default: the whole video)."""
        if span_s is None:
            if self.declared_frames:
                return self.declared_frames
            span_s = self.duration_s
        if span_s is None or not self.fps:
            return None
        return math.ceil(span_s * self.fps)


VideoSource = Path | str | bytes


# --- sniffing ---------------------------------------------------------------------------

# ISO-BMFF files begin with ftyp; old QuickTime files begin straight with one of these.
_QT_FIRST_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_ISO_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1",
                     b"avif", b"avis", b"jpx ", b"jp2 "}  # fmt: skip


def _ebml_doctype(head: bytes) -> str | None:
    # The DocType element (ID 0x4282) sits inside the EBML header, in the first bytes.
    pos = head.find(b"\x42\x82", 4, 64)
    if pos < 0 or pos + 3 > len(head):
        return None
    length_byte = head[pos + 2]
    if not length_byte & 0x80:  # only one-byte sizes occur for a short string
        return None
    n = length_byte & 0x7F
    return head[pos + 3 : pos + 3 + n].rstrip(b"\x00").decode("ascii", "replace")


def sniff_container(head: bytes) -> str | None:
    """The video container that the first bytes announce, or None.

    Allowed ones come back under their ``ALLOWED_CONTAINERS`` name; other video
    containers under a descriptive name ("flv", "mpegts", "ogg", "asf", "mpeg-ps",
    "realmedia") so they can be refused as ``unsupported_format``."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _ISO_IMAGE_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in _QT_FIRST_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if _ebml_doctype(head) == "webm" else "matroska"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[:3] == b"FLV":
        return "flv"
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "asf"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if head[:4] == b".RMF":
        return "realmedia"
    return None


def sniff_media(head: bytes) -> Literal["image", "video"] | None:
    """``"image"``, ``"video"`` or None from the first bytes of an upload (give it at
    least ``SNIFF_BYTES``). Content only, never the name: a ``.mp4`` that holds a PNG
    is an image. An unsupported video container is still ``"video"`` (the video
    intake refuses it with its name); HEIC/AVIF are images (the image intake refuses
    them). Audio-only formats, text and random bytes are None."""
    if sniff_container(head) is not None:
        return "video"
    if sniff_image_format(head) is not None:
        return "image"
    return None


# --- opening --------------------------------------------------------------------------------


def _open_path(path: Path, limits: VideoLimits) -> BinaryIO:
    """Open a regular file of at most ``max_bytes`` for reading, without following it
    into a FIFO or device (O_NONBLOCK keeps a swapped-in FIFO from hanging)."""
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise Rejected("not_found", f"{path} does not exist") from e
    except OSError as e:
        raise Rejected("unreadable", f"cannot stat {path}: {e.strerror or e}") from e
    _check_stat(st, path, limits)
    flags = os.O_RDONLY
    for name in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise Rejected("not_found", f"{path} disappeared before it could be read") from e
    except OSError as e:
        raise Rejected("unreadable", f"cannot open {path}: {e.strerror or e}") from e
    fh = os.fdopen(fd, "rb")
    try:
        _check_stat(os.fstat(fh.fileno()), path, limits)
    except Rejected:
        fh.close()
        raise
    return fh


def _check_stat(st: os.stat_result, path: Path, limits: VideoLimits) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Rejected("not_a_file", f"{path} is not a regular file")
    if st.st_size > limits.max_bytes:
        raise Rejected(
            "too_large", f"{path} has {st.st_size} bytes; the video limit is {limits.max_bytes}"
        )


@contextmanager
def open_source(source: VideoSource, limits: VideoLimits) -> Iterator[BinaryIO]:
    """A seekable binary file object for a path or for bytes, size-checked."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise Rejected("too_large", f"{len(data)} bytes; the video limit is {limits.max_bytes}")
        yield io.BytesIO(data)
        return
    fh = _open_path(Path(source), limits)
    try:
        yield fh
    finally:
        fh.close()


def _size(fh: BinaryIO) -> int:
    pos = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(pos)
    return end


# --- structure: is the file as long as its container says? ------------------------------


@dataclass
class _Structure:
    truncated: str | None = None  # why, when the file ends early
    complete: bool = True  # False when the container does not declare its length
    has_video_track: bool = False  # ISO-BMFF: a trak whose handler is 'vide'
    boxes: int = 0


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    return data if len(data) == n else b""


def _iso_boxes(
    fh: BinaryIO, start: int, end: int, limit: int, parent: bytes | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in [start, end); stops at ``limit`` boxes.
    At the top level a box that claims to end past ``end`` is yielded with its claimed
    end (the file is truncated); inside a ``parent`` box it makes the file corrupt."""
    pos, n = start, 0
    while pos + 8 <= end and n < limit:
        fh.seek(pos)
        header = _read_exact(fh, 8)
        if not header:
            return
        size, kind = struct.unpack(">I4s", header)
        payload = pos + 8
        if size == 1:
            big = _read_exact(fh, 8)
            if not big:
                yield kind, payload, end + 1  # a 64-bit size that is not there: truncated
                return
            size = struct.unpack(">Q", big)[0]
            payload += 8
        elif size == 0:  # "to the end of the file"
            size = end - pos
        if size < payload - pos:
            raise Rejected("corrupt", f"ISO-BMFF box {kind!r} at {pos} has a size of {size}")
        if parent is not None and pos + size > end:
            raise Rejected(
                "corrupt",
                f"ISO-BMFF box {kind!r} at {pos} overruns its parent {parent.decode('latin-1')!r}",
            )
        yield kind, payload, pos + size
        pos += size
        n += 1


def _iso_structure(fh: BinaryIO, size: int) -> _Structure:
    out = _Structure()
    seen_moov = False
    for kind, payload, box_end in _iso_boxes(fh, 0, size, _MAX_TOP_BOXES):
        out.boxes += 1
        if box_end > size:
            out.truncated = (
                f"the {kind.decode('latin-1')!r} box ends at byte {box_end}, "
                f"the file at byte {size}"
            )
            return out
        if kind == b"moov":
            seen_moov = True
            out.has_video_track = _iso_has_video_track(fh, payload, box_end)
    if out.boxes >= _MAX_TOP_BOXES:
        raise Rejected("video_bomb", f"more than {_MAX_TOP_BOXES} top-level boxes")
    if not seen_moov:
        # Writers put the index (moov) last unless asked otherwise: a file cut after a
        # whole box, or a recording that was never finished, has none.
        out.truncated = "the file ends without a 'moov' box (the index every MP4/MOV has)"
    return out


def _iso_has_video_track(fh: BinaryIO, start: int, end: int) -> bool:
    """Whether moov holds a trak with a 'vide' handler (trak > mdia > hdlr). The boxes
    on that path must nest properly, or the file is corrupt."""
    found = False
    for kind, payload, box_end in _iso_boxes(fh, start, end, _MAX_NESTED_BOXES, b"moov"):
        if kind != b"trak":
            continue
        for k2, p2, e2 in _iso_boxes(fh, payload, box_end, _MAX_NESTED_BOXES, b"trak"):
            if k2 != b"mdia":
                continue
            for k3, p3, _ in _iso_boxes(fh, p2, e2, _MAX_NESTED_BOXES, b"mdia"):
                if k3 == b"hdlr":
                    fh.seek(p3 + 8)  # version+flags, pre_defined, then handler_type
                    found = found or fh.read(4) == b"vide"
    return found


def _ebml_vint(fh: BinaryIO) -> tuple[int, int] | None:
    """(value, length) of an EBML variable-size integer with its marker bit removed;
    value -1 means "unknown size" (all value bits set)."""
    first = fh.read(1)
    if not first:
        return None
    b0 = first[0]
    length = 1
    while length <= 8 and not b0 & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise Rejected("corrupt", "invalid EBML size")
    rest = _read_exact(fh, length - 1) if length > 1 else b""
    if length > 1 and not rest:
        return None
    value = b0 & (0xFF >> length)
    for b in rest:
        value = (value << 8) | b
    if value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def _ebml_id(fh: BinaryIO) -> bytes | None:
    first = fh.read(1)
    if not first:
        return None
    b0 = first[0]
    length = 1
    while length <= 4 and not b0 & (0x80 >> (length - 1)):
        length += 1
    if length > 4:
        raise Rejected("corrupt", "invalid EBML element id")
    rest = _read_exact(fh, length - 1) if length > 1 else b""
    return first + rest if length == 1 or rest else None


def _matroska_structure(fh: BinaryIO, size: int) -> _Structure:
    out = _Structure()
    fh.seek(0)
    for expect in (b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67"):  # EBML header, then Segment
        element = _ebml_id(fh)
        vint = _ebml_vint(fh)
        if element is None or vint is None:
            out.truncated = "the file ends inside the Matroska header"
            return out
        if element != expect:
            if expect == b"\x18\x53\x80\x67":  # something other than a Segment first
                raise Rejected("corrupt", "the Matroska header is not followed by a Segment")
            raise Rejected("corrupt", "not a Matroska EBML header")
        length, _ = vint
        start = fh.tell()
        if length == -1:  # live/streamed file: its size is not declared
            out.complete = False
            return out
        if start + length > size:
            what = "EBML header" if expect == b"\x1a\x45\xdf\xa3" else "Segment"
            out.truncated = f"the Matroska {what} ends at byte {start + length}, the file at {size}"
            return out
        if expect == b"\x1a\x45\xdf\xa3":
            fh.seek(start + length)
    return out


def _riff_structure(fh: BinaryIO, size: int) -> _Structure:
    out = _Structure()
    fh.seek(4)
    raw = _read_exact(fh, 4)
    if not raw:
        out.truncated = "the file ends inside the RIFF header"
        return out
    declared = 8 + struct.unpack("<I", raw)[0]
    if declared > size:
        out.truncated = f"the RIFF chunk ends at byte {declared}, the file at byte {size}"
    return out


def _structure(fh: BinaryIO, container: str, size: int) -> _Structure:
    if container in ("mp4", "mov"):
        return _iso_structure(fh, size)
    if container in ("matroska", "webm"):
        return _matroska_structure(fh, size)
    return _riff_structure(fh, size)


# --- FFmpeg -----------------------------------------------------------------------------


def _refuse_nested_open(url: str, flags: int, options: dict) -> BinaryIO:
    # A demuxer asking to open another file or URL (an external data reference, a
    # playlist entry): an upload may only ever read its own bytes.
    raise PermissionError(f"refusing to open {url!r} from inside an upload")


def open_container(fh: BinaryIO, container: str, complete: bool = False):
    """``av.open`` on an upload: demuxer forced, no nested opens. Raises ``Rejected``.

    ``complete``: the file is known to be as long as its container says, so FFmpeg
    running out of data means a broken header, not a truncated file."""
    import av

    fh.seek(0)
    try:
        return av.open(
            fh,
            mode="r",
            format=ALLOWED_CONTAINERS[container],
            io_open=_refuse_nested_open,
            # Bounded probing (these are FFmpeg's defaults, written down on purpose).
            options={"probesize": str(5 * 1024 * 1024), "analyzeduration": "5000000"},
        )
    except av.error.EOFError as e:
        if complete:
            raise Rejected("corrupt", f"the {container} header runs past its own end") from e
        raise Rejected("truncated", f"the file ends inside its {container} header") from e
    except av.error.InvalidDataError as e:
        raise Rejected("corrupt", f"unreadable {container} container: {e}") from e
    except av.FFmpegError as e:
        raise Rejected("corrupt", f"FFmpeg cannot read the {container} container: {e}") from e


def _pick_video_stream(streams):
    videos = [s for s in streams if s.type == "video" and not int(s.disposition) & _ATTACHED_PIC]
    if not videos:
        return None
    default = [s for s in videos if int(s.disposition) & 0x0001]  # AV_DISPOSITION_DEFAULT
    return (default or videos)[0]


def _as_float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) else None


def _duration_s(c, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        d = _as_float(stream.duration * stream.time_base)
        if d is not None and d > 0:
            return d
    if c.duration is not None:
        d = _as_float(c.duration / 1_000_000)
        if d is not None and d > 0:
            return d
    return None


def _check_headers(c, stream, limits: VideoLimits) -> tuple[float | None, float | None]:
    """Limits on what the container declares; returns (duration_s, fps)."""
    cc = stream.codec_context
    width, height = int(cc.width or 0), int(cc.height or 0)
    if width and height:
        _check_frame_size(width, height, limits, "declares")
    duration = _duration_s(c, stream)
    if duration is not None and duration > limits.max_duration_s:
        raise Rejected(
            "too_long", f"{duration:.1f} s long; the limit is {limits.max_duration_s:.0f} s"
        )
    fps = _as_float(stream.average_rate) or _as_float(stream.guessed_rate)
    raw_rate = stream.average_rate or stream.base_rate
    if raw_rate is not None and _as_float(raw_rate) is None and fps is None:
        raise Rejected("absurd_frame_rate", f"the frame rate {raw_rate} is not a number")
    if fps is not None and fps > limits.max_fps:
        raise Rejected(
            "absurd_frame_rate",
            f"declares {fps:g} frames per second; the limit is {limits.max_fps:g}",
        )
    frames = int(stream.frames or 0)
    # A container that lists more frames than max_fps could fit in its duration.
    if frames and duration and frames > limits.max_fps * duration + 2 * limits.max_fps:
        raise Rejected("video_bomb", f"declares {frames} frames in {duration:.1f} s of video")
    if frames and frames > limits.max_fps * limits.max_duration_s:
        raise Rejected("video_bomb", f"declares {frames} frames")
    return duration, (fps if fps and fps > 0 else None)


def _check_frame_size(width: int, height: int, limits: VideoLimits, verb: str) -> None:
    if width <= 0 or height <= 0:
        raise Rejected("corrupt", f"the video {verb} an empty frame ({width}x{height})")
    if width * height > limits.max_pixels:
        raise Rejected(
            "too_many_pixels",
            f"the video {verb} {width}x{height} frames = {width * height} pixels; "
            f"the limit is {limits.max_pixels}",
        )
    if min(width, height) < limits.min_side:
        raise Rejected(
            "too_small", f"{width}x{height} frames: a side is shorter than {limits.min_side}"
        )


def configure_decoder(stream, limits: VideoLimits) -> None:
    """Decoder settings for untrusted video: FFmpeg itself refuses to allocate a frame
    over ``max_pixels`` (a stream can change size mid-way), threads chosen by FFmpeg."""
    cc = stream.codec_context
    cc.options = {**dict(cc.options or {}), "max_pixels": str(int(limits.max_pixels))}
    cc.thread_type = "AUTO"


def _first_frame(c, stream, limits: VideoLimits):
    """Decode the first frame, reading at most ``FIRST_FRAME_MAX_PACKETS`` packets."""
    import av

    packets = errors = 0
    last_error: Exception | None = None
    try:
        for packet in c.demux(stream):
            packets += 1
            try:
                frames = stream.decode(packet)  # a None packet flushes the decoder
            except av.FFmpegError as e:
                errors, last_error = errors + 1, e
                frames = []
            if frames:
                return frames[0]
            if packets >= FIRST_FRAME_MAX_PACKETS:
                break
    except av.error.EOFError as e:
        raise Rejected("truncated", "the file ends inside the first frames") from e
    except av.FFmpegError as e:
        raise Rejected("corrupt", f"reading the first packets failed: {e}") from e
    if packets <= 1:  # only the end-of-stream flush packet
        raise Rejected("no_frames", "the video stream holds no frames")
    why = f"; last decoder error: {last_error}" if last_error else ""
    raise Rejected(
        "no_frames",
        f"none of the first {packets} packets decodes to a frame ({errors} errors{why})",
    )


def probe_video(source: VideoSource, limits: VideoLimits | None = None) -> VideoProbe:
    """Check a video upload (a path or bytes) and say what it holds, or raise ``Rejected``
    (see the module doc). Decodes only the first frame."""
    limits = limits or VideoLimits()
    with open_source(source, limits) as fh:
        size = _size(fh)
        if size == 0:
            raise Rejected("empty", "the file is empty (0 bytes)")
        head = fh.read(SNIFF_BYTES)
        container = sniff_container(head)
        if container is None:
            image = sniff_image_format(head)
            what = f"a {image} image" if image else "not a video container we know"
            raise Rejected("not_a_video", f"the data is {what} (starts with {head[:8].hex(' ')})")
        if container not in ALLOWED_CONTAINERS:
            raise Rejected(
                "unsupported_format",
                f"{container} videos are not accepted; use MP4, MOV, MKV, WebM or AVI",
            )
        structure = _structure(fh, container, size)
        if structure.truncated:
            raise Rejected("truncated", structure.truncated)
        with open_container(fh, container, structure.complete) as c:
            return _probe_open(c, container, size, structure, limits)


def _probe_open(c, container: str, size: int, structure: _Structure, limits: VideoLimits):
    import av

    if len(c.streams) > limits.max_streams:
        raise Rejected("video_bomb", f"{len(c.streams)} streams; the limit is {limits.max_streams}")
    stream = _pick_video_stream(c.streams)
    if stream is None:
        if structure.has_video_track:
            raise Rejected("no_frames", "the video track holds no frames")
        kinds = sorted({s.type for s in c.streams}) or ["none"]
        raise Rejected("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
    try:
        codec = stream.codec_context.name
    except av.FFmpegError as e:  # pragma: no cover - depends on the FFmpeg build
        raise Rejected("unsupported_codec", f"no decoder for the video stream: {e}") from e
    if not codec or codec == "none":
        raise Rejected("unsupported_codec", "the video stream's codec has no decoder here")
    duration, fps = _check_headers(c, stream, limits)
    configure_decoder(stream, limits)
    frame = _first_frame(c, stream, limits)
    _check_frame_size(frame.width, frame.height, limits, "decodes to")
    start = _as_float(stream.start_time * stream.time_base) if stream.start_time else None
    measured = duration is None
    if measured:  # a streamed recording (browser WebM, live MKV) does not declare it
        duration = _measure_duration(c, stream, start or 0.0, limits)
    return VideoProbe(
        container=container,
        size_bytes=size,
        stream_index=stream.index,
        codec=codec,
        width=int(frame.width),
        height=int(frame.height),
        duration_s=duration,
        fps=fps,
        declared_frames=int(stream.frames) if stream.frames else None,
        n_streams=len(c.streams),
        rotation=int(round((frame.rotation or 0) / 90.0)) * 90 % 360,
        start_time_s=start or 0.0,
        duration_measured=measured,
    )


def _measure_duration(c, stream, start_s: float, limits: VideoLimits) -> float | None:
    """The stream's duration from its packets' timestamps, when the container declares
    none: a demux-only pass (no decoding), stopped as soon as a limit is passed."""
    import av

    end = 0.0
    packets = 0
    max_packets = limits.max_fps * (limits.max_duration_s + 2) + 30
    try:
        for packet in c.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            packets += 1
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base) - start_s
            end = max(end, t)
            if end > limits.max_duration_s:
                raise Rejected(
                    "too_long",
                    f"frames continue past {limits.max_duration_s:.0f} s (the limit)",
                )
            if packets > max_packets:
                raise Rejected("video_bomb", f"more than {max_packets:.0f} packets")
    except av.FFmpegError:  # a broken tail: what was read so far is the duration
        pass
    return end if end > 0 else None
