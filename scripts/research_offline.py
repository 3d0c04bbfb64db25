"""Measure the offline (no downloaded weights) forgery detector on faces-dev.

For every image: dlib faces; the face of interest is the one that best matches the
labelled identity's OTHER authentic photos (largest face when there are none);
references = the other real photos of that identity (leave-one-out). Two conditions:
``orig`` (files as they are) and ``blind`` (every image decoded and re-encoded as JPEG
q90 in memory before anything else, which also strips metadata), because on faces-dev
fakes are mostly PNG and reals mostly JPEG.

Evaluation is identity-disjoint: stratified grouped 5-fold, groups = people (names
joined by ';' are merged), anonymous images grouped by source figure; repeated over
seeds. Each training fold picks C, calibration and the threshold (real accuracy
>= 0.9) on its own inner grouped CV; the test fold is only scored.

    .venv/bin/python scripts/research_offline.py [--data DIR] [--seeds 3] [--write-head]

Features are cached under /tmp/offline_feats_<cond>.json; results go to
/tmp/offline_research.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.faces.base import DetectedFace  # noqa: E402
from core.faces.crops import loose_crop  # noqa: E402
from core.forensics import features as F  # noqa: E402
from core.forensics.head import _auc, train_head  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "faces-dev"
HEAD_OUT = ROOT / "core" / "forensics" / "heads" / "offline_v1.json"
CONDITIONS = ("orig", "blind")


def load_manifest(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def names_of(row: dict[str, str]) -> list[str]:
    return [n for n in row["identity"].split(";") if n]


def cv_groups(rows: list[dict[str, str]]) -> np.ndarray:
    """People merged across ';' (union-find); anonymous images by source figure."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    keys = []
    for r in rows:
        ns = names_of(r)
        if ns:
            for n in ns[1:]:
                parent[find("id:" + n)] = find("id:" + ns[0])
            keys.append("id:" + ns[0])
        else:
            keys.append("src:" + r["source"].split(" (")[0])
    return np.array([find(k) for k in keys])


def pseudo_face(rgb: np.ndarray) -> DetectedFace:
    """Stand-in when dlib finds no face: a central box with textbook landmarks."""
    h, w = rgb.shape[:2]
    s = 0.6 * min(h, w)
    x1, y1 = (w - s) / 2, (h - s) / 2
    rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.75], [0.65, 0.75]], np.float32)
    return DetectedFace((x1, y1, x1 + s, y1 + s), rel * s + [x1, y1], 0.0, {"pseudo": True})


# --------------------------------------------------------------------------- extraction


