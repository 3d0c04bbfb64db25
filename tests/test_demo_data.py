"""The offline demo set: files, labels, the fakes carry the impersonated identity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.demo.dataset import (
    FAKE_PLAN,
    PROTECTED,
    build_demo_set,
    eileen_collins_portrait,
    insightface_image,
    load_manifest,
    load_references,
)
from core.demo.faceswap import swap_face
from core.demo.splice import DEMO_EDITS
from core.faces.dlib_backend import DlibFaceBackend

FACES_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"


@pytest.fixture(scope="module")
def backend() -> DlibFaceBackend:
    return DlibFaceBackend()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, backend) -> Path:
    out = tmp_path_factory.mktemp("demo")
    build_demo_set(out, seed=0, backend=backend)
    return out


def _read(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{path} does not decode"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _embed_all(backend, path: Path):
    rgb = _read(path)
    faces = backend.detect(rgb)
    return faces, backend.embed(rgb, faces)


@pytest.fixture(scope="module")
def reference_vectors(demo, backend) -> dict[str, np.ndarray]:
    vecs = {}
    for identity, paths in load_references(demo).items():
        faces, emb = _embed_all(backend, paths[0])
        assert len(faces) == 1, f"registration photo of {identity} must show one face"
        vecs[identity] = emb[0]
    return vecs


@pytest.fixture(scope="module")
def t1_faces(backend):
    t1 = insightface_image("t1.jpg")
    faces = backend.detect(t1)
    return t1, faces, backend.embed(t1, faces)


def test_manifest_parses_and_files_decode(demo):
    rows = load_manifest(demo / "manifest.csv")
    assert 15 <= len(rows) <= 30
    assert len({r.path for r in rows}) == len(rows)
    for row in rows:
        assert row.path.is_absolute() and row.path.is_file(), row.path
        assert _read(row.path).ndim == 3
        assert row.label in {"real", "fake"}
        assert row.source
        assert all(i in PROTECTED for i in row.identities)
    refs = load_references(demo)
    assert set(refs) == set(PROTECTED)
    for paths in refs.values():
        assert all(p.is_file() for p in paths)


def test_counts_per_label_and_identity(demo):
    rows = load_manifest(demo / "manifest.csv")
    fakes = [r for r in rows if r.label == "fake" and r.method == "faceswap"]
    edits = [r for r in rows if r.label == "fake" and r.method != "faceswap"]
    real = [r for r in rows if r.label == "real"]
    assert len(fakes) == len(FAKE_PLAN)
    assert all(len(r.identities) == 1 for r in fakes + edits)
    # The identity-preserving family (core.demo.splice), one row per planned edit.
    assert sorted(r.path.relative_to(demo).as_posix() for r in edits) == sorted(
        p for p, _, _ in DEMO_EDITS
    )
    assert {r.method for r in edits} == {"splice", "inpaint"}
    assert all(r.method == "original" for r in real)
    for identity in PROTECTED:
        assert sum(identity in r.identities for r in fakes) >= 3
        assert sum(identity in r.identities for r in real) >= 2
    assert sum(not r.identities for r in real) >= 4  # other people and the no-face image


def test_authentic_copies_match_but_are_not_the_registration_bytes(
    demo, backend, reference_vectors
):
    ref_bytes = {p.read_bytes() for ps in load_references(demo).values() for p in ps}
    copies = [r for r in load_manifest(demo / "manifest.csv") if r.label == "real" and r.identities]
    for row in copies:
        assert row.path.read_bytes() not in ref_bytes, row.path.name
        faces, emb = _embed_all(backend, row.path)
        assert len(faces) == 1, row.path.name
        sims = {k: float(emb[0] @ v) for k, v in reference_vectors.items()}
        assert max(sims, key=sims.get) == row.identities[0], (row.path.name, sims)
        assert sims[row.identities[0]] >= backend.match_threshold, (row.path.name, sims)


def test_fakes_carry_the_impersonated_identity(demo, backend, reference_vectors, t1_faces):
    _, _, t1_emb = t1_faces
    plan = json.loads((demo / "fakes.json").read_text())
    assert len(plan) == len(FAKE_PLAN)
    for fake in plan:
        faces, emb = _embed_all(backend, demo / fake["path"])
        assert faces, f"no face detected in {fake['path']}"
        # The swapped face is the detection nearest to where the target face was.
        box = np.array(fake["target_box"])
        j = int(np.argmin([np.abs(np.array(f.box) - box).sum() for f in faces]))
        to_ref = float(emb[j] @ reference_vectors[fake["identity"]])
        to_target = float(emb[j] @ t1_emb[fake["target_face"]])
        assert to_ref > to_target, (fake["path"], to_ref, to_target)
        # Close enough that the system will treat it as the protected person.
        assert to_ref >= backend.match_threshold, (fake["path"], to_ref)


def test_edits_keep_the_authentic_face(demo, backend, reference_vectors):
    """Splices and inpaintings show the person's own face: stage 1 claims them for
    her at about the similarity of her authentic copies."""
    edits = [r for r in load_manifest(demo / "manifest.csv") if r.method in ("splice", "inpaint")]
    assert edits
    for row in edits:
        faces, emb = _embed_all(backend, row.path)
        assert faces, row.path.name
        sims = emb @ reference_vectors[row.identities[0]]
        assert float(sims.max()) >= 0.97, (row.path.name, sims)


def test_image_without_face(demo, backend):
    no_face = [r for r in load_manifest(demo / "manifest.csv") if "no face" in r.notes]
    assert len(no_face) == 1
    assert backend.detect(_read(no_face[0].path)) == []


def test_swap_changes_only_the_face(backend, t1_faces):
    t1, faces, _ = t1_faces
    source = eileen_collins_portrait()
    src_face = max(backend.detect(source), key=lambda f: f.area)
    target = faces[3]
    out = swap_face(source, src_face.extra["landmarks68"], t1, target.extra["landmarks68"])
    assert out.shape == t1.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - t1.astype(np.int16)).max(axis=2)

    x1, y1, x2, y2 = target.box
    grow = 0.6 * max(x2 - x1, y2 - y1)
    near = np.zeros(diff.shape, bool)
    near[max(int(y1 - grow), 0) : int(y2 + grow), max(int(x1 - grow), 0) : int(x2 + grow)] = True
    assert not diff[~near].any(), "pixels far from the face changed"
    inner = diff[int(y1) : int(y2), int(x1) : int(x2)]
    assert (inner > 20).mean() > 0.3, "the face itself barely changed"


def test_swap_rejects_bad_landmarks():
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError):
        swap_face(img, np.zeros((5, 2)), img, np.zeros((68, 2)))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path, backend):
    again = tmp_path / "again"
    build_demo_set(again, seed=0, backend=backend)
    first, second = _tree_bytes(demo), _tree_bytes(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []

    other = tmp_path / "other"
    build_demo_set(other, seed=1, backend=backend)
    third = _tree_bytes(other)
    assert any(third[k] != first[k] for k in first if k.startswith("uploads/"))


def test_load_manifest_splits_identities(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,label,identity,method,source,licence,notes\n"
        "a/x.png,fake,Ann Lee; Bo_Chan,simswap,src,lic,n\n"
        "y.jpg,real,,original,src,lic,\n"
    )
    rows = load_manifest(tmp_path / "m.csv")
    assert rows[0].identities == ["Ann Lee", "Bo_Chan"]
    assert rows[0].path == (tmp_path / "a" / "x.png").resolve()
    assert rows[1].identities == [] and rows[1].label == "real"


@pytest.mark.dataset
@pytest.mark.skipif(not (FACES_DEV / "manifest.csv").exists(), reason="faces-dev not present")
def test_load_manifest_faces_dev():
    rows = load_manifest(FACES_DEV / "manifest.csv")
    assert len(rows) == 283
    assert {r.label for r in rows} <= {"real", "fake"}
    assert {r.label for r in rows} == {"real", "fake"}
    assert all(r.path.is_file() for r in rows)
    # The recorded amendments (core.demo.amendments) match faces-dev's bytes: the Oscars
    # selfie shows Angelina Jolie and Brad Pitt, one DeepFaceLive driver frame is Robert
    # Downey Jr; nothing else is amended, and load_manifest(amend=False) amends nothing.
    amended = {r.path.name: r.also_shows for r in rows if r.also_shows}
    assert amended == {
        "deepface_selfie-many-people.jpg": ["Angelina_Jolie", "Brad_Pitt"],
        "dfl_Silwan_Stillwone_3_f0040_L_real.png": ["Robert_Downey_Jr"],
    }
    assert not any(r.also_shows for r in load_manifest(FACES_DEV / "manifest.csv", amend=False))
