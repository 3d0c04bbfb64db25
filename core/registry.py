"""Name -> class, loaded lazily by dotted path: one helper for every part chosen by name.

Face backends, forgery detectors, notifiers and dispatchers are picked by a name from
settings. Each kind keeps one table of names and ``"module:Class"`` paths; the module is
imported only when its name is asked for, so a backend's heavy imports (onnxruntime,
torch) are paid only by the processes that use it, and ``core`` can name an
implementation that lives outside it (the Celery dispatcher in ``workers``) without
importing it.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def load_object(path: str) -> Any:
    """The object at ``"package.module:attribute"``."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attribute', got {path!r}")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Names of one kind of part and where each one's class lives."""

    def __init__(self, kind: str, entries: dict[str, str], setting: str | None = None) -> None:
        self.kind = kind
        self._entries = dict(entries)
        self.setting = setting  # the IDWATCH_* setting that chooses one, for messages

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str) -> str:
        """``name`` if it is registered; else a ConfigError (a ValueError) that lists the
        choices and names the setting."""
        if name not in self._entries:
            from core.errors import ConfigError

            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}",
                self.setting,
            )
        return name

    def load(self, name: str) -> type[T]:
        """The class registered under ``name`` (its module imported now)."""
        return load_object(self._entries[self.check(name)])
