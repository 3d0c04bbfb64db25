"""``idwatch detector train``: fit a stage-2 head on a manifest and write its JSON file.

Rows are the images of the manifest in the leave-one-out setting of the detection
table (core.evaluation.protocol): the face of interest of each image, with the other
real photos of its labelled identity as references. Images without a face are left
out (the system never scores them). The head (core.forensics.head.train_head) picks
its regularisation, calibration and threshold on an inner grouped CV of the
training data; on top of that an outer K-fold estimate of accuracy on unseen people
and source figures (core.evaluation.grouping) is stored in ``training.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluation.dataset_features import (
    DatasetFeatures,
    FeatureExtractor,
    Progress,
    read_manifest,
)
from core.evaluation.grouping import leakage_groups
from core.evaluation.protocol import detection_metrics
from core.faces.base import FaceBackend
from core.forensics import features as F
from core.forensics.head import Head, train_head
from core.forensics.provenance import dataset_record, provenance

DEFAULT_GROUPS = ("face", "image", "ref")

# names -> (X, y, groups, methods): training rows from outside the manifest.
ExtraRows = Callable[[list[str]], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def select_names(all_names: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Feature names whose group (the prefix before the first '.') is in ``groups``."""
    wanted = set(groups)
    names = sorted(n for n in all_names if F.group_of(n) in wanted)
    if not names:
        raise ValueError(f"no features in groups {sorted(wanted)}")
    return names


