"""Access control beyond ``test_access.py``: what a hand-made callback or other traffic must not
get around. Each scenario checks the data afterwards, not only the status.

* the dashboard acts for test users only — never for ``system_backlog``, whose "claim" would
  leave the item in the pool, charged, to be claimed and charged again (a bug, fixed in
  ``claims.instant_claim`` / ``generations.create_user_generation``);
* every state-changing callback checks the role itself: called directly in a request of a role
  ``user`` (or ``product`` for ops actions) session, past the gate, it refuses;
* sign-in failures are counted across other writes (a claim used to empty every cache, the
  failure counts too) and per address over many usernames — in the database since issue 13,
  atomically under a parallel burst, per username and per client address (behind trusted proxies);
* a session ends on the server (issue 13): sign-out, a new password, a new role, deactivation and
  the absolute lifetime end it for every page and route, a cookie copied before too.
"""
from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from contextvars import copy_context

import pytest

from delula import audit, auth, claims, generations, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, jobs
from delula.storage.models import ClaimEvent, CreditTransaction
from tests.support.dash import login, signed_in
from tests.support.db import db_snapshot
from tests.support.factories import add_pool_items


@pytest.fixture
def plain(world):
    """A recipe without form fields, three items in its pool, and a failed charged user job."""
    rt, dash_app, users, failed = world
    recipe = recipes.create_recipe(rt, name="Plain", credit_cost=2)
    add_pool_items(rt, recipe.id, 3)
    return rt, dash_app, users, recipe, failed


def _instant_body(dash_app, recipe_id: int, acting_as: str) -> dict:
    key = next(k for k in dash_app.callback_map if "recipes-instant-modal.is_open" in k and "recipes-claim.data" in k)
    outputs = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]} for p in key.strip(".").split("...")]
    clicked = json.dumps({"recipe": recipe_id, "type": "instant-btn"}, separators=(",", ":"))
    return {"output": key, "outputs": outputs,
            "inputs": [[{"id": {"type": "instant-btn", "recipe": recipe_id}, "property": "n_clicks", "value": 1}],
                       [{"id": {"type": "generate-btn", "recipe": recipe_id}, "property": "n_clicks", "value": None}]],
            "state": [{"id": "recipes-acting-as", "property": "value", "value": acting_as}],
            "changedPropIds": [clicked + ".n_clicks"]}


def _charges_per_generation(rt) -> dict[int, int]:
    with rt.store.begin() as s:
        counts: dict[int, int] = {}
        for t in s.query(CreditTransaction).filter(CreditTransaction.kind.in_(("instant_claim", "generation"))):
            counts[t.generation_id] = counts.get(t.generation_id, 0) + 1
        return counts


def test_the_dashboard_never_claims_or_queues_for_the_system_user(plain):
    """A product session posts the Instant callback with ``acting_as = system_backlog`` (the
    page never offers it). Before the fix the item was "claimed" by its own pool owner: charged
    to the system user (who may go negative), left in the pool, and claimable — and charged —
    again. Now the claim is refused (the dashboard acts for test accounts only; the attempt is
    counted, as ``forbidden``) and nothing else changes."""
    rt, dash_app, users, recipe, _ = plain
    before = db_snapshot(rt)
    client = signed_in(dash_app, "product")
    r = client.post("/_dash-update-component", json=_instant_body(dash_app, recipe.id, SYSTEM_BACKLOG_USER_ID))
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    view = r.get_json()["response"]["recipes-claim"]["data"]
    assert view["kind"] == "error" and view["title"] == "Claim refused"
    after = db_snapshot(rt)
    assert after.pop("events") == before.pop("events") + 1            # one attempt, recorded as refused
    assert after == before
    assert recipes.available_count(rt, recipe.id) == 3

    # the domain refuses it for every face (CLI, dashboard, API), and a queued job too
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=SYSTEM_BACKLOG_USER_ID)
    assert result.status_code == 400 and result.body["errors"] == {"targetUserId": "must not be the system user"}
    queued = generations.create_user_generation(rt, user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, form_data={})
    assert queued.status_code == 400 and queued.body["errors"] == {"userId": "must not be the system user"}
    with rt.store.begin() as s:
        assert accounts.get_user(s, SYSTEM_BACKLOG_USER_ID).credits == 0
        assert accounts.ledger_mismatches(s) == []

    # a test user acting through the same callback claims once and is charged once
    user = users["user"][0]
    r = client.post("/_dash-update-component", json=_instant_body(dash_app, recipe.id, user.id))
    assert r.get_json()["response"]["recipes-claim"]["data"]["kind"] == "success"
    assert recipes.available_count(rt, recipe.id) == 2
    assert set(_charges_per_generation(rt).values()) == {1}


