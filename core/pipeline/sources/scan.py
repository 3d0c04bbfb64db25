"""Files named on the command line (``idwatch scan``): submit each one, hand it to the
dispatcher, and wait until every upload is terminal or the wait is over.

Embedded (in-process dispatcher) each upload has run through the whole flow by the time
it is submitted, so there is nothing to wait for. With a broker the uploads go to the
queues and the scan waits up to ``wait_s`` seconds; what is still running then is
reported (``ScanSummary.running``) and left to the workers.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from core.pipeline.dispatch import Dispatcher, InlineDispatcher
from core.pipeline.sources.admit import Admission, admit, read_head
from core.pipeline.sources.submit import Submission, submit_path
from core.pipeline.status import is_terminal
from core.services import Services
from core.storage.models import Alert, Face, Match, Upload, UploadStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    path: Path
    named: bool  # named on the command line (an upload by contract), not found in a folder


def walk(paths: Iterable[Path]) -> tuple[list[Seen], list[dict[str, str]]]:
    """Files given, plus every file under the folders given (recursively, sorted), and
    what the walk passed over with the reason: links leading out of a folder (never
    followed), broken links, FIFOs, sockets and devices (never opened)."""
    files: list[Seen] = []
    passed: list[dict[str, str]] = []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(Seen(p, True))
            continue
        root = p.resolve()
        for f in sorted(p.rglob("*")):
            reason = _walk_reason(f, root)
            if reason == "":
                files.append(Seen(f, False))
            elif reason is not None:
                passed.append({"path": str(f), "reason": reason})
    return files, passed


def _walk_reason(f: Path, root: Path) -> str | None:
    """ "" to take ``f``, None for a folder (walked into), else why it is passed over."""
    if f.is_symlink():
        target = f.resolve()
        if not target.exists():
            return "broken symbolic link"
        if not target.is_relative_to(root):
            return f"symbolic link out of the folder (to {target}; not followed)"
    if f.is_dir():
        return None
    return "" if f.is_file() else "not a regular file (FIFO, socket or device; never opened)"


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """The files a scan of ``paths`` looks at (see ``walk``)."""
    return [s.path for s in walk(paths)[0]]


def _admit(f: Seen) -> Admission:
    """Content decides (core.pipeline.sources.admit); a file named by hand is taken
    even unread, so that submit_path records why it cannot be read."""
    try:
        head = read_head(f.path)
    except OSError as exc:
        if f.named:
            return Admission(True, None)
        return Admission(False, None, f"cannot read it: {exc.strerror or exc}")
    return admit(head, named=f.named)


def _submit(svc: Services, f: Path, source: str, summary: ScanSummary) -> Submission | None:
    """Submit one file; an error here must not abort the rest of the batch."""
    try:
        return submit_path(svc, f, source)
    except Exception as exc:
        log.exception("could not submit %s", f)
        summary.not_submitted.append(f"{f}: {type(exc).__name__}: {exc}")
        return None


@dataclass
class ScanSummary:
    seen: int = 0  # files the scan looked at: submitted + skipped + not_submitted
    submitted: int = 0
    new: int = 0  # submissions that created an upload
    duplicates: int = 0  # submissions of bytes already known (an earlier upload)
    # Files passed over, each {"path", "reason"}: not media, media over its limits,
    # links out of a folder, FIFOs... (core.pipeline.sources.admit decides).
    skipped: list[dict[str, str]] = field(default_factory=list)
    scanned: int = 0  # distinct uploads
    with_faces: int = 0
    faces: int = 0
    matched: int = 0  # uploads with a face matched to a protected identity
    judged_fake: int = 0  # uploads with an alert
    done: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0  # distributed: not terminal when the wait ended
    running: dict[int, str] = field(default_factory=dict)  # ... their ids and statuses
    # Stored, but the dispatcher refused them (broker down): the sweeper sends them later.
    not_dispatched: list[int] = field(default_factory=list)
    # Files that could not even be given a status row (the database refused, ...).
    not_submitted: list[str] = field(default_factory=list)
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    upload_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def scan(
    svc: Services,
    paths: Iterable[Path],
    source: str = "cli",
    progress: Callable[[int, int, Path], None] | None = None,
    dispatcher: Dispatcher | None = None,
    wait_s: float = 600.0,
    poll_s: float = 0.5,
) -> ScanSummary:
    """Submit files and run them through the flow (``dispatcher``, default in-process);
    wait up to ``wait_s`` for uploads on the queues. Uploads still running at the end of
    the wait are counted as pending and listed in ``running``."""
    dispatcher = dispatcher or InlineDispatcher(svc)
    files, passed = walk(paths)
    summary = ScanSummary(seen=len(files) + len(passed), skipped=list(passed))
    subs: list[Submission] = []
    for i, seen in enumerate(files):
        f = seen.path
        decision = _admit(seen)
        if not decision.submit:
            summary.skipped.append({"path": str(f), "reason": str(decision.reason)})
        elif (sub := _submit(svc, f, source, summary)) is not None:
            subs.append(sub)
            if sub.created and not is_terminal(sub.status):
                _dispatch(dispatcher, sub.upload_id, f, summary)
        if progress:
            progress(i + 1, len(files), f)
    summary.submitted = len(subs)
    summary.new = sum(s.created for s in subs)
    summary.duplicates = sum(not s.created for s in subs)
    summary.upload_ids = list(dict.fromkeys(s.upload_id for s in subs))
    if not dispatcher.synchronous:
        _wait(svc, summary, wait_s, poll_s, progress)
    _fill_summary(svc, summary)
    return summary


def _dispatch(dispatcher: Dispatcher, upload_id: int, f: Path, summary: ScanSummary) -> None:
    try:
        dispatcher.upload(upload_id)
    except Exception:  # broker down: stored with its status row; the sweeper sends it later
        log.exception("could not dispatch upload %s (%s)", upload_id, f)
        summary.not_dispatched.append(upload_id)


def _statuses(svc: Services, ids: list[int]) -> dict[int, str]:
    with svc.db.session() as s:
        return dict(s.execute(select(Upload.id, Upload.status).where(Upload.id.in_(ids))).all())


def _wait(
    svc: Services,
    summary: ScanSummary,
    wait_s: float,
    poll_s: float,
    progress: Callable[[int, int, Path], None] | None,
) -> None:
    deadline = time.monotonic() + wait_s
    total = len(summary.upload_ids)
    while True:
        statuses = _statuses(svc, summary.upload_ids)
        finished = sum(is_terminal(st) for st in statuses.values())
        if progress:
            progress(finished, total, Path("waiting for workers"))
        if finished == total or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)


def _fill_summary(svc: Services, summary: ScanSummary) -> None:
    ids = summary.upload_ids
    with svc.db.session() as s:
        ups = list(s.scalars(select(Upload).where(Upload.id.in_(ids))))
        summary.scanned = len(ups)
        st = Counter(u.status for u in ups)
        summary.done, summary.rejected, summary.failed = (
            st[UploadStatus.done],
            st[UploadStatus.rejected],
            st[UploadStatus.failed],
        )
        summary.rejected_reasons = dict(
            Counter(
                (u.reason or "?").split(":")[0] for u in ups if u.status == UploadStatus.rejected
            )
        )
        summary.running = {
            u.id: u.status for u in sorted(ups, key=lambda u: u.id) if not is_terminal(u.status)
        }
        summary.pending = len(summary.running)
        summary.with_faces = sum(1 for u in ups if (u.n_faces or 0) > 0)
        summary.faces = sum(u.n_faces or 0 for u in ups)
        summary.matched = (
            s.scalar(
                select(func.count(func.distinct(Face.upload_id)))
                .join(Match, Match.face_id == Face.id)
                .where(Face.upload_id.in_(ids))
            )
            or 0
        )
        summary.judged_fake = (
            s.scalar(
                select(func.count(func.distinct(Alert.upload_id))).where(Alert.upload_id.in_(ids))
            )
            or 0
        )
