"""Images for reviewers: a stored picture scaled for the screen, with the face box drawn."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

SCREEN_SIDE = 1280
UPLOAD_BOX = "#d32f2f"
REFERENCE_BOX = "#2e7d32"
ORIENTATION = 0x0112  # EXIF tag


def marked_jpeg(
    path: Path, box: list[float] | None, colour: str = UPLOAD_BOX, side: int = SCREEN_SIDE
) -> bytes:
    """The image at ``path`` as a JPEG of at most ``side`` pixels, ``box`` (in the stored
    image's pixels, as detection saw it) drawn on it."""
    with Image.open(path) as im:
        full_w, full_h = im.size
        if im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):
            full_w, full_h = full_h, full_w  # intake turned it upright: boxes are upright
        im.draft("RGB", (side, side))  # JPEG: decode at reduced size
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    scale = min(1.0, side / max(rgb.size))
    if scale < 1.0:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
    if box:
        k = rgb.width / full_w
        x1, y1, x2, y2 = (v * k for v in box)
        width = max(2, round(max(rgb.size) / 300))
        ImageDraw.Draw(rgb).rectangle([x1, y1, x2, y2], outline=colour, width=width)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def face_jpeg(path: Path, box: list[float], side: int = 320, margin: float = 0.5) -> bytes:
    """A square crop around ``box`` (plus ``margin`` of its size on every side), for
    putting a reference face beside the upload's face."""
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1) * (0.5 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = rgb.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    crop = crop.resize((side, side))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(path: Path) -> bytes:
    """A stored PNG (face crops are stored as PNG), re-encoded so only pixels go out."""
    with Image.open(path) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()