def extract_condition(rows, data: Path, cond: str, cache_dir: Path) -> dict:
    cache = cache_dir / f"offline_feats_{cond}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from core.faces.dlib_backend import DlibFaceBackend

    backend = DlibFaceBackend()
    timing = defaultdict(float)
    images, metas, faces, embs = [], [], [], []
    for r in rows:
        raw = (data / r["path"]).read_bytes()
        rgb = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
        t = time.perf_counter()
        meta = F.read_metadata(raw) if cond == "orig" else {}
        timing["meta_read"] += time.perf_counter() - t
        if cond == "blind":
            rgb = F.reencode_jpeg(rgb, 90)
        t = time.perf_counter()
        fs = backend.detect(rgb)
        timing["detect"] += time.perf_counter() - t
        t = time.perf_counter()
        e = backend.embed(rgb, fs) if fs else np.zeros((0, 128), np.float32)
        timing["embed"] += time.perf_counter() - t
        images.append(rgb)
        metas.append(meta)
        faces.append(fs)
        embs.append(e)

    # Face of interest per (image, name): best match to any face in the name's OTHER
    # real photos; the largest face when the name has no other real photo.
    real_by_name: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r["label"] == "real":
            for n in names_of(r):
                real_by_name[n].append(i)

    def foi(i: int, name: str | None) -> tuple[int | None, float]:
        if not faces[i]:
            return None, float("nan")
        others = [j for j in real_by_name.get(name, []) if j != i and len(embs[j])] if name else []
        if not others:
            return int(np.argmax([f.area for f in faces[i]])), float("nan")
        pool = np.concatenate([embs[j] for j in others])
        sims = (embs[i] @ pool.T).max(axis=1)
        return int(np.argmax(sims)), float(sims.max())

    profiles: dict[tuple[int, int | None], F.FaceProfile] = {}

    def profile(i: int, k: int | None) -> F.FaceProfile:
        if (i, k) not in profiles:
            f = faces[i][k] if k is not None else pseudo_face(images[i])
            emb = embs[i][k] if k is not None else None
            profiles[(i, k)] = F.face_profile(loose_crop(images[i], f), f, emb, backend)
        return profiles[(i, k)]

    out_rows = []
    for i, r in enumerate(rows):
        ns = names_of(r)
        name = next((n for n in ns if [j for j in real_by_name.get(n, []) if j != i]), None)
        k, sim = foi(i, name if name else (ns[0] if ns else None))
        face = faces[i][k] if k is not None else pseudo_face(images[i])
        crop = loose_crop(images[i], face)
        t = time.perf_counter()
        feats = F.face_features(crop, face)
        timing["face"] += time.perf_counter() - t
        t = time.perf_counter()
        feats.update(F.image_features(images[i], face))
        timing["image"] += time.perf_counter() - t
        t = time.perf_counter()
        feats.update(F.jpeg_features(images[i]))
        timing["jpeg"] += time.perf_counter() - t
        t = time.perf_counter()
        feats.update(F.meta_features(metas[i]))
        timing["meta"] += time.perf_counter() - t
        t = time.perf_counter()
        refs = []
        if name:
            for j in real_by_name[name]:
                if j == i:
                    continue
                kj, _ = foi(j, name)
                if kj is not None:
                    refs.append(profile(j, kj))
        timing["ref_profiles"] += time.perf_counter() - t
        t = time.perf_counter()
        stats = {kk: v for kk, v in feats.items() if kk.startswith("face.")}
        # The identity vectors of the upload itself come from its (cached) profile.
        up = profile(i, k) if k is not None else F.face_profile(crop, face, None, backend, stats)
        timing["identity_embed"] += time.perf_counter() - t
        t = time.perf_counter()
        feats.update(F.reference_features(up, refs))
        timing["ref"] += time.perf_counter() - t
        feats = {kk: (float(v) if np.isfinite(v) else 0.0) for kk, v in feats.items()}
        out_rows.append(
            {
                "features": feats,
                "n_faces": len(faces[i]),
                "pseudo_face": k is None,
                "n_refs": len(refs),
                "face_px": float(max(face.width, face.height)),
                "image_px": float(images[i].shape[0] * images[i].shape[1]),
                "id_sim": sim,
            }
        )
    n = len(rows)
    result = {"rows": out_rows, "timing_s_per_image": {k: v / n for k, v in timing.items()}}
    cache.write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------- evaluation


def metrics(
    y: np.ndarray, score: np.ndarray, pred: np.ndarray, methods: np.ndarray, has_ref: np.ndarray
) -> dict:
    out = _metrics(y, score, pred, methods)
    for label, sel in (("with_refs", has_ref), ("no_refs", ~has_ref)):
        sub = _metrics(y[sel], score[sel], pred[sel], methods[sel])
        out[label] = {k: sub[k] for k in ("real_acc", "fake_acc", "avg", "auc")}
    return out


def _metrics(y: np.ndarray, score: np.ndarray, pred: np.ndarray, methods: np.ndarray) -> dict:
    real_acc = float(np.mean(~pred[y == 0]))
    fake_acc = float(np.mean(pred[y == 1]))
    per_method = {
        m: round(float(np.mean(pred[methods == m] == (y[methods == m] == 1))), 3)
        for m in sorted(set(methods))
    }
    return {
        "real_acc": real_acc,
        "fake_acc": fake_acc,
        "avg": (real_acc + fake_acc) / 2,
        "auc": _auc(y, score),
        "per_method": per_method,
    }


def evaluate(X, y, names, groups, methods, has_ref, seeds: int, folds: int = 5) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    runs = []
    for seed in range(seeds):
        score = np.zeros(len(y))
        pred = np.zeros(len(y), bool)
        for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
            X, y, groups
        ):
            head = train_head(X[tr], y[tr], names, groups=groups[tr], seed=seed)
            score[te] = head.predict_proba(X[te])
            pred[te] = head.predict(X[te])
        runs.append(metrics(y, score, pred, methods, has_ref))
    keys = ("real_acc", "fake_acc", "avg", "auc")
    agg = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    for sub in ("with_refs", "no_refs"):
        agg[sub] = {k: float(np.nanmean([r[sub][k] for r in runs])) for k in keys}
    agg["auc_sd"] = float(np.std([r["auc"] for r in runs]))
    agg["per_method"] = {
        m: round(float(np.mean([r["per_method"][m] for r in runs])), 3)
        for m in runs[0]["per_method"]
    }
    return agg


