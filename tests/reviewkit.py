"""Helpers of the review tests: a real embedded system with alerts, logins, copies."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image
from sqlalchemy import select

from core.demo.dataset import EILEEN, load_references
from core.pipeline.identities import register_identity
from core.pipeline.sources.scan import scan
from core.services import Services
from core.settings import Settings
from core.storage.models import Alert, Upload

# Three of these raise alerts for Eileen Collins with the packaged detector (the three
# swaps); the real photo and the stranger do not. make_system adds a fourth alert.
UPLOADS = (
    "fake_eileen_person3.png",
    "fake_eileen_group2.png",
    "fake_eileen_person5.png",
    "eileen_rescaled.jpg",
    "person1.jpg",
)
API_KEY = "test-api-key"
REVIEW_SECRET = "review-session-secret-for-tests-only-0123456789"
EVIDENCE_SECRET = "evidence-secret-for-tests-only-9876543210"
PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings(data_dir: Path, **overrides) -> dict:
    base = {
        "data_dir": data_dir,
        "notifier": "memory",
        "api_keys": API_KEY,
        "review_secret": REVIEW_SECRET,
        "evidence_secret": EVIDENCE_SECRET,
    }
    return {**base, **overrides}


XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    '22-rdf-syntax-ns#"><rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/'
    'Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    'xmp:CreatorTool="FaceFusion 3.1" Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/'
    'newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"/></rdf:RDF>'
    "</x:xmpmeta>"
)
AI_DECLARED = "eileen_declared_ai.png"


def declared_ai_copy(src: Path, dst: Path) -> Path:
    """A copy of a fake (rescaled, PNG) whose metadata says how it was made, as honest
    generators write it: XMP DigitalSourceType and CreatorTool, a PNG Software chunk."""
    from PIL.PngImagePlugin import PngInfo

    with Image.open(src) as im:
        rgb = im.convert("RGB")
    rgb = rgb.resize((round(rgb.width * 0.95), round(rgb.height * 0.95)), Image.BICUBIC)
    info = PngInfo()
    info.add_text("Software", "FaceFusion 3.1")
    info.add_itxt("XML:com.adobe.xmp", XMP)
    dst.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(dst, format="PNG", pnginfo=info)
    return dst


def make_system(data_dir: Path, demo_set: Path, **overrides) -> Services:
    """Eileen Collins registered, the UPLOADS and a fake that declares itself AI-made
    scanned: four alerts in her name."""
    svc = Services(Settings(**settings(data_dir, **overrides)))
    register_identity(svc, EILEEN, load_references(demo_set)[EILEEN])
    files = [demo_set / "uploads" / n for n in UPLOADS]
    files.append(declared_ai_copy(files[2], data_dir.parent / "made" / AI_DECLARED))
    summary = scan(svc, files)
    assert summary.done == len(files), summary.as_dict()
    return svc


def alert_ids(svc: Services) -> dict[str, int]:
    """{upload file name: alert id}."""
    with svc.db.session() as s:
        rows = s.execute(
            select(Upload.original_name, Alert.id).join(Alert, Alert.upload_id == Upload.id)
        ).all()
    return {Path(name).name: aid for name, aid in rows}


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client, name: str = "alice", password: str = PASSWORD) -> str:
    """Log ``client`` in to /review; returns the session's CSRF token."""
    token = csrf_of(client.get("/review/login").text)
    r = client.post(
        "/review/login",
        data={"username": name, "password": password, "csrf_token": token, "next": ""},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/review/").text)


def copy_of(src: Path, dst: Path, fmt: str = "JPEG", scale: float = 1.0, quality: int = 92) -> Path:
    """Another file of the same picture (re-encoded, optionally rescaled): new bytes,
    so a new upload, with the same face in it."""
    with Image.open(src) as im:
        rgb = im.convert("RGB")
    if scale != 1.0:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.BICUBIC)
    buf = io.BytesIO()
    rgb.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(buf.getvalue())
    return dst
