"""Recipe cards and asset viewer in headless Chromium (issue 6, "Shown by").

- Instant on a recipe with backlog: the InstantMakeModal's bar animates to success with the
  preview, the acting user's credits and the card's badge drop, the Instant buttons stay disabled
  with a countdown, and unlock afterwards.
- Instant on a recipe without backlog: the Generate modal opens instead; submitting queues a
  normal generation that shows up on /queue.
- The asset viewer shows the claimed generation's media (the simulator's SVG poster, loaded).

Backlog items here are real simulator outputs (submitted to the app's own provider), so their
posters are served by the app like in production.
"""
from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from delula import auth, generations, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs
from tests.support.browser import BROWSER_TZ

CAT_OLYMPICS, TINY_CHEF, RETRO_AD, PET_SHOW, SKATE = 1, 2, 3, 5, 7

# Records every width the InstantMakeModal's progress bar takes (installed before the click).
WATCH_PROGRESS = """
window.__progress = [];
new MutationObserver(function () {
  var bar = document.querySelector('#recipes-instant-progress .progress-bar');
  if (bar) { window.__progress.push(parseFloat(bar.style.width) || 0); }
}).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['style']});
"""


def make_pool(rt, recipe_id: int, n: int, form_data: dict | None = None) -> None:
    """``n`` finished backlog generations whose assets the app's simulator really serves."""
    recipe = recipes.get_recipe(rt, recipe_id)
    now = rt.now()
    rows = []
    for _ in range(n):
        submission = rt.provider.submit(recipe.model_id, {"prompt": recipe.name, "recipe": recipe.name})
        result = rt.provider.result(submission)
        rows.append(dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe_id, status="completed",
                         form_data=form_data or {},
                         meta={"source": "backlog"}, priority=10, provider_request_id=submission.request_id,
                         asset_url=result.video_url, thumbnail_url=result.thumbnail_url, started_at=now,
                         completed_at=now))
    with rt.store.begin() as s:
        jobs.add_generations(s, rows, now)
    rt.invalidate()


def open_recipes(live_app, browser, username: str = "maya") -> None:
    """/recipes signed in as the ops user, acting as the test user ``username``, chosen the way
    staff do: open the selector, type part of the name (the server searches), click it."""
    browser.sign_in(live_app)
    browser.open(live_app, "/recipes")
    browser.wait("#recipe-card-1")
    browser.find("#recipes-acting-as").click()
    browser.wait(".dash-dropdown-search").send_keys(username[1:])
    browser.click(lambda: browser.wait_text(".dash-dropdown-option", f"{username} ·"), what=f"the option {username}")
    credits = auth.get_user(live_app.rt, username=username).credits
    browser.wait_text("#recipes-credits", f"{credits} credits")


