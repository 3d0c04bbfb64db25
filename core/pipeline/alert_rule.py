"""The alert rule, in one place and free of storage: when does a verdict raise an alert."""

from __future__ import annotations

from collections.abc import Iterable

# Review states (core.review.states) that say "this face is not a fake of this person":
# a real photo (dismissed) or someone else (wrong_person).
NOT_A_FAKE_OF_THIS_PERSON = frozenset({"dismissed", "wrong_person"})


def is_fake(fake_score: float, threshold: float) -> bool:
    """The detector's decision for a face: fake when its score reaches the threshold."""
    return fake_score >= threshold


def raises_alert(
    fake_score: float,
    threshold: float,
    identity_protected: bool,
    already_alerted: bool,
    review_history: Iterable[str] = (),
) -> bool:
    """An alert is raised for a face that claims a protected identity when it is judged
    fake, never in the name of someone being erased (or gone), and only once per
    (face, identity): a redelivered classify or a backfill over the same face adds
    nothing (the unique constraint on alerts backs this up under races).

    ``review_history``: the review states of earlier alerts, for this identity, on the
    same face (this face or a near-identical copy of it, core.review.suppression). A
    reviewer who said it is a real photo or not this person has the last word: the
    face does not alert again for that person, whatever the detector says now (a
    re-scan of a copy, a backfill, a re-classification)."""
    if NOT_A_FAKE_OF_THIS_PERSON.intersection(review_history):
        return False
    return is_fake(fake_score, threshold) and identity_protected and not already_alerted
