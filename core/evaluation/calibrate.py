"""``idwatch detector calibrate``: set a head's threshold on an operator's real photos.

A head's threshold is where ``target_real_accuracy`` of its own training reals fall; a
head trained on few or unusual real photos (the public-domain SBI head: two portraits)
then flags most real uploads elsewhere. Its ranking can still be good. Calibration
keeps the weights and moves only the operating point: on real photos of the
operator's choosing (a manifest; its fakes are ignored), each stratum's scores (with
and without references) are shifted in logit space so that ``target`` of that
stratum's real photos score below one common threshold, the with-references
stratum's quantile (the same construction as core.forensics.head.train_head).
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluation.dataset_features import DatasetFeatures, FeatureExtractor, read_manifest
from core.faces.base import FaceBackend
from core.forensics.head import Head
from core.forensics.provenance import dataset_record

MIN_REALS = 10  # per stratum; fewer and the stratum keeps its calibration


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def recalibrated(head: Head, X: np.ndarray, target: float) -> tuple[Head, dict[str, Any]]:
    """A copy of ``head`` whose threshold keeps ``target`` of the rows ``X`` (features of
    real photos) below it, per stratum where the head has strata."""
    if not 0.5 <= target < 1.0:
        raise ValueError("target real accuracy must be in [0.5, 1)")
    X = np.atleast_2d(np.asarray(X, np.float64))
    if len(X) < MIN_REALS:
        raise ValueError(f"calibration needs at least {MIN_REALS} real photos with a face")
    out = copy.deepcopy(head)
    lo, hi = head.bounds
    scores = head.predict_proba(X)
    strata = out.calibration.get("strata") or {}
    feat = strata.get("feature")
    if not feat:
        out.threshold = float(np.quantile(scores, target) + 1e-9)
        return out, {"pooled": {"n": len(X), "threshold": out.threshold}}
    col = X[:, head.feature_names.index(feat)] > 0.5
    values = strata["values"]
    quant = {}
    for key, sel in (("1", col), ("0", ~col)):
        if key in values and sel.sum() >= MIN_REALS:
            quant[key] = float(np.quantile(scores[sel], target))
    if not quant:
        raise ValueError(f"no stratum has {MIN_REALS} real photos")
    common = quant.get("1", next(iter(quant.values()))) + 1e-9

    def unbound(s: float) -> float:
        return _logit((s - lo) / (hi - lo))

    report: dict[str, Any] = {}
    for key, q in quant.items():
        shift = unbound(common) - unbound(q)
        values[key]["b"] = float(values[key]["b"] + shift)
        report[key] = {"n": int((col if key == "1" else ~col).sum()), "shift": shift}
    for val in values.values():
        val["threshold"] = common
    out.threshold = common
    return out, report


def calibrate_head(
    head_path: str | Path,
    reals_manifest: str | Path,
    out: str | Path,
    backend: FaceBackend,
    extractor: FeatureExtractor,
    target: float = 0.9,
    cache_dir: Path | None = None,
) -> Head:
    """Score the real photos of ``reals_manifest`` (leave-one-out references, as in
    training) with the head at ``head_path`` and write the recalibrated head."""
    head = Head.load(head_path)
    rows = read_manifest(reals_manifest)
    ds = DatasetFeatures(rows, backend, cache_dir)
    ds.detect_all()
    real = [i for i, r in enumerate(rows) if r.label == "real"]
    feats = ds.loo_features(extractor, idx=real)
    X = np.array(
        [[f["features"][n] for n in head.feature_names] for f in feats if f is not None]
    ).reshape(-1, len(head.feature_names))
    new, report = recalibrated(head, X, target)
    record = dataset_record(reals_manifest, [rows[i] for i in real])
    new.training = dict(new.training)
    new.training["threshold_calibration"] = {
        "from": str(Path(head_path)),
        "reals": record,
        "n_with_face": len(X),
        "target_real_accuracy": target,
        "strata": report,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    new.save(out)
    return new
