"""Inserts that race are idempotent at the database, on PostgreSQL and SQLite.

The races are made certain, not hoped for: a third connection holds an EXCLUSIVE lock
on the table both sides write (reads go on, writes wait), each side runs its real code
until the database holds it at its first write, then the lock is released and both
write at once. A check-then-insert passes both checks before that point, so one of the
two inserts fails; an insert that leaves the decision to the unique key does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, func, select, text

from core.demo.dataset import EILEEN, load_references
from core.pipeline import jobs
from core.pipeline.backfill import run_backfill
from core.pipeline.detection import crop, embed
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.identities import register_identity
from core.pipeline.matching import add_match, index
from core.pipeline.recovery import sweep
from core.pipeline.sources.submit import submit_path
from core.pipeline.verdicts import classify
from core.storage.db import Database
from core.storage.models import Alert, Face, Identity, Job, Match, ReferencePhoto, Upload

pytestmark = pytest.mark.postgres

# One face; it claims Eileen Collins and the packaged detector judges it fake (reviewkit).
FAKE = "fake_eileen_person3.png"


class _Later:
    """A dispatcher that sends nothing: the backfill job stays pending for the test."""

    def upload(self, upload_id: int) -> None:
        pass

    def backfill(self, job_id: int) -> None:
        pass


class _Thread(threading.Thread):
    """Runs ``fn`` and keeps its result or exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _n(svc, model, *where) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


