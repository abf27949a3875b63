"""Settings: every knob of Rapport, read from RAPPORT_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-change-me"  # noqa: S105 - the known value that is refused outside dev


class Settings(BaseSettings):
    """All configuration; `RAPPORT_` prefix, optional `.env` file."""

    model_config = SettingsConfigDict(env_prefix="RAPPORT_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "production"] = "dev"
    secret_key: str = DEV_SECRET
    base_url: str = "http://127.0.0.1:8000"
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file data_dir/rapport.db

    storage: Literal["local", "s3"] = "local"
    media_dir: Path = Path()  # empty: data_dir/media
    s3_bucket: str = "rapport-media"
    s3_endpoint_url: str | None = None
    s3_region: str = "eu-central-1"
    s3_prefix: str = ""
    # Cut an HLS rendition of each published video when ffmpeg is installed (MP4 stays the
    # fallback); off, videos play as MP4 only.
    hls_renditions: bool = True
    download_url_ttl: int = Field(default=600, ge=10, le=7 * 24 * 3600)
    download_limit: int = Field(
        default=10, ge=1, le=1000
    )  # personalised e-book downloads a buyer may make
    # Author uploads: the largest file per kind (MiB, checked on the declared size before any
    # byte is taken), the S3 part size (S3 wants 5 MiB or more but the last), the chunk size of
    # uploads to the app in local mode, and the lifetime of a presigned part URL (seconds).
    upload_max_video_mib: int = Field(default=8192, ge=1)
    upload_max_pdf_mib: int = Field(default=500, ge=1)
    upload_max_epub_mib: int = Field(default=200, ge=1)
    upload_max_captions_mib: int = Field(default=5, ge=1)
    upload_max_image_mib: int = Field(default=20, ge=1)
    upload_part_mib: int = Field(default=16, ge=5, le=5120)
    upload_chunk_mib: int = Field(default=8, ge=1, le=64)
    upload_url_ttl: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    stripe_timeout: float = Field(default=10.0, gt=0, le=60)
    stripe_tax_id_collection: bool = True  # ask business buyers for their VAT ID at checkout
    stripe_automatic_tax: bool = False  # needs Stripe Tax set up in the dashboard

    redis_url: str | None = None
    # Background jobs: auto = Redis (run `rapport worker`) when redis_url is set, else in process.
    jobs: Literal["auto", "inprocess", "redis"] = "auto"
    jobs_queue: str = Field(default="rapport", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    smtp_url: str | None = None  # smtp://user:pass@host:587 (STARTTLS) or smtps://host:465
    mail_from: str = "Rapport <noreply@example.com>"
    admin_email: str = "admin@example.com"  # receives notifications; `make run` creates it

    session_max_age: int = Field(default=14 * 24 * 3600, ge=300)
    magic_link_ttl: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    # Rate limits, in the `limits` notation: "N per M minutes" or "N/minute".
    # Setting or changing a password needs a sign-in this recent (seconds): a proof of the
    # address, not just a browser that once had the session.
    reauth_seconds: int = Field(default=10 * 60, ge=0, le=24 * 3600)
    login_rate_per_ip: str = "20/10 minutes"
    login_rate_per_email: str = "5/10 minutes"

    # Engagement events: batch size, and how far client clocks may be off.
    events_batch_limit: int = Field(default=100, ge=1, le=1000)
    events_max_future_seconds: int = Field(default=300, ge=0)
    events_max_age_days: int = Field(default=30, ge=1)
    # Engagement score (0-100, README "Engagement score"): weights of its four parts, the
    # amounts that count as "full marks", and the threshold from which a buyer is engaged.
    score_weight_completion: float = Field(default=40, ge=0)
    score_weight_media: float = Field(default=25, ge=0)
    score_weight_pages: float = Field(default=15, ge=0)
    score_weight_recency: float = Field(default=20, ge=0)
    score_media_minutes: float = Field(default=60, gt=0)
    score_pages: int = Field(default=40, gt=0)
    score_recency_days: float = Field(default=30, gt=0)
    engaged_threshold: float = Field(default=50, ge=0, le=100)
    # Inquiries: open ones untouched this many days are flagged "waiting for answer".
    inquiry_waiting_days: int = Field(default=3, ge=1)
    inquiry_rate_per_ip: str = "5/hour"
    # Visitor counting on the catalog and product pages (cookie-free, see README "Visitors").
    count_visits: bool = True
    # Library: a module released since the buyer last opened the product is marked "new",
    # for at most this many days.
    release_new_days: int = Field(default=14, ge=1, le=365)

    default_locale: Literal["en", "de"] = "en"
    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = True
    # `rapport serve`: seconds a client has to send a request's headers (slow clients, and
    # connections that send nothing, are closed after it).
    header_timeout: int = Field(default=10, ge=1, le=60)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, data: Any) -> Any:
        # RAPPORT_S3_ENDPOINT_URL= in an env file means "not set", not an empty URL.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data

    @model_validator(mode="after")
    def _derived_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'rapport.db'}"
        if self.media_dir == Path():
            self.media_dir = self.data_dir / "media"
        return self

    @model_validator(mode="after")
    def _jobs_need_redis(self) -> Settings:
        if self.jobs == "redis" and not self.redis_url:
            raise ValueError(
                "RAPPORT_JOBS=redis needs RAPPORT_REDIS_URL (e.g. redis://redis:6379/0)"
            )
        return self

    @model_validator(mode="after")
    def _refuse_dev_secret(self) -> Settings:
        if self.env != "production":
            return self
        # Every problem at once, so that a deploy is fixed in one round, not one per restart.
        problems = []
        if self.secret_key == DEV_SECRET or len(self.secret_key) < 32:
            problems.append(
                "RAPPORT_SECRET_KEY must be set to a random value of 32+ characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.database_url.startswith("sqlite"):
            problems.append("RAPPORT_DATABASE_URL must point at PostgreSQL")
        if not self.base_url.startswith("https://"):
            problems.append("RAPPORT_BASE_URL must be an https:// address (cookies are Secure)")
        if not self.stripe_secret_key or not self.stripe_webhook_secret:
            problems.append(
                "RAPPORT_STRIPE_SECRET_KEY and RAPPORT_STRIPE_WEBHOOK_SECRET must be set: "
                "the built-in test-mode payments are refused in production"
            )
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
