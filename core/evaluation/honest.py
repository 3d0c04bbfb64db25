"""The honest protocol of ``idwatch eval --cv``: grouped, nested cross-validation.

A head is trained and tested per fold; the numbers are those of images whose people
and source figures the fold's head never saw (core.evaluation.grouping), with every
choice made inside the training folds:

- folds are stratified K-fold over *leakage groups* (connected components of the
  image / identity / source-figure graph); ``group_by="identity"`` reproduces the older
  identity-only folds for comparison (and reports the figures they leak);
- ``select_and_fit`` is all a fold's training rows ever reach: it picks the feature
  groups among candidates by the inner grouped-CV AUC of each, then fits the head
  (core.forensics.head.train_head), whose C, Platt calibration and decision threshold
  come from its own inner grouped CV of the same training rows. The stage-1 threshold
  is not fitted (the face backend's fixed match threshold);
- ``leave_one_generator_out``: for each generator family, a fold's head is trained
  without any fake of that family and tested on the family's fakes and the real
  images of the held-out fold.

Rows are the detection table's (core.evaluation.protocol): every image once, its face
of interest, the other real photos of its labelled identity as references. Images
without a face are scored 0 and predicted real, as in ``idwatch eval``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.demo.dataset import ManifestRow
from core.evaluation.dataset_features import (
    DatasetFeatures,
    FeatureExtractor,
    Progress,
    identity_groups,
)
from core.evaluation.grouping import (
    FAMILIES,
    check_disjoint,
    family_of,
    fold_info,
    grouped_folds,
    leakage_groups,
    method_support,
    origin_format,
)
from core.evaluation.protocol import (
    detection_metrics,
    mean_ap,
    roc_auc,
    same_identity_auc,
    stage1_claims,
    strata_metrics,
)
from core.forensics import features as F
from core.forensics.head import Head, train_head

# Feature-group sets the nested selection chooses from.
DEFAULT_CANDIDATES = (
    "face,image,ref",
    "image,ref",
    "face,ref",
    "ref",
    "face,image",
    "face,image,jpeg,ref",
)

HEADLINE = ("real_acc", "fake_acc", "avg_acc", "auc", "same_identity_auc", "map")


# --------------------------------------------------------------------------- rows


@dataclass
class RowTable:
    """Per image of a manifest: detection-table features and what the protocol needs."""

    rows: list[ManifestRow]
    names: list[str]
    X: np.ndarray  # (n, len(names)); zeros where there is no face
    y: np.ndarray  # 1 = fake
    has_face: np.ndarray
    has_ref: np.ndarray
    groups: np.ndarray  # leakage groups (identity + figure)
    id_groups: np.ndarray  # identity-only groups (the older protocol)
    methods: np.ndarray
    families: np.ndarray
    claim_name: list[str | None]  # identity the image is scored for
    claimed: np.ndarray  # stage 1 claims it for that identity
    is_png: np.ndarray  # the evaluated file is a PNG
    origin: np.ndarray = field(default_factory=lambda: np.zeros(0, str))  # source format
    row_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def __post_init__(self) -> None:
        if len(self.row_ids) != len(self.y):
            self.row_ids = np.arange(len(self.y))
        if len(self.origin) != len(self.y):
            self.origin = np.array([origin_format(r) for r in self.rows])

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: Sequence[int] | np.ndarray) -> RowTable:
        """The rows at positions ``idx`` (of this table); ``row_ids`` keep the
        manifest positions, so a fitter can be checked for what it was shown."""
        idx = np.asarray(idx, int)
        return RowTable(
            rows=[self.rows[i] for i in idx],
            names=self.names,
            X=self.X[idx],
            y=self.y[idx],
            has_face=self.has_face[idx],
            has_ref=self.has_ref[idx],
            groups=self.groups[idx],
            id_groups=self.id_groups[idx],
            methods=self.methods[idx],
            families=self.families[idx],
            claim_name=[self.claim_name[i] for i in idx],
            claimed=self.claimed[idx],
            is_png=self.is_png[idx],
            origin=self.origin[idx],
            row_ids=self.row_ids[idx],
        )

    def columns(self, groups: str) -> list[int]:
        wanted = set(groups.split(","))
        cols = [c for c, n in enumerate(self.names) if F.group_of(n) in wanted]
        if not cols:
            raise ValueError(f"no features in groups {groups!r}")
        return cols


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def build_table(
    ds: DatasetFeatures,
    ex: FeatureExtractor,
    match_threshold: float,
    progress: Progress | None = None,
    idx: Sequence[int] | None = None,
) -> RowTable:
    """Features of every image (of ``idx``: the others count as without a face) in the
    detection-table setting (cached per face)."""
    feats = ds.loo_features(ex, progress, idx=idx)
    names = sorted(ex.feature_names())
    n = len(ds.rows)
    X = np.zeros((n, len(names)))
    has_face = np.zeros(n, bool)
    has_ref = np.zeros(n, bool)
    for i, f in enumerate(feats):
        if f is None:
            continue
        X[i] = [f["features"][k] for k in names]
        has_face[i] = True
        has_ref[i] = f["n_refs"] > 0
    claim_name, claimed = stage1_claims(ds, match_threshold)
    rows = ds.rows
    return RowTable(
        rows=list(rows),
        names=names,
        X=X,
        y=np.array([r.label == "fake" for r in rows], int),
        has_face=has_face,
        has_ref=has_ref,
        groups=leakage_groups(rows),
        id_groups=identity_groups(rows),
        methods=np.array([r.method for r in rows]),
        families=np.array([family_of(r.method, r.label) for r in rows]),
        claim_name=claim_name,
        claimed=claimed,
        is_png=np.array([_is_png(r.path) for r in rows]),
    )


# --------------------------------------------------------------------------- fitting


@dataclass
class FittedModel:
    """A fold's head and what was chosen for it (on its training rows only)."""

    feature_groups: str
    head: Head
    inner_auc: dict[str, float]  # candidate feature groups -> inner grouped-CV AUC
    n_train: int

    def scores(self, table: RowTable) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated score, decision) per row; rows without a face: 0, real."""
        score = np.zeros(len(table))
        pred = np.zeros(len(table), bool)
        if table.has_face.any():
            cols = [table.names.index(n) for n in self.head.feature_names]
            X = table.X[table.has_face][:, cols]
            score[table.has_face] = np.clip(self.head.predict_proba(X), 0.0, 1.0)
            pred[table.has_face] = self.head.predict(X)
        return score, pred


FitFn = Callable[[RowTable, int], FittedModel]


def select_and_fit(
    train: RowTable,
    seed: int = 0,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    target_real_accuracy: float = 0.9,
    inner_folds: int = 5,
) -> FittedModel:
    """Choose the feature groups and fit the head, seeing ``train`` only.

    Every candidate set gets a head from train_head (C, calibration and threshold from
    an inner CV grouped by the training rows' leakage groups); the candidate whose
    inner out-of-fold AUC is highest is kept (ties: fewer features)."""
    rows = train.has_face
    X, y, g = train.X[rows], train.y[rows], train.groups[rows]
    if len(np.unique(y)) < 2:
        raise ValueError("a training fold needs real and fake images with a face")
    best: tuple[float, int, str, Head] | None = None
    inner: dict[str, float] = {}
    for cand in candidates:
        cols = train.columns(cand)
        head = train_head(
            X[:, cols],
            y,
            [train.names[c] for c in cols],
            groups=g,
            target_real_accuracy=target_real_accuracy,
            inner_folds=inner_folds,
            seed=seed,
        )
        auc = float(np.nan_to_num(head.training["inner_cv"]["auc"]))
        inner[cand] = auc
        if best is None or (auc, -len(cols)) > (best[0], -best[1]):
            best = (auc, len(cols), cand, head)
    assert best is not None
    return FittedModel(best[2], best[3], inner, int(len(y)))


def fixed_fitter(groups: str, target_real_accuracy: float = 0.9) -> FitFn:
    """A fitter with the feature groups fixed in advance (no group selection)."""

    def fit(train: RowTable, seed: int) -> FittedModel:
        return select_and_fit(train, seed, (groups,), target_real_accuracy)

    return fit


def selecting_fitter(
    candidates: Sequence[str] = DEFAULT_CANDIDATES, target_real_accuracy: float = 0.9
) -> FitFn:
    def fit(train: RowTable, seed: int) -> FittedModel:
        return select_and_fit(train, seed, candidates, target_real_accuracy)

    return fit


# --------------------------------------------------------------------------- metrics


def table_metrics(table: RowTable, score: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Detection metrics, strata and same-identity AUC of scored rows."""
    m = detection_metrics(table.y, score, pred, table.methods)
    same = same_identity_auc(table.claim_name, table.y, score, table.claimed)
    m["same_identity_auc"] = same["mean"]
    m["same_identity_auc_pooled"] = same["pooled"]
    m["same_identity_n"] = {k: same[k] for k in ("n_identities", "n_real", "n_fake")}
    m["strata"] = strata_metrics(
        table.y, score, pred, table.methods, table.has_ref, ~table.has_face
    )
    m["n"] = len(table)
    return m


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std()), "n": int(len(v))}


