"""The Audit page in headless Chromium: ops open /audit from the navigation and see the trail.

A top-up done on the dashboard's behalf (``auth.top_up``) is one audit row; the page lists it
with its actor, action and target, and the actor filter narrows the table.
"""
from __future__ import annotations

from delula import auth


def test_ops_see_a_top_up_in_the_audit_trail(live_app, browser):
    rt = live_app.rt
    admin = auth.get_user(rt, username="admin")
    auth.top_up(rt, admin, auth.get_user(rt, username="maya").id, 10)
    browser.sign_in(live_app)
    browser.open(live_app, "/")
    browser.click(lambda: browser.find("#nav-audit"), what="the Audit link")
    browser.wait("#audit-page")
    browser.wait("#audit-grid .ag-row")     # the sign-in just made is audited too, newest first
    browser.wait_for(lambda: any("top_up" in r.text and "maya" in r.text and "admin" in r.text
                                 for r in browser.find_all("#audit-grid .ag-row")), what="the top-up row")
    browser.screenshot("audit")
    browser.find("#audit-actor").send_keys("nobody\n")
    browser.wait_for(lambda: not browser.find_all("#audit-grid .ag-row"), what="the filter to empty the table")
    assert browser.console_errors() == []
