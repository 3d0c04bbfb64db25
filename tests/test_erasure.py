"""Erasure: nothing of the person is left, ids never come back, a failed erasure is
finished by running it again, and every process drops its cached photos of the person."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select, text

from core.demo.dataset import load_references
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.identities import (
    RegistrationError,
    list_identities,
    register_identity,
    remove_identity,
)
from core.pipeline.recovery import sweep
from core.pipeline.sources.scan import scan
from core.pipeline.verdicts import reference_views
from core.storage.db import upgrade
from core.storage.models import Alert, Identity, Job, Match, ReferencePhoto


def _n(svc, model, *where) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _tom(demo_set):
    return [load_references(demo_set)["Tom Hanks"][0], demo_set / "uploads" / "tom_large.jpg"]


def test_erased_person_is_not_inherited_by_the_next_one(make_services, demo_set, tmp_path):
    """The reported defect: B, then A with two photos; a new process erases A; C is
    registered; A's photos must raise nothing in C's name."""
    data = tmp_path / "store"
    svc = make_services(data_dir=data)
    register_identity(svc, "Person B", [demo_set / "uploads" / "person1.jpg"])
    a = register_identity(svc, "Person A", _tom(demo_set))
    backend = svc.face_backend.name
    svc.close()  # a new process: its Milvus client finds the collections released

    svc = make_services(data_dir=data)
    res = remove_identity(svc, "Person A")
    assert res["references_removed"] == 2 and res["vectors_removed"] == 2
    assert svc.vectors.reference_ids(a.identity_id) == []
    assert svc.vectors.count(svc.vectors.refs_name(backend)) == 1  # B's only
    assert not svc.files.abs(f"references/{a.identity_id}").exists()
    with svc.db.session() as s:
        job = s.scalar(select(Job).where(Job.identity_id == a.identity_id, Job.kind == "erasure"))
        assert job.status == "done"
        assert "Person A" not in str(job.detail)
    svc.close()

    svc = make_services(data_dir=data)
    c = register_identity(svc, "Person C", [demo_set / "uploads" / "person3.jpg"])
    assert c.identity_id > a.identity_id  # never the erased person's id
    summary = scan(svc, [demo_set / "uploads" / "tom_small.jpg", *_tom(demo_set)])
    assert summary.done == 3
    assert _n(svc, Match) == 0 and _n(svc, Alert) == 0


def test_ids_are_never_reused(svc, demo_set):
    refs = load_references(demo_set)
    first = register_identity(svc, "Tom Hanks", refs["Tom Hanks"]).identity_id
    remove_identity(svc, "Tom Hanks")
    again = register_identity(svc, "Tom Hanks", refs["Tom Hanks"]).identity_id
    assert again > first
    with svc.db.session() as s:
        ref_ids = list(s.scalars(select(ReferencePhoto.id)))
    assert min(ref_ids) > 1  # the erased reference's id was not handed out again


@pytest.mark.postgres
def test_ids_are_never_reused_on_postgres(make_services, demo_set, pg_url):
    svc = make_services(database_url=pg_url)
    refs = load_references(demo_set)
    first = register_identity(svc, "Tom Hanks", refs["Tom Hanks"]).identity_id
    remove_identity(svc, "Tom Hanks")
    assert register_identity(svc, "Tom Hanks", refs["Tom Hanks"]).identity_id > first


def test_migration_keeps_ids_of_erased_people_out_of_reach(tmp_path):
    """A store made before ids were protected: the largest identity id was erased (only
    an anonymised alert still carries it). After the upgrade it is never handed out."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = create_engine(url)
    now = "2026-11-01 00:00:00"
    with engine.begin() as c:
        c.execute(text(f"INSERT INTO identities (id, name, created_at) VALUES (1, 'a', '{now}')"))
        c.execute(
            text(
                "INSERT INTO uploads (id, sha256, source, original_name, path, status, attempts,"
                f" created_at, updated_at) VALUES (1, 'x', 'cli', 'u', 'p', 'done', 0, '{now}',"
                f" '{now}')"
            )
        )
        c.execute(
            text(
                "INSERT INTO faces (id, upload_id, idx, box, landmarks, det_score, quality,"
                " chip_path, crop_path, face_backend) VALUES (1, 1, 0, '[]', '[]', 1, 1, 'c',"
                " 'c', 'dlib')"
            )
        )
        c.execute(
            text(
                "INSERT INTO alerts (face_id, upload_id, identity_key, similarity, fake_score,"
                f" decision, detector, created_at) VALUES (1, 1, 7, 0.9, 0.9, 'fake', 'x',"
                f" '{now}')"
            )
        )
    engine.dispose()
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(
            text(f"INSERT INTO identities (name, name_key, created_at) VALUES ('b', 'b', '{now}')")
        )
        new_id = c.execute(text("SELECT id FROM identities WHERE name = 'b'")).scalar()
        assert c.execute(text("SELECT count(*) FROM identities")).scalar() == 2
    engine.dispose()
    assert new_id == 8


