"""Image intake: turn untrusted upload bytes into RGB pixels, or refuse with a reason.

Everything an upload can do wrong ends in ``core.errors.Rejected(code, message)``;
nothing else escapes ``decode_image``. Codes (stable, machine-readable):

=======================  =================================================================
``not_found``            the path does not exist (``read_bytes`` only)
``not_a_file``           a directory, FIFO, device, socket... (``read_bytes`` only)
``unreadable``           the OS refused to read it (``read_bytes`` only)
``empty``                zero bytes
``too_large``            more bytes than ``max_bytes``
``not_an_image``         HTML, text, PDF, archives, random bytes
``unsupported_format``   a real image format outside the allow-list (HEIC, PSD, ICO, SVG...)
``too_many_pixels``      width x height over ``max_pixels`` (or over Pillow's own bomb limit)
``too_large_dimensions`` one side over ``max_side``
``too_large_decoded``    width x height x bytes per pixel over ``max_decoded_bytes``
``too_small``            one side under ``min_side``
``truncated``            the file ends before the image data does
``corrupt``              the container or the compressed data is broken
``unsupported_mode``     a pixel layout we cannot turn into RGB
``decode_failed``        anything else the decoder raised
=======================  =================================================================

Order of work, cheapest first: size of the bytes, identification of the format
from the header (allow-list), pixel-count, side and decoded-size checks from the
header, only then the actual decode. The decoded size counts the samples the file
declares (a 16-bit RGBA PNG holds 8 bytes a pixel): a file within the pixel limit can
still need several times the memory of an 8-bit one to decode and convert. Pillow's
global settings (``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``) are read, never
written, so this module cannot change how other code in the process decodes images.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageMode, ImageOps, UnidentifiedImageError

from core.errors import Rejected
from core.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

REJECTION_CODES: frozenset[str] = frozenset(
    {
        "not_found", "not_a_file", "unreadable", "empty", "too_large", "not_an_image",
        "unsupported_format", "too_many_pixels", "too_large_dimensions", "too_small",
        "too_large_decoded",
        "truncated", "corrupt", "unsupported_mode", "decode_failed",
    }
)  # fmt: skip

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")

# Transparent pixels are composited over white: that is how browsers and most
# viewers show a transparent PNG on a page, so it is what the uploader saw.
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

METADATA_VALUE_MAX = 2048  # characters kept per metadata value
METADATA_MAX_KEYS = 64  # a PNG can carry thousands of text chunks; keep the first few
_XMP_SCAN_MAX = 1 << 18  # how much of an XMP packet we search (and scan raw bytes for)
_READ_CHUNK = 1 << 20

# IPTC DigitalSourceType codes that declare generative-AI involvement.
AI_SOURCE_TYPES: tuple[str, ...] = (
    "trainedAlgorithmicMedia",
    "compositeSynthetic",
    "compositeWithTrainedAlgorithmicMedia",
)


def _default(name: str) -> int:
    return int(Settings.model_fields[name].default)


@dataclass(frozen=True)
class IntakeLimits:
    """What an upload may be. Defaults are those of ``core.settings.Settings``."""

    max_bytes: int = field(default_factory=lambda: _default("max_upload_bytes"))
    max_pixels: int = field(default_factory=lambda: _default("max_pixels"))
    max_side: int = field(default_factory=lambda: _default("max_side"))
    min_side: int = field(default_factory=lambda: _default("min_side"))
    max_decoded_bytes: int = field(default_factory=lambda: _default("max_decoded_bytes"))

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_side=settings.max_side,
            min_side=settings.min_side,
            max_decoded_bytes=settings.max_decoded_bytes,
        )


@dataclass
class DecodedImage:
    pixels: np.ndarray  # H x W x 3 uint8 RGB, EXIF orientation applied, writeable
    width: int
    height: int
    format: str  # Pillow's format name: "JPEG", "PNG", ...
    sha256: str  # hex digest of the original bytes (before any conversion)
    n_frames: int = 1  # >1 for animations and multi-page files; pixels are frame 0
    metadata: dict[str, str] = field(default_factory=dict)  # provenance text, see below


# --- reading ---------------------------------------------------------------------------


def _check_stat(st: os.stat_result, path: Path, limits: IntakeLimits) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise Rejected("not_a_file", f"{path} is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise Rejected("not_a_file", f"{path} is not a regular file (device, pipe or socket)")
    if st.st_size > limits.max_bytes:
        raise Rejected(
            "too_large", f"{path} has {st.st_size} bytes; the limit is {limits.max_bytes}"
        )


def read_bytes(path: Path, limits: IntakeLimits) -> bytes:
    """Read a whole upload into memory, refusing anything that is not a regular file
    of at most ``limits.max_bytes``.

    The size is checked from ``stat`` before reading, again on the opened
    descriptor (the path could be swapped for a FIFO in between; opening with
    O_NONBLOCK keeps that from hanging) and a third time while reading, so a file
    that grows meanwhile cannot make us read more than ``max_bytes + 1`` bytes."""
    path = Path(path)
    try:
        _check_stat(path.stat(), path, limits)
    except FileNotFoundError as e:
        raise Rejected("not_found", f"{path} does not exist") from e
    except OSError as e:
        raise Rejected("unreadable", f"cannot stat {path}: {e.strerror or e}") from e

    flags = os.O_RDONLY
    for name in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise Rejected("not_found", f"{path} disappeared before it could be read") from e
    except OSError as e:
        raise Rejected("unreadable", f"cannot open {path}: {e.strerror or e}") from e

    with os.fdopen(fd, "rb", buffering=0) as f:
        _check_stat(os.fstat(f.fileno()), path, limits)
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                chunk = f.read(min(_READ_CHUNK, limits.max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limits.max_bytes:
                    raise Rejected(
                        "too_large",
                        f"{path} grew past the limit of {limits.max_bytes} bytes while reading",
                    )
        except OSError as e:
            raise Rejected("unreadable", f"cannot read {path}: {e.strerror or e}") from e
    return b"".join(chunks)


def load_image(path: Path, limits: IntakeLimits) -> DecodedImage:
    """``read_bytes`` + ``decode_image``. The file name (and its extension) is ignored:
    a ``.jpg`` that holds a PNG is decoded as PNG, one that holds HTML is refused."""
    return decode_image(read_bytes(path, limits), limits)


# --- identification ------------------------------------------------------------------------


@cache
def _available(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The given Pillow format ids that this Pillow build can open.

    ``Image.open(formats=...)`` raises KeyError for an id whose plugin failed to
    import (e.g. WEBP without libwebp), so we only ever pass registered ones."""
    Image.init()
    return tuple(f for f in formats if f in Image.OPEN)


