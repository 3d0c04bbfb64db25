"""Everything a pipeline stage needs, built lazily from one Settings object.

One ``Services`` per process: the embedded runner, each Celery worker and the CLI
create one; tests create one per temporary data directory.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from functools import cached_property

from core.alerts.notify import NOTIFIERS, Notifier
from core.faces.base import FaceBackend
from core.faces.registry import make_face_backend
from core.forensics.base import ForgeryDetector
from core.forensics.registry import make_detector
from core.intake import IntakeLimits
from core.settings import Settings, get_settings
from core.storage.db import Database
from core.storage.files import FileStore
from core.storage.vectors import VectorStore

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.settings.ensure_dirs()
        self._lock = threading.Lock()
        self._notifiers: dict[str, Notifier] = {}
        # Reference views per identity id, built on first use by classify.
        self.reference_cache: dict[int, list] = {}
        # The last few decoded stored files: when crop and classify of one upload run in
        # the same process (embedded runner) the upload is decoded once, not twice.
        self.decoded_cache: OrderedDict[str, object] = OrderedDict()

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.resolved_database_url)

    @cached_property
    def vectors(self) -> VectorStore:
        token = self.settings.milvus_token
        return VectorStore(
            self.settings.resolved_milvus_uri, token.get_secret_value() if token else None
        )

    @cached_property
    def files(self) -> FileStore:
        return FileStore(self.settings.data_dir)

    @cached_property
    def limits(self) -> IntakeLimits:
        return IntakeLimits.from_settings(self.settings)

    @cached_property
    def face_backend(self) -> FaceBackend:
        if self.settings.model_threads:
            import cv2

            # OpenCV's pool (warps, blurs, colour conversions) too: the process-wide
            # setting, made where the models are, as onnxruntime's below.
            cv2.setNumThreads(self.settings.model_threads)
        backend = make_face_backend(
            self.settings.face_backend,
            self.settings.resolved_model_dir,
            self.settings.model_cache_dir,
            self.settings.model_threads,
        )
        log.info("face backend: %s", backend.name)
        return backend

    @cached_property
    def detector(self) -> ForgeryDetector:
        det = make_detector(
            self.settings.detector,
            self.settings.resolved_model_dir,
            self.settings.detector_path,
            embedder=self.face_backend,
            cache_dir=self.settings.model_cache_dir,
        )
        log.info("forgery detector: %s", det.name)
        return det

    def notifier(self, name: str) -> Notifier:
        """The notifier of that name, built from the settings on first use."""
        with self._lock:
            if name not in self._notifiers:
                cls = NOTIFIERS.load(name)
                self._notifiers[name] = cls.from_settings(self.settings, self._record_delivery)
            return self._notifiers[name]

    def _record_delivery(
        self,
        alert_id: int,
        attempt: int,
        ok: bool,
        status_code: int | None,
        error: str | None,
        seconds: float,
    ) -> None:
        """The webhook delivery log: one row per attempt."""
        from core.storage.models import Delivery

        target = getattr(self._notifiers.get("webhook"), "target", None)
        with self.db.session() as s:
            s.add(
                Delivery(
                    alert_id=alert_id,
                    notifier="webhook",
                    target=target,
                    attempt=attempt,
                    ok=ok,
                    status_code=status_code,
                    error=error,
                    seconds=seconds,
                )
            )

    @property
    def match_threshold(self) -> float:
        if self.settings.match_threshold is not None:
            return self.settings.match_threshold
        return self.face_backend.match_threshold

    @property
    def fake_threshold(self) -> float:
        if self.settings.fake_threshold is not None:
            return self.settings.fake_threshold
        self.detector.load()
        return self.detector.threshold

    def decode_stored(self, rel: str):
        """Decode a stored file under the intake limits (raises Rejected), cached."""
        from core.intake import decode_image, read_bytes

        img = self.decoded_cache.get(rel)
        if img is None:
            img = decode_image(read_bytes(self.files.abs(rel), self.limits), self.limits)
            if img.width * img.height <= 12_000_000:  # keep the cache's memory bounded
                self.decoded_cache[rel] = img
                while len(self.decoded_cache) > 2:
                    self.decoded_cache.popitem(last=False)
        else:
            self.decoded_cache.move_to_end(rel)
        return img

    def close(self) -> None:
        if "vectors" in self.__dict__:
            self.vectors.close()
        if "db" in self.__dict__:
            self.db.dispose()
