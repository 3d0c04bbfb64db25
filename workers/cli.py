"""``idwatch``: the admin and user command line (typer + rich).

Thin: every command calls a ``core`` function and prints its result, as a rich
table or, with ``--json``, as JSON on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="identity-watch: catch deepfakes impersonating protected people.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
identity_app = typer.Typer(help="Protected identities.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")

console = Console(stderr=True)
# Tables stay readable when piped (rich would otherwise assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def main(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (IDWATCH_DATA_DIR).")
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    if data_dir is not None:
        os.environ["IDWATCH_DATA_DIR"] = str(data_dir)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("idwatch.alerts").setLevel(logging.ERROR)  # the CLI prints alerts


def _services(**overrides):
    from core.services import Services
    from core.settings import Settings

    return Services(Settings(**overrides))


def _print_json(obj) -> None:
    out.print_json(json.dumps(obj, default=str))


def _table(title: str, rows: list[dict], columns: list[str]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(_fmt(r.get(c)) for c in columns))
    return t


def _fmt(v) -> str:
    return escape(_plain(v))  # names come from uploads: never let them act as markup


def _plain(v) -> str:
    if isinstance(v, str) and len(v) > 19 and v[4:5] == "-" and v[10:11] == "T":
        return v[:19].replace("T", " ")  # ISO time to the second
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return ",".join(f"{x:.0f}" if isinstance(x, float) else str(x) for x in v)
    return "" if v is None else str(v)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    )


# -- identities ----------------------------------------------------------------------
@identity_app.command("add")
def identity_add(
    name: str,
    photos: Annotated[list[Path], typer.Argument(help="Authentic photos of the person.")],
    largest: Annotated[bool, typer.Option(help="Use the largest face of group photos.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a protected identity (or add photos to one) and scan earlier uploads."""
    from core.pipeline.identities import RegistrationError, register_identity

    svc = _services()
    try:
        # Embedded: backfill now, here. Distributed: backfill runs on the classify queue.
        reg = register_identity(
            svc, name, photos, pick_largest=largest, backfill_now=svc.settings.embedded
        )
    except RegistrationError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    if not svc.settings.embedded and reg.references_added:
        from workers.dispatch import make_dispatcher

        make_dispatcher(svc).backfill(reg.identity_id)
    res = {
        "identity_id": reg.identity_id,
        "name": reg.name,
        "created": reg.created,
        "references_added": reg.references_added,
        "photos": [c.as_dict() for c in reg.checks],
        "backfill": {
            "faces_checked": reg.backfill.faces_checked,
            "matches": reg.backfill.matches,
            "alerts": reg.backfill.alerts,
        },
    }
    if as_json:
        _print_json(res)
    else:
        verb = "registered" if reg.created else "updated"
        out.print(
            f"{verb} [bold]{reg.name}[/bold] (id {reg.identity_id}) with "
            f"{reg.references_added} new reference photo(s); backfill: "
            f"{reg.backfill.matches} earlier face(s) matched, {reg.backfill.alerts} alert(s)"
        )
        for c in reg.checks:  # per photo: usable, or why it is weak (reference_quality)
            out.print(f"  {c.line()}", markup=False)


@identity_app.command("list")
def identity_list(as_json: JsonOpt = False) -> None:
    """List protected identities."""
    from core.pipeline.identities import list_identities

    rows = list_identities(_services())
    if as_json:
        _print_json(rows)
    else:
        out.print(
            _table(
                "Protected identities", rows, ["id", "name", "references", "alerts", "created_at"]
            )
        )


