"""Fault injection on the distributed stack, CI-sized (see benchmarks/faults.py).

kill -9 of every worker type, restarts of Redis, PostgreSQL and the milvus-lite server
while uploads flow: afterwards every upload is terminal, none lost, no alert duplicated,
and the counts equal a run without faults.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.faults import run_faults

pytestmark = [pytest.mark.postgres, pytest.mark.distributed]


def test_faults_lose_nothing(tmp_path, pg_url):
    keep = os.environ.get("IDWATCH_KEEP_TEST_LOGS")
    res = run_faults(
        tmp_path, pg_url, n_uploads=36, rounds=1, keep_logs=Path(keep) if keep else None
    )
    assert res["lost"] == 0 and res["not_terminal"] == 0, res
    assert res["duplicate_alerts"] == 0, res
    assert res["with_faults"] == res["without_faults"], res
    assert len(res["faults"]) == 7