def feature_sets(all_names: list[str], rows_meta: list[dict]) -> dict[str, list[str]]:
    sets = {}
    for g in F.GROUPS:
        sets[g] = [n for n in all_names if F.group_of(n) == g]
    sets["all"] = list(all_names)
    for g in F.GROUPS:
        sets[f"all-{g}"] = [n for n in all_names if F.group_of(n) != g]
    fir = [n for n in all_names if F.group_of(n) in ("face", "image", "ref")]
    sets["face+image+ref"] = fir
    sets["image+ref"] = [n for n in fir if F.group_of(n) != "face"]
    sets["face+ref"] = [n for n in fir if F.group_of(n) != "image"]
    # Parts of the reference group: identity vectors, statistics vs refs, geometry.
    ident = {"ref.available", "ref.id_sim_max", "ref.id_sim_mean", "ref.id_sim_rel"}
    ident |= {"ref.sim_inner", "ref.sim_outer", "ref.sim_io_gap"}
    geom = {"ref.available", "ref.geom_dist", "ref.geom_jaw"}
    sets["ref:identity"] = [n for n in all_names if n in ident]
    sets["ref:geometry"] = [n for n in all_names if n in geom]
    sets["ref:stats"] = [
        n for n in all_names if n == "ref.available" or n.startswith(("ref.d_", "ref.absz_"))
    ]
    sets["fir-identity"] = [n for n in fir if n not in ident or n == "ref.available"]
    sets["fir-inner/outer"] = [n for n in fir if not n.startswith("ref.sim_")]
    return sets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/offline_research.json"))
    ap.add_argument("--write-head", action="store_true", help=f"train on all data -> {HEAD_OUT}")
    ap.add_argument("--head-groups", default="face,image,ref", help="groups of the packaged head")
    ap.add_argument("--demo-check", action="store_true", help="score core.demo's swaps")
    ap.add_argument("--no-eval", action="store_true", help="skip the cross-validated tables")
    args = ap.parse_args()

    rows = load_manifest(args.data)
    y = np.array([r["label"] == "fake" for r in rows], dtype=int)
    methods = np.array([r["method"].replace("original(mirrored)", "original") for r in rows])
    groups = cv_groups(rows)
    results: dict = {"n": len(rows), "n_fake": int(y.sum()), "n_groups": int(len(set(groups)))}
    table = []
    for cond in () if args.no_eval else CONDITIONS:
        t0 = time.time()
        ext = extract_condition(rows, args.data, cond, args.cache)
        names = sorted(ext["rows"][0]["features"])
        X = np.array([[er["features"][n] for n in names] for er in ext["rows"]])
        has_ref = np.array([er["n_refs"] > 0 for er in ext["rows"]])
        results[cond] = {
            "timing_s_per_image": ext["timing_s_per_image"],
            "no_face_detected": int(sum(er["pseudo_face"] for er in ext["rows"])),
            "with_refs": {
                "real": int(
                    sum(er["n_refs"] > 0 for er, t in zip(ext["rows"], y, strict=True) if t == 0)
                ),
                "fake": int(
                    sum(er["n_refs"] > 0 for er, t in zip(ext["rows"], y, strict=True) if t == 1)
                ),
            },
            "sets": {},
        }
        print(f"[{cond}] features ready in {time.time() - t0:.0f}s", flush=True)
        # Confound baselines: what container format and size alone achieve.
        base = {
            "baseline:is_png": np.array(
                [[float(Image.open(args.data / r["path"]).format == "PNG")] for r in rows]
            ),
            "baseline:size": np.log(
                np.array([[er["face_px"], er["image_px"]] for er in ext["rows"]])
            ),
        }
        for label, Xb in base.items():
            res = evaluate(
                Xb, y, [f"b.{i}" for i in range(Xb.shape[1])], groups, methods, has_ref, args.seeds
            )
            results[cond]["sets"][label] = res
            table.append((cond, label, Xb.shape[1], res))
            print(fmt_row(cond, label, Xb.shape[1], res), flush=True)
        for label, cols in feature_sets(names, ext["rows"]).items():
            idx = [names.index(c) for c in cols]
            res = evaluate(X[:, idx], y, cols, groups, methods, has_ref, args.seeds)
            results[cond]["sets"][label] = res
            table.append((cond, label, len(cols), res))
            print(fmt_row(cond, label, len(cols), res), flush=True)
    if not args.no_eval:
        args.out.write_text(json.dumps(results, indent=1))
        print(f"\nsaved {args.out}")

    if args.write_head:
        write_head(rows, y, groups, args)
    if args.demo_check:
        demo_check(args.cache / "idwatch-demo-set")