class _FailOnce:
    """Fault injection: the vector store fails the first delete, as a Milvus server
    that goes away mid-erasure would."""

    def __init__(self, vectors):
        self._vectors, self.failed = vectors, False

    def __getattr__(self, name):
        return getattr(self._vectors, name)

    def delete_identity(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise ConnectionError("milvus went away")
        return self._vectors.delete_identity(*args, **kwargs)


@pytest.mark.parametrize("finish", ["remove again", "sweeper"])
def test_failed_erasure_stops_matching_and_is_finished(make_services, demo_set, finish):
    svc = make_services()
    refs = load_references(demo_set)
    reg = register_identity(svc, "Tom Hanks", refs["Tom Hanks"])
    real_vectors = svc.vectors
    svc.__dict__["vectors"] = _FailOnce(real_vectors)
    with pytest.raises(ConnectionError):
        remove_identity(svc, "Tom Hanks")
    svc.__dict__["vectors"] = real_vectors

    # Half-erased: the row is kept (so the erasure can be found and finished) but the
    # person matches nothing and cannot be registered again until the erasure is done.
    assert [i["state"] for i in list_identities(svc)] == ["erasing"]
    assert real_vectors.reference_ids(reg.identity_id) != []
    scan(svc, [demo_set / "uploads" / "tom_small.jpg", demo_set / "uploads" / "tom_large.jpg"])
    assert _n(svc, Match) == 0 and _n(svc, Alert) == 0
    with pytest.raises(RegistrationError, match="being erased"):
        register_identity(svc, "Tom Hanks", refs["Tom Hanks"])
    with svc.db.session() as s:
        job = s.scalar(select(Job).where(Job.kind == "erasure"))
        assert job.status == "failed" and "milvus went away" in job.error

    if finish == "remove again":
        assert remove_identity(svc, "Tom Hanks")["vectors_removed"] == 1
    else:
        with svc.db.session() as s:
            assert s.scalar(select(Job.status).where(Job.kind == "erasure")) == "failed"
        assert len(sweep(svc, InlineDispatcher(svc)).jobs) == 1
    assert real_vectors.reference_ids(reg.identity_id) == []
    assert _n(svc, Identity) == 0 and _n(svc, ReferencePhoto) == 0
    assert not svc.files.abs(f"references/{reg.identity_id}").exists()
    with svc.db.session() as s:
        job = s.scalar(select(Job).where(Job.kind == "erasure"))
        assert job.status == "done" and job.attempts == 2
    assert sweep(svc, InlineDispatcher(svc)).jobs == []


def test_other_processes_drop_cached_photos_of_an_erased_person(make_services, demo_set, tmp_path):
    data = tmp_path / "shared"
    eraser = make_services(data_dir=data)
    refs = load_references(demo_set)
    tom = register_identity(eraser, "Tom Hanks", refs["Tom Hanks"]).identity_id
    eileen = register_identity(eraser, "Eileen Collins", refs["Eileen Collins"]).identity_id
    # A worker in another process (same database, its own caches) has Tom's photos
    # decoded in memory. It never opens the vector store, so the file lock is no issue.
    worker = make_services(data_dir=data)
    assert len(reference_views(worker, tom)) == 1
    assert tom in worker.reference_cache
    remove_identity(eraser, "Tom Hanks")
    # Its next use of any reference drops the erased person's.
    assert len(reference_views(worker, eileen)) == 1
    assert tom not in worker.reference_cache
    assert reference_views(worker, tom) == []
