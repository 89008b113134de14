"""Configuration: defaults of SPEC §3, parsing, and errors that name the variable."""
import pytest

from delula.config import ConfigError, Settings


def test_defaults_match_the_spec():
    s = Settings.from_env({})
    assert s.database_url == "sqlite:///delula.db"
    assert (s.min_backlog, s.max_backlog, s.max_concurrent_jobs) == (3, 30, 3)
    assert s.poll_schedule == (15, 30, 60, 30, 15)
    assert (s.job_timeout_s, s.max_attempts, s.maintenance_interval_s) == (480, 3, 60)
    assert s.instant_cooldown_s == 10 and s.scheduler is True
    assert s.provider == "simulator" and s.fal_queue_url == "https://queue.fal.run"
    assert s.simulator_duration == (5, 40) and s.simulator_failure_rate == 0.05


def test_values_are_parsed():
    s = Settings.from_env({
        "DELULA_DATABASE_URL": "postgresql+psycopg://u@h/db", "DELULA_SCHEDULER": "off",
        "DELULA_POLL_SCHEDULE": "0.05", "DELULA_SIMULATOR_DURATION": "0", "DELULA_MIN_BACKLOG": "5",
        "DELULA_INSTANT_COOLDOWN_S": "0", "DELULA_PROVIDER": "fal", "FAL_KEY": "k",
        "DELULA_FAL_QUEUE_URL": "http://127.0.0.1:9/sim/fal/", "DELULA_PROVIDER_TIMEOUT_S": "2.5"})
    assert s.scheduler is False and s.poll_schedule == (0.05,) and s.simulator_duration == (0, 0)
    assert s.min_backlog == 5 and s.instant_cooldown_s == 0 and s.database_url == "postgresql+psycopg://u@h/db"
    assert s.fal_queue_url == "http://127.0.0.1:9/sim/fal" and s.provider_timeout_s == 2.5


