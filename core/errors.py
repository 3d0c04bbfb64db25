"""Errors that end an upload in a terminal state with a stated reason."""

from __future__ import annotations


class Rejected(Exception):
    """The input is not acceptable (not a failure of the system).

    ``code`` is a short stable machine-readable reason; the message is for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ModelUnavailable(RuntimeError):
    """A backend's model files are missing or unusable."""


class ConfigError(ValueError):
    """A setting holds a value the system cannot run with. ``setting`` names the one to
    change (``IDWATCH_...``), so the command line can say it in one line."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
