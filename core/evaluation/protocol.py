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
from core.faces.base import FaceBackend

REQUIRED_KEYS = (
    "map",
    "real_acc",
    "fake_acc",
    "avg_acc",
    "auc",
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


# --------------------------------------------------------------------------- protocol


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
    ex = scorer.extractor
    thr = backend.match_threshold if match_threshold is None else float(match_threshold)
    if dataset is None:
        dataset = DatasetFeatures(read_manifest(manifest), backend, cache_dir)
        dataset.detect_all((lambda d, n, _w: progress("detect faces", d, n)) if progress else None)
    ds = dataset
    rows = ds.rows
    n = len(rows)
    y = np.array([r.label == "fake" for r in rows], int)
    methods = [r.method for r in rows]

    # ---- detection table (leave-one-out references)
    det_score = np.zeros(n)
    det_pred = np.zeros(n, bool)
    has_ref = np.zeros(n, bool)
    no_face = np.zeros(n, bool)
    for i in range(n):
        k, refs, _name = ds.loo_pair(i)
        if k is None:
            no_face[i] = True
        else:
            s, t = scorer.scores([(ds.entry(ex, i, k), [ds.entry(ex, j, kj) for j, kj in refs])])
            det_score[i], det_pred[i] = s[0], s[0] >= t[0]
            has_ref[i] = bool(refs)
        if progress:
            progress("detection table", i + 1, n)
    ds.save()
    table = detection_metrics(y, det_score, det_pred, methods)
    strata = {}
    for label, sel in (("with_refs", has_ref), ("no_refs", ~has_ref & ~no_face)):
        sub = detection_metrics(y[sel], det_score[sel], det_pred[sel], np.asarray(methods)[sel])
        strata[label] = {k: sub[k] for k in ("real_acc", "fake_acc", "avg_acc", "auc")}
        strata[label]["n"] = int(sel.sum())

    # ---- queries
    fake_by_name: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.label == "fake":
            for nm in r.identities:
                fake_by_name[nm].append(i)
    names = sorted(nm for nm in ds.real_by_name if fake_by_name.get(nm))
    queries = [(nm, q) for nm in names for q in ds.real_by_name[nm]]
    per_query: list[dict[str, Any]] = []
    match_pairs = match_hits = 0
    for qi, (nm, q) in enumerate(queries):
        positive = np.array([nm in r.identities and r.label == "fake" for r in rows])
        positive[q] = False
        kq, _ = ds.best_face(q, nm)
        scores: list[float | None] = [None] * n
        if kq is not None:
            ref_emb = ds.embeddings[q][kq]
            ref_entry = ds.entry(ex, q, kq)
            claimed: list[tuple[int, int]] = []
            for i in range(n):
                if i == q or not len(ds.embeddings[i]):
                    continue
                sims = ds.embeddings[i] @ ref_emb
                k = int(np.argmax(sims))
                if sims[k] >= thr:
                    claimed.append((i, k))
            s, _t = scorer.scores([(ds.entry(ex, i, k), [ref_entry]) for i, k in claimed])
            for (i, _k), v in zip(claimed, s, strict=True):
                scores[i] = float(v)
        ap = average_precision([scores[i] for i in range(n) if i != q], np.delete(positive, q))
        n_pos = int(positive.sum())
        n_hit = sum(1 for i in np.flatnonzero(positive) if scores[i] is not None)
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
    map_, per_identity = mean_ap([(p["identity"], p["ap"]) for p in per_query])

    # ---- stage 1 on real pairs
    genuine = gen_hit = impostor = imp_hit = 0
    for nm, reals in ds.real_by_name.items():
        for q in reals:
            kq, _ = ds.best_face(q, nm)
            if kq is None:
                continue
            ref_emb = ds.embeddings[q][kq]
            for i, r in enumerate(rows):
                if i == q or r.label != "real":
                    continue
                hit = (
                    bool(len(ds.embeddings[i])) and float((ds.embeddings[i] @ ref_emb).max()) >= thr
                )
                if nm in r.identities:
                    genuine += 1
                    gen_hit += hit
                else:
                    impostor += 1
                    imp_hit += hit

    report: dict[str, Any] = {
        "map": map_,
        "real_acc": table["real_acc"],
        "fake_acc": table["fake_acc"],
        "avg_acc": table["avg_acc"],
        "auc": table["auc"],
        "stage1_fake_match_rate": _rate(match_hits, match_pairs),
        "stage1_tar": _rate(gen_hit, genuine),
        "stage1_far": _rate(imp_hit, impostor),
        "n_images": n,
        "n_no_face": int(no_face.sum()),
        "n_queries": len(queries),
        "per_method": table["per_method"],
        "detector": scorer.describe(),
        "face_backend": backend.name,
        "seconds": round(time.perf_counter() - t0, 2),
        # ---- more than the required keys
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
        "stage1_pairs": {"fake": match_pairs, "genuine": genuine, "impostor": impostor},
        "ap_per_identity": per_identity,
        "queries": per_query,
        "feature_seconds_per_image": ds.timing_per_image(),
    }
    return report
