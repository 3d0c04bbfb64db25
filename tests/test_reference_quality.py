"""Reference photo checks (core.faces.reference_quality) and their use by identity add/show."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage.data import astronaut

from core.faces.align import ARCFACE_TEMPLATE
from core.faces.base import DetectedFace
from core.faces.reference_quality import (
    MIN_FACE_PX,
    PhotoCheck,
    check_duplicates,
    check_photo,
    coverage,
    coverage_lines,
    pose,
)


@pytest.fixture(scope="module")
def astro_face() -> tuple[np.ndarray, DetectedFace]:
    from core.faces.dlib_backend import DlibFaceBackend

    rgb = astronaut()
    b = DlibFaceBackend(load_encoder=False)
    face = max(b.detect(rgb), key=lambda f: f.area)
    return rgb, face


def _rot(points: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = points.mean(axis=0)
    return (points - c) @ r.T + c


def test_pose_of_the_template_is_frontal():
    yaw, pitch, roll = pose(ARCFACE_TEMPLATE)
    assert abs(yaw) < 2 and abs(roll) < 1 and abs(pitch) < 10


def test_roll_is_measured_and_does_not_read_as_yaw():
    yaw, _, roll = pose(_rot(ARCFACE_TEMPLATE, 25))
    assert roll == pytest.approx(25, abs=1) and abs(yaw) < 3


def test_nose_toward_one_eye_is_yaw():
    lm = ARCFACE_TEMPLATE.copy()
    lm[2, 0] += 15  # nose tip shifted toward the image-right eye
    yaw, _, _ = pose(lm)
    assert yaw > 45


def test_a_clear_frontal_face_is_usable(astro_face):
    rgb, face = astro_face
    chk = check_photo("astronaut.png", rgb, face)
    assert chk.usable and not chk.problems
    assert chk.face_px >= MIN_FACE_PX and abs(chk.yaw) < 20


def test_blur_small_and_several_faces_are_reported(astro_face):
    rgb, face = astro_face
    # blurred at the chip's own scale: a face of ~90 px, sigma 3 px
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(3)))
    b = check_photo("blurred.png", blurred, face)
    assert not b.usable and any("blurred" in p for p in b.problems)
    # the same photo at a third of its size: the face is ~30 px
    s = 1 / 3
    small = np.asarray(Image.fromarray(rgb).resize((171, 171), Image.BILINEAR))
    sface = DetectedFace(tuple(v * s for v in face.box), np.asarray(face.landmarks) * s, face.score)
    sm = check_photo("small.png", small, sface)
    assert not sm.usable and any("small face" in p for p in sm.problems)
    # several faces are a note (the operator asked for the largest), not a weakness
    g = check_photo("group.png", rgb, face, faces_found=3)
    assert g.usable and g.notes and "3 faces" in g.notes[0]


def test_duplicates_of_stored_and_of_earlier_photos():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 192))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    checks = [PhotoCheck(f, True) for f in ("one.jpg", "two.jpg", "three.jpg")]
    embs = np.stack([a, b, a * 0.999 + b * 0.001])
    check_duplicates(
        checks, embs, [[("stored.jpg", 0.2)], [("stored.jpg", 0.97)], []], "mobilefacenet"
    )
    assert checks[0].usable
    assert not checks[1].usable and checks[1].duplicate_of == "stored.jpg"
    assert not checks[2].usable and checks[2].duplicate_of == "one.jpg"


def test_coverage_counts_usable_pose_spread_and_advises():
    stored = [
        PhotoCheck("a.jpg", True, face_px=200, sharpness=300, yaw=-5).as_dict(),
        PhotoCheck("b.jpg", True, face_px=150, sharpness=200, yaw=30).as_dict(),
        PhotoCheck("c.jpg", False, ["blurred (sharpness 10 < 40)"], sharpness=10).as_dict(),
        None,  # registered before checks existed
    ]
    cov = coverage(stored)
    assert cov["references"] == 4 and cov["usable"] == 2 and cov["unchecked"] == 1
    assert cov["yaw_range"] == [-5.0, 30.0] and cov["pose_spread_deg"] == 35.0
    assert cov["weak"] == ["c.jpg: blurred (sharpness 10 < 40)"]
    assert any("3 or more" in a for a in cov["advice"])
    lines = coverage_lines(cov)
    assert lines[0].startswith("coverage: 2 usable of 4") and "yaw -5..+30" in lines[0]
    same_pose = coverage([PhotoCheck(f"{k}.jpg", True, yaw=2.0 + k).as_dict() for k in range(3)])
    assert any("same pose" in a for a in same_pose["advice"])
    assert coverage([])["advice"] == ["no usable reference: add a clear, frontal photo"]


# --------------------------------------------------------------------------- via identities


def _reencoded(src, dst, quality=85):
    buf = io.BytesIO()
    Image.open(src).convert("RGB").save(buf, format="JPEG", quality=quality)
    dst.write_bytes(buf.getvalue())
    return dst


def test_identity_add_reports_each_photo_and_show_sums_up(svc, demo_set, tmp_path):
    from core.demo.dataset import load_references
    from core.pipeline.identities import register_identity, show_identity

    good = load_references(demo_set)["Eileen Collins"][0]
    copy = _reencoded(good, tmp_path / "copy.jpg")  # other bytes, same photo
    reg = register_identity(svc, "Eileen Collins", [good, copy])
    assert reg.references_added == 2  # weak photos are registered, and said to be weak
    first, second = reg.checks
    assert first.usable, first.problems
    assert not second.usable and second.duplicate_of == good.name
    # later, the same bytes again: not added, and said so
    again = register_identity(svc, "Eileen Collins", [good])
    assert again.references_added == 0 and not again.checks[0].usable
    info = show_identity(svc, "Eileen Collins")
    assert [r["check"]["usable"] for r in info["references"]] == [True, False]
    assert info["coverage"]["usable"] == 1 and info["coverage"]["references"] == 2
    assert any("near-duplicate" in w for w in info["coverage"]["weak"])
