"""Client-given text (file names, references) made safe to keep as display labels."""

from __future__ import annotations

import unicodedata

NAME_MAX = 200  # characters of the client's filename kept as a label
REFERENCE_MAX = 128  # characters of the platform's reference (e.g. its post id)


def clean_text(value: str, max_len: int) -> str:
    """Drop control and invisible format characters (NUL, newlines, bidi overrides that
    make a name display differently from what it is), trim, and cap the length."""
    kept = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cf"))
    return kept.strip()[:max_len]


def safe_filename(filename: str | None) -> str | None:
    """The last path component of a client filename, as a display label only."""
    if not filename:
        return None
    name = clean_text(filename, 10 * NAME_MAX).replace("\\", "/").rsplit("/", 1)[-1]
    name = name.strip()[:NAME_MAX]
    return None if name in ("", ".", "..") else name


def upload_label(filename: str | None, reference: str | None) -> str:
    name = safe_filename(filename)
    ref = clean_text(reference, REFERENCE_MAX) if reference else ""
    if name and ref:
        return f"{name} (reference:{ref})"
    if ref:
        return f"reference:{ref}"
    return name or "api-upload"