def test_instant_claim_animates_to_success_and_locks_the_buttons(live_app, browser):
    rt = live_app.rt
    for recipe_id, n in ((CAT_OLYMPICS, 3), (TINY_CHEF, 2), (PET_SHOW, 4), (SKATE, 1)):
        make_pool(rt, recipe_id, n)
    from pages.recipes import ACTING_AS_SHOWN  # the app has loaded the page: no second registration

    for i in range(ACTING_AS_SHOWN):  # maya is past the selector's first choices: found by searching
        auth.create_user(rt, f"a_tester_{i:02d}", credits=1)
    open_recipes(live_app, browser)
    card = f"#recipe-card-{CAT_OLYMPICS}"
    browser.wait_text(f"{card} .recipes-availability", "3 ready")
    browser.wait_text(f"#recipe-card-{RETRO_AD} .recipes-availability", "none ready")
    browser.js("document.activeElement && document.activeElement.blur();")
    browser.full_page_screenshot("recipes")

    browser.js(WATCH_PROGRESS)
    browser.find(f"{card} .recipes-instant").click()
    browser.wait_text("#recipes-instant-title", "Instant · Cat Olympics")
    browser.wait(".recipes-claim-success")
    seen = browser.js("return window.__progress;")
    run = seen[len(seen) - 1 - seen[::-1].index(0):] if 0 in seen else seen
    assert any(0 < w < 100 for w in run), seen   # it moved through intermediate steps,
    assert run == sorted(run) and run[-1] == 100, seen   # forward only, to 100 %

    claimed = generations.list_generations(rt, auth.get_user(rt, username="maya").id)
    assert len(claimed) == 1 and claimed[0].meta["isInstant"] is True
    browser.wait_text(".recipes-claim-success", f"Generation #{claimed[0].id} is yours: 3 credits charged, 37 left")
    browser.wait_for(lambda: browser.js(
        "var i = document.querySelector('#recipes-instant-result img.recipes-preview');"
        "return i && i.complete && i.naturalWidth > 0;"), what="the preview image loaded")
    assert browser.find("#recipes-instant-link").get_attribute("href").endswith(f"/generations/{claimed[0].id}")
    browser.screenshot("recipes-instant-success")

    browser.find("#recipes-instant-close").click()
    browser.wait_text(f"{card} .recipes-availability", "2 ready")
    browser.wait_text("#recipes-credits", "37 credits")
    button = browser.find(f"{card} .recipes-instant")
    assert not button.is_enabled()
    assert re.search(r"Instant · \d+ s", button.text), button.text
    assert not any(b.is_enabled() for b in browser.find_all(".recipes-instant"))  # every card waits
    browser.screenshot("recipes-instant-countdown")
    # The lock ends by itself (10 s after the click) and the countdown goes away.
    browser.wait_for(lambda: browser.find(f"{card} .recipes-instant").is_enabled(), what="the Instant button unlocked")
    assert browser.find(f"{card} .recipes-instant").text.strip() == "⚡ Instant"
    assert browser.console_errors() == []


def test_instant_without_backlog_opens_generate_and_the_job_appears_on_the_queue(live_app, browser):
    rt = live_app.rt
    open_recipes(live_app, browser)
    card = f"#recipe-card-{RETRO_AD}"
    browser.wait_text(f"{card} .recipes-availability", "none ready")
    browser.find(f"{card} .recipes-instant").click()

    browser.wait_text("#recipes-generate-title", "Generate · Retro Product Ad")
    browser.wait_text(".recipes-fallback", "No finished video is waiting")
    assert not browser.find_all(".recipes-claim-success")
    product = browser.wait("#recipes-generate-form input[type=text]")
    assert product.get_attribute("maxlength") == "60"
    browser.find("#recipes-generate-submit").click()  # required product missing
    browser.wait_text("#recipes-generate-form .invalid-feedback", "Product is required")
    product.send_keys("self-folding socks")  # decade and jingle keep their defaults
    browser.screenshot("recipes-generate-modal")
    browser.find("#recipes-generate-submit").click()

    queued = browser.wait_text(".recipes-queued", "Queued generation #")
    job = generations.list_jobs(rt, source="user")[0]
    assert f"Queued generation #{job.id} for maya" in queued.text
    assert job.form_data == {"product": "self-folding socks", "decade": "80s", "jingle": False}
    assert job.status == "pending" and job.user_id == auth.get_user(rt, username="maya").id
    browser.wait_text("#recipes-credits", "36 credits")
    browser.screenshot("recipes-generate-queued")

    browser.find(".recipes-queued a[href='/queue']").click()
    browser.wait_text(".delula-job-link", f"#{job.id}")
    row = browser.wait(f".ag-row[row-id='{job.id}']")
    assert "Retro Product Ad" in row.text and "PENDING" in row.text.upper() and "maya" in row.text
    browser.screenshot("queue-after-generate")
    assert browser.console_errors() == []


