"""The demo job: register protected people, scan uploads, compare alerts with labels.

Works on the built-in offline demo set (made from images that installed packages
ship, with fakes the project makes, and a short video with one face-swapped segment)
or on any folder with a faces-dev style ``manifest.csv``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.alerts.listing import count_alerts
from core.demo.dataset import (
    EILEEN,
    ManifestRow,
    build_demo_set,
    load_manifest,
    load_references,
)
from core.pipeline.identities import RegistrationError, register_identity
from core.pipeline.sources.scan import ScanSummary, scan
from core.services import Services
from core.storage.models import Alert, Upload


@dataclass
class DemoResult:
    registered: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    summary: ScanSummary | None = None
    scan_alerts: int = 0  # alerts the scan raised
    backfill_alerts: int = 0  # alerts backfill raised for people registered after it
    backfill: list[str] = field(default_factory=list)  # one line per such person
    # Labelled outcome over uploads of protected identities.
    fakes: int = 0
    fakes_alerted: int = 0
    reals: int = 0
    reals_alerted: int = 0
    # Uploads with an alert naming someone the image is not labelled as (false alarms
    # on other people, anonymous faces included).
    others_alerted: int = 0
    # The demo video: path, who its swapped segment impersonates and when ([start, end) s).
    videos: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["summary"] = self.summary.as_dict() if self.summary else None
        return d


def _plan_from_manifest(rows: list[ManifestRow]) -> dict[str, list[Path]]:
    """Identities with both real and fake images; their real photos, sorted."""
    reals: dict[str, list[Path]] = defaultdict(list)
    fakes: set[str] = set()
    for r in rows:
        for ident in r.identities:
            (reals[ident].append(r.path) if r.label == "real" else fakes.add(ident))
    return {i: sorted(reals[i]) for i in sorted(fakes) if reals.get(i)}


def run_demo(
    svc: Services,
    dataset: Path | None,
    workdir: Path,
    progress: Callable[[int, int, Path], None] | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    res = DemoResult()
    if dataset is None:
        set_dir = workdir / "demo-set"
        manifest = build_demo_set(set_dir)
        refs = load_references(set_dir)
        rows = load_manifest(manifest)
        video = demo_video(set_dir)
        rows.append(video)
        res.videos.append({"path": str(video.path), "identity": EILEEN, "swap_s": VIDEO_SWAP_S})
        uploads = [r.path for r in rows]
        # Register the first person before scanning and the second after, to show that
        # registration also protects retroactively (backfill over the face index).
        names = list(refs)
        before, after = names[:1], names[1:]
        ref_files = {n: refs[n] for n in names}
    else:
        rows = load_manifest(Path(dataset) / "manifest.csv")
        candidates = _plan_from_manifest(rows)
        ref_files, used = {}, set()
        for name, photos in candidates.items():
            for p in photos:  # first real photo with exactly one usable face
                try:
                    register_identity(svc, name, [p], backfill_now=False)
                except RegistrationError as exc:
                    res.skipped.setdefault(name, str(exc))
                    continue
                ref_files[name] = [p]
                used.add(p)
                res.skipped.pop(name, None)
                break
        uploads = [r.path for r in rows if r.path not in used]
        before, after = [], []
        res.registered = {n: [str(p) for p in ps] for n, ps in ref_files.items()}

    for name in before:
        register_identity(svc, name, ref_files[name])
        res.registered[name] = [str(p) for p in ref_files[name]]
    res.summary = scan(svc, uploads, source="demo", progress=progress)
    res.scan_alerts = count_alerts(svc)
    for name in after:
        reg = register_identity(svc, name, ref_files[name])
        res.registered[name] = [str(p) for p in ref_files[name]]
        res.backfill_alerts += reg.backfill.alerts
        res.backfill.append(
            f"registered {name} after the scan: backfill matched {reg.backfill.matches} "
            f"earlier face(s), {reg.backfill.alerts} new alert(s)"
        )
        log(res.backfill[-1])

    _score_against_labels(svc, rows, set(res.registered), res)
    return res


# The demo video: 5 s of two people of t1.jpg, one of them carrying Eileen Collins' face
# from 2.0 s to 3.5 s (core.demo.video).
VIDEO_SWAP_S = (2.0, 3.5)


def demo_video(set_dir: Path) -> ManifestRow:
    """Make the demo's video next to the demo set; its manifest row (label fake)."""
    from core.demo.video import build_demo_video

    path = set_dir / "videos" / "clip_eileen_swapped_2.0-3.5s.mp4"
    clip = build_demo_video(path, identity=EILEEN, swap_s=VIDEO_SWAP_S)
    return ManifestRow(
        path=clip.path.resolve(),
        label="fake",
        identities=[EILEEN],
        method="faceswap (video segment)",
        source="core.demo.video from insightface t1.jpg and skimage astronaut",
        notes=f"{clip.duration_s:.0f} s at {clip.fps} fps, {EILEEN} swapped in "
        f"{VIDEO_SWAP_S[0]}-{VIDEO_SWAP_S[1]} s",
    )


def _score_against_labels(
    svc: Services, rows: list[ManifestRow], protected: set[str], res: DemoResult
) -> None:
    from sqlalchemy import select

    with svc.db.session() as s:
        by_name = {u.original_name: u.id for u in s.scalars(select(Upload))}
        alerted: dict[int, set[str]] = defaultdict(set)
        for upload_id, name in s.execute(select(Alert.upload_id, Alert.identity_name)):
            alerted[upload_id].add(name)
    for r in rows:
        uid = by_name.get(str(r.path))
        if uid is None:
            continue  # a registration photo, not scanned
        # A real photo counts for every protected person it shows, including those its
        # label leaves out (core.demo.amendments): an alert naming them is a false
        # alert on her real photo, not one "in the name of someone else".
        claimed = (r.shows() if r.label == "real" else set(r.identities)) & protected
        hit = bool(alerted.get(uid, set()) & claimed)
        if r.label == "fake" and claimed:
            res.fakes += 1
            res.fakes_alerted += hit
        elif r.label == "real" and claimed:
            res.reals += 1
            res.reals_alerted += hit
        if alerted.get(uid, set()) - claimed:
            res.others_alerted += 1
