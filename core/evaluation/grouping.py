"""Leakage groups and grouped folds: no person and no source figure on both sides.

faces-dev (and any manifest in its format) draws several images from one source file:
crops of one paper figure, the two halves of one demo video frame. Such images share
the figure's resampling, compression and colour history, and often its people. An
evaluation that keeps people apart but not figures lets a head recognise the figure.

Each image is linked to its *source figure* (the manifest's ``source`` without the
"(crop)" / "(frame, left half)" note: repository, commit and path of the file) and to
every identity it shows or impersonates. The connected components of that
image/identity/figure graph are the *leakage groups*: folds built from whole groups
never put one person or one figure on both sides.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.demo.dataset import ManifestRow

# Generator families for the leave-one-generator-out table (methods of faces-dev).
FAMILIES: dict[str, tuple[str, ...]] = {
    "simswap": ("simswap",),
    "deepfacelab": ("deepfacelab-dfm",),
    "inswapper": ("inswapper",),
    "instantid": ("instantid", "instantid-kolors"),
    "arc2face": ("arc2face", "arc2face-exp"),
    "stylegan2": ("stylegan2", "stylegan2-tpdne"),
}


def family_of(method: str, label: str) -> str:
    if label == "real":
        return "real"
    for fam, methods in FAMILIES.items():
        if method in methods:
            return fam
    return method


_NOTE = re.compile(r"\s*\([^()]*\)\s*$")


def figure_key(row: ManifestRow) -> str:
    """The source file an image was taken from: ``source`` without its trailing
    parenthesised note ("(crop)", "(frame, left half)", "(mid frame)"); the image's own
    file name when the manifest gives no source."""
    src = (row.source or "").strip()
    while True:
        stripped = _NOTE.sub("", src)
        if stripped == src:
            break
        src = stripped
    return src or f"file:{row.path.name}"


def origin_format(row: ManifestRow) -> str:
    """The format of the source file an image came from ("png", "jpg", "mp4", ...):
    the extension of its figure key. A frame of a video saved as PNG is "mp4": its
    compression history is the video codec's, not a PNG's."""
    name = figure_key(row)
    if name.startswith("file:"):
        name = row.path.name
    ext = name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    return {"jpeg": "jpg"}.get(ext, ext)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        root = a
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def leakage_groups(rows: Sequence[ManifestRow]) -> np.ndarray:
    """One label per row: the connected component of the row in the graph that links
    each image to its source figure and to each of its identities. Two rows with a
    person or a figure in common always get the same label."""
    uf = _UnionFind()
    for i, r in enumerate(rows):
        node = f"img:{i}"
        uf.union(node, "fig:" + figure_key(r))
        for name in r.identities:
            uf.union(node, "id:" + name)
    roots = [uf.find(f"img:{i}") for i in range(len(rows))]
    # Stable, readable labels: the component's first identity, else its first figure.
    label: dict[str, str] = {}
    for i, r in enumerate(rows):
        root = roots[i]
        if root not in label or (r.identities and label[root].startswith("fig:")):
            label[root] = ("id:" + r.identities[0]) if r.identities else "fig:" + figure_key(r)
    return np.array([label[root] for root in roots])


def check_disjoint(
    rows: Sequence[ManifestRow], train: Sequence[int], test: Sequence[int]
) -> list[str]:
    """Identities and figures found on both sides (empty when the split is clean)."""

    def keys(idx: Sequence[int]) -> set[str]:
        out = set()
        for i in idx:
            out.add("figure " + figure_key(rows[i]))
            out.update("identity " + n for n in rows[i].identities)
        return out

    return sorted(keys(train) & keys(test))


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold over whole groups (sklearn's StratifiedGroupKFold, shuffled
    with ``seed``). Folds is lowered to the number of groups when there are fewer."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    k = max(2, min(folds, n_groups))
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(y, y, groups)]


@dataclass
class FoldInfo:
    """What one test fold rests on."""

    n_images: int
    n_real: int
    n_fake: int
    n_groups: int
    n_figures: int
    n_identities: int
    largest_group: int
    methods: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fold_info(rows: Sequence[ManifestRow], groups: np.ndarray, idx: Sequence[int]) -> FoldInfo:
    idx = list(idx)
    sizes = Counter(groups[i] for i in idx)
    return FoldInfo(
        n_images=len(idx),
        n_real=sum(rows[i].label == "real" for i in idx),
        n_fake=sum(rows[i].label == "fake" for i in idx),
        n_groups=len(sizes),
        n_figures=len({figure_key(rows[i]) for i in idx}),
        n_identities=len({n for i in idx for n in rows[i].identities}),
        largest_group=max(sizes.values()) if sizes else 0,
        methods=dict(sorted(Counter(rows[i].method for i in idx).items())),
    )


def figure_table(rows: Sequence[ManifestRow], groups: np.ndarray) -> dict[str, Any]:
    """How many images each source figure and each leakage group holds."""
    figs: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        figs[figure_key(r)].append(i)
    multi = {f: idx for f, idx in figs.items() if len(idx) > 1}
    comp = Counter(groups.tolist())
    return {
        "n_images": len(rows),
        "n_figures": len(figs),
        "n_figures_with_several_images": len(multi),
        "n_images_from_shared_figures": sum(len(v) for v in multi.values()),
        "figures": {
            f: {
                "n": len(idx),
                "real": sum(rows[i].label == "real" for i in idx),
                "fake": sum(rows[i].label == "fake" for i in idx),
                "group": str(groups[idx[0]]),
            }
            for f, idx in sorted(multi.items(), key=lambda t: -len(t[1]))
        },
        "n_groups": len(comp),
        "group_sizes": sorted(comp.values(), reverse=True),
        "largest_groups": {
            g: {
                "n": n,
                "real": int(sum(rows[i].label == "real" for i in np.flatnonzero(groups == g))),
                "fake": int(sum(rows[i].label == "fake" for i in np.flatnonzero(groups == g))),
            }
            for g, n in comp.most_common(5)
        },
    }


def method_support(
    rows: Sequence[ManifestRow], groups: np.ndarray, idx: Sequence[int] | None = None
) -> dict[str, dict[str, int]]:
    """Per method: images, source figures and leakage groups they come from."""
    idx = range(len(rows)) if idx is None else idx
    by: dict[str, list[int]] = defaultdict(list)
    for i in idx:
        by[rows[i].method].append(i)
    return {
        m: {
            "n": len(v),
            "figures": len({figure_key(rows[i]) for i in v}),
            "groups": len({groups[i] for i in v}),
        }
        for m, v in sorted(by.items())
    }


def iter_folds(
    y: np.ndarray, groups: np.ndarray, folds: int, seeds: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(seed, fold, train, test) over ``seeds`` repetitions of grouped K-fold."""
    for s in range(seeds):
        for f, (tr, te) in enumerate(grouped_folds(y, groups, folds, s)):
            yield s, f, tr, te
