"""``idwatch eval MANIFEST --cv grouped``: the honest protocol as one report.

Builds the detection-table rows once (cached features), runs the grouped nested
cross-validation of core.evaluation.honest (optionally ``seeds`` times), the
impersonation queries inside every test fold, the leave-one-generator-out table and
the residual compression confound, and returns a report whose first keys are
core.evaluation.protocol.REQUIRED_KEYS (pooled out-of-fold values, mean over seeds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluation.dataset_features import DatasetFeatures, FeatureExtractor, read_manifest
from core.evaluation.grouping import figure_table, method_support
from core.evaluation.honest import (
    DEFAULT_CANDIDATES,
    FittedModel,
    RowTable,
    build_table,
    container_swap_confound,
    cross_validate,
    leave_one_generator_out,
    permutation_null,
    png_confound,
    real_score_png_auc,
    selecting_fitter,
)
from core.evaluation.protocol import (
    HeadScorer,
    retrieval,
    stage1_as_labelled,
    stage1_real_pairs,
)
from core.faces.base import FaceBackend

StageProgress = Callable[[str, int, int], None]

# Feature sets whose "was it a PNG" probe is reported.
CONFOUND_SETS = {
    "face": "face",
    "image": "image",
    "jpeg": "jpeg",
    "ref": "ref",
    "face+image+ref": "face,image,ref",
    "all": "face,image,jpeg,ref",
}
# The bound the dataset test holds the detector's features to (README, Detection quality).
CONFOUND_BOUND = 0.65


def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


def run_cv(
    manifest: str | Path,
    backend: FaceBackend,
    extractor: FeatureExtractor,
    *,
    folds: int = 5,
    seeds: int = 1,
    group_by: str = "leakage",
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    target_real_accuracy: float = 0.9,
    logo: bool = False,
    confound: bool = True,
    baseline_extractor: FeatureExtractor | None = None,
    queries: bool = True,
    match_threshold: float | None = None,
    cache_dir: Path | None = None,
    progress: StageProgress | None = None,
    dataset: DatasetFeatures | None = None,
    sbi: int = 0,
    sbi_only: bool = False,
) -> tuple[dict[str, Any], RowTable]:
    """The honest report and the row table it was computed on (for plots).

    ``sbi``: self-blended copies of each real image added to every fold's training
    rows as fakes (core.evaluation.self_blended; only copies of the fold's own real
    images); ``sbi_only``: they are the only fakes a fold's head sees."""
    t0 = time.perf_counter()
    thr = backend.match_threshold if match_threshold is None else float(match_threshold)
    ds = dataset
    if ds is None:
        ds = DatasetFeatures(read_manifest(manifest), backend, cache_dir)
        ds.detect_all((lambda d, n, _w: progress("detect faces", d, n)) if progress else None)
    table = build_table(
        ds, extractor, thr, (lambda d, n, _w: progress("features", d, n)) if progress else None
    )
    fit = selecting_fitter(candidates, target_real_accuracy)
    n_sbi = 0
    if sbi > 0 or sbi_only:
        from core.evaluation.self_blended import sbi_features, sbi_table, with_sbi

        feats = sbi_features(
            ds,
            extractor,
            max(sbi, 1),
            progress=(lambda d, n, _w: progress("self-blended", d, n)) if progress else None,
        )
        n_sbi = len(feats)
        fit = with_sbi(fit, sbi_table(table, feats), only=sbi_only)

    def fold_queries(model: FittedModel, test_idx: np.ndarray) -> list[dict[str, Any]]:
        return retrieval(ds, HeadScorer(extractor, model.head), thr, idx=test_idx)[0]

    cv = cross_validate(
        table,
        fit,
        folds,
        seeds,
        group_by=group_by,
        retrieval=fold_queries if queries else None,
        progress=(lambda d, n: progress("cross-validation", d, n)) if progress else None,
    )
    s1 = stage1_real_pairs(ds, thr)
    # Stage 1 on (query of X, fake of X) pairs over the whole set (no training involved).
    fake_pairs = fake_hits = 0
    for name, reals in ds.real_by_name.items():
        fakes = [i for i, r in enumerate(ds.rows) if r.label == "fake" and name in r.identities]
        for q in reals:
            kq, _ = ds.best_face(q, name)
            for i in fakes:
                fake_pairs += 1
                if kq is not None and len(ds.embeddings[i]):
                    fake_hits += float((ds.embeddings[i] @ ds.embeddings[q][kq]).max()) >= thr

    run0 = cv["runs"][0]
    per_method: dict[str, dict[str, Any]] = {}
    for r in cv["runs"]:
        for m, v in r["per_method"].items():
            per_method.setdefault(m, {"n": v["n"], "acc": []})["acc"].append(v["acc"])
    support = method_support(table.rows, table.groups)
    per_method = {
        m: {
            "n": v["n"],
            "acc": float(np.mean(v["acc"])),
            "figures": support.get(m, {}).get("figures", 0),
            "groups": support.get(m, {}).get("groups", 0),
        }
        for m, v in sorted(per_method.items())
    }
    pooled = cv["pooled"]
    pre = extractor.preprocess() if hasattr(extractor, "preprocess") else {}
    report: dict[str, Any] = {
        "map": pooled["map"]["mean"] if queries else float("nan"),
        "real_acc": pooled["real_acc"]["mean"],
        "fake_acc": pooled["fake_acc"]["mean"],
        "avg_acc": pooled["avg_acc"]["mean"],
        "auc": pooled["auc"]["mean"],
        "same_identity_auc": pooled["same_identity_auc"]["mean"],
        "stage1_fake_match_rate": _rate(int(fake_hits), fake_pairs),
        "stage1_tar": _rate(s1["gen_hit"], s1["genuine"]),
        "stage1_far": _rate(s1["imp_hit"], s1["impostor"]),
        "n_images": len(table),
        "n_no_face": int((~table.has_face).sum()),
        "n_queries": int(run0.get("n_queries", 0)),
        "per_method": per_method,
        "detector": f"{extractor.name} head trained per fold (nested selection)",
        "face_backend": backend.name,
        "seconds": 0.0,
        # ---- more than the required keys
        "protocol": {
            "cv": "grouped",
            "group_by": group_by,
            "groups": "connected components of image-identity-source figure links"
            if group_by == "leakage"
            else "identities (people sharing a photo merged; anonymous images by figure)",
            "folds": folds,
            "seeds": seeds,
            "candidates": list(candidates),
            "selection": "feature groups by inner grouped-CV AUC; C, Platt calibration "
            "and threshold by train_head's inner grouped CV; all on training folds only",
            "target_real_accuracy": target_real_accuracy,
            "preprocess": pre,
            "stage1_threshold": f"{thr} (fixed, not fitted)",
            "references": "leave-one-out: the other real photos of the labelled identity",
            "self_blended": {
                "per_image": max(sbi, 1) if n_sbi else 0,
                "rows": n_sbi,
                "only": bool(sbi_only),
                "note": "copies of each training fold's own real images, labelled fake"
                + ("; the fold's real fakes are not trained on" if sbi_only else ""),
            },
        },
        "same_identity": {
            "auc_mean_over_identities": pooled["same_identity_auc"],
            "auc_pooled": {
                "mean": float(np.mean([r["same_identity_auc_pooled"] for r in cv["runs"]]))
            },
            **run0["same_identity_n"],
        },
        **stage1_as_labelled(s1, ds.rows),
        "pooled": pooled,
        "per_fold": cv["per_fold"],
        "strata": _mean_strata([r["strata"] for r in cv["runs"]]),
        "feature_groups_chosen": cv["feature_groups_chosen"],
        "leaks": cv["leaks"],
        "folds": [
            {k: v for k, v in fr.items() if k != "inner_auc"} | {"inner_auc": fr["inner_auc"]}
            for fr in cv["fold_reports"]
        ],
        "grouping": figure_table(table.rows, table.groups),
        "match_threshold": thr,
        "n_real": int((table.y == 0).sum()),
        "n_fake": int(table.y.sum()),
        "ap_per_identity": run0.get("ap_per_identity", {}),
        "scores": _score_rows(table, run0["scores"]),
    }
    report["real_png_score_auc"] = real_score_png_auc(
        table, np.array(run0["scores"]["score"]), run0["scores"]["row"]
    )
    if logo:
        report["logo"] = leave_one_generator_out(table, fit, folds, seeds, progress=progress)
    if confound:
        report["confound"] = confound_report(
            ds, extractor, table, thr, baseline_extractor, progress=progress
        )
    ds.save()
    report["feature_seconds_per_image"] = ds.timing_per_image()
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report, table