def training_matrix(
    ds: DatasetFeatures,
    ex: FeatureExtractor,
    names: Sequence[str],
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(X, y, leakage groups, methods, row indices) over images with a face."""
    rows = ds.loo_features(ex, progress)
    keep = [i for i, r in enumerate(rows) if r is not None]
    X = np.array([[rows[i]["features"][n] for n in names] for i in keep], np.float64)
    y = np.array([ds.rows[i].label == "fake" for i in keep], int)
    groups = leakage_groups(ds.rows)[keep]
    methods = np.array([ds.rows[i].method for i in keep])
    return X, y, groups, methods, keep


def query_pair_matrix(
    ds: DatasetFeatures,
    ex: FeatureExtractor,
    names: Sequence[str],
    match_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows as the retrieval protocol sees them: each real photo q of each identity X
    as X's only reference, and every other image that stage 1 claims for X. Label 1
    for fakes of X, 0 for real photos (of X, or of look-alikes stage 1 let through);
    fakes of other people are left out (neither label fits). Returns X, y, groups
    (of the claimed image) and methods."""
    groups_all = leakage_groups(ds.rows)
    feats, y, grp, meth = [], [], [], []
    for name, reals in ds.real_by_name.items():
        for q in reals:
            kq, _ = ds.best_face(q, name)
            if kq is None:
                continue
            ref = ds.entry(ex, q, kq)
            emb = ds.embeddings[q][kq]
            for i, row in enumerate(ds.rows):
                if i == q or not len(ds.embeddings[i]):
                    continue
                if row.label == "fake" and name not in row.identities:
                    continue
                sims = ds.embeddings[i] @ emb
                k = int(np.argmax(sims))
                if sims[k] < match_threshold:
                    continue
                f = ex.features(ds.entry(ex, i, k), [ref])
                feats.append([f[n] for n in names])
                y.append(int(row.label == "fake"))
                grp.append(groups_all[i])
                meth.append(row.method)
    ds.save()
    width = len(names)
    return (
        np.array(feats, np.float64).reshape(-1, width),
        np.array(y, int),
        np.array(grp),
        np.array(meth),
    )


def grouped_cv(
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    groups: np.ndarray,
    methods: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    target: float = 0.9,
    report_rows: np.ndarray | None = None,
    trainable: np.ndarray | None = None,
) -> dict[str, Any]:
    """Grouped K-fold estimate: each fold's head is trained (with its own inner CV for
    C, calibration and threshold) without the test fold's people and source figures
    (``groups``: core.evaluation.grouping.leakage_groups), on its ``trainable`` rows
    (a mask; default every row). Metrics are over ``report_rows`` (default every row)."""
    from sklearn.model_selection import StratifiedGroupKFold

    score = np.zeros(len(y))
    pred = np.zeros(len(y), bool)
    ok = np.ones(len(y), bool) if trainable is None else np.asarray(trainable, bool)
    for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(X, y, groups):
        tr = tr[ok[tr]]
        head = train_head(
            X[tr], y[tr], list(names), groups=groups[tr], seed=seed, target_real_accuracy=target
        )
        score[te] = head.predict_proba(X[te])
        pred[te] = head.predict(X[te])
    m = np.ones(len(y), bool) if report_rows is None else np.asarray(report_rows, bool)
    out = detection_metrics(y[m], score[m], pred[m], methods[m])
    out["rows"] = "leave-one-out rows" if report_rows is not None else "all rows"
    out["folds"] = folds
    out["seed"] = seed
    return out


def train_detector(
    manifest: str | Path,
    out: str | Path,
    backend: FaceBackend,
    extractor: FeatureExtractor,
    *,
    groups: Sequence[str] = DEFAULT_GROUPS,
    target_real_accuracy: float = 0.9,
    cv_folds: int = 5,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    query_pairs: bool = False,
    match_threshold: float | None = None,
    query_pair_ratio: float | None = None,
    extra_rows: ExtraRows | None = None,
    sbi: int = 0,
    sbi_only: bool = False,
    command: str | None = None,
) -> Head:
    """Fit and save a head for ``extractor`` on ``manifest``; returns it.

    ``query_pairs`` adds the rows of query_pair_matrix (single reference, stage-1
    claims of look-alikes) to the leave-one-out rows, so the head is trained on what
    the ranking of ``idwatch eval`` (and the system, early after registration) sees;
    ``query_pair_ratio`` caps them at that multiple of the leave-one-out rows (a seeded
    random subset), None keeps all. ``extra_rows(names)`` returns more training rows
    (X, y, groups, methods), e.g. reviewed alerts (core.review.feedback); like the
    query pairs they are trained on but not in the reported CV metrics."""
    rows = read_manifest(manifest)
    ds = DatasetFeatures(rows, backend, cache_dir)
    ds.detect_all(progress)
    names = select_names(extractor.feature_names(), groups)
    X, y, grp, methods, keep = training_matrix(ds, extractor, names, progress)
    n_loo = len(y)
    n_sbi = 0
    if sbi > 0 or sbi_only:
        from core.evaluation.self_blended import SBI_METHOD, sbi_features

        feats = sbi_features(ds, extractor, max(sbi, 1), progress=progress)
        n_sbi = len(feats)
        all_groups = leakage_groups(ds.rows)
        if n_sbi:
            X = np.vstack([X, [[f[n] for n in names] for _, f, _ in feats]])
            y = np.concatenate([y, np.ones(n_sbi, int)])
            grp = np.concatenate([grp, all_groups[[i for i, _, _ in feats]]])
            methods = np.concatenate([methods, [SBI_METHOD] * n_sbi])
    if query_pairs:
        thr = backend.match_threshold if match_threshold is None else match_threshold
        Xp, yp, gp, mp = query_pair_matrix(ds, extractor, names, thr)
        cap = None if query_pair_ratio is None else int(round(query_pair_ratio * n_loo))
        if cap is not None and cap < len(yp):
            pick = np.sort(np.random.default_rng(seed).choice(len(yp), cap, replace=False))
            Xp, yp, gp, mp = Xp[pick], yp[pick], gp[pick], mp[pick]
        X, y = np.vstack([X, Xp]), np.concatenate([y, yp])
        grp, methods = np.concatenate([grp, gp]), np.concatenate([methods, mp])
    n_extra = 0
    if extra_rows is not None:
        Xe, ye, ge, me = extra_rows(names)
        n_extra = len(ye)
        if n_extra:
            X, y = np.vstack([X, Xe]), np.concatenate([y, ye])
            grp, methods = np.concatenate([grp, ge]), np.concatenate([methods, me])
    # sbi_only: no fake but the self-blended ones is trained on (the manifest's are
    # scored in the CV estimate).
    trainable = (y == 0) | (methods == "sbi") if sbi_only else np.ones(len(y), bool)
    if len(set(y[trainable].tolist())) < 2:
        raise ValueError("training needs real and fake images with a detected face")
    cv = (
        grouped_cv(
            X,
            y,
            names,
            grp,
            methods,
            cv_folds,
            seed,
            target_real_accuracy,
            report_rows=np.arange(len(y)) < n_loo,
            trainable=trainable,
        )
        if cv_folds >= 2 and len(set(grp.tolist())) >= cv_folds
        else None
    )
    n_groups = len(set(grp.tolist()))
    layout: dict[str, int] = {}
    for n in names:
        layout[F.group_of(n)] = layout.get(F.group_of(n), 0) + 1
    head = train_head(
        X[trainable],
        y[trainable],
        names,
        groups=grp[trainable],
        target_real_accuracy=target_real_accuracy,
        seed=seed,
        training={
            "manifest": str(Path(manifest).resolve()),
            "n": int(trainable.sum()),
            "n_leave_one_out_rows": int(n_loo),
            "n_query_pair_rows": int(len(y) - n_loo - n_extra - n_sbi),
            "n_extra_rows": int(n_extra),
            "n_self_blended_rows": int(n_sbi),
            "fakes": "self-blended copies of the real images only (core.forensics.sbi)"
            if sbi_only
            else "the manifest's fakes"
            + (" + self-blended copies of its real images" if n_sbi else ""),
            "n_fake": int(y[trainable].sum()),
            "n_without_face": int(len(rows) - len(keep)),
            "n_leakage_groups": n_groups,
            "groups": list(groups),
            "references": "leave-one-out: the other real photos of the labelled identity"
            + (
                "; plus query pairs: one real photo as the only reference, every image "
                "stage 1 claims for it"
                if query_pairs
                else ""
            ),
            "face_backend": backend.name,
            "target": f"threshold at real accuracy {target_real_accuracy:.2f} on inner "
            "grouped (identity + source figure) out-of-fold scores",
            "metrics": {f"identity_figure_grouped_{cv_folds}fold": cv},
            "feature_seconds_per_image": ds.timing_per_image(),
            "provenance": provenance(
                [dataset_record(manifest, rows)],
                command,
                {"self_blended": n_sbi} if n_sbi else None,
            ),
        },
    )
    head.detector = extractor.name
    head.preprocess = (
        extractor.preprocess()
        if hasattr(extractor, "preprocess")
        else (
            {"reencode_jpeg_quality": int(extractor.reencode_quality)}
            if extractor.reencode_quality
            else {}
        )
    )
    head.backbones = {**extractor.backbones(), "face_backend": backend.name}
    head.feature_layout = layout
    head.save(out)
    return head
