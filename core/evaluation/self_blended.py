"""Self-blended training rows (core.forensics.sbi) for the honest protocol and training.

Each real image with a face gives ``per_image`` self-blended copies, scored like the
image itself (same face, the same leave-one-out references: the other real photos of
its person) and labelled fake. A copy belongs to its source image: it carries the
source's leakage group, and a fold's head only ever sees copies of the real images of
its own training folds (``with_sbi``), so no test image's blend is trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from core.evaluation.dataset_features import DatasetFeatures, FeatureExtractor, Progress
from core.evaluation.honest import FitFn, FittedModel, RowTable
from core.forensics.sbi import sbi_variant

SBI_METHOD = "sbi"


def sbi_features(
    ds: DatasetFeatures,
    ex: FeatureExtractor,
    per_image: int = 2,
    rows: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> list[tuple[int, dict[str, float], int]]:
    """(source row, features, number of references) of every self-blended copy of the
    real images (of ``rows``) whose face has 68 landmarks (cached like the rest)."""
    wanted = range(len(ds.rows)) if rows is None else rows
    reals = [i for i in wanted if ds.rows[i].label == "real"]
    out = []
    for n, i in enumerate(reals):
        k, refs, _name = ds.loo_pair(i)
        if k is not None:
            ref_entries = [ds.entry(ex, j, kj) for j, kj in refs]
            for b in range(per_image):
                variant = sbi_variant(ds.face(i, k), b)
                if variant is None:
                    break
                e = ds.entry(ex, i, k, variant)
                out.append((i, ex.features(e, ref_entries), len(refs)))
        if progress:
            progress(n + 1, len(reals), ds.rows[i].path.name)
    ds.save()
    return out


def sbi_table(table: RowTable, feats: list[tuple[int, dict[str, float], int]]) -> RowTable:
    """The self-blended copies as rows of ``table``'s kind: label fake, method "sbi",
    the source's group, identity and manifest position (``row_ids``)."""
    src = np.array([i for i, _, _ in feats], int)
    sub = table.subset(src)  # positions of a full table are manifest positions
    X = np.array([[f[n] for n in table.names] for _, f, _ in feats], float).reshape(
        len(feats), len(table.names)
    )
    rows = [replace(r, label="fake", method=SBI_METHOD) for r in sub.rows]
    return replace(
        sub,
        rows=rows,
        X=X,
        y=np.ones(len(feats), int),
        has_face=np.ones(len(feats), bool),
        has_ref=np.array([n > 0 for _, _, n in feats], bool),
        methods=np.array([SBI_METHOD] * len(feats)),
        families=np.array([SBI_METHOD] * len(feats)),
        claimed=np.zeros(len(feats), bool),
    )


def concat(a: RowTable, b: RowTable) -> RowTable:
    if a.names != b.names:
        raise ValueError("tables with different features")
    return RowTable(
        rows=a.rows + b.rows,
        names=a.names,
        X=np.vstack([a.X, b.X]),
        y=np.concatenate([a.y, b.y]),
        has_face=np.concatenate([a.has_face, b.has_face]),
        has_ref=np.concatenate([a.has_ref, b.has_ref]),
        groups=np.concatenate([a.groups, b.groups]),
        id_groups=np.concatenate([a.id_groups, b.id_groups]),
        methods=np.concatenate([a.methods, b.methods]),
        families=np.concatenate([a.families, b.families]),
        claim_name=a.claim_name + b.claim_name,
        claimed=np.concatenate([a.claimed, b.claimed]),
        is_png=np.concatenate([a.is_png, b.is_png]),
        origin=np.concatenate([a.origin, b.origin]),
        row_ids=np.concatenate([a.row_ids, b.row_ids]),
    )


def with_sbi(fit: FitFn, sbi: RowTable, only: bool = False) -> FitFn:
    """A fitter that adds to a fold's training rows the self-blended copies of its own
    real images; ``only``: they are the only fakes (the fold's real fakes are dropped:
    the head is trained on real photos and their blends alone)."""

    def fitted(train: RowTable, seed: int) -> FittedModel:
        mine = np.isin(sbi.row_ids, train.row_ids[train.y == 0])
        base = train.subset(np.flatnonzero(train.y == 0)) if only else train
        model = fit(concat(base, sbi.subset(np.flatnonzero(mine))), seed)
        model.n_train = int(base.has_face.sum() + mine.sum())
        return model

    return fitted