# --- the callbacks' own role checks, past the gate ----------------------------------------------------

@contextmanager
def _session_of(dash_app, username: str):
    """A request of ``username``'s signed-in session, as the callback sees it — the gate is not
    in the way, so only the callback's own check can refuse."""
    from pages.access import start_session

    user = auth.get_user(dash_app.server.extensions["delula"], username=username)
    with dash_app.server.test_request_context("/_dash-update-component", method="POST"):
        start_session(user.id, user.session_epoch)   # as the sign-in form does
        yield user


def _in_callback_context(func, *args, triggered: list[dict], states_list=None):
    from dash._callback_context import context_value
    from dash._utils import AttributeDict

    def run():
        context_value.set(AttributeDict(triggered_inputs=triggered, states_list=states_list or []))
        return func(*args)

    return copy_context().run(run)


def _actions(recipe_id: int, acting_as: str, job: int) -> dict:
    """Every dashboard callback that changes data, called as Dash would call it after a click.
    Value: (the call, the roles allowed)."""
    rpages = importlib.import_module("pages.recipes")
    qpages = importlib.import_module("pages.queue")
    mpages = importlib.import_module("pages.maintenance")
    save_clicked = [{"prop_id": json.dumps({"recipe": recipe_id, "type": "mt-min-save"}, separators=(",", ":"))
                     + ".n_clicks", "value": 1}]
    min_ids = [[{"id": {"type": "mt-min-input", "recipe": recipe_id}, "property": "value"}]]
    staff, ops = ("product", "ops"), ("ops",)
    return {
        "instant claim": (lambda: rpages.respond("instant", recipe_id, acting_as), staff),
        "generate": (lambda: rpages.submit_generation(1, recipe_id, acting_as, [], [], []), staff),
        "top up": (lambda: rpages.top_up(1, acting_as), staff),
        "queue retry": (lambda: qpages.act(1, {"action": "retry", "id": job}), ops),
        "queue cancel": (lambda: qpages.act(1, {"action": "cancel", "id": job}), ops),
        "run maintenance": (lambda: mpages.run_maintenance(1, 0), ops),
        "save minimum": (lambda: _in_callback_context(mpages.save_minimum, [1], [None], [7], 0,
                                                      triggered=save_clicked, states_list=min_ids), ops),
        "deactivate recipe": (lambda: _in_callback_context(mpages.set_active, [1], 0, triggered=[{
            "prop_id": json.dumps({"recipe": recipe_id, "to": "off", "type": "mt-active"}, separators=(",", ":"))
            + ".n_clicks", "value": 1}]), ops),
    }


def test_every_dashboard_action_checks_the_role_in_the_callback_itself(plain):
    from pages.access import AccessDenied

    rt, dash_app, users, recipe, _ = plain
    user = users["user"][0]
    with rt.store.begin() as s:   # one failed and one pending job for the queue actions
        failed = jobs.add_generation(s, user_id=user.id, recipe_id=recipe.id, form_data={}, meta={}, priority=0,
                                     credits_charged=0, now=rt.now(), status="failed").id
        pending = jobs.add_generation(s, user_id=user.id, recipe_id=recipe.id, form_data={}, meta={}, priority=0,
                                      credits_charged=0, now=rt.now(), status="pending").id
    actions = _actions(recipe.id, user.id, failed)
    actions["queue cancel"] = (_actions(recipe.id, user.id, pending)["queue cancel"][0], ("ops",))
    before = db_snapshot(rt)
    refused = []
    for role in ("user", "product"):
        for name, (call, allowed) in actions.items():
            if role in allowed:
                continue
            with _session_of(dash_app, f"acc_{role}"), pytest.raises(AccessDenied):
                call()
            refused.append((role, name))
    assert len(refused) == 8 + 5   # issue 13 added the recipe toggle (ops)
    assert db_snapshot(rt) == before
    assert recipe.min_backlog is None and recipes.get_recipe(rt, recipe.id).min_backlog is None

    # the same calls by a role that may: they do what they say
    with _session_of(dash_app, "acc_ops"):
        assert actions["queue retry"][0]()[2] == "success"
        assert actions["queue cancel"][0]()[2] == "success"
        assert actions["save minimum"][0]()[0].color == "success"
    with _session_of(dash_app, "acc_product"):
        assert actions["instant claim"][0]()["claim"]["kind"] == "success"
    with _session_of(dash_app, "acc_ops"):   # last: an inactive recipe is not claimable
        assert actions["deactivate recipe"][0]()[0].color == "success"
    assert generations.get_generation(rt, failed).status == "pending"
    assert generations.get_generation(rt, pending).status == "cancelled"
    assert recipes.get_recipe(rt, recipe.id).min_backlog == 7
    assert recipes.get_recipe(rt, recipe.id).is_active is False
    [toggle] = audit.events(rt, action="recipe_update")       # audited, with the ops user as actor
    assert toggle["actor"] == "acc_ops" and toggle["details"] == {"is_active": {"before": True, "after": False}}


