"""``idwatch scan|report|status|purge|demo``: uploads in, alerts out (``alerts``: alerts.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from workers.cli.common import (
    JsonOpt,
    WaitOpt,
    YesOpt,
    console,
    dispatcher,
    identity_filter,
    loading_models,
    out,
    print_json,
    progress,
    services,
    table,
)

scan_app = typer.Typer()

ALERT_COLUMNS = [
    "id",
    "upload_id",
    "upload",
    "box",
    "identity",
    "similarity",
    "fake_score",
    "decision",
    "frame_time_s",
    "track_id",
    "created_at",
]


SHOW_SKIPPED = 20  # files not submitted listed by name; --json lists them all


def summary_line(s) -> str:
    """The scan's counts in one line: new uploads first (a rescan says 0 new)."""
    return (
        f"scanned {s.new} new upload(s), {s.duplicates} already known: "
        f"{s.with_faces} with faces ({s.faces} faces), {s.matched} matched a protected "
        f"identity, {s.judged_fake} judged fake; done {s.done}, rejected {s.rejected}, "
        f"failed {s.failed}" + (f", still running {s.pending}" if s.pending else "")
    )


def print_summary(s) -> None:
    out.print(summary_line(s), markup=False)
    for reason, n in sorted(s.rejected_reasons.items()):
        out.print(f"  rejected {n}: {reason}")
    if s.running:
        out.print("  still running (the workers go on with them; `idwatch status` shows them):")
        for upload_id, status in s.running.items():
            out.print(f"    upload {upload_id}: {status}")
    if s.not_dispatched:
        out.print(
            f"  [yellow]not queued yet (broker down?): {len(s.not_dispatched)} upload(s); "
            "the sweeper queues them[/yellow]"
        )
    print_skipped(s)
    for line in s.not_submitted:
        out.print(f"  [red]could not submit[/red]: {escape(line)}")


def print_skipped(s) -> None:
    """Every file the scan saw and did not submit, with the reason (none silently)."""
    if not s.skipped:
        return
    out.print(f"  not submitted: {len(s.skipped)} of {s.seen} file(s) seen")
    for row in s.skipped[:SHOW_SKIPPED]:
        out.print(f"    {row['path']}: {row['reason']}", markup=False)
    if len(s.skipped) > SHOW_SKIPPED:
        out.print(f"    ... and {len(s.skipped) - SHOW_SKIPPED} more (--json lists them all)")


@scan_app.command("scan")
def scan_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    wait: WaitOpt = 600,
    as_json: JsonOpt = False,
) -> None:
    """Submit images as uploads and run them through crop -> embed -> index -> classify.
    The content decides what is an image, not the file name; files in folders that are
    not submitted are listed with the reason. With a broker the uploads go to the
    queues and the scan waits up to --wait seconds."""
    from core.pipeline.sources.scan import collect_files, scan

    for p in paths:
        if not p.exists() and not p.is_symlink():
            console.print(f"[red]no such file or folder: {p}[/red]")
            raise typer.Exit(2)
    svc = services()
    if svc.settings.embedded:
        loading_models(svc)  # in-process stages: models load now, not at the first file
    with progress() as prog:
        task = prog.add_task("", total=len(collect_files(paths)))
        summary = scan(
            svc,
            paths,
            progress=lambda i, n, f: prog.update(task, completed=i, description=f.name[:40]),
            dispatcher=dispatcher(svc),
            wait_s=wait,
        )
    if as_json:
        print_json(summary.as_dict())
    else:
        print_summary(summary)
    raise typer.Exit(1 if summary.failed or summary.pending or summary.not_submitted else 0)


@scan_app.command("report")
def report_cmd(
    out_path: Annotated[Path, typer.Argument(metavar="OUT.html")],
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
) -> None:
    """Write a self-contained HTML report: each suspected fake beside the reference."""
    from core.alerts.report import write_report

    svc = services(read_only=True)
    n = write_report(svc, out_path, identity_filter(svc, identity))
    out.print(f"wrote {out_path.absolute()} ({n} alert(s))")


