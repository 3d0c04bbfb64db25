"""``idwatch identity add|list|show|remove``: protected identities."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from workers.cli.common import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    WaitOpt,
    YesOpt,
    console,
    dispatcher,
    loading_models,
    more_rows_note,
    out,
    page_title,
    print_json,
    progress,
    services,
    table,
)

identity_app = typer.Typer(help="Protected identities.", no_args_is_help=True)


@identity_app.command("add")
def identity_add(
    name: str,
    photos: Annotated[list[Path], typer.Argument(help="Authentic photos of the person.")],
    largest: Annotated[
        bool, typer.Option("--largest", help="Use the largest face of group photos.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a protected identity (or add photos to one) and scan earlier uploads.
    Names match ignoring case and spacing: a second spelling adds to the same person."""
    from core.pipeline.identities import RegistrationError, register_identity

    svc = services()
    loading_models(svc)
    # Embedded: the backfill runs here, now. Distributed: on the classify queue.
    disp = dispatcher(svc)
    try:
        reg = register_identity(svc, name, photos, pick_largest=largest, dispatcher=disp)
    except RegistrationError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    res = {
        "identity_id": reg.identity_id,
        "name": reg.name,
        "given_name": reg.given_name,
        "created": reg.created,
        "references_added": reg.references_added,
        "photos": [c.as_dict() for c in reg.checks],
        "backfill": {
            "job_id": reg.backfill_job_id,
            "status": reg.backfill_status,
            "faces_checked": reg.backfill.faces_checked,
            "matches": reg.backfill.matches,
            "alerts": reg.backfill.alerts,
        },
    }
    if as_json:
        print_json(res)
        return
    verb = "registered" if reg.created else "updated"
    if reg.given_name is not None:
        out.print(
            f"{escape(repr(reg.given_name))} is the registered identity "
            f"{escape(repr(reg.name))} (names match ignoring case and spacing): "
            "photos added to it"
        )
    if reg.backfill_job_id is None:
        done = "no backfill (no new reference photo)"
    elif reg.backfill_status == "done":
        done = (
            f"backfill: {reg.backfill.matches} earlier face(s) matched, "
            f"{reg.backfill.alerts} alert(s)"
        )
    else:
        done = f"backfill job {reg.backfill_job_id}: {reg.backfill_status}"
    out.print(
        f"{verb} [bold]{reg.name}[/bold] (id {reg.identity_id}) with "
        f"{reg.references_added} new reference photo(s); {done}"
    )
    for c in reg.checks:  # per photo: usable, or why it is weak (reference_quality)
        out.print(f"  {c.line()}", markup=False)


@identity_app.command("list")
def identity_list(limit: LimitOpt = 1000, offset: OffsetOpt = 0, as_json: JsonOpt = False) -> None:
    """List protected identities, in registration order, one page (``--limit``,
    ``--offset``)."""
    from core.pipeline.identities import count_identities, list_identities

    svc = services(read_only=True)
    total = count_identities(svc)
    rows = list_identities(svc, limit=limit, offset=offset)
    more_rows_note(len(rows), offset, total)
    if as_json:
        print_json(rows)
    else:
        out.print(
            table(
                page_title("Protected identities", len(rows), offset, total),
                rows,
                ["id", "name", "state", "references", "alerts", "created_at"],
            )
        )


@identity_app.command("show")
def identity_show(name: str, as_json: JsonOpt = False) -> None:
    """Show one identity with its reference photos."""
    from core.pipeline.identities import show_identity
    from core.review.thresholds import suggest

    svc = services(read_only=True)
    info = show_identity(svc, name)
    if info is None:
        unknown_identity(svc, name)
    info["review_thresholds"] = suggest(svc, info["id"])
    if as_json:
        print_json(info)
    else:
        out.print(
            f"[bold]{info['name']}[/bold] (id {info['id']}), registered "
            f"{info['created_at']}; {info['matched_faces']} matched face(s), "
            f"{info['alerts']} alert(s)"
        )
        out.print(
            table("Reference photos", info["references"], ["id", "file", "box", "face_backend"])
        )
        from core.faces.reference_quality import coverage_lines

        for line in coverage_lines(info["coverage"]):
            out.print(line)
        print_suggestion(info["review_thresholds"])