@identity_app.command("show")
def identity_show(name: str, as_json: JsonOpt = False) -> None:
    """Show one identity with its reference photos."""
    from core.pipeline.identities import show_identity

    info = show_identity(_services(), name)
    if info is None:
        console.print(f"[red]no identity named {name!r}[/red]")
        raise typer.Exit(1)
    if as_json:
        _print_json(info)
    else:
        out.print(
            f"[bold]{info['name']}[/bold] (id {info['id']}), registered "
            f"{info['created_at']}; {info['matched_faces']} matched face(s), "
            f"{info['alerts']} alert(s)"
        )
        out.print(
            _table("Reference photos", info["references"], ["id", "file", "box", "face_backend"])
        )
        from core.faces.reference_quality import coverage_lines

        for line in coverage_lines(info["coverage"]):
            out.print(line)


@identity_app.command("remove")
def identity_remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase an identity: reference photos, vectors and the personal data in its alerts."""
    from core.pipeline.identities import remove_identity

    if not yes and not typer.confirm(f"Erase {name!r} and its reference photos?"):
        raise typer.Exit(1)
    res = remove_identity(_services(), name)
    if res is None:
        console.print(f"[red]no identity named {name!r}[/red]")
        raise typer.Exit(1)
    if as_json:
        _print_json(res)
    else:
        out.print(
            f"erased {res['name']}: {res['references_removed']} reference photo(s), "
            f"{res['vectors_removed']} vector(s); {res['alerts_anonymised']} alert(s) "
            "anonymised"
        )


# -- scanning and alerts -------------------------------------------------------------
def _print_summary(s) -> None:
    out.print(
        f"scanned {s.scanned} upload(s) ({s.duplicates} already known): "
        f"{s.with_faces} with faces ({s.faces} faces), {s.matched} matched a protected "
        f"identity, {s.judged_fake} judged fake; done {s.done}, rejected {s.rejected}, "
        f"failed {s.failed}" + (f", still running {s.pending}" if s.pending else "")
    )
    for reason, n in sorted(s.rejected_reasons.items()):
        out.print(f"  rejected {n}: {reason}")
    for line in s.not_submitted:
        out.print(f"  [red]not submitted[/red]: {escape(line)}")


@app.command("scan")
def scan_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    wait: Annotated[float, typer.Option(help="Distributed: seconds to wait for results.")] = 600,
    as_json: JsonOpt = False,
) -> None:
    """Submit images as uploads and run them through crop -> embed -> index -> classify."""
    from core.pipeline.runner import collect_files, scan

    svc = _services()
    for p in paths:
        if not p.exists() and not p.is_symlink():
            console.print(f"[red]no such file or folder: {p}[/red]")
            raise typer.Exit(2)
    with _progress() as prog:
        task = prog.add_task("", total=len(collect_files(paths)))
        summary = scan(
            svc,
            paths,
            progress=lambda i, n, f: prog.update(task, completed=i, description=f.name[:40]),
        )
    if as_json:
        _print_json(summary.as_dict())
    else:
        _print_summary(summary)
    raise typer.Exit(1 if summary.failed or summary.pending or summary.not_submitted else 0)


ALERT_COLUMNS = [
    "id",
    "upload_id",
    "upload",
    "box",
    "identity",
    "similarity",
    "fake_score",
    "decision",
    "created_at",
]


@app.command("alerts")
def alerts_cmd(
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List alerts: upload, face box, identity, similarity, fake score, decision, time."""
    from core.alerts.listing import list_alerts

    rows = list_alerts(_services(), identity)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        r["upload"] = Path(r["upload"]).name
    out.print(_table(f"Alerts ({len(rows)})", rows, ALERT_COLUMNS))


@app.command("report")
def report_cmd(
    out_path: Annotated[Path, typer.Argument(metavar="OUT.html")],
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
) -> None:
    """Write a self-contained HTML report: each suspected fake beside the reference."""
    from core.alerts.report import write_report

    n = write_report(_services(), out_path, identity)
    out.print(f"wrote {out_path} ({n} alert(s))")


