"""Image intake: every kind of upload either decodes to sane RGB or is refused with
the exact reason code. Inputs come from tests/imagegen.py (made on the fly)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from core import intake
from core.errors import Rejected
from core.intake import (
    BACKGROUND_RGB,
    METADATA_VALUE_MAX,
    DecodedImage,
    IntakeLimits,
    declared_ai_source,
    decode_image,
    load_image,
    read_bytes,
    to_rgb,
)
from core.settings import Settings

try:  # works whether or not tests/ is a package
    from tests import imagegen as gen
except ImportError:
    import imagegen as gen

# Pillow warns about the corrupt EXIF and bomb headers these tests feed it on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Corrupt EXIF data",
    "ignore::PIL.Image.DecompressionBombWarning",
    "ignore::UserWarning:PIL.TiffImagePlugin",  # fuzzed EXIF/TIFF tags
)

LIMITS = IntakeLimits.from_settings(Settings())
W, H = gen.W, gen.H


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, in 8-bit levels."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def rejected_code(data: bytes, limits: IntakeLimits = LIMITS) -> str:
    with pytest.raises(Rejected) as info:
        decode_image(data, limits)
    assert info.value.message, "a rejection must explain itself"
    return info.value.code


# --- settings -------------------------------------------------------------------------------


def test_limits_follow_settings() -> None:
    s = Settings(max_upload_bytes=123, max_pixels=456, max_side=78, min_side=9)
    assert IntakeLimits.from_settings(s) == IntakeLimits(123, 456, 78, 9)
    assert IntakeLimits() == IntakeLimits.from_settings(Settings())


# --- inputs that must decode ------------------------------------------------------------------

# name -> (bytes factory, format, n_frames, max mean abs difference to the pattern)
GOOD: dict[str, tuple[Callable[[], bytes], str, int, float]] = {
    "jpeg": (gen.jpeg, "JPEG", 1, 3.0),
    "png": (gen.png, "PNG", 1, 0.0),
    "webp_lossless": (gen.webp, "WEBP", 1, 0.0),
    "gif": (gen.gif, "GIF", 1, 8.0),
    "bmp": (gen.bmp, "BMP", 1, 0.0),
    "tiff_lzw": (gen.tiff, "TIFF", 1, 0.0),
    "mpo": (gen.mpo, "MPO", 2, 3.0),
    "cmyk_jpeg": (gen.cmyk_jpeg, "JPEG", 1, 4.0),
    "png16_rgb": (lambda: gen.png16(rgb=True), "PNG", 1, 0.0),
    "animated_gif": (gen.animated_gif, "GIF", 3, 8.0),
    "animated_webp": (gen.animated_webp, "WEBP", 3, 0.0),
    "corrupt_exif": (gen.corrupt_exif_jpeg, "JPEG", 1, -1),  # -1: shape may rotate
    "garbage_exif": (gen.garbage_exif_jpeg, "JPEG", 1, 3.0),
}


@pytest.mark.parametrize("name", list(GOOD))
def test_decodes_valid_image(name: str) -> None:
    factory, fmt, n_frames, tolerance = GOOD[name]
    data = factory()
    img = decode_image(data, LIMITS)
    assert isinstance(img, DecodedImage)
    assert img.format == fmt
    assert img.n_frames == n_frames
    assert img.sha256 == hashlib.sha256(data).hexdigest()
    px = img.pixels
    assert px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3
    assert (img.height, img.width) == px.shape[:2]
    assert px.flags.writeable and px.flags.c_contiguous
    if tolerance >= 0:  # frame 0 of every test image is the unrotated pattern
        assert mad(px, gen.pattern()) <= tolerance


def test_gray_inputs_come_out_as_equal_channels() -> None:
    for data in (gen.grayscale_jpeg(), gen.grayscale_png()):
        px = decode_image(data, LIMITS).pixels
        assert px.shape == (H, W, 3)
        assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
        # The gray of the pattern is a blend of a left-right and a top-down ramp.
        assert px[0, 0, 0] < px[-1, -1, 0]


def test_png16_is_scaled_not_clipped() -> None:
    # Level v was stored as v * 257; exact scaling gives v back, clipping gives 255.
    expected = gen.pattern()[..., 0]
    px = decode_image(gen.png16(), LIMITS).pixels
    assert (px[..., 0] == expected).all()
    assert len(np.unique(px)) > 32


def test_bilevel_is_black_and_white() -> None:
    px = decode_image(gen.bilevel_png(), LIMITS).pixels
    assert set(np.unique(px)) == {0, 255}


@pytest.mark.parametrize("kind", ["rgba", "la"])
def test_alpha_is_composited_over_background(kind: str) -> None:
    data = gen.rgba_png() if kind == "rgba" else gen.la_png()
    px = decode_image(data, LIMITS).pixels
    left, right = px[:, : W // 2], px[:, W // 2 :]
    assert (left == np.array(BACKGROUND_RGB, np.uint8)).all()  # fully transparent half
    expected = gen.pattern()[:, W // 2 :]
    if kind == "la":
        expected = np.repeat(expected[..., :1], 3, axis=2)
    assert mad(right, expected) == 0.0


def test_half_transparent_alpha_blends() -> None:
    px = decode_image(gen.rgba_png(alpha=128), LIMITS).pixels
    src = gen.pattern()[:, : W // 2].astype(np.float64)
    blend = (src * 128 + np.array(BACKGROUND_RGB) * 127) / 255
    assert np.abs(px[:, : W // 2] - blend).max() <= 1.5


@pytest.mark.parametrize("transparent", [True, False])
def test_palette_png(transparent: bool) -> None:
    data = gen.palette_png(transparent_index=0 if transparent else None)
    px = decode_image(data, LIMITS).pixels
    left = BACKGROUND_RGB if transparent else (255, 0, 0)
    assert (px[:, : W // 2] == np.array(left, np.uint8)).all()
    assert (px[:, W // 2 :] == np.array([0, 0, 255], np.uint8)).all()


def test_transparent_gif_frame() -> None:
    im = Image.new("P", (W, H), 1)
    im.putpalette([0, 255, 0, 200, 10, 10] + [0, 0, 0] * 254)
    im.paste(0, (0, 0, W // 2, H))
    buf = io.BytesIO()
    im.save(buf, "GIF", transparency=0)
    px = decode_image(buf.getvalue(), LIMITS).pixels
    assert (px[:, : W // 2] == np.array(BACKGROUND_RGB, np.uint8)).all()
    assert (px[:, W // 2 :] == np.array([200, 10, 10], np.uint8)).all()


# --- to_rgb on modes files rarely produce --------------------------------------------------


def test_to_rgb_16_and_32_bit_integer() -> None:
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    for mode in ("I;16", "I;16B"):
        raw = ramp.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
        im = Image.frombytes(mode, (16, 16), raw)
        out = np.asarray(to_rgb(im))
        assert out.shape == (16, 16, 3) and out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
        assert len(np.unique(out)) > 200  # a ramp stays a ramp
    im = Image.fromarray(ramp.astype(np.int32), mode="I")
    assert np.asarray(to_rgb(im))[-1, -1, 0] == 255
    signed = Image.fromarray(np.arange(-128, 128, dtype=np.int32).reshape(16, 16) * 1000, "I")
    out = np.asarray(to_rgb(signed))
    assert out.min() == 0 and out.max() == 255


def test_to_rgb_float() -> None:
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out = np.asarray(to_rgb(Image.fromarray(unit, mode="F")))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    wide = unit * 5000 - 2000
    wide[0, 1] = np.nan
    out = np.asarray(to_rgb(Image.fromarray(wide, mode="F")))
    assert out.min() == 0 and out.max() == 255
    flat = np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 7, np.float32), mode="F")))
    assert (flat == 0).all()


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "HSV", "LAB", "1", "L", "P", "RGBX"])
def test_to_rgb_color_modes(mode: str) -> None:
    base = Image.fromarray(gen.pattern())
    out = to_rgb(base.convert(mode))
    assert out.mode == "RGB" and out.size == (W, H)


@pytest.mark.parametrize("mode", ["RGBA", "RGBa", "LA", "PA"])
def test_to_rgb_alpha_modes(mode: str) -> None:
    im = Image.new("RGBA", (4, 4), (10, 200, 30, 0)).convert(mode)
    out = np.asarray(to_rgb(im))
    assert (out == np.array(BACKGROUND_RGB, np.uint8)).all()


# --- orientation -----------------------------------------------------------------------------

ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    6: lambda a: np.rot90(a, k=-1),  # "rotate 90 clockwise to view"
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_exif_orientation_is_applied(orientation: int) -> None:
    img = decode_image(gen.exif_rotated_jpeg(orientation), LIMITS)
    expected = ORIENTATIONS[orientation](gen.pattern())
    assert img.pixels.shape == expected.shape
    assert (img.height, img.width) == expected.shape[:2]
    assert mad(img.pixels, expected) <= 3.0


def test_orientation_6_portrait_shape() -> None:
    img = decode_image(gen.exif_rotated_jpeg(6), LIMITS)
    assert img.pixels.shape == (W, H, 3)  # stored landscape, shown portrait


def test_corrupt_exif_never_rejects() -> None:
    for data in (gen.corrupt_exif_jpeg(), gen.garbage_exif_jpeg()):
        img = decode_image(data, LIMITS)
        assert img.pixels.shape in ((H, W, 3), (W, H, 3))
    # Unparseable EXIF: the stored orientation stays.
    assert decode_image(gen.garbage_exif_jpeg(), LIMITS).pixels.shape == (H, W, 3)


# --- inputs that must be refused, with the exact code --------------------------------------

BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (gen.empty, "empty"),
    "random_bytes": (gen.random_bytes, "not_an_image"),
    "html_named_jpg": (gen.html_page, "not_an_image"),
    "plain_text": (gen.plain_text, "not_an_image"),
    "pdf": (gen.pdf_document, "not_an_image"),
    "heic": (gen.heic_like, "unsupported_format"),
    "ico": (gen.ico, "unsupported_format"),
    "psd": (gen.psd_like, "unsupported_format"),
    "svg": (lambda: b'<?xml version="1.0"?><svg xmlns="x"/>', "unsupported_format"),
    "header_30000x30000": (gen.huge_header_png, "too_many_pixels"),
    "bomb_10000x10000": (gen.bomb_png, "too_many_pixels"),
    "wide_20000x40": (lambda: gen.huge_header_png(20_000, 40), "too_large_dimensions"),
    "one_by_one": (gen.one_by_one, "too_small"),
    "thin_600x8": (lambda: gen.png(600, 8), "too_small"),
    "truncated_jpeg": (gen.truncated_jpeg, "truncated"),
    "truncated_png": (gen.truncated_png, "truncated"),
    "png_bad_idat": (gen.corrupt_png_crc, "corrupt"),
    "png_signature_then_junk": (lambda: gen.PNG_SIGNATURE + gen.random_bytes(200), "corrupt"),
    "gif_64x48_then_junk": (lambda: b"GIF89a@\x000\x00\x00\x00\x00" + b"\x99" * 50, "corrupt"),
    "bmp_bad_header": (lambda: b"BM" + b"\x00" * 60, "corrupt"),
    "tiff_bad_ifd": (lambda: b"II*\x00" + b"\xff" * 40, "corrupt"),
    "jpeg_soi_then_junk": (lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 100, "corrupt"),
    "png_zero_width": (lambda: gen.huge_header_png(0, 40), "corrupt"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_rejects_bad_input(name: str) -> None:
    factory, code = BAD[name]
    assert rejected_code(factory()) == code


def test_rejects_too_many_bytes() -> None:
    data = gen.png()
    assert rejected_code(data, replace(LIMITS, max_bytes=len(data) - 1)) == "too_large"
    assert decode_image(data, replace(LIMITS, max_bytes=len(data))).format == "PNG"


def test_rejects_pixels_over_configured_limit() -> None:
    assert rejected_code(gen.png(), replace(LIMITS, max_pixels=W * H - 1)) == "too_many_pixels"
    assert rejected_code(gen.png(), replace(LIMITS, max_side=W - 1)) == "too_large_dimensions"
    assert rejected_code(gen.png(), replace(LIMITS, min_side=H + 1)) == "too_small"


def test_rejects_decoded_bytes_over_configured_limit() -> None:
    """width x height x the bytes a pixel the file stores: exactly at the limit decodes,
    one byte over is refused, whatever the pixel count allows."""
    data = gen.png16(rgb=True)  # 6 bytes a pixel as stored
    need = W * H * 6
    assert intake.decoded_bytes(Image.open(io.BytesIO(data))) == need
    assert decode_image(data, replace(LIMITS, max_decoded_bytes=need)).format == "PNG"
    assert rejected_code(data, replace(LIMITS, max_decoded_bytes=need - 1)) == "too_large_decoded"
    # The same picture at 8 bits a sample holds half as much.
    assert decode_image(gen.png(), replace(LIMITS, max_decoded_bytes=W * H * 3)).format == "PNG"


@pytest.mark.parametrize(
    ("mode", "per_pixel"),
    [("L", 1), ("RGB", 3), ("RGBA", 4), ("I;16", 2), ("I;16B", 2), ("RGB;16B", 6),
     ("RGBA;16B", 8), ("LA;16B", 4), ("I", 4), ("F", 4), ("CMYK", 4), ("P;4", 1),
     ("nonsense", 0)],
)  # fmt: skip
def test_bytes_a_pixel_of_modes_and_raw_modes(mode: str, per_pixel: int) -> None:
    assert intake.sample_bytes(mode) == per_pixel


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records every ImageFile.load call: header-refused inputs must make none."""
    calls: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        calls.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_huge_header_refused_before_allocation(no_pixel_decoding: list) -> None:
    data = gen.huge_header_png(30_000, 30_000)  # 900 MB if it were allocated
    assert len(data) < 1000
    tracemalloc.start()
    start = time.perf_counter()
    code = rejected_code(data)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == "too_many_pixels"
    assert elapsed < 0.5
    assert peak < 5_000_000
    assert no_pixel_decoding == []


