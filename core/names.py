"""Identity names: stored as the operator typed them, matched by a normalised key.

"Leonardo DiCaprio", "leonardo  dicaprio" and "Leonardo Dicaprio" are one person to an
operator; if they were three identities the same photo would register three times and
every fake would raise three alerts. The key is what makes them one: Unicode NFKC (so
full-width letters, ligatures and composed/decomposed accents compare equal), case
folded (``casefold``, which also folds German sharp s), and every run of whitespace,
including leading and trailing, collapsed to one space. The database keeps it unique
(``identities.name_key``).
"""

from __future__ import annotations

import unicodedata


def name_key(name: str) -> str:
    """The normalised form two names must share to be the same identity."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def unknown_name_message(name: str, known: list[str], show: int = 10) -> str:
    """What to tell an operator who named nobody: the names that exist (the closest
    first when one is close), so a typo is fixed without another command."""
    import difflib

    if not known:
        return f"no identity named {name!r}; none is registered yet (idwatch identity add)"
    by_key = {name_key(k): k for k in known}
    close = [by_key[k] for k in difflib.get_close_matches(name_key(name), list(by_key), n=3)]
    ordered = close + [k for k in known if k not in close]
    listed = ", ".join(repr(k) for k in ordered[:show])
    more = f" and {len(ordered) - show} more (idwatch identity list)" if len(ordered) > show else ""
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"no identity named {name!r}; {hint}known: {listed}{more}"
