"""Measure face detectors and identity embedders on faces-dev (numbers for the README).

    python scripts/measure_face_backends.py [--data ../shared/data/faces-dev] [--out DIR]
        [--detectors hog,mtcnn] [--embedders mobilefacenet,dlib] [--limit N]

Detection: per detector, recall (share of images where a face of >= 24 px is found)
and milliseconds per image (one thread, wall clock; the machine is shared, so the
medians matter more than the means).

Identity: per (detector, embedder), the face of interest of every image (the face most
similar to its identity's other real photos, the largest otherwise; the rule of
``idwatch eval``), then cosine distributions over

- genuine pairs: two real photos of the same identity (unordered);
- impostor pairs: two real photos of different people (unordered; photos with several
  people count as different only when they share nobody);
- fake pairs: (real photo of X, fake of X), the impersonation case;

and TAR / FAR / fake match rate at thresholds, TAR at FAR 0.1%, EER. The threshold
is chosen inside identity-grouped folds: on the training folds' pairs, the lowest
cosine whose FAR is <= the target (0.1%), rounded up to 0.01; the pairs of the held-out
identities are then scored at it (a pair is held out when both its images are). Prints
one JSON object and writes it to ``OUT/face_backends.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.demo.dataset import load_manifest  # noqa: E402
from core.evaluation.dataset_features import identity_groups  # noqa: E402
from core.faces.base import DetectedFace  # noqa: E402
from core.intake import IntakeLimits, decode_image  # noqa: E402

MIN_FACE_PX = 24
FAR_TARGET = 0.001


# --------------------------------------------------------------------------- detectors


class HogDetector:
    name = "hog"

    def __init__(self) -> None:
        from core.faces.dlib_backend import DlibFaceBackend

        self.b = DlibFaceBackend()
        self.b.load()

    def __call__(self, rgb: np.ndarray) -> list[DetectedFace]:
        return self.b.detect(rgb)


class MtcnnDetector:
    """facenet-pytorch's MTCNN (weights in the wheel), 5 landmarks, prob >= 0.95."""

    name = "mtcnn"

    def __init__(self, min_prob: float = 0.95) -> None:
        import torch
        from facenet_pytorch import MTCNN

        torch.set_num_threads(1)
        self.m = MTCNN(keep_all=True, device="cpu", min_face_size=20)
        self.min_prob = min_prob

    def __call__(self, rgb: np.ndarray) -> list[DetectedFace]:
        from PIL import Image

        boxes, probs, pts = self.m.detect(Image.fromarray(rgb), landmarks=True)
        out = []
        if boxes is None:
            return out
        for b, p, lm in zip(boxes, probs, pts, strict=True):
            if p is None or p < self.min_prob:
                continue
            box = tuple(float(v) for v in b)
            out.append(DetectedFace(box, np.asarray(lm, np.float32), float(p)))
        return out


DETECTORS = {"hog": HogDetector, "mtcnn": MtcnnDetector}


# --------------------------------------------------------------------------- embedders


def make_embedder(name: str):
    if name == "mobilefacenet":
        from core.faces.mobilefacenet_backend import MobileFaceNetBackend

        b = MobileFaceNetBackend(threads=1)
    else:
        from core.faces.dlib_backend import DlibFaceBackend

        b = DlibFaceBackend()
    b.load()
    return b


