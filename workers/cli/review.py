"""``idwatch review user add|list|remove|hash``: who may log in to the review pages."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from workers.cli.common import JsonOpt, console, out, print_json, services, table

review_app = typer.Typer(help="The review pages (/review on the API).", no_args_is_help=True)
user_app = typer.Typer(help="Reviewers.", no_args_is_help=True)
review_app.add_typer(user_app, name="user")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@user_app.command("add")
def user_add(
    name: str,
    password_stdin: PasswordStdin = False,
    replace: Annotated[bool, typer.Option(help="Set a new password if NAME exists.")] = False,
) -> None:
    """Store a reviewer (an argon2 hash of the password) in the database."""
    from core.review.users import UserError, add_user

    try:
        created = add_user(services(), name, _password(password_stdin), replace=replace)
    except UserError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    out.print(f"reviewer {name} {'added' if created else 'password changed'}")


@user_app.command("remove")
def user_remove(name: str) -> None:
    """Remove a reviewer stored in the database (their open sessions end)."""
    from core.review.users import remove_user

    if not remove_user(services(), name):
        console.print(f"[red]no reviewer {name!r} in the database[/red]")
        raise typer.Exit(1)
    out.print(f"reviewer {name} removed")


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """Reviewers from the settings (IDWATCH_REVIEW_USERS) and the database."""
    from core.review.users import list_users

    rows = list_users(services())
    if as_json:
        print_json(rows)
    else:
        out.print(table("Reviewers", rows, ["name", "source", "created_at"]))


@user_app.command("hash")
def user_hash(password_stdin: PasswordStdin = False) -> None:
    """Print an argon2 hash of a password, for IDWATCH_REVIEW_USERS="name:HASH"."""
    from core.review.users import UserError, hash_password

    try:
        print(hash_password(_password(password_stdin)))
    except UserError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