# --------------------------------------------------------------------------- CV


RetrievalFn = Callable[[FittedModel, np.ndarray], list[dict[str, Any]]]


def cross_validate(
    table: RowTable,
    fit: FitFn,
    folds: int = 5,
    seeds: int = 1,
    group_by: str = "leakage",
    exclude_from_training: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
    retrieval: RetrievalFn | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Grouped K-fold, ``seeds`` times. Each fold's model is fitted by ``fit`` on the
    training folds' rows with a face (minus ``exclude_from_training``) and scores the
    test fold's rows (only ``test_rows`` among them, when given). Returns pooled
    out-of-fold metrics per seed, their mean and sd, and per-fold metrics."""
    groups = table.groups if group_by == "leakage" else table.id_groups
    n = len(table)
    excl = np.zeros(n, bool) if exclude_from_training is None else exclude_from_training
    keep = np.ones(n, bool) if test_rows is None else test_rows
    runs, fold_reports, oof = [], [], []
    total = folds * seeds
    done = 0
    for seed in range(seeds):
        score = np.zeros(n)
        pred = np.zeros(n, bool)
        tested = np.zeros(n, bool)
        threshold = np.full(n, np.nan)
        queries: list[dict[str, Any]] = []
        for f, (tr, te) in enumerate(grouped_folds(table.y, groups, folds, seed)):
            train_idx = tr[table.has_face[tr] & ~excl[tr]]
            test_idx = te[keep[te]]
            leaks = check_disjoint(table.rows, train_idx, test_idx)
            model = fit(table.subset(train_idx), seed)
            sub = table.subset(test_idx)
            s, p = model.scores(sub)
            score[test_idx], pred[test_idx], tested[test_idx] = s, p, True
            threshold[test_idx] = model.head.threshold
            fold = {
                "seed": seed,
                "fold": f,
                "train": fold_info(table.rows, groups, train_idx).as_dict(),
                "test": fold_info(table.rows, groups, test_idx).as_dict(),
                "test_rows": test_idx.tolist(),
                "leaks": len(leaks),
                "leak_examples": leaks[:5],
                "feature_groups": model.feature_groups,
                "inner_auc": model.inner_auc,
                "C": model.head.C,
                "threshold": model.head.threshold,
            }
            fold.update({k: v for k, v in table_metrics(sub, s, p).items() if k in HEADLINE})
            if retrieval is not None:
                q = retrieval(model, test_idx)
                queries.extend(q)
                fold["map"] = mean_ap([(x["identity"], x["ap"]) for x in q])[0]
                fold["n_queries"] = len(q)
            fold_reports.append(fold)
            oof.append({"seed": seed, "fold": f, "test": test_idx.tolist()})
            done += 1
            if progress:
                progress(done, total)
        sub = table.subset(np.flatnonzero(tested))
        m = table_metrics(sub, score[tested], pred[tested])
        if retrieval is not None:
            m["map"], m["ap_per_identity"] = mean_ap([(x["identity"], x["ap"]) for x in queries])
            m["n_queries"] = len(queries)
        m["scores"] = {
            "row": np.flatnonzero(tested).tolist(),
            "score": score[tested].round(6).tolist(),
            "pred": pred[tested].astype(int).tolist(),
            "threshold": threshold[tested].round(6).tolist(),
        }
        runs.append(m)
    pooled = {k: _mean_sd([r.get(k, float("nan")) for r in runs]) for k in HEADLINE}
    per_fold = {k: _mean_sd([fr.get(k, float("nan")) for fr in fold_reports]) for k in HEADLINE}
    chosen: dict[str, int] = {}
    for fr in fold_reports:
        chosen[fr["feature_groups"]] = chosen.get(fr["feature_groups"], 0) + 1
    return {
        "group_by": group_by,
        "folds": folds,
        "seeds": seeds,
        "pooled": pooled,  # out-of-fold over the whole set, mean/sd over seeds
        "per_fold": per_fold,  # mean/sd over every fold of every seed
        "runs": runs,
        "fold_reports": fold_reports,
        "feature_groups_chosen": chosen,
        "leaks": int(sum(fr["leaks"] for fr in fold_reports)),
    }


def leave_one_generator_out(
    table: RowTable,
    fit: FitFn,
    folds: int = 5,
    seeds: int = 1,
    families: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """For every generator family: grouped K-fold where no fold's head ever sees a
    fake of the family; each test fold scores the family's fakes and its real
    images. Real accuracy is at each fold head's own threshold."""
    present = sorted(set(table.families[table.y == 1].tolist()))
    fams = [f for f in (families or list(FAMILIES) + present) if f in present]
    fams = list(dict.fromkeys(fams))
    out: dict[str, Any] = {}
    for fam in fams:
        is_fam = (table.families == fam) & (table.y == 1)
        if not ((table.y == 1) & ~is_fam & table.has_face).any():
            out[fam] = {"n_fake": int(is_fam.sum()), "skipped": "no other generator to train on"}
            continue
        cv = cross_validate(
            table,
            fit,
            folds,
            seeds,
            exclude_from_training=is_fam,
            test_rows=is_fam | (table.y == 0),
            progress=(lambda d, t, fam=fam: progress(f"logo {fam}", d, t)) if progress else None,
        )
        support = method_support(table.rows, table.groups, np.flatnonzero(is_fam))
        out[fam] = {
            "n_fake": int(is_fam.sum()),
            "n_fake_with_face": int((is_fam & table.has_face).sum()),
            "figures": len({table.rows[i].source for i in np.flatnonzero(is_fam)}),
            "methods": support,
            "n_groups": len(set(table.groups[is_fam].tolist())),
            "real_acc": cv["pooled"]["real_acc"],
            "fake_acc": cv["pooled"]["fake_acc"],
            "avg_acc": cv["pooled"]["avg_acc"],
            "auc": cv["pooled"]["auc"],
            "feature_groups_chosen": cv["feature_groups_chosen"],
            "runs": [
                {k: r[k] for k in ("real_acc", "fake_acc", "avg_acc", "auc", "scores")}
                for r in cv["runs"]
            ],
        }
    return out


# --------------------------------------------------------------------------- confound


# The real images a "was it a PNG" probe compares: (positive, negative) origin formats.
ORIGIN_CONTRASTS = {
    "png_vs_jpeg_origin": ("png", "jpg"),  # the compression-history question
    "video_vs_jpeg_origin": ("mp4", "jpg"),  # frames of videos (other codec history)
}


def _contrast_rows(table: RowTable, contrast: str) -> tuple[np.ndarray, np.ndarray]:
    """Real images with a face in a contrast, and the target (1 = positive)."""
    real = table.has_face & (table.y == 0)
    if contrast == "png_vs_jpeg_file":  # the container of the evaluated file itself
        rows = np.flatnonzero(real)
        return rows, table.is_png[rows].astype(int)
    pos, neg = ORIGIN_CONTRASTS[contrast]
    rows = np.flatnonzero(real & np.isin(table.origin, [pos, neg]))
    return rows, (table.origin[rows] == pos).astype(int)


def png_confound(
    table: RowTable,
    feature_sets: dict[str, str],
    contrast: str = "png_vs_jpeg_origin",
    folds: int = 5,
    seeds: int = 3,
) -> dict[str, Any]:
    """How well the detector's features tell REAL images of one origin format from
    another (default: PNG-origin vs JPEG-origin, the format of the source file the
    image came from, core.evaluation.grouping.origin_format): out-of-fold ROC AUC of a
    head trained to predict it (same head and nested C as the detector), grouped by
    leakage groups; mean over seeds."""
    rows, target = _contrast_rows(table, contrast)
    sub = table.subset(rows)
    out: dict[str, Any] = {
        "n_positive": int(target.sum()),
        "n_negative": int((target == 0).sum()),
    }
    if target.sum() < 2 or (target == 0).sum() < 2:
        return out
    for label, groups in feature_sets.items():
        cols = sub.columns(groups)
        out[label] = _probe_auc(
            sub.X[:, cols], target, sub.groups, folds, seeds, [sub.names[c] for c in cols]
        )
    return out


_PROBE_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # the detector head's C grid


def _probe_auc(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seeds: int, names: list[str]
) -> float:
    """Out-of-fold AUC of an L2 logistic probe (standardised features, balanced
    classes, C chosen by an inner grouped CV of each training fold from the detector
    head's grid), grouped outer folds, mean over ``seeds`` fold draws. ``names`` are
    kept for symmetry with the head; the probe has no gates."""
    del names
    X = np.nan_to_num(np.asarray(X, float))
    aucs = []
    with warnings.catch_warnings():
        # Tiny folds (tests, small contrasts) hold few of one class; that is expected.
        warnings.filterwarnings("ignore", message="The least populated class")
        for seed in range(seeds):
            s = np.full(len(y), np.nan)
            for tr, te in grouped_folds(y, groups, folds, seed):
                if min(np.bincount(y[tr], minlength=2)) < 2:
                    continue
                s[te] = _fit_probe(X[tr], y[tr], groups[tr], seed).decision_function(X[te])
            ok = np.isfinite(s)
            aucs.append(roc_auc(y[ok], s[ok]))
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def _fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(c: float):
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, solver="liblinear", class_weight="balanced"),
        )

    inner = []
    if len(np.unique(groups)) >= 2:
        inner = [
            (a, b)
            for a, b in grouped_folds(y, groups, 3, seed)
            if len(np.unique(y[a])) == 2 and len(np.unique(y[b])) == 2
        ]
    best_c, best_auc = _PROBE_C[-1], -1.0
    for c in _PROBE_C if inner else ():
        oof = np.full(len(y), np.nan)
        for a, b in inner:
            oof[b] = model(c).fit(X[a], y[a]).decision_function(X[b])
        ok = np.isfinite(oof)
        auc = roc_auc(y[ok], oof[ok])
        if np.isfinite(auc) and auc > best_auc:
            best_c, best_auc = c, auc
    return model(best_c).fit(X, y)


