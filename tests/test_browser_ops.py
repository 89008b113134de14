"""Pause and resume in headless Chromium: a pause shows in a banner on every page (what, by whom,
since when); ops resume it from the Maintenance page's controls and the banner goes. An open
breaker shows there and in the overview's health banner."""
from __future__ import annotations


from delula import auth, breaker, pauses
from delula.providers import ProviderError


def test_a_pause_shows_on_every_page_and_ops_resume_it_from_maintenance(live_app, browser):
    rt = live_app.rt
    admin = auth.get_user(rt, username="admin")
    pauses.pause(rt, "backlog", actor_id=admin.id)
    browser.sign_in(live_app)
    for path in ("/", "/queue", "/recipes"):
        browser.open(live_app, path)
        browser.wait_text("#ops-banner", "Backlog generation (all recipes) paused by admin since")
    browser.screenshot("pause-banner")

    browser.open(live_app, "/maintenance")
    browser.wait_text("#mt-pause-backlog-all", "paused by admin")
    browser.click(lambda: browser.find("#mt-pause-backlog-all button"), what="Resume backlog")
    browser.wait_text("#mt-pause-alert", "Backlog generation resumed.")
    browser.wait_text("#mt-pause-backlog-all", "running")
    assert pauses.state(rt).summary() == {"queue": False, "backlog": False, "recipes": []}
    browser.open(live_app, "/queue")
    browser.wait_for(lambda: not browser.find_all("#ops-banner-alert"), what="the banner to go")

    browser.open(live_app, "/maintenance")
    browser.click(lambda: browser.find("#mt-pause-queue-all button"), what="Pause queue")
    browser.wait_text("#mt-pause-queue-all", "paused by admin")
    browser.wait_text("#ops-banner", "Queue submissions paused by admin")
    assert pauses.state(rt).queue_paused
    assert browser.console_errors() == []


def test_an_open_breaker_shows_in_the_banner_and_on_maintenance(live_app, browser):
    rt = live_app.rt
    gate = breaker.gate(rt)
    for _ in range(rt.settings.breaker_threshold):
        gate.record("submit", ProviderError("fal returned 503: upstream down", retryable=True, status_code=503))
    assert breaker.current(rt)["state"] == "open"
    browser.sign_in(live_app)
    browser.open(live_app, "/")
    browser.wait_text("#ops-breaker", "circuit breaker to simulator is open")
    browser.wait_text("#health-breaker", "upstream down")
    browser.open(live_app, "/maintenance")
    browser.wait_text("#mt-breaker-state", "OPEN")
    browser.wait_text("#mt-breaker", f"{rt.settings.breaker_threshold} of {rt.settings.breaker_threshold} errors")
    browser.screenshot("breaker-open")
    assert browser.console_errors() == []
