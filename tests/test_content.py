"""The Content page's data (``delula.content`` over ``storage.content``) on SQLite and PostgreSQL:
each aggregate's numbers exactly, the time ranges, the recipe filter, and free text never shown;
the page's figures and its callback.

The content is :func:`tests.support.content.seed_content`: in the last hour four Cat Olympics
claims (waits 60, 120, 180, 600 s; two asked for diving and got it, one asked for curling and was
handed a sprint) and two curling misses; two hours ago two Retro Product Ad claims (waits 30,
90 s) with free text, and a race asking for the 1970s; three days ago a Tiny Chef claim (an hour
in the pool) and a Siamese miss; Cat Olympics items expired two hours ago, Tiny Chef jobs rejected
half an hour ago, a Tiny Chef item expired ten days ago.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from delula import auth, content
from delula.storage import SYSTEM_BACKLOG_USER_ID
from delula.storage import content as store
from delula.storage.models import ClaimEvent, Generation
from tests.support.content import CAT, CHEF, RETRO, SECRET, seed_content


@pytest.fixture
def seeded(rt):
    seed_content(rt)
    return rt


def _values(rows, *keys):
    return [tuple(r[k] for k in ("recipeId", "field", "value", *keys)) for r in rows]


def test_each_aggregate_over_the_last_day(seeded):
    snap = content.snapshot(seeded, "24h")
    assert snap["range"]["key"] == "24h" and snap["recipeId"] is None
    assert snap["kpis"] == {"attempts": 9, "claimed": 6, "asked": 6, "missed": 4, "missRate": 4 / 6,
                            "pooled": 6, "poolP50": 105.0, "poolP95": 495.0,   # of 30, 60, 90, 120, 180, 600 s
                            "expired": 2, "rejected": 3, "wasted": 5}
    # claimed most: the items' form values, most first, each with its share of the recipe's claims
    assert _values(snap["claimed"], "claims", "share") == [
        (CAT, "breed", "tabby", 4, 1.0), (CAT, "sport", "diving", 3, 0.75), (CAT, "slowmo", False, 2, 0.5),
        (CAT, "slowmo", True, 2, 0.5), (RETRO, "decade", "80s", 2, 1.0), (RETRO, "jingle", False, 2, 1.0),
        (CAT, "sport", "sprint", 1, 0.25)]
    first = snap["claimed"][1]
    assert (first["recipe"], first["fieldLabel"], first["valueLabel"]) == ("Cat Olympics", "Event", "High diving")
    assert [r["valueLabel"] for r in snap["claimed"][2:4]] == ["off", "on"]
    # asked for and missed: curling three times (twice no item, once handed a sprint), the 1970s
    # once; diving was asked for and always got; the unaffordable gymnastics attempt is no demand
    assert _values(snap["missed"], "asked", "missed", "fellBack", "noItem", "missRate") == [
        (CAT, "sport", "curling", 3, 3, 1, 2, 1.0), (RETRO, "decade", "70s", 1, 1, 0, 1, 1.0)]
    # time in pool per recipe, most claimed first
    assert snap["poolTimes"] == [
        {"recipeId": CAT, "recipe": "Cat Olympics", "items": 4, "p50": 150.0, "p95": 537.0},
        {"recipeId": RETRO, "recipe": "Retro Product Ad", "items": 2, "p50": 60.0, "p95": 87.0}]
    assert snap["waste"] == {
        "recipes": [{"recipeId": CHEF, "recipe": "Tiny Chef", "expired": 0, "rejected": 3},
                    {"recipeId": CAT, "recipe": "Cat Olympics", "expired": 2, "rejected": 0}],
        "reasons": [{"recipeId": CAT, "recipe": "Cat Olympics", "status": "expired",
                     "reason": content.EXPIRED_REASON, "items": 2},
                    {"recipeId": CHEF, "recipe": "Tiny Chef", "status": "rejected", "reason": "too dark", "items": 2},
                    {"recipeId": CHEF, "recipe": "Tiny Chef", "status": "rejected", "reason": "watermark detected",
                     "items": 1}]}


def test_the_range_decides_what_counts(seeded):
    hour = content.snapshot(seeded, "1h")
    assert hour["kpis"] == {"attempts": 6, "claimed": 4, "asked": 5, "missed": 3, "missRate": 0.6, "pooled": 4,
                            "poolP50": 150.0, "poolP95": 537.0, "expired": 0, "rejected": 3, "wasted": 3}
    assert {r["recipeId"] for r in hour["claimed"]} == {CAT}
    assert _values(hour["missed"], "missed") == [(CAT, "sport", "curling", 3)]
    assert [r["recipeId"] for r in hour["poolTimes"]] == [CAT]
    assert [r["reason"] for r in hour["waste"]["reasons"]] == ["too dark", "watermark detected"]

    week = content.snapshot(seeded, "7d")
    # waits 30, 60, 90, 120, 180, 600, 3600 s: p95 at rank 5.7, between 600 and 3600
    assert (week["kpis"]["claimed"], week["kpis"]["poolP50"], week["kpis"]["poolP95"]) == (7, 120.0, 2700.0)
    assert (CHEF, "dish", "pizza", 1) in _values(week["claimed"], "claims")
    assert (CHEF, "mess", 4, 1) in _values(week["claimed"], "claims")
    assert week["claimed"][-2]["valueLabel"] == "🍕 Pizza"
    assert _values(week["missed"], "missed") == [(CAT, "sport", "curling", 3), (CAT, "breed", "siamese", 1),
                                                 (RETRO, "decade", "70s", 1)]
    assert week["poolTimes"][-1] == {"recipeId": CHEF, "recipe": "Tiny Chef", "items": 1, "p50": 3600.0,
                                     "p95": 3600.0}
    assert week["kpis"]["wasted"] == 5

    month = content.snapshot(seeded, "30d")
    assert (month["kpis"]["expired"], month["kpis"]["rejected"]) == (3, 3)
    assert month["waste"]["recipes"][0] == {"recipeId": CHEF, "recipe": "Tiny Chef", "expired": 1, "rejected": 3}


def test_one_recipe(seeded):
    snap = content.snapshot(seeded, "24h", RETRO)
    assert snap["recipeId"] == RETRO
    assert (snap["kpis"]["attempts"], snap["kpis"]["claimed"], snap["kpis"]["asked"], snap["kpis"]["missed"]) == \
        (3, 2, 1, 1)
    assert _values(snap["claimed"], "claims") == [(RETRO, "decade", "80s", 2), (RETRO, "jingle", False, 2)]
    assert _values(snap["missed"], "missed") == [(RETRO, "decade", "70s", 1)]
    assert snap["poolTimes"] == [{"recipeId": RETRO, "recipe": "Retro Product Ad", "items": 2, "p50": 60.0,
                                  "p95": 87.0}]
    assert (snap["kpis"]["poolP50"], snap["kpis"]["wasted"], snap["waste"]) == \
        (60.0, 0, {"recipes": [], "reasons": []})


def test_free_text_is_never_shown(seeded):
    """The product's name is free text in claimed items and in choices: no range shows it, nor
    a value a non-text field's schema does not accept (it may be anything)."""
    now = seeded.now()
    maya = auth.get_user(seeded, username="maya").id
    with seeded.store.begin() as s:
        gen = Generation(user_id=maya, recipe_id=CAT, status="completed", meta={"source": "backlog"}, priority=10,
                         form_data={"sport": "my cat Felix", "breed": "tabby", "slowmo": True},
                         created_at=now, updated_at=now, completed_at=now - timedelta(seconds=5))
        s.add(gen)
        s.flush()
        s.add(ClaimEvent(user_id=maya, recipe_id=CAT, outcome="claimed", generation_id=gen.id, latency_ms=1.0,
                         created_at=now - timedelta(seconds=1), choices={"sport": "Felix's own idea"}, matched=False))
    seeded.invalidate()
    for key in content.RANGES:
        for recipe_id in (None, RETRO, CAT):
            text = json.dumps(content.snapshot(seeded, key, recipe_id))
            assert SECRET not in text and "Felix" not in text and '"product"' not in text, (key, recipe_id)
    assert (CAT, "breed", "tabby", 5) in _values(content.snapshot(seeded, "1h")["claimed"], "claims")


