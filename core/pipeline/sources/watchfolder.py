"""The watched folder: a platform drops uploads into a folder; each file version is
submitted exactly once, also across restarts and with several watchers on one folder.

Rules (see ``FolderWatcher``):

- Walk ``root`` recursively with ``os.scandir``. Hidden names (``.x``) and temporary
  names (``*.part *.tmp *.crdownload *.partial ~*``) are skipped, files and folders
  alike for hidden names. Non-regular files (FIFOs, sockets, devices) are skipped
  from ``lstat`` alone, never opened (logged once).
- Content decides what is submitted (``core.pipeline.sources.admit``, the first bytes):
  every file dropped here is an upload, so a non-image gets a rejected upload with its
  reason; a video is logged once and not submitted until video uploads are enabled.
- Symbolic links are never followed, neither to folders nor to files. A link whose
  target lies outside ``root`` is logged once (warning); a link to a file inside
  ``root`` is ignored too, because that file is taken under its own name anyway (and a
  link must not let a hidden or ``.part`` file in by the back door).
- A file is taken once its ``(size, mtime_ns)`` has stayed the same across polls for
  ``settle_s`` seconds, so a file still being written is not read.
- It is read through file descriptors opened component by component with
  ``O_NOFOLLOW`` below a descriptor of ``root``: even a path swapped for a symlink
  between the walk and the read cannot make us read outside ``root``. The bytes read
  must belong to the settled version (``fstat`` before and after the read); otherwise
  the file is treated as changed and settles again.
- Exactly once: a ``WatchedFile`` row per ``(root, relpath, size, mtime_ns)`` records
  the upload a version went to. A version already recorded is skipped. New bytes go
  through ``submit_bytes`` (SHA-256 de-duplication); the dispatcher is called only when
  that created a new upload (and not for one already rejected at submission). Files
  too large or unreadable get a rejected upload from ``submit_path`` and are recorded
  like any other, so they are not retried. That test is what keeps two racing watchers from both
  dispatching: the unique ``uploads.sha256`` lets exactly one of them create the upload,
  and the unique row constraint lets exactly one record the version (the loser skips).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.pipeline.dispatch import Dispatcher
from core.pipeline.sources.admit import HEAD_BYTES, admit
from core.pipeline.sources.submit import Submission, submit_bytes, submit_path
from core.services import Services
from core.storage.models import UploadStatus, WatchedFile

log = logging.getLogger(__name__)

TEMP_SUFFIXES: tuple[str, ...] = (".part", ".tmp", ".crdownload", ".partial")
TEMP_PREFIXES: tuple[str, ...] = ("~",)

_READ_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: a path swapped for a FIFO after the walk must not hang the open.
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

Signature = tuple[int, int]  # (size, mtime_ns)


def is_skipped_name(name: str) -> bool:
    """Hidden or temporary names, which are never taken."""
    low = name.lower()
    return name.startswith(".") or low.startswith(TEMP_PREFIXES) or low.endswith(TEMP_SUFFIXES)


def _storable(rel: str) -> bool:
    """Names that are not UTF-8 reach Python as surrogate escapes, which the database
    refuses; such a file would otherwise fail again on every pass."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Seen:
    sig: Signature
    since: float  # time.monotonic() when this signature was first seen


class _Changed(Exception):
    """The file is not the settled version any more (written, replaced, removed)."""


class _PassedOver(Exception):
    """The content is not submitted (``core.pipeline.sources.admit``: a video, for now)."""


