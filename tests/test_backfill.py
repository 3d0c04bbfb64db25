"""A backfill run again finishes what an earlier run left: matches it committed but never
scored, and reference photos registered while it ran."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.demo.dataset import EILEEN, load_references
from core.pipeline import backfill as backfill_module
from core.pipeline import jobs
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.identities import register_identity
from core.pipeline.recovery import sweep
from core.pipeline.sources.scan import scan
from core.storage.models import Alert, Face, Job, Match, Upload

# Three fakes of Eileen Collins (the packaged detector alerts on each), a real photo of
# her (a match, no alert) and a stranger (no match).
UPLOADS = (
    "fake_eileen_person3.png",
    "fake_eileen_group2.png",
    "fake_eileen_person5.png",
    "eileen_rescaled.jpg",
    "person1.jpg",
)


class _Later:
    def upload(self, upload_id: int) -> None:
        pass

    def backfill(self, job_id: int) -> None:
        pass


def _alerted(svc) -> list[str]:
    """Upload names with an alert, sorted (one entry per alert)."""
    with svc.db.session() as s:
        return sorted(
            s.scalars(select(Upload.original_name).join(Alert, Alert.upload_id == Upload.id))
        )


def _scanned(make_services, demo_set):
    svc = make_services()
    summary = scan(svc, [demo_set / "uploads" / n for n in UPLOADS])
    assert summary.done == len(UPLOADS)
    return svc


def test_redelivered_backfill_scores_the_matches_a_crashed_run_left(
    make_services, demo_set, monkeypatch
):
    refs = load_references(demo_set)[EILEEN]
    # The same history without a fault: what the crashed one must end with.
    clean = _scanned(make_services, demo_set)
    register_identity(clean, EILEEN, refs)
    expected = _alerted(clean)
    assert len(expected) == 3, expected  # the detector catches the three fakes

    svc = _scanned(make_services, demo_set)

    def worker_dies(*_args, **_kwargs):
        raise SystemError("worker killed after the matches were committed")

    # The run dies between committing its matches and scoring them.
    monkeypatch.setattr(backfill_module, "score_matches", worker_dies)
    reg = register_identity(svc, EILEEN, refs)
    monkeypatch.undo()
    assert reg.backfill_status == "failed"
    with svc.db.session() as s:
        left = list(s.scalars(select(Match)))
        statuses = set(s.scalars(select(Upload.status)))
    assert len(left) >= 4 and all(m.fake_score is None for m in left)
    assert statuses == {"done"}  # no classify stage will ever score them
    assert _alerted(svc) == []

    # The sweeper sends the job again; the run scores what the crashed one left.
    assert sweep(svc, InlineDispatcher(svc), older_than_s=0).jobs == [reg.backfill_job_id]
    with svc.db.session() as s:
        job = s.get(Job, reg.backfill_job_id)
        assert job.status == "done" and job.attempts == 2
        assert job.detail["matches"] == len(left) and job.detail["alerts"] == 3
        assert s.scalar(select(func.count()).where(Match.fake_score.is_(None))) == 0
        assert s.scalar(select(func.count()).select_from(Match)) == len(left)
    assert _alerted(svc) == expected
    # A further run finds nothing left to do and raises nothing twice.
    with svc.db.session() as s:
        jobs.open_job(s, jobs.BACKFILL, reg.identity_id)
    assert sweep(svc, InlineDispatcher(svc), older_than_s=0).jobs != []
    assert _alerted(svc) == expected


def test_backfill_reopened_by_a_registration_while_it_runs_stays_open(
    make_services, demo_set, monkeypatch
):
    """Photos added while the backfill runs reopen its job; the run that started before
    them must not close it, or nothing would ever look for the person in them."""
    svc = _scanned(make_services, demo_set)
    refs = load_references(demo_set)[EILEEN]
    first = register_identity(svc, EILEEN, refs[:1], dispatcher=_Later())
    more = [demo_set / "uploads" / "eileen_rescaled.jpg"]  # another photo of her
    real_views = backfill_module.reference_views
    added = []

    def registration_arrives(svc_, identity_id):
        if not added:
            added.append(register_identity(svc, EILEEN, more, dispatcher=_Later()))
        return real_views(svc_, identity_id)

    monkeypatch.setattr(backfill_module, "reference_views", registration_arrives)
    backfill_module.run_backfill(svc, first.backfill_job_id)
    monkeypatch.undo()
    (second,) = added
    assert second.backfill_job_id == first.backfill_job_id  # one open job per person
    with svc.db.session() as s:
        job = s.get(Job, first.backfill_job_id)
        assert job.status == "pending" and job.detail is not None  # not done: reopened
    # Its message (or the sweeper) runs it again, now with both photos.
    backfill_module.run_backfill(svc, first.backfill_job_id)
    with svc.db.session() as s:
        assert s.get(Job, first.backfill_job_id).status == "done"
        assert s.scalar(select(func.count()).select_from(Job)) == 1
    # Registered after the job is done: a new job.
    with svc.db.session() as s:
        assert jobs.open_job(s, jobs.BACKFILL, first.identity_id).id != first.backfill_job_id


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_migration_0008_folds_rows_a_race_left(dialect, tmp_path, request):
    """Duplicate references and open jobs left by races before 0008 do not stop the
    upgrade: one reference row per (person, file), one open job per (kind, person)."""
    from sqlalchemy import create_engine, text

    from core.storage.db import upgrade

    url = (
        request.getfixturevalue("pg_url")
        if dialect == "postgres"
        else f"sqlite:///{tmp_path / 'm.db'}"
    )
    upgrade(url, "0007")
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO identities (id, name, name_key, created_at) "
                    "VALUES (1, 'A', 'a', CURRENT_TIMESTAMP)"
                )
            )
            for ref_id in (1, 2, 3):
                c.execute(
                    text(
                        "INSERT INTO reference_photos (id, identity_id, path, original_name, "
                        "sha256, box, landmarks, face_backend, created_at) VALUES (:id, 1, "
                        "'p', 'p', :sha, '[]', '[]', 'dlib', CURRENT_TIMESTAMP)"
                    ),
                    {"id": ref_id, "sha": "b" if ref_id == 3 else "a"},
                )
            for job_id, status in ((1, "done"), (2, "failed"), (3, "pending"), (4, "running")):
                c.execute(
                    text(
                        "INSERT INTO jobs (id, kind, identity_id, status, attempts, created_at, "
                        "updated_at) VALUES (:id, 'backfill', 1, :st, 1, CURRENT_TIMESTAMP, "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"id": job_id, "st": status},
                )
        upgrade(url)
        with engine.connect() as c:
            assert list(c.scalars(text("SELECT id FROM reference_photos ORDER BY id"))) == [1, 3]
            rows = c.execute(text("SELECT id, status, error FROM jobs ORDER BY id")).all()
        assert [(i, st) for i, st, _ in rows] == [
            (1, "done"),
            (2, "pending"),
            (3, "done"),
            (4, "done"),
        ]
        assert "merged into job 2" in rows[2][2]
    finally:
        engine.dispose()


def test_faces_of_a_backfilled_person_are_matched_once(make_services, demo_set):
    """Registering the same person again with the same photos adds nothing and matches
    nothing twice."""
    svc = _scanned(make_services, demo_set)
    refs = load_references(demo_set)[EILEEN]
    register_identity(svc, EILEEN, refs)
    again = register_identity(svc, EILEEN, refs)
    assert again.references_added == 0 and again.backfill_job_id is None
    with svc.db.session() as s:
        pairs = s.execute(select(Match.face_id, Match.identity_id)).all()
        faces = s.scalar(select(func.count()).select_from(Face))
    assert len(pairs) == len(set(pairs)) and faces > 0