@pytest.mark.parametrize("side", [9_000, 10_000, 20_000])
def test_bomb_refused_even_when_limits_allow_it(side: int, no_pixel_decoding: list) -> None:
    """With limits above Pillow's own bomb threshold, Pillow's warning (or error)
    must still end in a Rejected, never in a decode."""
    generous = IntakeLimits(max_bytes=10**9, max_pixels=10**10, max_side=10**6, min_side=1)
    data = gen.bomb_png() if side == 10_000 else gen.huge_header_png(side, side)
    if Image.MAX_IMAGE_PIXELS is not None and side * side <= Image.MAX_IMAGE_PIXELS:
        # Below Pillow's threshold only our own limit protects; use a tight one.
        generous = replace(generous, max_pixels=50_000_000)
    assert rejected_code(data, generous) == "too_many_pixels"
    assert no_pixel_decoding == []


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_bomb_warning_as_error_is_still_rejected() -> None:
    generous = IntakeLimits(max_bytes=10**9, max_pixels=10**10, max_side=10**6, min_side=1)
    assert rejected_code(gen.bomb_png(), generous) == "too_many_pixels"


def test_truncated_refused_even_if_someone_enabled_pillow_leniency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Some ML code sets this global to "fix" errors; Pillow then grey-fills silently.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert rejected_code(gen.truncated_jpeg()) == "truncated"
    assert rejected_code(gen.truncated_png()) == "truncated"
    assert decode_image(gen.jpeg(), LIMITS).format == "JPEG"  # complete files still pass


