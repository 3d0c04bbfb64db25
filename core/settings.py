"""One settings object for the whole system (env vars ``IDWATCH_*``).

With no variables set, everything runs embedded under ``data_dir``: SQLite for
metadata, a milvus-lite file for vectors, stages executed in-process. Pointing
``database_url``/``milvus_uri``/``broker_url`` at servers makes the same code
distributed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDWATCH_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("idwatch-data"), description="Root of all local state.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite.")
    milvus_uri: str | None = Field(
        default=None, description="milvus-lite file path or http://host:port; default a file."
    )
    milvus_token: SecretStr | None = None
    model_dir: Path | None = Field(
        default=None, description="Model weights; default data_dir/models."
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Per-user model cache searched after model_dir (MobileFaceNet); "
        "default ~/.cache/identity-watch/models (core.faces.mobilefacenet_model).",
    )
    model_threads: int = Field(
        default=1,
        ge=0,
        description="Threads per model session (onnxruntime intra-op) and of OpenCV in "
        "each process; 0: the libraries' defaults (one per core). 1 lets several workers "
        "share the cores instead of each spinning up threads that fight over them.",
    )
    broker_url: str | None = Field(default=None, description="Celery broker; None = in-process.")
    dispatcher: str = Field(
        default="auto",
        description="inline (stages run in this process) or celery; auto: celery with a broker.",
    )

    # Backends, chosen by name; "auto" picks the production model when its files exist.
    face_backend: str = "auto"  # auto | dlib | mobilefacenet | insightface
    detector: str = "auto"  # auto | offline | univfd | clip-ref
    detector_path: Path | None = Field(default=None, description="Trained offline head (JSON).")
    match_threshold: float | None = Field(
        default=None, description="Override of the backend's identity cosine threshold."
    )
    claim_margin: float = Field(
        default=0.03,
        description="A face claims only the identities within this cosine of its best match.",
    )
    fake_threshold: float | None = Field(
        default=None, description="Override of the detector file's decision threshold."
    )

    # Intake limits: refuse before decoding anything expensive.
    max_upload_bytes: int = 30 * 1024 * 1024
    max_pixels: int = 50_000_000
    # What decoding may hold (width x height x bytes per pixel the file declares): an
    # 8-bit RGBA image at the pixel limit; a 16-bit one that large is refused unread.
    max_decoded_bytes: int = 200_000_000
    max_side: int = 16_000
    min_side: int = 32
    max_faces_per_image: int = 32
    min_face_px: int = 24

    # Video intake limits (core.video): checked from the container headers before any
    # decoding, and again while decoding (a header can lie). See core/video/intake.py.
    max_video_bytes: int = 512 * 1024 * 1024
    max_video_duration_s: float = 30 * 60.0
    max_video_pixels: int = 3840 * 2160  # per frame: 4K UHD
    max_video_fps: float = 300.0  # declared or measured rate above this is "absurd"
    max_video_streams: int = 16  # audio tracks, subtitles... more is a container bomb
    # Video analysis: frames sampled at video_sample_fps plus scene changes, at most
    # max_video_frames per video (the rate drops for long videos so the cap covers the
    # whole video); frames are scaled so their long side is at most video_max_side.
    max_video_frames: int = 600
    video_sample_fps: float = 2.0
    video_max_side: int = 1280
    # A video is analysed in segments of this many seconds, one task each, so that a
    # long video never holds a worker for minutes (see core/video/__init__.py).
    video_segment_s: float = 20.0

    notifier: str = "log"  # comma-separated notifier names: log, webhook, memory

    # Webhook notifier: POST JSON signed the Standard Webhooks way (webhook-id,
    # webhook-timestamp, webhook-signature). The secret: "whsec_<base64 key>" as the
    # standard writes it, or any other text (its UTF-8 bytes are the key).
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = 5.0
    # Attempts within one delivery run (quick retries of a blip); a run that still fails
    # is run again later: by Celery with the notify backoff below, or by the sweeper.
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 0.5  # first retry delay; doubles each attempt

    # The notify queue: a failed delivery run is retried with exponential backoff and
    # jitter (Celery's retry_backoff) up to notify_max_retries times; after that the
    # notification stays pending and the sweeper queues it again.
    notify_backoff_s: int = 2
    notify_backoff_max_s: int = 300
    notify_max_retries: int = 12

    # Ingest API (distributed mode): comma-separated API keys; requests need X-API-Key.
    api_keys: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The whole request body; default: the larger upload limit (a video's) plus 1 MiB for
    # the form around it. Each upload is then held to its kind's limit (413 above it).
    api_max_request_bytes: int | None = None

    # Review pages (/review on the API app) and the review workflow (core/review).
    # Users: "name:hash" entries separated by whitespace or ";" (argon2 hashes contain
    # commas), hashes from `idwatch review user hash`; or users stored in the database
    # by `idwatch review user add`. The secret signs the session cookie; without it the
    # review pages are not served.
    review_users: SecretStr | None = None
    review_secret: SecretStr | None = None
    review_session_max_age_s: int = 8 * 3600
    review_cookie_secure: bool = False  # True behind HTTPS: the cookie is sent over TLS only
    # Review states that send a `review` event through the notifiers (comma-separated).
    review_notify_states: str = "confirmed"
    # A face counts as "the same face" as a reviewed one (dismissed / wrong person: no
    # alert again for that person) at this cosine or above; default per face backend
    # (core/review/suppression.py, measured on faces-dev for dlib).
    review_same_face_similarity: float | None = None
    # Signs evidence manifests (HMAC-SHA256); `idwatch alerts export` needs it.
    evidence_secret: SecretStr | None = None

    # Watched folder: a file is taken once its size and mtime have been stable this long.
    watch_settle_s: float = 2.0
    watch_poll_s: float = 1.0

    # Flower (job status UI): basic auth "user:password".
    flower_basic_auth: SecretStr | None = None
    flower_port: int = 5555

    # Celery: a task running longer than task_time_limit_s is killed; an unacknowledged
    # message returns to the queue after visibility_timeout_s (it must exceed the limit,
    # or a slow task would be delivered twice while still running).
    task_time_limit_s: int = 300
    task_soft_time_limit_s: int = 270
    visibility_timeout_s: int = 900
    task_max_retries: int = 6
    embed_batch_size: int = 16

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, v: Path) -> Path:
        # Resolved once, when read: the default ./idwatch-data depends on the working
        # directory, so every path shown and derived is the absolute one.
        return v.expanduser().absolute()

    @property
    def resolved_api_max_request_bytes(self) -> int:
        if self.api_max_request_bytes is not None:
            return self.api_max_request_bytes
        return max(self.max_upload_bytes, self.max_video_bytes) + (1 << 20)

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'idwatch.db').resolve()}"

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str((self.data_dir / "vectors.db").resolve())

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    def ensure_dirs(self) -> None:
        for sub in ("uploads", "references", "crops"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
