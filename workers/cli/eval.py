"""``idwatch eval`` and ``idwatch detector train|split`` (registered by workers/cli.py).

idwatch eval MANIFEST [--detector offline|univfd|HEAD.json] [--json OUT] [--plots DIR]
idwatch eval MANIFEST --cv grouped [--folds 5] [--seeds 1] [--logo] [--plots DIR] [--json OUT]
idwatch detector train MANIFEST --out HEAD.json [--backbone offline|clip] [--groups ...]
idwatch detector split MANIFEST --out DIR [--test-fraction 0.5] [--seed 0]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)

detector_app = typer.Typer(help="Train and manage stage-2 detector heads.", no_args_is_help=True)


def _settings():
    from core.settings import Settings

    return Settings()  # fresh: --data-dir may have changed the environment


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _stage_progress(prog: Progress):
    tasks: dict[str, Any] = {}

    def cb(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return cb


def _backend(name: str | None, model_dir: Path):
    from core.faces.registry import make_face_backend

    settings = _settings()
    backend = make_face_backend(name or settings.face_backend, model_dir, settings.model_cache_dir)
    backend.load()
    return backend


def _identity_for(name: str, backend, model_dir: Path):
    """The offline detector's identity embedder ``name`` (a head's backbones.identity),
    shared with stage 1 when it is the same backend."""
    if backend.name == name:
        return backend
    return _backend(name, model_dir)


def make_scorer(
    detector: str | None,
    backend,
    model_dir: Path,
    allow_random_backbone: bool = False,
):
    """A protocol scorer for ``--detector``: "offline" (packaged head), "univfd"
    (released UnivFD head + CLIP), a head JSON path (offline or clip-ref), or None
    (the configured detector)."""
    from core.evaluation.dataset_features import OfflineExtractor
    from core.evaluation.protocol import HeadScorer
    from core.forensics.head import Head
    from core.forensics.offline import head_identity, packaged_head

    settings = _settings()
    if detector is None:
        if settings.detector_path is not None:
            detector = str(settings.detector_path)
        else:
            from core.forensics.registry import resolve_detector_name

            detector = resolve_detector_name(settings.detector, model_dir)
    if detector == "univfd":
        from core.forensics.clip_ref import ClipRefExtractor, UnivFDScorer, make_encoder
        from core.forensics.univfd import head_path, load_univfd_head

        w, b = load_univfd_head(head_path(model_dir))
        enc = make_encoder(model_dir, allow_random_backbone)
        return UnivFDScorer(ClipRefExtractor(enc), w, b)
    packaged = packaged_head(model_dir, settings.model_cache_dir)
    path = packaged if detector == "offline" else Path(detector)
    if not path.exists():
        raise typer.BadParameter(f"--detector: no such head file or detector name: {detector}")
    head = Head.load(path)
    q = head.preprocess.get("reencode_jpeg_quality")
    if head.detector == "offline":
        from core.forensics.normalise import Normaliser

        norm = head.preprocess.get("normalise")
        ex = OfflineExtractor(
            _identity_for(head_identity(head), backend, model_dir),
            reencode_quality=q,
            normaliser=Normaliser.from_dict(norm) if norm else None,
        )
    elif head.detector == "clip-ref":
        from core.forensics.clip_ref import ClipRefExtractor, make_encoder

        ex = ClipRefExtractor(make_encoder(model_dir, allow_random_backbone), reencode_quality=q)
    else:
        raise typer.BadParameter(f"{path}: head for unknown detector {head.detector!r}")
    label = f"packaged {path.name}" if path == packaged else str(path)
    return HeadScorer(ex, head, source=label)


def _f(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def print_report(r: dict[str, Any]) -> None:
    t = Table(title=f"idwatch eval: {r['detector']} / {r['face_backend']}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    from core.evaluation.protocol import REQUIRED_KEYS

    shown = [k for k in REQUIRED_KEYS if k not in ("per_method", "detector", "face_backend")]
    for k in shown:
        t.add_row(k, _f(r[k]))
    out.print(t)
    m = Table(title="per method (accuracy: real for originals, fake for generators)")
    cols = ["method", "n", "acc"]
    if any("figures" in v for v in r["per_method"].values()):
        cols = ["method", "n", "figures", "groups", "acc"]
    for c in cols:
        m.add_column(c, justify="left" if c == "method" else "right")
    for name, v in r["per_method"].items():
        m.add_row(name, *(_f(v.get(c, "")) for c in cols[1:]))
    out.print(m)
    s = r.get("strata", {})
    if s:
        st = Table(title="detection by reference availability (leave-one-out references)")
        for c in ("rows", "n", "real_acc", "fake_acc", "avg_acc", "auc"):
            st.add_column(c, justify="left" if c == "rows" else "right")
        for name, v in s.items():
            st.add_row(name, *(_f(v[c]) for c in ("n", "real_acc", "fake_acc", "avg_acc", "auc")))
        out.print(st)
    if r.get("folds"):
        ft = Table(title="folds (test side; leaks = identities/figures also in training)")
        cols = ["seed", "fold", "images", "real", "fake", "figures", "groups", "largest"]
        cols += ["groups chosen", "real_acc", "fake_acc", "auc", "same_id_auc", "map", "leaks"]
        for c in cols:
            ft.add_column(c, justify="right")
        for f in r["folds"]:
            te = f["test"]
            ft.add_row(
                *tuple(str(v) for v in (f["seed"], f["fold"], te["n_images"], te["n_real"]))
                + (str(te["n_fake"]), str(te["n_figures"]), str(te["n_groups"]))
                + (str(te["largest_group"]), f["feature_groups"])
                + tuple(
                    _f(f.get(k, float("nan")))
                    for k in ("real_acc", "fake_acc", "auc", "same_identity_auc", "map")
                )
                + (str(f["leaks"]),)
            )
        out.print(ft)
        pt = Table(title="pooled out-of-fold (mean ± sd over seeds) and per fold (mean ± sd)")
        for c in ("measure", "pooled", "per fold"):
            pt.add_column(c, justify="left" if c == "measure" else "right")
        for k, v in r["pooled"].items():
            pf = r["per_fold"][k]
            pt.add_row(k, f"{_f(v['mean'])} ± {_f(v['sd'])}", f"{_f(pf['mean'])} ± {_f(pf['sd'])}")
        out.print(pt)
    if r.get("logo"):
        lt = Table(title="leave one generator out (trained without the family, tested on it)")
        for c in ("family", "fakes", "figures", "groups", "real_acc", "fake_acc", "avg", "auc"):
            lt.add_column(c, justify="left" if c == "family" else "right")
        for fam, v in r["logo"].items():
            if "skipped" in v:
                lt.add_row(fam, str(v["n_fake"]), "", "", v["skipped"])
                continue
            lt.add_row(
                fam,
                str(v["n_fake"]),
                str(v["figures"]),
                str(v["n_groups"]),
                *(_f(v[k]["mean"]) for k in ("real_acc", "fake_acc", "avg_acc", "auc")),
            )
        out.print(lt)
    c = r.get("confound")
    if c:
        from core.evaluation.plots import CONFOUND_GROUPS, CONFOUND_PANELS, _confound_values

        ct = Table(title="where did a real image come from? (out-of-fold AUC of a probe)")
        ct.add_column("probe")
        for g in CONFOUND_GROUPS:
            ct.add_column(g, justify="right")
        for panel, _title in CONFOUND_PANELS:
            for cond in ("baseline", "this"):
                v = _confound_values(c, panel, cond)
                if v:
                    ct.add_row(
                        f"{panel} ({cond})", *(_f(v.get(g, float("nan"))) for g in CONFOUND_GROUPS)
                    )
        out.print(ct)
        null = c.get("null", {})
        out.print(
            f"chance (shuffled labels): mean {_f(null.get('mean'))}, "
            f"95th percentile {_f(null.get('p95'))}; bound {_f(c.get('bound'))}"
        )


def eval_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest.csv (path,label,identity,method)")],
    detector: Annotated[
        str | None,
        typer.Option(help="offline | univfd | a head JSON (default: the configured one)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    face_backend: Annotated[
        str | None, typer.Option(help="dlib | mobilefacenet | insightface (default: configured).")
    ] = None,
    match_threshold: Annotated[
        float | None,
        typer.Option(min=-1, max=1, help="Stage-1 cosine threshold (default: the backend's)."),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Feature cache folder (default: DATA_DIR/eval-cache).")
    ] = None,
    cv: Annotated[
        str | None,
        typer.Option(
            help="Train and test a head per fold instead of scoring a given one: 'grouped' "
            "(folds never share a person or a source figure; nested selection) or "
            "'identity' (the older identity-only folds, for comparison)."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=50, help="--cv: number of folds.")] = 5,
    seeds: Annotated[
        int, typer.Option(min=1, max=20, help="--cv: repetitions with other fold draws.")
    ] = 1,
    logo: Annotated[
        bool, typer.Option("--logo", help="--cv: add the leave-one-generator-out table.")
    ] = False,
    groups: Annotated[
        str | None,
        typer.Option(
            help="--cv: feature-group sets the nested selection chooses from, ';'-separated "
            "(one set: fixed, no selection). Default: "
            "face,image,ref;image,ref;face,ref;ref;face,image;face,image,jpeg,ref."
        ),
    ] = None,
    normalise: Annotated[
        bool,
        typer.Option(
            help="--cv: random re-encode and down-scale seeded by content before features "
            "(core.forensics.normalise); --no-normalise: format-blind JPEG q90 only."
        ),
    ] = True,
    confound: Annotated[
        bool, typer.Option(help="--cv: measure the residual PNG/JPEG confound.")
    ] = True,
    target_real_accuracy: Annotated[
        float,
        typer.Option(
            min=0.5, max=1.0, help="--cv: threshold target on the inner out-of-fold scores."
        ),
    ] = 0.9,
    plots: Annotated[
        Path | None,
        typer.Option(help="Write ROC, histograms, t-SNE maps and index.html into DIR."),
    ] = None,
    sbi: Annotated[
        int,
        typer.Option(
            min=0,
            max=8,
            help="--cv: add N self-blended copies of each training fold's real images as "
            "fakes (core.forensics.sbi).",
        ),
    ] = 0,
    sbi_only: Annotated[
        bool,
        typer.Option(
            help="--cv: train every fold on real images and their self-blended copies "
            "only (no real fake is ever trained on)."
        ),
    ] = False,
    allow_random_backbone: Annotated[
        bool, typer.Option(hidden=True, help="Tests only: random CLIP weights.")
    ] = False,
) -> None:
    """Measure impersonation retrieval (mAP), detection accuracy and stage 1 on MANIFEST."""
    from core.evaluation.dataset_features import DatasetFeatures, read_manifest
    from core.evaluation.protocol import evaluate

    settings = _settings()
    model_dir = settings.resolved_model_dir
    if not manifest.is_file():
        console.print(f"[red]no such manifest: {manifest}")
        raise typer.Exit(2)
    if cv not in (None, "grouped", "identity"):
        raise typer.BadParameter("--cv must be grouped or identity")
    if cv is None and (logo or groups or sbi or sbi_only):
        raise typer.BadParameter("--logo, --groups, --sbi and --sbi-only need --cv")
    from core.errors import ModelUnavailable
    from core.forensics.head import HeadFormatError

    try:
        backend = _backend(face_backend, model_dir)
        scorer = None if cv else make_scorer(detector, backend, model_dir, allow_random_backbone)
    except (ModelUnavailable, HeadFormatError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    thr = match_threshold if match_threshold is not None else settings.match_threshold
    cache_dir = cache or settings.data_dir / "eval-cache"
    table = None
    tsne_groups = None
    with _progress() as prog:
        cb = _stage_progress(prog)
        ds = DatasetFeatures(read_manifest(manifest), backend, cache_dir)
        ds.detect_all(lambda d, n, _w: cb("detect faces", d, n))
        if cv:
            report, table = _run_cv(
                manifest,
                backend,
                ds,
                cv,
                folds,
                seeds,
                logo,
                groups,
                normalise,
                confound,
                target_real_accuracy,
                thr,
                detector,
                cb,
                sbi,
                sbi_only,
            )
            chosen = report["feature_groups_chosen"]
            tsne_groups = max(chosen, key=chosen.get) if chosen else None
        else:
            assert scorer is not None
            report = evaluate(
                manifest, scorer, backend, match_threshold=thr, progress=cb, dataset=ds
            )
            if plots is not None:
                from core.evaluation.honest import build_table

                table = build_table(ds, scorer.extractor, report["match_threshold"])
                head = getattr(scorer, "head", None)
                if head is not None:
                    tsne_groups = ",".join(sorted({n.split(".")[0] for n in head.feature_names}))
    print_report(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1, default=float) + "\n")
        console.print(f"wrote {json_out}")
    if plots is not None:
        from core.evaluation.plots import write_all

        images = write_all(plots, report, table, tsne_groups)
        console.print(f"wrote {plots / 'index.html'} ({len(images)} pictures)")


def _run_cv(
    manifest,
    backend,
    ds,
    cv,
    folds,
    seeds,
    logo,
    groups,
    normalise,
    confound,
    target,
    thr,
    detector,
    cb,
    sbi=0,
    sbi_only=False,
):
    from core.evaluation.cv_eval import run_cv
    from core.evaluation.dataset_features import OfflineExtractor
    from core.evaluation.honest import DEFAULT_CANDIDATES
    from core.forensics.normalise import Normaliser

    if detector not in (None, "offline"):
        raise typer.BadParameter("--cv trains offline heads; --detector must be offline or unset")
    emb = backend  # identity features from the face backend under evaluation
    ex = OfflineExtractor(emb, 90, normaliser=Normaliser() if normalise else None)
    baseline = OfflineExtractor(emb, 90) if normalise else None
    candidates = [
        g.strip() for g in (groups or ";".join(DEFAULT_CANDIDATES)).split(";") if g.strip()
    ]
    return run_cv(
        manifest,
        backend,
        ex,
        folds=folds,
        seeds=seeds,
        group_by="leakage" if cv == "grouped" else "identity",
        candidates=candidates,
        target_real_accuracy=target,
        logo=logo,
        confound=confound,
        baseline_extractor=baseline,
        match_threshold=thr,
        progress=cb,
        dataset=ds,
        sbi=sbi,
        sbi_only=sbi_only,
    )


@detector_app.command("train")
def train_cmd(
    manifest: Annotated[Path, typer.Argument(help="Training manifest.csv.")],
    out_path: Annotated[Path, typer.Option("--out", help="Head JSON to write.")],
    backbone: Annotated[str, typer.Option(help="offline | clip (needs CLIP weights).")] = "offline",
    groups: Annotated[
        str, typer.Option(help="Feature groups: face,image,jpeg,ref,meta (clip: face,image,ref).")
    ] = "face,image,ref",
    format_blind: Annotated[
        bool,
        typer.Option(help="Re-encode every image as JPEG q90 before features (and at use)."),
    ] = True,
    normalise: Annotated[
        bool,
        typer.Option(
            help="Random re-encode and down-scale seeded by content before features "
            "(core.forensics.normalise; replaces --format-blind). The head records it, "
            "and the offline detector applies it at use."
        ),
    ] = False,
    target_real_accuracy: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Threshold target (share of reals kept).")
    ] = 0.9,
    cv_folds: Annotated[
        int,
        typer.Option(
            min=0,
            max=50,
            help="Identity- and figure-grouped CV folds for the estimate (0 or 1: none).",
        ),
    ] = 5,
    query_pairs: Annotated[
        bool,
        typer.Option(
            help="Also train on single-reference pairs claimed by stage 1, as eval ranks "
            "them (raises mAP, lowers leave-one-out detection accuracy; README)."
        ),
    ] = False,
    query_pair_ratio: Annotated[
        float | None,
        typer.Option(min=0, help="Cap pair rows at this multiple of the other rows."),
    ] = None,
    face_backend: Annotated[
        str | None, typer.Option(help="dlib | mobilefacenet | insightface.")
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option(
            help="Identity embedder of the offline features: mobilefacenet | dlib | "
            "insightface (default: the face backend)."
        ),
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Feature cache folder.")] = None,
    allow_random_backbone: Annotated[bool, typer.Option(hidden=True)] = False,
    feedback: Annotated[
        bool,
        typer.Option(
            help="Also train on reviewed alerts of this data dir (confirmed = fake, "
            "dismissed = real; grouped by person)."
        ),
    ] = False,
    feedback_wrong_person: Annotated[
        str, typer.Option(help="wrong_person reviews: exclude | real (look-alike).")
    ] = "exclude",
    sbi: Annotated[
        int,
        typer.Option(
            min=0,
            max=8,
            help="Also train on N self-blended copies of every real image as fakes "
            "(Self-Blended Images; core.forensics.sbi).",
        ),
    ] = 0,
    sbi_only: Annotated[
        bool,
        typer.Option(
            help="Train on the real images and their self-blended copies only: the "
            "manifest's fakes are never trained on (only scored in the CV estimate)."
        ),
    ] = False,
) -> None:
    """Fit the stage-2 head on MANIFEST and write a versioned head file (it records
    the data, the command and the data's terms: see `idwatch detector info`)."""
    from core.evaluation.dataset_features import OfflineExtractor
    from core.evaluation.train import train_detector

    settings = _settings()
    model_dir = settings.resolved_model_dir
    from core.errors import ModelUnavailable

    if backbone not in ("offline", "clip"):
        raise typer.BadParameter("--backbone must be offline or clip")
    q = 90 if format_blind else None
    try:
        backend = _backend(face_backend, model_dir)
        if backbone == "offline":
            from core.forensics.normalise import Normaliser

            ident = identity or backend.name
            ex = OfflineExtractor(
                _identity_for(ident, backend, model_dir),
                reencode_quality=q,
                normaliser=Normaliser() if normalise else None,
            )
        else:
            from core.forensics.clip_ref import ClipRefExtractor, make_encoder

            enc = make_encoder(model_dir, allow_random_backbone)
            ex = ClipRefExtractor(enc, reencode_quality=q)
    except ModelUnavailable as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    with _progress() as prog:
        task = prog.add_task("features", total=None)
        head = train_detector(
            manifest,
            out_path,
            backend,
            ex,
            groups=[g.strip() for g in groups.split(",") if g.strip()],
            target_real_accuracy=target_real_accuracy,
            cv_folds=cv_folds,
            query_pairs=query_pairs,
            query_pair_ratio=query_pair_ratio,
            match_threshold=_settings().match_threshold,
            cache_dir=cache or settings.data_dir / "eval-cache",
            progress=lambda d, n, _w: prog.update(task, completed=d, total=n),
            extra_rows=_feedback(manifest, ex, feedback_wrong_person) if feedback else None,
            sbi=sbi,
            sbi_only=sbi_only,
            command=_command_line(
                manifest=manifest,
                out=out_path,
                backbone=backbone,
                groups=groups,
                format_blind=format_blind,
                normalise=normalise,
                target_real_accuracy=target_real_accuracy,
                query_pairs=query_pairs,
                query_pair_ratio=query_pair_ratio,
                face_backend=backend.name,
                identity=getattr(getattr(ex, "embedder", None), "name", None),
                feedback=feedback,
                sbi=sbi,
                sbi_only=sbi_only,
            ),
        )
    if feedback:
        out.print(f"feedback rows (reviewed alerts): {head.training['n_extra_rows']}")
    cv = next(iter(head.training["metrics"].values()))
    out.print(
        f"wrote {out_path}: {head.detector}, {len(head.feature_names)} features, "
        f"C={head.C}, threshold={head.threshold:.3f}"
    )
    if cv:
        out.print(
            "identity+figure-grouped CV: "
            + ", ".join(f"{k}={_f(cv[k])}" for k in ("real_acc", "fake_acc", "avg_acc", "auc"))
        )
    out.print(f"terms: {head.training['provenance']['terms']['summary']}")


def _command_line(**opts: Any) -> str:
    """The training command with every choice that shapes the head spelled out (the
    defaults included), for its provenance."""
    import shlex

    parts = ["idwatch", "detector", "train"]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            parts += [flag, str(value)] if key != "manifest" else [str(value)]
    return " ".join(shlex.quote(p) for p in parts)


@detector_app.command("calibrate")
def calibrate_cmd(
    head_path: Annotated[Path, typer.Argument(help="The head JSON to calibrate.")],
    reals: Annotated[Path, typer.Option(help="Manifest of real photos (its fakes are ignored).")],
    out_path: Annotated[Path, typer.Option("--out", help="Calibrated head JSON to write.")],
    target_real_accuracy: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Share of the real photos kept below.")
    ] = 0.9,
    face_backend: Annotated[
        str | None, typer.Option(help="dlib | mobilefacenet | insightface.")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Feature cache folder.")] = None,
) -> None:
    """Set HEAD's threshold on your own real photos (weights unchanged): TARGET of
    them, per stratum with and without references, score below it."""
    from core.errors import ModelUnavailable
    from core.evaluation.calibrate import calibrate_head
    from core.forensics.head import HeadFormatError

    settings = _settings()
    model_dir = settings.resolved_model_dir
    if not reals.is_file():
        console.print(f"[red]no such manifest: {reals}")
        raise typer.Exit(2)
    try:
        backend = _backend(face_backend, model_dir)
        scorer = make_scorer(str(head_path), backend, model_dir)
        head = calibrate_head(
            head_path,
            reals,
            out_path,
            backend,
            scorer.extractor,
            target_real_accuracy,
            cache or settings.data_dir / "eval-cache",
        )
    except (ModelUnavailable, HeadFormatError, ValueError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    cal = head.training["threshold_calibration"]
    out.print(
        f"wrote {out_path}: threshold {head.threshold:.3f} from {cal['n_with_face']} real "
        f"photos with a face (target real accuracy {target_real_accuracy:.2f})"
    )


@detector_app.command("info")
def info_cmd(
    head_path: Annotated[
        Path | None,
        typer.Argument(help="A head JSON (default: the head the offline detector uses here)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the head's record.")] = False,
) -> None:
    """What a head is: detector, embedder, features, preprocessing, threshold, what it
    was trained on and under which terms (provenance)."""
    from core.forensics.head import Head, HeadFormatError
    from core.forensics.offline import head_identity, packaged_head
    from core.forensics.provenance import EMBEDDER_TERMS, describe

    settings = _settings()
    path = (
        head_path
        or settings.detector_path
        or packaged_head(settings.resolved_model_dir, settings.model_cache_dir)
    )
    try:
        head = Head.load(path)
    except (OSError, HeadFormatError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    training = head.training
    if as_json:
        rec = {
            "path": str(path),
            "detector": head.detector,
            "identity": head_identity(head),
            "features": len(head.feature_names),
            "feature_layout": head.feature_layout,
            "preprocess": head.preprocess,
            "threshold": head.threshold,
            "provenance": training.get("provenance"),
            "embedder_terms": EMBEDDER_TERMS.get(head_identity(head)),
            "metrics": training.get("metrics"),
        }
        out.print_json(json.dumps(rec, default=float))
        return
    t = Table(title=f"head {path}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    groups = ", ".join(f"{g} {n}" for g, n in sorted(head.feature_layout.items()))
    for label, text in [
        ("detector", f"{head.detector} (identity vectors: {head_identity(head)})"),
        ("features", f"{len(head.feature_names)} ({groups or 'layout not recorded'})"),
        ("preprocess", json.dumps(head.preprocess) if head.preprocess else "none"),
        ("threshold", f"{head.threshold:.3f}"),
        ("fakes", str(training.get("fakes", "the manifest's fakes"))),
        *describe(training, head_identity(head)),
    ]:
        t.add_row(label, text)
    out.print(t)


def _feedback(manifest: Path, ex, wrong_person: str):
    """``extra_rows`` for train_detector: the reviewed alerts of the configured system
    (core.review.feedback), grouped by person as the manifest spells them."""
    from core.evaluation.dataset_features import read_manifest
    from core.review.feedback import feedback_rows
    from core.services import Services

    if wrong_person not in ("exclude", "real"):
        raise typer.BadParameter("--feedback-wrong-person must be exclude or real")
    people = {n for r in read_manifest(manifest) for n in r.identities}

    def rows(names: list[str]):
        svc = Services(_settings())
        try:
            fb = feedback_rows(svc, ex, names, people, wrong_person)
        finally:
            svc.close()
        console.print(f"feedback: {fb.counts}")
        return fb.X, fb.y, fb.groups, fb.methods

    return rows


@detector_app.command("split")
def split_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest.csv to split.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for train.csv and test.csv.")],
    test_fraction: Annotated[
        float, typer.Option(min=0.05, max=0.95, help="Share of images in test.csv.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(min=0, help="Random seed of the split.")] = 0,
) -> None:
    """Write train.csv / test.csv (absolute paths) sharing no person and no figure."""
    from core.evaluation.dataset_features import write_split

    train, test = write_split(manifest, out_dir, test_fraction, seed)
    for p in (train, test):
        n = sum(1 for _ in p.open()) - 1
        out.print(f"{p}: {n} images")
