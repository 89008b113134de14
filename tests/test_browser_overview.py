"""The dashboard in a real browser (headless Chromium): sign-in, the overview, maintenance.

Each test runs the whole app (``app.create_app``) on a fresh SQLite database in a thread and
drives Chromium through selenium; screenshots land in ``test-artifacts/``. The browser runs in
``tests.support.browser.BROWSER_TZ`` (UTC+5:30), so times drawn in the viewer's local time are told
apart from UTC.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import requests

from delula import auth, recipes, schedule
from tests.support.browser import ADMIN_PASSWORD, BROWSER_TZ
from tests.support.factories import CLAIMS, READY, seed_activity

pytestmark = pytest.mark.browser

GRAPHS = ("ov-backlog", "ov-queue", "ov-claims", "ov-instant", "ov-failures", "ov-processing", "ov-hit-rate")


def plotly_data(browser, graph_id: str) -> list[dict]:
    """The traces Plotly actually drew in the graph ``graph_id`` (names, x and y)."""
    return browser.js("""
        const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        if (!el || !el.data) return null;
        return el.data.map(t => ({name: t.name || null, x: Array.from(t.x || []), y: Array.from(t.y || [])}));
    """, graph_id)


def minimum_row(browser, recipe: str) -> list[str]:
    """The cells' text of one recipe's row in the maintenance page's minimums table."""
    for row in browser.find_all("#mt-min-table tbody tr"):
        cells = [td.text.strip() for td in row.find_elements("css selector", "td")]
        if cells and cells[0].startswith(recipe):
            return cells
    return []


def wait_for_charts(browser, graph_ids=GRAPHS) -> dict:
    drawn = {}

    def all_drawn():
        for gid in graph_ids:
            data = plotly_data(browser, gid)
            if not data:
                return False
            drawn[gid] = data
        return True

    browser.wait_for(all_drawn, what="every overview chart drawn with data")
    return drawn


def test_sign_in_with_a_wrong_then_the_right_password(live_app, browser):
    browser.open(live_app, "/maintenance")
    browser.wait("#login-form")
    assert browser.driver.current_url.endswith("/login?next=/maintenance")
    browser.find("#username").send_keys("admin")
    browser.find("#password").send_keys("not-the-password")
    browser.find("#login-submit").click()
    assert "Wrong username or password." in browser.wait("#login-error").text
    browser.screenshot("login-error")

    browser.find("#password").send_keys(ADMIN_PASSWORD)  # the username is kept
    browser.find("#login-submit").click()
    browser.wait_text("#nav-username", "admin")
    assert browser.find("#nav-role").text == "ops"
    assert browser.driver.current_url.endswith("/maintenance")  # back where we wanted to go
    assert "active" in browser.find("#nav-maintenance").get_attribute("class")

    browser.find("#nav-signout").click()
    assert "You have been signed out." in browser.wait("#login-notice").text
    browser.open(live_app, "/")
    browser.wait("#login-form")  # signed out for good


def test_overview_renders_every_chart_with_data(live_app, browser):
    seed_activity(live_app.rt)
    browser.sign_in(live_app)
    drawn = wait_for_charts(browser)

    backlog = {t["name"]: t for t in drawn["ov-backlog"]}
    assert set(backlog) == {"ready", "in flight", "target", "minimum"}
    assert sum(backlog["ready"]["x"]) == sum(READY.values())
    claims = {t["name"]: sum(t["y"]) for t in drawn["ov-claims"]}
    assert claims == {"claimed": CLAIMS["claimed"], "no backlog": CLAIMS["no_backlog"],
                      "race lost": CLAIMS["race"], "insufficient credits": CLAIMS["insufficient_credits"]}
    assert {t["name"] for t in drawn["ov-queue"]} == {"pending", "processing", "backlog ready"}
    assert {t["name"] for t in drawn["ov-instant"]} == {"instant (claimed)", "normal (queued)"}
    assert sum(drawn["ov-failures"][0]["y"]) == 2  # failed backlog jobs
    assert sum(drawn["ov-processing"][0]["y"]) > 0

    assert browser.find("#kpi-backlog .kpi-value").text == "20"
    assert browser.find("#kpi-below .kpi-value").text == "2"
    assert browser.find("#kpi-claims .kpi-value").text == str(CLAIMS["claimed"])
    # hits over the attempts that reached the pool (claimed, no backlog, race lost)
    attempts = CLAIMS["claimed"] + CLAIMS["no_backlog"] + CLAIMS["race"]
    assert browser.find("#kpi-hit-rate .kpi-value").text == f"{100 * CLAIMS['claimed'] / attempts:.0f} %"
    hit_rate = {t["name"]: t for t in drawn["ov-hit-rate"]}
    assert "all recipes" in hit_rate and max(v for v in hit_rate["all recipes"]["y"] if v is not None) <= 1
    banner = browser.wait("#health-banner").text
    assert "2 recipes below minimum" in banner and "Tiny Chef: 1 ready, minimum 3" in banner

    # The time axes are in the viewer's zone (UTC+5:30 here), not UTC.
    last_bucket = drawn["ov-claims"][0]["x"][-1]
    utc = datetime.fromisoformat(last_bucket.replace(" ", "T")).replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc)
    assert BROWSER_TZ == "Asia/Kolkata" and abs(utc - timedelta(hours=5, minutes=30) - now) < timedelta(minutes=3)
    updated = browser.find("#ov-updated time")
    assert "UTC" not in updated.text and "+05:30" not in updated.text and updated.get_attribute("title")

    browser.full_page_screenshot("overview")
    assert browser.console_errors() == []


