"""The watched-folder process: ``idwatch watch DIR`` runs ``watch`` until SIGINT/SIGTERM.

All the rules (what is taken, when, exactly once) live in
``core.pipeline.sources.watchfolder.FolderWatcher``; this is only the process shell.
Each file taken is logged at INFO by the ``core.pipeline.sources.watchfolder`` logger.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from core.pipeline.dispatch import Dispatcher, make_dispatcher
from core.pipeline.sources.watchfolder import FolderWatcher
from core.services import Services

log = logging.getLogger(__name__)


def watch(
    root: Path,
    svc: Services | None = None,
    dispatcher: Dispatcher | None = None,
    *,
    stop: threading.Event | None = None,
    settle_s: float | None = None,
    poll_s: float | None = None,
) -> None:
    """Watch ``root`` until SIGINT/SIGTERM (or until ``stop`` is set).

    A signal stops the loop between passes: the file being submitted (and, with the
    inline dispatcher, scanned) is finished first, so nothing is left half-recorded.
    Signal handlers are only installed from the main thread (Python's rule); from
    another thread use ``stop``."""
    own_svc = svc is None
    svc = svc or Services()
    if dispatcher is None:
        dispatcher = make_dispatcher(svc)  # Celery with a broker, else inline
    stop = stop or threading.Event()
    watcher = FolderWatcher(svc, root, dispatcher, settle_s=settle_s, poll_s=poll_s)

    previous: dict[int, object] = {}

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("watch: %s received, stopping after the current pass", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    log.info(
        "watch: watching %s (settle %.1f s, poll %.1f s, %s)",
        watcher.root,
        watcher.settle_s,
        watcher.poll_s,
        type(dispatcher).__name__,
    )
    try:
        watcher.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("watch: stopped watching %s", watcher.root)
        if own_svc:
            svc.close()
