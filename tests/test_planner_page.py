"""The Planner page (``/planner``) in a real browser on PostgreSQL: a short simulation in a
background callback, its results drawn; ops apply a policy and the database row changes;
product staff simulate but see no Apply, and a hand-made Apply request of theirs is refused."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from delula import audit, auth, backlog, policies, recipes
from delula.storage import pool
from tests.support import browser as browsers
from tests.support.browser import ADMIN_PASSWORD
from tests.support.dash import signed_in

PRODUCT_PASSWORD = "pw-product-planner"


@pytest.fixture
def pg_live_app(pg_url, make_runtime):
    """The whole app on a fresh PostgreSQL database (demo data, scheduler off) in a thread."""
    browsers.require_browser()
    rt = make_runtime(pg_url, admin_password=ADMIN_PASSWORD)
    live = browsers.start_live_app(rt)
    auth.create_user(rt, "pia", role="product", password=PRODUCT_PASSWORD)
    yield live
    live.stop()


def plotly_data(browser, graph_id: str) -> list[dict] | None:
    return browser.js("""
        const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        if (!el || !el.data) return null;
        return el.data.map(t => ({name: t.name || null, x: Array.from(t.x || []), y: Array.from(t.y || [])}));
    """, graph_id)


def grid_rows(browser) -> dict[str, dict[str, str]]:
    """The results grid's rows as drawn: ``{policy: {column: text}}``."""
    return browser.js("""
        const out = {};
        document.querySelectorAll('#pl-table .ag-center-cols-container .ag-row').forEach(row => {
            const index = row.getAttribute('row-index');
            const cells = {};
            document.querySelectorAll('#pl-table .ag-row[row-index="' + index + '"] .ag-cell').forEach(c => {
                cells[c.getAttribute('col-id')] = c.innerText.trim();
            });
            out[cells.policy] = cells;
        });
        return out;
    """)


def set_input(browser, css: str, value) -> None:
    element = browser.find(css)
    element.clear()
    element.send_keys(str(value))


def select(browser, css: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find(css)).select_by_value(value)


@pytest.mark.browser
def test_a_short_simulation_draws_its_results(pg_live_app, browser):
    browser.sign_in(pg_live_app)
    browser.click(lambda: browser.find("#nav-planner"), what="the Planner link")
    browser.wait("#planner-page")
    offered = [e.get_attribute("value") for e in browser.find_all("#pl-policies input")]
    assert offered == list(policies.POLICIES)
    select(browser, "#pl-source", "steady")
    set_input(browser, "#pl-days", "0.5")
    set_input(browser, "#pl-warmup", "0.5")
    browser.click(lambda: browser.find("#pl-run"), what="Run")

    # while the background job runs, the button is disabled and the progress bar shows
    browser.wait_for(lambda: browser.find("#pl-run").get_attribute("disabled") is not None,
                     what="Run disabled while running")
    browser.wait("#pl-progress")
    rows = browser.wait_for(lambda: (lambda r: r if len(r) == len(offered) else None)(grid_rows(browser)),
                            timeout=180, what="a result row per policy")
    assert browser.find("#pl-run").get_attribute("disabled") is None
    for name in offered:
        assert rows[name]["hitRate"].endswith("%") and rows[name]["oracleHitRate"].endswith("%")
        assert int(rows[name]["generations"]) > 0 and int(rows[name]["oracleGenerations"]) > 0
        assert {"work", "expired", "meanStock"} <= set(rows[name])

    pool = browser.wait_for(lambda: plotly_data(browser, "pl-pool"), what="the pool chart")
    names = [t["name"] for t in pool]
    assert names == ["demand (attempts / h)"] + offered
    demand = pool[0]
    assert len(demand["x"]) == 12 and sum(demand["y"]) > 0       # 12 scored hours of attempts
    assert all(len(t["x"]) == 12 for t in pool[1:])
    assert "attempts of the steady trace" in browser.find("#pl-summary").text

    tradeoff = {t["name"]: t for t in plotly_data(browser, "pl-tradeoff")}
    if "forecast" in offered:
        assert len(tradeoff["forecast"]["x"]) == 4            # service levels 0.9 .. 0.99
        assert tradeoff["forecast"]["y"] == sorted(tradeoff["forecast"]["y"])   # more stock, more hits
    assert "oracle (bound)" in tradeoff
    browser.full_page_screenshot("planner")
    assert browser.console_errors() == []


