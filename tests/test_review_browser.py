"""The review pages in a real browser: headless Chromium (Debian's ``chromium``) driven
by Playwright over the API app served by uvicorn on 127.0.0.1.

Log in, open the queue, confirm one alert from the queue, dismiss another from its page
with the keyboard, reload: the states persist (on the page and in the database). The
queue and one alert page are saved as screenshots (``IDWATCH_SCREENSHOT_DIR``, default
the test's temporary folder).

Skips when Playwright or ``/usr/bin/chromium`` is missing (``scripts/test.sh`` installs
chromium where apt-get can). Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from core.demo.dataset import EILEEN
from core.pipeline.dispatch import InlineDispatcher
from core.review.users import add_user
from core.storage.models import Alert
from tests.reviewkit import AI_DECLARED, PASSWORD, alert_ids, make_system

CHROMIUM = os.environ.get("IDWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_set):
    """(base URL, services): the API app with the review pages, on a free port."""
    import uvicorn

    from benchmarks.common import free_port
    from workers.api import create_app

    svc = make_system(tmp_path_factory.mktemp("browser") / "data", demo_set)
    add_user(svc, "alice", PASSWORD)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(svc, InlineDispatcher(svc)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", svc
    server.should_exit = True
    thread.join(10)
    svc.close()


def _states(svc) -> dict[int, str]:
    with svc.db.session() as s:
        return {a.id: a.review_state for a in s.query(Alert)}


def test_review_in_chromium_states_persist(browser, served, tmp_path):
    base, svc = served
    shots = Path(os.environ.get("IDWATCH_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    ids = alert_ids(svc)
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    failed: list[str] = []  # responses >= 400 (the wrong password's page is one, 401)
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.request.method} {r.url} {r.status}") if r.status >= 400 else None
        ),
    )

    # Not logged in: the queue sends us to the login page.
    page.goto(f"{base}/review/")
    assert "/review/login" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong name or password" in page.inner_text("main")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/review/")

    # The queue: every new alert, newest first, the first row selected for the keys.
    rows = page.locator("tr[data-row]")
    assert rows.count() == len(ids) == 4
    assert "selected" in (rows.nth(0).get_attribute("class") or "")
    page.keyboard.press("j")
    assert "selected" in (rows.nth(1).get_attribute("class") or "")
    page.keyboard.press("k")
    assert "selected" in (rows.nth(0).get_attribute("class") or "")

    # Confirm one alert with its row's button.
    to_confirm = ids["fake_eileen_person3.png"]
    row = page.locator(f"tr[data-row][data-href*='/alerts/{to_confirm}?']")
    with page.expect_navigation():
        row.locator("button[value=confirmed]").click()
    assert page.locator(f"tr[data-row][data-href*='/alerts/{to_confirm}?']").count() == 0

    # Dismiss another from its page, with the keyboard (a note first).
    to_dismiss = ids["fake_eileen_group2.png"]
    page.locator(f"tr[data-row][data-href*='/alerts/{to_dismiss}?'] a").first.click()
    page.wait_for_url(re.compile(rf".*/review/alerts/{to_dismiss}\?.*"))
    assert EILEEN in page.inner_text("h1")
    page.fill("textarea[name=note]", "a real photo of her")
    page.locator("h1").click()  # leave the text box: keys act on the page again
    with page.expect_navigation():
        page.keyboard.press("d")
    assert f"/alerts/{to_dismiss}" not in page.url  # on to the next alert (or the queue)

    # Reload the whole queue: the decisions are still there.
    page.goto(f"{base}/review/?state=all&sort=score")
    page.reload()
    badge = {
        aid: page.locator(f"tr[data-row][data-href*='/alerts/{aid}?'] .badge").inner_text()
        for aid in ids.values()
    }
    assert badge[to_confirm] == "Confirmed fake"
    assert badge[to_dismiss] == "Dismissed (real photo)"
    assert sorted(badge.values()).count("New") == 2
    assert page.locator("a.tab.active").inner_text().startswith("All")
    states = _states(svc)
    assert states[to_confirm] == "confirmed" and states[to_dismiss] == "dismissed"
    page.screenshot(path=str(shots / "review-queue.png"), full_page=True)

    # One alert page, all of it (the one whose file says it is AI-made).
    page.goto(f"{base}/review/alerts/{ids[AI_DECLARED]}?state=all")
    assert "declares itself AI-made" in page.inner_text("main")
    for img in page.locator("main img").all():
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")
    page.screenshot(path=str(shots / "review-alert.png"), full_page=True)

    # A history line on the dismissed alert, with the note.
    page.goto(f"{base}/review/alerts/{to_dismiss}?state=all")
    assert "a real photo of her" in page.inner_text("ol.history")

    # Logging out ends the session.
    with page.expect_navigation():
        page.click("header button.link")
    page.goto(f"{base}/review/")
    assert "/review/login" in page.url
    assert errors == [], errors  # no script error, nothing blocked by the CSP
    assert failed == [f"POST {base}/review/login 401"], failed
