"""Shared support for the browser tests: a live app on a fresh database, headless Chromium,
sign-in, screenshots — and :func:`seed_activity`, realistic dashboard data (also used by the
data-shaping tests).

Use in a test module::

    from browser_support import browser, live_app  # noqa: F401  (fixtures)

    def test_something(live_app, browser):
        browser.sign_in(live_app)                    # the ops user, lands on /
        browser.open(live_app, "/maintenance")
        browser.wait_text("#leader", "pid")
        browser.screenshot("maintenance")

``live_app`` runs ``app.create_app(rt, start_scheduler=False)`` on a fresh SQLite database (demo
data seeded by the app's boot, ops user ``admin`` with :data:`ADMIN_PASSWORD`) in a werkzeug
thread; ``live_app.rt`` is its runtime. ``browser`` is one Chromium per test session (cookies
cleared for each test). Without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` the browser
tests are skipped — or fail, when ``DELULA_REQUIRE_BROWSER=1``.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from delula import auth, demo
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs, pool, schedule, stats

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("DELULA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DELULA_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRE_BROWSER = os.environ.get("DELULA_REQUIRE_BROWSER") == "1"
ADMIN_PASSWORD = "ops-password-for-tests"
WINDOW = (1440, 1000)   # a laptop screen
WAIT_S = 30             # how long an element may take to appear before a test fails
BROWSER_TZ = os.environ.get("DELULA_BROWSER_TZ", "Asia/Kolkata")   # UTC+5:30, no daylight saving


# --- realistic data ---------------------------------------------------------------------------------

# Ready backlog per demo recipe (ids 1..7; default minimum 3, recipe 7's override is 2):
# recipes 2 and 6 are below their minimum.
READY = {1: 5, 2: 1, 3: 3, 4: 4, 5: 3, 6: 2, 7: 2}
IN_FLIGHT = {2: 2, 6: 1}            # pending backlog jobs
PROCESSING_S = (8, 12, 15, 22, 25, 31, 40, 55, 70, 95, 130, 200)   # completed jobs' processing times
CLAIMS = {"claimed": 10, "no_backlog": 3, "race": 1, "insufficient_credits": 2}
FAILED_BACKLOG, FAILED_USER = 2, 1
NORMAL_GENERATIONS = 4


def seed_activity(rt, *, leader: bool = True) -> dict:
    """Demo recipes and users plus an hour of activity ending at ``rt.now()``: ready and in-flight
    backlog, completed and failed jobs with processing times, claim attempts by outcome, normal
    user generations, queue samples every 30 s and (if ``leader``) a live scheduler leader row.
    Returns the numbers it wrote."""
    demo.seed(rt)
    now = rt.now()
    maya = auth.get_user(rt, username="maya")
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    rows = []
    for rid, n in READY.items():
        rows += [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=rid, status="completed", form_data={},
                      meta={"source": "backlog"}, priority=10, asset_url=f"/sim/fal/files/seed-{rid}-{i}/video.svg",
                      created_at=ago(3400), started_at=ago(3300),
                      completed_at=ago(3300 - (6 + 9 * i + 3 * rid)))
                 for i in range(n)]
    for rid, n in IN_FLIGHT.items():
        rows += [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=rid, form_data={}, meta={"source": "backlog"},
                      priority=10, created_at=ago(40)) for _ in range(n)]
    # Jobs processed in the last hour, owned by maya (normal generations that completed).
    for i, seconds in enumerate(PROCESSING_S):
        done = ago(3000 - i * 240)
        rows.append(dict(user_id=maya.id, recipe_id=1 + i % 3, status="completed", form_data={},
                         meta={"source": "user"}, priority=0, created_at=done - timedelta(seconds=seconds + 5),
                         started_at=done - timedelta(seconds=seconds), completed_at=done, updated_at=done,
                         asset_url=f"/sim/fal/files/seed-job-{i}/video.svg"))
    for i in range(FAILED_BACKLOG):
        rows.append(dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=2, status="failed", form_data={},
                         meta={"source": "backlog"}, priority=10, created_at=ago(1900 + i * 60),
                         updated_at=ago(1800 + i * 60), error="provider: FAILED (simulated failure)", attempts=3))
    for i in range(FAILED_USER):
        rows.append(dict(user_id=maya.id, recipe_id=3, status="failed", form_data={}, meta={"source": "user"},
                         priority=0, created_at=ago(700), updated_at=ago(600), error="provider: timed out", attempts=3))
    # Normal generations still queued (created recently).
    for i in range(NORMAL_GENERATIONS):
        rows.append(dict(user_id=maya.id, recipe_id=4, form_data={}, meta={"source": "user"}, priority=0,
                         created_at=ago(300 + i * 400)))
    normal_created = NORMAL_GENERATIONS + len(PROCESSING_S) + FAILED_USER
    with rt.store.begin() as s:
        for row in rows:
            jobs.add_generations(s, [row], row.get("created_at", now))
        minute = 0
        for outcome, n in CLAIMS.items():
            for _ in range(n):
                minute += 3
                pool.record_event(s, user_id=maya.id, recipe_id=1 + minute % 5, outcome=outcome,
                                  generation_id=None, latency_ms=4.0, now=ago(minute * 60 + 10))
        for k in range(120):  # a sample every 30 s for the last hour
            stats.add_queue_sample(s, now=ago(k * 30 + 5), pending=round(4 + 3 * math.sin(k / 9)),
                                   processing=2 + (k // 7) % 2, backlog=round(20 + 4 * math.sin(k / 15)),
                                   backlog_in_flight=3, recipes_below_minimum=2)
        if leader:
            schedule.claim_leadership(s, "scheduler", host="worker-1", pid=4242, now=ago(1800))
            schedule.heartbeat(s, "scheduler", host="worker-1", pid=4242, now=now)
    rt.invalidate()
    return {"ready": sum(READY.values()), "inFlight": sum(IN_FLIGHT.values()), "completedJobs": len(PROCESSING_S),
            "failedJobs": FAILED_BACKLOG + FAILED_USER, "claims": dict(CLAIMS), "normalCreated": normal_created,
            "pending": sum(IN_FLIGHT.values()) + NORMAL_GENERATIONS}


# --- browser availability ---------------------------------------------------------------------------

def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


def require_browser() -> None:
    reason = browser_missing()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"Chromium required (DELULA_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


# --- the live app -----------------------------------------------------------------------------------

@dataclass
class LiveApp:
    url: str
    rt: object
    app: object
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


def start_live_app(rt) -> LiveApp:
    """``app.create_app(rt, start_scheduler=False)`` served by werkzeug on a free port, in a thread."""
    from werkzeug.serving import make_server

    import app as app_module

    dash_app = app_module.create_app(rt, start_scheduler=False)
    server = make_server("127.0.0.1", 0, dash_app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="delula-live-app", daemon=True)
    thread.start()
    return LiveApp(url=f"http://127.0.0.1:{server.server_port}", rt=rt, app=dash_app, server=server, thread=thread)


@pytest.fixture
def live_app(sqlite_url, make_runtime):
    """The whole app on a fresh SQLite database, demo data seeded, scheduler off."""
    require_browser()
    rt = make_runtime(sqlite_url, admin_password=ADMIN_PASSWORD)
    live = start_live_app(rt)
    yield live
    live.stop()


# --- the browser ------------------------------------------------------------------------------------

class Browser:
    """A thin layer over selenium's Chrome driver for these tests."""

    def __init__(self, driver):
        self.driver = driver

    # navigation
    def open(self, live: LiveApp, path: str = "/") -> None:
        self.driver.get(live.url + path)

    def sign_in(self, live: LiveApp, username: str = "admin", password: str = ADMIN_PASSWORD,
                *, path: str = "/", expect_dashboard: bool = True) -> None:
        """Sign in through the real form; by default wait until the dashboard's navbar shows."""
        self.open(live, path)
        self.wait("#login-form")
        self.find("#username").clear()
        self.find("#username").send_keys(username)
        self.find("#password").send_keys(password)
        self.find("#login-submit").click()
        if expect_dashboard:
            self.wait_text("#nav-username", username)

    # finding and waiting
    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, css: str, timeout: float = WAIT_S):
        """The first element matching ``css`` once it is displayed."""
        return self._until(lambda: next((e for e in self.find_all(css) if e.is_displayed()), None),
                           timeout, f"no visible element {css!r}")

    def wait_text(self, css: str, text: str | re.Pattern, timeout: float = WAIT_S):
        """The first element matching ``css`` whose text contains ``text`` (or matches the pattern)."""
        def match():
            for e in self.find_all(css):
                try:
                    t = e.text
                except Exception:  # re-rendered meanwhile
                    continue
                if (text.search(t) if isinstance(text, re.Pattern) else text in t):
                    return e
            return None

        return self._until(match, timeout, f"no element {css!r} with text {text!r}")

    def click(self, locate, what: str = "element", timeout: float = WAIT_S):
        """Click the element ``locate()`` returns, scrolled to the middle of the window; retried
        while Dash re-renders it or something (a toast, an alert sliding in) covers it."""
        def attempt():
            element = locate()
            self.js("arguments[0].scrollIntoView({block: 'center'})", element)
            element.click()
            return True

        return self._until(attempt, timeout, f"could not click {what}")

    def wait_for(self, condition, timeout: float = WAIT_S, what: str = "condition"):
        return self._until(condition, timeout, f"{what} never became true")

    def _until(self, probe, timeout: float, failure: str):
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                found = probe()
                if found:
                    return found
            except Exception as e:  # stale elements while Dash re-renders
                last_error = e
            time.sleep(0.1)
        self.screenshot("FAILED-" + re.sub(r"[^A-Za-z0-9]+", "-", failure)[:60])
        raise AssertionError(f"{failure} within {timeout:.0f} s at {self.driver.current_url}"
                             + (f" (last error: {last_error})" if last_error else ""))

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    # evidence
    def screenshot(self, name: str) -> Path:
        """Save the window to ``test-artifacts/<name>.png``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def full_page_screenshot(self, name: str) -> Path:
        """Like :meth:`screenshot`, with the window as tall as the page (width unchanged)."""
        width, height = self.driver.get_window_size()["width"], self.driver.get_window_size()["height"]
        page_height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, max(height, page_height + 120))
        try:
            return self.screenshot(name)
        finally:
            self.driver.set_window_size(width, height)

    def console_errors(self) -> list[str]:
        """Severe messages the page logged (JavaScript errors, failed requests) since the last call."""
        try:
            logs = self.driver.get_log("browser")
        except Exception:
            return []
        return [entry["message"] for entry in logs if entry.get("level") == "SEVERE"]


def make_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-extensions", "--mute-audio",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--lang=en-GB"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A time zone other than UTC, so "shown in the viewer's local time" is visible in the tests.
    env = {**os.environ, "TZ": BROWSER_TZ}
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=options)
    driver.set_page_load_timeout(60)
    return driver


_driver = None


def _session_driver(config):
    """One Chromium for the whole test session, started on first use, quit when pytest ends."""
    global _driver
    if _driver is None:
        _driver = make_driver()
        config.add_cleanup(_quit_driver)
    return _driver


def _quit_driver():
    global _driver
    if _driver is not None:
        _driver.quit()
        _driver = None


@pytest.fixture
def browser(request):
    """The session's Chromium, with no cookies left from an earlier test."""
    require_browser()
    driver = _session_driver(request.config)
    driver.delete_all_cookies()
    b = Browser(driver)
    b.console_errors()  # drop what earlier tests logged
    yield b
    driver.get("about:blank")   # a dashboard left open keeps refreshing, using CPU for the rest of the run
    driver.delete_all_cookies()
