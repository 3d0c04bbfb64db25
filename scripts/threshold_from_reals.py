"""A fixed head's accuracy when its threshold is set on other people's real photos.

A head trained without a data set's images (e.g. the public-domain SBI head) ranks
them with its own weights, but its threshold came from its own few training photos.
An operator can set the threshold on authentic photos of their own. This simulates
that on an ``idwatch eval --json`` report of the head, honestly: folds grouped by
identity and source figure (core.evaluation.grouping); for each test fold, the
threshold of each stratum (with / without references) is the ``--target`` quantile
of the scores of the OTHER folds' real images of that stratum (no fake is used);
accuracy is pooled over the test folds, mean over ``--seeds`` fold draws.

    .venv/bin/python scripts/threshold_from_reals.py out/eval_head.json \\
        ../shared/data/faces-dev/manifest.csv --target 0.95
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.evaluation.dataset_features import read_manifest  # noqa: E402
from core.evaluation.grouping import grouped_folds, leakage_groups  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    rows = read_manifest(args.manifest)
    s = json.loads(args.report.read_text())["scores"]
    by_name = {r.path.name: i for i, r in enumerate(rows)}
    idx = np.array([by_name[f] for f in s["file"]])
    groups = leakage_groups(rows)[idx]
    y = np.array(s["label"], int)
    score = np.array(s["score"], float)
    ref = np.array(s["has_ref"], bool)
    face = np.array(s["has_face"], bool)
    fam = np.array(s["family"])
    runs = []
    for seed in range(args.seeds):
        pred = np.zeros(len(y), bool)
        for tr, te in grouped_folds(y, groups, 5, seed):
            for stratum in (True, False):
                real = tr[(y[tr] == 0) & face[tr] & (ref[tr] == stratum)]
                t = np.quantile(score[real], args.target) + 1e-9
                sel = te[face[te] & (ref[te] == stratum)]
                pred[sel] = score[sel] >= t
        out = {}
        for name, m in (("all", np.ones(len(y), bool)), ("with_refs", ref), ("no_refs", ~ref)):
            out[name] = {
                "real_acc": float(np.mean(~pred[m & (y == 0)])),
                "fake_acc": float(np.mean(pred[m & (y == 1)])),
            }
            out[name]["avg_acc"] = (out[name]["real_acc"] + out[name]["fake_acc"]) / 2
        out["per_family_fake_acc"] = {
            f: float(np.mean(pred[fam == f])) for f in sorted(set(fam[y == 1]))
        }
        runs.append(out)

    def mean(path):
        vals = []
        for r in runs:
            v = r
            for k in path:
                v = v[k]
            vals.append(v)
        return round(float(np.mean(vals)), 3)

    summary = {
        "target_real_accuracy": args.target,
        "seeds": args.seeds,
        "n": {"real": int((y == 0).sum()), "fake": int(y.sum()), "with_refs": int(ref.sum())},
    }
    for name in ("all", "with_refs", "no_refs"):
        summary[name] = {k: mean((name, k)) for k in ("real_acc", "fake_acc", "avg_acc")}
    summary["per_family_fake_acc"] = {
        f: mean(("per_family_fake_acc", f)) for f in runs[0]["per_family_fake_acc"]
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
