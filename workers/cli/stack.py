"""``idwatch up|down|worker|flower|api|watch|sweep|migrate``: running the system."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.common import console, dispatcher, out, services, table

stack_app = typer.Typer()


@stack_app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the database schema (Alembic upgrade head)."""
    from core.settings import Settings
    from core.storage.db import upgrade
    from core.store import redact_url

    settings = Settings()
    if settings.database_url is None:
        settings.ensure_dirs()  # the embedded database file lives in the data dir
    upgrade(settings.resolved_database_url)
    out.print(f"database schema is at head ({redact_url(settings.resolved_database_url)})")


def _all_queues() -> str:
    from core.flow import FLOW

    return ",".join(FLOW.queues)


@stack_app.command("worker")
def worker_cmd(
    queues: Annotated[
        str, typer.Option(help=f"Comma-separated, of: {_all_queues()}.")
    ] = _all_queues(),
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Pool processes.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker consuming the given queues (needs IDWATCH_BROKER_URL)."""
    from core.flow import FLOW
    from core.settings import Settings

    qs = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in qs if q not in FLOW.queues]
    if bad or not qs:
        console.print(f"[red]unknown queue(s) {bad}; choose from {', '.join(FLOW.queues)}[/red]")
        raise typer.Exit(2)
    if not Settings().broker_url:
        console.print("[red]set IDWATCH_BROKER_URL (e.g. redis://127.0.0.1:6379/0)[/red]")
        raise typer.Exit(2)
    from workers.ops.stack import manual_pidfile, worker_argv

    # Named and pid-filed after this process (exec keeps the pid), so `idwatch status`
    # sees it and `idwatch down` stops it; a second worker for the same queues on this
    # host gets its own name.
    pid = os.getpid()
    name = f"{'+'.join(qs)}.{pid}"
    argv = worker_argv(qs, concurrency, loglevel, name, manual_pidfile(Settings(), pid))
    os.execv(sys.executable, argv)


@stack_app.command("flower")
def flower_cmd(
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (IDWATCH_FLOWER_PORT).")
    ] = None,
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


@stack_app.command("api")
def api_cmd() -> None:
    """The HTTP ingest API (POST /uploads, GET /uploads/{id}, GET /alerts)."""
    from workers.api import run

    svc = services()
    run(svc, dispatcher(svc), svc.settings.api_host, svc.settings.api_port)


@stack_app.command("watch")
def watch_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder the platform drops uploads into.")],
) -> None:
    """Watch a folder: every new, complete file is scanned once (survives restarts)."""
    from workers.ops.watch import watch

    if not folder.is_dir():
        console.print(f"[red]not a folder: {folder}[/red]")
        raise typer.Exit(2)
    svc = services()
    watch(folder, svc, dispatcher(svc))


@stack_app.command("sweep")
def sweep_cmd(
    older_than: Annotated[
        float, typer.Option(min=0, help="Re-dispatch work idle this long (s).")
    ] = 120,
    every: Annotated[float, typer.Option(min=0, help="Repeat every N seconds; 0 = once.")] = 0,
) -> None:
    """Re-dispatch uploads stuck in a non-terminal state, undelivered notifications and
    unfinished jobs (backfill, erasure)."""
    from core.pipeline.recovery import sweep

    svc = services()
    disp = dispatcher(svc)
    while True:
        try:
            res = sweep(svc, disp, older_than_s=older_than, in_flight=_in_flight(svc, older_than))
        except Exception as exc:  # broker or database down: keep sweeping, this is when
            if not every:  # messages get lost and the sweeper is needed most
                raise
            console.print(f"[yellow]sweep failed, retrying in {every:.0f} s: {exc!r}[/yellow]")
        else:
            if res.requeued or res.notifications or res.jobs or not every:
                out.print(
                    f"re-dispatched {len(res.requeued)} upload(s), "
                    f"{len(res.notifications)} notification(s), {len(res.jobs)} job(s); "
                    f"{res.in_flight} idle upload(s) still queued or held by a worker"
                )
        if not every:
            return
        time.sleep(every)


def _in_flight(svc, grace_s: float) -> dict[str, set[int]] | None:
    """What the broker still holds (queued, held by a live worker, or taken by a worker
    less than ``grace_s`` ago): never swept."""
    if svc.settings.embedded:
        return None
    from workers.ops.queues import in_flight

    return in_flight(svc.settings, grace_s)  # broker down: raises; this sweep is skipped


@stack_app.command("up")
def up_cmd(
    watch_dir: Annotated[Path | None, typer.Option("--watch", help="Also watch a folder.")] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Pool processes per worker.")
    ] = 1,
    sweep_after: Annotated[
        float, typer.Option(min=0, help="Sweeper: re-dispatch work idle this long (s).")
    ] = 120,
    workers: Annotated[
        bool, typer.Option(help="Start the queue workers (--no-workers: everything else).")
    ] = True,
) -> None:
    """Start the local distributed stack under supervisord (milvus-lite server, a worker
    per queue, API, Flower, sweeper, watcher); a process that dies is restarted."""
    from core.settings import Settings
    from workers.ops.stack import up

    try:
        procs = up(Settings(), watch_dir, concurrency, sweep_after_s=sweep_after, workers=workers)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    out.print(table("Supervised", procs, ["name", "state", "pid", "detail"]))


@stack_app.command("down")
def down_cmd() -> None:
    """Stop every process of the stack: supervised ones and workers started by hand."""
    from core.settings import Settings
    from workers.ops.stack import down

    out.print(table("Stopped", down(Settings()), ["name", "pid", "by", "result"]))