# Signatures of the allowed formats: bytes that start like one of these but that
# Pillow cannot identify are a broken file of that format, not "not an image".
_ALLOWED_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff"),
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n"),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    ("WEBP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"),
    ("BMP", lambda d: d[:2] == b"BM" and d[6:10] == b"\x00\x00\x00\x00"),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
)

# Other image formats Pillow can identify (header parsing only, never decoded here),
# limited to those with a real signature so random bytes are not "recognised".
_OTHER_PILLOW_FORMATS: tuple[str, ...] = (
    "AVIF", "PSD", "ICO", "ICNS", "JPEG2000", "QOI", "DDS", "PPM", "SGI", "EPS", "BLP",
    "FITS", "FLI", "IM", "DCX", "CUR", "WMF", "XPM",
)  # fmt: skip

_ISOBMFF_IMAGE_BRANDS = {
    b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
    b"hevx": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF",
}  # fmt: skip


def _sniff_unsupported(data: bytes) -> str | None:
    """Name of a well-known image format Pillow has no plugin for, from its magic."""
    if data[4:8] == b"ftyp":
        brand = _ISOBMFF_IMAGE_BRANDS.get(data[8:12])
        if brand:
            return brand
    if data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def sniff_image_format(head: bytes) -> str | None:
    """The image format that the first bytes of a file announce, allowed or not
    ("JPEG", "PNG", "HEIC", "SVG", "ICO"...), or None when they announce no image.

    Signatures only, nothing is decoded: this is what a scanner uses to decide which
    intake (image or video) an upload goes to; the intake then has the final say."""
    for name, matches in _ALLOWED_SIGNATURES:
        if matches(head):
            return name
    name = _sniff_unsupported(head)
    if name is not None:
        return name
    try:
        with Image.open(io.BytesIO(head), formats=_available(_OTHER_PILLOW_FORMATS)) as im:
            return im.format or None
    except Exception:  # identification is best effort
        return None