@scan_app.command("status")
def status_cmd(as_json: JsonOpt = False) -> None:
    """Where the data lives (data dir, database, vector store, models), uploads by
    status, alerts, and (distributed) queue lengths, workers seen and the local
    processes: each one's state and restarts under supervisord, and hand-started workers."""
    from core.alerts.listing import count_alerts
    from core.pipeline.identities import upload_counts
    from core.pipeline.reembed import stale_references
    from core.pipeline.video_stages import progress as video_progress

    svc = services(read_only=True)
    res: dict = {
        **where(svc),
        "uploads": upload_counts(svc),
        "alerts": count_alerts(svc),
        "videos": video_progress(svc),  # unfinished videos: segments done of total
    }
    # References without a vector of the active backend match nobody: say so loudly.
    res["references_without_vectors"] = len(stale_references(svc))
    if not svc.settings.embedded:
        from workers.ops.queues import queue_lengths, workers_seen
        from workers.ops.stack import processes

        res["queues"] = queue_lengths(svc.settings)
        res["workers"] = workers_seen(settings=svc.settings)
        # Supervised (state, restarts) and hand-started workers of this host.
        res["processes"] = processes(svc.settings)
    if as_json:
        print_json(res)
        return
    print_where(res)
    out.print(
        table(
            "Uploads",
            [{"status": k, "count": v} for k, v in sorted(res["uploads"].items())],
            ["status", "count"],
        )
    )
    out.print(f"alerts: {res['alerts']}")
    if res["references_without_vectors"]:
        console.print(
            f"[red]{res['references_without_vectors']} reference photo(s) have no "
            f"{svc.face_backend.name} vector and match nobody: run `idwatch identity "
            "reembed`[/red]"
        )
    if res["videos"]:
        out.print(
            table(
                "Videos in progress",
                [
                    {**v, "segments": f"{v['segments_done']}/{v['segments_total'] or '?'}"}
                    for v in res["videos"]
                ],
                ["upload_id", "status", "segments", "duration_s"],
            )
        )
    if "queues" in res:
        out.print(
            table(
                "Queues",
                [{"queue": k, "waiting": v} for k, v in res["queues"].items()],
                ["queue", "waiting"],
            )
        )
        out.print(
            table(
                "Workers",
                [{"worker": k, "queues": ",".join(v)} for k, v in res["workers"].items()],
                ["worker", "queues"],
            )
        )
        out.print(
            table(
                "Local processes",
                res["processes"],
                ["name", "state", "pid", "restarts", "by", "detail"],
            )
        )


def where(svc) -> dict:
    """The store and the models this configuration uses, and why those models."""
    from core.faces.registry import explain_face_backend
    from core.forensics.registry import explain_detector
    from core.store import locate

    st = svc.settings
    face, face_why = explain_face_backend(
        st.face_backend, st.resolved_model_dir, st.model_cache_dir
    )
    det, det_why = explain_detector(
        st.detector, st.resolved_model_dir, st.detector_path, st.model_cache_dir
    )
    return {
        "store": locate(st).as_dict(),
        "face_backend": {"name": face, "why": face_why},
        "detector": {"name": det, "why": det_why},
    }


def print_where(res: dict) -> None:
    st = res["store"]
    rows = [
        ("data dir", st["data_dir"]),
        ("database", st["database"]),
        ("vector store", st["vectors"]),
        ("broker", st["broker"] or "none (stages run in this process)"),
        ("face backend", f"{res['face_backend']['name']} ({res['face_backend']['why']})"),
        ("detector", f"{res['detector']['name']} ({res['detector']['why']})"),
    ]
    for label, value in rows:
        out.print(f"{label + ':':14} {value}", markup=False, soft_wrap=True)


