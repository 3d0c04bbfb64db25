"""Self-Blended Images: blends of a real face with itself, and training on them without
ever training on a test fold's images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.demo.dataset import ManifestRow, eileen_collins_portrait
from core.evaluation.honest import FittedModel, RowTable
from core.evaluation.self_blended import SBI_METHOD, concat, with_sbi
from core.faces.base import DetectedFace
from core.forensics.sbi import SBIParams, blend_mask, sbi_variant, self_blend


@pytest.fixture(scope="module")
def eileen():
    from core.faces.dlib_backend import DlibFaceBackend

    b = DlibFaceBackend(load_encoder=False)
    b.load()
    rgb = eileen_collins_portrait()
    [face] = b.detect(rgb)
    return rgb, face


def test_blend_changes_the_face_region_only_and_is_repeatable(eileen):
    rgb, face = eileen
    name, transform = sbi_variant(face, 0)
    a, b = transform(rgb), transform(rgb)
    assert name.startswith("sbi") and np.array_equal(a, b)
    assert a.shape == rgb.shape and a.dtype == np.uint8
    diff = np.abs(a.astype(int) - rgb.astype(int)).max(axis=2)
    pts = np.asarray(face.extra["landmarks68"], np.int32)
    hull = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(pts), 1)
    w = int(np.ptp(pts[:, 0]))
    near = cv2.dilate(hull, np.ones((w, w), np.uint8)) > 0  # half a face width around
    assert not diff[~near].any(), "pixels far from the face changed"
    assert (diff[hull > 0] > 3).mean() > 0.3, "the face barely changed"
    # Another blend index draws another blend.
    assert not np.array_equal(sbi_variant(face, 1)[1](rgb), a)


def test_mask_is_soft_with_an_opaque_core(eileen):
    rgb, face = eileen
    pts = np.asarray(face.extra["landmarks68"], np.float64)
    p = SBIParams(opacity=(1.0,))
    m = blend_mask(rgb.shape, pts, np.random.default_rng(3), p)
    assert m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    assert ((m > 0.05) & (m < 0.95)).sum() > 0.05 * (m > 0.05).sum()  # a soft rim
    x, y = np.round(pts[30]).astype(int)  # nose tip: inside the core
    assert m[y, x] > 0.99
    with pytest.raises(ValueError, match="68x2"):
        self_blend(rgb, pts[:5], np.random.default_rng(0))


def test_no_68_landmarks_no_blend():
    face = DetectedFace((0, 0, 10, 10), np.zeros((5, 2), np.float32), 1.0, {})
    assert sbi_variant(face, 0) is None


def _table(n_people: int = 6, per: int = 4) -> RowTable:
    rows, y, groups = [], [], []
    for p in range(n_people):
        for k in range(per):
            fake = k == per - 1
            rows.append(
                ManifestRow(
                    Path(f"/x/{p}_{k}.png"),
                    "fake" if fake else "real",
                    [f"P{p}"],
                    "simswap" if fake else "original",
                    f"src{p}",
                )
            )
            y.append(int(fake))
            groups.append(f"id:P{p}")
    n = len(rows)
    rng = np.random.default_rng(0)
    return RowTable(
        rows=rows,
        names=["face.a", "image.b"],
        X=rng.normal(size=(n, 2)),
        y=np.array(y),
        has_face=np.ones(n, bool),
        has_ref=np.ones(n, bool),
        groups=np.array(groups),
        id_groups=np.array(groups),
        methods=np.array([r.method for r in rows]),
        families=np.array(["real" if r.label == "real" else "simswap" for r in rows]),
        claim_name=[r.identities[0] for r in rows],
        claimed=np.ones(n, bool),
        is_png=np.zeros(n, bool),
    )


@pytest.mark.parametrize("only", [False, True])
def test_a_fold_trains_on_blends_of_its_own_real_images_only(only):
    table = _table()
    reals = np.flatnonzero(table.y == 0)
    # Two blends per real image, as core.evaluation.self_blended.sbi_table makes them.
    sbi = table.subset(np.repeat(reals, 2))
    sbi = replace(
        sbi,
        y=np.ones(len(sbi), int),
        methods=np.array([SBI_METHOD] * len(sbi)),
        families=np.array([SBI_METHOD] * len(sbi)),
    )
    seen: list[RowTable] = []

    def record(train: RowTable, seed: int) -> FittedModel:
        seen.append(train)
        return FittedModel("face,image", None, {}, len(train))  # type: ignore[arg-type]

    train = table.subset(np.flatnonzero(np.isin(table.groups, ["id:P0", "id:P1", "id:P2"])))
    with_sbi(record, sbi, only=only)(train, 0)
    [got] = seen
    blends = got.methods == SBI_METHOD
    assert blends.sum() == 2 * (train.y == 0).sum()
    # Every blend is of a real image of this training set, labelled fake, in its group.
    assert set(got.row_ids[blends]) == set(train.row_ids[train.y == 0])
    assert (got.y[blends] == 1).all() and set(got.groups[blends]) <= set(train.groups)
    real_fakes = (got.y == 1) & ~blends
    assert real_fakes.sum() == (0 if only else (train.y == 1).sum())


def test_concat_refuses_other_features():
    a = _table()
    b = replace(a, names=["face.a", "image.c"])
    with pytest.raises(ValueError, match="different features"):
        concat(a, b)
    assert len(concat(a, a)) == 2 * len(a)