def test_global_pillow_settings_untouched() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for factory, _ in BAD.values():
        with contextlib.suppress(Rejected):
            decode_image(factory(), LIMITS)
    decode_image(gen.png(), LIMITS)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_unsupported_mode_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(im: Image.Image, background: tuple[int, int, int] = BACKGROUND_RGB) -> Image.Image:
        raise ValueError(f"conversion from {im.mode} to RGB not supported")

    monkeypatch.setattr(intake, "to_rgb", refuse)
    assert rejected_code(gen.png()) == "unsupported_mode"


# --- metadata ----------------------------------------------------------------------------------


def test_plain_image_has_no_provenance() -> None:
    assert decode_image(gen.png(), LIMITS).metadata == {}


def test_exif_fields() -> None:
    tags = {
        "Software": "Adobe Photoshop 25.0",
        "Make": "Canon",
        "Model": "EOS R5",
        "Artist": "Jane Doe",
        "ImageDescription": "press photo",
        "DateTimeOriginal": "2024:05:06 07:08:09",
    }
    meta = decode_image(gen.exif_jpeg(**tags), LIMITS).metadata
    assert {k: meta.get(k) for k in tags} == tags


def test_exif_user_comment_unicode() -> None:
    text = "a photo of a person, Steps: 20, Sampler: Euler a, Model: sdxl"
    raw = b"UNICODE\x00" + text.encode("utf-16-be")
    meta = decode_image(gen.exif_jpeg(UserComment=raw), LIMITS).metadata
    assert meta["UserComment"] == text


