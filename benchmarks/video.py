"""Seconds of work per second of video: probe, sampling (decode), face detection,
embedding and tracking with the dlib backend (prints JSON).

    python -m benchmarks.video [--seconds 20] [--fps 25] [--sizes 480x270,1280x720]
                               [--sample-fps 2]

The clip is the demo's (``core.demo.video``: a slow zoom over two people of t1.jpg,
one face swapped for 1.5 s), made at each size with H.264. Models are loaded before
timing. Detection and embedding are timed apart (``backend.detect`` then
``backend.embed`` per sampled frame), as ``core.video.tracking.detect_faces`` runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from core.demo.video import build_demo_video
from core.faces.dlib_backend import DlibFaceBackend
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--sizes", default="480x270,1280x720")
    ap.add_argument("--sample-fps", type=float, default=2.0)
    args = ap.parse_args()

    backend = DlibFaceBackend()
    backend.load()
    limits = VideoLimits(sample_fps=args.sample_fps)
    runs = []
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
