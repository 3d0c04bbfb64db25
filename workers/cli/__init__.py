"""``idwatch``: the admin and user command line (typer + rich).

Thin: every command calls a ``core`` function and prints its result, as a rich table
or, with ``--json``, as JSON on stdout. One module per command group:
``identity`` (protected people), ``scanning`` (scan, report, status, purge, demo),
``alerts`` (list, review, export, verify), ``review`` (reviewers of the web pages),
``stack`` (up, down, worker, flower, api, watch, sweep, migrate), ``eval`` (eval,
detector).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.alerts import alerts_app
from workers.cli.errors import IdwatchGroup
from workers.cli.eval import detector_app, eval_cmd
from workers.cli.identity import identity_app
from workers.cli.review import review_app
from workers.cli.scanning import scan_app
from workers.cli.stack import stack_app

app = typer.Typer(
    help="identity-watch: catch deepfakes impersonating protected people.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=IdwatchGroup,  # configuration errors in one line (workers/cli/errors.py)
)


@app.callback()
def main(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (IDWATCH_DATA_DIR).")
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log what happens.")] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show tracebacks of configuration errors (or IDWATCH_DEBUG=1)."
        ),
    ] = False,
) -> None:
    if data_dir is not None:
        os.environ["IDWATCH_DATA_DIR"] = str(data_dir)
    # --debug is read by the root group's error handler (workers/cli/errors.py).
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("idwatch.alerts").setLevel(logging.ERROR)  # the CLI prints alerts


app.add_typer(identity_app, name="identity")
app.add_typer(scan_app)
app.add_typer(alerts_app, name="alerts")
app.add_typer(review_app, name="review")
app.add_typer(stack_app)
app.command("eval")(eval_cmd)
app.add_typer(detector_app, name="detector")