def test_the_storage_reads_only_the_fields_allowed(seeded):
    """Without a field in ``allowed`` nothing of it is read; with the free-text field allowed (as
    the domain never does) the storage would count it: the rule is the domain's."""
    now = seeded.now()
    day = now - timedelta(days=1)
    with seeded.store.begin() as s:
        assert store.claimed_values(s, day, now, []) == []
        assert store.claimed_values(s, day, now, [(RETRO, "decade")]) == [(RETRO, "decade", '"80s"', 2)]
        assert store.claimed_values(s, day, now, [(RETRO, "product")]) == [(RETRO, "product", json.dumps(SECRET), 2)]
        assert store.missed_values(s, day, now, [(CAT, "sport")], limit=1) == [(CAT, "sport", '"curling"', 3, 3, 1)]
        assert store.demand_counts(s, day, now, CAT) == {CAT: (6, 4, 5, 3)}
        assert store.pool_times(s, now - timedelta(minutes=1), now, (0.5, 0.95)) == []


def test_an_empty_range_and_bad_filters(rt):
    auth.ensure_system_user(rt)
    snap = content.snapshot(rt, "1h")
    assert snap["kpis"] == {"attempts": 0, "claimed": 0, "asked": 0, "missed": 0, "missRate": None, "pooled": 0,
                            "poolP50": None, "poolP95": None, "expired": 0, "rejected": 0, "wasted": 0}
    assert (snap["claimed"], snap["missed"], snap["poolTimes"]) == ([], [], [])
    assert content.snapshot(rt)["range"]["key"] == content.snapshot(rt, "")["range"]["key"] == content.DEFAULT_RANGE
    for bad in ("2h", "'; DROP TABLE claim_events; --", ["1h"]):
        with pytest.raises(content.ContentError, match="unknown time range"):
            content.snapshot(rt, bad)
    for bad in ("1", True, 1.5):
        with pytest.raises(content.ContentError, match="recipe id"):
            content.snapshot(rt, "1h", bad)


