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
        """An RGB (or grey) uint8 array as a lossless PNG."""
        import cv2

        # Fast PNG: chips and crops are small and written once per face on the hot path.
        # zlib level 1, RLE strategy, the "up" row filter only (not libpng's per-row
        # choice among five): 2.5 ms per 256 px crop instead of Pillow's 5.5 ms, files
        # the same size within 10% (measured on the demo set's crops).
        px = np.ascontiguousarray(rgb)
        if px.ndim == 3:
            px = cv2.cvtColor(px, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
        ok, buf = cv2.imencode(".png", px, params)
        if not ok:
            raise OSError(f"cannot encode {rel} as PNG")
        return self._write_atomic(rel, buf.tobytes())

    def read_rgb(self, rel: str) -> np.ndarray:
        with Image.open(self.abs(rel)) as im:
            return np.asarray(im.convert("RGB"))

    def remove_tree(self, rel: str) -> None:
        import shutil

        shutil.rmtree(self.abs(rel), ignore_errors=True)

    def remove(self, rel: str) -> None:
        self.abs(rel).unlink(missing_ok=True)
