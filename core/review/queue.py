"""The review queue (filter, order, pages) and everything the page of one alert shows."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlencode

from PIL import Image
from sqlalchemy import func, select

from core.intake import declared_ai_source, extract_metadata
from core.review.actions import history, review_dict
from core.review.explain import provenance_flags, signals
from core.review.states import ReviewState
from core.services import Services
from core.storage.models import Alert, Face, ReferencePhoto, Upload

SORTS = {"newest": "newest first", "score": "highest fake score first"}
PER_PAGE_MAX = 100


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows; every field comes from the page's query string."""

    state: str | None = ReviewState.new  # None: every state
    identity: str | None = None
    sort: str = "newest"
    page: int = 1
    per_page: int = 25

    @classmethod
    def from_query(
        cls,
        state: str | None = None,
        identity: str | None = None,
        sort: str | None = None,
        page: int | str | None = None,
        per_page: int | str | None = None,
    ) -> QueueFilter:
        """Lenient: an unknown value falls back to the default (it is a link)."""
        st: str | None = ReviewState.new
        if state == "all":
            st = None
        elif state in {s.value for s in ReviewState}:
            st = state
        return cls(
            state=st,
            identity=(identity or "").strip()[:200] or None,
            sort=sort if sort in SORTS else "newest",
            page=max(1, _int(page, 1)),
            per_page=min(max(1, _int(per_page, 25)), PER_PAGE_MAX),
        )

    def query(self, **changes) -> str:
        """The query string of this filter (with ``changes``), for links and redirects."""
        f = replace(self, **changes)
        params = {
            "state": f.state or "all",
            "identity": f.identity or "",
            "sort": f.sort,
            "page": f.page,
            "per_page": f.per_page,
        }
        return urlencode({k: v for k, v in params.items() if v not in ("", None)})


