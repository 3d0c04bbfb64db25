"""The embedded runner: submit files and run the four stages in this process.

The distributed deployment runs the same stage functions as Celery tasks; this
runner is what ``idwatch scan`` uses with no broker configured.
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from core.pipeline import stages
from core.pipeline.status import get_status, is_terminal, mark_failed
from core.pipeline.submit import Submission, submit_path
from core.services import Services
from core.storage.models import Alert, Face, Match, Upload, UploadStatus

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"}


def collect_files(paths: Iterable[Path], all_files: bool = False) -> list[Path]:
    """Files given, plus files under folders given (recursively, sorted). In folders only
    image-like names are taken unless ``all_files``; files named explicitly always are.
    Symbolic links inside folders are not followed out of the folder."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            root = p.resolve()
            for f in sorted(p.rglob("*")):
                if f.is_symlink() and not f.resolve().is_relative_to(root):
                    continue
                if f.is_file() and (all_files or f.suffix.lower() in IMAGE_SUFFIXES):
                    out.append(f)
        else:
            out.append(p)
    return out


def run_upload(svc: Services, upload_id: int) -> str:
    """Run every remaining stage of one upload; always leaves it in a terminal state."""
    try:
        if not stages.crop(svc, upload_id).proceed:
            return get_status(svc, upload_id)
        stages.embed(svc, [upload_id])
        stages.index(svc, upload_id)
        stages.classify(svc, upload_id)
    except Exception as exc:  # anything unexpected is a failure with the error kept
        log.exception("upload %s failed", upload_id)
        mark_failed(svc, upload_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    status = get_status(svc, upload_id)
    if not is_terminal(status):  # defensive: no upload may stay half-done
        mark_failed(svc, upload_id, f"pipeline stopped at {status}")
        status = UploadStatus.failed
    return status


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
    submitted: int = 0
    duplicates: int = 0
    scanned: int = 0
    with_faces: int = 0
    faces: int = 0
    matched: int = 0  # uploads with a face matched to a protected identity
    judged_fake: int = 0  # uploads with an alert
    done: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0  # distributed: not terminal when the wait ended
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
) -> ScanSummary:
    files = collect_files(paths)
    summary = ScanSummary()
    subs: list[Submission] = []
    for i, f in enumerate(files):
        sub = _submit(svc, f, source, summary)
        if sub is not None:
            subs.append(sub)
            if sub.created and not is_terminal(sub.status):
                run_upload(svc, sub.upload_id)
        if progress:
            progress(i + 1, len(files), f)
    summary.submitted = len(subs)
    summary.duplicates = sum(not s.created for s in subs)
    summary.upload_ids = list(dict.fromkeys(s.upload_id for s in subs))
    _fill_summary(svc, summary)
    return summary


def scan_distributed(
    svc: Services,
    paths: Iterable[Path],
    dispatcher,
    timeout_s: float = 600.0,
    source: str = "cli",
    progress: Callable[[int, int, Path], None] | None = None,
    poll_s: float = 0.5,
) -> ScanSummary:
    """Submit files, hand them to the queues, and wait (up to ``timeout_s``) until every
    upload is terminal. Uploads still running at the deadline are counted as pending."""
    import time

    files = collect_files(paths)
    subs: list[Submission] = []
    summary = ScanSummary()
    for f in files:
        sub = _submit(svc, f, source, summary)
        if sub is None:
            continue
        subs.append(sub)
        if sub.created and not is_terminal(sub.status):
            dispatcher.upload(sub.upload_id)
    summary.submitted, summary.duplicates = len(subs), sum(not s.created for s in subs)
    summary.upload_ids = list(dict.fromkeys(s.upload_id for s in subs))
    deadline = time.monotonic() + timeout_s
    while True:
        with svc.db.session() as s:
            statuses = list(
                s.scalars(select(Upload.status).where(Upload.id.in_(summary.upload_ids)))
            )
        finished = sum(is_terminal(st) for st in statuses)
        if progress:
            progress(finished, len(summary.upload_ids), Path("waiting for workers"))
        if finished == len(summary.upload_ids) or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    summary.pending = len(summary.upload_ids) - finished
    _fill_summary(svc, summary)
    return summary


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