@pytest.mark.browser
def test_ops_apply_a_policy_and_the_row_changes(pg_live_app, browser):
    rt = pg_live_app.rt
    assert backlog.policy_in_force(rt)["source"] == "settings"
    browser.sign_in(pg_live_app, path="/planner")
    browser.wait("#pl-apply")
    select(browser, "#pl-apply-policy", "static")
    set_input(browser, "#pl-apply-level", "0.9")
    browser.click(lambda: browser.find("#pl-apply"), what="Apply")
    alert = browser.wait_text("#pl-apply-alert", "Every recipe: policy static at service level 0.9")
    assert "alert-success" in alert.get_attribute("class")
    assert backlog.policy_in_force(rt) == {"policy": "static", "serviceLevel": 0.9, "source": "database"}
    browser.wait_text("#pl-in-force", "applied in the dashboard")
    event = audit.events(rt, action="set_policy")[0]
    assert event["actor"] == "admin" and event["details"]["after"] == {"policy": "static", "serviceLevel": 0.9}

    # a bad service level: a clear error, nothing changed
    set_input(browser, "#pl-apply-level", "1.5")
    browser.click(lambda: browser.find("#pl-apply"), what="Apply")
    alert = browser.wait_text("#pl-apply-alert", "Not applied: service level must be a number between 0 and 1")
    assert "alert-danger" in alert.get_attribute("class")
    assert backlog.policy_in_force(rt)["serviceLevel"] == 0.9

    # one recipe gets its own policy
    browser.click(lambda: browser.find("#pl-recipes"), what="the recipes selector")
    browser.click(lambda: browser.wait_text(".dash-dropdown-option", "Tiny Chef"), what="Tiny Chef")
    browser.driver.find_element("css selector", "body").send_keys("\ue00c")   # Escape closes the options
    select(browser, "#pl-apply-policy", "reactive")
    browser.click(lambda: next(label for label in browser.find_all("#pl-apply-scope label")
                               if "selected" in label.text), what="the recipes scope")
    browser.click(lambda: browser.find("#pl-apply"), what="Apply")
    browser.wait_text("#pl-apply-alert", "Tiny Chef: own policy reactive")
    tiny = next(r.id for r in recipes.list_recipes(rt) if r.name == "Tiny Chef")
    assert backlog.recipe_policies(rt) == {tiny: "reactive"}
    assert backlog.policy_in_force(rt)["policy"] == "static"      # the global row is as it was
    browser.screenshot("planner-apply")
    assert browser.console_errors() == []


@pytest.mark.browser
def test_product_staff_simulate_but_do_not_see_apply(pg_live_app, browser):
    browser.sign_in(pg_live_app, "pia", PRODUCT_PASSWORD, path="/planner")
    browser.wait("#planner-page")
    assert browser.find("#pl-run").is_enabled()
    assert "for ops" in browser.wait("#pl-apply-ops-only").text
    assert browser.find_all("#pl-apply") == [] and browser.find_all("#pl-apply-policy") == []
    assert browser.console_errors() == []


def test_a_hand_made_apply_from_product_staff_is_refused(world):
    rt, dash_app, users, _ = world
    output = "..pl-apply-feedback.children...pl-in-force.children.."
    assert output in dash_app.callback_map
    body = {"output": output,
            "outputs": [{"id": "pl-apply-feedback", "property": "children"},
                        {"id": "pl-in-force", "property": "children"}],
            "inputs": [{"id": "pl-apply", "property": "n_clicks", "value": 1}],
            "state": [{"id": "pl-apply-policy", "property": "value", "value": "static"},
                      {"id": "pl-apply-level", "property": "value", "value": 0.9},
                      {"id": "pl-apply-scope", "property": "value", "value": "global"},
                      {"id": "pl-recipes", "property": "value", "value": None}],
            "changedPropIds": ["pl-apply.n_clicks"]}
    product = signed_in(dash_app, "product")
    r = product.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert r.status_code == 403 and "ops" in r.get_json()["message"]
    assert backlog.policy_in_force(rt)["source"] == "settings" and audit.events(rt, action="set_policy") == []

    ops = signed_in(dash_app, "ops")
    r = ops.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert r.status_code == 200 and "policy static at service level 0.9" in r.get_data(as_text=True)
    assert backlog.policy_in_force(rt) == {"policy": "static", "serviceLevel": 0.9, "source": "database"}


