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
from core.alerts.scores import ranks, score_text
from core.faces.crops import FORENSIC_CROP_SCALE
from core.services import Services
from core.storage.models import ReferencePhoto, Upload

VIEW = 300  # px: pictures are made at the size the page shows them (no browser rescaling)
PAD = (232, 232, 232)  # flat grey where the face view leaves the image: never image content

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>identity-watch alert report</title>
<style>
 body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
 h1{margin-bottom:.2em} .meta{color:#666;margin-bottom:2em;max-width:75em}
 .alert{background:#fff;border:1px solid #ddd;border-left:6px solid #c62828;border-radius:6px;
        padding:1em;margin-bottom:1.5em}
 .pair{display:flex;gap:1.5em;flex-wrap:wrap}
 figure{margin:0} figcaption{font-size:.85em;color:#555;margin-top:.3em;max-width:300px;
        word-break:break-all}
 img{border:1px solid #ccc;border-radius:4px;display:block}
 table.scores{border-collapse:collapse;margin-top:.8em;font-size:.9em}
 table.scores td{padding:.15em .8em .15em 0}
 .score{font-weight:bold;color:#c62828} .none{color:#666} .rank{color:#666}
</style></head><body>
<h1>identity-watch: suspected impersonations</h1>
<div class="meta">{{ n }} alert(s) &middot; generated {{ when }} &middot; face backend
 {{ backend }} &middot; detector {{ detector }} (decision threshold {{ threshold }}).
 The fake score is the detector's calibrated probability that the face is fake; with the
 training data it has, it stays between {{ lo }} and {{ hi }}. Alerts are ranked by it.
 The enlarged face is cut from the upload as stored; grey is outside the picture.</div>
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
  {% if a.crop_img %}<figure><img alt="suspected face" src="{{ a.crop_img }}"
   width="{{ view }}" height="{{ view }}">
   <figcaption>The face, enlarged</figcaption></figure>{% endif %}
  {% if a.ref_img %}<figure><img alt="authentic reference" src="{{ a.ref_img }}">
   <figcaption>Authentic reference of {{ a.identity }}</figcaption></figure>
  {% else %}<figure><figcaption class="none">Reference erased or unavailable</figcaption>
  </figure>{% endif %}
 </div>
 <table class="scores">
  <tr><td>fake score</td><td><span class="score">{{ a.fake_text }}</span>
   <span class="rank">(rank {{ a.rank }} of {{ n }})</span></td></tr>
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


def _jpeg_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    # High quality, no chroma subsampling: compression must not add blocks a reviewer
    # could take for manipulation.
    im.save(buf, format="JPEG", quality=95, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fit(rgb: np.ndarray, side: int = VIEW) -> tuple[Image.Image, float]:
    """The picture scaled to fit ``side`` (never enlarged), and the scale used."""
    im = Image.fromarray(rgb)
    scale = min(1.0, side / max(im.size))
    if scale < 1:
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im, scale


def overview(rgb: np.ndarray, box: list[float] | None, colour: str) -> Image.Image:
    """The whole picture, fitted to the view, with the face box drawn."""
    im, scale = _fit(rgb)
    if box:
        x1, y1, x2, y2 = (v * scale for v in box)
        ImageDraw.Draw(im).rectangle([x1, y1, x2, y2], outline=colour, width=3)
    return im


def face_view(rgb: np.ndarray, box: list[float], side: int = VIEW) -> Image.Image:
    """The face enlarged: the square the forensic crop uses (FORENSIC_CROP_SCALE x the
    box), cut only from inside the picture and resampled (Lanczos) on its own; where the
    square leaves the picture the view is flat grey. Nothing is extrapolated from the
    border (edge replication smeared streaks that looked like manipulation), and no
    filter runs across the picture's edge."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * FORENSIC_CROP_SCALE / 2
    sx1, sy1 = cx - half, cy - half
    scale = side / (2 * half)
    ix1, iy1 = max(0, round(sx1)), max(0, round(sy1))
    ix2, iy2 = min(w, round(cx + half)), min(h, round(cy + half))
    canvas = Image.new("RGB", (side, side), PAD)
    if ix2 <= ix1 or iy2 <= iy1:
        return canvas
    part = Image.fromarray(np.ascontiguousarray(rgb[iy1:iy2, ix1:ix2]))
    px1, py1 = round((ix1 - sx1) * scale), round((iy1 - sy1) * scale)
    px2, py2 = min(side, round((ix2 - sx1) * scale)), min(side, round((iy2 - sy1) * scale))
    if px2 > px1 and py2 > py1:
        canvas.paste(part.resize((px2 - px1, py2 - py1), Image.Resampling.LANCZOS), (px1, py1))
    return canvas


def _bounds(svc: Services) -> tuple[float, float]:
    """The range the detector's calibrated scores stay in (core.forensics.head)."""
    svc.detector.load()
    head = getattr(svc.detector, "head", None)
    return head.bounds if head is not None else (0.0, 1.0)


def _decoded(svc: Services, rel: str) -> np.ndarray | None:
    """The stored picture as the pipeline saw it (EXIF orientation applied, so boxes fit)."""
    try:
        return svc.decode_stored(rel).pixels
    except Exception:  # a file purged or unreadable since: the report says unavailable
        return None


def _video_frame(svc: Services, up: Upload, time_s: float) -> np.ndarray | None:
    """The video's frame at ``time_s`` (face boxes are in its pixels)."""
    from core.pipeline.video_stages import frame_at

    return frame_at(svc, up, time_s)


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
    for a, rank in zip(alerts, ranks([a["fake_score"] for a in alerts]), strict=True):
        row = dict(a, rank=rank, fake_text=score_text(a["fake_score"]))
        up_row = ups[a["upload_id"]]
        if a.get("frame_time_s") is not None:  # a video: the frame at the worst moment
            up = _video_frame(svc, up_row, a["frame_time_s"])
        else:
            up = _decoded(svc, up_row.path)
        row["upload_img"] = _jpeg_uri(overview(up, a["box"], "#c62828")) if up is not None else ""
        row["crop_img"] = _jpeg_uri(face_view(up, a["box"])) if up is not None else None
        ref = refs.get(a["reference_id"]) if a["reference_id"] else None
        ref_rgb = _decoded(svc, ref[0]) if ref else None
        row["ref_img"] = (
            _jpeg_uri(overview(ref_rgb, ref[1], "#2e7d32")) if ref_rgb is not None else None
        )
        rows.append(row)
    env = Environment(autoescape=select_autoescape(default=True))
    page = env.from_string(_TEMPLATE).render(
        alerts=rows,
        n=len(rows),
        when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        backend=html.escape(svc.face_backend.name),
        detector=html.escape(svc.detector.name),
        threshold=f"{svc.fake_threshold:.3f}",
        lo=score_text(_bounds(svc)[0]),
        hi=score_text(_bounds(svc)[1]),
        view=VIEW,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return len(rows)
