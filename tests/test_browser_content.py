"""The Content page (``/content``) in a real browser (headless Chromium) on the whole app with
seeded content (:func:`tests.support.content.seed_content`): its charts drawn, the time range
and the recipe filter narrowing them, free text nowhere on the page."""
from __future__ import annotations

import pytest

from delula import auth
from tests.support.content import SECRET, seed_content

pytestmark = pytest.mark.browser

GRAPHS = ("ct-claimed", "ct-missed", "ct-pool", "ct-waste", "ct-reasons")


def plotly_data(browser, graph_id: str) -> list[dict] | None:
    """The traces Plotly drew in ``graph_id`` (names, x and y); None before it drew."""
    return browser.js("""
        const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        if (!el || !el.data) return null;
        return el.data.map(t => ({name: t.name || null, x: Array.from(t.x || []), y: Array.from(t.y || [])}));
    """, graph_id)


def drawn(browser) -> dict:
    found = {}

    def every_chart():
        for gid in GRAPHS:
            data = plotly_data(browser, gid)
            if not data:
                return False
            found[gid] = {t["name"]: t for t in data}
        return True

    browser.wait_for(every_chart, what="every content chart drawn with data")
    return found


def pick_range(browser, label: str) -> None:
    browser.click(lambda: next(x for x in browser.find_all("#ct-range label") if x.text == label),
                  what=f"the {label} range")


def test_the_content_page_draws_its_charts_and_follows_the_range(live_app, browser):
    rt = live_app.rt
    seed_content(rt)
    auth.create_user(rt, "pat", role="product", password="pw-product-1", with_token=False)
    browser.sign_in(live_app, "pat", "pw-product-1", path="/content")
    assert "active" in browser.wait("#nav-content").get_attribute("class")

    charts = drawn(browser)   # the last 24 hours
    assert browser.find("#ct-kpi-claims .kpi-value").text == "6"
    assert browser.find("#ct-kpi-missed .kpi-value").text == "67 %"
    assert browser.find("#ct-kpi-pool .kpi-value").text == "1 min 45 s"
    assert browser.find("#ct-kpi-waste .kpi-value").text == "5"
    assert set(charts["ct-claimed"]) == {"Cat Olympics", "Retro Product Ad"}
    assert charts["ct-claimed"]["Cat Olympics"]["x"][0] == 4
    assert charts["ct-missed"]["no item ready"]["y"] == ["Cat Olympics · Event: Curling", "Retro Product Ad · Decade: 1970s"]
    assert charts["ct-pool"]["median"]["y"] == ["Cat Olympics (4)", "Retro Product Ad (2)"]
    assert charts["ct-waste"]["rejected"]["x"] == [3, 0]
    assert "Tiny Chef · too dark" in charts["ct-reasons"]["rejected"]["y"]
    assert SECRET not in browser.driver.page_source
    browser.full_page_screenshot("content")

    pick_range(browser, "1 h")
    browser.wait_text("#ct-kpi-claims .kpi-value", "4")
    browser.wait_for(lambda: set(n for n in (t["name"] for t in plotly_data(browser, "ct-claimed") or [])) ==
                     {"Cat Olympics"}, what="the last hour's claims: Cat Olympics only")
    assert [t["name"] for t in plotly_data(browser, "ct-waste")] == ["expired", "rejected"]

    pick_range(browser, "7 d")
    browser.wait_text("#ct-kpi-claims .kpi-value", "7")
    browser.wait_for(lambda: "Tiny Chef" in {t["name"] for t in plotly_data(browser, "ct-claimed") or []},
                     what="Tiny Chef's claim three days ago")
    assert browser.find("#ct-kpi-pool .kpi-value").text == "2 min"

    # one recipe: its values without the recipe's name
    browser.find("#ct-recipe").click()
    browser.wait_text(".dash-dropdown-option", "Retro Product Ad").click()
    browser.wait_for(lambda: (plotly_data(browser, "ct-claimed") or [{}])[0].get("y") == ["Decade: 1980s", "Jingle: off"],
                     what="the claimed values of Retro Product Ad")
    browser.wait_text("#ct-kpi-claims .kpi-value", "2")
    assert SECRET not in browser.driver.page_source
    assert browser.console_errors() == []


def test_an_empty_range_says_so_and_ops_reach_the_page_from_the_navigation(live_app, browser):
    browser.sign_in(live_app)   # admin, ops; the demo data has no claims yet
    browser.click(lambda: browser.find("#nav-content"), what="the Content link")
    browser.wait("#content-page")
    browser.wait_for(lambda: all(browser.js(
        "const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "return el && el.layout && el.layout.annotations ? el.layout.annotations.length : 0", gid) for gid in GRAPHS),
        what="every chart's empty state")
    text = browser.find("#content-page").text
    assert "No claims in the last 24 hours" in text and "Nothing wasted in the last 24 hours" in text
    assert browser.find("#ct-kpi-pool .kpi-value").text == "—"
    browser.screenshot("content-empty")
    assert browser.console_errors() == []