def test_the_top_is_bounded(rt):
    """Thirty recipes each wasting items: the lists stop at the top 20, the totals do not."""
    from delula import recipes

    auth.ensure_system_user(rt)
    now = rt.now()
    ids = [recipes.create_recipe(rt, name=f"Recipe {i}", credit_cost=1).id for i in range(30)]
    with rt.store.begin() as s:
        for i, rid in enumerate(ids):
            for k in range(i + 1):
                s.add(Generation(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=rid, status="rejected", form_data={},
                                 meta={"source": "backlog"}, priority=10, error=f"reason {k % 25}",
                                 created_at=now, updated_at=now - timedelta(minutes=1)))
    snap = content.snapshot(rt, "1h")
    assert snap["kpis"]["rejected"] == sum(range(1, 31))
    assert len(snap["waste"]["recipes"]) == content.TOP and snap["waste"]["recipes"][0]["recipeId"] == ids[-1]
    assert len(snap["waste"]["reasons"]) == content.TOP


# --- the page ---------------------------------------------------------------------------------------------

@pytest.fixture
def content_page(world):
    import importlib

    rt = world[0]
    seed_content(rt)
    return world, importlib.import_module("pages.content")


def test_the_figures_draw_the_snapshot(content_page):
    (rt, *_), page = content_page
    snap = content.snapshot(rt, "24h")
    claimed = page.claimed_figure(snap)
    by_recipe = {t["name"]: t for t in claimed["data"]}
    assert set(by_recipe) == {"Cat Olympics", "Retro Product Ad"}
    assert by_recipe["Cat Olympics"]["y"][0] == "Cat Olympics · Cat: Tabby" and by_recipe["Cat Olympics"]["x"][0] == 4
    assert by_recipe["Retro Product Ad"]["text"] == ["100 %", "100 %"]
    assert claimed["layout"]["yaxis"]["categoryarray"][-1] == "Cat Olympics · Cat: Tabby"   # drawn on top
    missed = {t["name"]: t["x"] for t in page.missed_figure(snap)["data"]}
    assert missed == {"no item ready": [2, 1], "handed another item": [1, 0]}
    pool = page.pool_figure(snap)
    assert pool["layout"]["xaxis"]["title"]["text"].startswith("minutes")
    assert [t["x"] for t in pool["data"]] == [[2.5, 1.0], [537 / 60, 87 / 60]]
    assert pool["data"][0]["y"] == ["Cat Olympics (4)", "Retro Product Ad (2)"]
    waste = {t["name"]: t["x"] for t in page.waste_figure(snap)["data"]}
    assert waste == {"expired": [0, 2], "rejected": [3, 0]}
    reasons = {t["name"]: t["y"] for t in page.reasons_figure(snap)["data"]}
    assert reasons == {"expired": ["Cat Olympics · not claimed in time"],
                       "rejected": ["Tiny Chef · too dark", "Tiny Chef · watermark detected"]}
    one = content.snapshot(rt, "24h", RETRO)
    assert page.claimed_figure(one)["data"][0]["y"] == ["Decade: 1980s", "Jingle: off"]