def print_suggestion(sug: dict) -> None:
    """The per-person thresholds suggested from reviews (core/review/thresholds.py)."""
    out.print(
        f"reviews: {sug['reviews']} ({sug['confirmed']} confirmed, {sug['dismissed']} "
        f"dismissed, {sug['wrong_person']} wrong person)"
    )
    fake = sug["fake_threshold"]
    if fake is None:
        out.print(f"threshold suggestion: {sug['status']}")
        return
    out.print(
        f"suggested fake-score threshold for this person: {fake['suggested']:.4f} "
        f"({fake['change']}; now {fake['current']:.4f}): over the reviewed alerts it "
        f"avoids {fake['dismissed_avoided']} dismissed and loses {fake['confirmed_lost']} "
        "confirmed"
    )
    match = sug["match_threshold"]
    if match is not None:
        out.print(
            f"suggested match threshold for this person: {match['suggested']:.4f} "
            f"({match['change']}; now {match['current']:.4f}): avoids "
            f"{match['wrong_person_avoided']} wrong-person, loses {match['own_faces_lost']} "
            "of their own faces"
        )
    out.print(f"[dim]rule: {sug['rule']}[/dim]")


@identity_app.command("remove")
def identity_remove(
    name: str,
    yes: YesOpt = False,
    wait: WaitOpt = 120,
    as_json: JsonOpt = False,
) -> None:
    """Erase an identity: reference photos, vectors and the personal data in its alerts."""
    from core.pipeline import jobs
    from core.pipeline.erasure import erasure_result, open_erasure

    svc = services(read_only=True)  # nothing to erase where there is no store
    from core.pipeline.identities import show_identity

    found = show_identity(svc, name)
    if found is None:
        unknown_identity(svc, name)
    if not yes and not typer.confirm(
        f"Erase {found['name']!r} (id {found['id']}) and its reference photos?"
    ):
        raise typer.Exit(1)
    # From this commit on the person matches nothing, whatever happens next.
    opened = open_erasure(svc, name)
    if opened is None:
        unknown_identity(svc, name)
    job_id, identity_id, ident_name = opened
    disp = dispatcher(svc)
    try:
        disp.erase(job_id)
    except Exception as exc:  # broker down: the job row stays pending for the sweeper
        console.print(f"[yellow]erasure job {job_id} not queued yet ({exc!r})[/yellow]")
    deadline = time.monotonic() + (0 if disp.synchronous else wait)
    job = jobs.get(svc, job_id)
    while job.status != "done" and time.monotonic() < deadline:
        time.sleep(0.5)
        job = jobs.get(svc, job_id)
    if job.status != "done":
        console.print(
            f"[red]erasing {name!r} did not finish (job {job_id}: {job.status}"
            + (f", {job.error.splitlines()[0]}" if job.error else "")
            + "); it no longer matches anything; run the same command again, or let the "
            "sweeper, finish the erasure[/red]"
        )
        raise typer.Exit(1)
    res = erasure_result(svc, job_id, identity_id, ident_name)
    if as_json:
        print_json(res)
    else:
        out.print(
            f"erased {res['name']}: {res['references_removed']} reference photo(s), "
            f"{res['vectors_removed']} vector(s); {res['alerts_anonymised']} alert(s) "
            "anonymised"
        )


@identity_app.command("reembed")
def identity_reembed(as_json: JsonOpt = False) -> None:
    """Give every reference photo a vector of the active face backend (after switching
    backends, e.g. dlib -> mobilefacenet, people registered before are matched again)."""
    from core.pipeline.reembed import reembed_references, stale_references

    svc = services()
    total = len(stale_references(svc))
    with progress("re-embedding") as prog:
        task = prog.add_task("references", total=total)
        res = reembed_references(svc, lambda done, _n: prog.update(task, completed=done))
    if as_json:
        print_json({"backend": res.backend, "reembedded": res.reembedded, "failed": res.failed})
        return
    out.print(
        f"{len(res.reembedded)} reference photo(s) re-embedded with {res.backend}; "
        f"{len(res.failed)} failed"
    )
    for ref_id, why in res.failed.items():
        out.print(f"  reference {ref_id}: {why}", markup=False)
    if res.failed:
        raise typer.Exit(1)


def unknown_identity(svc, name: str) -> None:
    """No identity by that name (case and spacing ignored): say which exist, exit 2."""
    from core.names import unknown_name_message
    from core.pipeline.identities import identity_names

    console.print(f"[red]{escape(unknown_name_message(name, identity_names(svc)))}[/red]")
    raise typer.Exit(2)
