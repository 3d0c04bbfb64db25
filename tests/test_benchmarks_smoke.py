"""Smoke tests of the benchmarks: they run end to end at tiny sizes and print sane JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str, timeout: float = 120) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_vectors_file_mode_tiny():
    res = run_module(
        "benchmarks.vectors",
        *("--faces", "2000", "--mode", "file", "--queries", "20", "--identities", "50"),
        "--no-wait",
    )
    assert res["dim"] == 512
    [run] = res["runs"]
    assert "error" not in run and "skipped" not in run, run
    assert run["n"] == 2000 and run["mode"] == "file"
    assert run["rows"] == 2000  # every inserted face is in the collection after the flush
    assert run["insert_per_s"] > 0 and run["build_s"] >= 0
    for key in ("search", "top10", "refs_search"):
        assert 0 < run[f"{key}_p50_ms"] <= run[f"{key}_p99_ms"]
    for key in ("recall_at_10", "recall_at_10_noisy", "recall_at_10_random", "source_at_1"):
        assert 0.0 <= run[key] <= 1.0
    # A noisy copy (cosine ~0.6) is far closer to its source than to any random row:
    # HNSW must find it, and the backfill query (ef 16384) must return every row over
    # the threshold that brute force finds.
    assert run["source_at_1"] >= 0.9
    assert run["backfill_recall"] >= 0.95
    assert run["rss_mb"] > 50


def test_brute_force_matches_full_matrix():
    from benchmarks.vectors import brute_force, chunks, noisy

    n, dim = 2500, 32  # crosses a chunk boundary with chunk size 1000 below
    full = np.concatenate([v for _, v in chunks(n, dim, seed=3, size=1000)])
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    q = noisy(full[[5, 1700]], 0.6, np.random.default_rng(0))
    top, over = brute_force(n, dim, 3, q, k=10, thr=0.5, size=1000)
    expect = np.argsort(-(q @ full.T), axis=1)[:, :10]
    assert (top == expect).all()
    assert over[0] >= {5} and over[1] >= {1700}
    assert over == [set(np.nonzero(row >= 0.5)[0].tolist()) for row in q @ full.T]


def test_clustered_chunks_are_people():
    from benchmarks.vectors import chunks

    v = np.concatenate([c for _, c in chunks(60, 256, seed=1, size=25, cluster=10)])
    sims = v @ v.T
    same = np.arange(60)[:, None] // 10 == np.arange(60)[None, :] // 10
    off_diag = ~np.eye(60, dtype=bool)
    # Two faces of one person sit at ~0.75^2 to each other; strangers near 0.
    assert sims[same & off_diag].min() > 0.35
    assert np.abs(sims[~same]).max() < 0.35


def test_gpu_skips_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; the benchmark would really run")
    assert run_module("benchmarks.gpu") == {"skipped": "no CUDA device"}


def test_video_tiny():
    res = run_module(
        "benchmarks.video", "--seconds", "2", "--fps", "10", "--sizes", "320x180",
        "--pipeline", "--segment-s", "1", timeout=300,
    )  # fmt: skip
    [run] = res["runs"]
    assert res["face_backend"] == "dlib" and run["size"] == "320x180"
    assert run["video_s"] == 2.0 and run["sampled_frames"] == 4  # 2 per second
    assert run["faces"] >= run["sampled_frames"] and run["tracks"] >= 1
    per_s = run["seconds_per_video_s"]
    assert per_s["total"] >= per_s["detect"] + per_s["embed"] > 0
    [pipe] = res["pipeline"]  # the embedded pipeline: one crop, a crop_segment per segment
    assert pipe["status"] == "done" and pipe["segments"] == 2
    assert pipe["stage_runs"]["crop"] == 1 and pipe["stage_runs"]["crop_segment"] == 2
    assert pipe["faces"] >= 4 and pipe["seconds"]["total"] >= pipe["seconds"]["crop_segment"] > 0
