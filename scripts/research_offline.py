"""Measure the offline (no downloaded weights) forgery detector on faces-dev.

For every image: dlib faces; the face of interest is the one that best matches the
labelled identity's OTHER authentic photos (largest face when there are none);
references = the other real photos of that identity (leave-one-out). Two conditions:
``orig`` (files as they are) and ``blind`` (every image decoded and re-encoded as JPEG
q90 in memory before anything else, which also strips metadata), because on faces-dev
fakes are mostly PNG and reals mostly JPEG.

Evaluation is identity- and figure-disjoint: stratified grouped 5-fold over leakage
groups (core.evaluation.grouping: people and source figures linked); repeated over
seeds. Each training fold picks C, calibration and the threshold (real accuracy
>= 0.9) on its own inner grouped CV; the test fold is only scored.

    .venv/bin/python scripts/research_offline.py [--data DIR] [--seeds 3] [--write-head]

Features are cached under /tmp/offline_feats_<cond>.json; results go to
/tmp/offline_research.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.evaluation.dataset_features import (  # noqa: E402
    DatasetFeatures,
    OfflineExtractor,
    read_manifest,
)
from core.evaluation.grouping import leakage_groups  # noqa: E402
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


def cv_groups(rows: list[dict[str, str]], data: Path = DEFAULT_DATA) -> np.ndarray:
    """Leakage groups: no person and no source figure on both sides of a fold
    (core.evaluation.grouping; `idwatch eval --cv grouped` is the maintained protocol)."""
    return leakage_groups(read_manifest(data / "manifest.csv"))


# --------------------------------------------------------------------------- extraction


def extract_condition(rows, data: Path, cond: str, cache_dir: Path) -> dict:
    """Features of every image in the leave-one-out setting, via the shared
    core.evaluation.dataset_features (per-image work cached under
    ``cache_dir/idwatch-eval-cache``). ``blind``: the detector's features are taken
    from JPEG q90 re-encoded copies, whose metadata is gone. Faces are detected on the
    files as they are (as the system does); images without a face get a pseudo face."""
    cache = cache_dir / f"offline_feats_{cond}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from core.faces.dlib_backend import DlibFaceBackend

    backend = DlibFaceBackend()
    ds = DatasetFeatures(
        read_manifest(data / "manifest.csv"), backend, cache_dir / "idwatch-eval-cache"
    )
    ds.detect_all()
    ex = OfflineExtractor(backend, reencode_quality=90 if cond == "blind" else None)
    loo = ds.loo_features(ex, pseudo_for_missing=True)
    out_rows = []
    for i, er in enumerate(loo):
        assert er is not None
        feats = dict(er["features"])
        if cond == "blind":  # re-encoding strips metadata
            feats.update(F.meta_features({}))
        face = ds.face(i, er["k"])
        img = ds.image(i)
        out_rows.append(
            {
                "features": feats,
                "n_faces": len(ds.faces[i]),
                "pseudo_face": er["k"] is None,
                "n_refs": er["n_refs"],
                "face_px": float(max(face.width, face.height)),
                "image_px": float(img.shape[0] * img.shape[1]),
                "id_sim": ds.best_face(i, er["name"])[1] if er["name"] else float("nan"),
            }
        )
    result = {"rows": out_rows, "timing_s_per_image": ds.timing_per_image()}
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
    groups = cv_groups(rows, args.data)
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
