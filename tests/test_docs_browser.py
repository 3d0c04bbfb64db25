"""The API's docs page in a real browser (headless Chromium, Playwright), under its own
Content-Security-Policy: Swagger UI renders the API's operations, every request goes to
this server (no CDN), and the browser reports no error (a CSP violation is one).

Skips like tests/test_review_browser.py when Playwright or Chromium is missing.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_review_browser import browser  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.browser


class _NoPipeline:
    def upload(self, upload_id: int) -> None:
        pass

    def backfill(self, job_id: int) -> None:
        pass


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    import uvicorn

    from benchmarks.common import free_port
    from core.services import Services
    from core.settings import Settings
    from workers.api import create_app

    data = tmp_path_factory.mktemp("docs") / "data"
    svc = Services(Settings(data_dir=data, api_keys="docs-test-key", notifier="memory"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(svc, _NoPipeline()), host="127.0.0.1", port=port)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    svc.close()


def test_docs_render_offline_under_their_policy(browser, base_url):  # noqa: F811
    page = browser.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base_url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/uploads", "/uploads/{upload_id}", "/alerts", "/healthz"} <= {
        p.replace("\u200b", "") for p in paths
    }
    page.close()
    elsewhere = [u for u in requests if not u.startswith((base_url, "data:", "blob:"))]
    assert elsewhere == [], elsewhere
    assert any(u.endswith(".js") for u in requests)
    assert errors == [], errors
