"""Faces across frames: detection per sampled frame, tracks, one identity decision per
track, forgery scores aggregated per track, and temporal evidence.

- ``detect_faces``: any ``FaceBackend`` on each sampled frame -> ``FrameFaces`` (boxes,
  landmarks, unit embeddings), faces under ``min_face_px`` dropped, at most
  ``max_faces`` (the largest) per frame.
- ``FaceTracker`` / ``track_faces``: each frame's faces are assigned to the open tracks
  by the Hungarian method on a score mixing box overlap (IoU) and embedding cosine.
  A pair may link when the boxes overlap (IoU >= ``min_iou``) or when the embeddings
  say "same person" (cosine >= ``same_person``, the backend's match threshold). Box
  overlap alone is enough on purpose: a face swapped in mid-shot keeps its place but
  changes identity, and must stay one track so the change shows as evidence. After a
  scene cut boxes mean nothing, so only the embedding can link. A track not seen for
  ``max_gap_s`` is closed.
- ``track_identity``: one decision per track: the mean of its unit embeddings (a
  template, as face verification pools several photos) is matched; a track also claims
  an identity when at least ``min_frames`` of its own frames match it, so a swapped
  segment inside a longer real track is not averaged away.
- ``aggregate_scores``: a track's forgery score is a high quantile (0.8) of its
  per-frame scores, and the "worst moment" is the frame with the highest score.
- ``temporal_features``: identity flicker and box/landmark jitter between frames.

Tracking needs embeddings, so in the pipeline it runs where embeddings exist (the index
stage), over all frames of the video at once; it costs no model time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.faces.base import DetectedFace, FaceBackend
from core.faces.crops import loose_crop
from core.forensics.base import ForensicInput, ForensicResult, ForgeryDetector, ReferenceView
from core.video.sampling import SampledFrame

# Forgery aggregation: the 0.8 quantile of a track's per-frame fake scores.
#  - max() lets one bad frame decide (motion blur, a compression burst, an odd pose):
#    its false alarms grow with the number of frames scored, i.e. with video length;
#  - mean() lets the real frames of a partly swapped track (a swapped segment, or a swap
#    that only breaks on profile views and fast motion) dilute the fake ones away;
#  - the 0.8 quantile needs about a fifth of the frames to look fake, so one outlier in
#    five or more frames cannot raise an alert alone, while a fake fifth of a track
#    does. With fewer than five frames it moves towards the max (linear interpolation).
AGGREGATE_QUANTILE = 0.8


@dataclass
class FaceObservation:
    """One face in one sampled frame."""

    time_s: float
    face: DetectedFace  # box and landmarks in the analysis frame's pixels
    embedding: np.ndarray  # unit-norm identity vector of the face backend
    key: object = None  # the caller's handle (e.g. a face row id, or the index in a frame)


@dataclass
class FrameFaces:
    """The faces of one sampled frame. ``cut``: the frame starts a new shot."""

    time_s: float
    observations: list[FaceObservation]
    cut: bool = False
    frame: SampledFrame | None = None  # the pixels, when the caller still holds them


@dataclass
class Track:
    track_id: int
    observations: list[FaceObservation] = field(default_factory=list)

    @property
    def start_s(self) -> float:
        return self.observations[0].time_s

    @property
    def end_s(self) -> float:
        return self.observations[-1].time_s

    @property
    def times(self) -> np.ndarray:
        return np.array([o.time_s for o in self.observations], np.float64)

    @property
    def embeddings(self) -> np.ndarray:
        return np.stack([o.embedding for o in self.observations]).astype(np.float32)

    @property
    def boxes(self) -> np.ndarray:
        return np.array([o.face.box for o in self.observations], np.float64)

    def __len__(self) -> int:
        return len(self.observations)


# --- detection -------------------------------------------------------------------------------


def detect_faces(
    backend: FaceBackend,
    frames: Iterable[SampledFrame],
    *,
    min_face_px: int = 24,
    max_faces: int = 32,
    keep_frames: bool = False,
) -> Iterator[FrameFaces]:
    """Detect, align and embed the faces of each sampled frame (streamed: a frame's
    pixels are dropped once its faces are embedded, unless ``keep_frames``).

    ``min_face_px`` is in the analysis frame's pixels. A frame whose scene-change
    score made it a sample is marked ``cut``."""
    for frame in frames:
        found = [f for f in backend.detect(frame.pixels) if min(f.width, f.height) >= min_face_px]
        if len(found) > max_faces:
            found = sorted(found, key=lambda f: -f.area)[:max_faces]
            found.sort(key=lambda f: (f.box[0], f.box[1]))
        vecs = backend.embed(frame.pixels, found) if found else []
        obs = [
            FaceObservation(frame.time_s, face, np.asarray(vec, np.float32), key=i)
            for i, (face, vec) in enumerate(zip(found, vecs, strict=True))
        ]
        yield FrameFaces(frame.time_s, obs, frame.reason == "scene", frame if keep_frames else None)


# --- tracking ----------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Online tracker: feed frames in time order with ``update``; read ``tracks``."""

    def __init__(
        self,
        same_person: float,
        *,
        min_iou: float = 0.3,
        iou_weight: float = 0.5,
        max_gap_s: float = 2.0,
    ) -> None:
        self.same_person = same_person
        self.min_iou = min_iou
        self.iou_weight = iou_weight
        self.max_gap_s = max_gap_s
        self._tracks: list[Track] = []
        self._open: list[Track] = []

    def _pair_score(self, track: Track, obs: FaceObservation, cut: bool) -> float | None:
        last = track.observations[-1]
        iou = 0.0 if cut else box_iou(last.face.box, obs.face.box)
        cos = float(np.dot(last.embedding, obs.embedding))
        if iou < self.min_iou and cos < self.same_person:
            return None
        return self.iou_weight * iou + (1.0 - self.iou_weight) * max(cos, 0.0)

    def update(self, frame: FrameFaces) -> list[int]:
        """Assign the frame's faces to tracks; returns a track id per observation."""
        t = frame.time_s
        self._open = [tr for tr in self._open if t - tr.end_s <= self.max_gap_s]
        obs = frame.observations
        ids: list[int | None] = [None] * len(obs)
        if self._open and obs:
            score = np.full((len(self._open), len(obs)), -1.0)
            for i, tr in enumerate(self._open):
                for j, o in enumerate(obs):
                    s = self._pair_score(tr, o, frame.cut)
                    if s is not None:
                        score[i, j] = s
            rows, cols = linear_sum_assignment(-score)
            for i, j in zip(rows, cols, strict=True):
                if score[i, j] >= 0:
                    self._open[i].observations.append(obs[j])
                    ids[j] = self._open[i].track_id
        for j, o in enumerate(obs):
            if ids[j] is None:
                tr = Track(len(self._tracks), [o])
                self._tracks.append(tr)
                self._open.append(tr)
                ids[j] = tr.track_id
        return [int(i) for i in ids if i is not None]

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)


