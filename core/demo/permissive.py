"""Real face photos whose terms allow shipping a model trained on them.

Installed packages ship exactly two portraits that are in the public domain:
scikit-image's astronaut (Eileen Collins, NASA) and matplotlib's Grace Hopper (a US
Navy photograph). A head trained on them (with self-blended copies as its fakes,
core.forensics.sbi) can be distributed without conditions; two people are far too
few to learn what real photos look like, so such a head is an option, measured in
the README, not the default. :func:`build_permissive_set` writes each portrait in
``variants`` authentic variants (crop, scale, mirror, brightness, JPEG or PNG), all
labelled real, as a manifest for ``idwatch detector train --sbi-only``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from core.demo.dataset import MANIFEST_COLUMNS, _adjust, _rescale, _square_crop, _write
from core.faces.base import FaceBackend


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:320])  # without the mission patch


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# identity -> (loader, source, licence)
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], str, str]] = {
    "Eileen Collins": (
        _astronaut,
        "skimage.data.astronaut() (NASA portrait of Eileen Collins)",
        "public domain (NASA)",
    ),
    "Grace Hopper": (
        _grace_hopper,
        "matplotlib mpl-data/sample_data/grace_hopper.jpg (US Navy portrait)",
        "public domain (US Navy photograph)",
    ),
}


def build_permissive_set(
    out_dir: Path, backend: FaceBackend, variants: int = 12, seed: int = 0
) -> Path:
    """Write ``variants`` authentic variants of each public-domain portrait and their
    manifest (all real); returns the manifest's path."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for name, (load, source, licence) in PHOTOS.items():
        rgb = load()
        faces = backend.detect(rgb)
        if not faces:
            raise RuntimeError(f"no face found in the portrait of {name}")
        face = max(faces, key=lambda f: f.area)
        slug = name.split()[-1].lower()
        for v in range(variants):
            scale = float(rng.uniform(1.8, 3.2))
            shift = (float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.05, 0.15)))
            img, _ = _square_crop(rgb, face.box, scale, shift)
            img = _rescale(img, float(rng.uniform(0.6, 1.3)))
            if rng.uniform() < 0.5:
                img = np.ascontiguousarray(img[:, ::-1])
            img = _adjust(img, float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15)))
            jpeg = int(rng.integers(60, 96)) if rng.uniform() < 0.7 else None
            path = f"images/{slug}_{v:02d}.{'jpg' if jpeg else 'png'}"
            _write(out_dir / path, img, jpeg)
            notes = f"variant {v}: crop x{scale:.2f}, " + (f"JPEG q{jpeg}" if jpeg else "PNG")
            rows.append(
                dict(
                    zip(
                        MANIFEST_COLUMNS,
                        (path, "real", name, "original", source, licence, notes),
                        strict=True,
                    )
                )
            )
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return manifest


if __name__ == "__main__":  # python -m core.demo.permissive OUT_DIR
    import sys

    from core.faces.dlib_backend import DlibFaceBackend

    det = DlibFaceBackend(load_encoder=False)
    det.load()
    print(build_permissive_set(Path(sys.argv[1]), det))
