"""Configuration classes: every setting is read from the environment here and nowhere else.

Pick one with ``WINBACK_ENV`` (``development``, the default, ``production`` or ``testing``);
``create_app()`` calls :func:`load_config` when it is not handed a class.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("WINBACK_INSTANCE_PATH", BASE_DIR / "instance"))


def _env(name: str, default: str | None = None) -> str | None:
    """One environment variable, with empty strings treated as unset."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int | None) -> int | None:
    value = _env(name)
    return int(value) if value is not None else default


def _env_list(name: str) -> list[str]:
    value = _env(name, "") or ""
    return [item.strip() for item in value.split(",") if item.strip()]


def _env_days(name: str, default: str) -> list[int]:
    """A comma-separated list of whole days, increasing (an empty value: none)."""
    value = os.environ.get(name)
    text = default if value is None else value
    try:
        days = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise RuntimeError(f"{name}={text!r}: expected whole days separated by commas, e.g. 4,10") from None
    if any(day < 1 for day in days) or days != sorted(set(days)):
        raise RuntimeError(f"{name}={text!r}: days must be at least 1 and increasing, e.g. 4,10")
    return days


def database_url(url: str) -> str:
    """PostgreSQL URLs as hosting providers write them, for the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def _hosts_of(url: str) -> list[str]:
    host = urlsplit(url).hostname
    return [host] if host else []


class Config:
    """Settings shared by every environment; safe defaults, overridable from the environment."""

    ENV_NAME = "base"
    INSTANCE_PATH = str(INSTANCE_DIR)

    SECRET_KEY = _env("SECRET_KEY")
    SECRET_KEY_FALLBACKS = _env_list("SECRET_KEY_FALLBACKS")

    SQLALCHEMY_DATABASE_URI = database_url(
        _env("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'winback.db'}") or ""
    )
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    SQLITE_BUSY_TIMEOUT_MS = _env_int("SQLITE_BUSY_TIMEOUT_MS", 5000)

    PUBLIC_BASE_URL = (_env("PUBLIC_BASE_URL", "http://127.0.0.1:5000") or "").rstrip("/")
    PUBLIC_BASE_URL_SET = _env("PUBLIC_BASE_URL") is not None
    # How many reverse proxies stand in front of the app: their X-Forwarded-For/-Proto are
    # trusted (so rate limits see the visitor's address). 0 trusts none.
    PROXY_COUNT = _env_int("PROXY_COUNT", 0)
    LOG_LEVEL = _env("LOG_LEVEL", "INFO")
    # A request naming any other Host gets 400: links must never be built from a forged Host.
    TRUSTED_HOSTS = _env_list("TRUSTED_HOSTS") or [*_hosts_of(PUBLIC_BASE_URL), "127.0.0.1", "localhost"]
    PREFERRED_URL_SCHEME = urlsplit(PUBLIC_BASE_URL).scheme or "http"

    BUSINESS_NAME = _env("BUSINESS_NAME", "Winback Demo Shop")
    BUSINESS_POSTAL_ADDRESS = _env("BUSINESS_POSTAL_ADDRESS", "1 High Street, Exampletown EX1 1AA")
    TIMEZONE = _env("TIMEZONE", "UTC")
    # The business's look on public pages: a logo (a path on this site or an https:// URL) and
    # a brand colour as #rgb or #rrggbb (text on it is black or white, whichever contrasts more).
    BUSINESS_LOGO_URL = _env("BUSINESS_LOGO_URL", "")
    BRAND_COLOUR = _env("BRAND_COLOUR", "#1d4ed8")

    LAPSE_AFTER_DAYS = _env_int("LAPSE_AFTER_DAYS", 180)
    INVITATION_LINK_DAYS = _env_int("INVITATION_LINK_DAYS", 60)
    CONTACT_COOLDOWN_DAYS = _env_int("CONTACT_COOLDOWN_DAYS", 90)
    SEND_LEASE_SECONDS = _env_int("SEND_LEASE_SECONDS", 300)
    SEND_RATE_PER_MINUTE = _env_int("SEND_RATE_PER_MINUTE", None)
    # A temporary refusal (4xx) is tried again after 1, 2, 4 ... times this (at most an hour),
    # and fails the invitation once it has been tried SEND_MAX_ATTEMPTS times.
    SEND_RETRY_BASE_SECONDS = _env_int("SEND_RETRY_BASE_SECONDS", 60)
    SEND_MAX_ATTEMPTS = _env_int("SEND_MAX_ATTEMPTS", 5)
    # Days after the first send on which those who have not answered get a reminder.
    REMINDER_DAYS = _env_days("REMINDER_DAYS", "4,10")
    # After this many refusals in a row a campaign pauses itself (the server, not the list, is wrong).
    SEND_MAX_CONSECUTIVE_FAILURES = _env_int("SEND_MAX_CONSECUTIVE_FAILURES", 10)

    MAIL_SERVER = _env("MAIL_SERVER", "localhost")
    MAIL_PORT = _env_int("MAIL_PORT", 25)
    MAIL_USERNAME = _env("MAIL_USERNAME")
    MAIL_PASSWORD = _env("MAIL_PASSWORD")
    MAIL_USE_TLS = _env_bool("MAIL_USE_TLS", False)
    MAIL_USE_SSL = _env_bool("MAIL_USE_SSL", False)
    MAIL_DEFAULT_SENDER = _env("MAIL_DEFAULT_SENDER", "Winback <winback@localhost>")
    MAIL_TIMEOUT_SECONDS = _env_int("MAIL_TIMEOUT_SECONDS", 30)
    MAIL_BACKEND = _env("MAIL_BACKEND", "smtp")
    # Flask-Mail silently drops mail when TESTING is on; tests here use a real SMTP server.
    MAIL_SUPPRESS_SEND = False
    MAIL_UNSUBSCRIBE_ADDRESS = _env("MAIL_UNSUBSCRIBE_ADDRESS")

    CELERY_BROKER_URL = _env("CELERY_BROKER_URL")

    MAX_CONTENT_LENGTH = _env_int("MAX_UPLOAD_BYTES", 50 * 1024 * 1024)
    WTF_CSRF_TIME_LIMIT = _env_int("WTF_CSRF_TIME_LIMIT", 3600 * 4)
    # Form messages are translated where they are shown (app/i18n.py); Flask-WTF's own lookup of
    # WTForms' catalogues on every form cost a third of a survey page.
    WTF_I18N_ENABLED = False

    # The public page is the same for everyone: each process keeps it for CACHE_DEFAULT_TIMEOUT
    # seconds (Flask-Caching; CACHE_TYPE=NullCache turns it off, RedisCache shares it).
    CACHE_TYPE = _env("CACHE_TYPE", "SimpleCache")
    CACHE_REDIS_URL = _env("CACHE_REDIS_URL")
    CACHE_DEFAULT_TIMEOUT = _env_int("CACHE_DEFAULT_TIMEOUT", 10)

    RATELIMIT_STORAGE_URI = _env("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_HEADERS_ENABLED = True
    LOGIN_RATE_LIMIT = _env("LOGIN_RATE_LIMIT", "10 per 15 minutes")
    # "Email me a fresh link" on the invalid-link page, per visitor address.
    FRESH_LINK_RATE_LIMIT = _env("FRESH_LINK_RATE_LIMIT", "5 per hour")
    # ... and per link, whoever presses it, so that no one address is flooded.
    FRESH_LINK_PER_LINK_LIMIT = _env("FRESH_LINK_PER_LINK_LIMIT", "3 per day")

    # Keys accepted by the JSON API under /api/v1 (comma separated); none set: every call gets 401.
    API_KEYS = _env_list("API_KEYS")
    # Soft bounces (reported through the API) that suppress an address once reached.
    SOFT_BOUNCE_LIMIT = _env_int("SOFT_BOUNCE_LIMIT", 3)

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    SESSION_PROTECTION = "strong"
    PASSWORD_HASH_METHOD = "scrypt"

    @classmethod
    def finalise(cls) -> None:
        """Check or complete the settings before an app uses them; production overrides this."""


class DevelopmentConfig(Config):
    """Local use: a generated SECRET_KEY kept in instance/, emails kept in the outbox."""

    ENV_NAME = "development"
    # Without an SMTP server configured, development keeps emails in the outbox (/staff/outbox).
    MAIL_BACKEND = _env("MAIL_BACKEND", "smtp" if _env("MAIL_SERVER") else "outbox")

    @classmethod
    def finalise(cls) -> None:
        if not cls.SECRET_KEY:
            cls.SECRET_KEY = _instance_secret_key()


class ProductionConfig(Config):
    """Real deployments: refuses to start without SECRET_KEY; secure cookies."""

    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True

    @classmethod
    def finalise(cls) -> None:
        if not cls.SECRET_KEY:
            raise RuntimeError(
                "SECRET_KEY is not set. Production refuses to start without it: "
                'generate one with  python -c "import secrets; print(secrets.token_hex(32))"'
            )
        if not cls.PUBLIC_BASE_URL_SET:
            raise RuntimeError(
                "PUBLIC_BASE_URL is not set. Production refuses to start without it: every link "
                "in every email is built from it (e.g. https://winback.example.com)."
            )


class TestingConfig(Config):
    """The test suite: importable with no environment at all."""

    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key-not-for-production"
    SECRET_KEY_FALLBACKS: list[str] = []
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    PUBLIC_BASE_URL = "http://localhost"
    TRUSTED_HOSTS = ["localhost", "127.0.0.1"]
    MAIL_BACKEND = "smtp"
    MAIL_SERVER = "127.0.0.1"
    MAIL_DEFAULT_SENDER = "Winback Test <shop@example.com>"
    BUSINESS_NAME = "Test Shop"
    BUSINESS_POSTAL_ADDRESS = "1 Test Street, Testville"
    RATELIMIT_STORAGE_URI = "memory://"
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"  # fast hashing keeps the suite quick
    API_KEYS = ["test-api-key"]


def _instance_secret_key() -> str:
    """Read, or create once, a random development key in instance/secret_key."""
    path = INSTANCE_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


CONFIGS = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


def load_config() -> type[Config]:
    """The config class named by WINBACK_ENV (default: development)."""
    name = _env("WINBACK_ENV", "development") or "development"
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"WINBACK_ENV={name!r} is not one of {', '.join(CONFIGS)}") from None
