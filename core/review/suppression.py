"""The review history of a face, for the alert rule (core.pipeline.alert_rule).

"The same face" is this face or a near-identical copy of it (the same photo re-encoded,
rescaled, cropped a little, brightened): a face whose embedding has cosine at least
``same_face_similarity`` with the reviewed face, in the same face backend. The default
per backend is set between near-duplicates and other photos of the same person, so a
dismissed real photo never silences a new fake of that person. Measured on faces-dev
(``scripts/measure_same_face.py``: 60 real photos x 8 copies; 131 pairs of different
real photos of one person; 140 (fake, real photo of its victim) pairs):

- dlib at 0.99: 96.9% of near-duplicates, 3.1% of other photos, 0 fakes;
- MobileFaceNet at 0.95: 99.2% of near-duplicates, 3.1% of other photos, 0 fakes
  (the closest fake to a real photo of its victim: 0.921).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.review.states import ReviewState
from core.services import Services
from core.storage.models import Alert, Face

# ArcFace (insightface) is not measured (no buffalo_l weights on this machine): 0.90 is
# a guess far above its same-person cut (0.40); measure it with
# `scripts/measure_same_face.py --backend insightface` where the weights exist.
SAME_FACE_SIMILARITY = {"dlib": 0.99, "mobilefacenet": 0.95, "insightface": 0.90}
DEFAULT_SAME_FACE_SIMILARITY = 0.99


def same_face_similarity(svc: Services, backend: str) -> float:
    if svc.settings.review_same_face_similarity is not None:
        return svc.settings.review_same_face_similarity
    return SAME_FACE_SIMILARITY.get(backend, DEFAULT_SAME_FACE_SIMILARITY)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def review_history(svc: Services, s: Session, face_id: int, identity_id: int) -> list[str]:
    """Review states (other than ``new``) of alerts for ``identity_id`` whose face is
    this face or the same face in another upload. Reviews of one person are few (a
    handful to thousands), so they are compared exactly, in one query."""
    face = s.get(Face, face_id)
    if face is None or face.embedding is None:
        return []
    rows = s.execute(
        select(Alert.review_state, Alert.face_id, Face.embedding)
        .join(Face, Face.id == Alert.face_id)
        .where(
            Alert.identity_key == identity_id,
            Alert.review_state != ReviewState.new,
            Face.face_backend == face.face_backend,
        )
    ).all()
    if not rows:
        return []
    thr = same_face_similarity(svc, face.face_backend)
    mine = _unit(np.frombuffer(face.embedding, np.float32))

    def same(other_id: int, emb: bytes | None) -> bool:
        if other_id == face_id:
            return True
        return emb is not None and float(_unit(np.frombuffer(emb, np.float32)) @ mine) >= thr

    return [state for state, other_id, emb in rows if same(other_id, emb)]