def track_faces(frames: Iterable[FrameFaces], same_person: float, **kwargs: float) -> list[Track]:
    """Tracks of all faces in these frames (time order), ids 0, 1, ... by first
    appearance. ``same_person``: the backend's identity cosine threshold."""
    tracker = FaceTracker(same_person, **kwargs)
    for frame in sorted(frames, key=lambda f: f.time_s):
        tracker.update(frame)
    return tracker.tracks


# --- identity per track ---------------------------------------------------------------------

# Per vector: {identity_id: (cosine, reference_id)} of the identities it claims, e.g.
# ``functools.partial(core.pipeline.stages.best_identity_hits, svc)``.
Matcher = Callable[[np.ndarray], list[dict[int, tuple[float, int]]]]


def pooled_embedding(track: Track, method: Literal["mean", "median"] = "mean") -> np.ndarray:
    """The track's template: mean (or per-dimension median) of its unit embeddings,
    renormalised. The mean is the usual template; the median resists a few outliers."""
    e = track.embeddings
    v = np.median(e, axis=0) if method == "median" else e.mean(axis=0)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


@dataclass
class TrackClaim:
    """A track claims to be a protected identity."""

    identity_id: int
    similarity: float  # the pooled template's cosine if it matched, else the frames' median
    reference_id: int | None
    via: Literal["pooled", "frames"]
    frame_similarities: list[float | None]  # per observation; None where it did not match
    best_index: int  # the observation that matches this identity best

    @property
    def matching(self) -> list[int]:
        """Indices of the observations that match on their own."""
        return [i for i, s in enumerate(self.frame_similarities) if s is not None]


