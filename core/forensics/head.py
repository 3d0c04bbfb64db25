"""The trainable head of the offline detector and its JSON file format.

A head maps a row of named features to a calibrated probability of "fake":
standardise -> logistic regression -> Platt calibration. It is stored as JSON only
(never pickle, so a head file can be read, diffed and loaded without running code):

    {"format": "idwatch-head", "version": 1, "detector": "offline",
     "feature_names": [...],
     "standardise": {"mean": [...], "std": [...], "gates": {"ref.": "ref.available"}},
     "model": {"type": "logistic", "weights": [...], "bias": float, "C": float},
     "threshold": float,             # on the calibrated score
     "preprocess": {"reencode_jpeg_quality": 90},  # optional, see Head.preprocess
     "calibration": {"method": "platt", "a": float, "b": float, "target_real_accuracy": 0.9,
                     "bounds": [lo, hi],            # optional, see Bounds below
                     "strata": {"feature": "ref.available",
                                "values": {"0": {"a", "b", "threshold"}, "1": {...}}}},
     "training": {"manifest": ..., "n": ..., "metrics": {...}, "date": ...},
     "backbones": {"clip": "ViT-L-14 (...)", "identity": "dlib"},    # optional
     "feature_layout": {"face": 768, "image": 768, "ref": 774}}     # optional

Version 1 is the only version; ``backbones`` and ``feature_layout`` were added to it as
optional keys (files without them, such as the first packaged head, load unchanged
with both empty). A file of any other version is refused with a clear error.

Gates: a feature group can be absent for a row (no authentic references for a face
that matched nobody). ``gates`` maps a name prefix to a 0/1 gate feature; where the
gate is 0, every feature with that prefix is replaced by its training mean, i.e. it
contributes nothing, and mean/std are computed only over rows where the gate is 1.
The head therefore cannot learn "no references" as evidence either way.

Strata: rows with and without references are scored by the same model but differ
greatly in how separable they are, so calibration and threshold are fitted per value
of the gate (``calibration.strata``). So that one ``threshold`` serves every row, the
with-references stratum keeps its calibrated score and threshold, and the other
stratum's scores are shifted in logit space (``shift``) so that the same threshold
gives it the same target real accuracy; its scores are calibrated up to that shift.

Bounds: a probability calibrated on n real and m fake rows cannot honestly be more
extreme than Laplace's rule of succession allows, 1/(n+2) and (m+1)/(m+2) (the targets
Platt's paper smooths to). Without this, features outside the training range (a logistic
model extrapolates linearly) printed as 1.000 and reviewers read certainty into them.
The calibrated score is ``lo + (hi - lo) * sigmoid(a z + b)``: monotone, so ranking,
AUC and decisions are unchanged, and every threshold in the file is on that scale.
Files without ``bounds`` score as before (0, 1); the packaged heads had theirs added
from their stored training counts, their thresholds mapped the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HEAD_FORMAT = "idwatch-head"
HEAD_VERSION = 1
DEFAULT_GATES = {"ref.": "ref.available"}
_C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


class HeadFormatError(ValueError):
    """A head file is not a readable idwatch head, or does not fit the features given."""


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class Head:
    feature_names: list[str]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = 0.5
    calibration: dict[str, Any] = field(
        default_factory=lambda: {"method": "platt", "a": 1.0, "b": 0.0}
    )
    gates: dict[str, str] = field(default_factory=dict)
    C: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    detector: str = "offline"
    # How inputs are prepared before feature extraction, e.g. {"reencode_jpeg_quality": 90}
    # for a head trained on format-blind copies (the detector then re-encodes uploads too).
    preprocess: dict[str, Any] = field(default_factory=dict)
    # What produced the features (model names/files) and how many per group; reported,
    # and checked by nobody: the feature names are the contract.
    backbones: dict[str, str] = field(default_factory=dict)
    feature_layout: dict[str, int] = field(default_factory=dict)

    # ----------------------------------------------------------------- evaluation

    def _gate_masks(self, X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(columns, rows-where-absent) for every gate."""
        out = []
        for prefix, gate in self.gates.items():
            cols = np.array([n.startswith(prefix) for n in self.feature_names])
            g = self.feature_names.index(gate)
            out.append((cols, X[:, g] <= 0.5))
        return out

    def standardise(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != len(self.feature_names):
            raise HeadFormatError(f"expected {len(self.feature_names)} features, got {X.shape[1]}")
        Z = (X - self.mean) / self.std
        for cols, absent in self._gate_masks(X):
            Z[np.ix_(absent, cols)] = 0.0
        return np.nan_to_num(Z, nan=0.0, posinf=0.0, neginf=0.0)

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated logit."""
        return self.standardise(X) @ self.weights + self.bias

    def _strata(self, X: np.ndarray) -> list[dict[str, float]]:
        """Per row, the calibration (a, b, threshold) that applies to it."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        pooled = {
            "a": float(self.calibration.get("a", 1.0)),
            "b": float(self.calibration.get("b", 0.0)),
            "threshold": float(self.threshold),
        }
        strata = self.calibration.get("strata") or {}
        feat = strata.get("feature")
        if not feat or feat not in self.feature_names:
            return [pooled] * len(X)
        col = X[:, self.feature_names.index(feat)]
        values = strata.get("values", {})
        return [values.get("1" if v > 0.5 else "0", pooled) for v in col]

    @property
    def bounds(self) -> tuple[float, float]:
        """(lo, hi) of calibrated scores (see Bounds in the module docstring)."""
        lo, hi = self.calibration.get("bounds") or (0.0, 1.0)
        return float(lo), float(hi)

    def bounded(self, p: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds
        return lo + (hi - lo) * p

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability of fake per row, within ``bounds``."""
        z = self.decision(X)
        cal = self._strata(X)
        a = np.array([c["a"] for c in cal])
        b = np.array([c["b"] for c in cal])
        return self.bounded(_sigmoid(a * z + b))

    def thresholds(self, X: np.ndarray) -> np.ndarray:
        """Decision threshold of each row (its stratum's, else the pooled one)."""
        return np.array([c["threshold"] for c in self._strata(X)])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X) >= self.thresholds(X)

    def contributions(self, x: np.ndarray) -> dict[str, float]:
        """Per-group share of one row's logit (weight x standardised value, summed)."""
        z = self.standardise(x)[0] * self.weights
        out: dict[str, float] = {}
        for name, v in zip(self.feature_names, z, strict=True):
            grp = name.split(".", 1)[0]
            out[grp] = out.get(grp, 0.0) + float(v)
        return out

    def feature_contributions(self, x: np.ndarray, top: int | None = None) -> dict[str, float]:
        """Per-feature share of one row's logit (weight x standardised value; positive
        pushes towards fake), the ``top`` largest in absolute value (None: all)."""
        z = self.standardise(x)[0] * self.weights
        order = np.argsort(-np.abs(z))[: top if top is not None else len(z)]
        return {self.feature_names[i]: float(z[i]) for i in order if z[i] != 0.0}

    def vector(self, features: dict[str, float]) -> np.ndarray:
        missing = [n for n in self.feature_names if n not in features]
        if missing:
            raise HeadFormatError(f"features missing for this head: {missing[:8]}")
        return np.array([[features[n] for n in self.feature_names]], dtype=np.float64)

    # ----------------------------------------------------------------- file format

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "version": HEAD_VERSION,
            "detector": self.detector,
            "feature_names": list(self.feature_names),
            "standardise": {
                "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std],
                "gates": dict(self.gates),
            },
            "model": {
                "type": "logistic",
                "weights": [float(v) for v in self.weights],
                "bias": float(self.bias),
                "C": float(self.C),
            },
            "threshold": float(self.threshold),
            "calibration": dict(self.calibration),
            "preprocess": dict(self.preprocess),
            "training": self.training,
            "backbones": dict(self.backbones),
            "feature_layout": dict(self.feature_layout),
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, d: Any, source: str = "head") -> Head:
        if not isinstance(d, dict) or d.get("format") != HEAD_FORMAT:
            raise HeadFormatError(
                f"{source}: not an {HEAD_FORMAT!r} file (format={_get(d, 'format')!r})"
            )
        if d.get("version") != HEAD_VERSION:
            raise HeadFormatError(
                f"{source}: head version {d.get('version')!r} is not supported "
                f"(expected {HEAD_VERSION})"
            )
        try:
            names = [str(n) for n in d["feature_names"]]
            st = d["standardise"]
            model = d["model"]
            if model.get("type") != "logistic":
                raise HeadFormatError(f"{source}: unknown model type {model.get('type')!r}")
            mean = np.asarray(st["mean"], dtype=np.float64)
            std = np.asarray(st["std"], dtype=np.float64)
            weights = np.asarray(model["weights"], dtype=np.float64)
            head = cls(
                feature_names=names,
                mean=mean,
                std=std,
                weights=weights,
                bias=float(model["bias"]),
                threshold=float(d["threshold"]),
                calibration=dict(d.get("calibration") or {"method": "platt", "a": 1.0, "b": 0.0}),
                gates=dict(st.get("gates") or {}),
                C=float(model.get("C", 1.0)),
                training=dict(d.get("training") or {}),
                detector=str(d.get("detector", "offline")),
                preprocess=dict(d.get("preprocess") or {}),
                backbones={str(k): str(v) for k, v in (d.get("backbones") or {}).items()},
                feature_layout={str(k): int(v) for k, v in (d.get("feature_layout") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HeadFormatError(f"{source}: missing or malformed field: {exc}") from exc
        n = len(names)
        if len(set(names)) != n:
            raise HeadFormatError(f"{source}: duplicate feature names")
        for label, arr in (("mean", mean), ("std", std), ("weights", weights)):
            if arr.shape != (n,):
                raise HeadFormatError(f"{source}: {label} has {arr.size} values for {n} features")
            if not np.all(np.isfinite(arr)):
                raise HeadFormatError(f"{source}: {label} has non-finite values")
        if np.any(std <= 0):
            raise HeadFormatError(f"{source}: std must be positive")
        for prefix, gate in head.gates.items():
            if gate not in names:
                raise HeadFormatError(f"{source}: gate {gate!r} for {prefix!r} is not a feature")
        strata = head.calibration.get("strata") or {}
        for key, val in (strata.get("values") or {}).items():
            try:
                ok = all(math.isfinite(float(val[k])) for k in ("a", "b", "threshold"))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok or key not in ("0", "1") or not 0.0 <= float(val["threshold"]) <= 1.0:
                raise HeadFormatError(f"{source}: malformed calibration stratum {key!r}")
        if strata and strata.get("feature") not in names:
            raise HeadFormatError(f"{source}: calibration strata feature is not a feature")
        try:
            lo, hi = head.bounds
        except (TypeError, ValueError):
            lo, hi = -1.0, -1.0
        if not 0.0 <= lo < hi <= 1.0:
            raise HeadFormatError(f"{source}: calibration bounds must be 0 <= lo < hi <= 1")
        if not (0.0 <= head.threshold <= 1.0) or not math.isfinite(head.bias):
            raise HeadFormatError(f"{source}: threshold must be in [0, 1] and bias finite")
        return head

    @classmethod
    def load(cls, path: str | Path) -> Head:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise HeadFormatError(f"{path}: not JSON: {exc}") from exc
        return cls.from_dict(d, source=str(path))

    @classmethod
    def load_for(cls, path: Path | None, detector: str) -> Head:
        """Load the head a detector runs on; ModelUnavailable with a clear message when
        it is missing, malformed, or made for another detector."""
        from core.errors import ModelUnavailable

        if path is None or not Path(path).exists():
            raise ModelUnavailable(f"{detector} detector head not found: {path}")
        try:
            head = cls.load(path)
        except HeadFormatError as exc:
            raise ModelUnavailable(str(exc)) from exc
        if head.detector != detector:
            raise ModelUnavailable(f"{path} is a head for {head.detector!r}, not {detector!r}")
        return head

    def check_features(self, available: list[str] | set[str]) -> None:
        """Raise if this head needs features the extractor does not produce."""
        missing = sorted(set(self.feature_names) - set(available))
        if missing:
            raise HeadFormatError(
                f"head needs features this version does not compute: {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}"
            )


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


# --------------------------------------------------------------------------- training


def _fit_standardiser(
    X: np.ndarray, names: list[str], gates: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    mean = np.nanmean(X, axis=0)
    std = np.nanstd(X, axis=0)
    for prefix, gate in gates.items():
        if gate not in names:
            continue
        on = X[:, names.index(gate)] > 0.5
        cols = np.array([n.startswith(prefix) for n in names])
        if on.sum() >= 2:
            mean[cols] = X[np.ix_(on, cols)].mean(axis=0)
            std[cols] = X[np.ix_(on, cols)].std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    return mean, std


def _fit_logistic(Z: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
    clf.fit(Z, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def _fit_raw(
    X: np.ndarray, y: np.ndarray, names: list[str], gates: dict[str, str], C: float
) -> Head:
    mean, std = _fit_standardiser(X, names, gates)
    head = Head(list(names), mean, std, np.zeros(len(names)), 0.0, gates=dict(gates), C=C)
    w, b = _fit_logistic(head.standardise(X), y, C)
    head.weights, head.bias = w, b
    return head


def _splits(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None and len(np.unique(groups)) >= folds:
        return list(
            StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups)
        )
    k = max(2, min(folds, int(np.bincount(y).min())))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def out_of_fold_logits(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    gates: dict[str, str],
    C: float,
    groups: np.ndarray | None,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    oof = np.zeros(len(y))
    for tr, te in _splits(y, groups, folds, seed):
        if len(np.unique(y[tr])) < 2:
            continue
        oof[te] = _fit_raw(X[tr], y[tr], names, gates, C).decision(X[te])
    return oof


def _calibrate(logits: np.ndarray, y: np.ndarray, target: float) -> tuple[float, float, float]:
    """Platt (a, b) on out-of-fold logits and the calibrated score below which
    ``target`` of the real rows fall."""
    from sklearn.linear_model import LogisticRegression

    platt = LogisticRegression(C=1e4, max_iter=1000).fit(logits[:, None], y)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    if a <= 0:  # the inner CV found no usable signal; keep the raw logit's direction
        a, b = 1.0, 0.0
    cal = _sigmoid(a * logits + b)
    threshold = float(np.clip(np.quantile(cal[y == 0], target) + 1e-6, 0.0, 1.0))
    return a, b, threshold


def laplace_bounds(n_real: int, n_fake: int) -> tuple[float, float]:
    """The most extreme probabilities n real and m fake calibration rows support."""
    return 1.0 / (n_real + 2), (n_fake + 1.0) / (n_fake + 2)


def train_head(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: list[str],
    groups: np.ndarray | None = None,
    target_real_accuracy: float = 0.9,
    C: float | None = None,
    gates: dict[str, str] | None = None,
    inner_folds: int = 5,
    training: dict[str, Any] | None = None,
    seed: int = 0,
) -> Head:
    """Fit a head on features ``X`` (rows) with labels ``y`` (1 = fake).

    Regularisation (when ``C`` is None), Platt calibration and the threshold all come
    from out-of-fold scores of an inner cross-validation on this training data only
    (grouped by ``groups`` where given, so the same person is never on both sides): an
    in-sample threshold would be set on scores the model has memorised. The threshold
    is the calibrated score below which ``target_real_accuracy`` of the real rows fall.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    names = list(feature_names)
    if X.ndim != 2 or X.shape != (len(y), len(names)):
        raise ValueError(f"X must be (n, {len(names)}), got {X.shape} for {len(y)} labels")
    if set(np.unique(y)) != {0, 1}:
        raise ValueError("training needs both real (0) and fake (1) rows")
    gates = {p: g for p, g in (DEFAULT_GATES if gates is None else gates).items() if g in names}
    groups_arr = None if groups is None else np.asarray(groups)

    if C is None:
        scores = {
            c: _auc(y, out_of_fold_logits(X, y, names, gates, c, groups_arr, inner_folds, seed))
            for c in _C_GRID
        }
        C = max(scores, key=lambda c: (np.nan_to_num(scores[c]), -c))
    oof = out_of_fold_logits(X, y, names, gates, C, groups_arr, inner_folds, seed)
    a, b, threshold = _calibrate(oof, y, target_real_accuracy)
    strata: dict[str, Any] = {}
    for prefix, gate in gates.items():
        if prefix != "ref.":
            continue
        col = X[:, names.index(gate)] > 0.5
        values = {}
        for key, sel in (("1", col), ("0", ~col)):
            if (y[sel] == 0).sum() >= 10 and (y[sel] == 1).sum() >= 5:
                sa, sb, st = _calibrate(oof[sel], y[sel], target_real_accuracy)
                values[key] = {
                    "a": sa,
                    "b": sb,
                    "threshold": st,
                    "n_real": int((y[sel] == 0).sum()),
                    "n_fake": int(y[sel].sum()),
                }
        if values:
            # One decision threshold for every row (callers such as the pipeline compare
            # the score with detector.threshold alone): the with-references stratum,
            # the detector's real use, keeps its calibrated scores and threshold; the
            # other strata are shifted in logit space so that the same threshold gives
            # their own target real accuracy.
            common = values.get("1", values.get("0"))["threshold"]
            for val in values.values():
                shift = _logit(common) - _logit(val["threshold"])
                val["b"] += shift
                val["shift"] = shift
                val["threshold"] = common
            threshold = common
            strata = {"feature": gate, "values": values}

    head = _fit_raw(X, y, names, gates, C)
    lo, hi = laplace_bounds(int((y == 0).sum()), int(y.sum()))
    head.calibration = {
        "method": "platt",
        "a": a,
        "b": b,
        "fitted_on": "inner out-of-fold logits",
        "target_real_accuracy": target_real_accuracy,
        "bounds": [lo, hi],
    }
    # Thresholds were chosen on sigmoid(a z + b); scores are bounded, so are they.
    head.threshold = float(head.bounded(np.float64(threshold)))
    for val in (strata.get("values") or {}).values():
        val["threshold"] = float(head.bounded(np.float64(val["threshold"])))
    if strata:
        head.calibration["strata"] = strata
    # Inner-CV operating point, from the out-of-fold logits through each row's stratum.
    cal_rows = head._strata(X)
    oof_score = head.bounded(
        _sigmoid(np.array([c["a"] for c in cal_rows]) * oof + np.array([c["b"] for c in cal_rows]))
    )
    pred = oof_score >= np.array([c["threshold"] for c in cal_rows])
    info = dict(training or {})
    info.setdefault("date", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    info.setdefault("n", int(len(y)))
    info.setdefault("n_fake", int(y.sum()))
    info["inner_cv"] = {
        "folds": inner_folds,
        "grouped": groups is not None,
        "auc": _auc(y, oof),
        "real_accuracy": float(np.mean(~pred[y == 0])),
        "fake_accuracy": float(np.mean(pred[y == 1])),
    }
    head.training = info
    return head
