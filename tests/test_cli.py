"""The idwatch command line, run in-process with typer's runner on a temp data dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from core.demo.dataset import load_references
from core.demo.splice import DEMO_EDITS
from workers.cli import app

runner = CliRunner()
FAKES_OF_EILEEN = {f"fake_eileen_{n}.png" for n in ("person1", "person3", "person5", "group2")}


def _run(data_dir, *args: str, code: int = 0):
    res = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    assert res.exit_code == code, res.output
    return res


def _json(res):
    return json.loads(res.stdout)


def test_identity_scan_alerts_report_remove(tmp_path, demo_set):
    data = tmp_path / "data"
    ref = load_references(demo_set)["Eileen Collins"][0]

    res = _run(data, "identity", "add", "Nobody", str(demo_set / "uploads" / "coffee.jpg"), code=2)
    assert "coffee.jpg" in res.output and "no face" in res.output

    added = _json(_run(data, "identity", "add", "Eileen Collins", str(ref), "--json"))
    assert added["created"] and added["references_added"] == 1
    assert [p["usable"] for p in added["photos"]] == [True]

    listed = _json(_run(data, "identity", "list", "--json"))
    assert [i["name"] for i in listed] == ["Eileen Collins"]
    shown = _json(_run(data, "identity", "show", "Eileen Collins", "--json"))
    assert shown["references"][0]["file"] == str(ref)
    assert shown["coverage"]["references"] == 1 and shown["coverage"]["usable"] == 1
    assert "coverage: 1 usable of 1" in _run(data, "identity", "show", "Eileen Collins").stdout

    summary = _json(_run(data, "scan", str(demo_set / "uploads"), "--json"))
    assert summary["scanned"] == 20 and summary["failed"] == 0
    assert summary["with_faces"] == 19  # all but the coffee cup
    assert summary["matched"] == 7  # 3 real photos + 4 fakes of Eileen Collins

    alerts = _json(_run(data, "alerts", "--json"))
    # The packaged detector catches the three face swaps (reviewkit); a dead detector
    # (no alert) or one that alerts on her real photos fails here.
    alerted = {Path(a["upload"]).name for a in alerts}
    assert len(alerts) >= 3 and alerted <= FAKES_OF_EILEEN, alerted
    assert summary["judged_fake"] == len(alerted)
    for a in alerts:
        assert a["identity"] == "Eileen Collins" and a["decision"] == "fake"
        assert set(a) >= {"upload", "box", "similarity", "fake_score", "created_at"}
    # Pages, read in the query: --limit and --offset, within their ranges.
    page = _json(_run(data, "alerts", "--limit", "2", "--offset", "1", "--json"))
    assert [a["id"] for a in page] == [a["id"] for a in alerts[1:3]]
    table = _run(data, "alerts", "--limit", "1", "--offset", "1").stdout
    assert f"Alerts (2-2 of {len(alerts)})" in table
    assert "--offset 1" in _run(data, "alerts", "--limit", "1").stderr
    _run(data, "alerts", "--limit", "0", code=2)
    _run(data, "alerts", "--offset", "-1", code=2)
    _run(data, "identity", "list", "--limit", "0", code=2)
    assert _json(_run(data, "identity", "list", "--offset", "1", "--json")) == []
    res = _run(data, "alerts", "--identity", "Tom Hanks", "--json", code=2)  # nobody by that name
    assert "no identity named 'Tom Hanks'; known: 'Eileen Collins'" in res.output
    table = _run(data, "alerts").stdout
    assert f"Alerts ({len(alerts)})" in table

    report = tmp_path / "r.html"
    _run(data, "report", str(report))
    html = report.read_text()
    assert html.count('class="alert"') == len(alerts)
    assert len(re.findall(r'src="data:image/jpeg;base64,', html)) == 3 * len(alerts)
    assert "http://" not in html and "https://" not in html  # opens offline

    status = _json(_run(data, "status", "--json"))
    assert status["uploads"] == {"done": 20} and status["alerts"] == len(alerts)

    removed = _json(_run(data, "identity", "remove", "Eileen Collins", "--yes", "--json"))
    assert removed["references_removed"] == 1 and removed["alerts_anonymised"] == len(alerts)
    assert _json(_run(data, "identity", "list", "--json")) == []
    _run(data, "identity", "show", "Eileen Collins", code=2)  # unknown name: a usage error


def test_scan_missing_path_is_a_clear_error(tmp_path):
    res = _run(tmp_path / "d", "scan", str(tmp_path / "nope"), code=2)
    assert "no such file or folder" in res.output


def test_demo_main_job(tmp_path):
    work = tmp_path / "demo"
    res = _json(_run(tmp_path / "unused", "demo", "--workdir", str(work), "--json"))
    r = res["result"]
    assert set(r["registered"]) == {"Eileen Collins", "Tom Hanks"}
    # 20 images, the identity-preserving edits and the video with a face-swapped segment.
    n_edits = len(DEMO_EDITS)
    assert r["summary"]["scanned"] == 21 + n_edits and r["summary"]["failed"] == 0
    assert r["fakes"] == 9 + n_edits and r["reals"] == 6
    [video] = r["videos"]
    [alert] = [a for a in res["alerts"] if a["frame_time_s"] is not None]
    assert alert["upload"] == video["path"] and alert["identity"] == video["identity"]
    assert video["swap_s"][0] <= alert["frame_time_s"] < video["swap_s"][1]
    # Tom Hanks is registered after the scan: his alerts come from backfill.
    tom_alerts = [a for a in res["alerts"] if a["identity"] == "Tom Hanks"]
    assert tom_alerts, "backfill raised no alert for Tom Hanks"
    assert r["backfill_alerts"] == len(tom_alerts)
    # Every alert is on a fake: the detector runs, and its alerts are the fakes'.
    assert r["fakes_alerted"] >= 1 and r["reals_alerted"] == 0
    assert r["scan_alerts"] + r["backfill_alerts"] == len(res["alerts"])
    assert (work / "report.html").exists()
