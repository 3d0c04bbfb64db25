"""Ablation of the stage-2 evidence sources on the honest protocol (issue 9, part 2).

Every configuration is one fixed feature set (no group selection: the selection is
what the CLI's default run measures) with or without self-blended training rows, run
through core.evaluation.honest exactly like ``idwatch eval --cv grouped``: folds
grouped by identity and source figure, C / calibration / threshold chosen by each
fold's own inner grouped CV, normalised pixels, ``--seeds`` fold draws. Per
configuration it reports the pooled out-of-fold numbers at the threshold chosen for
real accuracy 0.90 and, in a second run, 0.95 (both inside the training folds), and
the leave-one-generator-out fake accuracy per family (threshold at 0.90).

Evidence sources (feature names, core.forensics.features):
- face: statistics of the face crop, inner face vs surroundings;
- image: whole-image statistics;
- id: the upload's inner face, surroundings, whole face and context view compared with
  each other as identities (ICT-style self-consistency, no references needed);
- ref-ict: the same views compared with the references (inner / outer / context);
- ref-multi: statistics over several references (min, mean, the upload relative to
  how alike the references are to each other);
- ref-base: the rest of ref.* (best identity match, face-statistic gaps, geometry);
- sbi: self-blended copies of each training fold's real images added as fakes; "sbi
  only": they are the only fakes trained on.

    .venv/bin/python scripts/evidence_ablation.py ../shared/data/faces-dev/manifest.csv \\
        --cache idwatch-data/eval-cache --json out/ablation.json
Prints a markdown table; writes every number to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.evaluation.honest import (  # noqa: E402
    FitFn,
    FittedModel,
    RowTable,
    cross_validate,
    fixed_fitter,
    leave_one_generator_out,
    select_and_fit,
)

REF_ICT = {
    "ref.sim_inner",
    "ref.sim_outer",
    "ref.sim_io_gap",
    "ref.inner_gap_refs",
    "ref.ctx_sim_max",
    "ref.ctx_sim_mean",
    "ref.ctx_gap",
    "ref.ctx_gap_refs",
}
REF_MULTI = {
    "ref.id_sim_min",
    "ref.id_sim_mean",
    "ref.id_sim_rel",
    "ref.id_gap_refs",
    "ref.id_below_refs",
    "ref.inner_gap_refs",
    "ref.ctx_gap_refs",
    "ref.ctx_sim_mean",
}


def source_of(name: str) -> str:
    group = name.split(".", 1)[0]
    if group != "ref":
        return group
    if name == "ref.available":
        return "ref-gate"
    if name in REF_MULTI:
        return "ref-multi"
    return "ref-ict" if name in REF_ICT else "ref-base"


ALL = ("face", "image", "id", "ref-base", "ref-ict", "ref-multi")
# label -> (evidence sources, sbi mode: "" | "add" | "only")
CONFIGS: dict[str, tuple[tuple[str, ...], str]] = {
    "all (face+image+id+ref)": (ALL, ""),
    "- face": (tuple(s for s in ALL if s != "face"), ""),
    "- image": (tuple(s for s in ALL if s != "image"), ""),
    "- id (ICT self-consistency)": (tuple(s for s in ALL if s != "id"), ""),
    "- ref-ict (inner/outer/context vs refs)": (tuple(s for s in ALL if s != "ref-ict"), ""),
    "- ref-multi (statistics over refs)": (tuple(s for s in ALL if s != "ref-multi"), ""),
    "- all ref": (("face", "image", "id"), ""),
    "image+ref (no face, no id)": (("image", "ref-base", "ref-ict", "ref-multi"), ""),
    "all + sbi": (ALL, "add"),
    "all, sbi only (no real fake)": (ALL, "only"),
    "face+image+id, sbi only": (("face", "image", "id"), "only"),
}


# Evidence sets the nested configuration chooses from, inside each training fold.
NESTED = (
    "all (face+image+id+ref)",
    "- face",
    "- id (ICT self-consistency)",
    "- ref-multi (statistics over refs)",
    "image+ref (no face, no id)",
)


def choosing_fitter(labels: tuple[str, ...], target: float) -> FitFn:
    """Fit one head per evidence set on the fold's training rows and keep the one
    with the best inner grouped-CV AUC (as select_and_fit does for feature groups)."""

    def fit(train: RowTable, seed: int) -> FittedModel:
        best: tuple[float, str, FittedModel] | None = None
        for label in labels:
            sub = restrict(train, CONFIGS[label][0])
            model = select_and_fit(sub, seed, (groups_of(sub),), target)
            auc = next(iter(model.inner_auc.values()))
            if best is None or auc > best[0]:
                best = (auc, label, model)
        assert best is not None
        best[2].feature_groups = best[1]
        return best[2]

    return fit


def restrict(table: RowTable, sources: tuple[str, ...]) -> RowTable:
    keep = [
        c
        for c, n in enumerate(table.names)
        if source_of(n) in sources
        or (source_of(n) == "ref-gate" and any(s.startswith("ref") for s in sources))
    ]
    return replace(table, names=[table.names[c] for c in keep], X=table.X[:, keep])


def groups_of(table: RowTable) -> str:
    return ",".join(sorted({n.split(".", 1)[0] for n in table.names}))


def summary(cv: dict[str, Any]) -> dict[str, Any]:
    pooled = cv["pooled"]
    runs = cv["runs"]
    out = {k: pooled[k]["mean"] for k in ("real_acc", "fake_acc", "avg_acc", "auc")}
    out["sd_avg"] = pooled["avg_acc"]["sd"]
    out["same_identity_auc"] = pooled["same_identity_auc"]["mean"]
    out["same_identity_pooled"] = float(np.nanmean([r["same_identity_auc_pooled"] for r in runs]))
    out["same_identity_n"] = runs[0]["same_identity_n"]
    for stratum in ("with_refs", "no_refs"):
        s = [r["strata"][stratum] for r in runs]
        out[stratum] = {
            k: float(np.nanmean([x[k] for x in s])) for k in ("real_acc", "fake_acc", "auc")
        }
        out[stratum]["n"] = s[0]["n"]
    per = {}
    for r in runs:
        for m, v in r["per_method"].items():
            per.setdefault(m, []).append(v["acc"])
    out["per_method"] = {m: float(np.mean(v)) for m, v in sorted(per.items())}
    return out


def logo_summary(logo: dict[str, Any], table: RowTable) -> dict[str, Any]:
    out = {}
    for fam, v in logo.items():
        if "skipped" in v:
            out[fam] = {"n_fake": v["n_fake"], "skipped": v["skipped"]}
            continue
        rec = {
            "n_fake": v["n_fake"],
            "fake_acc": v["fake_acc"]["mean"],
            "real_acc": v["real_acc"]["mean"],
            "auc": v["auc"]["mean"],
        }
        methods = sorted({str(m) for m in table.methods[(table.families == fam) & (table.y == 1)]})
        if len(methods) > 1:  # a merged family: fake accuracy of each method in it
            acc: dict[str, list[float]] = {m: [] for m in methods}
            for run in v["runs"]:
                rows = np.array(run["scores"]["row"])
                pred = np.array(run["scores"]["pred"], bool)
                for m in methods:
                    sel = (table.methods[rows] == m) & (table.y[rows] == 1)
                    acc[m].append(float(pred[sel].mean()) if sel.any() else float("nan"))
            rec["per_method"] = {m: float(np.nanmean(a)) for m, a in acc.items()}
        out[fam] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache", type=Path, default=ROOT / "idwatch-data" / "eval-cache")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sbi", type=int, default=2, help="self-blended copies per real image")
    ap.add_argument(
        "--configs",
        default="",
        help="';'-separated labels (default: all; 'nested' / 'nested+sbi': the evidence "
        "set chosen per training fold among NESTED, without / with self-blended rows)",
    )
    ap.add_argument("--no-logo", action="store_true")
    ap.add_argument(
        "--identity",
        default="mobilefacenet",
        help="embedder of the id.* / ref.* identity vectors (stage 1 stays MobileFaceNet)",
    )
    ap.add_argument(
        "--merge-family",
        action="append",
        default=[],
        help="NAME=method1,method2: count these methods as one family (LOGO leaves "
        "them out together), e.g. identity-preserving=splice,inpaint",
    )
    args = ap.parse_args()

    from core.evaluation.dataset_features import (
        DatasetFeatures,
        OfflineExtractor,
        read_manifest,
    )
    from core.evaluation.honest import build_table
    from core.evaluation.self_blended import sbi_features, sbi_table, with_sbi
    from core.faces.registry import make_face_backend
    from core.forensics.normalise import Normaliser

    t0 = time.perf_counter()
    backend = make_face_backend("mobilefacenet", None, None)
    backend.load()
    ds = DatasetFeatures(read_manifest(args.manifest), backend, args.cache)
    ds.detect_all()
    ident = backend
    if args.identity != backend.name:
        ident = make_face_backend(args.identity, None, None)
        ident.load()
    ex = OfflineExtractor(ident, normaliser=Normaliser())
    table = build_table(ds, ex, backend.match_threshold)
    for spec in args.merge_family:
        name, methods = spec.split("=", 1)
        sel = np.isin(table.methods, methods.split(",")) & (table.y == 1)
        table.families = np.where(sel, name, table.families)
    sbi_rows = sbi_table(table, sbi_features(ds, ex, args.sbi))
    wanted = [c.strip() for c in args.configs.split(";") if c.strip()] or list(CONFIGS)
    report: dict[str, Any] = {
        "manifest": str(args.manifest),
        "face_backend": backend.name,
        "identity": ident.name,
        "n_images": len(table),
        "n_real": int((table.y == 0).sum()),
        "n_fake": int(table.y.sum()),
        "n_with_face": int(table.has_face.sum()),
        "n_with_refs": int(table.has_ref.sum()),
        "n_self_blended": len(sbi_rows),
        "seeds": args.seeds,
        "folds": args.folds,
        "configs": {},
    }
    for label in wanted:
        nested = label.startswith("nested")
        sources, mode = (ALL, "add" if label == "nested+sbi" else "") if nested else CONFIGS[label]
        sub = restrict(table, sources)
        sbi_sub = restrict(sbi_rows, sources)
        rec: dict[str, Any] = {"sources": list(sources), "sbi": mode, "n_features": len(sub.names)}
        if nested:
            rec["chosen_among"] = list(NESTED)
        for target in (0.9, 0.95):
            fit = (
                choosing_fitter(NESTED, target) if nested else fixed_fitter(groups_of(sub), target)
            )
            if mode:
                fit = with_sbi(fit, sbi_sub, only=mode == "only")
            cv = cross_validate(sub, fit, args.folds, args.seeds)
            rec[f"at_{target:.2f}"] = summary(cv)
            rec[f"chosen_at_{target:.2f}"] = cv["feature_groups_chosen"]
            if target == 0.9 and not args.no_logo:
                rec["logo"] = logo_summary(
                    leave_one_generator_out(sub, fit, args.folds, args.seeds), sub
                )
        report["configs"][label] = rec
        a, b = rec["at_0.90"], rec["at_0.95"]
        print(
            f"{label}: avg {a['avg_acc']:.3f} auc {a['auc']:.3f} sameid "
            f"{a['same_identity_auc']:.3f} | refs@0.95 real {b['with_refs']['real_acc']:.2f} "
            f"fake {b['with_refs']['fake_acc']:.2f} | logo "
            + " ".join(
                f"{f}={v.get('fake_acc', float('nan')):.2f}" for f, v in rec.get("logo", {}).items()
            ),
            file=sys.stderr,
            flush=True,
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    fams = sorted({f for c in report["configs"].values() for f in c.get("logo", {})})
    head = (
        "| evidence | real | fake | avg | AUC | same_identity_auc | refs @0.95: real / fake | "
        + " | ".join(f"LOGO {f}" for f in fams)
        + " |"
    )
    lines = [head, "|" + "---|" * (7 + len(fams))]
    for label, c in report["configs"].items():
        a, b = c["at_0.90"], c["at_0.95"]
        logo = c.get("logo", {})
        cells = [
            label,
            f"{a['real_acc']:.3f}",
            f"{a['fake_acc']:.3f}",
            f"{a['avg_acc']:.3f}",
            f"{a['auc']:.3f}",
            f"{a['same_identity_auc']:.3f}",
            f"{b['with_refs']['real_acc']:.2f} / {b['with_refs']['fake_acc']:.2f}",
            *(f"{logo[f]['fake_acc']:.2f}" if "fake_acc" in logo.get(f, {}) else "-" for f in fams),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
