"""Headless Chromium driving a live app, for the browser tests: the app served in a thread, the
session's Chromium, sign-in, waiting, screenshots. The fixtures ``live_app`` and ``browser`` (in
``conftest.py``) are built from these::

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

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("DELULA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DELULA_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRE_BROWSER = os.environ.get("DELULA_REQUIRE_BROWSER") == "1"
ADMIN_PASSWORD = "ops-password-for-tests"
WINDOW = (1440, 1000)   # a laptop screen
WAIT_S = 30             # how long an element may take to appear before a test fails
BROWSER_TZ = os.environ.get("DELULA_BROWSER_TZ", "Asia/Kolkata")   # UTC+5:30, no daylight saving


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
        """Click the element ``locate()`` returns, scrolled to the middle of the window at once
        (Bootstrap makes scrolling smooth: a click during the glide lands on whatever passes under
        the pointer); retried while Dash re-renders it or something (a toast, an alert sliding
        in) covers it."""
        def attempt():
            element = locate()
            self.js("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", element)
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


def session_driver(config):
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
