"""The evaluation protocol of ``idwatch eval`` (documented in the README).

Impersonation retrieval
    For every identity X with at least one real and one fake image, each real image q
    of X in turn is X's only registered reference (its face of X: the one most like X's
    other real photos, the largest if there are none) and every other image of the
    manifest is the database. Stage 1 claims a database image for X when one of its
    faces has cosine >= the face backend's match threshold to q's face (the best such
    face is the claimed one); stage 2 scores that face's fake probability with q as
    its only reference. Claimed images are ranked by that score; images with no face
    claiming X are not retrieved: a positive among them adds precision 0 (as if ranked
    below everything, pessimistically). Ties are broken pessimistically too (negatives
    first). Positives are the fakes whose identity includes X. AP per query; mAP =
    mean over identities of the mean AP of their queries. (The largest face is never
    one that a co-labelled person's other photos identify as theirs.)

Detection table
    Every image once, as the research reports it: its face of interest (the face most
    like its labelled identity's other real photos; the largest face otherwise),
    references = the other real photos of that identity (leave-one-out; none for
    anonymous images and people with a single photo). Fake when score >= the
    detector's threshold for that row. Images without a face count as predicted real
    (a miss for a fake, a correct rejection for a real; score 0 for the AUC).

Same identity
    ``same_identity_auc``: among images that stage 1 claims for identity X (their face
    of interest matches one of X's other real photos), the ROC AUC of the detection
    table's scores, fakes of X against real photos of X; the mean over identities with
    both (``same_identity.auc_pooled``: one AUC over all those rows together).

Stage 1
    ``stage1_fake_match_rate``: over the (query q of X, fake of X) pairs above, the
    share where stage 1 claims the fake for X. ``stage1_tar`` / ``stage1_far``: with
    every real photo q of every identity X as the only reference, the share of other
    real photos showing X (genuine) / not labelled X (impostor) that stage 1 claims.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluation.dataset_features import (
    DatasetFeatures,
    Entry,
    FeatureExtractor,
    read_manifest,
)
from core.evaluation.grouping import family_of
from core.faces.base import FaceBackend

REQUIRED_KEYS = (
    "map",
    "real_acc",
    "fake_acc",
    "avg_acc",
    "auc",
    "same_identity_auc",
    "stage1_fake_match_rate",
    "stage1_tar",
    "stage1_far",
    "n_images",
    "n_no_face",
    "n_queries",
    "per_method",
    "detector",
    "face_backend",
    "seconds",
)

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


# --------------------------------------------------------------------------- scorers


class PairScorer(ABC):
    """Stage 2 of the system as a function of cached entries: (upload face, references)
    -> (calibrated fake score, the row's decision threshold)."""

    name: str = ""
    extractor: FeatureExtractor

    @abstractmethod
    def scores(
        self, pairs: Sequence[tuple[Entry, Sequence[Entry]]]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> str:
        return self.name


class HeadScorer(PairScorer):
    """A JSON head (core.forensics.head) on an extractor's features."""

    def __init__(self, extractor: FeatureExtractor, head, source: str = "") -> None:
        self.extractor = extractor
        self.head = head
        self.name = head.detector
        self.source = source
        head.check_features(extractor.feature_names())

    def scores(self, pairs):
        if not pairs:
            return np.zeros(0), np.zeros(0)
        rows = [self.extractor.features(up, refs) for up, refs in pairs]
        X = np.array([[r[n] for n in self.head.feature_names] for r in rows], np.float64)
        return np.clip(self.head.predict_proba(X), 0.0, 1.0), self.head.thresholds(X)

    def describe(self) -> str:
        return f"{self.name} ({self.source})" if self.source else self.name


# --------------------------------------------------------------------------- metrics


def average_precision(scores: Sequence[float | None], positive: Sequence[bool]) -> float:
    """AP of one query. ``scores[i]`` is None when item i was not retrieved (no face
    claimed the identity); such positives contribute precision 0. Among equal scores
    negatives rank first (pessimistic). nan when there are no positives."""
    pos = np.asarray(positive, bool)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    got = [(float(s), bool(p)) for s, p in zip(scores, pos, strict=True) if s is not None]
    got.sort(key=lambda t: (-t[0], t[1]))
    hits = 0
    total = 0.0
    for rank, (_, p) in enumerate(got, start=1):
        if p:
            hits += 1
            total += hits / rank
    return total / n_pos


def mean_ap(per_query: Sequence[tuple[str, float]]) -> tuple[float, dict[str, float]]:
    """mAP = mean over identities of the mean AP of their queries."""
    by_id: dict[str, list[float]] = defaultdict(list)
    for ident, ap in per_query:
        if not math.isnan(ap):
            by_id[ident].append(ap)
    per_id = {k: float(np.mean(v)) for k, v in sorted(by_id.items())}
    return (float(np.mean(list(per_id.values()))) if per_id else float("nan")), per_id


def roc_auc(y: Sequence[int], score: Sequence[float]) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, int)
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def detection_metrics(
    y: Sequence[int], score: Sequence[float], pred: Sequence[bool], methods: Sequence[str]
) -> dict[str, Any]:
    """real/fake accuracy at the operating point, their average, ROC AUC, per method
    (n and accuracy: real accuracy for real methods, fake accuracy for generators)."""
    y = np.asarray(y, int)
    pred = np.asarray(pred, bool)
    methods = np.asarray(methods)
    real_acc = float(np.mean(~pred[y == 0])) if (y == 0).any() else float("nan")
    fake_acc = float(np.mean(pred[y == 1])) if (y == 1).any() else float("nan")
    per_method = {}
    for m in sorted(set(methods.tolist())):
        sel = methods == m
        per_method[m] = {"n": int(sel.sum()), "acc": float(np.mean(pred[sel] == (y[sel] == 1)))}
    return {
        "real_acc": real_acc,
        "fake_acc": fake_acc,
        "avg_acc": (real_acc + fake_acc) / 2,
        "auc": roc_auc(y, score),
        "per_method": per_method,
    }


def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


def same_identity_auc(
    identity: Sequence[str | None],
    y: Sequence[int],
    score: Sequence[float],
    claimed: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The platform's question: among uploads that claim identity X, how well do fake
    scores rank the fakes of X above the real photos of X?

    Rows are images with the identity they are scored for (``identity``; None: no
    claim), their label (1 = fake) and score; ``claimed`` says whether stage 1 claims
    the image for that identity (rows it does not claim never reach stage 2 as X and
    are left out). For every X with claimed real and fake images: the ROC AUC of those
    rows. ``mean`` (the key ``same_identity_auc`` of the reports) is the mean over
    identities, each person counting once; ``pooled`` is one AUC over the rows of all
    those identities together (one threshold for everybody)."""
    ident = np.array([i if i else "" for i in identity], dtype=object)
    y = np.asarray(y, int)
    score = np.asarray(score, float)
    ok = np.ones(len(y), bool) if claimed is None else np.asarray(claimed, bool)
    ok &= ident != ""
    per: dict[str, dict[str, Any]] = {}
    for name in sorted(set(ident[ok].tolist())):
        sel = ok & (ident == name)
        n_fake, n_real = int(y[sel].sum()), int((y[sel] == 0).sum())
        if n_fake and n_real:
            per[name] = {"auc": roc_auc(y[sel], score[sel]), "n_real": n_real, "n_fake": n_fake}
    rows = ok & np.isin(ident, list(per))
    return {
        "mean": float(np.mean([v["auc"] for v in per.values()])) if per else float("nan"),
        "pooled": roc_auc(y[rows], score[rows]) if per else float("nan"),
        "n_identities": len(per),
        "n_real": int((y[rows] == 0).sum()),
        "n_fake": int(y[rows].sum()),
        "per_identity": per,
    }


# --------------------------------------------------------------------------- protocol


def detection_table(
    ds: DatasetFeatures,
    scorer: PairScorer,
    idx: Sequence[int] | None = None,
    progress: StageProgress | None = None,
) -> dict[str, np.ndarray]:
    """Every image of ``idx`` once (module docstring): score, decision, whether it had
    references, whether it had no face. Arrays are over all rows (zeros elsewhere)."""
    n = len(ds.rows)
    ex = scorer.extractor
    idx = list(range(n)) if idx is None else list(idx)
    out = {
        "score": np.zeros(n),
        "pred": np.zeros(n, bool),
        "has_ref": np.zeros(n, bool),
        "no_face": np.zeros(n, bool),
        "threshold": np.full(n, np.nan),
    }
    for c, i in enumerate(idx):
        k, refs, _name = ds.loo_pair(i)
        if k is None:
            out["no_face"][i] = True
        else:
            s, t = scorer.scores([(ds.entry(ex, i, k), [ds.entry(ex, j, kj) for j, kj in refs])])
            out["score"][i], out["pred"][i], out["threshold"][i] = s[0], s[0] >= t[0], t[0]
            out["has_ref"][i] = bool(refs)
        if progress:
            progress("detection table", c + 1, len(idx))
    ds.save()
    return out


def stage1_claims(ds: DatasetFeatures, threshold: float) -> tuple[list[str | None], np.ndarray]:
    """Per image: the identity it is scored for in the detection table, and whether
    stage 1 claims it for that identity (its face of interest matches one of the
    identity's other real photos at ``threshold``)."""
    names: list[str | None] = []
    claimed = np.zeros(len(ds.rows), bool)
    for i in range(len(ds.rows)):
        k, _refs, name = ds.loo_pair(i)
        names.append(name)
        if k is not None and name:
            claimed[i] = ds.best_face(i, name)[1] >= threshold
    return names, claimed


def retrieval(
    ds: DatasetFeatures,
    scorer: PairScorer,
    threshold: float,
    idx: Sequence[int] | None = None,
    progress: StageProgress | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """The impersonation queries (module docstring) with the images of ``idx`` as
    both the queries and the database. Returns (per query, fake pairs, fake pairs
    claimed by stage 1)."""
    rows = ds.rows
    ex = scorer.extractor
    n = len(rows)
    idx = list(range(n)) if idx is None else sorted(idx)
    fake_by_name: dict[str, list[int]] = defaultdict(list)
    for i in idx:
        if rows[i].label == "fake":
            for nm in rows[i].identities:
                fake_by_name[nm].append(i)
    inside = set(idx)
    names = sorted(nm for nm in ds.real_by_name if fake_by_name.get(nm))
    queries = [(nm, q) for nm in names for q in ds.real_by_name[nm] if q in inside]
    per_query: list[dict[str, Any]] = []
    match_pairs = match_hits = 0
    for qi, (nm, q) in enumerate(queries):
        db = [i for i in idx if i != q]
        positive = np.array([nm in rows[i].identities and rows[i].label == "fake" for i in db])
        kq, _ = ds.best_face(q, nm)
        scores: list[float | None] = [None] * len(db)
        if kq is not None:
            ref_emb = ds.embeddings[q][kq]
            ref_entry = ds.entry(ex, q, kq)
            claimed: list[tuple[int, int, int]] = []
            for c, i in enumerate(db):
                if not len(ds.embeddings[i]):
                    continue
                sims = ds.embeddings[i] @ ref_emb
                k = int(np.argmax(sims))
                if sims[k] >= threshold:
                    claimed.append((c, i, k))
            s, _t = scorer.scores([(ds.entry(ex, i, k), [ref_entry]) for _c, i, k in claimed])
            for (c, _i, _k), v in zip(claimed, s, strict=True):
                scores[c] = float(v)
        ap = average_precision(scores, positive)
        n_pos = int(positive.sum())
        n_hit = sum(1 for c in np.flatnonzero(positive) if scores[c] is not None)
        match_pairs += n_pos
        match_hits += n_hit
        per_query.append(
            {
                "identity": nm,
                "query": rows[q].path.name,
                "ap": ap,
                "positives": n_pos,
                "positives_claimed": n_hit,
                "claimed": sum(s is not None for s in scores),
                "reference_face": kq is not None,
            }
        )
        if progress:
            progress("queries", qi + 1, len(queries))
    ds.save()
    return per_query, match_pairs, match_hits


def stage1_real_pairs(ds: DatasetFeatures, threshold: float) -> dict[str, int]:
    """Genuine / impostor pairs of real photos and how many stage 1 claims."""
    genuine = gen_hit = impostor = imp_hit = amended = amended_hit = 0
    for nm, reals in ds.real_by_name.items():
        for q in reals:
            kq, _ = ds.best_face(q, nm)
            if kq is None:
                continue
            ref_emb = ds.embeddings[q][kq]
            for i, r in enumerate(ds.rows):
                if i == q or r.label != "real":
                    continue
                hit = (
                    bool(len(ds.embeddings[i]))
                    and float((ds.embeddings[i] @ ref_emb).max()) >= threshold
                )
                if nm in r.identities:
                    genuine += 1
                    gen_hit += hit
                elif nm in r.also_shows:
                    # The image shows X though its label does not say so
                    # (core.demo.amendments): neither genuine nor impostor.
                    amended += 1
                    amended_hit += hit
                else:
                    impostor += 1
                    imp_hit += hit
    return {
        "genuine": genuine,
        "gen_hit": gen_hit,
        "impostor": impostor,
        "imp_hit": imp_hit,
        "amended": amended,
        "amended_hit": amended_hit,
    }


def stage1_as_labelled(s1: dict[str, int], rows: Sequence[Any]) -> dict[str, Any]:
    """The stage-1 figures with and without the recorded amendments (people an image
    shows that its label leaves out: core.demo.amendments), so both can be read."""
    return {
        "stage1_far_as_labelled": _rate(
            s1["imp_hit"] + s1["amended_hit"], s1["impostor"] + s1["amended"]
        ),
        "stage1_amended_pairs": {
            "pairs": s1["amended"],
            "claimed": s1["amended_hit"],
            "files": {r.path.name: list(r.also_shows) for r in rows if r.also_shows},
        },
    }


def strata_metrics(
    y: np.ndarray,
    score: np.ndarray,
    pred: np.ndarray,
    methods: Sequence[str],
    has_ref: np.ndarray,
    no_face: np.ndarray,
) -> dict[str, dict[str, Any]]:
    strata = {}
    methods = np.asarray(methods)
    for label, sel in (("with_refs", has_ref), ("no_refs", ~has_ref & ~no_face)):
        sub = detection_metrics(y[sel], score[sel], pred[sel], methods[sel])
        strata[label] = {k: sub[k] for k in ("real_acc", "fake_acc", "avg_acc", "auc")}
        strata[label]["n"] = int(sel.sum())
    return strata


def evaluate(
    manifest: str | Path,
    scorer: PairScorer,
    backend: FaceBackend,
    *,
    match_threshold: float | None = None,
    cache_dir: Path | None = None,
    progress: StageProgress | None = None,
    dataset: DatasetFeatures | None = None,
) -> dict[str, Any]:
    """Run the whole protocol (module docstring); returns the report dict whose first
    keys are REQUIRED_KEYS."""
    t0 = time.perf_counter()
    thr = backend.match_threshold if match_threshold is None else float(match_threshold)
    if dataset is None:
        dataset = DatasetFeatures(read_manifest(manifest), backend, cache_dir)
        dataset.detect_all((lambda d, n, _w: progress("detect faces", d, n)) if progress else None)
    ds = dataset
    rows = ds.rows
    n = len(rows)
    y = np.array([r.label == "fake" for r in rows], int)
    methods = [r.method for r in rows]

    det = detection_table(ds, scorer, progress=progress)
    table = detection_metrics(y, det["score"], det["pred"], methods)
    strata = strata_metrics(y, det["score"], det["pred"], methods, det["has_ref"], det["no_face"])
    names, claimed = stage1_claims(ds, thr)
    same = same_identity_auc(names, y, det["score"], claimed)

    per_query, match_pairs, match_hits = retrieval(ds, scorer, thr, progress=progress)
    map_, per_identity = mean_ap([(p["identity"], p["ap"]) for p in per_query])
    s1 = stage1_real_pairs(ds, thr)
    no_face = det["no_face"]

    report: dict[str, Any] = {
        "map": map_,
        "real_acc": table["real_acc"],
        "fake_acc": table["fake_acc"],
        "avg_acc": table["avg_acc"],
        "auc": table["auc"],
        "same_identity_auc": same["mean"],
        "stage1_fake_match_rate": _rate(match_hits, match_pairs),
        "stage1_tar": _rate(s1["gen_hit"], s1["genuine"]),
        "stage1_far": _rate(s1["imp_hit"], s1["impostor"]),
        "n_images": n,
        "n_no_face": int(no_face.sum()),
        "n_queries": len(per_query),
        "per_method": table["per_method"],
        "detector": scorer.describe(),
        "face_backend": backend.name,
        "seconds": round(time.perf_counter() - t0, 2),
        # ---- more than the required keys
        "same_identity": {
            "auc_mean_over_identities": same["mean"],
            "auc_pooled": same["pooled"],
            **{k: v for k, v in same.items() if k not in ("mean", "pooled")},
        },
        "match_threshold": thr,
        "n_identities": len(per_identity),
        "n_real": int((y == 0).sum()),
        "n_fake": int(y.sum()),
        "no_face": {
            "real": int((no_face & (y == 0)).sum()),
            "fake": int((no_face & (y == 1)).sum()),
            "files": [rows[i].path.name for i in np.flatnonzero(no_face)],
        },
        "detection_references": "leave-one-out: the other real photos of the labelled identity",
        "strata": strata,
        "stage1_pairs": {"fake": match_pairs, "genuine": s1["genuine"], "impostor": s1["impostor"]},
        **stage1_as_labelled(s1, rows),
        "ap_per_identity": per_identity,
        "queries": per_query,
        "feature_seconds_per_image": ds.timing_per_image(),
        # Per image, for plots (core.evaluation.plots) and further analysis.
        "scores": {
            "file": [r.path.name for r in rows],
            "label": y.tolist(),
            "method": methods,
            "family": [family_of(r.method, r.label) for r in rows],
            "identity": [nm or "" for nm in names],
            "has_face": (~no_face).astype(int).tolist(),
            "score": det["score"].round(6).tolist(),
            "pred": det["pred"].astype(int).tolist(),
            "has_ref": det["has_ref"].astype(int).tolist(),
            "no_face": no_face.astype(int).tolist(),
            "threshold": det["threshold"].round(6).tolist(),
        },
    }
    return report
