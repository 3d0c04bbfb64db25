"""Video uploads: intake, frame sampling, face tracking. Plain Python (PyAV, numpy,
scipy); no storage, no Celery. How the stages use it is below, so that wiring it into
crop -> embed -> index -> classify -> notify is mechanical.

Modules
-------
``intake``    ``sniff_media(head) -> "image" | "video" | None`` (content, never the name);
              ``probe_video(path_or_bytes, VideoLimits) -> VideoProbe`` or ``Rejected``
              (codes in its docstring; ``VideoLimits.from_settings``).
``sampling``  ``plan_segments(probe, limits) -> [Segment]``; ``sample_segment(path, probe,
              segment, limits)`` streams ``SampledFrame`` (time_s, RGB pixels, reason);
              ``frames_at(path, probe, times) -> {time: SampledFrame}`` re-reads frames.
``tracking``  ``detect_faces(backend, frames)``; ``track_faces(frames, same_person)``;
              ``track_identity(track, matcher) -> [TrackClaim]``; ``frames_to_score``;
              ``score_track(detector, track, claim, frames, references)`` ->
              ``TrackScore`` (q0.8 aggregate, ``worst_time_s``, parts with ``temporal_*``).

The stages for a video (same four stages, same queues)
------------------------------------------------------
As built in ``core.pipeline.video_stages`` (messages stay one id: a segment is a
``video_segments`` row and its id is the ``crop_segment`` message):

submit
    Read the first ``intake.SNIFF_BYTES``; ``sniff_media`` routes (through
    ``core.pipeline.sources.media.media_decision``): "image" -> today's path; "video" ->
    the upload is a video (``media_kind``; the bytes stored streaming under
    ``max_video_bytes``, hashed as they go; never the whole file in memory); None ->
    today's path (the image intake refuses it as ``not_an_image``).
crop, message ``[upload_id]``
    ``probe_video(stored path, VideoLimits.from_settings(settings))``; ``Rejected`` ->
    status ``rejected`` with its code, exactly as an image. Otherwise keep the probe
    (size, duration, fps, codec) on the upload, ``plan_segments`` -> ``segments_total``
    and one ``video_segments`` row per segment, and return ``Split(segment ids)``: the
    flow sends one ``crop_segment`` message per segment, on the crop queue.
crop_segment, message ``[segment_id]``
    ``sample_segment`` -> ``backend.detect`` / ``backend.align`` per frame, faces under
    ``min_face_px`` dropped, ``max_faces_per_image`` per frame (as
    ``tracking.detect_faces`` does, minus the embedding) -> face rows with
    ``frame_time_s``, ``segment``, ``scene_cut`` (``frame.reason == "scene"``), chip and
    loose crop cut from the analysis frame. Idempotent per (upload, segment): sampling
    is deterministic (a time grid from 0), so a segment cropped again deletes and
    rewrites that segment's faces (only while it is pending, under its row lock). A
    ``Rejected`` raised while decoding (a header that lied: ``video_bomb``,
    ``too_long``, ``too_many_pixels``) rejects the whole upload; the other segments'
    tasks then find it terminal and stop. Then embed for that segment.
embed
    Unchanged: it embeds face rows that have no embedding, batched across uploads.
    It counts each cropped segment once (cropped -> embedded, ``segments_done`` raised
    under the upload row's lock); the run that counts the last segment moves the upload
    to ``embedded`` and hands it to index, once (a video skips ``cropped``).
index (whole video; no model, milliseconds)
    Faces by ``frame_time_s`` -> ``FrameFaces`` -> ``track_faces(frames,
    backend.match_threshold)`` -> ``track_id`` on each face. Tracking runs here because
    it needs the embeddings, and over the whole video, so tracks cross segment borders.
    Every face vector goes to the face index, as for images (backfill then finds a
    swapped segment). Per track: ``track_identity(track, partial(best_identity_hits,
    svc))`` -> one match per (track, identity), stored on the face of
    ``claim.best_index`` with ``track_id`` (the unique (face, identity) constraint holds).
classify
    Per unscored video match: the track's faces, ``frames_to_score(track, claim, k=8)``,
    ``frames_at(path, probe, their times)`` (one decode pass per group of nearby times),
    ``score_track(detector, track, claim, frames, reference_views(svc, identity))``.
    ``fake_score = result.score`` (the 0.8 quantile), ``parts = result.parts`` (the worst
    frame's detector parts plus ``temporal_identity_flicker`` etc.), ``is_fake`` against
    the detector threshold as for images. The alert points at the face observed at
    ``result.worst_time_s``.
notify / alerts / reports
    Alert JSON gains ``frame_time_s`` (null for images) and ``track_id`` (null for
    images). Report and review pages show the frame at ``frame_time_s`` (the stored crop
    of that face, or ``frames_at`` for the whole frame) beside the reference.

Progress and long videos
------------------------
A segment is ``video_segment_s`` (20 s) of video sampled at ``video_sample_fps`` (2) plus
scene changes: ~40-50 frames per crop task. Measured with dlib on the 2-core machine
(``benchmarks/video.py``, 2 faces a frame): ~0.1 s detection and ~0.1 s embedding per face
per frame, so a segment is ~15 s of crop + embed work, far under the 300 s task limit,
and several crop workers share one long video. ``max_video_frames`` (600) caps the work
per video: beyond 5 minutes the sampling rate drops (``interval_fps``) so the samples
still cover all of it. The status shows ``segments_done / segments_total`` next to the
usual ``received -> cropped -> embedded -> indexed -> done``.

Schema (migration 0007): uploads ``media_kind``, ``duration_s``, ``video`` (probe JSON),
``segments_total``, ``segments_done``; faces ``frame_time_s``, ``segment``,
``scene_cut``, ``track_id``; matches ``track_id``; alerts ``frame_time_s``, ``track_id``;
table ``video_segments``.
"""
