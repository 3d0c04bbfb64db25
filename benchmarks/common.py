"""Shared helpers for the benchmarks: test images with distinct bytes, timing."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from core.demo.dataset import build_demo_set, load_manifest, load_references


def demo_images(root: Path, n: int) -> tuple[list[Path], dict[str, list[Path]]]:
    """``n`` upload files (the demo set's images, re-saved with distinct bytes as needed)
    and the demo references."""
    manifest = build_demo_set(root / "set")
    rows = load_manifest(manifest)
    out_dir = root / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        src = rows[i % len(rows)].path
        if i < len(rows):
            files.append(src)
            continue
        rgb = np.asarray(Image.open(src).convert("RGB")).copy()
        rgb[0, 0] = (i % 256, i // 256 % 256, 3)  # distinct bytes, same picture
        dst = out_dir / f"{i:05d}_{src.stem}.png"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        dst.write_bytes(buf.getvalue())
        files.append(dst)
    return files, load_references(root / "set")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def unique_bytes(path: Path, k: int) -> bytes:
    """The picture at ``path`` as PNG bytes made distinct by one pixel."""
    rgb = np.asarray(Image.open(path).convert("RGB")).copy()
    rgb[0, 0] = (k % 256, k // 256 % 256, 5)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def idwatch(env: dict, *args: str, timeout: float = 240):
    """Run the idwatch CLI in a subprocess with ``env``; fail loudly on a non-zero exit."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if res.returncode != 0:
        raise RuntimeError(f"idwatch {' '.join(args)}:\n{res.stdout}\n{res.stderr}")
    return res


class WebhookReceiver:
    """Receives alert webhooks on 127.0.0.1, records arrival times and, given the
    secret, verifies each one with the Standard Webhooks library, as a platform's
    receiver would (a bad one is counted and answered 401). ``port``: listen there (a
    receiver brought back after an outage)."""

    def __init__(self, secret: str | None = None, port: int = 0) -> None:
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from standardwebhooks import Webhook, WebhookVerificationError

        def verified(body: bytes, headers: dict) -> bool:
            try:
                Webhook(secret.encode()).verify(body, headers)
            except WebhookVerificationError:
                return False
            return True

        self.arrivals: dict[int, float] = {}  # upload id -> perf_counter at first arrival
        self.deliveries: list[dict] = []  # {"id": delivery id, "event": payload}
        self.bad = 0
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = secret is None or verified(body, dict(self.headers))
                with outer._cond:
                    if ok:
                        event = json.loads(body)
                        outer.deliveries.append(
                            {"id": self.headers.get("webhook-id"), "event": event}
                        )
                        outer.arrivals.setdefault(event["upload_id"], time.perf_counter())
                    else:
                        outer.bad += 1
                    outer._cond.notify_all()
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *a):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, upload_id: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: upload_id in self.arrivals, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_until(pred, timeout: float, what: str, interval: float = 0.5):
    """Poll ``pred`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (AssertionError naming ``what``): the distributed tests' one way to wait."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def not_terminal(engine) -> int:
    """Uploads of a stack's database that have not reached done/rejected/failed."""
    from sqlalchemy import text

    with engine.connect() as c:
        return c.execute(
            text("SELECT count(*) FROM uploads WHERE status NOT IN ('done', 'rejected', 'failed')")
        ).scalar()


def duplicate_alerts(engine) -> int:
    """(face, identity) pairs with more than one alert: must always be 0."""
    from sqlalchemy import text

    with engine.connect() as c:
        return c.execute(
            text(
                "SELECT count(*) FROM (SELECT face_id, identity_key FROM alerts "
                "GROUP BY face_id, identity_key HAVING count(*) > 1) d"
            )
        ).scalar()
