"""Reviewed alerts as training rows for ``idwatch detector train --feedback``.

Each reviewed alert is one row, computed the way the system scored it: the upload face
against the claimed person's reference photos (all of them, as classify sees them).
Labels: ``confirmed`` = fake (1), ``dismissed`` = real (0); ``wrong_person`` faces are
left out by default (the detector was asked "is this a fake of X?" about someone who is
not X; neither answer is right), or labelled real with ``wrong_person="real"`` (a
look-alike's real photo, as ``--query-pairs`` labels them). The group of a row is its
person, written as the manifest writes that person when the manifest has them, so the
identity-grouped folds never split one person between training and test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from core.pipeline.detection import face_from_row
from core.pipeline.verdicts import reference_views
from core.review.states import ReviewState
from core.services import Services
from core.storage.models import Alert, Face, Upload

log = logging.getLogger(__name__)

LABELS = {ReviewState.confirmed: 1, ReviewState.dismissed: 0}


@dataclass
class FeedbackRows:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    methods: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def _canon(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def group_of(name: str, manifest_identities: set[str]) -> str:
    """``id:<name>`` as ``core.evaluation.dataset_features.identity_groups`` writes it,
    matching the manifest's spelling ("Eileen_Collins" for "Eileen Collins")."""
    spelled = {_canon(m): m for m in manifest_identities}
    return "id:" + spelled.get(_canon(name), name)


def feedback_rows(
    svc: Services,
    extractor,
    names: Sequence[str],
    manifest_identities: set[str] = frozenset(),
    wrong_person: str = "exclude",
    progress: Callable[[int, int], None] | None = None,
) -> FeedbackRows:
    """Rows (features ``names`` of ``extractor``) of every reviewed alert whose person
    is still registered. ``wrong_person``: "exclude" or "real"."""
    if wrong_person not in ("exclude", "real"):
        raise ValueError("wrong_person must be 'exclude' or 'real'")
    labels = dict(LABELS)
    if wrong_person == "real":
        labels[ReviewState.wrong_person] = 0
    with svc.db.session() as s:
        todo = [
            (a.id, a.identity_id, a.identity_name, a.review_state, f, u.path)
            for a, f, u in s.execute(
                select(Alert, Face, Upload)
                .join(Face, Alert.face_id == Face.id)
                .join(Upload, Alert.upload_id == Upload.id)
                .where(Alert.review_state.in_(list(labels)), Alert.identity_id.is_not(None))
                .order_by(Alert.id)
            )
        ]
        for *_, f, _p in todo:
            s.expunge(f)
    X, y, groups, methods = [], [], [], []
    counts = {str(k): 0 for k in labels}
    refs_cache: dict[int, list] = {}
    for i, (alert_id, identity_id, name, state, face_row, path) in enumerate(todo):
        if identity_id not in refs_cache:
            refs_cache[identity_id] = [
                extractor.entry(extractor.prepare(v.image), v.face, {}, v.embedding)
                for v in reference_views(svc, identity_id)
            ]
        refs = refs_cache[identity_id]
        if not refs:
            log.warning("alert %s: its person has no reference photo left; skipped", alert_id)
            continue
        img = svc.decode_stored(path)
        emb = (
            np.frombuffer(face_row.embedding, np.float32)
            if face_row.embedding is not None
            else None
        )
        entry = extractor.entry(
            extractor.prepare(img.pixels), face_from_row(face_row), img.metadata, emb
        )
        feats = extractor.features(entry, refs)
        X.append([feats[n] for n in names])
        y.append(labels[ReviewState(state)])
        groups.append(group_of(name, manifest_identities))
        methods.append(f"review-{state}")
        counts[str(state)] += 1
        if progress:
            progress(i + 1, len(todo))
    return FeedbackRows(
        np.array(X, np.float64).reshape(-1, len(names)),
        np.array(y, int),
        np.array(groups),
        np.array(methods),
        counts,
    )