def _int(v, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _filtered(f: QueueFilter):
    q = select(Alert.id)
    if f.state is not None:
        q = q.where(Alert.review_state == f.state)
    if f.identity is not None:
        q = q.where(Alert.identity_name == f.identity)
    return q


def _ordered(q, f: QueueFilter):
    if f.sort == "score":
        return q.order_by(Alert.fake_score.desc(), Alert.id.desc())
    return q.order_by(Alert.created_at.desc(), Alert.id.desc())


@dataclass
class QueuePage:
    rows: list[dict]
    total: int
    page: int
    pages: int
    filter: QueueFilter


def queue(svc: Services, f: QueueFilter) -> QueuePage:
    """One page of the queue: the filter in SQL, counted and paged in the database."""
    with svc.db.session() as s:
        total = s.scalar(select(func.count()).select_from(_filtered(f).subquery())) or 0
        pages = max(1, math.ceil(total / f.per_page))
        page = min(f.page, pages)
        ids = list(
            s.scalars(_ordered(_filtered(f), f).limit(f.per_page).offset((page - 1) * f.per_page))
        )
        by_id = {
            a.id: (a, fc, u)
            for a, fc, u in s.execute(
                select(Alert, Face, Upload)
                .join(Face, Alert.face_id == Face.id)
                .join(Upload, Alert.upload_id == Upload.id)
                .where(Alert.id.in_(ids))
            )
        }
        rows = [_row(*by_id[i]) for i in ids if i in by_id]
    return QueuePage(rows, total, page, pages, replace(f, page=page))


def _row(a: Alert, f: Face, u: Upload) -> dict:
    return {
        "id": a.id,
        "upload_id": u.id,
        "upload": Path(u.original_name).name,
        "identity": a.identity_name,
        "identity_id": a.identity_id,
        "similarity": a.similarity,
        "fake_score": a.fake_score,
        "threshold": (a.parts or {}).get("threshold"),
        "detector": a.detector,
        "quality": f.quality,
        "box": [round(v, 1) for v in f.box],
        "created_at": a.created_at.isoformat(),
        "erased": a.erased_at is not None,
        "review": review_dict(a),
    }


def identities_with_alerts(svc: Services) -> list[str]:
    with svc.db.session() as s:
        return sorted(
            n
            for n in s.scalars(select(Alert.identity_name).distinct())
            if n is not None  # erased people have no name left
        )


def neighbours(svc: Services, f: QueueFilter, alert_id: int) -> tuple[int | None, int | None]:
    """(previous, next) alert around ``alert_id`` in the filtered queue order; when the
    alert is not in it (reviewed already), its place in the order it would have."""
    with svc.db.session() as s:
        ids = list(s.scalars(_ordered(_filtered(f), f)))
        if alert_id in ids:
            i = ids.index(alert_id)
            return (ids[i - 1] if i > 0 else None, ids[i + 1] if i + 1 < len(ids) else None)
        everything = list(s.scalars(_ordered(_filtered(replace(f, state=None)), f)))
    if alert_id not in everything:
        return None, None
    pos = everything.index(alert_id)
    wanted = set(ids)
    before = [i for i in everything[:pos] if i in wanted]
    after = [i for i in everything[pos + 1 :] if i in wanted]
    return (before[-1] if before else None, after[0] if after else None)


def alert_detail(svc: Services, alert_id: int) -> dict | None:
    """Everything the alert page shows, or None when there is no such alert."""
    with svc.db.session() as s:
        row = s.execute(
            select(Alert, Face, Upload)
            .join(Face, Alert.face_id == Face.id)
            .join(Upload, Alert.upload_id == Upload.id)
            .where(Alert.id == alert_id)
        ).first()
        if row is None:
            return None
        a, f, u = row
        refs = []
        if a.identity_id is not None:
            refs = [
                {
                    "id": r.id,
                    "name": Path(r.original_name).name,
                    "sha256": r.sha256,
                    "box": list(r.box),
                    "closest": r.id == a.reference_id,
                    "created_at": r.created_at.isoformat(),
                }
                for r in s.scalars(
                    select(ReferencePhoto)
                    .where(ReferencePhoto.identity_id == a.identity_id)
                    .order_by(ReferencePhoto.id)
                )
            ]
        detail = _row(a, f, u)
        detail.update(
            {
                "face_id": f.id,
                "upload_name": u.original_name,
                "upload_sha256": u.sha256,
                "upload_format": u.file_format,
                "upload_size": [u.width, u.height],
                "upload_received_at": u.created_at.isoformat(),
                "upload_source": u.source,
                "n_faces": u.n_faces,
                "upload_path": u.path,
                "crop_path": f.crop_path,
                "parts": dict(a.parts or {}),
                "references": refs,
            }
        )
    detail["signals"] = signals(detail["parts"])
    detail["signal_scale"] = max((abs(sig.contribution) for sig in detail["signals"]), default=1.0)
    detail["flags"] = provenance_flags(detail["parts"])
    detail["metadata"], detail["ai_source"] = provenance(svc, detail["upload_path"])
    detail["history"] = history(svc, alert_id)
    return detail


def provenance(svc: Services, rel: str) -> tuple[dict[str, str], str | None]:
    """EXIF / PNG text / XMP / C2PA fields of the stored upload (as intake extracts them)
    and its declared AI source type, if any. The file passed intake when it arrived."""
    path = svc.files.abs(rel)
    try:
        data = path.read_bytes()
        with Image.open(path) as im:
            meta = extract_metadata(im, data)
    except OSError:
        return {}, None
    return meta, declared_ai_source(meta)


def state_counts(svc: Services, identity: str | None = None) -> dict[str, int]:
    """Alerts per review state (for the queue's tabs), ``all`` included."""
    q = select(Alert.review_state, func.count()).group_by(Alert.review_state)
    if identity is not None:
        q = q.where(Alert.identity_name == identity)
    with svc.db.session() as s:
        counts = {str(k): int(v) for k, v in s.execute(q).all()}
    out = {st.value: counts.get(st.value, 0) for st in ReviewState}
    out["all"] = sum(counts.values())
    return out