def _mean_strata(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per stratum and measure, the mean over seeds (n is the same in every seed)."""
    return {
        name: {k: float(np.nanmean([r[name][k] for r in runs])) for k in runs[0][name]}
        for name in runs[0]
    }


def _score_rows(table: RowTable, scores: dict[str, list]) -> dict[str, list]:
    rows = scores["row"]
    return {
        "row": list(rows),
        "file": [table.rows[i].path.name for i in rows],
        "label": [int(table.y[i]) for i in rows],
        "method": [str(table.methods[i]) for i in rows],
        "family": [str(table.families[i]) for i in rows],
        "identity": [table.claim_name[i] or "" for i in rows],
        "group": [str(table.groups[i]) for i in rows],
        "has_ref": [int(table.has_ref[i]) for i in rows],
        "has_face": [int(table.has_face[i]) for i in rows],
        "is_png": [int(table.is_png[i]) for i in rows],
        "origin": [str(table.origin[i]) for i in rows],
        "score": scores["score"],
        "pred": scores["pred"],
        "threshold": scores["threshold"],
    }


def confound_report(
    ds: DatasetFeatures,
    extractor: FeatureExtractor,
    table: RowTable,
    threshold: float,
    baseline_extractor: FeatureExtractor | None = None,
    null_permutations: int = 30,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """The residual compression confound (README, Detection quality), as out-of-fold
    AUCs of probes trained on the detector's features of REAL images:

    - ``natural[condition][contrast]``: ``png_vs_jpeg_origin`` (real images whose source
      file was a PNG vs a JPEG: "was the original file a PNG"), ``video_vs_jpeg_origin``
      (frames of videos vs JPEG photos) and ``png_vs_jpeg_file`` (the container of the
      evaluated file, which mixes both), for this extractor ("this") and, when given,
      ``baseline_extractor`` ("baseline", e.g. format-blind JPEG q90);
    - ``null``: the PNG-origin probe with its labels shuffled (what chance reaches);
    - ``recompressed``: each real PNG file against the same image compressed as JPEG
      (the compression history alone, same content on both sides).
    """
    contrasts = ("png_vs_jpeg_origin", "video_vs_jpeg_origin", "png_vs_jpeg_file")
    out: dict[str, Any] = {"bound": CONFOUND_BOUND, "natural": {}}
    out["natural"]["this"] = {c: png_confound(table, CONFOUND_SETS, c) for c in contrasts}
    out["null"] = permutation_null(table, CONFOUND_SETS["all"], n=null_permutations)
    if baseline_extractor is not None:
        base = build_table(
            ds,
            baseline_extractor,
            threshold,
            (lambda d, n, _w: progress("baseline features", d, n)) if progress else None,
        )
        out["natural"]["baseline"] = {c: png_confound(base, CONFOUND_SETS, c) for c in contrasts}
        out["recompressed_baseline"] = container_swap_confound(
            ds,
            baseline_extractor,
            base,
            CONFOUND_SETS,
            progress=(lambda d, n, _w: progress("recompressed (base)", d, n)) if progress else None,
        )
        out["baseline_preprocess"] = baseline_extractor.preprocess()
    out["recompressed"] = container_swap_confound(
        ds,
        extractor,
        table,
        CONFOUND_SETS,
        progress=(lambda d, n, _w: progress("recompressed", d, n)) if progress else None,
    )
    out["preprocess"] = extractor.preprocess()
    return out
