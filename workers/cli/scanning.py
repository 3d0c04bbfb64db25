"""``idwatch scan|alerts|report|status|purge|demo``: uploads in, alerts out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from workers.cli.common import (
    JsonOpt,
    console,
    dispatcher,
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


def print_summary(s) -> None:
    out.print(
        f"scanned {s.scanned} upload(s) ({s.duplicates} already known): "
        f"{s.with_faces} with faces ({s.faces} faces), {s.matched} matched a protected "
        f"identity, {s.judged_fake} judged fake; done {s.done}, rejected {s.rejected}, "
        f"failed {s.failed}" + (f", still running {s.pending}" if s.pending else "")
    )
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
    for line in s.not_submitted:
        out.print(f"  [red]not submitted[/red]: {escape(line)}")


@scan_app.command("scan")
def scan_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    wait: Annotated[float, typer.Option(help="Distributed: seconds to wait for results.")] = 600,
    as_json: JsonOpt = False,
) -> None:
    """Submit images as uploads and run them through crop -> embed -> index -> classify.
    With a broker they go to the queues and the scan waits up to --wait seconds."""
    from core.pipeline.sources.scan import collect_files, scan

    svc = services()
    for p in paths:
        if not p.exists() and not p.is_symlink():
            console.print(f"[red]no such file or folder: {p}[/red]")
            raise typer.Exit(2)
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


@scan_app.command("alerts")
def alerts_cmd(
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List alerts: upload, face box, identity, similarity, fake score, decision, time."""
    from core.alerts.listing import list_alerts

    rows = list_alerts(services(), identity)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["upload"] = Path(r["upload"]).name
    out.print(table(f"Alerts ({len(rows)})", rows, ALERT_COLUMNS))


@scan_app.command("report")
def report_cmd(
    out_path: Annotated[Path, typer.Argument(metavar="OUT.html")],
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
) -> None:
    """Write a self-contained HTML report: each suspected fake beside the reference."""
    from core.alerts.report import write_report

    n = write_report(services(), out_path, identity)
    out.print(f"wrote {out_path} ({n} alert(s))")


@scan_app.command("status")
def status_cmd(as_json: JsonOpt = False) -> None:
    """Uploads by status, alerts, and (distributed) queue lengths and workers seen."""
    from core.alerts.listing import count_alerts
    from core.pipeline.identities import upload_counts
    from core.pipeline.video_stages import progress as video_progress

    svc = services()
    res: dict = {
        "uploads": upload_counts(svc),
        "alerts": count_alerts(svc),
        "videos": video_progress(svc),  # unfinished videos: segments done of total
    }
    if not svc.settings.embedded:
        from workers.ops.queues import queue_lengths, workers_seen
        from workers.ops.stack import recorded

        res["queues"] = queue_lengths(svc.settings)
        res["workers"] = workers_seen()
        res["processes"] = [{"name": n, "pid": p, "alive": a} for n, p, a in recorded(svc.settings)]
    if as_json:
        print_json(res)
        return
    out.print(
        table(
            "Uploads",
            [{"status": k, "count": v} for k, v in sorted(res["uploads"].items())],
            ["status", "count"],
        )
    )
    out.print(f"alerts: {res['alerts']}")
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
        out.print(table("Local processes", res["processes"], ["name", "pid", "alive"]))


@scan_app.command("purge")
def purge_cmd(
    older_than_days: Annotated[float, typer.Option(help="Purge uploads older than this.")],
    dry_run: Annotated[bool, typer.Option(help="Only count what would go.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
) -> None:
    """Retention: delete old uploads, their face crops, vectors, matches and alerts."""
    from core.pipeline.retention import purge_uploads

    if (
        not dry_run
        and not yes
        and not typer.confirm(
            f"Delete every upload older than {older_than_days} day(s) and all derived data?"
        )
    ):
        raise typer.Exit(1)
    res = purge_uploads(services(), older_than_days, dry_run=dry_run)
    verb = "would purge" if dry_run else "purged"
    out.print(f"{verb} {res.uploads} upload(s), {res.faces} face(s), {res.vectors} vector(s)")


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
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its data (wiped).")] = Path(
        "idwatch-demo"
    ),
    as_json: JsonOpt = False,
) -> None:
    """The main job, offline: register protected people, scan uploads, show alerts, report."""
    from core.alerts.listing import list_alerts
    from core.alerts.report import write_report
    from core.pipeline.demo import run_demo

    if dataset is not None and not (dataset / "manifest.csv").is_file():
        console.print(f"[red]{dataset} has no manifest.csv[/red]")
        raise typer.Exit(2)
    if workdir.exists():
        shutil.rmtree(workdir)
    svc = services(data_dir=workdir / "data")
    with progress() as prog:
        task = prog.add_task("", total=None)
        res = run_demo(
            svc,
            dataset,
            workdir,
            progress=lambda i, n, f: prog.update(
                task, total=n, completed=i, description=f.name[:40]
            ),
            log=console.print,
        )
    alerts = list_alerts(svc)
    report = workdir / "report.html"
    write_report(svc, report)
    if as_json:
        print_json({"result": res.as_dict(), "alerts": alerts, "report": str(report)})
        return
    out.print(
        f"protected identities: {', '.join(res.registered) or 'none'}"
        + (f" (skipped {len(res.skipped)}: no usable reference photo)" if res.skipped else "")
    )
    print_summary(res.summary)
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
    out.print(f"HTML report: {report}")
