"""People a manifest's ``identity`` column leaves out although the image shows them.

faces-dev labels each image with the person it is *of*; a few images also show a
labelled person of the set who is not named there. Stage 1 then finds that person,
correctly, and an evaluation that trusts the column counts the match as a false accept
(and the demo as an alert "in the name of someone else"). The shared data is read-only,
so the project records what it found here, keyed by the file's SHA-256 (a changed file
is not amended), with the evidence, and reports its numbers both ways.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Amendment:
    name: str  # file name, for the report
    sha256: str
    also_shows: tuple[str, ...]
    evidence: str


AMENDMENTS: tuple[Amendment, ...] = (
    Amendment(
        "deepface_selfie-many-people.jpg",
        "c5c306582edaea1fd61d328f8822e0421af6547deb7a36903ba5f9169cb62034",
        ("Angelina_Jolie", "Brad_Pitt"),
        "the manifest's own notes: 'Oscars group selfie, many faces (Brad Pitt, Angelina "
        "Jolie,...)'; identity column empty. MobileFaceNet matches face 1 to Angelina "
        "Jolie's 6 real photos at 0.64-0.79 and face 3 to Brad Pitt's at 0.75.",
    ),
    Amendment(
        "dfl_Silwan_Stillwone_3_f0040_L_real.png",
        "bb48eeb68b241145c216ace59ffc08ff6f33d9bc6a0e3551c2c5c12187d63836",
        ("Robert_Downey_Jr",),
        "labelled 'unknown streamer' (DeepFaceLive driver video), but the frame is a film "
        "still of Robert Downey Jr. as Iron Man (suit and face visible); MobileFaceNet "
        "cosine 0.62 to simswap_Iron_man.jpg.",
    ),
)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def amendment_for(path: Path) -> Amendment | None:
    """The amendment recorded for this file's bytes, if any (only files whose name is
    amended are hashed)."""
    path = Path(path)
    named = [a for a in AMENDMENTS if a.name == path.name]
    if not named or not path.is_file():
        return None
    sha = file_sha256(path)
    return next((a for a in named if a.sha256 == sha), None)