def test_the_generate_form_offers_a_ready_item_with_its_choices_and_claims_it(live_app, browser):
    """Issue 15: while staff pick values, the form counts the ready items that have them, and
    "Get one now" turns the form into an instant claim with those choices."""
    from selenium.webdriver.support.ui import Select

    rt = live_app.rt
    make_pool(rt, CAT_OLYMPICS, 1, {"sport": "diving", "breed": "tabby", "slowmo": True})
    make_pool(rt, CAT_OLYMPICS, 1, {"sport": "curling", "breed": "siamese", "slowmo": True})
    open_recipes(live_app, browser)
    card = f"#recipe-card-{CAT_OLYMPICS}"
    browser.wait_text(f"{card} .recipes-availability", "2 ready")
    browser.find(f"{card} .recipes-generate-open").click()
    browser.wait_text("#recipes-generate-title", "Generate · Cat Olympics")
    browser.wait_text("#recipes-ready", "1 ready with these choices")   # the defaults: diving, tabby

    Select(browser.wait("#recipes-generate-form select")).select_by_visible_text("Curling")
    browser.wait_for(lambda: not browser.find_all("#recipes-ready"), what="no offer for curling with a tabby")
    browser.click(lambda: browser.wait_text("#recipes-generate-form label", "Siamese"), what="the Siamese option")
    browser.wait_text("#recipes-ready", "1 ready with these choices")
    browser.screenshot("recipes-generate-ready")
    browser.find("#recipes-ready-claim").click()

    browser.wait_text("#recipes-instant-title", "Instant · Cat Olympics")
    browser.wait(".recipes-claim-success")
    [claimed] = generations.list_generations(rt, auth.get_user(rt, username="maya").id)
    assert claimed.form_data == {"sport": "curling", "breed": "siamese", "slowmo": True}
    assert claimed.meta["isInstant"] is True
    browser.wait_text(".recipes-claim-success", f"Generation #{claimed.id} is yours")
    browser.find("#recipes-instant-close").click()
    browser.wait_text(f"{card} .recipes-availability", "1 ready")
    assert browser.console_errors() == []


def test_asset_viewer_shows_the_media(live_app, browser):
    rt = live_app.rt
    make_pool(rt, CAT_OLYMPICS, 1)
    open_recipes(live_app, browser, "jonas")
    browser.find(f"#recipe-card-{CAT_OLYMPICS} .recipes-instant").click()
    browser.wait(".recipes-claim-success")
    browser.find("#recipes-instant-link").click()

    gen = generations.list_generations(rt, auth.get_user(rt, username="jonas").id)[0]
    browser.wait_text("h1", f"Generation #{gen.id}")
    assert browser.driver.current_url.endswith(f"/generations/{gen.id}")
    browser.wait_for(lambda: browser.js(
        "var i = document.getElementById('generation-media');"
        "return i && i.tagName === 'IMG' && i.complete && i.naturalWidth > 0;"), what="the media loaded")
    assert browser.find("#generation-media").get_attribute("src").endswith(gen.asset_url)
    browser.wait_text("#generation-details", "jonas (user)")
    browser.wait_text("#generation-details", "yes — claimed from the backlog")
    # Times in the viewer's zone (the test browser runs in BROWSER_TZ, UTC+5:30), not UTC.
    claimed_at = datetime.fromisoformat(gen.meta["claimedAt"].replace("Z", "+00:00"))
    local = claimed_at.astimezone(ZoneInfo(BROWSER_TZ))
    browser.wait_text("#generation-timeline", f"{local:%I:%M:%S}")
    assert f"{claimed_at:%H:%M:%S}" not in browser.find("#generation-timeline").text
    browser.wait_text("#generation-status", re.compile("completed", re.I))  # shown in capitals
    browser.screenshot("generation-viewer")

    browser.open(live_app, "/generations/not-a-number")
    browser.wait_text("#generation-not-found", "There is no generation “not-a-number”.")
    browser.open(live_app, "/generations/987654")
    browser.wait_text("#generation-not-found", "There is no generation #987654.")
    browser.screenshot("generation-not-found")
    assert browser.console_errors() == []
