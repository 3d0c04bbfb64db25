"""The offline demo set: protected identities, authentic uploads and home-made fakes.

Built only from photos that installed packages ship, so ``idwatch demo`` runs on a
fresh machine with no download:

- ``skimage.data.astronaut()``: astronaut Eileen Collins (NASA portrait, public domain);
- insightface's ``Tom_Hanks_54745.png``: a 112x112 aligned grey-scale crop of Tom Hanks;
- insightface's ``t1.jpg``: a group photo of six people, treated as anonymous.

Layout written by :func:`build_demo_set` (paths in the CSVs are relative to the
CSV's folder, as in ``faces-dev``)::

    out_dir/
      references.csv        which photo registers each protected identity
      references/*.png      the registration photos
      manifest.csv          the uploads to scan (path,label,identity,method,source,licence,notes)
      uploads/*             authentic copies, other people, fakes, one image with no face
      edits/*               identity-preserving fakes: authentic face, spliced or inpainted
                            scene (core.demo.splice)
      fakes.json            for each fake: the t1 face it was pasted on (index and box)

Fakes are made with :func:`core.demo.faceswap.swap_face` (classic FaceSwap). Their
targets are fixed t1 faces where the swap carries the identity across for both offline
embedders (measured: see ``FAKE_PLAN`` and tests/test_demo_data.py); the seed varies the authentic
copies (crop, scale, JPEG quality, brightness) and the crops of other people.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.demo.amendments import amendment_for
from core.demo.faceswap import swap_face
from core.demo.splice import demo_edits
from core.faces.base import DetectedFace, FaceBackend

EILEEN = "Eileen Collins"
TOM = "Tom Hanks"
PROTECTED = (EILEEN, TOM)

MANIFEST_COLUMNS = ("path", "label", "identity", "method", "source", "licence", "notes")

# (source, licence) of each shipped photo.
_INSIGHTFACE_LIC = "sample image shipped with insightface (MIT package); photo third-party"
_ASTRONAUT = ("skimage.data.astronaut() (NASA portrait of Eileen Collins)", "public domain (NASA)")
_TOM = ("insightface/data/images/Tom_Hanks_54745.png", _INSIGHTFACE_LIC)
_T1 = ("insightface/data/images/t1.jpg", _INSIGHTFACE_LIC)
_COFFEE = ("skimage.data.coffee()", "CC0 (scikit-image sample data)")

# Rows of the astronaut photo that hold the face but not the mission patch, which
# the HOG detector takes for a second face.
_ASTRONAUT_HEAD_ROWS = 320

# Fixed fake targets: (impersonated identity, t1 face index from the left, placement).
# "crop": a square crop around the swapped face; "group": the whole group photo.
# Chosen so that every fake carries its identity across for both offline embedders
# (measured with FAKE_FOREHEAD: MobileFaceNet cosine to the reference 0.54-0.62 for
# Tom Hanks, 0.56-0.78 for Eileen Collins, threshold 0.48; dlib 0.94-0.97, threshold
# 0.90). Faces 3 and 4 carry Tom Hanks' grey 112-px crop poorly (MobileFaceNet
# 0.27-0.39): a fake that stage 1 cannot attribute would alert in nobody's name.
FAKE_PLAN: tuple[tuple[str, int, str], ...] = (
    (EILEEN, 1, "crop"),
    (EILEEN, 3, "crop"),
    (EILEEN, 5, "crop"),
    (EILEEN, 2, "group"),
    (TOM, 0, "crop"),
    (TOM, 1, "crop"),
    (TOM, 5, "crop"),
    (TOM, 0, "group"),
)
# How far above the brows the swapped region reaches (core.demo.faceswap.with_forehead):
# the forehead and brow ridge carry identity for MobileFaceNet; 0.25 left too much of
# the target's.
FAKE_FOREHEAD = 0.5
_T1_FACES = 6
_OTHER_PEOPLE = (1, 3, 4, 5)  # t1 faces also uploaded authentic: the real side of the fakes


@dataclass
class ManifestRow:
    path: Path  # absolute
    label: str  # real | fake
    identities: list[str]  # empty for anonymous people and invented faces
    method: str
    source: str
    licence: str = ""
    notes: str = ""
    # People the image also shows whom the identity column leaves out (see
    # core.demo.amendments): not impostors when stage 1 finds them.
    also_shows: list[str] = field(default_factory=list)

    def shows(self) -> set[str]:
        return set(self.identities) | set(self.also_shows)


def load_manifest(path: Path, amend: bool = True) -> list[ManifestRow]:
    """Read a manifest (this set's or faces-dev's); ``path`` columns are resolved
    against the manifest's folder and several identities are split on ';'. With
    ``amend``, rows whose file has a recorded amendment get its ``also_shows``."""
    path = Path(path)
    root = path.parent.resolve()
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            identity = (rec.get("identity") or "").strip()
            rows.append(
                ManifestRow(
                    path=root / rec["path"],
                    label=rec["label"].strip(),
                    identities=[p.strip() for p in identity.split(";") if p.strip()],
                    method=(rec.get("method") or "").strip(),
                    source=(rec.get("source") or "").strip(),
                    licence=(rec.get("licence") or "").strip(),
                    notes=(rec.get("notes") or "").strip(),
                )
            )
    if amend:
        for row in rows:
            found = amendment_for(row.path)
            if found is not None:
                row.also_shows = [n for n in found.also_shows if n not in row.identities]
    return rows


def load_references(out_dir: Path) -> dict[str, list[Path]]:
    """Identity -> registration photos (absolute paths) of a built demo set."""
    refs: dict[str, list[Path]] = {}
    for row in load_manifest(Path(out_dir) / "references.csv"):
        for name in row.identities:
            refs.setdefault(name, []).append(row.path)
    return refs


# ---------------------------------------------------------------- source images


def insightface_path(name: str) -> Path:
    """Path of a sample image that the insightface wheel ships."""
    import insightface

    return Path(os.path.dirname(insightface.__file__)) / "data" / "images" / name


def insightface_image(name: str) -> np.ndarray:
    """RGB uint8 of a sample image that the insightface wheel ships."""
    path = insightface_path(name)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def soft_pad(rgb: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Pad with a blurred mirror of the image that fades in from the original's edge,
    like an out-of-focus studio background, so a tight face crop gets the context a
    face detector needs without a hard frame around it."""
    mirrored = cv2.copyMakeBorder(rgb, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    sigma = max(top, bottom, left, right, 8) / 3.0
    blurred = cv2.GaussianBlur(mirrored, (0, 0), sigma)
    h, w = rgb.shape[:2]
    inner = np.zeros(mirrored.shape[:2], np.float32)
    inner[top : top + h, left : left + w] = 1.0
    # Distance into the original area: sharp in the middle, a short fade at its border.
    dist = cv2.distanceTransform((inner > 0).astype(np.uint8), cv2.DIST_L2, 3)
    alpha = np.clip(dist / max(min(h, w) * 0.12, 1.0), 0.0, 1.0)[..., None]
    out = mirrored.astype(np.float32) * alpha + blurred.astype(np.float32) * (1.0 - alpha)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def tom_hanks_portrait(side: int = 256, pad: float = 0.375) -> np.ndarray:
    """The 112x112 aligned crop upscaled to ``side`` px and softly padded by ``pad``
    times ``side`` on every edge (the dlib HOG detector misses the bare crop)."""
    crop = insightface_image("Tom_Hanks_54745.png")
    big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    p = int(round(side * pad))
    return soft_pad(big, p, p, p, p)


def eileen_collins_portrait() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:_ASTRONAUT_HEAD_ROWS])