def _describe_non_image(data: bytes) -> str:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head or b"<body" in head:
        return "an HTML page"
    if head.startswith(b"<?xml"):
        return "an XML document"
    if head.startswith((b"{", b"[")):
        return "JSON or other text"
    if data[:4] == b"PK\x03\x04":
        return "a ZIP archive"
    if data[:2] == b"\x1f\x8b":
        return "gzip-compressed data"
    try:
        text = data[:1024].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
        return "plain text"
    return "unrecognised binary data"


def _identify_failure(data: bytes) -> Rejected:
    """The Rejected for bytes none of the allowed decoders would open."""
    for name, matches in _ALLOWED_SIGNATURES:
        if matches(data):
            return Rejected(
                "corrupt", f"the file starts like a {name} image but its header is unreadable"
            )
    name = _sniff_unsupported(data)
    if name is None:
        try:
            with Image.open(io.BytesIO(data), formats=_available(_OTHER_PILLOW_FORMATS)) as im:
                name = im.format or "unknown"
        except Exception:  # identification is best effort, never fatal
            name = None
    if name is not None:
        return Rejected(
            "unsupported_format",
            f"{name} images are not accepted; use one of {', '.join(ALLOWED_FORMATS)}",
        )
    return Rejected(
        "not_an_image",
        f"the data is not an image: it looks like {_describe_non_image(data)} "
        f"(starts with {data[:8].hex(' ')})",
    )


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data), formats=_available(ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Raised from the header alone (the Warning only when warnings are errors).
        raise Rejected("too_many_pixels", f"the header declares a decompression bomb: {e}") from e
    except UnidentifiedImageError:
        raise _identify_failure(data) from None
    except EOFError as e:
        raise Rejected("truncated", "the file ends inside its header") from e
    except Exception as e:  # a plugin choked on a header it accepted
        raise Rejected("corrupt", f"unreadable image header: {type(e).__name__}: {e}") from e


# --- checks from the header ----------------------------------------------------------------


def _check_size(width: int, height: int, limits: IntakeLimits) -> None:
    if width <= 0 or height <= 0:
        raise Rejected("corrupt", f"the header declares an empty image ({width}x{height})")
    pixels = width * height
    # Pillow warns (and later, errors) above its own global limit; never let a
    # configured max_pixels larger than that turn a bomb into a warning-only pass.
    cap = limits.max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        cap = min(cap, Image.MAX_IMAGE_PIXELS)
    if pixels > cap:
        raise Rejected("too_many_pixels", f"{width}x{height} = {pixels} pixels; the limit is {cap}")
    if max(width, height) > limits.max_side:
        raise Rejected(
            "too_large_dimensions",
            f"{width}x{height}: a side is longer than {limits.max_side} pixels",
        )
    if min(width, height) < limits.min_side:
        raise Rejected(
            "too_small", f"{width}x{height}: a side is shorter than {limits.min_side} pixels"
        )


def sample_bytes(mode: str) -> int:
    """Bytes per pixel of a Pillow mode or raw mode: bands x bytes per band ("RGB": 3,
    "I;16B": 2, "RGBA;16B": 8); 0 for a mode Pillow does not know."""
    base, _, suffix = mode.partition(";")
    try:
        info = ImageMode.getmode(base)
    except KeyError:
        return 0
    bits = re.match(r"\d+", suffix)
    per_band = int(bits.group()) // 8 if bits else np.dtype(info.typestr).itemsize
    return len(info.bands) * max(1, per_band)


def decoded_bytes(im: Image.Image) -> int:
    """What decoding ``im`` holds, from its header alone: width x height x the larger of
    the bytes per pixel the file stores (its raw mode: 16-bit samples count 2 bytes)
    and those of the mode Pillow decodes to."""
    raw = ""
    tile = getattr(im, "tile", None) or []
    if tile:
        args = tile[0].args  # the decoder's arguments; a raw mode first, or alone
        raw = args if isinstance(args, str) else next(iter(args or ()), "")
    per_pixel = max(sample_bytes(im.mode), sample_bytes(raw if isinstance(raw, str) else ""))
    return im.size[0] * im.size[1] * per_pixel


def _check_decoded(im: Image.Image, limits: IntakeLimits) -> None:
    need = decoded_bytes(im)
    if need > limits.max_decoded_bytes:
        w, h = im.size
        raise Rejected(
            "too_large_decoded",
            f"{w}x{h} {im.mode} ({need // (w * h)} bytes a pixel) decodes to {need} bytes; "
            f"the limit is {limits.max_decoded_bytes}",
        )


# --- decoding ----------------------------------------------------------------------------


def _looks_complete(fmt: str, data: bytes) -> bool:
    """Structural end-of-data check, used only when some other code in the process
    has set ``ImageFile.LOAD_TRUNCATED_IMAGES`` (Pillow then grey-fills silently)."""
    if fmt in ("JPEG", "MPO"):
        return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda")
    if fmt == "PNG":
        return b"IEND\xaeB`\x82" in data[-4096:]
    return True


def _load(im: ImageFile.ImageFile, data: bytes) -> None:
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Rejected("too_many_pixels", f"decompression bomb: {e}") from e
    except EOFError as e:
        raise Rejected("truncated", "the file ends before the image data does") from e
    except OSError as e:
        if "truncated" in str(e):
            raise Rejected("truncated", "the file ends before the image data does") from e
        raise Rejected("corrupt", f"the image data is broken: {e}") from e
    except (SyntaxError, ValueError, struct.error, IndexError) as e:
        raise Rejected("corrupt", f"the image data is broken: {type(e).__name__}: {e}") from e
    except MemoryError as e:
        raise Rejected("decode_failed", "not enough memory to decode the image") from e
    except Exception as e:  # whatever else a decoder raises is not our crash
        raise Rejected("decode_failed", f"decoding failed: {type(e).__name__}: {e}") from e
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _looks_complete(im.format or "", data):
        raise Rejected("truncated", "the file ends before the image data does")


def _orient(im: Image.Image) -> Image.Image:
    """Apply the EXIF (or XMP) orientation; a broken EXIF block means no rotation."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            out = ImageOps.exif_transpose(im)
            if out is not None:
                return out
    except Exception:  # EXIF is untrusted; keep the stored orientation
        log.debug("ignoring unreadable EXIF orientation", exc_info=True)
    return im


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Rescale one-channel 16/32-bit integer or float pixels to 0..255 (not clip)."""
    if mode.startswith("I;16") or (
        mode == "I" and arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 0xFFFF
    ):
        # Exact 16->8 mapping: round(v * 255 / 65535); 0 -> 0, 65535 -> 255, v*257 -> v.
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "F" and values.size and values.min() >= 0.0 and values.max() <= 1.0:
        return np.round(values * 255).astype(np.uint8)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def to_rgb(im: Image.Image, background: tuple[int, int, int] = BACKGROUND_RGB) -> Image.Image:
    """Any Pillow mode -> "RGB". Alpha (an alpha band, or a tRNS/GIF transparency
    entry) is composited over ``background``; 16-bit and float are rescaled."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode), mode="L").convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", im.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "RGB":
        return im
    return im.convert("RGB")


def _frame_count(im: Image.Image) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # a broken later frame does not spoil the first
        return 1


# --- provenance metadata -------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    elif isinstance(value, tuple):  # e.g. multi-valued TIFF ASCII tags
        value = " ".join(_text(v) for v in value)
    return str(value).replace("\x00", " ").strip()


def _put(meta: dict[str, str], key: str, value: object, prefix: str) -> None:
    text = _text(value)
    if not text or len(meta) >= METADATA_MAX_KEYS:
        return
    key = key[:80]
    if key in meta and meta[key] != text[:METADATA_VALUE_MAX]:
        key = f"{prefix}:{key}"  # e.g. EXIF Software and a PNG "Software" chunk disagree
    meta.setdefault(key, text[:METADATA_VALUE_MAX])


def _user_comment(raw: object) -> str:
    """EXIF UserComment: an 8-byte charset id, then the text (where A1111-style
    Stable Diffusion front-ends put their generation parameters)."""
    if not isinstance(raw, bytes):
        return _text(raw)
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace")
        # No BOM: guess the byte order from where the zero bytes of ASCII text sit.
        big = body[0::2].count(0) >= body[1::2].count(0)
        return body.decode("utf-16-be" if big else "utf-16-le", "replace")
    if head.startswith(b"ASCII"):
        return body.decode("ascii", "replace")
    return _text(body if head == b"\x00" * 8 else raw)


_EXIF_BASE_TAGS = ("Software", "Make", "Model", "Artist", "ImageDescription", "Copyright")


def _exif_fields(im: Image.Image, data: bytes, meta: dict[str, str]) -> None:
    exif = im.getexif()
    for name in _EXIF_BASE_TAGS:
        value = exif.get(ExifTags.Base[name])
        if value is not None:
            _put(meta, name, value, "exif")
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if ExifTags.Base.DateTimeOriginal in sub:
        _put(meta, "DateTimeOriginal", sub[ExifTags.Base.DateTimeOriginal], "exif")
    if ExifTags.Base.UserComment in sub:
        _put(meta, "UserComment", _user_comment(sub[ExifTags.Base.UserComment]), "exif")


def _text_fields(im: Image.Image, data: bytes, meta: dict[str, str]) -> None:
    """PNG tEXt/zTXt/iTXt chunks ("parameters", "prompt", "workflow", "Software"...)
    and JPEG/GIF/WebP comments."""
    text_chunks = getattr(im, "text", None) if im.format == "PNG" else None
    for key, value in (text_chunks or {}).items():
        if key == "XML:com.adobe.xmp" or key.startswith("Raw profile type"):
            continue  # XMP is parsed below; ImageMagick's hex blobs are not text
        _put(meta, key, value, "png")
    if "comment" in im.info:
        _put(meta, "Comment", im.info["comment"], "comment")


def _xmp_field(xmp: str, name: str) -> str | None:
    """One simple XMP property, as an attribute, an element, or an rdf:resource.

    Regular expressions instead of an XML parser: packets are often malformed, and
    stdlib XML parsers are not hardened (defusedxml is not a dependency). Every
    pattern starts with a literal and every repeat is bounded, so a hostile packet
    full of near-matches costs a few kB of scanning per occurrence, not quadratic time."""
    for pattern in (
        rf"""(?<=[:\s]){name}\s{{0,16}}=\s{{0,16}}(?:"([^"]{{0,4096}})"|'([^']{{0,4096}})')""",
        rf"""(?<=[:<]){name}(?:\s[^>]{{0,512}})?>([^<]{{0,4096}})<""",
        rf"""(?<=[:<]){name}\s[^>]{{0,512}}?rdf:resource\s{{0,16}}=\s{{0,16}}"""
        rf"""(?:"([^"]{{0,4096}})"|'([^']{{0,4096}})')""",
    ):
        m = re.search(pattern, xmp)
        if m:
            value = next((g for g in m.groups() if g), "").strip()
            if value:
                return html.unescape(value)
    return None


