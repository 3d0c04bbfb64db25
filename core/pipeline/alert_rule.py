"""The alert rule, in one place and free of storage: when does a verdict raise an alert."""

from __future__ import annotations


def is_fake(fake_score: float, threshold: float) -> bool:
    """The detector's decision for a face: fake when its score reaches the threshold."""
    return fake_score >= threshold


def raises_alert(
    fake_score: float, threshold: float, identity_protected: bool, already_alerted: bool
) -> bool:
    """An alert is raised for a face that claims a protected identity when it is judged
    fake, never in the name of someone being erased (or gone), and only once per
    (face, identity): a redelivered classify or a backfill over the same face adds
    nothing (the unique constraint on alerts backs this up under races)."""
    return is_fake(fake_score, threshold) and identity_protected and not already_alerted
