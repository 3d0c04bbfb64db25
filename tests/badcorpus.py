"""The bad-input corpus: every kind of file an upload folder can hold, written to disk,
each with the terminal status and reason the pipeline must give it.

``build_corpus(dir)`` writes the files under ``dir/corpus`` (plus a secret file under
``dir/outside`` that a symlink in the corpus points to, which must never be read) and
returns one ``Case`` per kind. A case's ``path`` is what is handed to
``core.pipeline.sources.scan.scan``: the file itself, or, for the folder tricks (links,
FIFOs, folders named like images, temporary names, duplicates), a small folder that
holds them, so the folder-walking rules are what gets tested.

Expectations assume the Services are built with ``corpus_settings()`` (small upload
limit, ``min_face_px`` raised so the dlib detector can find faces that are "tiny")
and, for ``expect_matched``, that ``reference_photo(dir)`` is registered as a
protected identity. Statuses and face counts do not depend on that registration.

Faces come from photos that installed packages ship: scikit-image's astronaut (Eileen
Collins, the "protected" person) and one person of insightface's ``t1.jpg`` group
photo (a stranger, so the many encoding variants do not each pay for a forgery
verdict). Every other picture is made here.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from tests import imagegen as gen

REJECTED, DONE, SKIPPED = "rejected", "done", "skipped"  # skipped: scan takes nothing

# Face boxes (x0, y0, x1, y1) as dlib's HOG detector gives them.
_FACE_BOX = (175, 76, 265, 166)  # skimage.data.astronaut()
_PORTRAIT = (slice(0, 320), slice(95, 335))  # rows, cols: 240x320 portrait, one face
_STRANGER_BOX = (734, 365, 837, 469)  # a man in insightface's t1.jpg (cosine 0.84 to her)
_FORTY = 40
_TINY_CELL, _TINY_N = 64, 9  # 3x3 faces, all detected at 36 px


def corpus_settings() -> dict[str, object]:
    """Settings overrides the expectations assume (pass them to ``Settings(**...)``)."""
    return {
        # Small enough that a test can write a file over it cheaply; the largest
        # legitimate corpus file (the 3000x3000 face) stays well under it.
        "max_upload_bytes": 2 * 1024 * 1024,
        # dlib's HOG detector does not find faces under ~36 px even upsampled, so the
        # default 24 px floor is never what drops a face; 40 px lets "tiny" faces exist.
        "min_face_px": 40,
        "max_faces_per_image": 32,
        # Lower than the default 50 MP so the at-the-limit image stays cheap to detect on
        # (a 49 MP image takes ~8 s and ~540 MB in dlib here).
        "max_pixels": 20_000_000,
    }


@dataclass(frozen=True)
class Case:
    kind: str
    path: Path  # handed to scan(): a file, or a folder for the folder tricks
    expect_status: str  # done | rejected | skipped (scan submits nothing)
    expect_reason_prefix: str | None  # reason code ("truncated") or note prefix; None: none
    expect_faces: int | None = None  # faces kept on the upload (done only)
    expect_uploads: int = 1  # distinct uploads the scan of ``path`` yields
    expect_submitted: int | None = None  # files submitted, when it differs from uploads
    expect_size: tuple[int, int] | None = None  # (width, height) after EXIF orientation
    expect_matched: int | None = None  # faces matched to the protected identity
    note: str = ""


# --- pictures ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def portrait() -> np.ndarray:
    """240x320 (w x h) head-and-shoulders RGB with exactly one face."""
    return np.ascontiguousarray(_astronaut()[_PORTRAIT])


def face_crop(pad: float = 0.5) -> np.ndarray:
    """The astronaut's face with ``pad`` x face width of context on each side."""
    x0, y0, x1, y1 = _FACE_BOX
    p = int(pad * (x1 - x0))
    return np.ascontiguousarray(_astronaut()[y0 - p : y1 + p, x0 - p : x1 + p])