def _xmp_packets(im: Image.Image, data: bytes) -> list[str]:
    packets: list[object] = [im.info.get("xmp"), im.info.get("XML:com.adobe.xmp")]
    tag_v2 = getattr(im, "tag_v2", None)  # TIFF keeps XMP in tag 700
    if tag_v2 is not None:
        packets.append(tag_v2.get(700))
    found = [_text(p) for p in packets if p]
    if not found:  # GIF, WebP, or layouts Pillow does not surface: scan the bytes
        start = data.find(b"<x:xmpmeta")
        if start >= 0:
            end = data.find(b"</x:xmpmeta>", start, start + _XMP_SCAN_MAX)
            if end > start:
                found.append(_text(data[start : end + 12]))
    return found


def _xmp_fields(im: Image.Image, data: bytes, meta: dict[str, str]) -> None:
    for xmp in _xmp_packets(im, data):
        for name in ("CreatorTool", "DigitalSourceType"):
            value = _xmp_field(xmp[:_XMP_SCAN_MAX], name)
            if value:
                _put(meta, name, value, "xmp")


def _has_c2pa(im: Image.Image, data: bytes) -> bool:
    """Whether a C2PA manifest store (a JUMBF box labelled "c2pa") is embedded.

    Presence only: the manifest's signature is not verified here."""
    fmt = im.format
    if fmt in ("JPEG", "MPO"):
        # APP11 segments: "JP", 2-byte instance, 4-byte sequence, then JUMBF boxes.
        return any(
            marker == "APP11" and seg[:2] == b"JP" and b"jumb" in seg[:64] and b"c2pa" in seg
            for marker, seg in getattr(im, "applist", [])
        )
    if fmt == "PNG":
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"caBX":
                return True
            if kind == b"IEND":
                break
            pos += 12 + length
        return False
    if fmt == "WEBP":
        pos = 12
        while pos + 8 <= len(data):
            kind, length = struct.unpack("<4sI", data[pos : pos + 8])
            if kind == b"C2PA":
                return True
            pos += 8 + length + (length & 1)
    return False