def test_png_text_chunks() -> None:
    data = gen.png_with_text({"parameters": "portrait, Steps: 30", "Software": "ComfyUI"})
    meta = decode_image(data, LIMITS).metadata
    assert meta["parameters"] == "portrait, Steps: 30"
    assert meta["Software"] == "ComfyUI"
    meta = decode_image(
        gen.png_with_text({"prompt": '{"3": {}}'}, compressed=True), LIMITS
    ).metadata
    assert meta["prompt"] == '{"3": {}}'
    meta = decode_image(gen.png_with_itxt("workflow", "nodes → ünïcode"), LIMITS).metadata
    assert meta["workflow"] == "nodes → ünïcode"


def test_metadata_values_are_truncated() -> None:
    meta = decode_image(gen.png_with_text({"workflow": "x" * 50_000}), LIMITS).metadata
    assert len(meta["workflow"]) == METADATA_VALUE_MAX


@pytest.mark.parametrize(
    ("source_type", "ai"),
    [
        ("trainedAlgorithmicMedia", True),
        ("compositeSynthetic", True),
        ("digitalCapture", False),
    ],
)
def test_xmp_digital_source_type(source_type: str, ai: bool) -> None:
    meta = decode_image(gen.jpeg_with_xmp(source_type, "Firefly"), LIMITS).metadata
    assert meta["CreatorTool"] == "Firefly"
    assert meta["DigitalSourceType"] == gen.IPTC_SOURCE + source_type
    assert declared_ai_source(meta) == (source_type if ai else None)


