"""Self-contained HTML alert report: each suspected fake beside the reference photo.

Thumbnails are inlined as data URIs so the file opens offline and can be mailed. For a
video the picture is the frame at the alert's moment (``frame_time_s``), re-read from
the stored video, with the face box drawn on it.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from jinja2 import Environment, select_autoescape
from PIL import Image, ImageDraw
from sqlalchemy import select

from core.alerts.listing import list_alerts
from core.services import Services
from core.storage.models import ReferencePhoto, Upload

THUMB = 360

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>identity-watch alert report</title>
<style>
 body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
 h1{margin-bottom:.2em} .meta{color:#666;margin-bottom:2em}
 .alert{background:#fff;border:1px solid #ddd;border-left:6px solid #c62828;border-radius:6px;
        padding:1em;margin-bottom:1.5em}
 .pair{display:flex;gap:1.5em;flex-wrap:wrap}
 figure{margin:0} figcaption{font-size:.85em;color:#555;margin-top:.3em;max-width:300px;
        word-break:break-all}
 img{border:1px solid #ccc;border-radius:4px;max-width:300px;max-height:300px}
 table.scores{border-collapse:collapse;margin-top:.8em;font-size:.9em}
 table.scores td{padding:.15em .8em .15em 0}
 .score{font-weight:bold;color:#c62828} .none{color:#666}
</style></head><body>
<h1>identity-watch: suspected impersonations</h1>
<div class="meta">{{ n }} alert(s) &middot; generated {{ when }} &middot; face backend
 {{ backend }} &middot; detector {{ detector }} (decision threshold {{ threshold }})</div>
{% if not alerts %}<p class="none">No alerts.</p>{% endif %}
{% for a in alerts %}
<div class="alert">
 <h2>#{{ a.id }} &mdash; claims to be <em>{{ a.identity or "(erased identity)" }}</em></h2>
 <div class="pair">
  <figure>
   <img alt="suspected fake" src="{{ a.upload_img }}">
   <figcaption>Suspected fake: upload {{ a.upload_id }} &middot; {{ a.upload }}
   {% if a.frame_time_s is not none %}&middot; video frame at {{ "%.2f"|format(a.frame_time_s) }} s
   (track {{ a.track_id }}){% endif %}
   </figcaption></figure>
  {% if a.crop_img %}<figure><img alt="suspected face" src="{{ a.crop_img }}">
   <figcaption>The face, enlarged</figcaption></figure>{% endif %}
  {% if a.ref_img %}<figure><img alt="authentic reference" src="{{ a.ref_img }}">
   <figcaption>Authentic reference of {{ a.identity }}</figcaption></figure>
  {% else %}<figure><figcaption class="none">Reference erased or unavailable</figcaption>
  </figure>{% endif %}
 </div>
 <table class="scores">
  <tr><td>fake score</td><td class="score">{{ "%.3f"|format(a.fake_score) }}</td></tr>
  <tr><td>identity similarity</td><td>{{ "%.3f"|format(a.similarity) }}</td></tr>
  <tr><td>face quality</td><td>{{ "%.2f"|format(a.quality) }}</td></tr>
  <tr><td>face box</td><td>{{ a.box }}</td></tr>
  {% if a.frame_time_s is not none %}<tr><td>moment in the video</td>
   <td>{{ "%.2f"|format(a.frame_time_s) }} s, track {{ a.track_id }}</td></tr>{% endif %}
  <tr><td>detector</td><td>{{ a.detector }}</td></tr>
  <tr><td>time</td><td>{{ a.created_at[:19].replace("T", " ") }}</td></tr>
 </table>
</div>
{% endfor %}
</body></html>
"""


def _thumb_uri(rgb: np.ndarray, box: list[float] | None, colour: str) -> str:
    im = Image.fromarray(rgb)
    scale = THUMB / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    else:
        scale = 1.0
    if box:
        d = ImageDraw.Draw(im)
        x1, y1, x2, y2 = (v * scale for v in box)
        d.rectangle([x1, y1, x2, y2], outline=colour, width=3)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _load_scaled(
    svc: Services, rel: str, box: list[float] | None, colour: str = "#c62828"
) -> str | None:
    """Read a stored image for display (JPEGs decoded at reduced size) with its box."""
    try:
        with Image.open(svc.files.abs(rel)) as im:
            full_w = im.width
            im.draft("RGB", (THUMB * 2, THUMB * 2))
            rgb = np.asarray(im.convert("RGB"))
    except Exception:
        return None
    if box and rgb.shape[1] != full_w:
        box = [v * rgb.shape[1] / full_w for v in box]
    return _thumb_uri(rgb, box, colour)


def _video_frame(svc: Services, up: Upload, time_s: float, box: list[float]) -> str | None:
    """The video's frame at ``time_s`` with the face box (boxes are in its pixels)."""
    from core.pipeline.video_stages import frame_at

    rgb = frame_at(svc, up, time_s)
    return None if rgb is None else _thumb_uri(rgb, box, "#c62828")


def write_report(svc: Services, out: Path, identity: str | None = None) -> int:
    alerts = list_alerts(svc, identity)
    with svc.db.session() as s:
        ups = {
            u.id: u
            for u in s.scalars(
                select(Upload).where(Upload.id.in_([a["upload_id"] for a in alerts]))
            )
        }
        for u in ups.values():
            s.expunge(u)
        refs = {
            r.id: (r.path, r.box)
            for r in s.scalars(
                select(ReferencePhoto).where(
                    ReferencePhoto.id.in_([a["reference_id"] for a in alerts if a["reference_id"]])
                )
            )
        }
    rows = []
    for a in alerts:
        row = dict(a)
        up = ups[a["upload_id"]]
        if a.get("frame_time_s") is not None:
            row["upload_img"] = _video_frame(svc, up, a["frame_time_s"], a["box"]) or ""
        else:
            row["upload_img"] = _load_scaled(svc, up.path, a["box"]) or ""
        row["crop_img"] = _load_scaled(svc, a["crop_path"], None) if a["crop_path"] else None
        ref = refs.get(a["reference_id"]) if a["reference_id"] else None
        row["ref_img"] = _load_scaled(svc, ref[0], ref[1], "#2e7d32") if ref else None
        rows.append(row)
    env = Environment(autoescape=select_autoescape(default=True))
    page = env.from_string(_TEMPLATE).render(
        alerts=rows,
        n=len(rows),
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        backend=html.escape(svc.face_backend.name),
        detector=html.escape(svc.detector.name),
        threshold=f"{svc.fake_threshold:.3f}",
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return len(rows)