def _c2pa_fields(im: Image.Image, data: bytes, meta: dict[str, str]) -> None:
    if _has_c2pa(im, data):
        meta["c2pa"] = "present"


def extract_metadata(im: Image.Image, data: bytes) -> dict[str, str]:
    """Provenance text for the forgery detector, as a flat dict of short strings.

    Keys: EXIF ``Software Make Model Artist ImageDescription Copyright
    DateTimeOriginal UserComment``; PNG text chunks under their own keyword
    (``parameters``, ``prompt``, ``workflow``...); ``Comment``; XMP
    ``CreatorTool`` and ``DigitalSourceType`` (see ``declared_ai_source``);
    ``c2pa`` = "present". A key that is already taken with a different value
    gets a source prefix (``png:Software``). Values are cut to
    ``METADATA_VALUE_MAX`` characters. Each source is parsed on its own and a
    failure only leaves that source out: metadata never rejects an image."""
    meta: dict[str, str] = {}
    for part in (_exif_fields, _text_fields, _xmp_fields, _c2pa_fields):
        try:
            part(im, data, meta)
        except Exception:  # untrusted metadata must not fail the upload
            log.debug("metadata source %s failed", part.__name__, exc_info=True)
    return meta


def declared_ai_source(metadata: dict[str, str]) -> str | None:
    """The IPTC DigitalSourceType code if the file declares itself AI-generated."""
    value = metadata.get("DigitalSourceType", "")
    code = value.rstrip("/").rsplit("/", 1)[-1]
    return code if code in AI_SOURCE_TYPES else None


