"""Identity-preserving fakes (core.demo.splice): the face stays the person's own, the
scene around it changes, and only the pixels the edit names change."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.demo.dataset import eileen_collins_portrait, insightface_image
from core.demo.splice import DEMO_EDITS, demo_edits, head_mask, inpaint_around_face, splice_head


@pytest.fixture(scope="module")
def eileen(dlib_backend):
    rgb = eileen_collins_portrait()
    [face] = dlib_backend.detect(rgb)
    return rgb, face, dlib_backend.embed(rgb, [face])[0]


@pytest.fixture(scope="module")
def group(dlib_backend):
    rgb = insightface_image("t1.jpg")
    faces = dlib_backend.detect(rgb)
    return rgb, faces, dlib_backend.embed(rgb, faces)


def _pts(face) -> np.ndarray:
    return np.asarray(face.extra["landmarks68"], np.float64)


def _nearest(faces, point):
    return min(
        range(len(faces)),
        key=lambda k: np.hypot(*(np.asarray(faces[k].landmarks).mean(axis=0) - point)),
    )


def test_spliced_head_carries_the_donor_and_replaces_the_host(dlib_backend, eileen, group):
    donor, dface, demb = eileen
    host, hfaces, hemb = group
    k = 3
    edit = splice_head(donor, _pts(dface), host, _pts(hfaces[k]))
    assert edit.image.shape == host.shape and edit.image.dtype == np.uint8
    changed = np.any(edit.image != host, axis=2)
    assert changed.any()
    assert not (changed & (edit.mask == 0)).any(), "pixels outside the mask changed"
    # The host's face area lies inside the blended region: none of it is left.
    x1, y1, x2, y2 = (int(v) for v in hfaces[k].box)
    assert (edit.mask[y1:y2, x1:x2] > 0).mean() > 0.95
    faces = dlib_backend.detect(edit.image)
    assert len(faces) == len(hfaces)
    j = _nearest(faces, edit.landmarks68[36:48].mean(axis=0))
    emb = dlib_backend.embed(edit.image, [faces[j]])[0]
    assert float(emb @ demb) >= dlib_backend.match_threshold  # still her, for stage 1
    assert float(emb @ hemb[k]) < dlib_backend.match_threshold  # no longer the host
    # The other people of the photo are untouched.
    others = [f for i, f in enumerate(hfaces) if i != k]
    for f in others:
        x1, y1, x2, y2 = (int(v) for v in f.box)
        assert np.array_equal(edit.image[y1:y2, x1:x2], host[y1:y2, x1:x2])


@pytest.mark.parametrize("region", ["background", "body"])
def test_inpainting_keeps_the_face_and_fills_the_region(dlib_backend, eileen, region):
    rgb, face, emb = eileen
    edit = inpaint_around_face(rgb, _pts(face), region)
    hole = edit.mask > 0
    head = head_mask(rgb.shape, _pts(face)) > 0
    assert hole.mean() > 0.05 and not (hole & head).any()
    diff = np.abs(edit.image.astype(int) - rgb.astype(int)).max(axis=2)
    assert np.all(diff[~hole] == 0), "pixels outside the filled region changed"
    assert diff[hole].mean() > 5, "the region was not filled"
    if region == "background":  # the flag and the shuttle model are gone
        assert hole[:, :100].mean() > 0.9
    [found] = dlib_backend.detect(edit.image)
    assert float(dlib_backend.embed(edit.image, [found])[0] @ emb) > 0.97


def test_bad_inputs_are_refused(eileen, group):
    rgb, face, _ = eileen
    with pytest.raises(ValueError, match="68x2"):
        head_mask(rgb.shape, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="region"):
        inpaint_around_face(rgb, _pts(face), "sky")
    with pytest.raises(ValueError, match="degenerate"):
        head_mask(rgb.shape, np.zeros((68, 2)))
    # A face that covers the whole picture leaves no background to fill.
    pts = _pts(face)
    x1, y1, x2, y2 = (int(v) for v in face.box)
    tight = np.ascontiguousarray(rgb[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20])
    with pytest.raises(ValueError, match="no background"):
        inpaint_around_face(tight, pts - [x1 + 20, y1 + 20], "background")


def test_demo_edits_are_deterministic_and_named(eileen, group):
    rgb, face, _ = eileen
    host, hfaces, _ = group
    args = (rgb, _pts(face), host, [_pts(f) for f in hfaces])
    a, b = demo_edits(*args), demo_edits(*args)
    assert [e.path for e in a] == [p for p, _, _ in DEMO_EDITS]
    assert {e.method for e in a} == {"splice", "inpaint"}
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image)
        ok, _ = cv2.imencode(".png", x.image)
        assert ok and x.image.shape[0] >= 200