@pytest.mark.browser
def test_recorded_history_of_the_selected_recipe_is_replayed(pg_live_app, browser):
    rt = pg_live_app.rt
    user, _ = auth.create_user(rt, "rec", credits=1000)
    tiny = next(r for r in recipes.list_recipes(rt) if r.name == "Tiny Chef")
    two_hours_ago = rt.now() - timedelta(hours=2)
    with rt.store.begin() as s:    # attempts recorded two hours ago: 3 hits and 2 misses
        for outcome in ("claimed", "claimed", "no_backlog", "claimed", "race"):
            pool.record_event(s, user_id=user.id, recipe_id=tiny.id, outcome=outcome, generation_id=None,
                              latency_ms=1.0, now=two_hours_ago)
    browser.sign_in(pg_live_app, path="/planner")
    browser.wait("#planner-page")
    browser.click(lambda: browser.find("#pl-recipes"), what="the recipes selector")
    browser.click(lambda: browser.wait_text(".dash-dropdown-option", "Tiny Chef"), what="Tiny Chef")
    browser.driver.find_element("css selector", "body").send_keys("\ue00c")
    select(browser, "#pl-source", "recorded")
    set_input(browser, "#pl-days", "0.25")
    set_input(browser, "#pl-warmup", "0")
    browser.click(lambda: browser.find("#pl-run"), what="Run")
    summary = browser.wait_text("#pl-summary", "attempts of recorded history", timeout=180).text
    assert summary.startswith("5 attempts")     # read from the database by the background job
    rows = grid_rows(browser)
    assert set(rows) == set(policies.POLICIES)
    assert browser.console_errors() == []


@pytest.mark.browser
def test_a_trace_with_choices_shows_the_choice_hit_rates(pg_live_app, browser):
    browser.sign_in(pg_live_app, path="/planner")
    browser.wait("#planner-page")
    select(browser, "#pl-source", "choices")
    set_input(browser, "#pl-days", "0.25")
    set_input(browser, "#pl-warmup", "0.25")
    browser.click(lambda: browser.find("#pl-run"), what="Run")
    text = browser.wait_text("#pl-choices", "Choice hit rate", timeout=240).text
    assert "attempts that asked for choices" in text
    for name in policies.POLICIES:
        line = browser.find(f"#pl-choice-{name}").text
        assert line.startswith(name) and "with the backlog's joint draw" in line and "with per-field draws" in line
    assert "attempts of the choices trace" in browser.find("#pl-summary").text
    # a trace without choices leaves the section empty
    select(browser, "#pl-source", "steady")
    browser.click(lambda: browser.find("#pl-run"), what="Run")
    browser.wait_for(lambda: "steady" in browser.find("#pl-summary").text, timeout=240, what="the steady run")
    assert browser.find("#pl-choices").text == ""
    assert browser.console_errors() == []


def test_the_choice_hit_rates_are_drawn_only_for_a_trace_with_choices(world):
    import importlib

    page = importlib.import_module("pages.planner")   # as the app executed it

    report = {"policies": {"static": {"hitRate": 0.4, "choiceAttempts": 1200, "choiceHits": 300, "choiceHitRate": 0.25,
                                      "marginal": {"choiceHitRate": 0.15}},
                           "forecast": {"hitRate": 0.5, "choiceAttempts": 1200, "choiceHits": 384,
                                        "choiceHitRate": 0.32, "marginal": {"choiceHitRate": 0.2}}}}
    assert page.choice_rows(report) == [
        {"policy": "static", "attempts": 1200, "joint": 0.25, "marginal": 0.15},
        {"policy": "forecast", "attempts": 1200, "joint": 0.32, "marginal": 0.2}]
    assert "1,200 attempts" in str(page.choice_hit_rates(report))
    assert page.choice_hit_rates({"policies": {"static": {"hitRate": 0.9}}}) is None
    assert page.choice_hit_rates(None) is None