# --- entry point ---------------------------------------------------------------------------


def decode_image(data: bytes, limits: IntakeLimits) -> DecodedImage:
    """Decode untrusted bytes to RGB pixels, or raise ``Rejected`` (see module doc)."""
    if not data:
        raise Rejected("empty", "the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise Rejected("too_large", f"{len(data)} bytes; the limit is {limits.max_bytes}")

    im = _open(data)
    with im:
        fmt = im.format or "unknown"
        if fmt not in ALLOWED_FORMATS:  # cannot happen with formats=..., kept as a guard
            raise Rejected("unsupported_format", f"{fmt} images are not accepted")
        _check_size(*im.size, limits)
        _check_decoded(im, limits)
        _load(im, data)
        metadata = extract_metadata(im, data)
        try:
            rgb = to_rgb(_orient(im))
        except ValueError as e:  # Pillow: "conversion from X to Y not supported"
            raise Rejected("unsupported_mode", f"cannot convert {im.mode} pixels to RGB") from e
        except Exception as e:
            raise Rejected("decode_failed", f"conversion failed: {type(e).__name__}: {e}") from e
        pixels = np.array(rgb, dtype=np.uint8)  # a copy: writeable, owns its memory
        # Counting frames seeks through the file, so only after frame 0 is in hand.
        n_frames = _frame_count(im)

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise Rejected("decode_failed", f"unexpected pixel array shape {pixels.shape}")
    height, width = pixels.shape[:2]
    return DecodedImage(
        pixels=pixels,
        width=width,
        height=height,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        n_frames=n_frames,
        metadata=metadata,
    )
