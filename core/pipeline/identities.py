"""Protected identities: register from authentic photos, list, remove (erase), backfill."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, update

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.faces.reference_quality import PhotoCheck, check_duplicates, check_photo, coverage
from core.intake import decode_image, read_bytes
from core.pipeline.stages import add_match, best_identity_hits
from core.pipeline.verdict import reference_views, score_matches
from core.services import Services
from core.storage.models import Alert, Face, Identity, Match, ReferencePhoto, Upload

log = logging.getLogger(__name__)


class RegistrationError(ValueError):
    """A reference photo is unusable; the message names the photo."""


@dataclass
class PreparedPhoto:
    path: Path
    data: bytes
    fmt: str
    sha256: str
    face: DetectedFace
    embedding: np.ndarray
    check: PhotoCheck | None = None


@dataclass
class BackfillResult:
    faces_checked: int = 0
    matches: int = 0
    alerts: int = 0
    upload_ids: list[int] = field(default_factory=list)


@dataclass
class Registration:
    identity_id: int
    name: str
    references_added: int
    created: bool
    backfill: BackfillResult
    checks: list[PhotoCheck] = field(default_factory=list)  # per photo given, in order


def prepare_photo(svc: Services, path: Path, pick_largest: bool = False) -> PreparedPhoto:
    try:
        data = read_bytes(Path(path), svc.limits)
        img = decode_image(data, svc.limits)
    except Rejected as rej:
        raise RegistrationError(f"{path}: not usable as a reference photo ({rej})") from rej
    backend = svc.face_backend
    faces = [
        f for f in backend.detect(img.pixels) if min(f.width, f.height) >= svc.settings.min_face_px
    ]
    if not faces:
        raise RegistrationError(f"{path}: no face found; use a clear, frontal photo of the person")
    if len(faces) > 1 and not pick_largest:
        raise RegistrationError(
            f"{path}: {len(faces)} faces found; use a photo of the person alone, "
            "or pass --largest to use the largest face"
        )
    face = max(faces, key=lambda f: f.area)
    emb = backend.embed(img.pixels, [face])[0]
    check = check_photo(Path(path).name, img.pixels, face, len(faces))
    return PreparedPhoto(Path(path), data, img.format, img.sha256, face, emb, check)


def register_identity(
    svc: Services,
    name: str,
    photos: list[Path],
    pick_largest: bool = False,
    backfill_now: bool = True,
) -> Registration:
    """Validate every photo first (nothing is written if one is refused), then store the
    identity, its reference photos and vectors, and scan earlier uploads (backfill)."""
    name = name.strip()
    if not name:
        raise RegistrationError("the identity needs a name")
    if not photos:
        raise RegistrationError("give at least one authentic photo of the person")
    prepared = [prepare_photo(svc, p, pick_largest) for p in photos]
    backend = svc.face_backend
    _check_duplicates(svc, name, prepared)
    with svc.db.session() as s:
        ident = s.scalar(select(Identity).where(Identity.name == name))
        created = ident is None
        if created:
            ident = Identity(name=name)
            s.add(ident)
            s.flush()
        known = set(
            s.scalars(select(ReferencePhoto.sha256).where(ReferencePhoto.identity_id == ident.id))
        )
        new_refs = []
        for p in prepared:
            if p.sha256 in known:
                p.check.usable = False
                p.check.problems.append("same file as a stored reference (not added again)")
                continue
            known.add(p.sha256)
            ref = ReferencePhoto(
                identity_id=ident.id,
                original_name=str(p.path),
                sha256=p.sha256,
                path=svc.files.put_reference(ident.id, p.sha256, p.data, p.fmt),
                box=[float(v) for v in p.face.box],
                landmarks=np.asarray(p.face.landmarks).round(2).tolist(),
                extra={**(p.face.extra or {}), "reference_check": p.check.as_dict()},
                face_backend=backend.name,
            )
            s.add(ref)
            s.flush()
            new_refs.append((ref.id, p.embedding))
        identity_id = ident.id
    if new_refs:
        svc.vectors.add_references(
            backend.name,
            [r for r, _ in new_refs],
            [identity_id] * len(new_refs),
            np.stack([e for _, e in new_refs]),
        )
    bf = backfill(svc, identity_id) if backfill_now and new_refs else BackfillResult()
    return Registration(identity_id, name, len(new_refs), created, bf, [p.check for p in prepared])


def _check_duplicates(svc: Services, name: str, prepared: list[PreparedPhoto]) -> None:
    """Mark photos that repeat a stored reference of this person (found by searching her
    reference vectors) or another photo of the same call (core.faces.reference_quality)."""
    with svc.db.session() as s:
        ident = s.scalar(select(Identity).where(Identity.name == name))
        refs = {r.id: Path(r.original_name).name for r in ident.references} if ident else {}
    backend = svc.face_backend.name
    vecs = np.stack([p.embedding for p in prepared])
    existing: list[list[tuple[str, float]]] = [[] for _ in prepared]
    if refs:
        for k, hits in enumerate(svc.vectors.search_references(backend, vecs, limit=256)):
            existing[k] = [(refs[h.id], h.score) for h in hits if h.id in refs]
    check_duplicates([p.check for p in prepared], vecs, existing, backend)


def backfill(svc: Services, identity_id: int) -> BackfillResult:
    """Find earlier uploads' faces that claim this identity and give them a verdict."""
    views = reference_views(svc, identity_id)
    vecs = np.stack([v.embedding for v in views if v.embedding is not None]) if views else None
    res = BackfillResult()
    if vecs is None or len(vecs) == 0:
        return res
    candidates: set[int] = set()
    for hits in svc.vectors.search_faces(
        svc.face_backend.name, vecs, min_score=svc.match_threshold
    ):
        candidates.update(h.id for h in hits)
    res.faces_checked = len(candidates)
    with svc.db.session() as s:
        rows = list(
            s.execute(
                select(Face.id, Face.embedding).where(
                    Face.id.in_(list(candidates)), Face.embedding.is_not(None)
                )
            )
        )
    # Decide each candidate face the way the index stage does, against every protected
    # identity, so a face claims the new person only if it would have claimed them then.
    claims = (
        best_identity_hits(svc, np.stack([np.frombuffer(e, np.float32) for _, e in rows]))
        if rows
        else []
    )
    with svc.db.session() as s:
        if s.get(Identity, identity_id) is None:
            return res
        new = []
        for (fid, _), claimed in zip(rows, claims, strict=True):
            if identity_id in claimed:
                sim, ref_id = claimed[identity_id]
                if add_match(s, fid, identity_id, sim, ref_id):
                    new.append(fid)
        match_ids = list(
            s.scalars(
                select(Match.id).where(Match.identity_id == identity_id, Match.face_id.in_(new))
            )
        )
        res.upload_ids = sorted(set(s.scalars(select(Face.upload_id).where(Face.id.in_(new)))))
    res.matches = len(match_ids)
    if match_ids:
        res.alerts = score_matches(svc, match_ids=match_ids)
    return res


