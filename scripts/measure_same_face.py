"""Measure "the same face" for the review suppression rule (core/review/suppression.py).

A face that a reviewer dismissed (a real photo) or said is not the person must not alert
again for that person, also when the same picture comes back as another file. Such a
copy is recognised by the cosine of its face embedding with the reviewed face. The cut
must sit between near-duplicates (re-encoded, rescaled, cropped, brightened or mirrored
copies of one photo) and other photos of the same person, or of fakes of that person:
a dismissed real photo must never silence a new fake.

On faces-dev (largest face per image, the face backend given, dlib by default):
- same person, different real photos (pairs sharing an identity);
- fake vs real photo of the claimed person;
- 60 real photos (seeded) under 8 transformations each, cosine to the original.
Prints one JSON object: the distributions and, per candidate cut, the share of each
kind at or above it.

    .venv/bin/python scripts/measure_same_face.py [--data ../shared/data/faces-dev] [--backend dlib]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("jpeg90", "jpeg70", "jpeg50", "scale0.75", "scale0.5", "crop90", "bright", "mirror")
CUTS = (0.93, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995)


def transform(rgb: np.ndarray, kind: str) -> np.ndarray:
    im = Image.fromarray(rgb)
    if kind.startswith("jpeg"):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(kind[4:]))
        return np.asarray(Image.open(buf).convert("RGB"))
    if kind.startswith("scale"):
        s = float(kind[5:])
        size = (max(1, int(im.width * s)), max(1, int(im.height * s)))
        return np.asarray(im.resize(size, Image.BICUBIC))
    if kind == "crop90":
        w, h = im.size
        return np.asarray(im.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))))
    if kind == "bright":
        return np.clip(rgb.astype(np.float32) * 1.15 + 5, 0, 255).astype(np.uint8)
    if kind == "mirror":
        return rgb[:, ::-1].copy()
    raise ValueError(kind)


def stats(v: list[float]) -> dict:
    a = np.asarray(v)
    q = {f"p{p}": round(float(np.quantile(a, p / 100)), 4) for p in (1, 5, 50, 95, 99)}
    return {"n": len(a), "min": round(float(a.min()), 4), **q, "max": round(float(a.max()), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces-dev")
    ap.add_argument("--photos", type=int, default=60, help="real photos to transform")
    ap.add_argument("--backend", default="dlib", help="face backend name (as in settings)")
    args = ap.parse_args()
    if not (args.data / "manifest.csv").exists():
        print(json.dumps({"skipped": f"{args.data} has no manifest.csv"}))
        return 0
    sys.path.insert(0, str(ROOT))
    from core.faces.registry import make_face_backend
    from core.settings import Settings

    backend = make_face_backend(args.backend, Settings().resolved_model_dir)
    backend.load()

    def embed(rgb: np.ndarray) -> np.ndarray | None:
        faces = backend.detect(rgb)
        if not faces:
            return None
        e = backend.embed(rgb, [max(faces, key=lambda f: f.area)])[0]
        return e / np.linalg.norm(e)

    rows = list(csv.DictReader((args.data / "manifest.csv").open()))
    faces = []
    for r in tqdm(rows, desc="faces", file=sys.stderr):
        rgb = np.asarray(Image.open(args.data / r["path"]).convert("RGB"))
        e = embed(rgb)
        if e is not None:
            faces.append((r, e, rgb))
    same_person, fake_real = [], []
    for i, (ri, ei, _) in enumerate(faces):
        for rj, ej, _ in faces[i + 1 :]:
            if not set(filter(None, ri["identity"].split(";"))) & set(
                filter(None, rj["identity"].split(";"))
            ):
                continue
            c = float(ei @ ej)
            if ri["label"] == rj["label"] == "real":
                same_person.append(c)
            elif ri["label"] != rj["label"]:
                fake_real.append(c)
    reals = [f for f in faces if f[0]["label"] == "real"]
    pick = np.random.default_rng(0).choice(len(reals), min(args.photos, len(reals)), replace=False)
    dup: dict[str, list[float]] = {k: [] for k in KINDS}
    for idx in tqdm(pick, desc="copies", file=sys.stderr):
        _, e, rgb = reals[idx]
        for k in KINDS:
            e2 = embed(transform(rgb, k))
            if e2 is not None:
                dup[k].append(float(e @ e2))
    every = [c for v in dup.values() for c in v]
    out = {
        "face_backend": backend.name,
        "faces": len(faces),
        "same_person_other_real_photo": stats(same_person),
        "fake_vs_real_photo_of_claimed_person": stats(fake_real),
        "near_duplicates": stats(every),
        "near_duplicates_by_kind": {k: stats(v) for k, v in dup.items()},
        "at_or_above": {
            str(t): {
                "near_duplicates": round(float(np.mean(np.asarray(every) >= t)), 4),
                "same_person_other_photo": round(float(np.mean(np.asarray(same_person) >= t)), 4),
                "fake_vs_real": round(float(np.mean(np.asarray(fake_real) >= t)), 4),
            }
            for t in CUTS
        },
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
