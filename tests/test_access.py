"""Access control and hostile input across the whole app (API, dashboard pages, Dash callbacks,
asset routes), on the app ``app.create_app`` builds. Each refusal also checks nothing changed."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delula import auth, demo, forms, generations
from delula.storage.models import ApiToken
from tests.support.dash import callback_body, signed_in
from tests.support.db import db_snapshot

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("/", "/recipes", "/content", "/queue", "/maintenance", "/audit", "/generations/1", "/account")
SQL_META = ["'; DROP TABLE users; --", "\" OR 1=1 --", "%' OR '%'='", "\\'; SELECT pg_sleep(5); --",
            "1; DELETE FROM generations", "$$ || $$", "\x00"]


def _callback(dash_app, output_fragment: str, inputs: list[dict], state: list[dict]) -> dict:
    """The JSON body the browser posts to /_dash-update-component for the callback whose outputs
    include ``output_fragment``."""
    key = next(k for k in dash_app.callback_map if output_fragment in k)
    outputs = [{"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1]}
               for part in key.strip(".").split("...")]
    return {"output": key, "outputs": outputs, "inputs": inputs, "state": state,
            "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"]}


def test_every_api_route_refuses_the_unauthenticated(world):
    rt, dash_app, _, _ = world
    client = dash_app.server.test_client()
    before = db_snapshot(rt)
    rules = [r for r in dash_app.server.url_map.iter_rules()
             if r.rule.startswith("/api/") and "<path:" not in r.rule and r.rule != "/api/"]  # not the 404 catch-alls
    assert len(rules) >= 8
    for rule in rules:
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            r = client.open(path, method=method, json={"recipeId": 1})
            if rule.rule == "/api/openapi.json":
                assert r.status_code == 200
                continue
            assert r.status_code == 401 and r.is_json and r.get_json()["message"], (method, path)
    assert db_snapshot(rt) == before


def test_every_page_and_callback_refuses_the_unauthenticated(world):
    rt, dash_app, _, job = world
    client = dash_app.server.test_client()
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login?next="), path
    before = db_snapshot(rt)
    for key in dash_app.callback_map:
        r = client.post("/_dash-update-component", json={"output": key, "outputs": [], "inputs": [], "state": []})
        assert r.status_code == 401 and r.is_json, key
    assert db_snapshot(rt) == before


def test_staff_actions_are_checked_in_the_callback_itself(world):
    """A product session posts the ops-only queue action directly (no button on its page): the
    callback refuses and the failed job stays as it was; ops may do it."""
    rt, dash_app, users, _ = world
    with rt.store.begin() as s:
        from delula.storage import jobs

        gen = jobs.add_generation(s, user_id=users["user"][0].id, recipe_id=3, form_data={}, meta={},
                                  priority=0, credits_charged=0, now=rt.now(), status="failed")
        gen.error = "provider error"
        job = gen.id
    body = _callback(dash_app, "queue-changed.data",
                     inputs=[{"id": "queue-confirm", "property": "submit_n_clicks", "value": 1}],
                     state=[{"id": "queue-pending-action", "property": "data", "value": {"action": "retry", "id": job}}])
    before = db_snapshot(rt)
    r = signed_in(dash_app, "product").post("/_dash-update-component", json=body)
    assert r.status_code == 403 and "ops" in r.get_json()["message"]
    r = signed_in(dash_app, "user").post("/_dash-update-component", json=body)
    assert r.status_code == 403
    assert db_snapshot(rt) == before
    r = signed_in(dash_app, "ops").post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert generations.get_generation(rt, job).status == "pending"


def test_the_content_page_is_for_product_and_ops(world):
    """``/content``: signed out, to the sign-in; role user, the "no access" page and its
    callbacks refused; product and ops get the page and its data. Nothing changes."""
    rt, dash_app, _, _ = world
    route = callback_body(dash_app, "_pages_content.children", inputs=[
        {"id": "_pages_location", "property": "pathname", "value": "/content"},
        {"id": "_pages_location", "property": "search", "value": ""}], state=[])
    data = callback_body(dash_app, "ct-kpis.children", inputs=[
        {"id": "ct-interval", "property": "n_intervals"}, {"id": "ct-range", "property": "value", "value": "1h"},
        {"id": "ct-recipe", "property": "value", "value": None}],
        state=[{"id": "page-visibility", "property": "data", "value": "visible"}])
    before = db_snapshot(rt)
    anonymous = dash_app.server.test_client()
    r = anonymous.get("/content")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/content"
    for body in (route, data):
        assert anonymous.post("/_dash-update-component", json=body).status_code == 401
    user = signed_in(dash_app, "user")
    layout = user.get("/_dash-layout").get_data(as_text=True)
    assert "No access" in layout and "_pages_content" not in layout
    for body in (route, data):
        r = user.post("/_dash-update-component", json=body)
        assert r.status_code == 403 and "product and ops" in r.get_json()["message"]
    for role in ("product", "ops"):
        staff = signed_in(dash_app, role)
        page = staff.post("/_dash-update-component", json=route)
        assert page.status_code == 200 and '"content-page"' in page.get_data(as_text=True), role
        r = staff.post("/_dash-update-component", json=data)
        assert r.status_code == 200 and r.get_json()["response"]["ct-claimed"]["figure"], role
    assert db_snapshot(rt) == before


def test_a_malformed_callback_request_is_400_not_500(world):
    rt, dash_app, _, _ = world
    body = _callback(dash_app, "queue-changed.data", inputs=[{"id": "queue-confirm", "property": "submit_n_clicks",
                                                                "value": 1}], state=[])
    before = db_snapshot(rt)
    r = signed_in(dash_app, "ops").post("/_dash-update-component", json=body)
    assert r.status_code == 400 and "Malformed callback request" in r.get_json()["message"]
    assert db_snapshot(rt) == before


def test_role_user_cannot_see_others_or_act_for_them(world):
    rt, dash_app, users, job = world
    client = dash_app.server.test_client()
    _, other_token = auth.create_user(rt, "acc_other", credits=20)
    h = {"Authorization": f"Bearer {other_token}"}
    assert client.get(f"/api/generations/{job}", headers=h).status_code == 404
    assert client.get("/api/backlog", headers=h).status_code == 403
    before = db_snapshot(rt)
    r = client.post("/api/generate/instant", json={"recipeId": 1, "targetUserId": users["user"][0].id}, headers=h)
    after = db_snapshot(rt)
    assert after.pop("events") == before.pop("events") + 1     # the refused attempt is recorded (forbidden)
    assert r.status_code == 403 and after == before


def test_tokens_are_stored_hashed_and_revoked_from_the_cli(world):
    rt, dash_app, users, _ = world
    client = dash_app.server.test_client()
    user, token = users["user"]
    with rt.store.begin() as s:
        stored = [t.token_hash for t in s.query(ApiToken).filter(ApiToken.user_id == user.id)]
    assert stored == [hashlib.sha256(token.encode()).hexdigest()] and token not in stored
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    env = {**os.environ, "DELULA_DATABASE_URL": rt.settings.database_url, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "delula", "users", "revoke-token", user.username],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout) == {"username": user.username, "revoked": 1}
    r = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.is_json


@pytest.mark.parametrize("path", [
    "/generations/../../etc/passwd", "/generations/..%2F..%2Fetc%2Fpasswd", "/generations/1%00",
    "/generations/%2e%2e", "/generations/-1", "/generations/99999999999999999999999",
    "/sim/fal/files/../../../../etc/passwd/video.svg", "/sim/fal/files/x/..%2F..%2Fapp.py",
    "/sim/fal/files/%2e%2e/%2e%2e", "/assets/../app.py", "/assets/..%2Fapp.py", "/_dash-component-suites/../app.py",
])
def test_path_traversal_finds_nothing(world, path):
    rt, dash_app, _, _ = world
    client = signed_in(dash_app, "ops")
    r = client.get(path)
    body = r.get_data(as_text=True)
    assert r.status_code in (200, 302, 400, 404), (path, r.status_code)
    assert "root:x:0:0" not in body and "def create_app" not in body      # no file outside leaked
    if r.status_code == 200 and path.startswith("/generations"):
        assert r.mimetype == "text/html"                                  # the app shell; the page says not found


@pytest.mark.parametrize("evil", SQL_META)
def test_sql_meta_characters_in_every_string_field_change_nothing(world, evil):
    rt, dash_app, users, _ = world
    client = dash_app.server.test_client()
    user, token = users["ops"]
    h = {"Authorization": f"Bearer {token}"}
    before = db_snapshot(rt)
    answers = [
        client.post("/api/generate/instant", json={"recipeId": 1, "targetUserId": evil}, headers=h),
        client.post("/api/generate", json={"recipeId": 1, "formData": {evil: "x"}}, headers=h),
        client.post("/api/generate", json={"recipeId": 1, "formData": {"sport": evil}}, headers=h),
        client.get("/api/generations/" + evil, headers=h),
        client.get("/api/me", headers={"Authorization": f"Bearer {evil}"}),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500 and r.is_json, (r.status_code, r.get_data(as_text=True)[:200])
    after = db_snapshot(rt)
    assert after.pop("events") <= before.pop("events") + 1   # the claim for no such user is counted, as "invalid"
    assert after == before
    before = db_snapshot(rt)
    r = client.post("/login", data={"username": evil, "password": evil, "csrf": "x"})
    assert r.status_code in (400, 401) and db_snapshot(rt) == before
    # an Idempotency-Key is opaque data: a claim with this one works once and is replayed
    first = client.post("/api/generate/instant", json={"recipeId": 1}, headers={**h, "Idempotency-Key": evil})
    if first.status_code == 400:                                          # not a printable key (NUL)
        after = db_snapshot(rt)
        assert after.pop("events") == before.pop("events") + 1  # issue 13: one "invalid" claim event
        assert after == before
        return
    again = client.post("/api/generate/instant", json={"recipeId": 1}, headers={**h, "Idempotency-Key": evil})
    assert first.status_code == again.status_code == 200 and first.get_json() == again.get_json()


# --- properties of the form validation ------------------------------------------------------------------

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=st.sampled_from(demo.RECIPES), form=st.dictionaries(st.text(max_size=12), JSONISH, max_size=5))
def test_form_validation_accepts_only_what_the_schema_allows(recipe, form):
    """Any JSON object either validates into a form of the schema's fields only, each a
    valid value, or is refused with a FormError naming a field — never another exception."""
    variables = recipe["variables"]
    try:
        clean = forms.validate(variables, form)
    except forms.FormError as e:
        assert e.errors and all(isinstance(k, str) and isinstance(v, str) for k, v in e.errors.items())
        return
    assert set(clean) <= {v["id"] for v in variables}                       # nothing outside the schema
    assert forms.validate(variables, clean) == clean                       # a valid form stays valid


@settings(max_examples=200, deadline=None)
@given(recipe=st.sampled_from(demo.RECIPES), seed=st.integers(0, 2**32 - 1))
def test_random_forms_always_validate(recipe, seed):
    import random

    rng = random.Random(seed)
    form = {v["id"]: forms.random_value(v, rng) for v in recipe["variables"]}
    assert forms.validate(recipe["variables"], form) == form