def demo_check(out_dir: Path) -> dict:
    """Score the built-in demo set's swaps (core.demo) with the packaged head: the face
    that best matches the claimed identity against that identity's registration photos
    (every face, without references, for uploads that claim nobody)."""
    from core.demo.dataset import build_demo_set, load_references
    from core.demo.dataset import load_manifest as demo_manifest
    from core.faces.dlib_backend import DlibFaceBackend
    from core.forensics.base import ForensicInput, ReferenceView
    from core.forensics.offline import OfflineDetector

    backend = DlibFaceBackend()
    manifest = out_dir / "manifest.csv"
    if not manifest.exists():
        build_demo_set(out_dir, backend=backend)
    det = OfflineDetector(embedder=backend)

    def view(path: Path) -> tuple[np.ndarray, list]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        return rgb, backend.detect(rgb)

    refs_by_name = {}
    for name, paths in load_references(out_dir).items():
        views = []
        for p in paths:
            rgb, fs = view(p)
            if fs:
                f = max(fs, key=lambda f: f.area)
                views.append(ReferenceView(rgb, f, loose_crop(rgb, f)))
        refs_by_name[name] = views
    out = []
    for row in demo_manifest(manifest):
        rgb, fs = view(row.path)
        name = row.identities[0] if row.identities else None
        refs = refs_by_name.get(name, []) if name else []
        if refs and fs:  # as the pipeline does: only the face that matched the identity
            ref_embs = np.concatenate([backend.embed(r.image, [r.face]) for r in refs])
            sims = (backend.embed(rgb, fs) @ ref_embs.T).max(axis=1)
            fs = [fs[int(np.argmax(sims))]]
        for f in fs:
            res = det.score(ForensicInput(rgb, f, loose_crop(rgb, f), references=refs))
            out.append((row.label, row.method, row.path.name, len(refs), res.score, res.is_fake))
    for r in out:
        print(f"demo {r[0]:4s} {r[1]:12s} {r[2]:34s} refs={r[3]} score={r[4]:.3f} fake={r[5]}")
    return {"rows": out}


_SHORT = {
    "original": "orig",
    "simswap": "ss",
    "deepfacelab-dfm": "dfl",
    "arc2face": "a2f",
    "arc2face-exp": "a2fx",
    "instantid": "iid",
    "instantid-kolors": "iidk",
    "inswapper": "insw",
    "stylegan2": "sg2",
    "stylegan2-tpdne": "sg2t",
}


def fmt_row(cond: str, label: str, n: int, r: dict) -> str:
    pm = " ".join(f"{_SHORT.get(m, m)}={v:.2f}" for m, v in r["per_method"].items())
    w, o = r["with_refs"], r["no_refs"]
    return (
        f"{cond:5s} {label:16s} n={n:2d} | ALL real={r['real_acc']:.2f} fake={r['fake_acc']:.2f} "
        f"avg={r['avg']:.2f} auc={r['auc']:.3f}±{r['auc_sd']:.3f} | REFS real={w['real_acc']:.2f} "
        f"fake={w['fake_acc']:.2f} avg={w['avg']:.2f} auc={w['auc']:.3f} | NOREF real="
        f"{o['real_acc']:.2f} fake={o['fake_acc']:.2f} auc={o['auc']:.3f} | {pm}"
    )


def write_head(rows, y, groups, args) -> None:
    """Train the packaged head on all of faces-dev, format-blind features."""
    ext = extract_condition(rows, args.data, "blind", args.cache)
    wanted = set(args.head_groups.split(","))
    names = sorted(n for n in ext["rows"][0]["features"] if F.group_of(n) in wanted)
    X = np.array([[er["features"][n] for n in names] for er in ext["rows"]])
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    label = "+".join(sorted(wanted, key=F.GROUPS.index))
    cv = res.get("blind", {}).get("sets", {}).get(label) or res.get("blind", {}).get(
        "sets", {}
    ).get("face+image+ref")
    head = train_head(
        X,
        y,
        names,
        groups=groups,
        training={
            "manifest": "faces-dev/manifest.csv (all rows)",
            "data": "faces-dev: 283 images, 176 real / 107 fake; features of format-blind copies "
            "(every image re-encoded JPEG q90 before extraction)",
            "groups": sorted(wanted),
            "references": "leave-one-out: the other real photos of the labelled identity",
            "face_backend": "dlib",
            "metrics": {"identity_disjoint_5fold_blind": cv},
            "script": "scripts/research_offline.py --write-head",
        },
    )
    head.preprocess = {"reencode_jpeg_quality": 90}
    head.save(HEAD_OUT)
    print(
        f"wrote {HEAD_OUT} (C={head.C}, threshold={head.threshold:.3f}, "
        f"inner={head.training['inner_cv']})"
    )


if __name__ == "__main__":
    main()
