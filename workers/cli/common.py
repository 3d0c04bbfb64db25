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

console = Console(stderr=True)
# Tables stay readable when piped (rich would otherwise assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def services(**overrides):
    from core.services import Services
    from core.settings import Settings

    return Services(Settings(**overrides))  # fresh: --data-dir may have changed the env


def dispatcher(svc):
    """The dispatcher the settings ask for: the queues with a broker, else in-process."""
    from core.pipeline.dispatch import make_dispatcher

    return make_dispatcher(svc)


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
        return f"{v:.3f}"
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
