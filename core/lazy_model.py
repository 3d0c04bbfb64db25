"""The common shape of every model backend: a fixed name, a model directory, and a
load that happens once, on first use, under a lock (so two threads never load twice)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path


class LazyModel(ABC):
    name: str = ""

    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir
        self._lock = threading.Lock()
        self._loaded = False

    def load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Read the weights; raise core.errors.ModelUnavailable if they are unusable."""