@app.command("status")
def status_cmd(as_json: JsonOpt = False) -> None:
    """Uploads by status, alerts, and (distributed) queue lengths and workers seen."""
    from core.alerts.listing import count_alerts
    from core.pipeline.identities import upload_counts

    svc = _services()
    res: dict = {"uploads": upload_counts(svc), "alerts": count_alerts(svc)}
    if not svc.settings.embedded:
        from workers.stack import recorded
        from workers.status import queue_lengths, workers_seen

        res["queues"] = queue_lengths(svc.settings)
        res["workers"] = workers_seen()
        res["processes"] = [{"name": n, "pid": p, "alive": a} for n, p, a in recorded(svc.settings)]
    if as_json:
        _print_json(res)
        return
    out.print(
        _table(
            "Uploads",
            [{"status": k, "count": v} for k, v in sorted(res["uploads"].items())],
            ["status", "count"],
        )
    )
    out.print(f"alerts: {res['alerts']}")
    if "queues" in res:
        out.print(
            _table(
                "Queues",
                [{"queue": k, "waiting": v} for k, v in res["queues"].items()],
                ["queue", "waiting"],
            )
        )
        out.print(
            _table(
                "Workers",
                [{"worker": k, "queues": ",".join(v)} for k, v in res["workers"].items()],
                ["worker", "queues"],
            )
        )
        out.print(_table("Local processes", res["processes"], ["name", "pid", "alive"]))


@app.command("purge")
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
    res = purge_uploads(_services(), older_than_days, dry_run=dry_run)
    verb = "would purge" if dry_run else "purged"
    out.print(f"{verb} {res.uploads} upload(s), {res.faces} face(s), {res.vectors} vector(s)")


# -- distributed mode -----------------------------------------------------------------
@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the database schema (Alembic upgrade head)."""
    from core.settings import Settings
    from core.storage.db import upgrade

    url = Settings().resolved_database_url
    upgrade(url)
    out.print("database schema is at head")


@app.command("worker")
def worker_cmd(
    queues: Annotated[str, typer.Option(help="Comma-separated: crop,embed,index,classify.")] = (
        "crop,embed,index,classify"
    ),
    concurrency: Annotated[int, typer.Option(help="Pool processes.")] = 1,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Run a Celery worker consuming the given queues (needs IDWATCH_BROKER_URL)."""
    from core.settings import Settings
    from workers.app import QUEUES

    qs = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in qs if q not in QUEUES]
    if bad or not qs:
        console.print(f"[red]unknown queue(s) {bad}; choose from {', '.join(QUEUES)}[/red]")
        raise typer.Exit(2)
    if not Settings().broker_url:
        console.print("[red]set IDWATCH_BROKER_URL (e.g. redis://127.0.0.1:6379/0)[/red]")
        raise typer.Exit(2)
    from workers.stack import worker_argv

    argv = worker_argv(qs, concurrency, loglevel)
    os.execv(sys.executable, argv)


