"""Vector store latency, insert rate and HNSW recall on synthetic faces.

    python -m benchmarks.vectors --faces 10000,100000,1000000 [--mode file|server|both]
        [--dim 512] [--queries 200] [--identities 1000] [--cluster K] [--no-wait]

Goes through the project's ``VectorStore`` (not raw pymilvus), so it measures what
the system does: ``add_faces`` (upsert of Python lists over gRPC), the
``faces_<backend>`` HNSW collection (M=16, efConstruction=200), ``search_faces`` as
backfill calls it (min_score = the ArcFace threshold, limit 16384, so ef 16384) and
``search_references`` as matching calls it (limit 256, FLAT) against 1000
identities x 3 references.

Data: random unit vectors (float32, generated in chunks from per-chunk seeds so 1M x
512 is never held in memory; the brute-force ground truth regenerates the same
chunks). Uniform random vectors in 512-d are the hard case for HNSW (no clusters,
near-ties among the top 10), so ``recall_at_10`` is a lower bound for real
embeddings. ``--cluster K`` instead stores people of K faces each (faces at cosine
~0.75 to their person's centre), closer to what an upload index holds. Queries: half
noisy copies of stored vectors (cosine ~0.6 to their source, a same-person pair),
half random.

Each (n, mode) runs in a fresh child process so its peak RSS is its own; in file
mode milvus-lite runs inside that process (``rss_mb`` includes ~0.1 GB of Python),
in server mode ``rss_mb`` is the ``milvus-lite server`` process. Before a run the
peak RSS is extrapolated from the smaller runs of the same mode; runs that would
pass ``--max-rss-gb`` are skipped with the reason. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import percentile
from core.storage.vectors import VectorStore

BACKEND = "bench"
# insightface (ArcFace, 512-d) identity threshold: what backfill passes as min_score.
MATCH_THRESHOLD = 0.35
# Cosine of a noisy query to its source: a different photo of the same person.
QUERY_COS = 0.6
REF_COS = 0.75  # references of one identity around its centre
FACE_COS = 0.75  # --cluster: faces of one person around its centre
REFS_PER_IDENTITY = 3
CHUNK = 20_000
# Without a measured run: 2.4 GB per 100k rows (docs/environment.md, milvus-lite 3.2.2).
DEFAULT_BYTES_PER_ROW = 24_000
BUSY_PATTERN = "benchmarks.pipeline|pytest"


# -- synthetic data ---------------------------------------------------------------------
def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def chunks(
    n: int, dim: int, seed: int, size: int = CHUNK, cluster: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, unit vectors) covering rows 0..n-1; the same arguments give the same rows.

    ``cluster`` > 0: rows come in people of ``cluster`` faces each, every face at cosine
    ~``FACE_COS`` to its person's centre (uploads showing the same person many times)."""
    centres = None
    if cluster:
        crng = np.random.default_rng([seed, 2**31])
        centres = unit(crng.standard_normal((-(-n // cluster), dim), dtype=np.float32))
    for start in range(0, n, size):
        rng = np.random.default_rng([seed, start])
        m = min(size, n - start)
        if centres is None:
            yield start, unit(rng.standard_normal((m, dim), dtype=np.float32))
        else:
            yield start, noisy(centres[np.arange(start, start + m) // cluster], FACE_COS, rng)


def noisy(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at cosine ~``cos`` to the rows of ``v`` (noise ~orthogonal in high dim)."""
    sigma = np.sqrt(1.0 / cos**2 - 1.0)
    noise = rng.standard_normal(v.shape, dtype=np.float32) / np.sqrt(v.shape[1])
    return unit(v + sigma * noise)


def brute_force(
    n: int,
    dim: int,
    seed: int,
    queries: np.ndarray,
    k: int,
    thr: float,
    size: int = CHUNK,
    cluster: int = 0,
) -> tuple[np.ndarray, list[set[int]]]:
    """Exact top-k ids per query and the ids scoring >= thr, streaming over the chunks."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    over: list[set[int]] = [set() for _ in range(len(queries))]
    for start, v in chunks(n, dim, seed, size, cluster):
        s = queries @ v.T  # (q, m) float32
        for qi, cols in zip(*np.nonzero(s >= thr), strict=True):
            over[qi].add(start + int(cols))
        ids = np.broadcast_to(np.arange(start, start + len(v)), s.shape)
        cat_s = np.concatenate([best_s, s], axis=1)
        cat_i = np.concatenate([best_i, ids], axis=1)
        top = np.argsort(-cat_s, axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, top, axis=1)
        best_i = np.take_along_axis(cat_i, top, axis=1)
    return best_i, over


# -- process measurements ---------------------------------------------------------------
def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    # Fields after the ")" of comm: utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout_s: float, window_s: float = 0.5, busy: float = 0.1) -> float:
    """Seconds until process ``pid`` has used < ``busy`` of a core for two windows in a row.

    milvus-lite compacts and builds HNSW indexes in a background thread after a flush
    and has no API that says when it is done; its CPU going quiet is the signal."""
    t0 = time.perf_counter()
    quiet = 0
    last = cpu_seconds(pid)
    while time.perf_counter() - t0 < timeout_s:
        time.sleep(window_s)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < busy * window_s else 0
        last = now
        if quiet >= 2:
            # The two quiet windows are not build time.
            return time.perf_counter() - t0 - 2 * window_s
    return time.perf_counter() - t0


# -- milvus-lite server -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def milvus_lite_binary() -> str:
    beside = Path(sys.executable).parent / "milvus-lite"
    found = str(beside) if beside.exists() else shutil.which("milvus-lite")
    if not found:
        raise RuntimeError("milvus-lite executable not found")
    return found


class LiteServer:
    """``milvus-lite server`` on a free 127.0.0.1 port with its own data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                milvus_lite_binary(),
                "server",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.uri = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("milvus-lite server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one run ----------------------------------------------------------------------------
def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def run_once(
    n: int,
    mode: str,
    dim: int = 512,
    queries: int = 200,
    identities: int = 1000,
    batch: int = 1000,
    seed: int = 0,
    cluster: int = 0,
    root: Path | None = None,
) -> dict:
    """Insert ``n`` faces, build, search; one run's measurements (see module doc)."""
    tmp = tempfile.TemporaryDirectory(dir=root)
    data = Path(tmp.name)
    server = LiteServer(data / "server") if mode == "server" else None
    store = VectorStore(server.uri if server else str(data / "bench.db"))
    milvus_pid = server.proc.pid if server else os.getpid()
    rng = np.random.default_rng([seed, 1])
    faces = VectorStore.faces_name(BACKEND)
    load0 = os.getloadavg()
    wall0 = time.perf_counter()
    try:
        # References: identities x 3 noisy views of a centre; FLAT collection.
        centres = unit(rng.standard_normal((identities, dim), dtype=np.float32))
        refs = noisy(np.repeat(centres, REFS_PER_IDENTITY, axis=0), REF_COS, rng)
        owners = np.repeat(np.arange(identities), REFS_PER_IDENTITY)
        store.add_references(BACKEND, list(range(len(refs))), owners.tolist(), refs)
        store.client.flush(VectorStore.refs_name(BACKEND))

        # Faces: insert in batches; keep the rows the noisy queries are copies of.
        n_noisy = min(queries // 2, n)
        src_ids = np.sort(rng.choice(n, n_noisy, replace=False))
        src = np.zeros((n_noisy, dim), dtype=np.float32)
        t0 = time.perf_counter()
        for start, v in chunks(n, dim, seed, cluster=cluster):
            sel = (src_ids >= start) & (src_ids < start + len(v))
            src[sel] = v[src_ids[sel] - start]
            for b in range(0, len(v), batch):
                ids = list(range(start + b, start + min(b + batch, len(v))))
                store.add_faces(BACKEND, ids, [i // 2 for i in ids], v[b : b + batch])
        insert_s = time.perf_counter() - t0

        # Build: flush, then wait until milvus-lite's background compaction + HNSW
        # build has finished (the system never flushes itself; see README).
        t0 = time.perf_counter()
        store.client.flush(faces)
        flush_s = time.perf_counter() - t0
        build_s = flush_s + wait_idle(milvus_pid, timeout_s=3600)
        rows = store.count(faces)

        q = np.concatenate(
            [
                noisy(src, QUERY_COS, rng),
                unit(rng.standard_normal((queries - n_noisy, dim), dtype=np.float32)),
            ]
        )
        rq = np.concatenate(
            [
                noisy(centres[: queries // 2], QUERY_COS, rng),
                unit(rng.standard_normal((queries - queries // 2, dim), dtype=np.float32)),
            ]
        )
        # Warm-up (first search loads segments / builds caches), not counted.
        store.search_faces(BACKEND, q[:1], min_score=MATCH_THRESHOLD)
        store.search_faces(BACKEND, q[:1], min_score=-1.0, limit=10)
        store.search_references(BACKEND, rq[:1], limit=256)

        backfill_ms, top10_ms, refs_ms = [], [], []
        backfill_hits: list[set[int]] = []
        top10_hits: list[list[int]] = []
        for i in range(len(q)):
            ms, res = timed(lambda i=i: store.search_faces(BACKEND, q[i : i + 1], MATCH_THRESHOLD))
            backfill_ms.append(ms)
            backfill_hits.append({h.id for h in res[0]})
            ms, res = timed(lambda i=i: store.search_faces(BACKEND, q[i : i + 1], -1.0, limit=10))
            top10_ms.append(ms)
            top10_hits.append([h.id for h in res[0]])
        for i in range(len(rq)):
            ms, _ = timed(lambda i=i: store.search_references(BACKEND, rq[i : i + 1], limit=256))
            refs_ms.append(ms)

        rss_mb = proc_status_kb(milvus_pid, "VmHWM") / 1024
    finally:
        store.close()
        if server:
            server.stop()
        tmp.cleanup()

    exact, over = brute_force(n, dim, seed, q, 10, MATCH_THRESHOLD, cluster=cluster)
    k = min(10, n)
    recall = [len(set(exact[i, :k]) & set(top10_hits[i])) / k for i in range(len(q))]
    # A noisy copy's own source is its true nearest neighbour: found first?
    source_at_1 = [bool(top10_hits[i][:1] == [int(src_ids[i])]) for i in range(n_noisy)]
    found = sum(len(over[i] & backfill_hits[i]) for i in range(len(q)))
    wanted = sum(len(s) for s in over)
    return {
        "n": n,
        "mode": mode,
        "dim": dim,
        "data": f"clustered ({cluster} faces/person)" if cluster else "uniform random",
        "rows": rows,
        "insert_per_s": round(n / insert_s, 1),
        "insert_batch": batch,
        "flush_s": round(flush_s, 2),
        "build_s": round(build_s, 2),
        # The backfill query as the system issues it (limit 16384 -> ef 16384).
        "search_p50_ms": percentile(backfill_ms, 50),
        "search_p99_ms": percentile(backfill_ms, 99),
        "backfill_recall": round(found / wanted, 4) if wanted else None,
        # Plain top-10 (ef 64), the query recall_at_10 is measured on.
        "top10_p50_ms": percentile(top10_ms, 50),
        "top10_p99_ms": percentile(top10_ms, 99),
        "recall_at_10": round(float(np.mean(recall)), 4),
        "recall_at_10_noisy": round(float(np.mean(recall[:n_noisy])), 4),
        "recall_at_10_random": round(float(np.mean(recall[n_noisy:])), 4)
        if len(q) > n_noisy
        else None,
        "source_at_1": round(float(np.mean(source_at_1)), 4) if n_noisy else None,
        "refs": len(refs),
        "refs_search_p50_ms": percentile(refs_ms, 50),
        "refs_search_p99_ms": percentile(refs_ms, 99),
        "queries": len(q),
        "rss_mb": round(rss_mb, 1),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


# -- driver -----------------------------------------------------------------------------
def wait_quiet(max_s: float) -> float:
    """Wait (poll) until no pipeline benchmark or pytest runs; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        out = subprocess.run(["pgrep", "-f", BUSY_PATTERN], capture_output=True, text=True)
        others = set(out.stdout.split()) - {str(os.getpid()), str(os.getppid())}
        if not others:
            break
        time.sleep(10)
    return round(time.monotonic() - t0, 1)


def estimate_rss_mb(n: int, done: list[dict]) -> float:
    """Peak RSS at ``n`` rows, linear in n from the largest measured runs of a mode."""
    pts = sorted((r["n"], r["rss_mb"]) for r in done if "rss_mb" in r)
    if len(pts) >= 2:
        (n1, r1), (n2, r2) = pts[-2], pts[-1]
        slope = max((r2 - r1) / (n2 - n1), 0.0) if n2 > n1 else r2 / n2
        return r2 + slope * (n - n2)
    if pts:
        return pts[-1][1] * n / pts[-1][0]
    return n * DEFAULT_BYTES_PER_ROW / 2**20


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(n: int, mode: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.vectors",
        "--one",
        "--faces",
        str(n),
        "--mode",
        mode,
        "--dim",
        str(args.dim),
        "--queries",
        str(args.queries),
        "--identities",
        str(args.identities),
        "--batch",
        str(args.batch),
        "--cluster",
        str(args.cluster),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"n": n, "mode": mode, "error": out.stderr.strip().splitlines()[-5:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", default="10000", help="comma list of N, e.g. 10000,100000")
    ap.add_argument("--mode", choices=["file", "server", "both"], default="both")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--identities", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1000, help="faces per add_faces call")
    ap.add_argument(
        "--cluster", type=int, default=0, help="faces per person (0: uniform random vectors)"
    )
    ap.add_argument("--max-rss-gb", type=float, default=12.0)
    ap.add_argument("--max-minutes", type=float, default=30.0, help="per run, extrapolated")
    ap.add_argument("--no-wait", action="store_true", help="don't wait for a quiet machine")
    ap.add_argument("--max-wait-s", type=float, default=900, help="longest wait for quiet")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    sizes = sorted(int(x) for x in args.faces.split(","))
    modes = ["file", "server"] if args.mode == "both" else [args.mode]
    if args.one:
        print(
            json.dumps(
                run_once(
                    sizes[0],
                    modes[0],
                    args.dim,
                    args.queries,
                    args.identities,
                    args.batch,
                    cluster=args.cluster,
                )
            )
        )
        return

    waited = 0.0 if args.no_wait else wait_quiet(args.max_wait_s)
    runs: list[dict] = []
    for mode in modes:
        for n in sizes:
            done = [r for r in runs if r.get("mode") == mode and "error" not in r]
            est = estimate_rss_mb(n, done)
            limit = min(args.max_rss_gb * 1024, 0.8 * mem_available_mb())
            if est > limit:
                runs.append(
                    {
                        "n": n,
                        "mode": mode,
                        "skipped": f"estimated peak RSS {est / 1024:.1f} GB (linear in n from "
                        f"{[r['n'] for r in done][-2:] or 'docs/environment.md'}) exceeds "
                        f"the {limit / 1024:.1f} GB allowed on this shared machine",
                        "estimated_rss_mb": round(est),
                    }
                )
                continue
            if done and done[-1]["wall_s"] * n / done[-1]["n"] > args.max_minutes * 60:
                runs.append(
                    {
                        "n": n,
                        "mode": mode,
                        "skipped": f"estimated {done[-1]['wall_s'] * n / done[-1]['n'] / 60:.0f}"
                        f" min (linear from n={done[-1]['n']}) exceeds --max-minutes "
                        f"{args.max_minutes:g}",
                        "estimated_rss_mb": round(est),
                    }
                )
                continue
            runs.append(child(n, mode, args))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)  # progress
    print(
        json.dumps(
            {
                "benchmark": "vectors",
                "dim": args.dim,
                "match_threshold": MATCH_THRESHOLD,
                "data": f"clustered ({args.cluster} faces/person)"
                if args.cluster
                else "uniform random",
                "cpu_count": os.cpu_count(),
                "waited_for_quiet_s": waited,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
