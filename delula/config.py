"""Configuration: every environment variable of SPEC §3, read once, typed and validated.

``Settings.from_env()`` raises :class:`ConfigError` naming the variable at fault, so a typo in a
deployment fails at start-up with a sentence, not deep inside a job. The secrets (``secret_key``,
``fal_key``, ``simulator_key``, ``admin_password``, ``metrics_token``, and
``alert_webhook_url``, whose path is the webhook's token) are left out of the repr and of messages,
and the database URL is shown with its password masked (:func:`masked_url`, also in every message
that names the URL), so logging the settings never prints them.

:func:`normalise_url` is the one rule for database URLs: ``postgres://`` and ``postgresql://``
mean psycopg 3 (``postgresql+psycopg://``); storage opens what it returns.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit
from dataclasses import dataclass, field

PROVIDERS = ("simulator", "fal")
BACKLOG_POLICIES = ("static", "reactive", "forecast")   # delula.policies.POLICIES (a test keeps the two the same)
MAX_ITEM_AGE_LIMIT_H = 876_000.0   # 100 years: the age bound's cutoff stays a representable time
MAX_ASSET_MB_LIMIT = 1_048_576.0   # a tebibyte: the file-size bound stays a plain number of bytes
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_HEADER_TOKEN = re.compile(r"[!-~]+")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 here, never psycopg2."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    return url


def masked_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (as SQLAlchemy renders a URL that hides it)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None:
        # unparsable or without a password: mask whatever sits between "user:" and the last "@"
        return re.sub(r"^([^:/]+://[^:/@]*:).*@", r"\1***@", url)
    scheme, _, rest = url.partition("://")
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"


@dataclass(frozen=True, repr=False)
class Settings:
    database_url: str = "sqlite:///delula.db"
    secret_key: str | None = field(default=None, repr=False)
    scheduler: bool = True
    min_backlog: int = 3
    max_backlog: int = 30
    max_concurrent_jobs: int = 3
    backlog_policy: str = "forecast"
    service_level: float = 0.98          # the forecast policy's share of attempts a pool should serve
    poll_schedule: tuple[float, ...] = (15.0, 30.0, 60.0, 30.0, 15.0)
    job_timeout_s: float = 480.0
    max_attempts: int = 3
    maintenance_interval_s: float = 60.0
    instant_cooldown_s: float = 10.0
    topup_max: int = 100
    provider: str = "simulator"
    fal_key: str | None = field(default=None, repr=False)
    fal_queue_url: str = "https://queue.fal.run"
    provider_timeout_s: float = 10.0
    simulator_duration: tuple[float, float] = (5.0, 40.0)
    simulator_failure_rate: float = 0.05
    simulator_low_quality_rate: float = 0.05   # share of simulated results scored below 0.5
    simulator_key: str | None = field(default=None, repr=False)
    admin_password: str | None = field(default=None, repr=False)
    session_hours: float = 12.0          # a dashboard session ends this long after sign-in, used or not
    cookie_secure: bool = False          # the session cookie only over HTTPS
    trusted_proxies: int = 0             # reverse proxies in front whose X-Forwarded-For is believed
    metrics_token: str | None = field(default=None, repr=False)
    event_retention_days: int = 90
    max_item_age_h: float = 72.0         # a pool item completed longer ago is never handed out (expired)
    choice_window_h: float = 24.0        # backlog form data follows the choices asked for in this many hours
    exploration: float = 0.1             # ... except this share of backlog jobs, drawn from the schema alone
    breaker_threshold: int = 5           # consecutive provider errors that open the circuit breaker
    breaker_backoff_s: float = 30.0      # the first wait before a probe; doubled per failed probe ...
    breaker_max_backoff_s: float = 600.0  # ... up to this
    alert_below_min_minutes: float = 10.0  # a recipe below its minimum this long fires its alert
    alert_hit_rate: float = 0.9          # the instant hit rate over 15 min below this fires
    alert_failure_rate: float = 0.25     # the share of failed jobs over 15 min above this fires
    alert_webhook_url: str | None = field(default=None, repr=False)   # where notifications go (it may hold a token)
    alert_interval_s: float = 60.0       # how often the scheduler leader evaluates the rules
    max_asset_mb: float = 200.0          # the quality gate: the largest file a backlog item may be (MiB)
    video_duration_s: tuple[float, float] = (1.0, 300.0)   # ... the seconds a video may last (no recipe bounds)
    min_quality: float | None = None     # ... the lowest quality score it accepts (None: off)
    fal_media_hosts: tuple[str, ...] = ("fal.media",)      # ... where fal's assets may live (and subdomains)

    def __post_init__(self):
        object.__setattr__(self, "database_url", normalise_url(self.database_url))

    def __repr__(self) -> str:
        shown = (f"{f.name}={masked_url(self.database_url) if f.name == 'database_url' else getattr(self, f.name)!r}"
                 for f in dataclasses.fields(self) if f.repr)
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        r = _Reader(env)
        values = dict(
            database_url=r.text("DELULA_DATABASE_URL", cls.database_url),
            secret_key=r.text("DELULA_SECRET_KEY", None),
            scheduler=r.switch("DELULA_SCHEDULER", True),
            min_backlog=r.integer("DELULA_MIN_BACKLOG", cls.min_backlog, minimum=0),
            max_backlog=r.integer("DELULA_MAX_BACKLOG", cls.max_backlog, minimum=0),
            backlog_policy=r.choice("DELULA_BACKLOG_POLICY", cls.backlog_policy, BACKLOG_POLICIES),
            service_level=r.number("DELULA_SERVICE_LEVEL", cls.service_level),
            max_concurrent_jobs=r.integer("DELULA_MAX_CONCURRENT_JOBS", cls.max_concurrent_jobs, minimum=1),
            poll_schedule=r.schedule("DELULA_POLL_SCHEDULE", cls.poll_schedule),
            job_timeout_s=r.number("DELULA_JOB_TIMEOUT_S", cls.job_timeout_s, minimum=0.001),
            max_attempts=r.integer("DELULA_MAX_ATTEMPTS", cls.max_attempts, minimum=1),
            maintenance_interval_s=r.number("DELULA_MAINTENANCE_INTERVAL_S", cls.maintenance_interval_s, minimum=0.1),
            instant_cooldown_s=r.number("DELULA_INSTANT_COOLDOWN_S", cls.instant_cooldown_s, minimum=0),
            topup_max=r.integer("DELULA_TOPUP_MAX", cls.topup_max, minimum=1),
            provider=r.choice("DELULA_PROVIDER", cls.provider, PROVIDERS),
            fal_key=r.text("FAL_KEY", None),
            fal_queue_url=r.text("DELULA_FAL_QUEUE_URL", cls.fal_queue_url).rstrip("/"),
            provider_timeout_s=r.number("DELULA_PROVIDER_TIMEOUT_S", cls.provider_timeout_s, minimum=0.1),
            simulator_duration=r.duration("DELULA_SIMULATOR_DURATION", cls.simulator_duration),
            simulator_failure_rate=r.number("DELULA_SIMULATOR_FAILURE_RATE", cls.simulator_failure_rate,
                                            minimum=0, maximum=1),
            simulator_low_quality_rate=r.number("DELULA_SIMULATOR_LOW_QUALITY_RATE", cls.simulator_low_quality_rate,
                                                minimum=0, maximum=1),
            simulator_key=r.text("DELULA_SIMULATOR_KEY", None),
            admin_password=r.text("DELULA_ADMIN_PASSWORD", None),
            session_hours=r.number("DELULA_SESSION_HOURS", cls.session_hours, minimum=0.001),
            cookie_secure=r.switch("DELULA_COOKIE_SECURE", cls.cookie_secure),
            trusted_proxies=r.integer("DELULA_TRUSTED_PROXIES", cls.trusted_proxies, minimum=0),
            metrics_token=r.text("DELULA_METRICS_TOKEN", None),
            event_retention_days=r.integer("DELULA_EVENT_RETENTION_DAYS", cls.event_retention_days, minimum=1),
            max_item_age_h=r.number("DELULA_MAX_ITEM_AGE_H", cls.max_item_age_h),
            choice_window_h=r.number("DELULA_CHOICE_WINDOW_H", cls.choice_window_h),
            exploration=r.number("DELULA_EXPLORATION", cls.exploration, minimum=0, maximum=1),
            breaker_threshold=r.integer("DELULA_BREAKER_THRESHOLD", cls.breaker_threshold, minimum=1),
            breaker_backoff_s=r.number("DELULA_BREAKER_BACKOFF_S", cls.breaker_backoff_s, minimum=0.01),
            breaker_max_backoff_s=r.number("DELULA_BREAKER_MAX_BACKOFF_S", cls.breaker_max_backoff_s, minimum=0.01),
            alert_below_min_minutes=r.number("DELULA_ALERT_BELOW_MIN_MINUTES", cls.alert_below_min_minutes, minimum=0),
            alert_hit_rate=r.number("DELULA_ALERT_HIT_RATE", cls.alert_hit_rate),
            alert_failure_rate=r.number("DELULA_ALERT_FAILURE_RATE", cls.alert_failure_rate),
            alert_webhook_url=r.text("DELULA_ALERT_WEBHOOK_URL", None),
            alert_interval_s=r.number("DELULA_ALERT_INTERVAL_S", cls.alert_interval_s, minimum=0.1),
            max_asset_mb=r.number("DELULA_MAX_ASSET_MB", cls.max_asset_mb),
            video_duration_s=r.duration("DELULA_VIDEO_DURATION_S", cls.video_duration_s),
            min_quality=r.optional_number("DELULA_MIN_QUALITY", cls.min_quality, minimum=0, maximum=1),
            fal_media_hosts=r.hosts("DELULA_FAL_MEDIA_HOSTS", cls.fal_media_hosts),
        )
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def replace(self, **changes) -> "Settings":
        settings = dataclasses.replace(self, **changes)
        settings.check()
        return settings

    def check(self) -> None:
        if self.max_backlog < self.min_backlog:
            raise ConfigError(
                f"DELULA_MAX_BACKLOG ({self.max_backlog}) must not be below DELULA_MIN_BACKLOG ({self.min_backlog})")
        if self.breaker_max_backoff_s < self.breaker_backoff_s:
            raise ConfigError(f"DELULA_BREAKER_MAX_BACKOFF_S ({self.breaker_max_backoff_s:g}) must not be below "
                              f"DELULA_BREAKER_BACKOFF_S ({self.breaker_backoff_s:g})")
        if not 0 < self.service_level < 1:
            raise ConfigError(f"DELULA_SERVICE_LEVEL must be a number between 0 and 1 (exclusive), "
                              f"got {self.service_level:g}")
        if not 0 < self.max_item_age_h <= MAX_ITEM_AGE_LIMIT_H:
            raise ConfigError(f"DELULA_MAX_ITEM_AGE_H must be a positive number of hours, at most "
                              f"{MAX_ITEM_AGE_LIMIT_H:g} (100 years), got {self.max_item_age_h:g}")
        if not 0 < self.choice_window_h <= MAX_ITEM_AGE_LIMIT_H:
            raise ConfigError(f"DELULA_CHOICE_WINDOW_H must be a positive number of hours, at most "
                              f"{MAX_ITEM_AGE_LIMIT_H:g} (100 years), got {self.choice_window_h:g}")
        if not 0 <= self.exploration <= 1:
            raise ConfigError(f"DELULA_EXPLORATION must be a share from 0 to 1, got {self.exploration:g}")
        if not 0 < self.alert_hit_rate <= 1:
            raise ConfigError(f"DELULA_ALERT_HIT_RATE must be a share above 0 and at most 1, got {self.alert_hit_rate:g}")
        if not 0 <= self.alert_failure_rate < 1:
            raise ConfigError(f"DELULA_ALERT_FAILURE_RATE must be a share from 0 up to (not including) 1, "
                              f"got {self.alert_failure_rate:g}")
        if not 0 < self.max_asset_mb <= MAX_ASSET_MB_LIMIT:
            raise ConfigError(f"DELULA_MAX_ASSET_MB must be a positive number of megabytes, at most "
                              f"{MAX_ASSET_MB_LIMIT:g}, got {self.max_asset_mb:g}")
        if self.min_quality is not None and not 0 <= self.min_quality <= 1:
            raise ConfigError(f"DELULA_MIN_QUALITY must be 'off' or a number from 0 to 1, got {self.min_quality:g}")
        if self.alert_webhook_url is not None and not _is_web_url(self.alert_webhook_url):
            raise ConfigError("DELULA_ALERT_WEBHOOK_URL must be an http:// or https:// URL with a host")
        if self.simulator_key is not None and not _HEADER_TOKEN.fullmatch(self.simulator_key):
            raise ConfigError("the simulator key (DELULA_SIMULATOR_KEY) must be printable ASCII without "
                              "spaces: it is sent as 'Authorization: Key <key>'")
        if self.provider == "fal" and not self.fal_key:
            raise ConfigError("FAL_KEY must be set when DELULA_PROVIDER=fal")
        if not self.database_url.startswith(("sqlite", "postgresql")):
            raise ConfigError("DELULA_DATABASE_URL must be a sqlite:// or postgresql+psycopg:// URL, got "
                              f"{masked_url(self.database_url)!r}")


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name, default):
        raw = self._raw(name)
        return default if raw is None else raw

    def switch(self, name, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("on", "1", "true", "yes"):
            return True
        if lowered in ("off", "0", "false", "no"):
            return False
        raise ConfigError(f"{name} must be 'on' or 'off', got {raw!r}")

    def integer(self, name, default: int, *, minimum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    def number(self, name, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        value = _float(name, raw)
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {raw}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {raw}")
        return value

    def optional_number(self, name, default: float | None, *, minimum: float, maximum: float) -> float | None:
        """A number from ``minimum`` to ``maximum``, or ``off`` (``None``)."""
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() == "off":
            return None
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not minimum <= value <= maximum:   # NaN and the infinities too
            raise ConfigError(f"{name} must be 'off' or a number from {minimum:g} to {maximum:g}, got {raw!r}")
        return value

    def hosts(self, name, default: tuple[str, ...]) -> tuple[str, ...]:
        """A comma-separated list of host names (lower-cased)."""
        raw = self._raw(name)
        if raw is None:
            return default
        hosts = tuple(h.strip().lower() for h in raw.split(","))
        bad = [h for h in hosts if not _HOST.fullmatch(h)]
        if bad:
            raise ConfigError(f"{name} must be a comma-separated list of host names like fal.media, got {bad[0]!r}")
        return hosts

    def choice(self, name, default: str, choices: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    def schedule(self, name, default: tuple[float, ...]) -> tuple[float, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        parts = [p.strip() for p in raw.split(",")]
        values = tuple(_float(name, p) for p in parts)
        if not values or any(v <= 0 for v in values):
            raise ConfigError(f"{name} must be a comma-separated list of positive seconds, got {raw!r}")
        return values

    def duration(self, name, default: tuple[float, float]) -> tuple[float, float]:
        raw = self._raw(name)
        if raw is None:
            return default
        low, sep, high = raw.partition("-")
        lo = _float(name, low)
        hi = _float(name, high) if sep else lo
        if lo < 0 or hi < lo:
            raise ConfigError(f"{name} must be seconds or a range like 5-40, got {raw!r}")
        return (lo, hi)


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value