def track_identity(
    track: Track,
    matcher: Matcher,
    *,
    min_frames: int = 2,
    pooling: Literal["mean", "median"] = "mean",
) -> list[TrackClaim]:
    """The identities this track claims, best first (usually none or one).

    The matcher sees the pooled template and every frame's embedding in one call. An
    identity is claimed when the template matches it, or when at least ``min_frames``
    frames (all of them, for a shorter track) match it on their own."""
    vecs = np.vstack([pooled_embedding(track, pooling)[None], track.embeddings])
    hits = matcher(vecs)
    pooled, per_frame = hits[0], hits[1:]
    claims = []
    for identity in sorted(set(pooled) | {i for h in per_frame for i in h}):
        sims = [h[identity][0] if identity in h else None for h in per_frame]
        refs = [h[identity][1] if identity in h else None for h in per_frame]
        n_match = sum(s is not None for s in sims)
        if identity not in pooled and n_match < min(min_frames, len(track)):
            continue
        if n_match:
            best = max((i for i, s in enumerate(sims) if s is not None), key=lambda i: sims[i])
        else:
            best = int(np.argmax(track.embeddings @ vecs[0]))  # the most typical frame
        if identity in pooled:
            sim, ref, via = pooled[identity][0], pooled[identity][1], "pooled"
        else:
            sim = float(np.median([s for s in sims if s is not None]))
            ref, via = refs[best], "frames"
        claims.append(TrackClaim(identity, float(sim), ref, via, sims, best))
    return sorted(claims, key=lambda c: -c.similarity)


def frames_to_score(track: Track, claim: TrackClaim | None = None, k: int = 8) -> list[int]:
    """Which observations the forgery detector should see: the claim's matching frames
    when it has any (else all), at most ``k`` spread evenly in time, always with the
    best-matching one."""
    pool = (claim.matching if claim is not None else []) or list(range(len(track)))
    if len(pool) > k:
        pick = np.linspace(0, len(pool) - 1, k).round().astype(int)
        pool = sorted({pool[i] for i in pick})
    if claim is not None and claim.best_index not in pool:
        pool = sorted([*pool[: k - 1], claim.best_index])
    return pool


# --- forgery aggregation --------------------------------------------------------------------


@dataclass
class TrackScore:
    score: float  # the aggregate (AGGREGATE_QUANTILE of the frame scores)
    worst_time_s: float  # time of the frame with the highest score (the alert's moment)
    worst_index: int  # index into the scored frames
    frame_scores: list[float]
    frame_times_s: list[float]
    parts: dict[str, float] = field(default_factory=dict)  # for reports (see score_track)


def aggregate_scores(
    times_s: Sequence[float], scores: Sequence[float], q: float = AGGREGATE_QUANTILE
) -> TrackScore:
    """A track's forgery score from its frames' scores (see ``AGGREGATE_QUANTILE``)."""
    if len(scores) == 0 or len(scores) != len(times_s):
        raise ValueError("need one time per score and at least one score")
    arr = np.asarray(scores, np.float64)
    worst = int(np.argmax(arr))
    return TrackScore(
        score=float(np.quantile(arr, q)),
        worst_time_s=float(times_s[worst]),
        worst_index=worst,
        frame_scores=[float(s) for s in arr],
        frame_times_s=[float(t) for t in times_s],
    )