def permutation_null(
    table: RowTable,
    groups: str,
    contrast: str = "png_vs_jpeg_origin",
    n: int = 50,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """The probe's AUC when the target is shuffled among the contrast's real images:
    what chance alone reaches with this many images, groups and features."""
    rows, target = _contrast_rows(table, contrast)
    sub = table.subset(rows)
    cols = sub.columns(groups)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        y = rng.permutation(target)
        vals.append(
            _probe_auc(sub.X[:, cols], y, sub.groups, folds, 1, [sub.names[c] for c in cols])
        )
    v = np.array(vals)
    return {
        "n": n,
        "mean": float(v.mean()),
        "p95": float(np.quantile(v, 0.95)),
        "p99": float(np.quantile(v, 0.99)),
        "max": float(v.max()),
    }


def real_score_png_auc(table: RowTable, score: np.ndarray, rows: Sequence[int]) -> float:
    """Among scored real images of PNG or JPEG origin: AUC of the fake score for "the
    source was a PNG" (does the detector score PNG-origin photos as more fake?)."""
    rows = np.asarray(rows, int)
    real = rows[(table.y[rows] == 0) & np.isin(table.origin[rows], ["png", "jpg"])]
    pos = {r: k for k, r in enumerate(rows)}
    return roc_auc((table.origin[real] == "png").astype(int), [score[pos[r]] for r in real])


def recompress(quality: tuple[int, int] = (70, 95)) -> Callable[[np.ndarray], np.ndarray]:
    """One more JPEG compression at a quality drawn per image from its content."""
    from core.forensics.features import reencode_jpeg
    from core.forensics.normalise import content_seed

    def transform(rgb: np.ndarray) -> np.ndarray:
        q = int(np.random.default_rng(content_seed(rgb)).integers(quality[0], quality[1] + 1))
        return reencode_jpeg(rgb, q)

    return transform


def container_swap_confound(
    ds: DatasetFeatures,
    ex: FeatureExtractor,
    table: RowTable,
    feature_sets: dict[str, str],
    folds: int = 5,
    seeds: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """ "Was it a PNG" with the content held fixed: every PNG-origin real image as it
    is, and the same image compressed once as JPEG (quality 70-95, drawn per image),
    both through the extractor; out-of-fold AUC of telling the JPEG copy, grouped by
    leakage group (an image's two copies are always on the same side). This is the
    compression history alone, without the population differences between the real
    PNG and JPEG files of a data set (video frames and figure crops vs photos)."""
    real = np.flatnonzero(table.has_face & (table.y == 0) & table.is_png)  # lossless files
    variant = ("jpeg-again-70-95", recompress())
    Xb = np.zeros((len(real), len(table.names)))
    for c, i in enumerate(real):
        k, refs, _name = ds.loo_pair(i)
        e = ds.entry(ex, i, k, variant)
        f = ex.features(e, [ds.entry(ex, j, kj) for j, kj in refs])
        Xb[c] = [f[n] for n in table.names]
        if progress:
            progress(c + 1, len(real), ds.rows[i].path.name)
    ds.save()
    out: dict[str, Any] = {"n_images": len(real)}
    if len(real) < 4:
        return out
    X = np.vstack([table.X[real], Xb])
    y = np.r_[np.zeros(len(real), int), np.ones(len(real), int)]
    groups = np.r_[table.groups[real], table.groups[real]]
    for label, fg in feature_sets.items():
        cols = table.columns(fg)
        out[label] = _probe_auc(X[:, cols], y, groups, folds, seeds, [table.names[c] for c in cols])
    return out