def test_overview_controls_range_recipe_and_live_refresh(live_app, browser):
    seed_activity(live_app.rt)
    browser.sign_in(live_app)
    wait_for_charts(browser)
    assert browser.wait("#ov-live").text == "Live · every 10 s"

    # 24 h: the time axis has 15-minute buckets
    next(label for label in browser.find_all("#ov-range label") if label.text == "24 h").click()
    browser.wait_for(lambda: "15 min" in browser.js(
        "return document.querySelector('#ov-claims .js-plotly-plot').layout.yaxis.title.text"),
        what="claims per 15 min")

    # one recipe: a single backlog bar
    browser.find("#ov-recipe").click()
    browser.wait_text(".dash-dropdown-option", "Tiny Chef").click()  # the options open in a popover
    browser.wait_for(lambda: (plotly_data(browser, "ov-backlog") or [{}])[0].get("y") == ["Tiny Chef"],
                     what="backlog chart narrowed to Tiny Chef")
    assert browser.find("#kpi-backlog .kpi-value").text == "1"

    # pause and resume
    browser.find("#ov-pause").click()
    browser.wait_text("#ov-live", "Paused")
    assert browser.find("#ov-pause").text == "Resume"
    browser.find("#ov-pause").click()
    browser.wait_text("#ov-live", "Live")

    # a hidden tab pauses the refresh (the page sees visibilityState "hidden" and the event)
    browser.js("""Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                  document.dispatchEvent(new Event('visibilitychange'));""")
    browser.wait_text("#ov-live", "Paused while the tab is hidden")
    browser.js("""Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                  document.dispatchEvent(new Event('visibilitychange'));""")
    browser.wait_text("#ov-live", "Live · every 10 s")
    assert browser.console_errors() == []


def test_role_user_sees_no_access_and_product_cannot_run_maintenance(live_app, browser):
    auth.create_user(live_app.rt, "ulla", role="user", password="pw-user-1", with_token=False)
    auth.create_user(live_app.rt, "pat", role="product", password="pw-product-1", with_token=False)
    browser.sign_in(live_app, "ulla", "pw-user-1")
    page = browser.wait("#no-access").text
    assert "No access" in page and "signed in as ulla (role user)" in page
    assert browser.find_all("#nav-overview") == []
    browser.screenshot("no-access")
    browser.find("#no-access button").click()  # sign out from there
    browser.wait("#login-form")

    browser.sign_in(live_app, "pat", "pw-product-1", path="/maintenance")
    browser.wait("#mt-jobs-table")
    assert not browser.find("#mt-run-now").is_enabled()
    assert all(not i.is_enabled() for i in browser.find_all("#mt-min-table input"))
    assert "Only ops can change anything here." in browser.find("#maintenance-page").text


