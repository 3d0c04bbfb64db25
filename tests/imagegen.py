"""Test inputs made on the fly, as the bytes an upload would carry.

Every function returns ``bytes`` (never writes files) so a test can feed them to
``core.intake.decode_image`` directly or write them under ``tmp_path`` with any
name it likes. Images are small (tens of pixels) to keep tests fast; the few
"huge" ones only *claim* a huge size in their header.

The default picture is :func:`pattern` (a gradient whose four corners differ),
so a test can tell whether a decoder rotated or flipped it.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

W, H = 64, 48  # landscape on purpose: a 90-degree rotation swaps the shape


# --- pixels -------------------------------------------------------------------------


def pattern(width: int = W, height: int = H) -> np.ndarray:
    """RGB uint8: red grows left->right, green top->bottom, blue is constant.

    Smooth, so JPEG keeps it within a few levels, and no two corners alike."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    b = np.full((height, width), 96, np.float32)
    return np.stack([x, y, b], axis=-1).round().astype(np.uint8)


def noise(width: int = 256, height: int = 192, seed: int = 0) -> np.ndarray:
    """Incompressible RGB content: makes files long enough to truncate meaningfully."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


# --- valid images --------------------------------------------------------------------


def jpeg(width: int = W, height: int = H, quality: int = 95, **params: object) -> bytes:
    return _save(Image.fromarray(pattern(width, height)), "JPEG", quality=quality, **params)


def png(width: int = W, height: int = H, **params: object) -> bytes:
    return _save(Image.fromarray(pattern(width, height)), "PNG", **params)


def webp(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)), "WEBP", lossless=True)


def gif(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)).quantize(64), "GIF")


def bmp(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)), "BMP")


def tiff(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)), "TIFF", compression="tiff_lzw")


def mpo(width: int = W, height: int = H) -> bytes:
    """Two-frame MPO (stereo-camera JPEG)."""
    first = Image.fromarray(pattern(width, height))
    second = Image.fromarray(pattern(width, height)[:, ::-1].copy())
    return _save(first, "MPO", save_all=True, append_images=[second])


def cmyk_jpeg(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)).convert("CMYK"), "JPEG", quality=95)


def grayscale_jpeg(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)).convert("L"), "JPEG", quality=95)


def grayscale_png(width: int = W, height: int = H) -> bytes:
    return _save(Image.fromarray(pattern(width, height)).convert("L"), "PNG")


def bilevel_png(width: int = W, height: int = H) -> bytes:
    """Mode "1": a checkerboard of 8-pixel squares."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = (((xx // 8) + (yy // 8)) % 2).astype(bool)
    return _save(Image.fromarray(board), "PNG")


