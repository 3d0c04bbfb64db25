"""Shared helpers for the benchmarks: test images with distinct bytes, timing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from core.demo.dataset import build_demo_set, load_manifest, load_references


def demo_images(root: Path, n: int) -> tuple[list[Path], dict[str, list[Path]]]:
    """``n`` upload files (the demo set's images, re-saved with distinct bytes as needed)
    and the demo references."""
    manifest = build_demo_set(root / "set")
    rows = load_manifest(manifest)
    out_dir = root / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        src = rows[i % len(rows)].path
        if i < len(rows):
            files.append(src)
            continue
        rgb = np.asarray(Image.open(src).convert("RGB")).copy()
        rgb[0, 0] = (i % 256, i // 256 % 256, 3)  # distinct bytes, same picture
        dst = out_dir / f"{i:05d}_{src.stem}.png"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        dst.write_bytes(buf.getvalue())
        files.append(dst)
    return files, load_references(root / "set")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None
