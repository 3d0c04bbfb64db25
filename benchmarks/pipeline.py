"""Uploads per second: bare models vs the embedded runner vs the distributed stack.

    python -m benchmarks.pipeline --images N [--skip-distributed]

(a) bare: the models called in a loop (decode, detect, align, embed, match against the
    references in numpy, forgery score for matched faces), in one process per CPU
    (``--bare-processes``), each taking every n-th upload, as the distributed stack
    spreads uploads over its workers;
(b) embedded: the real pipeline in-process (SQLite, milvus-lite file);
(c) distributed: ``idwatch up`` on this machine (a worker per queue over Redis,
    PostgreSQL, a milvus-lite server), uploads dispatched to the queues.
Eileen Collins is registered in each, so fakes go through classify. Prints one JSON
object. The distributed part needs local Redis and PostgreSQL; its timing starts once a
warm-up upload has gone through every worker (each preloads its models after start,
which takes seconds to tens of seconds on a loaded machine).

``*_cpu_s_per_upload``: CPU seconds (user + system, every thread) spent per upload:
the bare processes, the embedded process, and in the distributed run the stack's own
processes (workers, milvus-lite server, Redis, PostgreSQL) plus this process, read from
/proc (Linux; null elsewhere). On a machine with C free cores, uploads/s cannot exceed
C / cpu_s_per_upload.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.common import WebhookReceiver, demo_images, percentile, unique_bytes
from core.faces.crops import loose_crop
from core.forensics.base import ForensicInput
from core.intake import IntakeLimits, load_image
from core.pipeline.delivery import deliver
from core.pipeline.detection import crop, embed_batch
from core.pipeline.identities import register_identity
from core.pipeline.matching import index
from core.pipeline.sources.submit import submit_bytes, submit_path
from core.pipeline.verdicts import classify, reference_views
from core.services import Services
from core.settings import Settings

PROTECTED = "Eileen Collins"
# Processes whose CPU time counts as the distributed stack's (matched on their command line).
STACK_PROCESSES = ("celery -A workers.app", "milvus-lite", "postgres", "redis-server")


def stack_cpu_s(patterns: tuple[str, ...] = STACK_PROCESSES) -> float | None:
    """CPU seconds so far of every live process whose command line contains one of
    ``patterns``, plus this one (None without /proc). Exited processes are missed, so
    read it while the stack runs."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if int(d.name) != os.getpid() and not any(p in cmd for p in patterns):
                continue
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _bare_worker(files, views, settings_kw, barrier, results) -> None:
    """One bare process: load the models, wait for the others, run its share."""
    from core.faces.registry import make_face_backend
    from core.forensics.registry import make_detector

    st = Settings(**settings_kw)
    if st.model_threads:  # as Services does for the pipeline's processes
        import cv2

        cv2.setNumThreads(st.model_threads)
    backend = make_face_backend(
        st.face_backend, st.resolved_model_dir, st.model_cache_dir, st.model_threads
    )
    backend.load()
    det = make_detector(
        st.detector, st.resolved_model_dir, st.detector_path, embedder=backend,
        cache_dir=st.model_cache_dir,
    )  # fmt: skip
    det.load()
    thr = st.match_threshold if st.match_threshold is not None else backend.match_threshold
    ref_vecs = np.stack([v.embedding for v in views])
    limits = IntakeLimits.from_settings(st)
    for v in views[:1]:  # warm up (first calls allocate)
        det.score(
            ForensicInput(image=v.image, face=v.face, face_crop=v.face_crop, references=views)
        )
    barrier.wait()
    cpu0 = time.process_time()
    for f in files:
        img = load_image(f, limits)
        faces = backend.detect(img.pixels)
        if not faces:
            continue
        vecs = backend.embed_chips([backend.align(img.pixels, x) for x in faces])
        sims = (vecs @ ref_vecs.T).max(axis=1)
        for face, vec, sim in zip(faces, vecs, sims, strict=True):
            if sim >= thr:
                det.score(
                    ForensicInput(
                        image=img.pixels,
                        face=face,
                        face_crop=loose_crop(img.pixels, face),
                        references=views,
                        identity_similarity=float(sim),
                        embedding=vec,
                        metadata=img.metadata,
                        file_format=img.format,
                    )
                )
    results.put((time.perf_counter(), time.process_time() - cpu0))


