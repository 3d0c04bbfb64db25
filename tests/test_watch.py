"""The watched folder: real files under tmp_path, a real embedded database."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.sources.watchfolder import FolderWatcher, is_skipped_name
from core.storage.models import Upload, UploadStatus, WatchedFile
from workers.ops.watch import watch

SETTLE = 0.2
WAIT = SETTLE + 0.05


class Recorder:
    """A dispatcher that records the ids it is given (thread-safe), optionally running
    them through a real dispatcher too."""

    def __init__(self, inner=None) -> None:
        self.ids: list[int] = []
        self.inner = inner
        self._lock = threading.Lock()

    def upload(self, upload_id: int) -> None:
        with self._lock:
            self.ids.append(upload_id)
        if self.inner is not None:
            self.inner.upload(upload_id)

    def backfill(self, identity_id: int) -> None:
        raise AssertionError("the watcher never backfills")


def _image(demo_set: Path, name: str = "eileen_headshot.png") -> bytes:
    return (demo_set / "uploads" / name).read_bytes()


def _settle(w: FolderWatcher) -> list[int]:
    """See everything once, wait past the settle time, take what is ready."""
    w.poll_once()
    time.sleep(WAIT)
    return w.poll_once()


def _uploads(svc) -> list[Upload]:
    with svc.db.session() as s:
        rows = list(s.scalars(select(Upload).order_by(Upload.id)))
        s.expunge_all()
        return rows


def _rows(svc) -> list[tuple[str, int | None]]:
    with svc.db.session() as s:
        return [
            (r.relpath, r.upload_id)
            for r in s.scalars(select(WatchedFile).order_by(WatchedFile.id))
        ]


def _stored(svc, upload_id: int) -> bytes:
    with svc.db.session() as s:
        return svc.files.abs(s.get(Upload, upload_id).path).read_bytes()


@pytest.fixture
def root(tmp_path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    return d


def test_new_image_taken_once_after_settling(make_services, demo_set, root):
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE, poll_s=0.05)
    data = _image(demo_set)
    (root / "sub").mkdir()
    (root / "sub" / "a.png").write_bytes(data)

    assert w.poll_once() == []  # first sighting: not settled yet
    assert rec.ids == [] and _uploads(svc) == []
    time.sleep(WAIT)
    ids = w.poll_once()
    assert len(ids) == 1 and rec.ids == ids
    up = _uploads(svc)[0]
    assert (up.id, up.source, up.status) == (ids[0], "watch", UploadStatus.received)
    assert _stored(svc, up.id) == data
    assert _rows(svc) == [("sub/a.png", up.id)]

    time.sleep(WAIT)
    assert w.poll_once() == [] and w.poll_once() == []
    assert rec.ids == ids and len(_rows(svc)) == 1


def test_restart_does_not_resubmit(make_services, demo_set, root):
    svc = make_services()
    (root / "a.png").write_bytes(_image(demo_set))
    first = Recorder()
    assert len(_settle(FolderWatcher(svc, root, first, settle_s=SETTLE))) == 1
    svc.close()

    # A new process: new Services on the same database, fresh in-memory state.
    svc2 = make_services(data_dir=svc.settings.data_dir)
    again = Recorder()
    w2 = FolderWatcher(svc2, root, again, settle_s=SETTLE)
    opened: list[str] = []
    real_open = w2._open_beneath
    w2._open_beneath = lambda rel: opened.append(rel) or real_open(rel)
    assert _settle(w2) == [] and w2.poll_once() == []
    assert opened == []  # recorded versions are not even read again
    assert again.ids == [] and len(_rows(svc2)) == 1 and len(_uploads(svc2)) == 1

    (root / "b.jpg").write_bytes(_image(demo_set, "coffee.jpg"))  # new files still taken
    assert len(_settle(w2)) == 1 and len(again.ids) == 1


def test_file_written_in_two_halves_is_read_only_when_complete(make_services, demo_set, root):
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE)
    data = _image(demo_set)
    half = len(data) // 2
    path = root / "slow.png"
    with path.open("wb") as f:
        f.write(data[:half])
        f.flush()
        assert w.poll_once() == []
        time.sleep(SETTLE / 2)  # the writer pauses, but for less than the settle time
        assert w.poll_once() == []
        f.write(data[half:])
    assert w.poll_once() == []  # changed since the last poll: settles again
    assert _uploads(svc) == []
    time.sleep(WAIT)
    ids = w.poll_once()
    assert len(ids) == 1 and len(_uploads(svc)) == 1
    assert _stored(svc, ids[0]) == data


@pytest.mark.parametrize("when", ["after_open", "during_read"])
def test_file_changed_while_being_taken_settles_again(
    make_services, demo_set, root, when, monkeypatch
):
    """A writer that touches the file between settling and the end of our read: the
    bytes read are not the settled version, so nothing is submitted until it settles."""
    from core.pipeline.sources import watchfolder

    svc = make_services()
    w = FolderWatcher(svc, root, Recorder(), settle_s=SETTLE)
    data = _image(demo_set)
    path = root / "a.png"
    path.write_bytes(data[:1000])
    w.poll_once()
    time.sleep(WAIT)

    def append_rest() -> None:
        with path.open("ab") as f:
            f.write(data[1000:])

    if when == "after_open":
        real_open = w._open_beneath
        monkeypatch.setattr(w, "_open_beneath", lambda rel: (real_open(rel), append_rest())[0])
    else:

        class OsProxy:  # append just before the fstat that follows the read
            calls = 0

            def __getattr__(self, name):
                return getattr(os, name)

            def fstat(self, fd):
                OsProxy.calls += 1
                if OsProxy.calls == 2:
                    append_rest()
                return os.fstat(fd)

        monkeypatch.setattr(watchfolder, "os", OsProxy())
    assert w.poll_once() == [] and _uploads(svc) == []
    monkeypatch.undo()
    (uid,) = _settle(w)
    assert _stored(svc, uid) == data


def test_hidden_and_temporary_names_are_ignored(make_services, demo_set, root, caplog):
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE)
    data = _image(demo_set)
    names = [".hidden.png", "a.png.part", "b.tmp", "c.crdownload", "d.partial", "~e.png", "F.PART"]
    for name in names:
        assert is_skipped_name(name)
        (root / name).write_bytes(data)
    (root / ".cache").mkdir()
    (root / ".cache" / "g.png").write_bytes(data)
    assert _settle(w) == [] and _uploads(svc) == [] and rec.ids == []

    bad = os.path.join(os.fsencode(root), b"latin1-\xe9.png")  # not UTF-8: skipped
    with open(bad, "wb") as f:
        f.write(data)
    with caplog.at_level(logging.WARNING, logger="core.pipeline.sources.watchfolder"):
        assert _settle(w) == [] and w.poll_once() == [] and _uploads(svc) == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # once, and no error
    assert "UTF-8" in caplog.records[0].getMessage()

    (root / "a.png.part").rename(root / "a.png")  # the download finished
    ids = _settle(w)
    assert len(ids) == 1 and rec.ids == ids
    assert _rows(svc) == [("a.png", ids[0])] and _stored(svc, ids[0]) == data


def test_symlinks_and_fifos_are_never_read(make_services, demo_set, root, tmp_path, caplog):
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_image(demo_set, "tom_mirror_dark.png"))
    os.mkfifo(outside / "pipe")
    os.mkfifo(root / "inside_pipe.jpg")  # a FIFO in the folder itself
    (root / "leak.png").symlink_to(outside / "secret.png")
    (root / "pipe.jpg").symlink_to(outside / "pipe")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "real.png").write_bytes(_image(demo_set))
    (root / "alias.png").symlink_to(root / "real.png")  # inside: ignored, target taken

    # A blocking open of a FIFO would hang the pass: run it where we can time it out.
    result: list[list[int]] = []
    t = threading.Thread(target=lambda: result.append(_settle(w)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="core.pipeline.sources.watchfolder"):
        t.start()
        t.join(10)
        assert not t.is_alive(), "a pass blocked on a FIFO"
        w.poll_once()
    assert len(result[0]) == 1 and rec.ids == result[0]
    assert _rows(svc) == [("real.png", result[0][0])]
    assert [u.original_name for u in _uploads(svc)] == [str(root.resolve() / "real.png")]
    warned = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert sum("leak.png" in m for m in warned) == 1  # once, not once per pass
    assert sum("pipe.jpg" in m for m in warned) == 1


def test_same_bytes_under_two_names_make_one_upload(make_services, demo_set, root):
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE)
    data = _image(demo_set)
    (root / "one.png").write_bytes(data)
    (root / "two.png").write_bytes(data)
    ids = _settle(w)
    assert len(ids) == 2 and ids[0] == ids[1]
    assert rec.ids == [ids[0]]  # dispatched once
    assert _rows(svc) == [("one.png", ids[0]), ("two.png", ids[0])]
    assert len(_uploads(svc)) == 1


def test_new_version_of_a_file_is_submitted_again(make_services, demo_set, root):
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE)
    path = root / "a.jpg"
    path.write_bytes(_image(demo_set, "coffee.jpg"))
    (first,) = _settle(w)
    new = _image(demo_set, "tom_small.jpg")
    path.write_bytes(new)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse clocks
    (second,) = _settle(w)
    assert second != first and rec.ids == [first, second]
    assert _stored(svc, second) == new
    assert [r[0] for r in _rows(svc)] == ["a.jpg", "a.jpg"]
    assert _settle(w) == [] and rec.ids == [first, second]


def test_two_watchers_racing_dispatch_each_file_once(make_services, demo_set, root, tmp_path):
    data_dir = tmp_path / "shared-data"
    svc_a = make_services(data_dir=data_dir)
    svc_b = make_services(data_dir=data_dir)  # two "processes": own engines, one database
    names = ["coffee.jpg", "eileen_headshot.png", "tom_small.jpg", "person1.jpg", "group.jpg"]
    for n in names:
        shutil.copy(demo_set / "uploads" / n, root / n)
    shutil.copy(demo_set / "uploads" / "coffee.jpg", root / "coffee_copy.jpg")
    rec = Recorder()
    watchers = [FolderWatcher(s, root, rec, settle_s=0.1) for s in (svc_a, svc_b)]
    for w in watchers:
        w.poll_once()
    time.sleep(0.15)
    gate = threading.Barrier(2)
    taken: list[list[int]] = [[], []]

    def go(i: int) -> None:
        gate.wait()
        for _ in range(3):
            taken[i] += watchers[i].poll_once()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    uploads = _uploads(svc_a)
    assert len(uploads) == len(names)
    assert Counter(rec.ids) == Counter(u.id for u in uploads)  # each exactly once
    assert len(_rows(svc_a)) == len(names) + 1  # every version recorded once
    assert sorted(taken[0] + taken[1]) == sorted(uid for _, uid in _rows(svc_a))


def test_lost_row_race_still_dispatches_the_new_upload(make_services, demo_set, root):
    """The watcher that created the upload dispatches it even when another watcher
    recorded the version first (its lookup saw no row; its insert then fails)."""
    svc = make_services()
    rec = Recorder()
    w = FolderWatcher(svc, root, rec, settle_s=0)
    (root / "a.png").write_bytes(_image(demo_set))
    st = (root / "a.png").stat()
    w._recorded = lambda rel, sig: False  # the other watcher inserts right after our lookup
    with svc.db.session() as s:
        s.add(WatchedFile(root=w.root_key, relpath="a.png", size=st.st_size,
                          mtime_ns=st.st_mtime_ns, upload_id=None))  # fmt: skip
    assert w.poll_once() == []  # not recorded by us
    (up,) = _uploads(svc)
    assert rec.ids == [up.id]  # but dispatched, once
    # And a watcher losing both races (upload and row) dispatches nothing.
    other = Recorder()
    w2 = FolderWatcher(svc, root, other, settle_s=0)
    w2._recorded = lambda rel, sig: False
    assert w2.poll_once() == [] and other.ids == []


def test_rejected_files_are_recorded_and_not_retried(make_services, root):
    svc = make_services(max_upload_bytes=4096)
    rec = Recorder(InlineDispatcher(svc))
    w = FolderWatcher(svc, root, rec, settle_s=SETTLE)
    (root / "notes.txt").write_text("not an image at all\n")
    (root / "huge.jpg").write_bytes(b"\xff\xd8\xff" + bytes(8000))
    ids = _settle(w)
    assert len(ids) == 2
    by_name = {Path(u.original_name).name: u for u in _uploads(svc)}
    assert by_name["notes.txt"].status == UploadStatus.rejected
    assert by_name["notes.txt"].reason.startswith("not_an_image")
    assert by_name["huge.jpg"].status == UploadStatus.rejected
    assert by_name["huge.jpg"].reason.startswith("too_large")
    assert rec.ids == [by_name["notes.txt"].id]  # rejected at submission: nothing to run
    assert _settle(w) == [] and w.poll_once() == []
    assert len(rec.ids) == 1 and len(_uploads(svc)) == 2 and len(_rows(svc)) == 2


def test_failed_dispatch_is_retried(make_services, demo_set, root):
    svc = make_services()
    calls: list[int] = []

    class Flaky:
        def upload(self, upload_id: int) -> None:
            calls.append(upload_id)
            if len(calls) == 1:
                raise ConnectionError("broker down")

    w = FolderWatcher(svc, root, Flaky(), settle_s=0)
    (root / "a.png").write_bytes(_image(demo_set))
    (uid,) = w.poll_once()
    assert calls == [uid]
    assert w.poll_once() == [] and calls == [uid, uid]
    assert w.poll_once() == [] and calls == [uid, uid]


def test_watch_stops_on_sigterm(make_services, demo_set, root):
    svc = make_services()
    rec = Recorder()
    (root / "a.png").write_bytes(_image(demo_set))
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    watch(root, svc, rec, settle_s=0.1, poll_s=0.05)
    timer.join()
    assert time.monotonic() - started < 5
    assert len(rec.ids) == 1
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_run_stops_on_event_and_max_passes(make_services, demo_set, root):
    svc = make_services()
    rec = Recorder()
    (root / "a.png").write_bytes(_image(demo_set))
    w = FolderWatcher(svc, root, rec, settle_s=0.1, poll_s=0.06)
    w.run(max_passes=4)  # ~0.18 s: past the settle time
    assert len(rec.ids) == 1
    stop = threading.Event()
    stop.set()
    w.run(stop)  # returns at once
    missing = FolderWatcher(svc, root / "not-there", rec, settle_s=0)
    assert missing.poll_once() == []  # a missing folder is not an error


def test_watch_default_dispatcher_runs_the_pipeline(make_services, root):
    svc = make_services()  # no broker: make_dispatcher gives the inline dispatcher
    (root / "page.html").write_text("<html><body>hello</body></html>")
    stop = threading.Event()
    t = threading.Thread(target=watch, args=(root, svc), kwargs=dict(stop=stop, settle_s=0.1,
                                                                     poll_s=0.05))  # fmt: skip
    t.start()  # not the main thread: no signal handlers, the event stops it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        _uploads(svc) and _uploads(svc)[0].status == UploadStatus.rejected
    ):
        time.sleep(0.05)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    (up,) = _uploads(svc)
    assert up.status == UploadStatus.rejected and up.reason.startswith("not_an_image")
