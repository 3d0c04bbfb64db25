"""Files under the data directory: stored uploads, reference photos, face crops.

Paths in the database are relative to ``data_dir`` so that workers on other
machines mounting the same volume elsewhere resolve them too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_EXT = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "MPO": ".jpg",
}


class FileStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()

    def abs(self, rel: str) -> Path:
        return self.root / rel

    def _write_atomic(self, rel: str, data: bytes) -> str:
        path = self.abs(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash never leaves a half-written file under the final name.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return rel

    def put_upload(self, sha256: str, data: bytes, fmt: str | None) -> str:
        rel = f"uploads/{sha256[:2]}/{sha256}{_EXT.get(fmt or '', '.bin')}"
        if not self.abs(rel).exists():
            self._write_atomic(rel, data)
        return rel

    def put_reference(self, identity_id: int, sha256: str, data: bytes, fmt: str | None) -> str:
        rel = f"references/{identity_id}/{sha256}{_EXT.get(fmt or '', '.bin')}"
        if not self.abs(rel).exists():
            self._write_atomic(rel, data)
        return rel

    def put_png(self, rel: str, rgb: np.ndarray) -> str:
        import io

        buf = io.BytesIO()
        # Fast PNG: chips and crops are small and written once per face on the hot path.
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        return self._write_atomic(rel, buf.getvalue())

    def read_rgb(self, rel: str) -> np.ndarray:
        with Image.open(self.abs(rel)) as im:
            return np.asarray(im.convert("RGB"))

    def remove_tree(self, rel: str) -> None:
        import shutil

        shutil.rmtree(self.abs(rel), ignore_errors=True)

    def remove(self, rel: str) -> None:
        self.abs(rel).unlink(missing_ok=True)