@app.command("flower")
def flower_cmd(
    address: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Flower (job status) with basic auth from IDWATCH_FLOWER_BASIC_AUTH (user:password)."""
    from core.settings import Settings

    st = Settings()
    if not st.flower_basic_auth:
        console.print(
            "[red]set IDWATCH_FLOWER_BASIC_AUTH=user:password; Flower never runs "
            "without auth here[/red]"
        )
        raise typer.Exit(2)
    # Passed through the environment, not argv, so the password never shows in `ps`.
    os.environ["FLOWER_BASIC_AUTH"] = st.flower_basic_auth.get_secret_value()
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "flower",
        f"--address={address}",
        f"--port={port or st.flower_port}",
    ]
    os.execv(sys.executable, argv)


@app.command("api")
def api_cmd() -> None:
    """The HTTP ingest API (POST /uploads, GET /uploads/{id}, GET /alerts)."""
    from workers.api import run
    from workers.dispatch import make_dispatcher

    svc = _services()
    run(svc, make_dispatcher(svc), svc.settings.api_host, svc.settings.api_port)


@app.command("watch")
def watch_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder the platform drops uploads into.")],
) -> None:
    """Watch a folder: every new, complete file is scanned once (survives restarts)."""
    from workers.dispatch import make_dispatcher
    from workers.watch import watch

    if not folder.is_dir():
        console.print(f"[red]not a folder: {folder}[/red]")
        raise typer.Exit(2)
    svc = _services()
    watch(folder, svc, make_dispatcher(svc))


@app.command("sweep")
def sweep_cmd(
    older_than: Annotated[
        float, typer.Option(help="Re-dispatch uploads idle this long (s).")
    ] = 120,
    every: Annotated[float, typer.Option(help="Repeat every N seconds; 0 = once.")] = 0,
) -> None:
    """Re-dispatch uploads stuck in a non-terminal state; retry undelivered alerts."""
    import time

    from core.pipeline.recovery import sweep
    from workers.dispatch import make_dispatcher

    svc = _services()
    dispatcher = make_dispatcher(svc)
    while True:
        try:
            res = sweep(svc, dispatcher, older_than_s=older_than, backlog=_backlog(svc))
        except Exception as exc:  # broker or database down: keep sweeping, this is when
            if not every:  # messages get lost and the sweeper is needed most
                raise
            console.print(f"[yellow]sweep failed, retrying in {every:.0f} s: {exc!r}[/yellow]")
        else:
            if res.requeued or res.notified or not every:
                out.print(
                    f"re-dispatched {len(res.requeued)} upload(s); "
                    f"delivered {res.notified} pending alert(s)"
                )
        if not every:
            return
        time.sleep(every)


def _backlog(svc) -> int:
    if svc.settings.embedded:
        return 0
    from workers.status import queue_lengths

    try:
        return sum(queue_lengths(svc.settings).values())
    except Exception:  # broker down: nothing can be re-dispatched anyway
        return 0


@app.command("up")
def up_cmd(
    watch_dir: Annotated[Path | None, typer.Option("--watch", help="Also watch a folder.")] = None,
    concurrency: Annotated[int, typer.Option(help="Pool processes per worker.")] = 1,
    sweep_after: Annotated[
        float, typer.Option(help="Sweeper: re-dispatch uploads idle this long (s).")
    ] = 120,
) -> None:
    """Start the local distributed stack (milvus-lite server, a worker per queue, API, Flower)."""
    from core.settings import Settings
    from workers.stack import up

    try:
        procs = up(Settings(), watch_dir, concurrency, sweep_after_s=sweep_after)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    out.print(
        _table(
            "Started",
            [{"name": p.name, "pid": p.pid, "log": str(p.log)} for p in procs],
            ["name", "pid", "log"],
        )
    )


@app.command("down")
def down_cmd() -> None:
    """Stop every process `idwatch up` started, by its recorded pid."""
    from core.settings import Settings
    from workers.stack import down

    rows = [{"name": n, "pid": p, "result": how} for n, p, how in down(Settings())]
    out.print(_table("Stopped", rows, ["name", "pid", "result"]))


@app.command("demo")
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
    svc = _services(data_dir=workdir / "data")
    with _progress() as prog:
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
        _print_json({"result": res.as_dict(), "alerts": alerts, "report": str(report)})
        return
    out.print(
        f"protected identities: {', '.join(res.registered) or 'none'}"
        + (f" (skipped {len(res.skipped)}: no usable reference photo)" if res.skipped else "")
    )
    _print_summary(res.summary)
    for r in alerts:
        r["upload"] = Path(r["upload"]).name
    out.print(_table(f"Alerts ({len(alerts)})", alerts, ALERT_COLUMNS))
    out.print(
        f"against the labels: fakes of protected people alerted {res.fakes_alerted}/{res.fakes}; "
        f"their real photos alerted {res.reals_alerted}/{res.reals}; "
        f"alerts naming someone else {res.others_alerted}"
    )
    out.print(f"HTML report: {report}")


# Evaluation and training (issue: detection quality) live in their own module.
from workers.cli_eval import detector_app, eval_cmd  # noqa: E402

app.command("eval")(eval_cmd)
app.add_typer(detector_app, name="detector")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