def rgba_png(width: int = W, height: int = H, alpha: int = 0) -> bytes:
    """Pattern with a constant alpha (0 = fully transparent) on the left half."""
    rgba = np.dstack([pattern(width, height), np.full((height, width), 255, np.uint8)])
    rgba[:, : width // 2, 3] = alpha
    return _save(Image.fromarray(rgba), "PNG")


def la_png(width: int = W, height: int = H) -> bytes:
    """Grayscale + alpha; left half fully transparent."""
    gray = pattern(width, height)[..., 0]
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, : width // 2] = 0
    return _save(Image.fromarray(np.dstack([gray, alpha]), mode="LA"), "PNG")


def palette_png(width: int = W, height: int = H, transparent_index: int | None = 0) -> bytes:
    """Mode "P" PNG; with ``transparent_index`` the pixels of that index are transparent."""
    idx = np.zeros((height, width), np.uint8)
    idx[:, width // 2 :] = 1
    im = Image.fromarray(idx, mode="L").convert("P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    if transparent_index is None:
        return _save(im, "PNG")
    return _save(im, "PNG", transparency=transparent_index)


def one_by_one() -> bytes:
    return _save(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")


def animated_gif(n_frames: int = 3, width: int = W, height: int = H) -> bytes:
    frames = [
        Image.fromarray(np.roll(pattern(width, height), 8 * i, axis=1)).quantize(64)
        for i in range(n_frames)
    ]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def animated_webp(n_frames: int = 3, width: int = W, height: int = H) -> bytes:
    frames = [
        Image.fromarray(np.roll(pattern(width, height), 8 * i, axis=1)) for i in range(n_frames)
    ]
    return _save(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True
    )


# --- hand-made PNG (exact control over header, bit depth and chunks) -----------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC (over type + payload, as the spec says)."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def raw_png(
    width: int,
    height: int,
    idat: bytes,
    *,
    bit_depth: int = 8,
    color_type: int = 0,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """PNG from parts: IHDR as given, ``extra`` chunks before IDAT, IEND last."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr)
    for kind, payload in extra:
        body += png_chunk(kind, payload)
    return PNG_SIGNATURE + body + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png16(width: int = W, height: int = H, rgb: bool = False) -> bytes:
    """16-bit PNG (grayscale, or RGB with ``rgb``) of the pattern scaled to 0..65535.

    Each 8-bit level v becomes v * 257, so an exact 16->8 conversion gives v back."""
    pix = pattern(width, height).astype(np.uint16) * 257
    data = pix if rgb else pix[..., :1]
    rows = data.astype(">u2").reshape(height, -1).tobytes()
    stride = width * (6 if rgb else 2)
    raw = b"".join(b"\x00" + rows[r * stride : (r + 1) * stride] for r in range(height))
    return raw_png(width, height, zlib.compress(raw), bit_depth=16, color_type=2 if rgb else 0)


def huge_header_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes whose IHDR claims ``width`` x ``height`` (8-bit gray).

    The IDAT holds only one compressed row, so decoding it would fail anyway; the
    point is that it must be refused from the header, before any allocation."""
    return raw_png(width, height, zlib.compress(b"\x00" * (width + 1)))


@lru_cache(maxsize=4)
def bomb_png(side: int = 10_000) -> bytes:
    """A real decompression bomb: a valid ``side`` x ``side`` black gray PNG.

    ``side`` 10000 gives 100 MP in ~100 kB of zlib data; the stream is built in
    chunks so making it never holds the raw 100 MB in memory."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte 0 + one row of black
    parts = [comp.compress(row * 100) for _ in range(side // 100)]
    parts.append(comp.compress(row * (side % 100)))
    parts.append(comp.flush())
    return raw_png(side, side, b"".join(parts))


def png_with_text(chunks: dict[str, str], compressed: bool = False) -> bytes:
    """PNG with tEXt chunks (or zTXt with ``compressed``), e.g. {"parameters": "..."}."""
    extra = []
    for key, value in chunks.items():
        if compressed:
            payload = key.encode("latin-1") + b"\x00\x00" + zlib.compress(value.encode("latin-1"))
            extra.append((b"zTXt", payload))
        else:
            extra.append((b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")))
    pix = pattern()
    raw = b"".join(b"\x00" + pix[r].tobytes() for r in range(H))
    return raw_png(W, H, zlib.compress(raw), color_type=2, extra=tuple(extra))


def png_with_itxt(key: str, value: str) -> bytes:
    """PNG with one uncompressed international (UTF-8) text chunk."""
    payload = key.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + value.encode("utf-8")
    pix = pattern()
    raw = b"".join(b"\x00" + pix[r].tobytes() for r in range(H))
    return raw_png(W, H, zlib.compress(raw), color_type=2, extra=((b"iTXt", payload),))


def jumbf_c2pa_box() -> bytes:
    """A minimal JUMBF superbox labelled "c2pa" (the C2PA manifest store's outer box).

    Box = 4-byte length + 4-byte type + payload. The description box (``jumd``)
    holds a 16-byte content-type UUID, a toggles byte and the NUL-terminated label."""
    label = b"c2pa\x00"
    jumd_payload = b"c2pa" + bytes.fromhex("0011001000800000aa00389b7103") + b"\x03" + label
    jumd = struct.pack(">I", 8 + len(jumd_payload)) + b"jumd" + jumd_payload
    return struct.pack(">I", 8 + len(jumd)) + b"jumb" + jumd


def png_with_cabx() -> bytes:
    """PNG carrying a C2PA manifest in a ``caBX`` chunk."""
    pix = pattern()
    raw = b"".join(b"\x00" + pix[r].tobytes() for r in range(H))
    return raw_png(W, H, zlib.compress(raw), color_type=2, extra=((b"caBX", jumbf_c2pa_box()),))


# --- hand-made JPEG segments -----------------------------------------------------------


def insert_jpeg_segment(jpeg_bytes: bytes, marker: int, payload: bytes) -> bytes:
    """Insert one marker segment (e.g. 0xE1 APP1) right after SOI."""
    assert jpeg_bytes[:2] == b"\xff\xd8", "not a JPEG"
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("segment payload too long")
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return jpeg_bytes[:2] + segment + jpeg_bytes[2:]


def exif_jpeg(orientation: int | None = None, **tags: str | bytes) -> bytes:
    """Pattern JPEG with EXIF: ``orientation`` and named base-IFD or Exif-IFD text tags
    (Software, Make, Model, Artist, ImageDescription, DateTimeOriginal, ...)."""
    from PIL.ExifTags import IFD, Base

    exif = Image.Exif()
    if orientation is not None:
        exif[Base.Orientation] = orientation
    for name, value in tags.items():
        tag = Base[name]
        if name in {"DateTimeOriginal", "UserComment"}:
            exif.get_ifd(IFD.Exif)[tag] = value
        else:
            exif[tag] = value
    return jpeg(exif=exif.tobytes())


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """Stored landscape (W x H) with an EXIF orientation: 6 means "rotate 90 CW to view"."""
    return exif_jpeg(orientation=orientation)


def corrupt_exif_jpeg() -> bytes:
    """APP1 "Exif" whose TIFF header is valid but whose IFD offset and entries point
    past the end of the segment (a classic crash source for EXIF parsers)."""
    tiff_header = b"II*\x00" + struct.pack("<I", 8)
    # 200 entries announced, only one present; that one (Orientation, SHORT) is
    # fine but the next-IFD offset is garbage.
    ifd = struct.pack("<H", 200) + struct.pack("<HHII", 0x0112, 3, 1, 6) + b"\xff\xff\xff\x7f"
    return insert_jpeg_segment(jpeg(), 0xE1, b"Exif\x00\x00" + tiff_header + ifd)


def garbage_exif_jpeg() -> bytes:
    """APP1 "Exif" followed by bytes that are not a TIFF structure at all."""
    return insert_jpeg_segment(jpeg(), 0xE1, b"Exif\x00\x00" + b"\x13\x37" * 40)


XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmp:CreatorTool="{creator_tool}">
   <Iptc4xmpExt:DigitalSourceType>{source_type}</Iptc4xmpExt:DigitalSourceType>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

IPTC_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def xmp_packet(
    source_type: str = "trainedAlgorithmicMedia", creator_tool: str = "Image Generator 2.0"
) -> bytes:
    return XMP_TEMPLATE.format(
        source_type=IPTC_SOURCE + source_type, creator_tool=creator_tool
    ).encode("utf-8")


def jpeg_with_xmp(
    source_type: str = "trainedAlgorithmicMedia", creator_tool: str = "Image Generator 2.0"
) -> bytes:
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(source_type, creator_tool)
    return insert_jpeg_segment(jpeg(), 0xE1, payload)


def jpeg_with_c2pa() -> bytes:
    """JPEG with one APP11 JUMBF segment: "JP", instance 1, sequence 1, then the box."""
    payload = b"JP" + struct.pack(">HI", 1, 1) + jumbf_c2pa_box()
    return insert_jpeg_segment(jpeg(), 0xEB, payload)


# --- broken and non-images --------------------------------------------------------------


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def truncated_jpeg() -> bytes:
    return truncated(_save(Image.fromarray(noise()), "JPEG", quality=95))


def truncated_png() -> bytes:
    return truncated(_save(Image.fromarray(noise()), "PNG"))


def corrupt_png_crc() -> bytes:
    """Valid structure, but the IDAT payload is flipped so its CRC no longer matches."""
    data = bytearray(png())
    pos = data.index(b"IDAT") + 10
    data[pos] ^= 0xFF
    return bytes(data)


def html_page() -> bytes:
    """What a misconfigured crawler saves as ``photo.jpg``."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1></body></html>\n"
    )


def plain_text() -> bytes:
    return b"just some words, not a picture\n" * 4


def pdf_document() -> bytes:
    return b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def empty() -> bytes:
    return b""


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def heic_like() -> bytes:
    """The start of an HEIC file (ISO-BMFF ``ftyp`` box, brand ``heic``): a real format
    that phones produce, which Pillow cannot decode without a plugin."""
    ftyp = b"heic" + b"\x00\x00\x00\x00" + b"mif1heic"
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + b"\x00" * 64


def ico() -> bytes:
    """A Windows icon: a real image format outside the allow-list."""
    return _save(Image.fromarray(pattern(32, 32)), "ICO")


def psd_like() -> bytes:
    """A Photoshop header (signature, version 1, 3 channels, 32x32, 8-bit RGB)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 32, 32, 8, 3)
    return header + struct.pack(">I", 0) * 3 + struct.pack(">H", 0) + b"\x00" * (32 * 32 * 3)
