"""A small CNN trained on CPU with Self-Blended Images, on the honest protocol.

The question of issue 9: does a small network, trained in minutes on this machine,
add evidence? Inputs are the loose face crops (96 px) of the normalised images
(core.forensics.normalise, as the detector's features see them). Each fold of the
honest protocol (grouped by identity and source figure, core.evaluation.grouping)
trains a network from scratch (no pretrained weights exist offline) on the fold's
real images and ``--sbi`` self-blended copies of each (core.forensics.sbi) as fakes,
optionally also on the fold's real fakes (``--with-fakes``), and scores the test
fold. Prints one JSON object: pooled out-of-fold AUC (all, with references, without),
AUC per generator family against all real images, training seconds per fold.

    .venv/bin/python scripts/sbi_cnn.py ../shared/data/faces-dev/manifest.csv \\
        --cache idwatch-data/eval-cache [--seeds 1] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIDE = 96


def crops(ds, has_face: np.ndarray, y: np.ndarray, per_image: int):
    """Normalised loose crops of every image with a face, and of ``per_image``
    self-blended copies of each real one (with their source row)."""
    from core.faces.crops import loose_crop
    from core.forensics.normalise import Normaliser
    from core.forensics.sbi import sbi_variant

    norm = Normaliser()
    X = np.zeros((len(y), SIDE, SIDE, 3), np.uint8)
    sbi_x, sbi_src = [], []
    for i in np.flatnonzero(has_face):
        k, _, _ = ds.loo_pair(i)
        face = ds.face(i, k)
        img, mapped = norm.apply(ds.image(i), face)
        X[i] = loose_crop(img, mapped, SIDE)
        if y[i] == 0:
            for b in range(per_image):
                v = sbi_variant(face, b)
                if v is None:
                    break
                img, mapped = norm.apply(v[1](ds.image(i)), face)
                sbi_x.append(loose_crop(img, mapped, SIDE))
                sbi_src.append(i)
    return X, np.array(sbi_x), np.array(sbi_src, int)


def make_net():
    import torch.nn as nn

    def block(a, b, s):
        return [nn.Conv2d(a, b, 3, s, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(3, 16, 1),
        *block(16, 32, 2),
        *block(32, 32, 1),
        *block(32, 64, 2),
        *block(64, 64, 1),
        *block(64, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(128, 1),
    )


def train_score(Xtr, ytr, Xte, epochs: int, seed: int) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 3e-3, total_steps=epochs * ((len(ytr) + 31) // 32)
    )
    pos = float(ytr.mean())
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / max(pos, 1e-6)))

    def tensor(x):
        return torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)

    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(ytr))
        for s in range(0, len(order), 32):
            idx = order[s : s + 32]
            xb = Xtr[idx]
            flip = rng.uniform(size=len(idx)) < 0.5
            xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
            loss = lossf(net(tensor(xb))[:, 0], torch.from_numpy(ytr[idx].astype(np.float32)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        return np.concatenate(
            [net(tensor(Xte[s : s + 64]))[:, 0].numpy() for s in range(0, len(Xte), 64)]
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache", type=Path, default=ROOT / "idwatch-data" / "eval-cache")
    ap.add_argument("--sbi", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--with-fakes", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from core.evaluation.dataset_features import DatasetFeatures, read_manifest
    from core.evaluation.grouping import family_of, grouped_folds, leakage_groups
    from core.evaluation.protocol import roc_auc
    from core.faces.registry import make_face_backend

    torch.set_num_threads(args.threads)
    backend = make_face_backend("mobilefacenet", None, None)
    backend.load()
    ds = DatasetFeatures(read_manifest(args.manifest), backend, args.cache)
    ds.detect_all()
    n = len(ds.rows)
    y = np.array([r.label == "fake" for r in ds.rows], int)
    has_face = np.array([ds.loo_pair(i)[0] is not None for i in range(n)])
    has_ref = np.array([bool(ds.loo_pair(i)[1]) for i in range(n)])
    groups = leakage_groups(ds.rows)
    fams = np.array([family_of(r.method, r.label) for r in ds.rows])
    t0 = time.perf_counter()
    X, SX, src = crops(ds, has_face, y, args.sbi)
    prep_s = time.perf_counter() - t0
    runs, fold_s = [], []
    for seed in range(args.seeds):
        score = np.full(n, np.nan)
        for tr, te in grouped_folds(y, groups, 5, seed):
            tr = tr[has_face[tr]]
            te = te[has_face[te]]
            keep = tr if args.with_fakes else tr[y[tr] == 0]
            mine = np.isin(src, tr)
            Xtr = np.concatenate([X[keep], SX[mine]])
            ytr = np.concatenate([y[keep], np.ones(mine.sum(), int)])
            t = time.perf_counter()
            score[te] = train_score(Xtr, ytr, X[te], args.epochs, seed)
            fold_s.append(time.perf_counter() - t)
            print(f"seed {seed} fold: {len(ytr)} rows, {fold_s[-1]:.0f} s", file=sys.stderr)
        ok = has_face
        res = {
            "auc": roc_auc(y[ok], score[ok]),
            "auc_with_refs": roc_auc(y[ok & has_ref], score[ok & has_ref]),
            "auc_no_refs": roc_auc(y[ok & ~has_ref], score[ok & ~has_ref]),
            "per_family_auc": {},
        }
        real = ok & (y == 0)
        for f in sorted(set(fams[y == 1])):
            sel = real | (ok & (fams == f))
            res["per_family_auc"][f] = roc_auc(y[sel], score[sel])
        runs.append(res)
    print(
        json.dumps(
            {
                "sbi_per_image": args.sbi,
                "with_real_fakes": args.with_fakes,
                "epochs": args.epochs,
                "n_images_with_face": int(has_face.sum()),
                "n_self_blended": len(SX),
                "prep_seconds": round(prep_s, 1),
                "train_seconds_per_fold": round(float(np.mean(fold_s)), 1),
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