# --- sign-in failures ---------------------------------------------------------------------------------

def test_sign_in_failures_survive_other_traffic(plain):
    """Ten wrong passwords block the name for 15 minutes (issue 13: counted in the database,
    per username); a claim by anyone meanwhile (which empties the in-process caches) used to
    forget the count and let the guessing go on."""
    rt, dash_app, users, recipe, _ = plain
    client = dash_app.server.test_client()
    for _ in range(10):
        assert login(client, "acc_product", "wrong").status_code == 401
    api = dash_app.server.test_client()
    r = api.post("/api/generate/instant", json={"recipeId": recipe.id},
                 headers={"Authorization": f"Bearer {users['user'][1]}"})
    assert r.status_code == 200                                  # a write: caches were invalidated
    r = login(client, "acc_product", "pw-product-123")
    assert r.status_code == 429 and 890 <= int(r.headers["Retry-After"]) <= 900
    assert client.post("/_dash-update-component", json={}).status_code == 401   # still signed out


def test_sign_in_failures_are_limited_per_address_over_many_names(plain):
    """Fifty failures from one address over fifty names (issue 13: the limit per address), then
    even a right password for a name never tried before is 429 from that address."""
    rt, dash_app, _, _, _ = plain
    client = dash_app.server.test_client()
    for i in range(50):
        assert login(client, f"guess_{i}", "wrong").status_code == 401
    r = login(client, "acc_ops", "pw-ops-123")
    assert r.status_code == 429
    assert client.get("/_dash-layout").status_code == 401


# --- staff act for test accounts only (issue 13) ----------------------------------------------------

def test_the_dashboard_refuses_a_real_account_in_the_callback_itself(plain):
    """The acting-as list offers test accounts only; a hand-made Instant callback for a real
    customer is refused by the callback (the attempt recorded as ``forbidden``, nothing else
    changed), and so are Generate and top-up, for product staff and ops alike."""
    rt, dash_app, users, recipe, _ = plain
    rpages = importlib.import_module("pages.recipes")
    real, _ = auth.create_user(rt, "acc_real", credits=20)
    before = db_snapshot(rt)
    for role in ("product", "ops"):
        r = signed_in(dash_app, role).post("/_dash-update-component",
                                           json=_instant_body(dash_app, recipe.id, real.id))
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        view = r.get_json()["response"]["recipes-claim"]["data"]
        assert view["kind"] == "error" and "test accounts only" in view["message"]
    for role in ("product", "ops"):
        with _session_of(dash_app, f"acc_{role}"):
            alert = rpages.submit_generation(1, recipe.id, real.id, [], [], [])[0]
            assert "test accounts only" in str(alert.children)
            is_open, message, icon, changed = rpages.top_up(1, real.id)
            assert icon == "warning" and "test accounts only" in message
    after = db_snapshot(rt)
    assert after.pop("events") == before.pop("events") + 2 and after == before
    with rt.store.begin() as s:
        refused = s.query(ClaimEvent).filter_by(user_id=real.id).all()
    assert [(e.outcome, e.actor_id) for e in refused] == [("forbidden", users["product"][0].id),
                                                           ("forbidden", users["ops"][0].id)]
    assert recipes.available_count(rt, recipe.id) == 3
    offered = {u.id for u in auth.test_users(rt)}
    assert offered == {u.id for u in auth.list_users(rt, ("user",)) if u.is_test}
    assert users["user"][0].id in offered and real.id not in offered


