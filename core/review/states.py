"""Review states of an alert and what each one says."""

from __future__ import annotations

import enum


class ReviewState(enum.StrEnum):
    new = "new"  # nobody has looked at it yet
    confirmed = "confirmed"  # a fake of this person: act on it (takedown)
    dismissed = "dismissed"  # a real photo: the detector was wrong
    wrong_person = "wrong_person"  # not this person: stage 1 matched a look-alike


# A face reviewed with one of these never alerts again for the same person.
SUPPRESSING = frozenset({ReviewState.dismissed, ReviewState.wrong_person})

LABELS = {
    ReviewState.new: "New",
    ReviewState.confirmed: "Confirmed fake",
    ReviewState.dismissed: "Dismissed (real photo)",
    ReviewState.wrong_person: "Wrong person",
}


def parse_state(value: str) -> ReviewState:
    """A state from user input (``wrong-person`` and ``wrong_person`` alike)."""
    try:
        return ReviewState(value.strip().lower().replace("-", "_"))
    except ValueError:
        raise ValueError(
            f"unknown review state {value!r}; one of {', '.join(s.value for s in ReviewState)}"
        ) from None
