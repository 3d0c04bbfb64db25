"""The flow of work, declared once.

An upload goes crop -> embed -> index -> classify; every alert that raises is then
delivered by notify, once per (alert, notifier). A video's crop splits it into segments
(``crop_segment``, on the crop queue, one message per segment), each handing on to
embed; embed hands the video on to index once its last segment is embedded. Two jobs
about a person start flows of their own: backfill (a person registered after uploads
were scanned: their earlier faces get a verdict, and the alerts go on to notify) and
erasure.

Everything else is read from the table below, never written again elsewhere:

- the upload statuses in order (``received``, then what each stage reaches), which of
  them are terminal and which the sweeper looks for (``UploadStatus``, ``FLOW.order``,
  ``FLOW.non_terminal``);
- the Celery queues, the queue of each task and the queues ``idwatch up`` starts a
  worker for (``FLOW.queues``, ``Stage.queue``);
- what comes next (``FLOW.after``) and which function runs a stage (``Stage.run``), for
  the in-process dispatcher and the Celery tasks alike;
- what a stage's final failure does to its subject (``ON_FAILURE``).

A stage function takes ``(services, id)`` and returns the ids the next stage should get
(an empty list: nothing goes on), or a ``Split``: ids for the stage named by its
``split`` (the parts its subject was cut into), which hand on from there. Adding a
stage is one ``Stage`` here, its function, and its one-line task in ``workers/tasks.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from core.registry import load_object

# What a stage's id names.
UPLOAD, NOTIFICATION, JOB, SEGMENT = "upload", "notification", "job", "segment"

# Upload statuses outside the stages: the first, and the two ends besides the last stage's.
RECEIVED, REJECTED, FAILED = "received", "rejected", "failed"


@dataclass(frozen=True)
class Stage:
    name: str  # the task is "idwatch.<name>"
    queue: str  # the Celery queue it runs on
    run: str  # "module:function": (services, id) -> ids for the next stage
    subject: str  # what the id names: UPLOAD, NOTIFICATION or JOB
    reaches: str | None = None  # the upload status once it ran (upload stages)
    then: str | None = None  # the stage that gets its output (filled in for the line)
    split: str | None = None  # the stage that gets the parts when it returns a ``Split``

    @property
    def task_name(self) -> str:
        return f"idwatch.{self.name}"

    def function(self) -> Callable[[Any, int], list[int] | Split]:
        return load_object(self.run)


@dataclass(frozen=True)
class Split:
    """A stage's output when it cut its subject into parts: the parts' ids go to the
    stage's ``split`` stage (one message each), not to its next stage."""

    ids: tuple[int, ...]


# The line every upload follows, in order; each stage hands its output to the next.
UPLOAD_LINE = (
    Stage(
        "crop",
        "crop",
        "core.pipeline.detection:crop",
        UPLOAD,
        reaches="cropped",
        split="crop_segment",
    ),
    Stage("embed", "embed", "core.pipeline.detection:embed", UPLOAD, reaches="embedded"),
    Stage("index", "index", "core.pipeline.matching:index", UPLOAD, reaches="indexed"),
    Stage("classify", "classify", "core.pipeline.verdicts:classify", UPLOAD, reaches="done"),
    Stage("notify", "notify", "core.pipeline.delivery:deliver", NOTIFICATION),
)

# Jobs about a protected person (rows in ``jobs``, whose ``kind`` is the stage's name),
# each on the queue whose workers hold what it needs: backfill scores faces (the
# detector), erasure deletes vectors and files.
JOBS = (
    Stage("backfill", "classify", "core.pipeline.backfill:run_backfill", JOB, then="notify"),
    Stage("erasure", "index", "core.pipeline.erasure:run_erasure", JOB),
)

# Parts of a subject, each its own message: a video's segments (rows in
# ``video_segments``) are cropped one per task, so a long video never holds a worker for
# minutes and several workers share it; each segment then goes on to embed.
PARTS = (
    Stage(
        "crop_segment",
        "crop",
        "core.pipeline.video_stages:crop_segment",
        SEGMENT,
        then="embed",
    ),
)

# What the last failure of a stage (retries spent) does: ``(services, id, error)``.
ON_FAILURE = {
    UPLOAD: "core.pipeline.status:mark_failed",  # terminal ``failed`` with the error
    NOTIFICATION: "core.pipeline.delivery:note_failure",  # stays pending for the sweeper
    JOB: "core.pipeline.jobs:mark_failed",  # ``failed``; the sweeper runs it again
    SEGMENT: "core.pipeline.video_stages:mark_segment_failed",  # its upload ``failed``
}


class Flow:
    def __init__(self, line: tuple[Stage, ...], jobs: tuple[Stage, ...] = ()) -> None:
        # ``jobs``: every stage off the line (jobs about a person, parts of a subject).
        # On the line, each stage hands on to the one after it; jobs say where they go.
        chained = [
            replace(s, then=nxt.name if nxt else None)
            for s, nxt in zip(line, [*line[1:], None], strict=True)
        ]
        self.line = tuple(chained)
        self.stages = {s.name: s for s in (*self.line, *jobs)}
        if len(self.stages) != len(line) + len(jobs):
            raise ValueError("stage names must be unique")
        for s in self.stages.values():
            for target in (s.then, s.split):
                if target is not None and target not in self.stages:
                    raise ValueError(f"stage {s.name} hands on to unknown stage {target}")

    def __getitem__(self, name: str) -> Stage:
        return self.stages[name]

    @property
    def first(self) -> Stage:
        return self.line[0]

    def after(self, name: str) -> Stage | None:
        """The stage that gets what ``name`` hands on (None: the end)."""
        then = self.stages[name].then
        return self.stages[then] if then else None

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.queue for s in self.stages.values()))

    def queue_stages(self, queue: str) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages.values() if s.queue == queue)

    @property
    def order(self) -> tuple[str, ...]:
        """Upload statuses in the order an upload reaches them; the last one is done."""
        return (RECEIVED, *(s.reaches for s in self.line if s.reaches))

    @property
    def non_terminal(self) -> tuple[str, ...]:
        return self.order[:-1]

    @property
    def terminal(self) -> tuple[str, ...]:
        return (self.order[-1], REJECTED, FAILED)


FLOW = Flow(UPLOAD_LINE, (*JOBS, *PARTS))


class _Status(enum.StrEnum):
    @property
    def terminal(self) -> bool:
        return self.value in FLOW.terminal


# received -> (what each stage reaches) -> done; or rejected (bad input, with a reason
# code) / failed (the system failed, with the error). Stored as text in uploads.status.
UploadStatus = _Status("UploadStatus", {s: s for s in (*FLOW.order, REJECTED, FAILED)})


def fail(svc: Any, stage: Stage, subject_id: int, error: str) -> None:
    """Record the last failure of ``stage`` on its subject (see ``ON_FAILURE``)."""
    load_object(ON_FAILURE[stage.subject])(svc, subject_id, error)
