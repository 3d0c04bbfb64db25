"""Seconds of work per second of video: probe, sampling (decode), face detection,
embedding and tracking with the dlib backend; with ``--pipeline`` also the whole
embedded pipeline (submit, crop, crop_segment, embed, index, classify, notify) with the
configured face backend and a protected identity registered (prints JSON).

    python -m benchmarks.video [--seconds 20] [--fps 25] [--sizes 480x270,1280x720]
                               [--sample-fps 2] [--pipeline] [--segment-s 20]

The clip is the demo's (``core.demo.video``: a slow zoom over two people of t1.jpg,
one face swapped for 1.5 s), made at each size with H.264. Models are loaded before
timing. Detection and embedding are timed apart (``backend.detect`` then
``backend.embed`` per sampled frame), as ``core.video.tracking.detect_faces`` runs them.
The pipeline run times each stage as the in-process dispatcher runs it (models loaded
and Eileen Collins registered first) and checks that the alert's moment lies inside the
swapped segment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from core.demo.video import DemoVideo, build_demo_video
from core.faces.dlib_backend import DlibFaceBackend
from core.pipeline.dispatch import InlineDispatcher
from core.video.intake import VideoLimits, probe_video
from core.video.sampling import sample_frames
from core.video.tracking import FaceObservation, FrameFaces, track_faces


def measure(backend: DlibFaceBackend, path: Path, limits: VideoLimits) -> dict:
    t0 = time.perf_counter()
    probe = probe_video(path, limits)
    t_probe = time.perf_counter() - t0

    t_sample = t_detect = t_embed = 0.0
    frames: list[FrameFaces] = []
    n_faces = 0
    it = sample_frames(path, probe, limits)
    while True:
        t0 = time.perf_counter()
        frame = next(it, None)
        t_sample += time.perf_counter() - t0
        if frame is None:
            break
        t0 = time.perf_counter()
        faces = backend.detect(frame.pixels)
        t1 = time.perf_counter()
        vecs = backend.embed(frame.pixels, faces) if faces else []
        t_embed += time.perf_counter() - t1
        t_detect += t1 - t0
        n_faces += len(faces)
        obs = [FaceObservation(frame.time_s, f, v) for f, v in zip(faces, vecs, strict=True)]
        frames.append(FrameFaces(frame.time_s, obs, frame.reason == "scene"))
    t0 = time.perf_counter()
    tracks = track_faces(frames, backend.match_threshold)
    t_track = time.perf_counter() - t0

    duration = probe.duration_s or 0.0
    total = t_probe + t_sample + t_detect + t_embed + t_track
    per_s = {
        "probe": t_probe,
        "sample_decode": t_sample,
        "detect": t_detect,
        "embed": t_embed,
        "track": t_track,
        "total": total,
    }
    return {
        "size": f"{probe.width}x{probe.height}",
        "video_s": round(duration, 2),
        "video_fps": probe.fps,
        "bytes": probe.size_bytes,
        "sampled_frames": len(frames),
        "faces": n_faces,
        "tracks": len(tracks),
        "seconds": {k: round(v, 3) for k, v in per_s.items()},
        "seconds_per_video_s": {k: round(v / duration, 4) for k, v in per_s.items()},
        "per_frame_s": {
            "detect": round(t_detect / max(len(frames), 1), 4),
            "embed_per_face": round(t_embed / max(n_faces, 1), 4),
        },
        "realtime_factor": round(duration / total, 2),
    }


class TimedDispatcher(InlineDispatcher):
    """The in-process dispatcher, timing each stage run (its own work, not what it hands on)."""

    def __init__(self, svc) -> None:
        super().__init__(svc)
        self.seconds: dict[str, float] = defaultdict(float)
        self.runs: dict[str, int] = defaultdict(int)

    def send(self, stage, subject_id: int) -> None:
        t0 = time.perf_counter()
        out = stage.function()(self.svc, subject_id)
        self.seconds[stage.name] += time.perf_counter() - t0
        self.runs[stage.name] += 1
        self.hand_on(stage, out)


def measure_pipeline(clip: DemoVideo, workdir: Path, segment_s: float, sample_fps: float) -> dict:
    from sqlalchemy import func, select

    from core.alerts.listing import list_alerts
    from core.demo.dataset import EILEEN, _write, eileen_collins_portrait
    from core.pipeline.identities import register_identity
    from core.pipeline.sources.submit import submit_path
    from core.services import Services
    from core.settings import Settings
    from core.storage.models import Face, Upload

    svc = Services(
        Settings(
            data_dir=workdir,
            notifier="memory",
            video_segment_s=segment_s,
            video_sample_fps=sample_fps,
        )
    )
    try:
        ref = workdir / "eileen.png"
        _write(ref, eileen_collins_portrait())
        register_identity(svc, EILEEN, [ref])
        svc.detector.load()  # the face backend is loaded by the registration
        disp = TimedDispatcher(svc)
        t0 = time.perf_counter()
        sub = submit_path(svc, clip.path)
        t_submit = time.perf_counter() - t0
        disp.upload(sub.upload_id)
        total = time.perf_counter() - t0
        with svc.db.session() as s:
            up = s.get(Upload, sub.upload_id)
            status, segments, duration = up.status, up.segments_total, up.duration_s or 0.0
            n_faces = s.scalar(select(func.count(Face.id)).where(Face.upload_id == up.id))
            tracks = s.scalar(
                select(func.count(func.distinct(Face.track_id))).where(Face.upload_id == up.id)
            )
        alerts = [a for a in list_alerts(svc) if a["upload_id"] == sub.upload_id]
        seconds = {"submit": t_submit, **disp.seconds, "total": total}
        return {
            "size": f"{clip.size[0]}x{clip.size[1]}",
            "face_backend": svc.face_backend.name,
            "detector": svc.detector.name,
            "video_s": round(duration, 2),
            "status": status,
            "segments": segments,
            "stage_runs": dict(disp.runs),
            "faces": n_faces,
            "tracks": tracks,
            "alerts": [
                {k: a[k] for k in ("identity", "frame_time_s", "track_id", "fake_score")}
                for a in alerts
            ],
            "swap_s": list(clip.swap_s) if clip.swap_s else None,
            "alert_inside_swap": any(
                clip.is_swapped(a["frame_time_s"]) for a in alerts if a["frame_time_s"] is not None
            ),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "seconds_per_video_s": {k: round(v / duration, 4) for k, v in seconds.items()},
            "realtime_factor": round(duration / total, 2),
        }
    finally:
        svc.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--sizes", default="480x270,1280x720")
    ap.add_argument("--sample-fps", type=float, default=2.0)
    ap.add_argument("--pipeline", action="store_true", help="also the embedded pipeline")
    ap.add_argument("--segment-s", type=float, default=20.0, help="pipeline: segment length")
    args = ap.parse_args()

    backend = DlibFaceBackend()
    backend.load()
    limits = VideoLimits(sample_fps=args.sample_fps)
    runs, pipeline = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.lower().split("x"))
            t0 = time.perf_counter()
            clip = build_demo_video(
                Path(tmp) / f"clip_{w}x{h}.mp4",
                duration_s=args.seconds,
                fps=args.fps,
                size=(w, h),
                swap_s=(args.seconds * 0.4, args.seconds * 0.4 + 1.5),
                backend=backend,
            )
            made_s = time.perf_counter() - t0
            run = measure(backend, clip.path, limits)
            run["make_clip_s"] = round(made_s, 2)
            runs.append(run)
            if args.pipeline:
                work = Path(tmp) / f"pipeline_{w}x{h}"
                pipeline.append(measure_pipeline(clip, work, args.segment_s, args.sample_fps))
    out = {
        "benchmark": "video",
        "face_backend": backend.name,
        "sample_fps": args.sample_fps,
        "max_side": limits.max_side,
        "cpu_count": os.cpu_count(),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runs": runs,
    }
    if args.pipeline:
        out["pipeline"] = pipeline
        out["segment_s"] = args.segment_s
    print(json.dumps(out))


if __name__ == "__main__":
    main()