def bare(files: list[Path], refs: list[Path], root: Path, processes: int | None = None) -> dict:
    """The models in ``processes`` processes (default: one per CPU), each taking every
    n-th file, as the distributed stack spreads uploads over its workers: so the ratios
    compare like with like on a multi-core machine."""
    import multiprocessing as mp

    n = processes or os.cpu_count() or 1
    kw = {"data_dir": root / "bare", "notifier": "memory"}
    svc = Services(Settings(**kw))
    register_identity(svc, PROTECTED, refs)
    views = reference_views(svc, 1)
    backend_name = svc.face_backend.name
    svc.close()  # releases the milvus-lite file; the workers need no vector store
    ctx = mp.get_context("spawn")  # no fork after onnxruntime/dlib started threads
    barrier, results = ctx.Barrier(n + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_bare_worker, args=(files[k::n], views, kw, barrier, results))
        for k in range(n)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    ends = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    dt = max(e for e, _ in ends) - t0
    return {
        "seconds": round(dt, 3),
        "ups": round(len(files) / dt, 3),
        "processes": n,
        "face_backend": backend_name,
        "cpu_s_per_upload": round(sum(c for _, c in ends) / len(files), 4),
    }


def _run_embedded(svc: Services, uid: int) -> None:
    if crop(svc, uid):
        embed_batch(svc, [uid])
        index(svc, uid)
        for nid in classify(svc, uid):
            deliver(svc, nid)


def embedded(files: list[Path], refs: list[Path], root: Path) -> dict:
    svc = Services(Settings(data_dir=root / "embedded", notifier="memory"))
    register_identity(svc, PROTECTED, refs)
    svc.detector.load()
    per_stage: dict[str, list[float]] = {
        k: [] for k in ("submit", "crop", "embed", "index", "classify")
    }
    # One fake through every stage first, as the distributed run does: one-off costs
    # (the face collection created, first allocations) are not throughput.
    fake = next(f for f in files if f.name.startswith("fake_eileen"))
    _run_embedded(svc, submit_bytes(svc, unique_bytes(fake, 30_000), "warm.png", "bench").upload_id)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for f in files:
        ts = [time.perf_counter()]
        uid = submit_path(svc, f).upload_id
        ts.append(time.perf_counter())
        if crop(svc, uid):
            ts.append(time.perf_counter())
            embed_batch(svc, [uid])
            ts.append(time.perf_counter())
            index(svc, uid)
            ts.append(time.perf_counter())
            for nid in classify(svc, uid):  # delivery counted with classify, as before
                deliver(svc, nid)
        ts.append(time.perf_counter())
        for name, a, b in zip(per_stage, ts, ts[1:], strict=False):
            per_stage[name].append(b - a)
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    svc.close()
    return {
        "seconds": round(dt, 3),
        "ups": round(len(files) / dt, 3),
        "cpu_s_per_upload": round(cpu / len(files), 4),
        "stage_seconds": {k: round(float(np.mean(v)), 4) for k, v in per_stage.items() if v},
    }


