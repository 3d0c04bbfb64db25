"""What every command group shares: the consoles, Services, tables, progress, JSON."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Messages on stderr are never wrapped: one message, one line (grep-able, as in logs).
console = Console(stderr=True, soft_wrap=True)
# Tables stay readable when piped (rich would otherwise assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts, cron).")
]
# Listings read one page in the database query (never every row, then a slice).
PAGE_MAX = 10_000
LimitOpt = Annotated[int, typer.Option(min=1, max=PAGE_MAX, help=f"Rows to show (1-{PAGE_MAX}).")]
OffsetOpt = Annotated[int, typer.Option(min=0, max=2**31 - 1, help="Rows to skip first.")]
WaitOpt = Annotated[
    float,
    typer.Option(min=0, help="Distributed: seconds to wait for the workers (>= 0)."),
]


def services(*, read_only: bool = False, **overrides):
    """Services for one command, fresh (--data-dir may have changed the env). Says on
    stderr which store it uses; ``read_only`` commands refuse to create one
    (core.store.StoreMissing, reported in one line by workers/cli/errors.py)."""
    from core.services import Services
    from core.settings import Settings
    from core.store import locate, require_store, store_exists

    settings = Settings(**overrides)
    if read_only:
        loc = require_store(settings)
        console.print(f"[dim]{escape(loc.line())}[/dim]", soft_wrap=True)
    else:
        loc = locate(settings)
        new = "" if store_exists(settings) else "new "
        console.print(f"[dim]{new}{escape(loc.line())}[/dim]", soft_wrap=True)
    return Services(settings)


def loading_models(svc) -> None:
    """Load the face backend and the forgery detector now, saying so: the first load
    takes seconds (ONNX sessions, dlib, the detector's head) and must not look hung.
    A spinner on a terminal, one line otherwise."""
    import time

    face, det = svc.face_backend, svc.detector
    label = f"loading models: face backend {face.name}, forgery detector {det.name}"
    t0 = time.monotonic()
    if console.is_terminal:
        with console.status(f"{label} ..."):
            face.load()
            det.load()
    else:
        console.print(f"{label} ...", markup=False)
        face.load()
        det.load()
    console.print(f"[dim]models loaded in {time.monotonic() - t0:.1f} s[/dim]")


def dispatcher(svc):
    """The dispatcher the settings ask for: the queues with a broker, else in-process."""
    from core.pipeline.dispatch import make_dispatcher

    return make_dispatcher(svc)


def identity_filter(svc, name: str | None) -> str | None:
    """``--identity NAME``: the registered name it matches (case, spacing and Unicode form
    ignored, core.names), or a clear error listing the known names (exit 2)."""
    if name is None:
        return None
    from core.names import name_key, unknown_name_message
    from core.pipeline.identities import identity_names

    known = identity_names(svc)
    for n in known:
        if name_key(n) == name_key(name):
            return n
    console.print(f"[red]{escape(unknown_name_message(name, known))}[/red]")
    raise typer.Exit(2)


def page_title(what: str, shown: int, offset: int, total: int) -> str:
    """ "Alerts (7)", or "Alerts (101-200 of 523)" when the page is not everything."""
    if offset == 0 and shown == total:
        return f"{what} ({total})"
    if not shown:
        return f"{what} (none past {offset} of {total})"
    return f"{what} ({offset + 1}-{offset + shown} of {total})"


def more_rows_note(shown: int, offset: int, total: int) -> None:
    """On stderr, when rows exist past this page: how to see them."""
    if offset + shown < total:
        console.print(
            f"[dim]{total - offset - shown} more: use --offset {offset + shown} (and --limit)[/dim]"
        )


def print_json(obj) -> None:
    out.print_json(json.dumps(obj, default=str))


def table(title: str, rows: list[dict], columns: list[str]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(fmt(r.get(c)) for c in columns))
    return t


def fmt(v) -> str:
    return escape(_plain(v))  # names come from uploads: never let them act as markup


def _plain(v) -> str:
    if isinstance(v, str) and len(v) > 19 and v[4:5] == "-" and v[10:11] == "T":
        return v[:19].replace("T", " ")  # ISO time to the second
    if isinstance(v, float):
        from core.alerts.scores import score_text

        return score_text(v)  # 3 decimals; more near 0 or 1, never a rounded 1.000
    if isinstance(v, list):
        return ",".join(f"{x:.0f}" if isinstance(x, float) else str(x) for x in v)
    return "" if v is None else str(v)


def progress(label: str = "scanning") -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    )
