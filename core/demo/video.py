"""The demo's video: a short clip made from the photos the demo already uses, with one
face-swapped segment at a known time.

The clip is a slow zoom and pan over two people of insightface's ``t1.jpg`` group
photo (faces 3 and 5 from the left, both anonymous), so consecutive frames differ the
way a hand-held camera's do. Between ``swap_s[0]`` and ``swap_s[1]`` seconds face 5
carries a protected person's face, pasted with :func:`core.demo.faceswap.swap_face`
(the classic FaceSwap the demo set uses for its still fakes). Measured with the dlib
backend: the swapped face's cosine to Eileen Collins' reference is ~0.96 (the
threshold is 0.90), the real face's ~0.875.

Encoded with PyAV as H.264 in MP4 (MPEG-4 Part 2 where the FFmpeg build has no
libx264), one keyframe a second, so a segment can be decoded on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from core.demo.dataset import (
    EILEEN,
    TOM,
    _largest,
    _pts68,
    eileen_collins_portrait,
    insightface_image,
    tom_hanks_portrait,
)
from core.demo.faceswap import swap_face
from core.faces.base import FaceBackend

# t1 faces in the clip (index from the left in the dlib backend's detections) and the
# one that gets swapped. Face 5 carries both protected identities well (demo set plan).
CLIP_FACES = (3, 5)
SWAP_TARGET = 5
# The camera: a window of t1 (centre x, centre y, width) at the start and at the end.
_START = (965.0, 385.0, 620.0)
_END = (985.0, 375.0, 560.0)


@dataclass(frozen=True)
class DemoVideo:
    path: Path
    duration_s: float
    fps: int
    size: tuple[int, int]  # width, height
    identity: str | None  # who the swapped segment impersonates (None: a real clip)
    swap_s: tuple[float, float] | None  # [start, end) of the swapped segment, seconds
    target_face: int  # the t1 face (index from the left) that is swapped
    people: int = len(CLIP_FACES)  # people in every frame

    def is_swapped(self, t: float) -> bool:
        return self.swap_s is not None and self.swap_s[0] <= t < self.swap_s[1]


def video_codec() -> str:
    """H.264 when this FFmpeg build can encode it, else MPEG-4 Part 2."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_video(
    path: Path | None,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    codec: str | None = None,
    container: str | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    buffer=None,
) -> None:
    """Write RGB uint8 frames (all of one even size) as a video file, or into
    ``buffer`` (a binary file object) with ``container`` named.

    ``codec`` defaults to :func:`video_codec`; ``gop`` (frames between keyframes) to
    one second. H.264 is written at CRF 18, one thread (same frames, same bytes)."""
    import av

    codec = codec or video_codec()
    rate = Fraction(fps).limit_denominator(1001)
    target = buffer if buffer is not None else str(path)
    with av.open(target, "w", format=container) as out:
        stream = None
        for rgb in frames:
            if stream is None:
                h, w = rgb.shape[:2]
                stream = out.add_stream(codec, rate=rate)
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv420p"
                stream.codec_context.gop_size = gop or max(1, round(fps))
                opts = {"crf": "18", "preset": "veryfast", "threads": "1"} if "264" in codec else {}
                stream.options = {**opts, **(options or {})}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            out.mux(stream.encode(frame))
        if stream is not None:
            out.mux(stream.encode())


def camera_frame(picture: np.ndarray, t: float, duration_s: float, size: tuple[int, int]):
    """The window of ``picture`` the camera shows at ``t`` (linear zoom and pan),
    scaled to ``size``."""
    u = min(max(t / duration_s, 0.0), 1.0)
    cx, cy, w = (a + (b - a) * u for a, b in zip(_START, _END, strict=True))
    out_w, out_h = size
    s = out_w / w
    x0, y0 = cx - w / 2, cy - w * out_h / out_w / 2
    m = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])
    return cv2.warpAffine(picture, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)


def _source(identity: str, backend: FaceBackend) -> tuple[np.ndarray, np.ndarray]:
    if identity == EILEEN:
        rgb = eileen_collins_portrait()
    elif identity == TOM:
        rgb = tom_hanks_portrait()
    else:
        raise ValueError(f"the demo video can impersonate {EILEEN} or {TOM}, not {identity!r}")
    return rgb, _pts68(_largest(backend.detect(rgb), f"the {identity} reference"))


def build_demo_video(
    path: Path,
    *,
    identity: str | None = EILEEN,
    swap_s: tuple[float, float] | None = (2.0, 3.5),
    duration_s: float = 5.0,
    fps: int = 10,
    size: tuple[int, int] = (480, 270),
    backend: FaceBackend | None = None,
    codec: str | None = None,
    frame_hook: Callable[[float, np.ndarray], np.ndarray] | None = None,
) -> DemoVideo:
    """Write the demo clip to ``path`` and say what it holds.

    With ``identity`` None (or ``swap_s`` None) the clip is entirely real.
    ``backend`` must give 68 landmarks (default: dlib). ``frame_hook(t, rgb)`` may
    edit each frame before it is encoded (tests use it to add a scene cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if identity is None or swap_s is None:
        identity, swap_s = None, None
    t1 = insightface_image("t1.jpg")
    swapped = None
    if identity is not None:
        if backend is None:
            from core.faces.dlib_backend import DlibFaceBackend

            backend = DlibFaceBackend()
        faces = backend.detect(t1)
        if len(faces) != 6:
            raise RuntimeError(f"demo video: expected 6 faces in t1.jpg, found {len(faces)}")
        src_rgb, src_pts = _source(identity, backend)
        swapped = swap_face(src_rgb, src_pts, t1, _pts68(faces[SWAP_TARGET]))
    clip = DemoVideo(path, duration_s, fps, size, identity, swap_s, SWAP_TARGET)

    def frames() -> Iterable[np.ndarray]:
        for i in range(round(duration_s * fps)):
            t = i / fps
            picture = swapped if swapped is not None and clip.is_swapped(t) else t1
            rgb = camera_frame(picture, t, duration_s, size)
            yield frame_hook(t, rgb) if frame_hook is not None else rgb

    encode_video(path, frames(), fps, codec=codec)
    return clip
