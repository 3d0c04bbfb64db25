"""Re-embedding reference photos after the face backend changes.

Vectors of different face backends never mix (one Milvus collection per backend), so
a person registered while dlib ran has no vector in ``refs_mobilefacenet``: after an
upgrade she would silently stop being matched. ``stale_references`` finds such photos;
``reembed_references`` re-detects the face in each stored photo with the active backend
(the face nearest the box stored at registration), stores its box and landmarks and
adds its vector. Idempotent: a reference already in the active collection is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.services import Services
from core.storage.models import Identity, ReferencePhoto


@dataclass
class ReembedResult:
    backend: str
    reembedded: list[int] = field(default_factory=list)  # reference ids
    failed: dict[int, str] = field(default_factory=dict)  # reference id -> why


def stale_references(svc: Services) -> list[int]:
    """Reference ids (of people not being erased) with no vector of the active backend."""
    backend = svc.face_backend.name
    with svc.db.session() as s:
        rows = list(
            s.execute(
                select(ReferencePhoto.id, ReferencePhoto.identity_id)
                .join(Identity, Identity.id == ReferencePhoto.identity_id)
                .where(Identity.erasing_at.is_(None))
            )
        )
    if not rows:
        return []
    have: set[int] = set()
    for identity_id in {i for _, i in rows}:
        have.update(svc.vectors.reference_ids(identity_id, backend))
    return sorted(r for r, _ in rows if r not in have)


def _nearest(faces: list[DetectedFace], box: list[float]) -> DetectedFace | None:
    """The detected face whose centre is nearest the stored box's, if inside it."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) / 2
    best = min(
        faces,
        key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2,
        default=None,
    )
    if best is None:
        return None
    dx = (best.box[0] + best.box[2]) / 2 - cx
    dy = (best.box[1] + best.box[3]) / 2 - cy
    return best if (dx * dx + dy * dy) ** 0.5 <= half else None


def reembed_references(
    svc: Services, progress: Callable[[int, int], None] | None = None
) -> ReembedResult:
    backend = svc.face_backend
    res = ReembedResult(backend.name)
    todo = stale_references(svc)
    for k, ref_id in enumerate(todo):
        with svc.db.session() as s:
            ref = s.get(ReferencePhoto, ref_id)
            path, box, identity_id = ref.path, list(ref.box), ref.identity_id
        try:
            img = svc.decode_stored(path).pixels
        except Rejected as rej:
            res.failed[ref_id] = f"stored photo unreadable: {rej}"
            continue
        face = _nearest(backend.detect(img), box)
        if face is None:
            res.failed[ref_id] = f"{backend.name} finds no face where the reference face was"
            continue
        vec = backend.embed(img, [face])[0]
        with svc.db.session() as s:
            ref = s.get(ReferencePhoto, ref_id)
            if ref is None:  # erased meanwhile
                continue
            ref.box = [float(v) for v in face.box]
            ref.landmarks = np.asarray(face.landmarks).round(2).tolist()
            ref.extra = {
                **(face.extra or {}),
                **{k: v for k, v in (ref.extra or {}).items() if k == "reference_check"},
            }
            ref.face_backend = backend.name
        svc.vectors.add_references(backend.name, [ref_id], [identity_id], vec[None, :])
        svc.reference_cache.pop(identity_id, None)
        res.reembedded.append(ref_id)
        if progress:
            progress(k + 1, len(todo))
    return res
