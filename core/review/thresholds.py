"""A per-person threshold suggested from the reviews of that person's alerts.

The rule (shown by ``idwatch identity show``), once at least ``MIN_REVIEWS`` of the
person's alerts are reviewed confirmed or dismissed:

- **fake-score threshold.** Alerts only exist above the current threshold, so the reviews
  can only say whether it should go *up* for this person. Each candidate threshold (the
  current one, and just above each reviewed score) is charged ``MISS_COST`` for every
  confirmed fake it would no longer alert on and 1 for every dismissed real photo it
  would still alert on; the cheapest wins, ties go to the lowest. Missing a fake costs
  more than a false alarm a reviewer dismisses in seconds, hence 3.
- **match threshold** (cosine of stage 1), from ``wrong_person`` reviews: the same rule
  on the identity similarity, with the person's own faces (confirmed or dismissed) as
  what must be kept and ``wrong_person`` faces as what should go. Only suggested when
  there is at least one ``wrong_person`` review.

Nothing is applied: the suggestion is for a person to act on (a per-person threshold in
the settings, more reference photos).
"""

from __future__ import annotations

import statistics

from sqlalchemy import select

from core.review.states import ReviewState
from core.services import Services
from core.storage.models import Alert

MIN_REVIEWS = 10
MISS_COST = 3.0
_ABOVE = 1e-4  # "just above" a score, at the 4 decimals scores are shown with

RULE = (
    f"after >= {MIN_REVIEWS} confirmed/dismissed reviews: the threshold (current, or just "
    f"above a reviewed score) minimising {MISS_COST:g} x confirmed fakes lost + dismissed "
    "real photos kept; ties: the lowest. Alerts exist only above the current threshold, "
    "so it can only go up."
)


def best_cut(keep: list[float], drop: list[float], floor: float) -> tuple[float, float]:
    """(threshold, cost): the cut at or above ``floor`` that loses the fewest ``keep``
    values (each ``MISS_COST``) while passing the fewest ``drop`` values (each 1)."""
    candidates = sorted({floor, *(v + _ABOVE for v in keep + drop if v + _ABOVE > floor)})
    best = (floor, float("inf"))
    for t in candidates:
        cost = MISS_COST * sum(v < t for v in keep) + sum(v >= t for v in drop)
        if cost < best[1]:
            best = (t, cost)
    return best


def suggest(svc: Services, identity_id: int) -> dict:
    """The suggestion for one person, with the counts it rests on."""
    with svc.db.session() as s:
        rows = s.execute(
            select(Alert.review_state, Alert.fake_score, Alert.similarity, Alert.parts).where(
                Alert.identity_id == identity_id, Alert.review_state != ReviewState.new
            )
        ).all()
    confirmed = [r.fake_score for r in rows if r.review_state == ReviewState.confirmed]
    dismissed = [r.fake_score for r in rows if r.review_state == ReviewState.dismissed]
    wrong = [r.similarity for r in rows if r.review_state == ReviewState.wrong_person]
    own = [r.similarity for r in rows if r.review_state != ReviewState.wrong_person]
    n = len(confirmed) + len(dismissed)
    out: dict = {
        "reviews": len(rows),
        "confirmed": len(confirmed),
        "dismissed": len(dismissed),
        "wrong_person": len(wrong),
        "needed": MIN_REVIEWS,
        "rule": RULE,
        "fake_threshold": None,
        "match_threshold": None,
    }
    if n < MIN_REVIEWS:
        out["status"] = f"not enough reviews ({n} of {MIN_REVIEWS} confirmed/dismissed)"
        return out
    recorded = [float(r.parts["threshold"]) for r in rows if r.parts and "threshold" in r.parts]
    current = statistics.median(recorded) if recorded else float(svc.fake_threshold)
    t, _ = best_cut(confirmed, dismissed, current)
    out["fake_threshold"] = {
        "current": round(current, 4),
        "suggested": round(t, 4),
        "change": "raise" if t > current + _ABOVE / 2 else "keep",
        "confirmed_lost": sum(v < t for v in confirmed),
        "dismissed_avoided": sum(v < t for v in dismissed),
    }
    if wrong:
        m_now = float(svc.match_threshold)
        m, _ = best_cut(own, wrong, m_now)
        out["match_threshold"] = {
            "current": round(m_now, 4),
            "suggested": round(m, 4),
            "change": "raise" if m > m_now + _ABOVE / 2 else "keep",
            "own_faces_lost": sum(v < m for v in own),
            "wrong_person_avoided": sum(v < m for v in wrong),
        }
    out["status"] = "suggested"
    return out