@scan_app.command("purge")
def purge_cmd(
    older_than_days: Annotated[
        float, typer.Option(min=0, help="Purge uploads older than this many days (>= 0).")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Retention: delete old uploads, their face crops, vectors, matches and alerts."""
    from core.pipeline.retention import purge_uploads

    svc = services(read_only=True)  # nothing to purge where there is no store
    if (
        not dry_run
        and not yes
        and not typer.confirm(
            f"Delete every upload older than {older_than_days:g} day(s) and all derived "
            f"data in {svc.settings.data_dir}?"
        )
    ):
        raise typer.Exit(1)
    res = purge_uploads(svc, older_than_days, dry_run=dry_run)
    if as_json:
        print_json({"dry_run": dry_run, **res.as_dict()})
        return
    verb = "would purge" if dry_run else "purged"
    out.print(
        f"{verb} {res.uploads} upload(s), {res.faces} face(s), {res.vectors} vector(s), "
        f"{res.matches} match(es), {res.alerts} alert(s) ({res.notifications} "
        f"notification(s), {res.deliveries} delivery record(s)), {res.files} file(s) "
        f"({res.bytes / 1e6:.1f} MB)"
    )


DEMO_MARKER = ".idwatch-demo"  # in folders the demo made: the next demo may wipe them
DEMO_WORKDIR_ENTRIES = {"data", "demo-set", "report.html", DEMO_MARKER}


def _check_demo_dir(path: Path, what: str, legacy: set[str] | None = None) -> None:
    """The demo wipes ``path``: only a folder an earlier demo made (its marker, or only
    what an older demo left) or an empty one may be; anything else is refused."""
    if not path.exists():
        return
    entries = {p.name for p in path.iterdir()} if path.is_dir() else {"?"}
    ours = DEMO_MARKER in entries or (legacy is not None and entries <= legacy)
    if entries and not ours:
        console.print(
            f"[red]{escape(str(path.absolute()))} is not empty and was not made by "
            f"`idwatch demo`, which wipes its {what}; choose another {what}[/red]"
        )
        raise typer.Exit(2)


def _fresh_demo_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / DEMO_MARKER).write_text("made by `idwatch demo`; the next demo wipes it\n")


def video_alert_lines(alerts: list[dict], videos: list[dict]) -> list[str]:
    """One line per video alert: who, which track, when (and the demo clip's truth)."""
    swaps = {Path(v["path"]).name: v for v in videos}
    lines = []
    for a in alerts:
        if a.get("frame_time_s") is None:
            continue
        name = Path(a["upload"]).name
        line = (
            f"video alert: {name}: {a['identity'] or '(erased)'} at {a['frame_time_s']:.2f} s "
            f"(track {a['track_id']}, fake score {a['fake_score']:.3f})"
        )
        if name in swaps:
            lo, hi = swaps[name]["swap_s"]
            line += f"; the swapped segment is {lo:.1f}-{hi:.1f} s"
        lines.append(line)
    return lines


@scan_app.command("demo")
def demo_cmd(
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="Folder with a faces-dev style manifest.csv (default: the built-in set)."
        ),
    ] = None,
    workdir: Annotated[
        Path, typer.Option(help="Where the demo keeps its set and report (wiped).")
    ] = Path("idwatch-demo"),
    as_json: JsonOpt = False,
) -> None:
    """The main job, offline: register protected people, scan uploads, show alerts, report.
    Its store is IDWATCH_DATA_DIR / --data-dir when set (an empty folder or an earlier
    demo's), else WORKDIR/data."""
    import os

    from core.alerts.listing import list_alerts
    from core.alerts.report import write_report
    from core.pipeline.demo import run_demo

    if dataset is not None and not (dataset / "manifest.csv").is_file():
        console.print(f"[red]{dataset} has no manifest.csv[/red]")
        raise typer.Exit(2)
    own_data = os.environ.get("IDWATCH_DATA_DIR")
    data_dir = Path(own_data) if own_data else workdir / "data"
    _check_demo_dir(workdir, "work folder (--workdir)", DEMO_WORKDIR_ENTRIES)
    if own_data:
        _check_demo_dir(data_dir, "data dir (IDWATCH_DATA_DIR / --data-dir)")
    _fresh_demo_dir(workdir)
    if own_data:
        _fresh_demo_dir(data_dir)
    svc = services(data_dir=data_dir)
    loading_models(svc)
    with progress() as prog:
        task = prog.add_task("", total=None)
        res = run_demo(
            svc,
            dataset,
            workdir,
            progress=lambda i, n, f: prog.update(
                task, total=n, completed=i, description=f.name[:40]
            ),
            log=lambda line: None,  # printed below, after the scan summary
        )
    alerts = list_alerts(svc)
    report = (workdir / "report.html").absolute()
    write_report(svc, report)
    if as_json:
        print_json(
            {
                "result": res.as_dict(),
                "alerts": alerts,
                "report": str(report),
                "data_dir": str(svc.settings.data_dir),
            }
        )
        return
    out.print(
        f"protected identities: {', '.join(res.registered) or 'none'}"
        + (f" (skipped {len(res.skipped)}: no usable reference photo)" if res.skipped else "")
    )
    print_summary(res.summary)
    for line in res.backfill:
        out.print(line, markup=False)
    out.print(demo_total_line(res, alerts))
    for r in alerts:
        r["upload"] = Path(r["upload"]).name
    out.print(table(f"Alerts ({len(alerts)})", alerts, ALERT_COLUMNS))
    for line in video_alert_lines(alerts, res.videos):
        out.print(line)
    out.print(
        f"against the labels: fakes of protected people alerted {res.fakes_alerted}/{res.fakes}; "
        f"their real photos alerted {res.reals_alerted}/{res.reals}; "
        f"alerts naming someone else {res.others_alerted}"
    )
    out.print(f"HTML report: {report}", markup=False, soft_wrap=True)
    out.print(
        f"data dir: {svc.settings.data_dir} (idwatch --data-dir {svc.settings.data_dir} "
        "alerts shows them again)",
        markup=False,
        soft_wrap=True,
    )


def demo_total_line(res, alerts: list[dict]) -> str:
    """What the alert table holds, from the scan and from backfill: the one count the
    demo's summary and its table must agree on."""
    uploads = len({a["upload_id"] for a in alerts})
    line = f"in all: {len(alerts)} alert(s) on {uploads} upload(s)"
    if res.backfill_alerts:
        line += (
            f" ({res.scan_alerts} raised by the scan, {res.backfill_alerts} by backfill "
            "for people registered after it)"
        )
    return line
