"""``idwatch alerts [review|export|verify]``: list alerts, review them, export evidence."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from workers.cli.common import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    console,
    dispatcher,
    identity_filter,
    more_rows_note,
    out,
    page_title,
    print_json,
    services,
    table,
)
from workers.cli.scanning import ALERT_COLUMNS

alerts_app = typer.Typer(
    help="List alerts (the default), review them, export evidence.",
    invoke_without_command=True,
)

STATES = "new, confirmed, dismissed, wrong_person"


def _reviewer(by: str | None) -> str:
    if by:
        return by
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (containers)
        return "cli"


@alerts_app.callback()
def alerts_cmd(
    ctx: typer.Context,
    identity: Annotated[str | None, typer.Option(help="Only this identity.")] = None,
    review_state: Annotated[
        str | None, typer.Option(help=f"Only alerts in this review state ({STATES}).")
    ] = None,
    limit: LimitOpt = 100,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, oldest first, one page (``--limit``, ``--offset``): upload, face box,
    identity, similarity, fake score, decision, time, review state (``--json``:
    ``review: {state, by, at, note}``)."""
    if ctx.invoked_subcommand is not None:
        return
    from core.alerts.listing import count_alerts, list_alerts
    from core.review.states import parse_state

    try:
        state = parse_state(review_state) if review_state else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--review-state") from exc
    svc = services(read_only=True)
    name = identity_filter(svc, identity)
    total = count_alerts(svc, name, state)
    rows = list_alerts(svc, name, state, limit=limit, offset=offset)
    more_rows_note(len(rows), offset, total)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["upload"] = Path(r["upload"]).name
        r["review"] = r["review"]["state"]
    title = page_title("Alerts", len(rows), offset, total)
    out.print(table(title, rows, [*ALERT_COLUMNS, "review"]))


@alerts_app.command("review")
def review_cmd(
    alert_id: Annotated[int, typer.Argument(help="The alert's id.")],
    confirm: Annotated[bool, typer.Option("--confirm", help="A fake of this person.")] = False,
    dismiss: Annotated[bool, typer.Option("--dismiss", help="A real photo.")] = False,
    wrong_person: Annotated[bool, typer.Option("--wrong-person", help="Not this person.")] = False,
    reopen: Annotated[bool, typer.Option("--reopen", help="Back to new.")] = False,
    note: Annotated[str | None, typer.Option(help="Why (kept with the review).")] = None,
    by: Annotated[str | None, typer.Option(help="Reviewer name (default: cli:$USER).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an alert's review. Confirming sends a `review` event to the notifiers; a
    dismissed (or wrong-person) face never alerts again for that person."""
    from core.review.actions import AlertNotFound, set_review
    from core.review.states import ReviewState

    chosen = [
        s
        for s, on in (
            (ReviewState.confirmed, confirm),
            (ReviewState.dismissed, dismiss),
            (ReviewState.wrong_person, wrong_person),
            (ReviewState.new, reopen),
        )
        if on
    ]
    if len(chosen) != 1:
        raise typer.BadParameter(
            "give exactly one of --confirm, --dismiss, --wrong-person, --reopen"
        )
    svc = services()
    try:
        res = set_review(svc, alert_id, chosen[0], _reviewer(by), note, dispatcher(svc))
    except AlertNotFound as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(
            {
                "alert_id": res.alert_id,
                "state": res.state,
                "previous": res.previous,
                "changed": res.changed,
                "review_id": res.review_id,
                "events": len(res.notifications),
            }
        )
        return
    what = f"{res.previous} -> {res.state}" if res.changed else f"already {res.state}"
    sent = f"; review event to {len(res.notifications)} notifier(s)" if res.notifications else ""
    out.print(f"alert {alert_id}: {what}{sent}")


@alerts_app.command("export")
def export_cmd(
    alert_id: Annotated[int, typer.Argument(help="The alert's id.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write alert-<id>/ into.")],
    by: Annotated[str | None, typer.Option(help="Who exports (in the manifest).")] = None,
) -> None:
    """Evidence for a takedown: upload, face, references, scores, hashes, times and a
    signed manifest (IDWATCH_EVIDENCE_SECRET)."""
    from core.review.evidence import EvidenceError, export_evidence

    try:
        folder = export_evidence(services(), alert_id, out_dir, _reviewer(by))
    except EvidenceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    out.print(f"wrote {folder} ({n} files, manifest signed)")


@alerts_app.command("verify")
def verify_cmd(
    folder: Annotated[Path, typer.Argument(help="An exported alert-<id> folder.")],
) -> None:
    """Check an evidence folder: the manifest's signature and every file's SHA-256."""
    from core.review.evidence import EvidenceError, verify_evidence

    svc = services()
    try:
        res = verify_evidence(folder, svc)
    except EvidenceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if res.ok:
        out.print(f"{folder}: OK ({len(res.manifest['files'])} files, signature valid)")
        return
    for p in res.problems:
        out.print(f"[red]{p}[/red]")
    raise typer.Exit(1)