def test_signed_out_callbacks_get_401(live_app, browser):
    r = requests.post(live_app.url + "/_dash-update-component", timeout=10,
                      json={"output": "ov-kpis.children", "outputs": {"id": "ov-kpis", "property": "children"},
                            "inputs": [], "changedPropIds": []})
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/json")
    assert "Sign in required" in r.json()["message"]

    # a page left open after signing out: its callbacks are refused too
    browser.sign_in(live_app)
    wait_for_charts(browser, ("ov-backlog",))
    browser.driver.delete_all_cookies()
    status = browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/_dash-update-component', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({output: 'ov-kpis.children', inputs: [], changedPropIds: []})})
          .then(r => done(r.status), e => done(String(e)));""")
    assert status == 401


def test_maintenance_shows_leader_and_jobs_and_runs_maintenance_now(live_app, browser):
    rt = live_app.rt
    seed_activity(rt)
    for job in ("backlog-maintenance", "metrics-sample"):
        schedule.run_now(rt, job)
    recipes.set_min_backlog(rt, 1, 8)  # Cat Olympics: 5 ready, now wants 8
    browser.sign_in(live_app, path="/maintenance")

    assert "worker-1" in browser.wait("#mt-leader-host").text
    assert browser.find("#mt-leader-pid").text == "4242"
    jobs = browser.wait("#mt-jobs-table").text
    for job in ("queue-tick", "backlog-maintenance", "metrics-sample", "housekeeping"):
        assert job in jobs
    assert "every 1 min" in jobs and "(estimate)" in jobs
    runs = browser.wait("#mt-runs-table").text
    assert "metrics-sample" in runs and "backlog-maintenance" in runs
    row = next(r for r in browser.find_all("#mt-min-table tbody tr") if r.text.startswith("Cat Olympics"))
    assert row.find_element("css selector", "input").get_attribute("value") == "8"
    # the policy in force, and each recipe's forecast beside its actual attempts
    assert "Policy in force: forecast, service level 0.98 (DELULA_BACKLOG_POLICY)" in \
        browser.wait("#mt-policy-line").text
    cells = minimum_row(browser, "Cat Olympics")
    assert re.fullmatch(r"\d+(\.\d+)?", cells[4]) and cells[6] == "forecast", cells
    browser.full_page_screenshot("maintenance")

    browser.find("#mt-run-now").click()
    alert = browser.wait("#mt-run-alert").text
    assert re.search(r"created 3 backlog jobs: Cat Olympics \+3\.", alert), alert
    browser.wait_for(lambda: minimum_row(browser, "Cat Olympics")[1:3] == ["5", "3"],
                     what="Cat Olympics: 5 ready, 3 in flight")
    browser.screenshot("maintenance-run-now")

    # an ops user sets Tiny Chef's minimum
    def tiny_chef_row():
        return next(r for r in browser.find_all("#mt-min-table tbody tr") if r.text.startswith("Tiny Chef"))

    field = tiny_chef_row().find_element("css selector", "input")
    field.clear()
    field.send_keys("4")
    browser.click(lambda: tiny_chef_row().find_element("css selector", "button.btn-outline-primary"),
                  what="Tiny Chef's Save button")
    assert "Tiny Chef: minimum set to 4." in browser.wait("#mt-min-alert").text
    assert recipes.get_recipe(rt, 2).min_backlog == 4
    assert browser.console_errors() == []


def test_the_alerts_panel_shows_firing_and_resolved_alerts(live_app, browser):
    from delula import alerts
    from delula.storage import alerts as store_alerts

    rt = live_app.rt
    seed_activity(rt)
    now = rt.now()
    for key, summary, ago in (("breaker_open", "the simulator circuit breaker is open", 10),
                              ("failure_rate", "6 of 12 jobs finished in the last 15 min failed", 90)):
        with rt.store.begin() as s:
            store_alerts.fire_at_once(s, key, {"rule": key, "recipe_id": None, "summary": summary, "value": 1.0,
                                               "threshold": 1.0}, now=now - timedelta(minutes=ago))
    with rt.store.begin() as s:
        store_alerts.resolve(s, "failure_rate", now=now - timedelta(minutes=30))
    browser.sign_in(live_app)
    firing = browser.wait_text("#alerts-panel .alert-firing", "the simulator circuit breaker is open").text
    assert firing.startswith("firing") and f"{alerts.TITLES['breaker_open']} since " in firing
    resolved = browser.find("#alerts-panel .alert-resolved").text
    assert alerts.TITLES["failure_rate"] in resolved and "resolved" in resolved and "6 of 12 jobs" in resolved
    assert "UTC" not in firing                              # since-when in the viewer's time zone
    assert not browser.find_all("#alerts-none")
    browser.screenshot("overview-alerts")