def test_the_audit_trail_is_for_ops_only_everywhere(plain):
    """``/audit``, its callbacks and ``GET /api/audit``: ops only. A product session gets the
    page's notice and 403 from the callbacks; a role ``user`` session is stopped at the gate."""
    rt, dash_app, users, recipe, _ = plain
    show = next(k for k in dash_app.callback_map if "audit-grid.rowData" in k)
    download = next(k for k in dash_app.callback_map if "audit-download.data" in k)
    filters = [{"id": i, "property": "value", "value": None}
               for i in ("audit-actor", "audit-action", "audit-since", "audit-until")]
    bodies = {
        show: {"output": show, "outputs": [{"id": "audit-grid", "property": "rowData"},
                                           {"id": "audit-feedback", "property": "children"}],
               "inputs": filters, "state": [], "changedPropIds": []},
        download: {"output": download, "outputs": {"id": "audit-download", "property": "data"},
                   "inputs": [{"id": "audit-download-btn", "property": "n_clicks", "value": 1}], "state": filters,
                   "changedPropIds": ["audit-download-btn.n_clicks"]},
    }
    auth.top_up(rt, users["product"][0], users["user"][0].id, 5)    # one row to read
    for role, expected in (("user", 403), ("product", 403), ("ops", 200)):
        client = signed_in(dash_app, role)
        for key, body in bodies.items():
            r = client.post("/_dash-update-component", json=body)
            assert r.status_code == expected, (role, key, r.get_data(as_text=True)[:200])
        api = client.get("/api/audit", headers={"Authorization": f"Bearer {users[role][1]}"})
        assert api.status_code == expected
    ops = signed_in(dash_app, "ops")
    rows = ops.post("/_dash-update-component", json=bodies[show]).get_json()["response"]["audit-grid"]["rowData"]
    top_ups = [(r["actor"], r["action"], r["targetUser"]) for r in rows if r["action"] == "top_up"]
    assert top_ups == [("acc_product", "top_up", "acc_user")]          # beside the sign-ins, also audited
    assert {r["action"] for r in rows} == {"top_up", "sign_in"}
    csv = ops.post("/_dash-update-component", json=bodies[download]).get_json()["response"]["audit-download"]["data"]
    assert csv["filename"].endswith(".csv") and "acc_product,u_" in csv["content"].replace('"', "")
    with _session_of(dash_app, "acc_product"):
        page = importlib.import_module("pages.audit").layout()
    assert page.id == "audit-ops-only"
    nav = [getattr(link.children, "id", None) for link in importlib.import_module("pages.layout").navbar(
        access_user(users["ops"][0])).children.children[1].children]
    assert "nav-audit" in nav
    product_nav = [getattr(link.children, "id", None) for link in importlib.import_module("pages.layout").navbar(
        access_user(users["product"][0])).children.children[1].children]
    assert "nav-audit" not in product_nav


def access_user(user):
    from pages.access import SessionUser

    return SessionUser(id=user.id, username=user.username, role=user.role)


# --- sessions that have ended ---------------------------------------------------------------------

def _end_by_signing_out(rt, dash_app, client):
    """Sign out in another session of the same user (the client holds a copy of its cookie)."""
    signed_in(dash_app, "product").post("/logout")


ENDINGS = {
    "signed out elsewhere": _end_by_signing_out,
    "new password": lambda rt, dash_app, client: auth.set_password(rt, "acc_product", "another-password"),
    "new role": lambda rt, dash_app, client: auth.set_role(rt, "acc_product", "ops"),
    "deactivated": lambda rt, dash_app, client: auth.deactivate(rt, "acc_product"),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_page_route_and_callback_refuses_a_session_that_has_ended(plain, ending):
    """A product session works everywhere; once it has ended on the server (issue 13), every
    page and ``/account`` send it to sign in, and Dash's data routes and every callback are
    401 — with the cookie it had, unchanged."""
    rt, dash_app, _, _, _ = plain
    client = signed_in(dash_app, "product")
    pages = ("/", "/recipes", "/queue", "/maintenance", "/generations/1", "/account")
    assert all(client.get(path).status_code == 200 for path in pages)
    ENDINGS[ending](rt, dash_app, client)
    before = db_snapshot(rt)
    for path in pages:
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login?next="), path
    for path in ("/_dash-layout", "/_dash-dependencies"):
        assert client.get(path).status_code == 401, path
    for key in dash_app.callback_map:
        r = client.post("/_dash-update-component", json={"output": key, "outputs": [], "inputs": [], "state": []})
        assert r.status_code == 401 and r.is_json, key
    assert db_snapshot(rt) == before


def test_metrics_are_closed_to_anonymous_and_non_ops_callers(plain):
    """``/metrics`` on the whole app (issue 13): 401 JSON without a token, even for a signed-in
    browser session (the API reads no cookie); 403 for user and product tokens; ops reads it."""
    rt, dash_app, users, recipe, _ = plain
    anonymous = dash_app.server.test_client()
    for client in (anonymous, signed_in(dash_app, "ops")):
        r = client.get("/metrics")
        assert (r.status_code, r.mimetype) == (401, "application/json") and "message" in r.get_json()
    for role, expected in (("user", 403), ("product", 403), ("ops", 200)):
        r = anonymous.get("/metrics", headers={"Authorization": f"Bearer {users[role][1]}"})
        assert r.status_code == expected, role
    assert "delula_backlog_ready" in r.get_data(as_text=True)