def score_track(
    detector: ForgeryDetector,
    track: Track,
    claim: TrackClaim,
    frames: Mapping[float, SampledFrame],
    references: list[ReferenceView],
    *,
    k: int = 8,
    file_format: str | None = None,
) -> tuple[TrackScore, list[ForensicResult]]:
    """Score the frames ``frames_to_score`` picks for this claim and aggregate them.

    ``frames`` maps an observation's ``time_s`` to its frame (``sampling.frames_at``
    re-reads them; boxes must be in the same analysis pixels). The result's ``parts``
    are the worst frame's detector parts plus ``temporal_*`` features of the track."""
    picked = [i for i in frames_to_score(track, claim, k) if track.observations[i].time_s in frames]
    if not picked:
        raise ValueError("none of the frames to score was given")
    results = []
    for i in picked:
        obs = track.observations[i]
        rgb = frames[obs.time_s].pixels
        sim = claim.frame_similarities[i]
        results.append(
            detector.score(
                ForensicInput(
                    image=rgb,
                    face=obs.face,
                    face_crop=loose_crop(rgb, obs.face),
                    references=references,
                    identity_similarity=claim.similarity if sim is None else sim,
                    embedding=obs.embedding,
                    file_format=file_format,
                )
            )
        )
    out = aggregate_scores(
        [track.observations[i].time_s for i in picked], [r.score for r in results]
    )
    out.parts = {k2: float(v) for k2, v in results[out.worst_index].parts.items()}
    out.parts.update({f"temporal_{k2}": v for k2, v in temporal_features(track).items()})
    return out, results


# --- temporal evidence -----------------------------------------------------------------------


def identity_series(track: Track, reference: np.ndarray) -> np.ndarray:
    """Cosine of every frame of the track to one reference vector."""
    ref = np.asarray(reference, np.float32)
    return track.embeddings @ (ref / max(float(np.linalg.norm(ref)), 1e-12))


def temporal_features(track: Track) -> dict[str, float]:
    """Numbers a detector can use, from the frames of one track (0.0 where a feature
    needs more frames than the track has; ``n_frames`` says how many it had):

    - ``identity_flicker``: std of the cosine between consecutive frames' embeddings
      (a swap that holds the identity unevenly, or a segment swapped in, makes it jump);
    - ``identity_jump``: the largest drop, 1 - min consecutive cosine;
    - ``box_jitter``: std of the second difference of the box edges, in box sides
      (smooth camera or head motion has small second differences; a face boundary
      that is re-fitted every frame does not);
    - ``scale_jitter``: std of the log change of box size between frames;
    - ``landmark_jitter``: std of the change of the 5 landmarks' positions inside the
      box between frames, in box sides (the face's inner geometry wobbling)."""
    n = len(track)
    out = {
        "n_frames": float(n),
        "duration_s": float(track.end_s - track.start_s),
        "identity_flicker": 0.0,
        "identity_jump": 0.0,
        "box_jitter": 0.0,
        "scale_jitter": 0.0,
        "landmark_jitter": 0.0,
    }
    if n < 2:
        return out
    e = track.embeddings
    consecutive = np.sum(e[1:] * e[:-1], axis=1)
    out["identity_flicker"] = float(np.std(consecutive))
    out["identity_jump"] = float(1.0 - consecutive.min())
    boxes = track.boxes
    side = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6, None))
    out["scale_jitter"] = float(np.std(np.diff(np.log(side))))
    marks = np.stack([np.asarray(o.face.landmarks, np.float64) for o in track.observations])
    rel = (marks - boxes[:, None, :2]) / side[:, None, None]
    out["landmark_jitter"] = float(np.std(np.diff(rel, axis=0)))
    if n >= 3:
        second = np.diff(boxes, n=2, axis=0) / side[1:-1, None]
        out["box_jitter"] = float(np.std(second))
    return {k: (v if math.isfinite(v) else 0.0) for k, v in out.items()}