def embed_faces(emb, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
    if not faces:
        return np.zeros((0, emb.embedding_dim), np.float32)
    if emb.name == "dlib" and not faces[0].extra.get("landmarks68"):
        # dlib's chip needs its 68 points: fit them on the other detector's box.
        faces = [
            DetectedFace(f.box, f.landmarks, f.score, {"landmarks68": _shape68(emb, rgb, f)})
            for f in faces
        ]
    return emb.embed(rgb, faces)


def _shape68(emb, rgb, face) -> list:
    shape = emb._shape68(rgb, face.box)
    return [[p.x, p.y] for p in shape.parts()]


# --------------------------------------------------------------------------- pairs


def faces_of_interest(rows, embs: list[np.ndarray], faces) -> list[int | None]:
    """Index of each image's face of interest (idwatch eval's rule): the face most like
    its identity's other real photos, the largest when there are none."""
    real_by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.label == "real":
            for n in r.identities:
                real_by.setdefault(n, []).append(i)
    out: list[int | None] = []
    for i, r in enumerate(rows):
        if not len(embs[i]):
            out.append(None)
            continue
        name = r.identities[0] if r.identities else None
        others = [j for j in real_by.get(name, []) if j != i and len(embs[j])] if name else []
        if not others:
            out.append(int(np.argmax([f.area for f in faces[i]])))
        else:
            pool = np.concatenate([embs[j] for j in others])
            out.append(int(np.argmax((embs[i] @ pool.T).max(axis=1))))
    return out


def pair_sets(rows, vec: list[np.ndarray | None]) -> dict[str, list[tuple[int, int]]]:
    gen, imp, fake = [], [], []
    n = len(rows)
    for i in range(n):
        if vec[i] is None:
            continue
        for j in range(i + 1, n):
            if vec[j] is None:
                continue
            a, b = rows[i], rows[j]
            if a.label == "real" and b.label == "real":
                if set(a.identities) & set(b.identities):
                    gen.append((i, j))
                elif a.identities and b.identities:
                    imp.append((i, j))
            elif {a.label, b.label} == {"real", "fake"}:
                real, fk = (a, b) if a.label == "real" else (b, a)
                if set(real.identities) & set(fk.identities):
                    fake.append((i, j))
    return {"genuine": gen, "impostor": imp, "fake": fake}


def eer(gen: np.ndarray, imp: np.ndarray) -> float:
    ts = np.unique(np.concatenate([gen, imp]))
    best = 1.0
    for t in ts:
        frr = float(np.mean(gen < t))
        far = float(np.mean(imp >= t))
        best = min(best, max(frr, far))
    return best


def tar_at_far(gen: np.ndarray, imp: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold): the lowest threshold with FAR <= far."""
    t = lowest_threshold(imp, far)
    return float(np.mean(gen >= t)), t


def lowest_threshold(imp: np.ndarray, far: float) -> float:
    s = np.sort(imp)[::-1]
    k = int(np.floor(far * len(s)))  # number of impostor pairs allowed above
    return float(s[k]) + 1e-6 if k < len(s) else float(s[-1])


def fold_thresholds(rows, pairs, sims, folds: int = 5, seed: int = 0) -> dict:
    """Choose the threshold on training identities, score held-out identities."""
    groups = identity_groups(rows)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    fold_of_group = {g: int(perm[k] % folds) for k, g in enumerate(uniq)}
    fold = np.array([fold_of_group[g] for g in groups])
    res = {"genuine": [0, 0], "impostor": [0, 0], "fake": [0, 0]}
    chosen = []
    for f in range(folds):
        tr_imp = [
            s
            for (i, j), s in zip(pairs["impostor"], sims["impostor"], strict=True)
            if fold[i] != f and fold[j] != f
        ]
        t = np.ceil(lowest_threshold(np.array(tr_imp), FAR_TARGET) * 100) / 100
        chosen.append(float(t))
        for kind in res:
            for (i, j), s in zip(pairs[kind], sims[kind], strict=True):
                if fold[i] == f and fold[j] == f:
                    res[kind][0] += 1
                    res[kind][1] += int(s >= t)
    return {
        "fold_thresholds": chosen,
        "held_out": {
            k: {"n": v[0], "rate": (v[1] / v[0]) if v[0] else None} for k, v in res.items()
        },
    }


def identity_report(rows, embs, faces) -> dict:
    foi = faces_of_interest(rows, embs, faces)
    vec = [None if k is None else embs[i][k] for i, k in enumerate(foi)]
    pairs = pair_sets(rows, vec)
    sims = {kind: np.array([float(vec[i] @ vec[j]) for i, j in ps]) for kind, ps in pairs.items()}
    gen, imp, fk = sims["genuine"], sims["impostor"], sims["fake"]
    tar, t_far = tar_at_far(gen, imp, FAR_TARGET)
    grid = np.round(np.arange(0.20, 0.96, 0.02), 2)
    table = [
        {
            "threshold": float(t),
            "tar": float(np.mean(gen >= t)),
            "far": float(np.mean(imp >= t)),
            "fake_match": float(np.mean(fk >= t)),
        }
        for t in grid
    ]
    folds = fold_thresholds(rows, pairs, sims)
    final = float(np.ceil(lowest_threshold(imp, FAR_TARGET) * 100) / 100)
    return {
        "n_images_with_face": int(sum(v is not None for v in vec)),
        "pairs": {k: len(v) for k, v in pairs.items()},
        "mean": {k: float(v.mean()) for k, v in sims.items()},
        "percentiles": {
            k: {str(q): float(np.percentile(v, q)) for q in (0, 1, 5, 50, 95, 99, 100)}
            for k, v in sims.items()
        },
        "tar_at_far_0.1pct": tar,
        "threshold_at_far_0.1pct": t_far,
        "eer": eer(gen, imp),
        "chosen_threshold_all_data": final,
        "at_chosen": {
            "tar": float(np.mean(gen >= final)),
            "far": float(np.mean(imp >= final)),
            "fake_match": float(np.mean(fk >= final)),
        },
        "grouped_folds": folds,
        "table": table,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces-dev")
    ap.add_argument("--out", type=Path, default=Path("out/face-backends"))
    ap.add_argument("--detectors", default="hog,mtcnn")
    ap.add_argument("--embedders", default="mobilefacenet,dlib")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    rows = load_manifest(args.data / "manifest.csv")
    if args.limit:
        rows = rows[: args.limit]
    limits = IntakeLimits(max_bytes=1 << 31, max_pixels=1 << 31, max_side=1 << 20)
    images = [decode_image(r.path.read_bytes(), limits).pixels for r in rows]
    embedders = {n: make_embedder(n) for n in args.embedders.split(",")}
    report: dict = {"n_images": len(rows), "detection": {}, "identity": {}}
    for dname in args.detectors.split(","):
        det = DETECTORS[dname]()
        det(images[0])  # warm up
        ms, found, faces_all = [], 0, []
        for k, rgb in enumerate(images):
            t = time.perf_counter()
            faces = [f for f in det(rgb) if min(f.width, f.height) >= MIN_FACE_PX]
            ms.append((time.perf_counter() - t) * 1000)
            found += bool(faces)
            faces_all.append(faces)
            print(f"\r{dname} {k + 1}/{len(images)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        report["detection"][dname] = {
            "recall": found / len(images),
            "images_without_face": len(images) - found,
            "ms_median": statistics.median(ms),
            "ms_mean": statistics.mean(ms),
            "ms_p90": float(np.percentile(ms, 90)),
        }
        for ename, emb in embedders.items():
            t = time.perf_counter()
            embs = [embed_faces(emb, rgb, f) for rgb, f in zip(images, faces_all, strict=True)]
            n_faces = sum(len(f) for f in faces_all)
            key = f"{dname}+{ename}"
            rep = identity_report(rows, embs, faces_all)
            rep["ms_per_face_align_embed"] = (time.perf_counter() - t) * 1000 / max(n_faces, 1)
            report["identity"][key] = rep
            print(
                f"{key}: TAR@FAR0.1% {rep['tar_at_far_0.1pct']:.3f} EER {rep['eer']:.3f} "
                f"mean {rep['mean']} thr {rep['chosen_threshold_all_data']}",
                file=sys.stderr,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "face_backends.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items()}, default=float)[:100000])


if __name__ == "__main__":
    main()
