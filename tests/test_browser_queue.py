"""The queue page in headless Chromium (issue 6, "Shown by"): retry a failed job from /queue;
and (issue 16) a bulk retry of selected rows and of every job a filter matches.

Ops see Retry on a failed row and Cancel on a pending one; each asks for confirmation (the
browser's confirm dialog), then a toast says what happened and the grid and the counts follow.
Bulk actions confirm in a modal that states the count. Product staff see the jobs without the
actions, bulk ones included.
"""
from __future__ import annotations

import re

from delula import audit, auth, generations
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs

DRONE, RETRO_AD = 4, 3


def add_job(rt, *, recipe_id: int, status: str, user_id: str = SYSTEM_BACKLOG_USER_ID, **fields) -> int:
    """A generation row as the queue service leaves it (through the storage module)."""
    now = rt.now()
    source = "backlog" if user_id == SYSTEM_BACKLOG_USER_ID else "user"
    with rt.store.begin() as s:
        gen = jobs.add_generation(s, user_id=user_id, recipe_id=recipe_id, form_data={}, meta={"source": source},
                                  priority=10, credits_charged=0, now=now, status=status)
        for key, value in fields.items():
            setattr(gen, key, value)
        s.flush()
        return gen.id


def row(browser, job_id: int):
    return browser.wait(f".ag-row[row-id='{job_id}']")


def confirm(browser, expected: str) -> None:
    """Accept the confirmation dialog after checking what it asks."""
    from selenium.webdriver.support import expected_conditions

    alert = browser.wait_for(lambda: expected_conditions.alert_is_present()(browser.driver), what="the confirm dialog")
    assert expected in alert.text, alert.text
    alert.accept()


def test_retry_a_failed_job_and_cancel_a_pending_one(live_app, browser):
    rt = live_app.rt
    failed = add_job(rt, recipe_id=DRONE, status="failed", attempts=3, error="provider: FAILED (simulated failure)")
    maya = auth.get_user(rt, username="maya")
    pending = add_job(rt, recipe_id=RETRO_AD, status="pending", user_id=maya.id)
    browser.sign_in(live_app)
    browser.open(live_app, "/queue")
    browser.wait_text("#queue-count-failed", "1")
    failed_row = row(browser, failed)
    assert "Dreamy Drone Shot" in failed_row.text and "simulated failure" in failed_row.text
    assert re.search(r"\bfailed\b", failed_row.text, re.I)
    assert "maya" in row(browser, pending).text
    browser.screenshot("queue")

    failed_row.find_element("css selector", ".delula-action-retry").click()
    confirm(browser, f"Retry job #{failed}?")
    browser.wait_text("#queue-toast", f"Job #{failed} is pending again")
    browser.wait_for(lambda: re.search(r"\bpending\b", row(browser, failed).text, re.I), what="the row shows pending")
    browser.wait_text("#queue-count-failed", "0")
    job = generations.get_generation(rt, failed)
    assert (job.status, job.attempts, job.error) == ("pending", 0, None)
    browser.screenshot("queue-after-retry")

    row(browser, pending).find_element("css selector", ".delula-action-cancel").click()
    confirm(browser, f"Cancel job #{pending}?")
    browser.wait_text("#queue-toast", f"Job #{pending} was cancelled")
    browser.wait_for(lambda: re.search(r"\bcancelled\b", row(browser, pending).text, re.I),
                     what="the row shows cancelled")
    assert generations.get_generation(rt, pending).status == "cancelled"

    # Filtered by the URL: only failed jobs — none left, and the grid says so.
    browser.open(live_app, "/queue?status=failed")
    browser.wait_text(".queue-empty", "No jobs match these filters.")
    browser.screenshot("queue-empty-filter")
    assert browser.console_errors() == []


def test_product_staff_see_jobs_without_actions(live_app, browser):
    rt = live_app.rt
    auth.create_user(rt, "pia", role="product", password="product-password", with_token=False)
    failed = add_job(rt, recipe_id=DRONE, status="failed", error="provider: timed out")
    browser.sign_in(live_app, "pia", "product-password")
    browser.open(live_app, "/queue")
    assert "timed out" in row(browser, failed).text
    browser.wait_text(".page-header", "Retry and cancel are for ops")
    assert browser.find_all(".delula-action") == []
    assert browser.find_all("#queue-bulk") == [] and browser.find_all(".ag-selection-checkbox") == []
    assert browser.console_errors() == []


def select(browser, job_id: int) -> None:
    """Tick the row's selection checkbox."""
    browser.click(lambda: row(browser, job_id).find_element("css selector", ".ag-selection-checkbox input"),
                  what=f"the checkbox of job #{job_id}")


def test_bulk_retry_of_selected_rows_then_of_every_matching_job(live_app, browser):
    """Issue 16: select rows, Retry selected, a confirmation stating the count, the result; then
    Retry all N matching on a filtered view. Each bulk action is one audit event."""
    rt = live_app.rt
    failed = [add_job(rt, recipe_id=DRONE, status="failed", attempts=3, error="provider: timed out") for _ in range(3)]
    pending = add_job(rt, recipe_id=RETRO_AD, status="pending")
    browser.sign_in(live_app)
    browser.open(live_app, "/queue?status=failed,pending")
    row(browser, failed[0])
    browser.wait_text("#queue-bulk-retry-all", "Retry all 3 matching")
    browser.wait_text("#queue-bulk-cancel-all", "Cancel all 1 matching")

    for job_id in (failed[0], failed[1], pending):   # the pending one is not retried
        select(browser, job_id)
    browser.wait_text("#queue-bulk-retry-selected", "Retry selected (2)")
    browser.wait_text("#queue-bulk-cancel-selected", "Cancel selected (1)")
    browser.click(lambda: browser.find("#queue-bulk-retry-selected"), what="Retry selected")
    question = browser.wait_text("#queue-bulk-question", "Retry 2 jobs selected?")
    assert "pending" in question.text
    browser.wait_text("#queue-bulk-confirm", "Retry 2 jobs")
    browser.screenshot("queue-bulk-confirm")
    browser.click(lambda: browser.find("#queue-bulk-confirm"), what="Confirm")
    browser.wait_text("#queue-toast", "Retried 2, skipped 0.")
    for job_id in failed[:2]:
        browser.wait_for(lambda job_id=job_id: re.search(r"\bpending\b", row(browser, job_id).text, re.I),
                         what=f"job #{job_id} shows pending")
    assert [generations.get_generation(rt, j).status for j in failed] == ["pending", "pending", "failed"]
    browser.wait_text("#queue-bulk-retry-selected", "Retry selected (0)")
    browser.screenshot("queue-bulk-after-retry")

    browser.open(live_app, "/queue?status=failed")
    browser.click(lambda: browser.wait_text("#queue-bulk-retry-all", "Retry all 1 matching"), what="Retry all")
    browser.wait_text("#queue-bulk-question", "Retry all 1 job matching the filters")
    browser.click(lambda: browser.find("#queue-bulk-confirm"), what="Confirm")
    browser.wait_text("#queue-toast", "Retried 1, skipped 0.")
    assert generations.get_generation(rt, failed[2]).status == "pending"
    assert generations.get_generation(rt, pending).status == "pending"
    events = [e for e in audit.events(rt) if e["action"] == "bulk_retry"]
    assert [(e["actor"], e["details"]) for e in events] == [
        ("admin", {"done": 1, "skipped": 0, "filter": {"status": "failed"}}),
        ("admin", {"done": 2, "skipped": 0, "ids": 2})]
    assert browser.console_errors() == []