def test_empty_charts_say_what_would_be_there(content_page):
    (rt, *_), page = content_page
    snap = content.snapshot(rt, "1h", 7)   # Skate Trick Replay: nothing at all
    for gid, build in page.BUILDERS.items():
        fig = build(snap)
        assert fig["data"] == [] and "last hour" in fig["layout"]["annotations"][0]["text"], gid


def _texts(node) -> list:
    """Every text and number in a Dash component tree as JSON (a callback's answer)."""
    if isinstance(node, (str, int, float)) and not isinstance(node, bool):
        return [node]
    if isinstance(node, list):
        return [t for n in node for t in _texts(n)]
    if isinstance(node, dict):
        return _texts(node.get("props", {}).get("children")) if "props" in node else []
    return []


def test_the_callback_answers_staff(content_page):
    from tests.support.dash import callback_body, signed_in

    (rt, dash_app, *_), _ = content_page
    body = callback_body(dash_app, "ct-kpis.children", inputs=[
        {"id": "ct-range", "property": "value", "value": "7d"}, {"id": "ct-interval", "property": "n_intervals"},
        {"id": "ct-recipe", "property": "value", "value": None}],
        state=[{"id": "page-visibility", "property": "data", "value": "visible"}])
    body["inputs"] = [body["inputs"][1], body["inputs"][0], body["inputs"][2]]   # the callback's order
    r = signed_in(dash_app, "product").post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    answer = r.get_json()["response"]
    assert _texts(answer["ct-kpis"]["children"])[:3] == ["Claims", 7, "of 11 attempts that reached the pool, last 7 days"]
    assert {t["name"] for t in answer["ct-claimed"]["figure"]["data"]} == {"Cat Olympics", "Retro Product Ad",
                                                                           "Tiny Chef"}
    assert SECRET not in r.get_data(as_text=True)
    # a hand-made range falls back to the default
    body["inputs"][1]["value"] = "forever"
    r = signed_in(dash_app, "ops").post("/_dash-update-component", json=body)
    assert r.status_code == 200
    assert _texts(r.get_json()["response"]["ct-kpis"]["children"])[2].endswith("last 24 hours")
