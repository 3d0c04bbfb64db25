"""Scores as people read them: enough digits to rank, never a rounded 1.000.

Three decimals hide the difference between 0.9994 and 0.9951, and a score that rounds to
1.000 reads as certainty. ``score_text`` keeps three significant digits of the distance
to the nearer end (0 or 1) when that distance is under 0.01; ``ranks`` gives each alert
its place by fake score, so equal-looking scores still order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_DECIMALS = 6


def score_text(p: float | None) -> str:
    """0.775 -> "0.775", 0.99466 -> "0.99466", 0.00042 -> "0.000420"."""
    if p is None or not math.isfinite(p):
        return "-"
    d = min(p, 1.0 - p)
    if d >= 0.01:
        return f"{p:.3f}"
    if d <= 0:
        return f"{p:.{MAX_DECIMALS}f}" if 0 < p < 1 else f"{p:.3f}"
    decimals = min(MAX_DECIMALS, 2 - math.floor(math.log10(d)))
    text = f"{p:.{decimals}f}"
    if float(text) in (0.0, 1.0):  # still rounds to an end: say which side of it
        return (
            f"> {1 - 10**-MAX_DECIMALS:.{MAX_DECIMALS}f}" if p > 0.5 else f"< {10**-MAX_DECIMALS}"
        )
    return text


def ranks(scores: Sequence[float]) -> list[int]:
    """1 for the highest score; equal scores share a rank."""
    order = sorted(scores, reverse=True)
    return [order.index(s) + 1 for s in scores]
