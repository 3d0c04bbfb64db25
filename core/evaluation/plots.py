"""Pictures of an evaluation (``idwatch eval ... --plots DIR``) and their HTML page.

- ``roc_by_generator.png``: ROC of each generator family's fakes against all real
  images (out-of-fold scores); dashed, the same family when it was left out of
  training (leave-one-generator-out), where that table was computed;
- ``score_histograms.png``: real and fake scores with and without references, and
  the decision threshold(s);
- ``tsne_real_fake.png`` / ``tsne_identity.png``: t-SNE maps of the detector's
  standardised feature vectors, coloured by real/fake (marker: generator family)
  and by identity. Clusters by identity or source, rather than by label, are what
  a detector that fails to generalise looks like;
- ``confound.png``: how well the features tell PNG-origin from JPEG-origin real
  photos ("was it a PNG"), per feature group, with chance and the bound;
- ``index.html``: the key numbers, the tables and the pictures, next to report.json.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluation.honest import RowTable

_FAMILY_COLOURS = {
    "simswap": "#1f77b4",
    "deepfacelab": "#ff7f0e",
    "inswapper": "#2ca02c",
    "instantid": "#d62728",
    "arc2face": "#9467bd",
    "stylegan2": "#8c564b",
}
_MARKERS = {
    "real": "o",
    "simswap": "s",
    "deepfacelab": "^",
    "inswapper": "v",
    "instantid": "D",
    "arc2face": "P",
    "stylegan2": "X",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close one figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr, float(roc_auc_score(y, s))


def roc_by_generator(
    path: Path, scores: dict[str, list], logo: dict[str, Any] | None = None, title: str = ""
) -> Path | None:
    plt = _plt()
    y = np.array(scores["label"])
    s = np.array(scores["score"], float)
    fam = np.array(scores["family"])
    real = y == 0
    if not real.any() or not (y == 1).any():
        return None
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls=":")
    fpr, tpr, auc = _roc(y, s)
    ax.plot(fpr, tpr, color="black", lw=2.2, label=f"all fakes (n={int(y.sum())}) AUC {auc:.2f}")
    for f in sorted(set(fam[y == 1].tolist()), key=lambda f: -int(((fam == f) & (y == 1)).sum())):
        sel = real | ((fam == f) & (y == 1))
        n = int(((fam == f) & (y == 1)).sum())
        colour = _FAMILY_COLOURS.get(f)
        fpr, tpr, auc = _roc(y[sel], s[sel])
        ax.plot(fpr, tpr, lw=1.5, color=colour, label=f"{f} (n={n}) AUC {auc:.2f}")
        lo = (logo or {}).get(f)
        if lo and lo.get("runs"):
            r = lo["runs"][0]["scores"]
            rows = np.array(r["row"])
            ls = np.array(r["score"], float)
            ly = np.array([scores_label_of(scores, i) for i in rows])
            if len(set(ly.tolist())) == 2:
                fpr, tpr, auc = _roc(ly, ls)
                ax.plot(
                    fpr, tpr, lw=1.2, ls="--", color=colour, label=f"  {f} left out: AUC {auc:.2f}"
                )
    ax.set_xlabel("false positive rate (real photos flagged)")
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.set_title(title or "ROC per generator family (out-of-fold scores)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    _save(fig, path)
    return path


def scores_label_of(scores: dict[str, list], row: int) -> int:
    """Label of manifest row ``row`` in a score table keyed by ``scores["row"]``."""
    idx = scores.get("_row_index")
    if idx is None:
        idx = {r: k for k, r in enumerate(scores.get("row", []))}
        scores["_row_index"] = idx
    return int(scores["label"][idx[row]])


def score_histograms(path: Path, scores: dict[str, list], title: str = "") -> Path | None:
    plt = _plt()
    y = np.array(scores["label"])
    s = np.array(scores["score"], float)
    ref = np.array(scores.get("has_ref", [0] * len(y)), bool)
    face = np.array(scores.get("has_face", [1] * len(y)), bool)
    thr = np.array(scores.get("threshold", [np.nan] * len(y)), float)
    panels = [("with references", ref & face), ("without references", ~ref & face)]
    panels = [(t, m) for t, m in panels if m.any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for ax, (label, m) in zip(axes[0], panels, strict=True):
        ax.hist(
            s[m & (y == 0)],
            bins,
            alpha=0.6,
            color="#2ca02c",
            label=f"real (n={int((m & (y == 0)).sum())})",
        )
        ax.hist(
            s[m & (y == 1)],
            bins,
            alpha=0.6,
            color="#d62728",
            label=f"fake (n={int((m & (y == 1)).sum())})",
        )
        t = thr[m & np.isfinite(thr)]
        for v in sorted(set(np.round(t, 3).tolist()))[:8]:
            ax.axvline(v, color="black", lw=0.8, ls="--")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("fake score (dashed: decision threshold(s))")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Score distributions (out-of-fold)", fontsize=10)
    _save(fig, path)
    return path


def tsne_maps(
    out_dir: Path, table: RowTable, feature_groups: str, seed: int = 0, top_identities: int = 10
) -> list[Path]:
    """Two t-SNE maps of the standardised feature vectors of the images with a face."""
    from sklearn.manifold import TSNE

    plt = _plt()
    rows = np.flatnonzero(table.has_face)
    if len(rows) < 5:
        return []
    cols = table.columns(feature_groups)
    X = table.X[np.ix_(rows, cols)]
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 1e-9, X.std(axis=0), 1.0)
    perplexity = float(min(30, max(2, (len(rows) - 1) // 3)))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)
    y = table.y[rows]
    fam = table.families[rows]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for f in ["real"] + sorted(set(fam.tolist()) - {"real"}):
        m = fam == f
        if not m.any():
            continue
        colour = "#2ca02c" if f == "real" else "#d62728"
        ax.scatter(
            emb[m, 0],
            emb[m, 1],
            s=22,
            c=colour,
            marker=_MARKERS.get(f, "*"),
            alpha=0.75,
            edgecolors="none",
            label=f"{f} ({int(m.sum())})",
        )
    ax.set_title(
        f"t-SNE of the detector's features ({feature_groups}): real (green) / fake (red)",
        fontsize=9,
    )
    ax.legend(fontsize=7, markerscale=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    paths.append(_save(fig, out_dir / "tsne_real_fake.png"))

    names = np.array([(table.rows[i].identities or [""])[0] for i in rows])
    counts = Counter(n for n in names.tolist() if n)
    top = [n for n, _ in counts.most_common(top_identities)]
    cmap = plt.get_cmap("tab10" if len(top) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    other = ~np.isin(names, top)
    ax.scatter(
        emb[other, 0],
        emb[other, 1],
        s=12,
        c="#cccccc",
        edgecolors="none",
        label=f"other / anonymous ({int(other.sum())})",
    )
    for k, n in enumerate(top):
        for lab, marker in ((0, "o"), (1, "x")):
            m = (names == n) & (y == lab)
            if m.any():
                ax.scatter(
                    emb[m, 0],
                    emb[m, 1],
                    s=30,
                    color=cmap(k % cmap.N),
                    marker=marker,
                    label=f"{n} {'fake' if lab else 'real'} ({int(m.sum())})",
                )
    ax.set_title("Same map by identity (o real, x fake; top identities by image count)", fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    paths.append(_save(fig, out_dir / "tsne_identity.png"))
    return paths


CONFOUND_GROUPS = ("jpeg", "face", "image", "ref", "face+image+ref", "all")
CONFOUND_PANELS = (
    ("png_vs_jpeg_origin", "real photos: PNG-origin vs JPEG-origin source"),
    ("video_vs_jpeg_origin", "real: video frames vs JPEG-origin photos"),
    ("recompressed", "each real PNG file vs itself as JPEG"),
)


def _confound_values(confound: dict[str, Any], panel: str, cond: str) -> dict[str, float] | None:
    if panel == "recompressed":
        return confound.get("recompressed" if cond == "this" else "recompressed_baseline")
    return (confound.get("natural", {}).get(cond) or {}).get(panel)


def confound_chart(path: Path, confound: dict[str, Any]) -> Path | None:
    plt = _plt()
    conds = [c for c in ("baseline", "this") if confound.get("natural", {}).get(c)]
    if not conds:
        return None
    names = {
        "baseline": "format-blind (JPEG q90)",
        "this": "normalised" if "normalise" in confound.get("preprocess", {}) else "this run",
    }
    fig, axes = plt.subplots(1, len(CONFOUND_PANELS), figsize=(14, 4.0), sharey=True)
    width = 0.8 / len(conds)
    x = np.arange(len(CONFOUND_GROUPS))
    for ax, (panel, title) in zip(axes, CONFOUND_PANELS, strict=True):
        n_txt = ""
        for c, cond in enumerate(conds):
            vals = _confound_values(confound, panel, cond) or {}
            v = [vals.get(g, float("nan")) for g in CONFOUND_GROUPS]
            ax.bar(x + c * width, v, width, label=names[cond])
            if "n_positive" in vals:
                n_txt = f" ({vals['n_positive']} vs {vals['n_negative']})"
            elif "n_images" in vals:
                n_txt = f" ({vals['n_images']} images x 2)"
        ax.axhline(0.5, color="#888888", lw=0.8, ls=":")
        ax.axhline(confound.get("bound", 0.65), color="red", lw=1, ls="--", label="bound")
        null = confound.get("null", {})
        if panel == "png_vs_jpeg_origin" and null.get("p95"):
            ax.axhline(null["p95"], color="#555555", lw=0.8, ls="-.", label="chance, 95th pct")
        ax.set_xticks(x + width * (len(conds) - 1) / 2)
        ax.set_xticklabels(CONFOUND_GROUPS, fontsize=7, rotation=20)
        ax.set_ylim(0.2, 1.2)
        ax.set_yticks(np.arange(0.2, 1.01, 0.1))
        ax.set_title(title + n_txt, fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    axes[0].set_ylabel("out-of-fold AUC of the origin probe")
    fig.suptitle("Can the detector's features tell where a real image came from?", fontsize=10)
    _save(fig, path)
    return path


# --------------------------------------------------------------------------- page


def _f(v: Any) -> str:
    if isinstance(v, dict) and "mean" in v:
        sd = v.get("sd")
        return _f(v["mean"]) + (f" ± {sd:.3f}" if sd and not math.isnan(sd) else "")
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_f(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_index(out_dir: Path, report: dict[str, Any], images: list[Path]) -> Path:
    from core.evaluation.protocol import REQUIRED_KEYS

    keys = [k for k in REQUIRED_KEYS if k not in ("per_method", "detector", "face_backend")]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>idwatch eval</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right;font-size:13px}th{background:#f2f2f2}"
        "img{max-width:100%;border:1px solid #ddd;margin:.4em 0}</style>",
        f"<h1>idwatch eval: {html.escape(str(report.get('detector')))} / "
        f"{html.escape(str(report.get('face_backend')))}</h1>",
        "<p><a href='report.json'>report.json</a> (every number on this page)</p>",
    ]
    proto = report.get("protocol")
    if proto:
        parts.append(
            "<h2>Protocol</h2>"
            + _table(["setting", "value"], [[k, str(v)] for k, v in proto.items()])
        )
    parts.append(
        "<h2>Key numbers</h2>" + _table(["measure", "value"], [[k, report.get(k)] for k in keys])
    )
    if report.get("same_identity"):
        si = report["same_identity"]
        parts.append(
            "<p>same_identity_auc is the mean over identities of the AUC of fakes of X vs "
            "real photos of X among images stage 1 claims for X; pooled over those rows: "
            f"{_f(si.get('auc_pooled'))} ({si.get('n_identities')} identities, "
            f"{si.get('n_real')} real, {si.get('n_fake')} fake).</p>"
        )
    if report.get("pooled"):
        rows = [[k, report["pooled"][k], report["per_fold"][k]] for k in report["pooled"]]
        parts.append(
            "<h2>Pooled out-of-fold vs per fold</h2>"
            + _table(["measure", "pooled (mean ± sd over seeds)", "per fold (mean ± sd)"], rows)
        )
    if report.get("folds"):
        fr = [
            [
                f["seed"],
                f["fold"],
                f["test"]["n_images"],
                f["test"]["n_real"],
                f["test"]["n_fake"],
                f["test"]["n_figures"],
                f["test"]["n_groups"],
                f["test"]["largest_group"],
                f["feature_groups"],
                f.get("real_acc"),
                f.get("fake_acc"),
                f.get("auc"),
                f.get("map"),
                f["leaks"],
            ]
            for f in report["folds"]
        ]
        parts.append(
            "<h2>Folds (test side)</h2>"
            + _table(
                [
                    "seed",
                    "fold",
                    "images",
                    "real",
                    "fake",
                    "figures",
                    "groups",
                    "largest group",
                    "chosen groups",
                    "real acc",
                    "fake acc",
                    "AUC",
                    "mAP",
                    "leaks",
                ],
                fr,
            )
        )
    pm = report.get("per_method", {})
    if pm:
        parts.append(
            "<h2>Per method</h2>"
            + _table(
                ["method", "n", "figures", "groups", "acc"],
                [
                    [m, v["n"], v.get("figures", ""), v.get("groups", ""), v["acc"]]
                    for m, v in pm.items()
                ],
            )
        )
    logo = report.get("logo")
    if logo:
        parts.append(
            "<h2>Leave one generator out</h2>"
            + _table(
                [
                    "family left out",
                    "fakes",
                    "figures",
                    "groups",
                    "real acc",
                    "fake acc",
                    "avg",
                    "AUC",
                ],
                [
                    [
                        f,
                        v["n_fake"],
                        v["figures"],
                        v["n_groups"],
                        v["real_acc"],
                        v["fake_acc"],
                        v["avg_acc"],
                        v["auc"],
                    ]
                    for f, v in logo.items()
                    if "skipped" not in v
                ],
            )
        )
    conf = report.get("confound")
    if conf:
        rows = []
        for panel, title in CONFOUND_PANELS:
            for cond in ("baseline", "this"):
                vals = _confound_values(conf, panel, cond)
                if vals:
                    rows.append(
                        [f"{title} ({cond})"] + [vals.get(g, float("nan")) for g in CONFOUND_GROUPS]
                    )
        parts.append(
            "<h2>Residual compression confound</h2>"
            + _table(["probe (out-of-fold AUC)", *CONFOUND_GROUPS], rows)
        )
        null = conf.get("null", {})
        parts.append(
            f"<p>Chance (PNG-origin labels shuffled, {null.get('n')} times): mean "
            f"{_f(null.get('mean'))}, 95th percentile {_f(null.get('p95'))}, 99th "
            f"{_f(null.get('p99'))}. Bound held by the dataset test: {_f(conf.get('bound'))}."
            f" Preprocessing: {html.escape(json.dumps(conf.get('preprocess')))}.</p>"
        )
    for p in images:
        parts.append(
            f"<h3>{html.escape(p.stem.replace('_', ' '))}</h3><img src='{html.escape(p.name)}'>"
        )
    out = out_dir / "index.html"
    out.write_text("\n".join(parts) + "\n")
    return out


def write_all(
    out_dir: Path, report: dict[str, Any], table: RowTable | None, feature_groups: str | None
) -> list[Path]:
    """Every picture that the report supports, report.json and index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    scores = report.get("scores")
    if scores:
        sc = dict(scores)
        if "row" not in sc:
            sc["row"] = list(range(len(sc["label"])))
        what = (
            "out-of-fold scores"
            if report.get("protocol")
            else f"scores of {report.get('detector')} (detection table)"
        )
        for fn in (
            lambda: roc_by_generator(
                out_dir / "roc_by_generator.png",
                sc,
                report.get("logo"),
                f"ROC per generator family ({what})",
            ),
            lambda: score_histograms(
                out_dir / "score_histograms.png", sc, f"Score distributions ({what})"
            ),
        ):
            p = fn()
            if p:
                images.append(p)
    if table is not None and feature_groups:
        images += tsne_maps(out_dir, table, feature_groups)
    if report.get("confound"):
        p = confound_chart(out_dir / "confound.png", report["confound"])
        if p:
            images.append(p)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_index(out_dir, report, images)
    return images
