"""One settings object for the whole system (env vars ``IDWATCH_*``).

With no variables set, everything runs embedded under ``data_dir``: SQLite for
metadata, a milvus-lite file for vectors, stages executed in-process. Pointing
``database_url``/``milvus_uri``/``broker_url`` at servers makes the same code
distributed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
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
    broker_url: str | None = Field(default=None, description="Celery broker; None = in-process.")

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
    max_side: int = 16_000
    min_side: int = 32
    max_faces_per_image: int = 32
    min_face_px: int = 24

    notifier: str = "log"  # comma-separated notifier names: log, webhook, memory

    # Webhook notifier: POST JSON, HMAC-SHA256 over "<timestamp>.<body>" with the secret.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 0.5  # first retry delay; doubles each attempt

    # Ingest API (distributed mode): comma-separated API keys; requests need X-API-Key.
    api_keys: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_request_bytes: int = 32 * 1024 * 1024

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