# ---------------------------------------------------------------- small edits


def _adjust(rgb: np.ndarray, gain: float, bias: float) -> np.ndarray:
    """Contrast ``gain`` around mid-grey plus brightness ``bias``."""
    out = (rgb.astype(np.float32) - 128.0) * gain + 128.0 + bias
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (round(w * factor), round(h * factor)), interpolation=interp)


def _square_crop(rgb: np.ndarray, box, scale: float, shift: tuple[float, float] = (0, 0)):
    """Square crop of side ``scale`` x the box's larger side, clipped to the image.
    Returns the crop and its (x0, y0) offset."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * scale
    cx = (x1 + x2) / 2 + shift[0] * side
    cy = (y1 + y2) / 2 + shift[1] * side
    h, w = rgb.shape[:2]
    x0 = int(np.clip(round(cx - side / 2), 0, w - 1))
    y0 = int(np.clip(round(cy - side / 2), 0, h - 1))
    x1c = int(np.clip(round(cx + side / 2), x0 + 1, w))
    y1c = int(np.clip(round(cy + side / 2), y0 + 1, h))
    return np.ascontiguousarray(rgb[y0:y1c, x0:x1c]), (x0, y0)


def _write(path: Path, rgb: np.ndarray, jpeg_quality: int | None = None) -> None:
    """Write RGB as PNG, or JPEG at ``jpeg_quality`` (baseline, no metadata: stable bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if jpeg_quality is None:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:  # pragma: no cover - encoder failure
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _largest(faces: list[DetectedFace], what: str) -> DetectedFace:
    if not faces:
        raise RuntimeError(f"demo set: no face found in {what}")
    return max(faces, key=lambda f: f.area)


def _pts68(face: DetectedFace) -> np.ndarray:
    return np.asarray(face.extra["landmarks68"], dtype=np.float32)


# ---------------------------------------------------------------- the build


class _SetWriter:
    """Writes image files under one folder and collects their manifest rows."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: list[dict[str, str]] = []

    def add(
        self,
        name: str,
        rgb: np.ndarray,
        identity: str,
        src: tuple[str, str],
        notes: str,
        *,
        jpeg: int | None = None,
        fake: bool = False,
        method: str | None = None,
    ) -> None:
        _write(self.root / name, rgb, jpeg)
        self.row(name, identity, src, notes, fake=fake, method=method)

    def row(
        self,
        name: str,
        identity: str,
        src: tuple[str, str],
        notes: str,
        *,
        fake: bool = False,
        method: str | None = None,
    ) -> None:
        label, default = ("fake", "faceswap") if fake else ("real", "original")
        values = (name, label, identity, method or default, *src, notes)
        self.rows.append(dict(zip(MANIFEST_COLUMNS, values, strict=True)))

    def write_csv(self, name: str) -> Path:
        path = self.root / name
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def build_demo_set(out_dir: Path, seed: int = 0, backend: FaceBackend | None = None) -> Path:
    """Write the demo set into ``out_dir`` (created; existing demo files overwritten)
    and return the path of its ``manifest.csv``. Same seed, same bytes.

    ``backend`` must give 68 landmarks in ``extra["landmarks68"]``; default: dlib.
    """
    if backend is None:
        from core.faces.dlib_backend import DlibFaceBackend

        backend = DlibFaceBackend()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def uniform(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def quality(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi))

    # References: one registration photo per protected identity.
    eileen = eileen_collins_portrait()
    tom = tom_hanks_portrait()
    refs = _SetWriter(out_dir)
    refs.add(
        "references/eileen_collins.png",
        eileen,
        EILEEN,
        _ASTRONAUT,
        f"top {_ASTRONAUT_HEAD_ROWS} rows (leaves out the mission patch)",
    )
    refs.add(
        "references/tom_hanks.png",
        tom,
        TOM,
        _TOM,
        "112 px aligned crop upscaled to 256 px on a soft blurred-mirror canvas",
    )
    refs.write_csv("references.csv")

    up = _SetWriter(out_dir)

    # Authentic copies of the protected people that are not the registration bytes.
    s = uniform(0.7, 0.85)
    up.add(
        "uploads/eileen_rescaled.jpg",
        _rescale(eileen, s),
        EILEEN,
        _ASTRONAUT,
        f"reference downscaled x{s:.2f}, JPEG",
        jpeg=quality(78, 90),
    )
    ast_face = _largest(backend.detect(eileen), "the astronaut photo")
    crop, _ = _square_crop(
        eileen, ast_face.box, uniform(2.2, 2.8), (uniform(-0.05, 0.05), uniform(0.0, 0.08))
    )
    up.add(
        "uploads/eileen_headshot.png",
        _rescale(crop, 1.5),
        EILEEN,
        _ASTRONAUT,
        "head crop upscaled x1.5",
    )
    g, b = uniform(1.05, 1.2), uniform(8, 20)
    up.add(
        "uploads/eileen_mirror_bright.jpg",
        _adjust(eileen[:, ::-1], g, b),
        EILEEN,
        _ASTRONAUT,
        f"mirrored, contrast x{g:.2f}, brightness +{b:.0f}, JPEG",
        jpeg=quality(85, 95),
    )

    side = int(rng.integers(180, 220))
    up.add(
        "uploads/tom_small.jpg",
        tom_hanks_portrait(side, 0.4),
        TOM,
        _TOM,
        f"crop upscaled to {side} px on a soft canvas, JPEG",
        jpeg=quality(75, 88),
    )
    g, b = uniform(0.8, 0.92), uniform(-20, -8)
    up.add(
        "uploads/tom_mirror_dark.png",
        _adjust(tom[:, ::-1], g, b),
        TOM,
        _TOM,
        f"reference mirrored, contrast x{g:.2f}, brightness {b:.0f}",
    )
    side = int(rng.integers(300, 340))
    up.add(
        "uploads/tom_large.jpg",
        _adjust(tom_hanks_portrait(side, 0.3), 1.1, 0),
        TOM,
        _TOM,
        f"crop upscaled to {side} px, contrast x1.1, JPEG",
        jpeg=quality(88, 95),
    )

    # Other people: the group photo as shipped, and single-person crops of it.
    t1 = insightface_image("t1.jpg")
    t1_faces = backend.detect(t1)
    if len(t1_faces) != _T1_FACES:
        raise RuntimeError(f"demo set: expected {_T1_FACES} faces in t1.jpg, found {len(t1_faces)}")
    (out_dir / "uploads").mkdir(exist_ok=True)
    shutil.copyfile(insightface_path("t1.jpg"), out_dir / "uploads" / "group.jpg")
    up.row("uploads/group.jpg", "", _T1, "group photo, 6 anonymous people, file as shipped")
    for i in _OTHER_PEOPLE:
        crop, _ = _square_crop(
            t1, t1_faces[i].box, uniform(2.0, 2.6), (uniform(-0.05, 0.05), uniform(0.0, 0.1))
        )
        up.add(
            f"uploads/person{i}.jpg",
            crop,
            "",
            _T1,
            f"crop around face {i} (from the left) of the group photo",
            jpeg=quality(85, 95),
        )

    # Fakes: a protected person's face swapped onto a t1 face.
    tom_face = _largest(backend.detect(tom), "the Tom Hanks portrait")
    sources = {
        EILEEN: (eileen, _pts68(ast_face), "references/eileen_collins.png"),
        TOM: (tom, _pts68(tom_face), "references/tom_hanks.png"),
    }
    fakes = []
    for identity, idx, placement in FAKE_PLAN:
        src_rgb, src_pts, src_name = sources[identity]
        target = t1_faces[idx]
        swapped = swap_face(src_rgb, src_pts, t1, _pts68(target), forehead=FAKE_FOREHEAD)
        slug = identity.split()[0].lower()
        if placement == "group":
            name, image, offset = f"uploads/fake_{slug}_group{idx}.png", swapped, (0, 0)
            notes = f"group photo with face {idx} replaced"
        else:
            image, offset = _square_crop(swapped, target.box, 2.4, (0.0, 0.05))
            name = f"uploads/fake_{slug}_person{idx}.png"
            notes = f"crop around face {idx} of the group photo, face replaced"
        src = (f"{_T1[0]} + {src_name}", f"{_INSIGHTFACE_LIC}; made by core.demo.faceswap")
        up.add(name, image, identity, src, notes, fake=True)
        box = [float(v) - o for v, o in zip(target.box, (*offset, *offset), strict=True)]
        fakes.append(
            dict(path=name, identity=identity, target_face=idx, target_box=box, placement=placement)
        )

    # Identity-preserving fakes: her authentic face, a scene that is not hers
    # (core.demo.splice; in edits/, so the uploads folder keeps its 20 files).
    for edit in demo_edits(eileen, _pts68(ast_face), t1, [_pts68(f) for f in t1_faces]):
        src = (f"{_ASTRONAUT[0]} + {_T1[0]}", f"{_INSIGHTFACE_LIC}; made by core.demo.splice")
        if edit.method == "inpaint":
            src = (_ASTRONAUT[0], f"{_ASTRONAUT[1]}; made by core.demo.splice")
        up.add(edit.path, edit.image, EILEEN, src, edit.notes, fake=True, method=edit.method)

    # No face at all: the "nothing to check" path.
    from skimage import data

    up.add("uploads/coffee.jpg", data.coffee(), "", _COFFEE, "no face", jpeg=90)

    (out_dir / "fakes.json").write_text(json.dumps(fakes, indent=1) + "\n", encoding="utf-8")
    return up.write_csv("manifest.csv")