def test_xmp_in_png_itxt() -> None:
    packet = gen.xmp_packet("trainedAlgorithmicMedia", "Stable &amp; Diffusion").decode()
    meta = decode_image(gen.png_with_itxt("XML:com.adobe.xmp", packet), LIMITS).metadata
    assert meta["CreatorTool"] == "Stable & Diffusion"
    assert declared_ai_source(meta) == "trainedAlgorithmicMedia"
    assert "XML:com.adobe.xmp" not in meta  # parsed, not dumped


def test_hostile_xmp_is_cheap() -> None:
    packet = "<x:xmpmeta " + " xmp:CreatorTool" * 15_000 + " </x:xmpmeta>"
    start = time.perf_counter()
    img = decode_image(gen.png_with_itxt("XML:com.adobe.xmp", packet), LIMITS)
    assert time.perf_counter() - start < 1.0
    assert "CreatorTool" not in img.metadata


@pytest.mark.parametrize("factory", [gen.jpeg_with_c2pa, gen.png_with_cabx])
def test_c2pa_presence(factory: Callable[[], bytes]) -> None:
    assert decode_image(factory(), LIMITS).metadata.get("c2pa") == "present"


def test_metadata_failure_never_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(intake, "_xmp_fields", boom)
    data = gen.png_with_text({"parameters": "kept"})
    meta = decode_image(data, LIMITS).metadata
    assert meta == {"parameters": "kept"}


# --- reading files ---------------------------------------------------------------------------


def test_read_bytes_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(gen.png())
    assert read_bytes(path, LIMITS) == gen.png()
    assert read_bytes(path, replace(LIMITS, max_bytes=path.stat().st_size)) == gen.png()


