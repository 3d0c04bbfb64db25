"""The flow is declared once (core/flow.py) and everything else is read from it."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.flow import FLOW, JOB, UPLOAD, Flow, Stage, UploadStatus
from core.pipeline.dispatch import InlineDispatcher, make_dispatcher
from core.pipeline.status import NON_TERMINAL, ORDER, reached
from core.registry import Registry, load_object


def test_statuses_queues_and_next_stage_come_from_the_flow():
    assert [s.name for s in FLOW.line] == ["crop", "embed", "index", "classify", "notify"]
    assert list(FLOW.order) == ["received", "cropped", "embedded", "indexed", "done"]
    assert list(FLOW.order) == ORDER and ORDER[:-1] == NON_TERMINAL
    assert [s for s in UploadStatus if s.terminal] == ["done", "rejected", "failed"]
    assert FLOW.queues == ("crop", "embed", "index", "classify", "notify")
    assert [FLOW.after(n).name for n in ("crop", "embed", "index", "classify")] == [
        "embed",
        "index",
        "classify",
        "notify",
    ]
    assert FLOW.after("notify") is None and FLOW.after("erasure") is None
    assert FLOW.after("backfill").name == "notify"  # backfill alerts are delivered too
    # A video's crop splits it into segments, cropped on the same queue, then embedded.
    assert FLOW["crop"].split == "crop_segment" and FLOW["crop_segment"].queue == "crop"
    assert FLOW.after("crop_segment").name == "embed"
    assert reached("indexed", "cropped") and not reached("cropped", "indexed")
    for stage in FLOW.stages.values():
        assert callable(stage.function()), stage.run


def test_adding_a_stage_is_one_entry():
    """A stage added to the line (here: a hypothetical "dedupe" after crop) gets its
    status, queue and place without touching anything else."""
    line = list(FLOW.line)
    line.insert(1, Stage("dedupe", "dedupe", "core.pipeline.detection:crop", UPLOAD, "deduped"))
    off_line = tuple(s for s in FLOW.stages.values() if s not in FLOW.line)  # jobs, parts
    flow = Flow(tuple(line), off_line)
    assert flow.order[:3] == ("received", "cropped", "deduped")
    assert "dedupe" in flow.queues
    assert flow.after("crop").name == "dedupe" and flow.after("dedupe").name == "embed"
    with pytest.raises(ValueError, match="unknown stage"):
        Flow((Stage("a", "q", "m:f", UPLOAD, "a-ed"),), (Stage("j", "q", "m:f", JOB, then="x"),))


def test_every_stage_has_its_celery_task_on_its_queue():
    import workers.tasks  # noqa: F401 - registers the tasks
    from workers.app import app
    from workers.ops.queues import FLOW as queues_flow

    assert queues_flow is FLOW
    for stage in FLOW.stages.values():
        task = app.tasks[stage.task_name]
        assert task.stage is stage
        assert app.conf.task_routes[stage.task_name] == {"queue": stage.queue}
    assert {q.name for q in app.conf.task_queues} == set(FLOW.queues)
    notify = app.tasks["idwatch.notify"]
    assert notify.retry_jitter and notify.retry_backoff and notify.max_retries >= 1


def test_dispatcher_is_chosen_once_from_settings(make_services):
    svc = make_services()
    assert isinstance(make_dispatcher(svc), InlineDispatcher)
    celery = make_dispatcher(make_services(broker_url="redis://127.0.0.1:6379/15"))
    assert type(celery).__module__ == "workers.dispatch" and not celery.synchronous
    assert isinstance(make_dispatcher(make_services(dispatcher="inline")), InlineDispatcher)
    with pytest.raises(ValueError, match="unknown dispatcher 'nope'; choose one of inline"):
        make_dispatcher(make_services(dispatcher="nope"))


def test_core_never_imports_celery(tmp_path):
    """Everything core does, dispatcher factory included, leaves Celery unimported."""
    code = (
        "import sys, pathlib; from core.settings import Settings; "
        "from core.services import Services; import core.flow, core.pipeline.recovery; "
        "import core.pipeline.sources.scan, core.pipeline.identities, core.pipeline.demo; "
        "from core.pipeline.dispatch import make_dispatcher; "
        f"svc = Services(Settings(data_dir=pathlib.Path({str(tmp_path)!r}))); "
        "make_dispatcher(svc); "
        "bad = sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('celery', 'kombu', 'workers')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _core_imports() -> dict[str, set[str]]:
    """core module -> the core modules it imports, at module level or inside functions
    (an import moved into a function still closes a circle)."""
    root = Path(__file__).resolve().parents[1]
    files = {}
    for p in (root / "core").rglob("*.py"):
        parts = p.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            # A package's own __init__ is not a circle with its modules.
            targets |= {n for n in names if n in files and n != mod and not mod.startswith(n + ".")}
        graph[mod] = targets
    return graph


def test_no_import_circle_under_core():
    graph = _core_imports()
    assert "core.pipeline.verdicts" in graph and graph["core.pipeline.verdicts"]
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(mod: str, stack: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            if state.get(nxt) == 1:
                circle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])


def test_registry_loads_by_name_lazily():
    reg = Registry("thing", {"flow": "core.flow:Flow"})
    assert reg.names == ("flow",) and reg.load("flow") is Flow
    with pytest.raises(ValueError, match="unknown thing 'x'; choose one of flow"):
        reg.load("x")
    with pytest.raises(ValueError, match="module:attribute"):
        load_object("core.flow.Flow")


def test_embedded_flow_delivers_each_alert_once_and_a_dead_receiver_fails_no_upload(
    make_services, demo_set
):
    """In-process: classify only creates notification rows; the notify stage delivers
    them. A receiver that is down leaves them pending (uploads done); the sweeper
    delivers them once it is back, each exactly once."""
    from sqlalchemy import func, select

    from benchmarks.common import WebhookReceiver, free_port
    from core.demo.dataset import load_references
    from core.pipeline.identities import register_identity
    from core.pipeline.recovery import sweep
    from core.pipeline.sources.scan import scan
    from core.storage.models import Alert, Notification

    port = free_port()
    svc = make_services(
        notifier="memory,webhook",
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_secret="s3cret",
        webhook_max_attempts=1,
        webhook_timeout_s=1.0,
    )
    register_identity(svc, "Eileen Collins", load_references(demo_set)["Eileen Collins"])
    summary = scan(svc, [demo_set / "uploads"])
    assert summary.done == summary.scanned == 20 and summary.failed == 0
    with svc.db.session() as s:
        n_alerts = s.scalar(select(func.count()).select_from(Alert))
        rows = s.execute(select(Notification.notifier, Notification.status)).all()
    assert n_alerts > 0
    assert Counter(map(tuple, rows)) == {
        ("memory", "delivered"): n_alerts,
        ("webhook", "pending"): n_alerts,
    }
    assert len(svc.notifier("memory").events) == n_alerts

    rx = WebhookReceiver("s3cret", port=port)
    try:
        res = sweep(svc, InlineDispatcher(svc), older_than_s=0)
        assert len(res.notifications) == n_alerts and res.requeued == []
        assert sweep(svc, InlineDispatcher(svc), older_than_s=0).notifications == []
    finally:
        rx.close()
    assert rx.bad == 0 and len(rx.deliveries) == n_alerts
    assert len({d["id"] for d in rx.deliveries}) == n_alerts
    assert len(svc.notifier("memory").events) == n_alerts  # not sent again
    with svc.db.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(Alert).where(Alert.notified_at.is_(None)))
            == 0
        )
