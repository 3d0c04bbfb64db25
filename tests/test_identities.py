"""Registering, refusing bad reference photos, backfill and erasure."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.demo.dataset import insightface_path, load_references
from core.pipeline.identities import (
    RegistrationError,
    list_identities,
    register_identity,
    remove_identity,
    show_identity,
)
from core.pipeline.sources.scan import scan
from core.storage.models import Alert, Identity, Match, ReferencePhoto


def _n(svc, model) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_photo_without_face_is_refused_by_name(svc, demo_set):
    photo = demo_set / "uploads" / "coffee.jpg"
    with pytest.raises(RegistrationError, match="coffee.jpg: no face"):
        register_identity(svc, "Nobody", [photo])
    assert _n(svc, Identity) == 0


def test_group_photo_is_refused_unless_largest(svc):
    t1 = insightface_path("t1.jpg")
    with pytest.raises(RegistrationError, match=r"t1.jpg: 6 faces found"):
        register_identity(svc, "Someone", [t1])
    reg = register_identity(svc, "Someone", [t1], pick_largest=True)
    assert reg.created and reg.references_added == 1
    with svc.db.session() as s:
        box = s.scalar(select(ReferencePhoto.box))
    areas = [
        f.area
        for f in svc.face_backend.detect(
            __import__("numpy").asarray(__import__("PIL.Image").Image.open(t1).convert("RGB"))
        )
    ]
    assert (box[2] - box[0]) * (box[3] - box[1]) == pytest.approx(max(areas))


def test_non_image_and_mixed_batches_write_nothing(svc, demo_set, tmp_path):
    bogus = tmp_path / "photo.jpg"
    bogus.write_text("this is not a photo")
    good = load_references(demo_set)["Eileen Collins"][0]
    with pytest.raises(RegistrationError, match="photo.jpg: not usable.*not_an_image"):
        register_identity(svc, "Eileen Collins", [good, bogus])
    assert _n(svc, Identity) == 0 and _n(svc, ReferencePhoto) == 0


def test_same_photo_twice_is_one_reference(svc, demo_set):
    good = load_references(demo_set)["Eileen Collins"][0]
    register_identity(svc, "Eileen Collins", [good])
    again = register_identity(svc, "Eileen Collins", [good])
    assert not again.created and again.references_added == 0
    assert list_identities(svc)[0]["references"] == 1
    assert show_identity(svc, "Eileen Collins")["references"][0]["file"] == str(good)


def _matched_uploads(svc) -> set[str]:
    from core.storage.models import Face, Upload

    with svc.db.session() as s:
        return set(
            s.scalars(
                select(Upload.original_name)
                .join(Face, Face.upload_id == Upload.id)
                .join(Match, Match.face_id == Face.id)
            )
        )


def test_backfill_then_erasure(make_services, demo_set):
    refs = load_references(demo_set)
    # Registered first, then the uploads scanned: what matching claims going forward.
    forward = make_services()
    register_identity(forward, "Tom Hanks", refs["Tom Hanks"])
    scan(forward, [demo_set / "uploads"])
    expected = _matched_uploads(forward)
    # The 3 authentic copies always; the home-made swaps as far as the face backend
    # takes them for him (all 4 with dlib; with MobileFaceNet those of cosine >= 0.47).
    assert {p for p in expected if "/tom_" in p} == {
        str(demo_set / "uploads" / n)
        for n in ("tom_small.jpg", "tom_mirror_dark.png", "tom_large.jpg")
    }
    assert all("tom" in p for p in expected)

    svc = make_services()
    scan(svc, [demo_set / "uploads"])
    assert _n(svc, Match) == 0
    reg = register_identity(svc, "Tom Hanks", refs["Tom Hanks"])
    # Backfill finds exactly the earlier uploads that matching would have claimed.
    assert _matched_uploads(svc) == expected
    assert reg.backfill.matches == len(expected) == _n(svc, Match)
    n_alerts = _n(svc, Alert)
    assert n_alerts == reg.backfill.alerts

    backend = svc.face_backend.name
    assert svc.vectors.count(svc.vectors.refs_name(backend)) == 1
    ref_dir = svc.files.abs(f"references/{reg.identity_id}")
    assert any(ref_dir.iterdir())

    res = remove_identity(svc, "Tom Hanks")
    assert res == {
        "id": reg.identity_id,
        "name": "Tom Hanks",
        "references_removed": 1,
        "vectors_removed": 1,
        "alerts_anonymised": n_alerts,
    }
    assert _n(svc, Identity) == 0 and _n(svc, ReferencePhoto) == 0 and _n(svc, Match) == 0
    assert svc.vectors.count(svc.vectors.refs_name(backend)) == 0
    assert not ref_dir.exists()
    with svc.db.session() as s:
        alerts = list(s.scalars(select(Alert)))
    assert len(alerts) == n_alerts
    assert all(
        a.identity_id is None
        and a.identity_name is None
        and a.reference_id is None
        and a.erased_at is not None
        for a in alerts
    )
    assert remove_identity(svc, "Tom Hanks") is None


def test_a_face_claims_only_its_clearly_best_identity(make_services, demo_set):
    """With a loose threshold the swap onto t1's person 1 matches both Eileen Collins
    (whose face it carries) and person 1 (whose head it is pasted on); it claims only
    Eileen unless the margin allows both."""
    refs = load_references(demo_set)
    fake = demo_set / "uploads" / "fake_eileen_person1.png"
    # Loose enough that the swap matches both people: dlib cosines are all high (0.96 to
    # Eileen, ~0.86 to person 1); MobileFaceNet's are spread out (about 0.6 to Eileen,
    # near 0 to person 1), so there every registered face matches (-1) and only the
    # margin decides.
    loose = 0.8 if make_services().face_backend.name == "dlib" else -1.0
    for margin, expected in ((0.03, {"Eileen Collins"}), (1.0, {"Eileen Collins", "Person 1"})):
        svc = make_services(match_threshold=loose, claim_margin=margin)
        register_identity(svc, "Eileen Collins", refs["Eileen Collins"])
        register_identity(svc, "Person 1", [demo_set / "uploads" / "person1.jpg"])
        scan(svc, [fake])
        with svc.db.session() as s:
            claimed = set(
                s.scalars(select(Identity.name).join(Match, Match.identity_id == Identity.id))
            )
        assert claimed == expected