@lru_cache(maxsize=1)
def _group_photo() -> np.ndarray:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def stranger(pad: float | None = None) -> np.ndarray:
    """One unregistered person from t1.jpg: a portrait (~225x330), or with ``pad`` a square
    face crop with ``pad`` x face width of context on each side."""
    x0, y0, x1, y1 = _STRANGER_BOX
    w = x1 - x0
    if pad is not None:
        p = int(pad * w)
        return np.ascontiguousarray(_group_photo()[y0 - p : y1 + p, x0 - p : x1 + p])
    rows = slice(y0 - int(0.9 * w), y1 + int(1.3 * w))
    cols = slice(max(0, x0 - int(0.6 * w)), x1 + int(0.6 * w))
    return np.ascontiguousarray(_group_photo()[rows, cols])


def _resize(rgb: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BICUBIC))


def face_grid(cell: int, rows: int, cols: int, margin: int = 0) -> np.ndarray:
    """The stranger's face tiled ``rows`` x ``cols`` times, each tile ``cell`` px."""
    tile = _resize(stranger(pad=0.5), cell)
    grid = np.tile(tile, (rows, cols, 1))
    if margin:
        grid = np.pad(grid, ((margin, margin), (margin, margin), (0, 0)), constant_values=128)
    return grid


def _save(rgb_or_im: np.ndarray | Image.Image, fmt: str, **params: object) -> bytes:
    im = rgb_or_im if isinstance(rgb_or_im, Image.Image) else Image.fromarray(rgb_or_im)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _jpeg(rgb: np.ndarray, quality: int = 90, **params: object) -> bytes:
    return _save(rgb, "JPEG", quality=quality, **params)


def exif_rotated_face() -> bytes:
    """The portrait stored turned 90 degrees counter-clockwise, with EXIF orientation 6
    ("rotate 90 clockwise to view"): upright only if the orientation is applied."""
    stored = np.ascontiguousarray(np.rot90(portrait(), k=1))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return _jpeg(stored, exif=exif.tobytes())


def rotated_without_exif() -> bytes:
    """Control for the case above: the same sideways pixels, no orientation tag."""
    return _jpeg(np.ascontiguousarray(np.rot90(portrait(), k=1)), quality=89)


def face_png16() -> bytes:
    """16-bit grayscale PNG of the stranger (each level v stored as v * 257)."""
    gray = np.asarray(Image.fromarray(stranger()).convert("L")).astype(np.uint16) * 257
    h, w = gray.shape
    rows = gray.astype(">u2").tobytes()
    raw = b"".join(b"\x00" + rows[r * 2 * w : (r + 1) * 2 * w] for r in range(h))
    return gen.raw_png(w, h, zlib.compress(raw), bit_depth=16, color_type=0)


def face_alpha_png() -> bytes:
    """RGBA stranger whose outer 30-px frame is fully transparent."""
    rgba = np.dstack([stranger(), np.full(stranger().shape[:2], 255, np.uint8)])
    rgba[:30, :, 3] = rgba[-30:, :, 3] = rgba[:, :30, 3] = rgba[:, -30:, 3] = 0
    return _save(rgba, "PNG")


def face_animation(fmt: str) -> bytes:
    """Three frames; the face is in frame 0 (the one the pipeline reads)."""
    first = Image.fromarray(stranger())
    h, w = stranger().shape[:2]
    others = [Image.fromarray(np.roll(gen.pattern(w, h), 40 * i, axis=1)) for i in (1, 2)]
    if fmt == "GIF":
        frames = [f.quantize(256) for f in (first, *others)]
        return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    return _save(first, "WEBP", save_all=True, append_images=others, duration=80, quality=90)


def corrupt_exif_face() -> bytes:
    """Stranger JPEG with an APP1 Exif block whose IFD announces 200 entries (one present,
    an orientation) and a next-IFD offset far past the segment."""
    tiff = b"II*\x00" + struct.pack("<I", 8)
    ifd = struct.pack("<H", 200) + struct.pack("<HHII", 0x0112, 3, 1, 1) + b"\xff\xff\xff\x7f"
    return gen.insert_jpeg_segment(_jpeg(stranger(), 88), 0xE1, b"Exif\x00\x00" + tiff + ifd)


