"""Switching face backends: references registered under the old one are found, re-embedded
and matched again; `idwatch status` says how many match nobody until then."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.demo.dataset import load_references
from core.pipeline.identities import register_identity
from core.pipeline.reembed import reembed_references, stale_references
from core.pipeline.sources.scan import scan
from core.storage.models import Match, ReferencePhoto


def _matches(svc) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(Match))


@pytest.fixture
def switched(make_services, demo_set, tmp_path):
    """Tom Hanks registered under dlib; the same store then opened with the default
    backend, MobileFaceNet (skips when its file is not installed)."""
    data = tmp_path / "store"
    old = make_services(data_dir=data, face_backend="dlib")
    reg = register_identity(old, "Tom Hanks", load_references(demo_set)["Tom Hanks"])
    old.close()
    new = make_services(data_dir=data, face_backend="auto")
    if new.face_backend.name == "dlib":
        pytest.skip("MobileFaceNet is not installed (scripts/setup.sh fetches it with npm)")
    return new, reg.identity_id


def test_switched_backend_reembeds_references_and_matches_again(switched, demo_set):
    svc, identity_id = switched
    with svc.db.session() as s:
        ref_ids = list(s.scalars(select(ReferencePhoto.id)))
    assert stale_references(svc) == ref_ids
    scan(svc, [demo_set / "uploads" / "tom_large.jpg"])
    assert _matches(svc) == 0  # the old vector lives in refs_dlib: nobody is matched

    res = reembed_references(svc)
    assert res.reembedded == ref_ids and res.failed == {}
    assert stale_references(svc) == []
    assert svc.vectors.reference_ids(identity_id, svc.face_backend.name) == ref_ids
    with svc.db.session() as s:
        assert s.scalar(select(ReferencePhoto.face_backend)) == svc.face_backend.name
    assert reembed_references(svc).reembedded == []  # idempotent

    scan(svc, [demo_set / "uploads" / "tom_small.jpg"])
    assert _matches(svc) == 1


def test_status_counts_references_that_match_nobody(switched, monkeypatch):
    from typer.testing import CliRunner

    from workers.cli import app

    svc, _ = switched
    monkeypatch.setenv("IDWATCH_DATA_DIR", str(svc.settings.data_dir))
    svc.close()  # the CLI opens the milvus-lite file itself
    res = CliRunner().invoke(app, ["status", "--json"])
    assert res.exit_code == 0, res.output
    assert '"references_without_vectors": 1' in res.output
    res = CliRunner().invoke(app, ["identity", "reembed"])
    assert res.exit_code == 0 and "1 reference photo(s) re-embedded" in res.output
    res = CliRunner().invoke(app, ["status", "--json"])
    assert '"references_without_vectors": 0' in res.output
