"""Configuration mistakes as one line each, with the setting to change.

``IdwatchGroup`` is the root command of ``idwatch``: it catches the errors a wrong
setting causes (no API keys, a bad database URL, an unreachable broker or Milvus, an
unknown backend name, a setting that does not parse, no store where one was expected)
and prints one line and exits 2, instead of a traceback around the message. ``--debug``
(or ``IDWATCH_DEBUG=1``) lets the traceback through. Anything else is a bug and keeps
its traceback.

It also keeps typer's help from showing ``<bool>`` for flags (``--json``, ``--yes``).
"""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.core import TyperGroup, TyperOption

CONFIG_ERROR_EXIT = 2
_TRUE = {"1", "true", "yes", "on"}
# Inputs of these settings are never echoed back in an error.
_SECRET_HINTS = ("key", "secret", "token", "password", "auth")


def debug_enabled() -> bool:
    return os.environ.get("IDWATCH_DEBUG", "").strip().lower() in _TRUE


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _settings_quietly():
    """The settings, or None when they are what is broken."""
    try:
        from core.settings import Settings

        return Settings()
    except Exception:
        return None


def _validation_message(exc) -> str:
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err.get("loc") else "?"
        env = f"IDWATCH_{field.upper()}"
        shown = "" if any(h in field for h in _SECRET_HINTS) else f"={err.get('input')!r}"
        parts.append(f"{env}{shown}: {err['msg']}")
    return "invalid setting: " + "; ".join(parts)


def _mro_names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def explain(exc: BaseException) -> str | None:  # noqa: PLR0911 - one branch per kind
    """One line for a known configuration error, naming the setting to change; None
    for anything else (a bug: its traceback is worth seeing)."""
    from core.errors import ConfigError, ModelUnavailable
    from core.store import StoreMissing, redact_url

    names = _mro_names(exc)
    if isinstance(exc, StoreMissing):
        return str(exc)
    if isinstance(exc, ConfigError):
        return f"{exc} (set {exc.setting})" if exc.setting else str(exc)
    if isinstance(exc, ModelUnavailable):
        return (
            f"model unavailable: {exc} (see IDWATCH_FACE_BACKEND, IDWATCH_DETECTOR, "
            "IDWATCH_DETECTOR_PATH, IDWATCH_MODEL_DIR)"
        )
    if "workers.api.app.ApiConfigError" in names:
        return str(exc)
    if (
        "pydantic_core._pydantic_core.ValidationError" in names
        and getattr(exc, "title", "") == "Settings"
    ):
        return _validation_message(exc)
    if "migrations.versions.0006_identity_name_key.NameCollision" in names or (
        type(exc).__name__ == "NameCollision"
    ):
        return f"database upgrade stopped: {exc}"
    settings = _settings_quietly()
    db = redact_url(settings.resolved_database_url) if settings else "?"
    if names & {"sqlalchemy.exc.ArgumentError", "sqlalchemy.exc.NoSuchModuleError"}:
        return f"IDWATCH_DATABASE_URL is not a database URL this system can use: {_first_line(exc)}"
    if names & {"sqlalchemy.exc.OperationalError", "sqlalchemy.exc.InterfaceError"}:
        return f"database {db}: {_first_line(exc)} (check IDWATCH_DATABASE_URL)"
    if "milvus_lite.exceptions.DataDirLockedError" in names or "Open local milvus failed" in str(
        exc
    ):
        uri = settings.resolved_milvus_uri if settings else "?"
        return (
            f"the vector store file {uri} is open in another process; one process per "
            "milvus-lite file: stop the other one, or run `milvus-lite server` and set "
            "IDWATCH_MILVUS_URI=http://host:19530"
        )
    if "pymilvus.exceptions.MilvusException" in names:
        uri = settings.resolved_milvus_uri if settings else "?"
        why = getattr(exc, "message", None) or _first_line(exc)
        return f"vector store {uri}: {why} (check IDWATCH_MILVUS_URI)"
    if names & {"kombu.exceptions.OperationalError", "redis.exceptions.ConnectionError"}:
        broker = redact_url(settings.broker_url) if settings else "?"
        return f"cannot reach the broker {broker}: {_first_line(exc)} (check IDWATCH_BROKER_URL)"
    if isinstance(exc, OSError) and settings and exc.filename:
        data_dir = str(settings.data_dir)
        if str(exc.filename).startswith(data_dir):
            return (
                f"cannot use the data dir {data_dir}: {exc.strerror or exc} "
                "(set IDWATCH_DATA_DIR or --data-dir)"
            )
    return None


def hide_flag_types(group: Any) -> None:
    """Typer shows ``<bool>`` beside every flag; a flag takes no value, so say nothing
    (an empty metavar). Walks every command, its help option included."""
    from typer import Context

    stack = [group]
    while stack:
        cmd = stack.pop()
        stack.extend(getattr(cmd, "commands", {}).values())
        params = list(cmd.params)
        help_opt = cmd.get_help_option(Context(cmd))
        if help_opt is not None:
            params.append(help_opt)
        for p in params:
            if isinstance(p, TyperOption) and p.is_bool_flag and p.metavar is None:
                p.metavar = ""


class IdwatchGroup(TyperGroup):
    """The root group: configuration errors in one line, flags without ``<bool>``."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        hide_flag_types(self)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if ctx.params.get("debug") or debug_enabled() or not _is_error(exc):
                raise
            msg = explain(exc)
            if msg is None:
                raise
            from rich.markup import escape

            from workers.cli.common import console

            console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)
            raise typer.Exit(CONFIG_ERROR_EXIT) from None


def _is_error(exc: BaseException) -> bool:
    """Typer's own exits and usage errors pass through untouched."""
    from typer.exceptions import Abort, Exit, TyperException

    return not isinstance(exc, TyperException | Exit | Abort)