def distributed(
    files: list[Path],
    refs: list[Path],
    root: Path,
    timeout_s: float,
    concurrency: int | None = None,
) -> dict:
    """``concurrency``: ``idwatch up --concurrency`` (None: its per-queue default)."""
    import redis
    from sqlalchemy import create_engine, text

    receiver = WebhookReceiver()
    db = f"idwatch_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDWATCH_")}
    env.update(
        {
            "IDWATCH_DATA_DIR": str(root / "distributed"),
            "IDWATCH_DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1/{db}",
            "IDWATCH_BROKER_URL": "redis://127.0.0.1:6379/12",
            "IDWATCH_MILVUS_URI": "http://127.0.0.1:19537",
            "IDWATCH_NOTIFIER": "webhook",
            "IDWATCH_WEBHOOK_URL": receiver.url,
            "IDWATCH_WEBHOOK_SECRET": "bench-secret",
        }
    )
    redis.Redis(db=12).flushdb()

    def cli(*args):
        subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )

    engine = create_engine(env["IDWATCH_DATABASE_URL"])
    try:
        cli("up", *(["--concurrency", str(concurrency)] if concurrency else []))
        cli("identity", "add", PROTECTED, *map(str, refs))
        # Submit and dispatch from this process (as the API or watcher would), so the
        # timing holds no CLI start-up.
        os.environ.update(env)
        from core.settings import get_settings

        get_settings.cache_clear()
        from core.pipeline.dispatch import make_dispatcher
        from core.pipeline.sources.scan import scan

        svc = Services(get_settings())
        dispatcher = make_dispatcher(svc)  # the Celery one: a broker is configured
        # Workers preload their models after start; time the steady state, not that:
        # one fake through every stage (crop ... notify) before the clock starts.
        fake = next(f for f in files if f.name.startswith("fake_eileen"))
        warm = submit_bytes(svc, unique_bytes(fake, 40_000), f"warm-{fake.name}", "bench")
        dispatcher.upload(warm.upload_id)
        if not receiver.wait_for(warm.upload_id, 300):
            raise RuntimeError("the warm-up upload got no webhook in 300 s; see the logs")
        t0, cpu0 = time.perf_counter(), stack_cpu_s()
        summary = scan(svc, files, dispatcher=dispatcher, wait_s=timeout_s, poll_s=0.1)
        dt, cpu1 = time.perf_counter() - t0, stack_cpu_s()
        assert summary.pending == 0, summary
        # Idle latency: one fake at a time, from submission to the signed webhook.
        idle = []
        fakes = [f for f in files if f.name.startswith("fake_eileen")][:4]
        for k, f in enumerate(fakes):
            data = unique_bytes(f, 50_000 + k)
            t1 = time.perf_counter()
            sub = submit_bytes(svc, data, f"idle-{k}-{f.name}", "bench")
            dispatcher.upload(sub.upload_id)
            if receiver.wait_for(sub.upload_id, 20):
                idle.append(time.perf_counter() - t1)
        svc.close()
        with engine.connect() as c:
            lat = [
                r[0]
                for r in c.execute(
                    text(
                        "SELECT EXTRACT(EPOCH FROM a.created_at - u.created_at) FROM alerts a "
                        "JOIN uploads u ON u.id = a.upload_id"
                    )
                )
            ]
            st = dict(c.execute(text("SELECT status, count(*) FROM uploads GROUP BY status")).all())
        return {
            "seconds": round(dt, 3),
            "ups": round(len(files) / dt, 3),
            "statuses": st,
            "cpu_s_per_upload": (
                round((cpu1 - cpu0) / len(files), 4) if cpu0 is not None and cpu1 else None
            ),
            "idle_upload_to_webhook_s": [round(x, 3) for x in idle],
            "p50_upload_to_alert_s": percentile([float(x) for x in lat], 50),
            "p95_upload_to_alert_s": percentile([float(x) for x in lat], 95),
        }
    finally:
        receiver.close()
        engine.dispose()
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "down"], env=env, capture_output=True, timeout=120
        )
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
            ],
            capture_output=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--skip-distributed", action="store_true")
    ap.add_argument("--bare-processes", type=int, default=None, help="default: CPU count")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="pool processes of every worker (default: idwatch up's per-queue sizes)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files, refs = demo_images(root, args.images)
        ref = refs[PROTECTED]
        a = bare(files, ref, root, args.bare_processes)
        b = embedded(files, ref, root)
        c = (
            None
            if args.skip_distributed
            else distributed(files, ref, root, args.timeout, args.worker_concurrency)
        )
    out = {
        "images": len(files),
        "bare_ups": a["ups"],
        "bare_processes": a["processes"],
        "face_backend": a["face_backend"],
        "embedded_ups": b["ups"],
        "distributed_ups": c["ups"] if c else None,
        "embedded_ratio": round(b["ups"] / a["ups"], 3),
        "distributed_ratio": round(c["ups"] / a["ups"], 3) if c else None,
        "cpu_s_per_upload": {
            "bare": a["cpu_s_per_upload"],
            "embedded": b["cpu_s_per_upload"],
            "distributed": c["cpu_s_per_upload"] if c else None,
        },
        "stage_seconds": b["stage_seconds"],
        "p50_upload_to_alert_s": c["p50_upload_to_alert_s"] if c else None,
        "p95_upload_to_alert_s": c["p95_upload_to_alert_s"] if c else None,
        "distributed_statuses": c["statuses"] if c else None,
        "idle_upload_to_webhook_s": c["idle_upload_to_webhook_s"] if c else None,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
