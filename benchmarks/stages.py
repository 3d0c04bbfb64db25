"""Seconds per upload of each pipeline stage on the embedded default (prints JSON).

    python -m benchmarks.stages [--images N]

Uses the built-in demo set (Eileen Collins registered, so fakes reach classify).
Model loading is done before timing starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import unique_bytes
from core.demo.dataset import build_demo_set, load_manifest, load_references
from core.pipeline.delivery import deliver
from core.pipeline.detection import crop, embed_batch
from core.pipeline.identities import register_identity
from core.pipeline.matching import index
from core.pipeline.sources.submit import submit_bytes, submit_path
from core.pipeline.verdicts import classify
from core.services import Services
from core.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = build_demo_set(root / "set")
        rows = load_manifest(manifest)[: args.images]
        svc = Services(Settings(data_dir=root / "data", notifier="memory"))
        name, photos = next(iter(load_references(root / "set").items()))
        register_identity(svc, name, photos)  # also loads the face models
        svc.detector.load()
        # One upload through every stage before timing: one-off costs (the face
        # collection created on the first index, first allocations) are not per upload.
        warm = submit_bytes(svc, unique_bytes(rows[0].path, 30_000), "warm.png", "bench").upload_id
        if crop(svc, warm):
            embed_batch(svc, [warm])
            index(svc, warm)
            classify(svc, warm)
        times: dict[str, list[float]] = {
            k: [] for k in ("submit", "crop", "embed", "index", "classify", "total")
        }
        for r in rows:
            t0 = time.perf_counter()
            uid = submit_path(svc, r.path).upload_id
            t1 = time.perf_counter()
            proceed = crop(svc, uid)
            t2 = time.perf_counter()
            if proceed:
                embed_batch(svc, [uid])
                t3 = time.perf_counter()
                index(svc, uid)
                t4 = time.perf_counter()
                for nid in classify(svc, uid):  # delivery counted with classify
                    deliver(svc, nid)
                t5 = time.perf_counter()
                times["embed"].append(t3 - t2)
                times["index"].append(t4 - t3)
                times["classify"].append(t5 - t4)
            else:
                t5 = t2
            times["submit"].append(t1 - t0)
            times["crop"].append(t2 - t1)
            times["total"].append(t5 - t0)
        svc.close()
    out = {
        "images": len(rows),
        "face_backend": svc.face_backend.name,
        "detector": svc.detector.name,
        "mean_seconds": {k: round(statistics.mean(v), 4) for k, v in times.items() if v},
        "median_seconds": {k: round(statistics.median(v), 4) for k, v in times.items() if v},
        "uploads_per_s": round(len(rows) / sum(times["total"]), 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