class FolderWatcher:
    def __init__(
        self,
        svc: Services,
        root: Path,
        dispatcher: Dispatcher,
        settle_s: float | None = None,
        poll_s: float | None = None,
    ) -> None:
        self.svc = svc
        # Resolved once: rows are keyed by this string, so the same folder reached
        # through another path (or a symlinked mount point) is the same folder.
        self.root = Path(root).resolve()
        self.root_key = str(self.root)
        self.dispatcher = dispatcher
        self.settle_s = svc.settings.watch_settle_s if settle_s is None else float(settle_s)
        self.poll_s = svc.settings.watch_poll_s if poll_s is None else float(poll_s)
        self._pending: dict[str, _Seen] = {}  # relpath -> first sighting of its signature
        self._done: dict[str, Signature] = {}  # relpath -> version known to be recorded
        self._warned: set[str] = set()  # relpaths already logged (links out, walk errors)
        self._warn_seen: set[str] = set()  # ... of which still present in this pass
        self._undispatched: list[int] = []  # created, but the dispatcher raised: retried

    # --- walking -----------------------------------------------------------------------

    def scan(self) -> dict[str, Signature]:
        """Candidate files under the root: relpath (POSIX) -> (size, mtime_ns)."""
        found: dict[str, Signature] = {}
        self._warn_seen = set()
        stack: list[tuple[str, str]] = [(str(self.root), "")]
        while stack:
            dir_path, dir_rel = stack.pop()
            try:
                with os.scandir(dir_path) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                if not dir_rel:
                    self._warn_once("", "watched folder %s does not exist (yet)", self.root)
                continue
            except OSError as exc:
                self._warn_once(dir_rel, "cannot list %s: %s", dir_path, exc)
                continue
            for entry in entries:
                if is_skipped_name(entry.name):
                    continue
                rel = f"{dir_rel}/{entry.name}" if dir_rel else entry.name
                if not _storable(rel):
                    self._warn_once(rel, "watch: skipping %r: its name is not valid UTF-8", rel)
                    continue
                try:
                    if entry.is_symlink():
                        self._symlink(entry, rel)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:  # vanished in between
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append((entry.path, rel))
                elif stat.S_ISREG(st.st_mode):
                    found[rel] = (st.st_size, st.st_mtime_ns)
                else:  # FIFO, socket, device: never opened, but said
                    self._warn_once(rel, "watch: not submitting %s: not a regular file", rel)
        return found

    def _symlink(self, entry: os.DirEntry, rel: str) -> None:
        target = Path(os.path.realpath(entry.path))
        if target == self.root or target.is_relative_to(self.root):
            log.debug("watch: ignoring symlink %s (its target inside the folder is watched)", rel)
        else:
            self._warn_once(rel, "watch: ignoring symlink %s pointing outside %s", rel, self.root)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        self._warn_seen.add(key)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # --- one pass ------------------------------------------------------------------------

    def poll_once(self) -> list[int]:
        """One pass over the folder. Returns the upload ids of the file versions this
        watcher recorded in this pass (an id may be an older upload when the bytes were
        seen before under another name)."""
        now = time.monotonic()
        found = self.scan()
        # Forget files that disappeared, so memory follows the folder.
        for d in (self._pending, self._done):
            for rel in d.keys() - found.keys():
                del d[rel]
        self._warned &= self._warn_seen  # a link removed and made again is logged again
        self._retry_dispatch()

        ready: list[tuple[str, Signature]] = []
        for rel, sig in found.items():
            if self._done.get(rel) == sig:
                continue
            seen = self._pending.get(rel)
            if seen is None or seen.sig != sig:
                self._pending[rel] = seen = _Seen(sig, now)
            if now - seen.since >= self.settle_s:
                ready.append((rel, sig))

        taken: list[int] = []
        for rel, sig in sorted(ready):
            try:
                upload_id = self._take(rel, sig)
            except _Changed:
                self._pending.pop(rel, None)  # settles again from its new signature
                continue
            except Exception:  # e.g. the database is down: stays pending, next pass retries
                log.exception("watch: could not take %s", rel)
                continue
            self._pending.pop(rel, None)
            self._done[rel] = sig
            if upload_id is not None:
                taken.append(upload_id)
        return taken

    def _recorded(self, rel: str, sig: Signature) -> bool:
        with self.svc.db.session() as s:
            row = s.scalar(
                select(WatchedFile.id).where(
                    WatchedFile.root == self.root_key,
                    WatchedFile.relpath == rel,
                    WatchedFile.size == sig[0],
                    WatchedFile.mtime_ns == sig[1],
                )
            )
        return row is not None

    def _take(self, rel: str, sig: Signature) -> int | None:
        """Submit and record one settled version; the upload id, or None when it was
        recorded before (by us before a restart, or by another watcher)."""
        if self._recorded(rel, sig):
            return None
        path = self.root.joinpath(*PurePosixPath(rel).parts)
        try:
            sub = self._submit(rel, path, sig)
        except _PassedOver as exc:
            # Not recorded: a restart looks again (e.g. once videos are enabled).
            self._warn_once(rel, "watch: not submitting %s: %s", rel, exc)
            return None
        try:
            with self.svc.db.session() as s:
                s.add(
                    WatchedFile(
                        root=self.root_key,
                        relpath=rel,
                        size=sig[0],
                        mtime_ns=sig[1],
                        upload_id=sub.upload_id,
                    )
                )
        except IntegrityError:
            # Another watcher recorded this version first. It cannot also have created
            # the upload when we did (uploads.sha256 is unique), so dispatch if we did.
            log.debug("watch: %s already recorded by another watcher", rel)
            recorded = False
        else:
            recorded = True
        # A new upload already rejected at submission (too large, unreadable) is terminal:
        # there is nothing for the pipeline to do.
        if sub.created and not UploadStatus(sub.status).terminal:
            self._dispatch(sub.upload_id)
        if not recorded:
            return None
        log.info(
            "watch: %s -> upload %d (%s, %s)",
            rel,
            sub.upload_id,
            "new" if sub.created else "same bytes as before",
            sub.status,
        )
        return sub.upload_id

    def _dispatch(self, upload_id: int) -> None:
        try:
            self.dispatcher.upload(upload_id)
        except Exception:
            # The version is recorded and the upload exists, so no later pass would
            # dispatch it: keep the id and retry (in this process) until it goes through.
            log.exception("watch: upload %d submitted but not dispatched; will retry", upload_id)
            self._undispatched.append(upload_id)

    def _retry_dispatch(self) -> None:
        pending, self._undispatched = self._undispatched, []
        for upload_id in pending:
            self._dispatch(upload_id)

    # --- reading -------------------------------------------------------------------------

    def _submit(self, rel: str, path: Path, sig: Signature) -> Submission:
        try:
            fd = self._open_beneath(rel)
        except FileNotFoundError as exc:
            raise _Changed(rel) from exc
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise _Changed(rel) from exc  # a component became a symlink: look again
            # Permission and I/O errors: submit_path records a rejected upload
            # ("unreadable") without reading anything, so the file is not retried forever.
            return submit_path(self.svc, path, source="watch")
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != sig:
                raise _Changed(rel)
            head = f.read(HEAD_BYTES)
            decision = admit(head, named=True)  # in the folder by contract: an upload
            if not decision.submit:
                raise _PassedOver(decision.reason)
            limit = self.svc.limits.max_bytes
            if st.st_size > limit:
                # submit_path rejects it as too_large from stat alone, without reading.
                return submit_path(self.svc, path, source="watch")
            chunks: list[bytes] = [head]
            total = len(head)
            while total <= limit:
                chunk = f.read(min(_READ_CHUNK, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != sig or total != sig[0]:
                raise _Changed(rel)  # written while we read: not the settled version
        return submit_bytes(self.svc, b"".join(chunks), str(path), source="watch")

    def _open_beneath(self, rel: str) -> int:
        """Open root/rel for reading without following any symlink on the way."""
        parts = PurePosixPath(rel).parts
        dir_fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = nxt
            return os.open(parts[-1], _FILE_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    # --- loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, max_passes: int | None = None) -> None:
        """Poll every ``poll_s`` until ``stop`` is set or ``max_passes`` passes ran.
        A failing pass (database down, ...) is logged and the next one tries again."""
        stop = stop or threading.Event()
        passes = 0
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("watch: pass over %s failed", self.root)
            passes += 1
            if max_passes is not None and passes >= max_passes:
                break
            stop.wait(self.poll_s)