def test_read_bytes_refusals(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(gen.png())
    cases = {
        tmp_path: "not_a_file",
        tmp_path / "missing.jpg": "not_found",
        big: "too_large",
    }
    small = replace(LIMITS, max_bytes=big.stat().st_size - 1)
    for path, code in cases.items():
        with pytest.raises(Rejected) as info:
            read_bytes(path, small)
        assert info.value.code == code, path


def test_read_bytes_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "real.png"
    target.write_bytes(gen.png())
    (tmp_path / "link.png").symlink_to(target)
    (tmp_path / "dirlink").symlink_to(tmp_path)
    assert read_bytes(tmp_path / "link.png", LIMITS) == gen.png()
    with pytest.raises(Rejected) as info:
        read_bytes(tmp_path / "dirlink", LIMITS)
    assert info.value.code == "not_a_file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_read_bytes_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "upload.jpg"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(Rejected) as info:
        read_bytes(fifo, LIMITS)
    assert info.value.code == "not_a_file"
    assert time.perf_counter() - start < 1.0


def test_read_bytes_stops_at_limit_while_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If stat under-reports (a file growing between stat and read), the read loop
    itself must stop at max_bytes + 1."""
    path = tmp_path / "growing.bin"
    path.write_bytes(b"\x00" * 10_000)
    monkeypatch.setattr(intake, "_check_stat", lambda st, p, limits: None)
    reads: list[int] = []
    real_fdopen = os.fdopen

    def counting_fdopen(fd: int, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        f = real_fdopen(fd, *args, **kwargs)
        real_read = f.read

        class Wrapped:
            def __enter__(self):  # type: ignore[no-untyped-def]
                return self

            def __exit__(self, *exc: object) -> None:
                f.close()

            def fileno(self) -> int:
                return f.fileno()

            def read(self, n: int) -> bytes:
                chunk = real_read(n)
                reads.append(len(chunk))
                return chunk

        return Wrapped()

    monkeypatch.setattr(intake.os, "fdopen", counting_fdopen)
    with pytest.raises(Rejected) as info:
        read_bytes(path, replace(LIMITS, max_bytes=1000))
    assert info.value.code == "too_large"
    assert sum(reads) == 1001


def test_load_image_ignores_file_name(tmp_path: Path) -> None:
    html = tmp_path / "photo.jpg"
    html.write_bytes(gen.html_page())
    with pytest.raises(Rejected) as info:
        load_image(html, LIMITS)
    assert info.value.code == "not_an_image"
    png_named_jpg = tmp_path / "actually_png.jpg"
    png_named_jpg.write_bytes(gen.png())
    img = load_image(png_named_jpg, LIMITS)
    assert img.format == "PNG" and img.pixels.shape == (H, W, 3)


def test_decodes_shipped_photo() -> None:
    insightface = pytest.importorskip("insightface")
    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not path.exists():
        pytest.skip("insightface sample image missing")
    img = load_image(path, LIMITS)
    assert img.format == "JPEG" and img.pixels.shape == (886, 1280, 3)


# --- fuzz --------------------------------------------------------------------------------------

FUZZ_SEEDS = [gen.jpeg(), gen.png(), gen.gif(), gen.webp(), gen.bmp(), gen.tiff(),
              gen.animated_gif(), gen.exif_rotated_jpeg(), gen.jpeg_with_xmp()]  # fmt: skip
FUZZ_LIMITS = replace(LIMITS, max_pixels=4_000_000, max_side=4000, min_side=1)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FUZZ_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_images(), st.binary(max_size=512)))
def test_fuzz_only_decodes_or_rejects(data: bytes) -> None:
    try:
        img = decode_image(data, FUZZ_LIMITS)
    except Rejected as e:
        assert e.code in intake.REJECTION_CODES
        return
    assert img.pixels.dtype == np.uint8 and img.pixels.shape[2] == 3


def test_deep_png_under_the_pixel_limit_refused_before_decoding(no_pixel_decoding: list) -> None:
    """The reported case with the default limits: a ~400 kB 16-bit RGBA PNG just under
    the pixel limit (0.4 GB of samples, ~1 GB while converted) is refused from its
    header; an 8-bit RGBA one of the same size is within the default."""
    side = int(LIMITS.max_pixels**0.5) - 10
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes(side * 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    data = gen.raw_png(side, side, idat, bit_depth=16, color_type=6)
    assert len(data) < 1_000_000 and side * side < LIMITS.max_pixels
    with pytest.raises(Rejected) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "too_large_decoded"
    assert f"{side}x{side} RGBA (8 bytes a pixel)" in str(info.value)
    assert no_pixel_decoding == []
    rgba8 = Image.open(io.BytesIO(gen.raw_png(side, side, b"", color_type=6)))
    assert intake.decoded_bytes(rgba8) <= LIMITS.max_decoded_bytes