def ztxt_bomb_png(inflated_mb: int = 200) -> bytes:
    """A valid small PNG with a zTXt chunk that inflates to ``inflated_mb`` MB of zeros."""
    comp = zlib.compressobj(9)
    parts = [comp.compress(bytes(1 << 20)) for _ in range(inflated_mb)]
    parts.append(comp.flush())
    pix = gen.pattern()
    raw = b"".join(b"\x00" + pix[r].tobytes() for r in range(gen.H))
    ztxt = b"Comment\x00\x00" + b"".join(parts)
    return gen.raw_png(gen.W, gen.H, zlib.compress(raw), color_type=2, extra=((b"zTXt", ztxt),))


def many_frame_gif(n: int) -> bytes:
    """An animation of ``n`` small frames (counting them must not decode them all)."""
    frames = [
        Image.fromarray(np.roll(gen.pattern(120, 90), 3 * i, axis=1)).quantize(16) for i in range(n)
    ]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)


def svg_document() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<circle cx="32" cy="32" r="30" fill="red"/></svg>\n'
    )


def _flat_jpeg(width: int, height: int) -> bytes:
    """A large, featureless photo: cheap to store, full price to decode and scan."""
    return _save(Image.new("RGB", (width, height), (120, 130, 140)), "JPEG", quality=70)


def _variant(i: int) -> bytes:
    """A small valid JPEG whose bytes differ per ``i`` (so uploads are not de-duplicated)."""
    return gen.jpeg(width=64 + i, height=48)


# --- the corpus ------------------------------------------------------------------------------


