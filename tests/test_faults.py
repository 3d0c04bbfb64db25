"""Fault injection on the distributed stack, CI-sized (see benchmarks/faults.py).

kill -9 of a worker of every queue (supervisord restarts them), restarts of Redis and
PostgreSQL (private instances: the shared servers are never touched) and of the
milvus-lite server, the webhook receiver away for a while, a person registered and
another erased while uploads flow: afterwards every upload is terminal, none lost or
failed, no alert duplicated, every alert delivered once by delivery id, the counts equal
a run without faults, and nothing of the erased person is left.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.faults import check, run_faults
from core.flow import FLOW

pytestmark = [pytest.mark.distributed]


def test_faults_lose_nothing(tmp_path):
    keep = os.environ.get("IDWATCH_KEEP_TEST_LOGS")
    res = run_faults(
        tmp_path,
        n_uploads=36,
        kills=len(FLOW.queues),
        receiver_down_s=20,
        feed_interval=0.4,
        sweep_after_s=10,
        keep_logs=Path(keep) if keep else None,
    )
    assert check(res) == [], res
    assert res["kills"] == len(FLOW.queues)
    assert {f["fault"] for f in res["faults"]} >= {
        *(f"kill -9 {q} worker" for q in FLOW.queues),
        "restart Redis",
        "restart PostgreSQL",
        "restart milvus-lite server",
        "webhook receiver down",
    }
    assert res["with_faults"]["alerts"] > 0 and res["deliveries"]["delivered"] > 0
    # supervisord restarted every killed worker (none left dead or FATAL).
    assert all(res["restarts"].get(f"worker-{q}", 0) >= 1 for q in FLOW.queues), res["restarts"]
