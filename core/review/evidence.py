"""Evidence export for a takedown: the files behind an alert and a signed manifest.

``export_evidence`` writes one folder::

    alert-<id>/
      manifest.json        what is in the folder, signed (below)
      alert.json           scores, the signals behind them, review and its history,
                           provenance metadata, identity, times
      upload<.ext>         the upload exactly as received (its bytes, as stored)
      upload-marked.jpg    the same picture with the face box drawn, for people
      face.png             the face as the detector saw it (loose crop)
      references/ref-<id><.ext>   the person's authentic reference photos, as stored

``manifest.json`` lists every other file with its SHA-256, size, role and when the
system recorded it, and is signed with HMAC-SHA256 over its canonical JSON (sorted
keys, no spaces, UTF-8) without the ``signature`` field, keyed by
``IDWATCH_EVIDENCE_SECRET``. ``verify_evidence`` checks the signature and every file;
a changed, missing or added file, or a changed manifest, fails. (An HMAC proves the
folder came from a holder of the secret unchanged; whoever verifies needs the secret.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import select

from core.review.media import marked_jpeg
from core.review.queue import alert_detail
from core.services import Services
from core.storage.models import ReferencePhoto

FORMAT = "idwatch-evidence"
VERSION = 1
ALG = "HMAC-SHA256"
MANIFEST = "manifest.json"


class EvidenceError(RuntimeError):
    pass


def _key(svc_or_secret: Services | str | bytes) -> bytes:
    if isinstance(svc_or_secret, bytes):
        return svc_or_secret
    if isinstance(svc_or_secret, str):
        return svc_or_secret.encode("utf-8")
    secret = svc_or_secret.settings.evidence_secret
    value = secret.get_secret_value() if secret is not None else ""
    if not value:
        raise EvidenceError(
            "evidence export needs a signing secret: set IDWATCH_EVIDENCE_SECRET "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return value.encode("utf-8")


def key_id(key: bytes) -> str:
    """Names the key without revealing it (which secret a verifier needs)."""
    return hashlib.sha256(b"idwatch-evidence-key:" + key).hexdigest()[:16]


def canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(manifest: dict, key: bytes) -> dict:
    mac = hmac.new(key, canonical(manifest), hashlib.sha256).digest()
    return {"alg": ALG, "key_id": key_id(key), "value": base64.b64encode(mac).decode()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_evidence(
    svc: Services, alert_id: int, out_dir: Path, exported_by: str = "idwatch"
) -> Path:
    """Write the evidence folder of one alert under ``out_dir``; returns the folder."""
    key = _key(svc)
    d = alert_detail(svc, alert_id)
    if d is None:
        raise EvidenceError(f"alert {alert_id} does not exist")
    folder = Path(out_dir) / f"alert-{alert_id}"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "references").mkdir(parents=True)
    files: list[dict] = []

    def add(
        rel: str,
        role: str,
        recorded_at: str | None,
        data: bytes | None = None,
        src: Path | None = None,
    ) -> None:
        path = folder / rel
        if src is not None:
            shutil.copyfile(src, path)
        else:
            path.write_bytes(data or b"")
        files.append(
            {
                "path": rel,
                "role": role,
                "sha256": _sha256(path),
                "bytes": path.stat().st_size,
                "recorded_at": recorded_at,
            }
        )

    upload_src = svc.files.abs(d["upload_path"])
    add(f"upload{upload_src.suffix}", "upload", d["upload_received_at"], src=upload_src)
    add(
        "upload-marked.jpg",
        "upload with the face box drawn",
        d["created_at"],
        marked_jpeg(upload_src, d["box"]),
    )
    add("face.png", "face crop", d["created_at"], src=svc.files.abs(d["crop_path"]))
    refs_out = []
    with svc.db.session() as s:
        stored = dict(
            s.execute(
                select(ReferencePhoto.id, ReferencePhoto.path).where(
                    ReferencePhoto.id.in_([r["id"] for r in d["references"]])
                )
            ).all()
        )
    for r in d["references"]:
        src = svc.files.abs(stored[r["id"]])
        rel = f"references/ref-{r['id']}{src.suffix}"
        add(rel, "authentic reference", r["created_at"], src=src)
        refs_out.append({**r, "file": rel})
    now = datetime.now(UTC).isoformat()
    alert = {
        "alert_id": d["id"],
        "identity": d["identity"],
        "identity_id": d["identity_id"],
        "decision": "fake",
        "fake_score": d["fake_score"],
        "threshold": d["threshold"],
        "similarity": d["similarity"],
        "detector": d["detector"],
        "face_quality": d["quality"],
        "face_box": d["box"],
        "signals": [
            {
                "feature": s.name,
                "meaning": s.phrase,
                "contribution": s.contribution,
                "reading": s.sentence,
            }
            for s in d["signals"]
        ],
        "parts": d["parts"],
        "upload": {
            "id": d["upload_id"],
            "name": d["upload_name"],
            "sha256": d["upload_sha256"],
            "format": d["upload_format"],
            "size": d["upload_size"],
            "source": d["upload_source"],
            "received_at": d["upload_received_at"],
        },
        "provenance": {
            "metadata": d["metadata"],
            "declared_ai_source": d["ai_source"],
            "flags": d["flags"],
        },
        "references": refs_out,
        "alert_created_at": d["created_at"],
        "review": d["review"],
        "review_history": d["history"],
    }
    add(
        "alert.json",
        "alert, scores and review",
        now,
        json.dumps(alert, indent=1, sort_keys=True, default=str).encode("utf-8"),
    )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "alert_id": alert_id,
        "identity": d["identity"],
        "exported_at": now,
        "exported_by": exported_by,
        "hash": "sha256",
        "files": files,
    }
    manifest["signature"] = sign(manifest, key)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return folder


def evidence_zip(svc: Services, alert_id: int, exported_by: str = "idwatch") -> bytes:
    """The evidence folder as a zip (``alert-<id>/...``), built in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="idwatch-evidence-") as tmp:
        folder = export_evidence(svc, alert_id, Path(tmp), exported_by)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
        return buf.getvalue()


@dataclass
class Verification:
    ok: bool
    problems: list[str] = field(default_factory=list)
    manifest: dict | None = None


def verify_evidence(folder: Path, secret: Services | str | bytes) -> Verification:
    """Check the manifest's signature and every file's hash and size; files not in the
    manifest are problems too."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Verification(False, [f"{MANIFEST}: unreadable ({exc})"])
    problems = []
    sig = manifest.get("signature") or {}
    if manifest.get("format") != FORMAT or sig.get("alg") != ALG:
        return Verification(False, ["not an idwatch evidence manifest"], manifest)
    key = _key(secret)
    expected = sign(manifest, key)
    if sig.get("key_id") != expected["key_id"]:
        problems.append(f"signed with another key ({sig.get('key_id')}), not this secret's")
    elif not hmac.compare_digest(str(sig.get("value", "")), expected["value"]):
        problems.append("manifest signature does not match: the manifest was changed")
    listed = set()
    for entry in manifest.get("files", []):
        rel = str(entry.get("path", ""))
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts:
            problems.append(f"{rel!r}: not a path inside the folder")
            continue
        listed.add(rel)
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
            problems.append(f"{rel}: changed (SHA-256 differs from the manifest)")
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    return Verification(not problems, problems, manifest)