class TableGate:
    """Holds ``LOCK TABLE <table> IN EXCLUSIVE MODE`` in its own connection: readers go
    on, every writer of the table waits until ``open()``."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = create_engine(url)
        self.conn = self.engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))

    def waiting(self) -> set[int]:
        """Backends of this database waiting for a lock."""
        with self.engine.connect() as c:
            return set(
                c.scalars(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            )

    def wait_for(self, n: int, timeout: float = 120.0) -> set[int]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pids = self.waiting()
            if len(pids) >= n:
                return pids
            time.sleep(0.05)
        raise AssertionError(f"{n} writers never reached the gate (waiting: {self.waiting()})")

    def cancel(self, pid: int) -> None:
        with self.engine.connect() as c:
            c.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})

    def open(self) -> None:
        """Release the lock (again: nothing)."""
        if not self.conn.closed:
            self.tx.commit()
            self.conn.close()
            self.engine.dispose()


@contextmanager
def _started(fn: Callable[[], object], gate: TableGate, waiters: int) -> Iterator[_Thread]:
    """Start ``fn`` in a thread and return once it waits at the gate (so the next side
    starts only when this one is done with everything but its database writes)."""
    t = _Thread(fn)
    t.start()
    gate.wait_for(waiters)
    yield t


def _embedded_upload(svc, demo_set) -> int:
    """An upload cropped and embedded, not yet indexed (its face is in no index)."""
    uid = submit_path(svc, demo_set / "uploads" / FAKE).upload_id
    crop(svc, uid)
    embed(svc, uid)
    with svc.db.session() as s:
        assert s.get(Upload, uid).status == "embedded"
    return uid


@pytest.fixture
def pg_svc(make_services, pg_url):
    return make_services(database_url=pg_url)


# -- one insert, many writers ----------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_many_writers_of_one_match_make_one_row(backend, tmp_path, request):
    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'races.db'}"
    )
    db = Database(url)
    try:
        with db.session() as s:
            ident = Identity(name="Someone")
            up = Upload(sha256="0" * 64, original_name="x", path="x")
            s.add_all([ident, up])
            s.flush()
            face = Face(
                upload_id=up.id, idx=0, box=[0, 0, 1, 1], landmarks=[], det_score=1.0,
                quality=1.0, chip_path="c", crop_path="c", face_backend="dlib",
            )  # fmt: skip
            s.add(face)
            s.flush()
            face_id, identity_id = face.id, ident.id
        start = threading.Barrier(8)

        def insert() -> bool:
            start.wait()
            with db.session() as s:
                inserted = add_match(s, face_id, identity_id, 0.9, None)
                time.sleep(0.05)  # hold the transaction: the others insert meanwhile
                return inserted

        threads = [_Thread(insert) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [t.error for t in threads] == [None] * 8
        assert sorted(t.result for t in threads) == [False] * 7 + [True]
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(Match)) == 1
    finally:
        db.dispose()


# -- registration's backfill racing the index stage of the same face ----------------------
def test_backfill_and_index_claiming_one_face_at_once(pg_svc, pg_url, demo_set):
    svc = pg_svc
    uid = _embedded_upload(svc, demo_set)
    reg = register_identity(svc, EILEEN, load_references(demo_set)[EILEEN], dispatcher=_Later())
    assert reg.backfill_status == "pending"

    gate = TableGate(pg_url, "matches")
    try:
        # Index first: it puts the face in the face index (so the backfill finds it),
        # decides it claims Eileen Collins and waits to insert the match; then the
        # backfill finds the face, decides the same and waits to insert the same match.
        with (
            _started(lambda: index(svc, uid), gate, 1) as indexing,
            _started(lambda: run_backfill(svc, reg.backfill_job_id), gate, 2) as backfill,
        ):
            gate.open()
            indexing.join(120)
            backfill.join(120)
    finally:
        gate.open()
    assert indexing.error is None and backfill.error is None, (indexing.error, backfill.error)
    classify(svc, uid)

    with svc.db.session() as s:
        assert s.get(Upload, uid).status == "done"
        assert s.get(Job, reg.backfill_job_id).status == "done"
        matches = list(s.scalars(select(Match)))
    assert len(matches) == 1 and matches[0].identity_id == reg.identity_id
    assert matches[0].fake_score is not None and matches[0].is_fake
    assert _n(svc, Alert) == 1  # scored by one of the two, alerted once


def test_backfill_rolled_back_mid_race_is_run_again_by_the_sweeper(pg_svc, pg_url, demo_set):
    """The backfill's transaction dies while it waits to insert (its statement is
    cancelled, as when its connection or worker goes): the index stage still stores the
    match, the job is failed, not lost, and the sweeper runs it to done."""
    svc = pg_svc
    uid = _embedded_upload(svc, demo_set)
    reg = register_identity(svc, EILEEN, load_references(demo_set)[EILEEN], dispatcher=_Later())

    gate = TableGate(pg_url, "matches")
    try:
        with _started(lambda: index(svc, uid), gate, 1) as indexing:
            first = gate.waiting()
            with _started(lambda: run_backfill(svc, reg.backfill_job_id), gate, 2) as backfill:
                (backfill_pid,) = gate.waiting() - first
                gate.cancel(backfill_pid)
                backfill.join(120)
                gate.open()
                indexing.join(120)
    finally:
        gate.open()
    assert indexing.error is None
    assert backfill.error is not None and "cancel" in str(backfill.error).lower()
    with svc.db.session() as s:
        job = s.get(Job, reg.backfill_job_id)
        assert job.status == "failed" and "cancel" in job.error.lower()
        assert s.scalar(select(func.count()).select_from(Match)) == 1  # the index's

    # Nothing else sends the job again: the sweeper does.
    result = sweep(svc, InlineDispatcher(svc), older_than_s=0)
    assert reg.backfill_job_id in result.jobs
    classify(svc, uid)
    with svc.db.session() as s:
        assert s.get(Job, reg.backfill_job_id).status == "done"
        assert s.get(Upload, uid).status == "done"
        (match,) = s.scalars(select(Match))
        assert match.fake_score is not None
    assert _n(svc, Alert) == 1
    assert sweep(svc, InlineDispatcher(svc), older_than_s=0).jobs == []


# -- two registrations of one new person at once ----------------------------------------
def test_two_registrations_of_one_person_at_once(make_services, pg_url, demo_set):
    """Two processes (here: two Services, each its own models, files and vector store)
    register the same new person with the same photos at the same moment: one person,
    each photo stored once, one backfill job; neither fails."""
    photos = load_references(demo_set)[EILEEN]
    services = [make_services(database_url=pg_url) for _ in range(2)]
    for svc in services:
        svc.face_backend.load()
        assert svc.db.url == pg_url  # migrated before the gate closes

    gate = TableGate(pg_url, "identities")
    try:
        with (
            _started(
                lambda: register_identity(services[0], EILEEN, photos, dispatcher=_Later()),
                gate,
                1,
            ) as one,
            _started(
                lambda: register_identity(services[1], EILEEN, photos, dispatcher=_Later()),
                gate,
                2,
            ) as other,
        ):
            gate.open()
            one.join(120)
            other.join(120)
    finally:
        gate.open()
    assert one.error is None and other.error is None, (one.error, other.error)
    regs = sorted([one.result, other.result], key=lambda r: not r.created)
    assert [r.created for r in regs] == [True, False]
    assert regs[0].identity_id == regs[1].identity_id
    assert regs[0].references_added == len(photos) and regs[1].references_added == 0
    svc = services[0]
    assert _n(svc, Identity) == 1
    assert _n(svc, ReferencePhoto) == len(photos)
    assert _n(svc, Job, Job.kind == jobs.BACKFILL) == 1


# -- a crop redelivered while the first one still runs -----------------------------------
def test_two_crops_of_one_upload_at_once(pg_svc, pg_url, demo_set):
    svc = pg_svc
    uid = submit_path(svc, demo_set / "uploads" / FAKE).upload_id
    svc.face_backend.load()
    gate = TableGate(pg_url, "faces")
    try:
        with (
            _started(lambda: crop(svc, uid), gate, 1) as first,
            _started(lambda: crop(svc, uid), gate, 2) as second,
        ):
            gate.open()
            first.join(120)
            second.join(120)
    finally:
        gate.open()
    assert first.error is None and second.error is None, (first.error, second.error)
    assert sorted([first.result, second.result]) == [[], [uid]]  # only one goes on
    with svc.db.session() as s:
        assert s.get(Upload, uid).status == "cropped"
        assert list(s.scalars(select(Face.idx).where(Face.upload_id == uid))) == [0]
