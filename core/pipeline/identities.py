"""Protected identities: register from authentic photos (and start the backfill job),
list, show, remove (the erasure job, ``core.pipeline.erasure``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.faces.reference_quality import PhotoCheck, check_duplicates, check_photo, coverage
from core.intake import decode_image, read_bytes
from core.names import name_key
from core.pipeline import jobs
from core.pipeline.backfill import BACKFILL, BackfillResult
from core.pipeline.dispatch import Dispatcher, InlineDispatcher
from core.pipeline.erasure import erase_identity, find_identity
from core.services import Services
from core.storage.inserts import insert_missing
from core.storage.models import Alert, Identity, Match, ReferencePhoto, Upload

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
class Registration:
    identity_id: int
    name: str
    references_added: int
    created: bool
    backfill: BackfillResult  # filled when the backfill ran here (in-process dispatcher)
    backfill_job_id: int | None = None
    backfill_status: str | None = None
    checks: list[PhotoCheck] = field(default_factory=list)  # per photo given, in order
    # The name as given, when it is a known identity under another spelling ("Leonardo
    # Dicaprio" for "Leonardo DiCaprio"): the photos went to that identity.
    given_name: str | None = None


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
    dispatcher: Dispatcher | None = None,
) -> Registration:
    """Validate every photo first (nothing is written if one is refused), then store the
    identity, its reference photos and vectors, and scan earlier uploads: a backfill job
    opened with the references and handed to ``dispatcher`` (default: run here, now).
    ``backfill_now=False`` opens no job (nothing scanned yet to look through)."""
    name = name.strip()
    if not name:
        raise RegistrationError("the identity needs a name")
    if not photos:
        raise RegistrationError("give at least one authentic photo of the person")
    prepared = [prepare_photo(svc, p, pick_largest) for p in photos]
    backend = svc.face_backend
    _check_duplicates(svc, name, prepared)
    given = name
    with svc.db.session() as s:
        # Matched by the normalised name: a second spelling adds to the same person. The
        # unique key decides who creates the row when two registrations of a new person
        # run at once; the row is then locked, so the other one waits and adds to it.
        key = name_key(name)
        created = insert_missing(s, Identity, name=name, name_key=key) is not None
        ident = s.scalar(select(Identity).where(Identity.name_key == key).with_for_update())
        if ident.erasing_at is not None:
            raise RegistrationError(
                f"{ident.name!r} is being erased; run `idwatch identity remove` on it to "
                "finish the erasure before registering the person again"
            )
        name = ident.name
        new_refs = []
        for p in prepared:
            ref_id = insert_missing(
                s,
                ReferencePhoto,
                identity_id=ident.id,
                original_name=str(p.path),
                sha256=p.sha256,
                path=svc.files.put_reference(ident.id, p.sha256, p.data, p.fmt),
                box=[float(v) for v in p.face.box],
                landmarks=np.asarray(p.face.landmarks).round(2).tolist(),
                extra={**(p.face.extra or {}), "reference_check": p.check.as_dict()},
                face_backend=backend.name,
            )
            if ref_id is None:  # unique (identity, sha256): stored before, or twice here
                p.check.usable = False
                p.check.problems.append("same file as a stored reference (not added again)")
                continue
            new_refs.append((ref_id, p.embedding))
        identity_id = ident.id
        job_id = jobs.open_job(s, BACKFILL, identity_id).id if backfill_now and new_refs else None
    if new_refs:
        svc.vectors.add_references(
            backend.name,
            [r for r, _ in new_refs],
            [identity_id] * len(new_refs),
            np.stack([e for _, e in new_refs]),
        )
    reg = Registration(
        identity_id,
        name,
        len(new_refs),
        created,
        BackfillResult(),
        job_id,
        checks=[p.check for p in prepared],
        given_name=given if given != name else None,
    )
    if job_id is not None:
        try:
            (dispatcher or InlineDispatcher(svc)).backfill(job_id)
        except Exception:  # broker down: the job row is pending, the sweeper sends it
            log.exception("backfill job %s of identity %s not queued yet", job_id, identity_id)
        job = jobs.get(svc, job_id)
        reg.backfill_status = job.status
        reg.backfill = BackfillResult.from_detail(job.detail)
    return reg


def _check_duplicates(svc: Services, name: str, prepared: list[PreparedPhoto]) -> None:
    """Mark photos that repeat a stored reference of this person (found by searching her
    reference vectors) or another photo of the same call (core.faces.reference_quality)."""
    with svc.db.session() as s:
        ident = s.scalar(select(Identity).where(Identity.name_key == name_key(name)))
        refs = {r.id: Path(r.original_name).name for r in ident.references} if ident else {}
    backend = svc.face_backend.name
    vecs = np.stack([p.embedding for p in prepared])
    existing: list[list[tuple[str, float]]] = [[] for _ in prepared]
    if refs:
        for k, hits in enumerate(svc.vectors.search_references(backend, vecs, limit=256)):
            existing[k] = [(refs[h.id], h.score) for h in hits if h.id in refs]
    check_duplicates([p.check for p in prepared], vecs, existing, backend)


def list_identities(svc: Services, limit: int | None = None, offset: int = 0) -> list[dict]:
    """Identities in registration order; ``limit``/``offset`` page in the query, and the
    references and alerts are counted for that page only."""
    with svc.db.session() as s:
        page = list(
            s.scalars(select(Identity).order_by(Identity.id).offset(offset or None).limit(limit))
        )
        ids = [i.id for i in page]
        refs = dict(
            s.execute(
                select(ReferencePhoto.identity_id, func.count())
                .where(ReferencePhoto.identity_id.in_(ids))
                .group_by(ReferencePhoto.identity_id)
            ).all()
        )
        alerts = dict(
            s.execute(
                select(Alert.identity_id, func.count())
                .where(Alert.identity_id.in_(ids))
                .group_by(Alert.identity_id)
            ).all()
        )
        return [
            {
                "id": i.id,
                "name": i.name,
                "references": refs.get(i.id, 0),
                "alerts": alerts.get(i.id, 0),
                "created_at": i.created_at.isoformat(),
                "state": "erasing" if i.erasing_at else "protected",
            }
            for i in page
        ]


def count_identities(svc: Services) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(Identity)) or 0


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
            "state": "erasing" if ident.erasing_at else "protected",
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
    """Erase a person (see ``core.pipeline.erasure``); running it on a half-erased
    identity finishes the erasure."""
    return erase_identity(svc, name_or_id)


def identity_names(svc: Services) -> list[str]:
    """Every registered name, in registration order (for "known: ..." messages)."""
    with svc.db.session() as s:
        return list(s.scalars(select(Identity.name).order_by(Identity.id)))


def upload_counts(svc: Services) -> dict[str, int]:
    with svc.db.session() as s:
        return dict(s.execute(select(Upload.status, func.count()).group_by(Upload.status)).all())
