"""Which files a source submits, decided by their content, never by their name.

Uploads on platforms often have no extension (object-store keys, hashes) or a wrong
one (``x.jpeg.bak``), so the first bytes decide (``core.video.intake.sniff_media``):
images and videos are submitted; anything a source passes over is reported with the reason, so
nothing is skipped silently. ``admit`` is the one place that decides; the sources
(``scan``, the watched folder, the API) only ask it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.intake import _describe_non_image
from core.video.intake import SNIFF_BYTES, sniff_media

HEAD_BYTES = SNIFF_BYTES  # read this much of a file to decide

NOT_MEDIA = "not an image or video"
EMPTY = "empty file"


@dataclass(frozen=True)
class Admission:
    submit: bool
    kind: str | None  # "image" | "video" | None, from the content
    reason: str | None = None  # why it is not submitted

    def as_dict(self) -> dict:
        return {"submit": self.submit, "kind": self.kind, "reason": self.reason}


def admit(head: bytes, *, named: bool = False) -> Admission:
    """What to do with a file whose first bytes are ``head``.

    ``named``: the file is an upload by contract (named by hand on the command line,
    posted to the API, dropped in the watched folder), so even one that is not an image
    is submitted: its upload is then rejected with the precise reason (``not_an_image``,
    ``truncated``...) and the caller sees it. Files merely found in a scanned folder are
    submitted only when they are media; the rest are listed with the reason.
    """
    kind = sniff_media(head)
    # A video container outside the allow-list (FLV, MPEG-TS) is still a video: the
    # video intake rejects it as unsupported_format, which says more than a skip.
    if kind is not None or named:
        return Admission(True, kind)
    if not head:
        return Admission(False, None, EMPTY)
    return Admission(False, None, f"{NOT_MEDIA} ({_describe_non_image(head)})")


def read_head(path, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a regular file, opened non-blocking (a FIFO never hangs
    the scan); OSError when it cannot be read."""
    import os

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        return os.read(fd, n)
    finally:
        os.close(fd)