@pytest.mark.parametrize("name, value", [
    ("DELULA_MIN_BACKLOG", "three"), ("DELULA_MIN_BACKLOG", "-1"), ("DELULA_MAX_CONCURRENT_JOBS", "0"),
    ("DELULA_POLL_SCHEDULE", "15,,30"), ("DELULA_POLL_SCHEDULE", "15,-3"), ("DELULA_SCHEDULER", "maybe"),
    ("DELULA_PROVIDER", "openai"), ("DELULA_SIMULATOR_DURATION", "40-5"), ("DELULA_SIMULATOR_FAILURE_RATE", "1.5"),
    ("DELULA_JOB_TIMEOUT_S", "nan"), ("DELULA_DATABASE_URL", "mysql://x"), ("DELULA_MAX_BACKLOG", "1"),
    ("DELULA_PROVIDER_TIMEOUT_S", "0"), ("DELULA_SIMULATOR_KEY", "two words"), ("DELULA_SIMULATOR_KEY", "clé"),
    ("DELULA_SESSION_HOURS", "0"), ("DELULA_SESSION_HOURS", "forever"), ("DELULA_COOKIE_SECURE", "https"),
    ("DELULA_TRUSTED_PROXIES", "-1"), ("DELULA_TRUSTED_PROXIES", "one"),
    ("DELULA_ALERT_BELOW_MIN_MINUTES", "-1"), ("DELULA_ALERT_BELOW_MIN_MINUTES", "soon"),
    ("DELULA_ALERT_HIT_RATE", "0"), ("DELULA_ALERT_HIT_RATE", "1.5"), ("DELULA_ALERT_FAILURE_RATE", "1"),
    ("DELULA_ALERT_FAILURE_RATE", "-0.1"), ("DELULA_ALERT_WEBHOOK_URL", "hooks.slack.com/services/x"),
    ("DELULA_ALERT_WEBHOOK_URL", "ftp://example.com/x"), ("DELULA_ALERT_INTERVAL_S", "0"),
    ("DELULA_CHOICE_WINDOW_H", "0"), ("DELULA_CHOICE_WINDOW_H", "-24"), ("DELULA_CHOICE_WINDOW_H", "a day"),
    ("DELULA_CHOICE_WINDOW_H", "1e9"), ("DELULA_EXPLORATION", "1.5"), ("DELULA_EXPLORATION", "-0.1"),
    ("DELULA_EXPLORATION", "some"), ("DELULA_EXPLORATION", "nan"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_sessions_and_proxies_settings():
    s = Settings.from_env({})
    assert (s.session_hours, s.cookie_secure, s.trusted_proxies) == (12, False, 0)
    s = Settings.from_env({"DELULA_SESSION_HOURS": "0.5", "DELULA_COOKIE_SECURE": "on", "DELULA_TRUSTED_PROXIES": "2"})
    assert (s.session_hours, s.cookie_secure, s.trusted_proxies) == (0.5, True, 2)


def test_fal_needs_a_key():
    with pytest.raises(ConfigError, match="FAL_KEY"):
        Settings.from_env({"DELULA_PROVIDER": "fal"})


def test_the_repr_hides_every_secret():
    s = Settings.from_env({"DELULA_SECRET_KEY": "session-s3cret", "FAL_KEY": "fal-s3cret",
                           "DELULA_SIMULATOR_KEY": "sim-s3cret", "DELULA_ADMIN_PASSWORD": "admin-s3cret",
                           "DELULA_METRICS_TOKEN": "metrics-s3cret",
                           "DELULA_DATABASE_URL": "postgresql+psycopg://app:db-s3cret@h/delula"})
    assert (s.secret_key, s.fal_key, s.simulator_key) == ("session-s3cret", "fal-s3cret", "sim-s3cret")
    for text in (repr(s), str(s), repr(s.replace(min_backlog=1))):
        assert "s3cret" not in text and "Settings(" in text


def test_the_service_level_is_a_share_strictly_between_0_and_1():
    assert Settings.from_env({}).service_level == 0.98
    assert Settings.from_env({"DELULA_SERVICE_LEVEL": "0.9"}).service_level == 0.9
    for bad in ("0", "1", "1.5", "-0.2", "nan", "high"):
        with pytest.raises(ConfigError, match="DELULA_SERVICE_LEVEL"):
            Settings.from_env({"DELULA_SERVICE_LEVEL": bad})
    with pytest.raises(ConfigError, match="DELULA_SERVICE_LEVEL"):
        Settings.from_env({}).replace(service_level=1.0)


def test_alert_settings():
    s = Settings.from_env({})
    assert (s.alert_below_min_minutes, s.alert_hit_rate, s.alert_failure_rate) == (10, 0.9, 0.25)
    assert s.alert_webhook_url is None and s.alert_interval_s == 60
    url = "https://hooks.slack.com/services/T000/B000/s3cret"
    s = Settings.from_env({"DELULA_ALERT_BELOW_MIN_MINUTES": "0.05", "DELULA_ALERT_HIT_RATE": "1",
                           "DELULA_ALERT_FAILURE_RATE": "0", "DELULA_ALERT_WEBHOOK_URL": url,
                           "DELULA_ALERT_INTERVAL_S": "0.5"})
    assert (s.alert_below_min_minutes, s.alert_hit_rate, s.alert_failure_rate, s.alert_interval_s) == (0.05, 1, 0, 0.5)
    assert s.alert_webhook_url == url and "s3cret" not in repr(s)
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DELULA_ALERT_WEBHOOK_URL": "hooks.slack.com/services/T000/B000/s3cret"})
    assert "s3cret" not in str(e.value)


def test_quality_gate_settings():
    s = Settings.from_env({})
    assert (s.max_asset_mb, s.video_duration_s, s.min_quality) == (200, (1, 300), None)   # the score check is off
    assert s.fal_media_hosts == ("fal.media",) and s.simulator_low_quality_rate == 0.05
    s = Settings.from_env({"DELULA_MAX_ASSET_MB": "0.5", "DELULA_VIDEO_DURATION_S": "2-12", "DELULA_MIN_QUALITY": "0.5",
                           "DELULA_FAL_MEDIA_HOSTS": " Fal.Media, storage.googleapis.com ",
                           "DELULA_SIMULATOR_LOW_QUALITY_RATE": "1"})
    assert (s.max_asset_mb, s.video_duration_s, s.min_quality) == (0.5, (2, 12), 0.5)
    assert s.fal_media_hosts == ("fal.media", "storage.googleapis.com") and s.simulator_low_quality_rate == 1
    assert Settings.from_env({"DELULA_MIN_QUALITY": "off"}).min_quality is None
    assert Settings.from_env({"DELULA_MIN_QUALITY": "0"}).min_quality == 0
    assert Settings.from_env({"DELULA_VIDEO_DURATION_S": "8"}).video_duration_s == (8, 8)


@pytest.mark.parametrize("name, value", [
    ("DELULA_MAX_ASSET_MB", "0"), ("DELULA_MAX_ASSET_MB", "-5"), ("DELULA_MAX_ASSET_MB", "big"),
    ("DELULA_MAX_ASSET_MB", "2000000"), ("DELULA_VIDEO_DURATION_S", "30-5"), ("DELULA_VIDEO_DURATION_S", "-1"),
    ("DELULA_MIN_QUALITY", "1.01"), ("DELULA_MIN_QUALITY", "-0.1"), ("DELULA_MIN_QUALITY", "on"),
    ("DELULA_MIN_QUALITY", "nan"), ("DELULA_FAL_MEDIA_HOSTS", "fal.media,"), ("DELULA_FAL_MEDIA_HOSTS", "https://fal.media"),
    ("DELULA_FAL_MEDIA_HOSTS", "*.fal.media"), ("DELULA_SIMULATOR_LOW_QUALITY_RATE", "1.5"),
])
def test_bad_quality_gate_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
    with pytest.raises(ConfigError, match="DELULA_MIN_QUALITY"):
        Settings.from_env({}).replace(min_quality=2.0)


def test_the_choice_window_and_the_exploration_share():
    s = Settings.from_env({})
    assert (s.choice_window_h, s.exploration) == (24, 0.1)
    s = Settings.from_env({"DELULA_CHOICE_WINDOW_H": "0.5", "DELULA_EXPLORATION": "0"})
    assert (s.choice_window_h, s.exploration) == (0.5, 0)
    assert Settings.from_env({"DELULA_EXPLORATION": "1"}).exploration == 1
    for bad in (dict(exploration=1.01), dict(choice_window_h=0)):
        with pytest.raises(ConfigError, match="DELULA_EXPLORATION|DELULA_CHOICE_WINDOW_H"):
            Settings.from_env({}).replace(**bad)