def find_identity(s, name_or_id: str) -> Identity | None:
    ident = s.scalar(select(Identity).where(Identity.name == name_or_id))
    if ident is None and name_or_id.isdigit():
        ident = s.get(Identity, int(name_or_id))
    return ident


def list_identities(svc: Services) -> list[dict]:
    with svc.db.session() as s:
        refs = dict(
            s.execute(
                select(ReferencePhoto.identity_id, func.count()).group_by(
                    ReferencePhoto.identity_id
                )
            ).all()
        )
        alerts = dict(
            s.execute(select(Alert.identity_id, func.count()).group_by(Alert.identity_id)).all()
        )
        return [
            {
                "id": i.id,
                "name": i.name,
                "references": refs.get(i.id, 0),
                "alerts": alerts.get(i.id, 0),
                "created_at": i.created_at.isoformat(),
            }
            for i in s.scalars(select(Identity).order_by(Identity.id))
        ]


def show_identity(svc: Services, name_or_id: str) -> dict | None:
    with svc.db.session() as s:
        ident = find_identity(s, name_or_id)
        if ident is None:
            return None
        matches = s.scalar(
            select(func.count()).select_from(Match).where(Match.identity_id == ident.id)
        )
        alerts = s.scalar(
            select(func.count()).select_from(Alert).where(Alert.identity_id == ident.id)
        )
        return {
            "id": ident.id,
            "name": ident.name,
            "created_at": ident.created_at.isoformat(),
            "references": [
                {
                    "id": r.id,
                    "file": r.original_name,
                    "stored": r.path,
                    "box": r.box,
                    "face_backend": r.face_backend,
                    "check": (r.extra or {}).get("reference_check"),
                }
                for r in ident.references
            ],
            "coverage": coverage(
                [(r.extra or {}).get("reference_check") for r in ident.references]
            ),
            "matched_faces": matches,
            "alerts": alerts,
        }


def remove_identity(svc: Services, name_or_id: str) -> dict | None:
    """Erase a person: reference photos (files and rows), reference vectors, matches,
    and the personal data in their alerts (name, link, reference). Kept: each alert's
    upload id, face box, scores and times, so the platform's moderation record of the
    flagged upload stays intact; the uploads themselves belong to the platform."""
    with svc.db.session() as s:
        ident = find_identity(s, name_or_id)
        if ident is None:
            return None
        identity_id, name = ident.id, ident.name
        n_refs = len(ident.references)
        n_alerts = s.execute(
            update(Alert)
            .where(Alert.identity_id == identity_id)
            .values(
                identity_id=None,
                identity_name=None,
                reference_id=None,
                parts=None,
                erased_at=datetime.now(UTC),
            )
        ).rowcount
        s.delete(ident)  # cascades to reference_photos and matches
    n_vectors = svc.vectors.delete_identity(identity_id)
    svc.files.remove_tree(f"references/{identity_id}")
    svc.reference_cache.pop(identity_id, None)
    log.info("erased identity %s (%s)", identity_id, name)
    return {
        "id": identity_id,
        "name": name,
        "references_removed": n_refs,
        "vectors_removed": n_vectors,
        "alerts_anonymised": n_alerts,
    }


def upload_counts(svc: Services) -> dict[str, int]:
    with svc.db.session() as s:
        return dict(s.execute(select(Upload.status, func.count()).group_by(Upload.status)).all())