def build_corpus(dir: Path) -> list[Case]:
    """Write the corpus under ``dir`` and return its cases (see module doc)."""
    dir = Path(dir)
    root, outside = dir / "corpus", dir / "outside"
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    ref = reference_photo(dir)
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_bytes(_save(np.ascontiguousarray(_astronaut()[:256]), "PNG"))
    limits = corpus_settings()
    max_bytes, min_face = int(limits["max_upload_bytes"]), int(limits["min_face_px"])
    max_pixels = int(limits["max_pixels"])
    keep = int(limits["max_faces_per_image"])
    cases: list[Case] = []

    def file(kind: str, name: str, data: bytes, status: str, reason: str | None, **kw) -> Path:
        path = root / name
        path.write_bytes(data)
        cases.append(Case(kind, path, status, reason, **kw))
        return path

    def stranger_face(kind: str, name: str, data: bytes) -> None:
        # One unregistered face: found, embedded, matched to nobody.
        file(kind, name, data, DONE, None, expect_faces=1, expect_matched=0)

    def folder(kind: str) -> Path:
        d = root / f"dir-{kind}"
        d.mkdir()
        return d

    # Not images at all, or broken ones.
    file("empty_file", "empty.jpg", gen.empty(), REJECTED, "empty")
    file("truncated_jpeg", "truncated.jpg", gen.truncated_jpeg(), REJECTED, "truncated")
    file("truncated_png", "truncated.png", gen.truncated_png(), REJECTED, "truncated")
    file("corrupt_png_crc", "bad-crc.png", gen.corrupt_png_crc(), REJECTED, "corrupt")
    file("html_named_jpg", "page.jpg", gen.html_page(), REJECTED, "not_an_image")
    file("text_named_png", "notes.png", gen.plain_text(), REJECTED, "not_an_image")
    file("pdf_named_jpg", "document.jpg", gen.pdf_document(), REJECTED, "not_an_image")
    file("random_bytes", "noise.jpg", gen.random_bytes(), REJECTED, "not_an_image")
    file("heic_named_jpg", "phone.jpg", gen.heic_like(), REJECTED, "unsupported_format")
    file("svg_named_png", "vector.png", svg_document(), REJECTED, "unsupported_format")
    file("psd_named_jpg", "layers.jpg", gen.psd_like(), REJECTED, "unsupported_format")
    file("ico_named_png", "favicon.png", gen.ico(), REJECTED, "unsupported_format")
    over = gen.random_bytes(max_bytes + 1, seed=1)
    file("over_max_upload_bytes", "big.jpg", over, REJECTED, "too_large")

    # Limits read from the header.
    file("decompression_bomb_png", "bomb.png", gen.bomb_png(10_000), REJECTED, "too_many_pixels")
    file(
        "header_30000x30000_png",
        "huge-header.png",
        gen.huge_header_png(),
        REJECTED,
        "too_many_pixels",
    )
    file("one_by_one", "pixel.png", gen.one_by_one(), REJECTED, "too_small")
    file(
        "ztxt_bomb_png",
        "text-bomb.png",
        ztxt_bomb_png(),
        REJECTED,
        "corrupt",
        note="a zTXt chunk inflating to 200 MB (Pillow caps text chunks)",
    )
    side = math.isqrt(max_pixels)  # side * side <= max_pixels < (side + 1) ** 2
    file(
        "at_pixel_limit",
        "flat-at-limit.jpg",
        _flat_jpeg(side, side),
        DONE,
        None,
        expect_faces=0,
        expect_size=(side, side),
        note=f"{side}x{side}, just under max_pixels",
    )
    file(
        "over_pixel_limit",
        "flat-over-limit.jpg",
        _flat_jpeg(side + 1, side + 1),
        REJECTED,
        "too_many_pixels",
    )

    # Valid but unusual encodings: decoded, faces found where there is one.
    file("png_named_jpg", "actually-png.jpg", gen.png(), DONE, None, expect_faces=0)
    cmyk = _save(Image.fromarray(stranger()).convert("CMYK"), "JPEG", quality=90)
    stranger_face("cmyk_jpeg_face", "cmyk.jpg", cmyk)
    stranger_face("png16_face", "gray16.png", face_png16())
    palette = _save(Image.fromarray(stranger()).quantize(256), "PNG")
    stranger_face("palette_png_face", "palette.png", palette)
    stranger_face("alpha_png_face", "alpha.png", face_alpha_png())
    stranger_face("animated_gif_face", "anim.gif", face_animation("GIF"))
    stranger_face("animated_webp_face", "anim.webp", face_animation("WEBP"))
    h, w = portrait().shape[:2]
    file(
        "exif_rotated_face",
        "rotated.jpg",
        exif_rotated_face(),
        DONE,
        None,
        expect_faces=1,
        expect_size=(w, h),
        expect_matched=1,
        note="protected person stored sideways, EXIF orientation 6",
    )
    file(
        "sideways_no_exif",
        "sideways.jpg",
        rotated_without_exif(),
        DONE,
        None,
        expect_faces=0,
        expect_size=(h, w),
        note="control: same pixels, no tag",
    )
    gray = _jpeg(np.asarray(Image.fromarray(stranger()).convert("L")))
    stranger_face("grayscale_face", "gray.jpg", gray)
    stranger_face("corrupt_exif_face", "bad-exif.jpg", corrupt_exif_face())
    file("garbage_exif", "garbage-exif.jpg", gen.garbage_exif_jpeg(), DONE, None, expect_faces=0)
    file("no_face", "landscape.png", gen.png(320, 240), DONE, None, expect_faces=0)
    file("gif_300_frames", "long.gif", many_frame_gif(300), DONE, None, expect_faces=0)
    edge = _jpeg(np.ascontiguousarray(_astronaut()[40:300, 200:460]))
    file(
        "face_cut_by_edge",
        "edge.jpg",
        edge,
        DONE,
        None,
        expect_faces=1,
        expect_matched=1,
        note="the protected face runs off the left border",
    )

    # Face counts at the edges of the detector and of the settings.
    forty = _jpeg(face_grid(110, 5, 8))
    reason = f"kept the {keep} largest of {_FORTY} faces"
    file("forty_faces", "crowd.jpg", forty, DONE, reason, expect_faces=keep, expect_matched=0)
    huge = _jpeg(_resize(face_crop(), 3000), 80)
    file(
        "huge_face_3000px",
        "closeup.jpg",
        huge,
        DONE,
        None,
        expect_faces=1,
        expect_matched=1,
        note="the protected person's face fills 3000x3000",
    )
    pair = _jpeg(np.hstack([portrait(), portrait()[:, ::-1]]), 91)
    file(
        "two_protected_faces",
        "pair.jpg",
        pair,
        DONE,
        None,
        expect_faces=2,
        expect_matched=2,
        note="two faces of the protected person in one upload",
    )
    tiny = _jpeg(face_grid(_TINY_CELL, 3, 3, margin=20))
    file(
        "tiny_faces",
        "far-away.jpg",
        tiny,
        DONE,
        f"{_TINY_N} face(s) under {min_face} px ignored",
        expect_faces=0,
    )

    # Odd file names (distinct bytes each, so none is a duplicate of another).
    odd_names = {
        "name_with_spaces": "my holiday  photo .jpg",
        "name_unicode": "фото_日本_é\u0301.jpg",
        "name_quotes": 'it\'s "quoted" `x`.jpg',
        "name_leading_dash": "-rf --help.jpg",
        "name_newline": "line\nbreak.jpg",
        "name_very_long": "x" * 240 + ".jpg",
    }
    for i, (kind, name) in enumerate(odd_names.items()):
        file(kind, name, _variant(i), DONE, None, expect_faces=0)
    # A name that is not valid UTF-8 (bytes as Linux allows them).
    bad = os.fsdecode(b"latin1-\xe9t\xe9.jpg")
    file("name_not_utf8", bad, _variant(len(odd_names)), DONE, None, expect_faces=0)

    # Folder tricks: the folder is scanned, the rules decide what is taken.
    d = folder("duplicate")
    dup = _variant(len(odd_names) + 1)
    (d / "a.jpg").write_bytes(dup)
    (d / "copy of a.jpg").write_bytes(dup)
    cases.append(
        Case(
            "duplicate_upload",
            d,
            DONE,
            None,
            expect_faces=0,
            expect_submitted=2,
            note="same bytes twice: one upload",
        )
    )

    d = folder("dir_named_jpg")
    (d / "album.jpg").mkdir()
    cases.append(
        Case(
            "directory_named_jpg",
            d,
            SKIPPED,
            None,
            expect_uploads=0,
            note="a folder named album.jpg: walked into, never read",
        )
    )

    d = folder("fifo")
    os.mkfifo(d / "stream.jpg")
    cases.append(
        Case(
            "fifo_named_jpg",
            d,
            SKIPPED,
            None,
            expect_uploads=0,
            note="a FIFO named .jpg: not a regular file, never opened",
        )
    )
    os.mkfifo(root / "named-pipe.jpg")
    cases.append(
        Case(
            "fifo_named_explicitly",
            root / "named-pipe.jpg",
            REJECTED,
            "not_a_file",
            note="a path given by hand is opened non-blocking",
        )
    )

    secret = outside / "secret.jpg"
    secret.write_bytes(_jpeg(portrait(), 77))  # a protected face: reading it would show
    d = folder("symlink_out")
    (d / "innocent.jpg").symlink_to(secret)
    cases.append(
        Case(
            "symlink_outside",
            d,
            SKIPPED,
            None,
            expect_uploads=0,
            note="link to a face photo outside the folder: not followed",
        )
    )
    d = folder("symlink_dir_out")
    (d / "linked").symlink_to(outside, target_is_directory=True)
    cases.append(
        Case(
            "symlinked_dir_outside",
            d,
            SKIPPED,
            None,
            expect_uploads=0,
            note="link to a folder outside: not walked into",
        )
    )
    d = folder("dangling")
    (d / "gone.jpg").symlink_to(outside / "does-not-exist.jpg")
    cases.append(
        Case(
            "dangling_symlink", d, SKIPPED, None, expect_uploads=0, note="link to nothing: ignored"
        )
    )

    d = folder("part")
    (d / "upload.jpg.part").write_bytes(b"")
    cases.append(
        Case(
            "zero_byte_part_file",
            d,
            SKIPPED,
            None,
            expect_uploads=0,
            note="upload.jpg.part (0 bytes): an empty file, listed as not submitted",
        )
    )
    d = folder("heic_suffix")
    (d / "IMG_0001.HEIC").write_bytes(gen.heic_like() + b"\x01")  # not phone.jpg's bytes
    cases.append(
        Case(
            "heic_suffix_in_folder",
            d,
            REJECTED,
            "unsupported_format",
            note="content decides, not the suffix: an image the intake refuses by name",
        )
    )
    return cases


def reference_photo(dir: Path) -> Path:
    """The protected person's authentic photo (written by ``build_corpus``): the upper
    half of the astronaut photo, one face, a different crop from the corpus's."""
    return Path(dir) / "reference" / "eileen.png"


def outside_secret(dir: Path) -> Path:
    """The file the corpus's symlinks point at; its bytes must never be submitted."""
    return Path(dir) / "outside" / "secret.jpg"
