"""The dashboard's data and callbacks, called directly on real databases (SQLite and PostgreSQL).

``delula.overview.snapshot`` is checked number by number against seeded activity
(``tests.support.factories.seed_activity``); the overview's and the maintenance page's shaping
functions and callbacks run inside a Flask request of the real app, signed in through the session.
"""
from __future__ import annotations

import importlib
import json
import re
from contextlib import contextmanager
from contextvars import copy_context
from datetime import datetime, timedelta, timezone

import pytest

from delula import auth, backlog, demo, jobruns, overview, recipes
from delula.clock import ManualClock
from delula.storage import pool
from tests.support.factories import (CLAIMS, FAILED_BACKLOG, FAILED_USER, IN_FLIGHT, NORMAL_GENERATIONS, PROCESSING_S,
                                     READY, seed_activity)

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    return ManualClock(NOW)


@pytest.fixture
def seeded(db_url, make_runtime, clock):
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    seed_activity(rt)
    return rt


def _percentile(values: list[float], fraction: float) -> float:
    """``percentile_cont``: linear interpolation between the closest ranks."""
    v = sorted(values)
    rank = fraction * (len(v) - 1)
    low = int(rank)
    high = min(low + 1, len(v) - 1)
    return v[low] + (v[high] - v[low]) * (rank - low)


def _processing_times() -> list[float]:
    pool_items = [6 + 9 * i + 3 * rid for rid, n in READY.items() for i in range(n)]
    return [float(x) for x in list(PROCESSING_S) + pool_items]


# --- delula.overview.snapshot ----------------------------------------------------------------------

def test_snapshot_counts_the_seeded_hour(seeded):
    snap = overview.snapshot(seeded, "1h")
    k = snap["kpis"]
    assert k["backlogTotal"] == sum(READY.values()) == 20
    assert k["inFlightTotal"] == sum(IN_FLIGHT.values())
    assert k["recipesBelowMinimum"] == 2 and k["recipesTotal"] == 7
    assert k["pending"] == sum(IN_FLIGHT.values()) + NORMAL_GENERATIONS
    assert k["processing"] == 0
    assert k["claimsLastHour"] == CLAIMS["claimed"]
    assert k["claimAttemptsLastHour"] == sum(CLAIMS.values())
    assert k["failedClaimsLastHour"] == sum(CLAIMS.values()) - CLAIMS["claimed"]
    completed = len(PROCESSING_S) + sum(READY.values())
    assert (k["completedInRange"], k["failedInRange"]) == (completed, FAILED_BACKLOG + FAILED_USER)
    assert k["errorRate"] == pytest.approx(3 / (completed + 3))

    # one bucket per minute, from the minute holding now - 1 h to the minute holding now
    assert len(snap["buckets"]) == 61
    assert snap["buckets"][0] == "2026-03-10T11:00:00Z" and snap["buckets"][-1] == "2026-03-10T12:00:00Z"
    for series in (*snap["claims"].values(), *snap["generations"].values(), *snap["failures"].values(),
                   *snap["queue"].values()):
        assert len(series) == 61

    assert {o: sum(v) for o, v in snap["claims"].items()} == CLAIMS
    # the first claim was made 3 min 10 s ago: 11:57:20 is in the 11:57 bucket
    assert snap["claims"]["claimed"][snap["buckets"].index("2026-03-10T11:57:00Z")] == 1
    assert sum(snap["generations"]["instant"]) == CLAIMS["claimed"]
    assert sum(snap["generations"]["normal"]) == NORMAL_GENERATIONS + len(PROCESSING_S) + FAILED_USER
    assert sum(snap["failures"]["backlog"]) == FAILED_BACKLOG and sum(snap["failures"]["user"]) == FAILED_USER
    assert sum(snap["failures"]["claims"]) == sum(CLAIMS.values()) - CLAIMS["claimed"]

    # 120 samples 30 s apart: two per minute bucket, averaged; the rest of the hour has none
    sampled = [v for v in snap["queue"]["pending"] if v is not None]
    assert 59 <= len(sampled) <= 61
    assert all(1 <= v <= 7 for v in sampled)
    assert all(16 <= v <= 24 for v in snap["queue"]["backlog"] if v is not None)


def test_processing_distribution_and_percentiles(seeded):
    p = overview.snapshot(seeded, "1h")["processing"]
    times = _processing_times()
    assert p["count"] == len(times)
    assert p["p50"] == pytest.approx(_percentile(times, 0.5), abs=0.01)
    assert p["p95"] == pytest.approx(_percentile(times, 0.95), abs=0.01)
    edges = list(overview.PROCESSING_EDGES)
    expected = [0] * len(edges)
    for t in times:
        expected[max(i for i, e in enumerate(edges) if t >= e)] += 1
    assert [b["count"] for b in p["bins"]] == expected
    assert p["bins"][0]["from"] == 0 and p["bins"][-1]["to"] is None


def test_ranges_bucket_sizes_and_old_data(seeded, clock):
    with seeded.store.begin() as s:  # a claim two hours ago: outside the hour, inside the day
        pool.record_event(s, user_id=None, recipe_id=1, outcome="claimed", generation_id=None, latency_ms=1.0,
                          now=NOW - timedelta(hours=2))
    seeded.invalidate()
    hour, day, week = (overview.snapshot(seeded, key) for key in ("1h", "24h", "7d"))
    assert sum(hour["claims"]["claimed"]) == CLAIMS["claimed"]
    assert sum(day["claims"]["claimed"]) == sum(week["claims"]["claimed"]) == CLAIMS["claimed"] + 1
    assert day["range"]["bucketSeconds"] == 900 and len(day["buckets"]) == 97
    assert week["range"]["bucketSeconds"] == 7200 and len(week["buckets"]) == 85
    # the tiles' hour stays an hour whatever the range
    assert day["kpis"]["claimsLastHour"] == CLAIMS["claimed"]
    with pytest.raises(overview.OverviewError):
        overview.snapshot(seeded, "2w")


def test_recipe_filter_narrows_everything_but_health(seeded):
    everything = overview.snapshot(seeded, "1h")
    tiny_chef = overview.snapshot(seeded, "1h", 2)
    assert [r["recipeId"] for r in tiny_chef["recipes"]] == [2]
    assert tiny_chef["kpis"]["backlogTotal"] == READY[2]
    assert tiny_chef["kpis"]["recipesBelowMinimum"] == 1
    assert sum(tiny_chef["failures"]["backlog"]) == FAILED_BACKLOG  # both failed backlog jobs are recipe 2's
    assert sum(tiny_chef["failures"]["user"]) == 0
    assert sum(map(sum, tiny_chef["claims"].values())) < sum(map(sum, everything["claims"].values()))
    assert tiny_chef["health"] == everything["health"]  # the banner is about the whole system
    with pytest.raises(overview.OverviewError):
        overview.snapshot(seeded, "1h", "2")


def test_snapshot_is_cached_until_invalidated(seeded):
    first = overview.snapshot(seeded, "1h")
    with seeded.store.begin() as s:
        pool.record_event(s, user_id=None, recipe_id=1, outcome="race", generation_id=None, latency_ms=1.0,
                          now=NOW - timedelta(seconds=5))
    assert overview.snapshot(seeded, "1h") is first
    seeded.invalidate("overview")
    assert sum(overview.snapshot(seeded, "1h")["claims"]["race"]) == CLAIMS["race"] + 1


def test_health_names_every_problem(db_url, make_runtime, clock):
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    seed_activity(rt, leader=False)
    health = overview.snapshot(rt, "1h")["health"]
    assert not health["ok"] and not health["hasLeader"]
    kinds = [p["kind"] for p in health["problems"]]
    assert kinds[0] == "no_leader" and kinds.count("below_minimum") == 2
    assert {p["recipeId"] for p in health["problems"] if p["kind"] == "below_minimum"} == {2, 6}
    assert "Tiny Chef: 1 ready, minimum 3" in health["problems"][1]["message"]


def test_a_quiet_system_is_all_zeros(rt):
    demo.seed(rt)
    snap = overview.snapshot(rt, "24h")
    assert snap["kpis"]["errorRate"] is None and snap["kpis"]["backlogTotal"] == 0
    assert (snap["processing"]["count"], snap["processing"]["p50"], snap["processing"]["p95"]) == (0, None, None)
    assert all(v is None for v in snap["queue"]["pending"])
    assert not any(sum(v) for v in snap["claims"].values())
    assert snap["health"]["belowMinimum"] == 7


# --- the pages' shaping functions and callbacks --------------------------------------------------------

@pytest.fixture
def dash_app(seeded):
    import app as app_module

    return app_module.create_app(seeded, start_scheduler=False)


@pytest.fixture
def pages(dash_app):
    """The page modules as the app executed them (Dash imports pages itself)."""
    class Pages:
        overview = importlib.import_module("pages.overview")
        maintenance = importlib.import_module("pages.maintenance")

    return Pages


@contextmanager
def signed_in(dash_app, username: str):
    from pages.access import start_session

    user = auth.get_user(dash_app.server.extensions["delula"], username=username)
    with dash_app.server.test_request_context("/_dash-update-component", method="POST"):
        start_session(user.id, user.session_epoch)   # as the sign-in form does
        yield user


def _text(component) -> str:
    """All the text in a Dash component tree."""
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    if isinstance(component, (list, tuple)):
        return " ".join(_text(c) for c in component)
    return _text(getattr(component, "children", None))


def test_overview_figures_draw_every_chart(seeded, pages):
    snap = overview.snapshot(seeded, "1h")
    built = pages.overview.build_figures(snap)
    assert built["order"] == list(pages.overview.GRAPHS)
    figures = built["figures"]
    for gid, fig in figures.items():
        assert fig["data"], f"{gid} drew nothing"
        json.dumps(fig)  # it travels as JSON
    backlog = figures["ov-backlog"]
    ready, in_flight, target, minimum = backlog["data"]
    assert [t["name"] for t in backlog["data"]] == ["ready", "in flight", "target", "minimum"]
    names = ready["y"]
    red = {n for n, c in zip(names, ready["marker"]["color"]) if c == pages.overview.COLORS["below"]}
    assert red == {"Tiny Chef", "Claymation Weather"}
    assert sum(ready["x"]) == 20 and sum(in_flight["x"]) == 3
    assert any("Tiny Chef" in t and "color" in t for t in backlog["layout"]["yaxis"]["ticktext"])
    for gid in ("ov-queue", "ov-claims", "ov-instant", "ov-failures"):  # drawn in the viewer's time zone
        assert figures[gid]["layout"]["meta"] == {"localTime": True}
        assert figures[gid]["data"][0]["x"][0].endswith("Z")
    claim_names = {t["name"] for t in figures["ov-claims"]["data"]}
    assert claim_names == {"claimed", "no backlog", "race lost", "insufficient credits"}
    processing = figures["ov-processing"]
    assert sum(processing["data"][0]["y"]) == len(_processing_times())
    assert [a["text"].split()[0] for a in processing["layout"]["annotations"]] == ["p50", "p95"]


def test_overview_empty_charts_explain_themselves(rt, pages):
    demo.seed(rt)
    figures = pages.overview.build_figures(overview.snapshot(rt, "1h"))["figures"]
    for gid in ("ov-queue", "ov-claims", "ov-instant", "ov-failures", "ov-processing"):
        fig = figures[gid]
        assert fig["data"] == []
        assert "last hour" in fig["layout"]["annotations"][0]["text"]
    assert figures["ov-backlog"]["data"]  # seven recipes, all at zero, still drawn
    assert figures["ov-hit-rate"]["data"] == []
    assert "No instant attempts" in figures["ov-hit-rate"]["layout"]["annotations"][0]["text"]
    assert pages.overview.hit_rate_tile(overview.snapshot(rt, "1h")).children.children[1].children == "—"


def test_the_hit_rate_in_the_snapshot_and_its_chart(seeded, pages):
    snap = overview.snapshot(seeded, "24h")
    h = snap["hitRate"]
    assert h["lastHour"] == {"attempts": 14, "hits": 10, "hitRate": pytest.approx(10 / 14)} == h["lastDay"]
    lines = h["series"]["lines"]
    assert lines[0]["name"] == "all recipes" and sum(lines[0]["attempts"]) == 14 and sum(lines[0]["hits"]) == 10
    assert len(h["series"]["buckets"]) in (24, 25) and 1 < len(lines) <= 1 + overview.HIT_RATE_TOP
    assert sum(sum(line["attempts"]) for line in lines[1:]) <= 14
    fig = pages.overview.hit_rate_figure(snap)
    assert [t["name"] for t in fig["data"]] == [line["name"] for line in lines]
    assert fig["layout"]["yaxis"]["tickformat"] == ".0%" and fig["layout"]["meta"] == {"localTime": True}

    # one recipe: its own line and its own rates
    rid = lines[1]["recipeId"]
    one = overview.snapshot(seeded, "1h", rid)["hitRate"]
    assert [line["recipeId"] for line in one["series"]["lines"]] == [rid]
    assert one["lastHour"]["attempts"] == sum(lines[1]["attempts"])


def test_overview_tiles_and_banner(seeded, pages):
    snap = overview.snapshot(seeded, "1h")
    tiles = pages.overview.kpi_tiles(snap, max_concurrent=3)
    texts = [_text(t) for t in tiles]
    assert len(texts) == 7
    assert texts[0].startswith("Backlog ready 20") and "3 in flight" in texts[0]
    assert "Below minimum 2" in texts[1] and "of 7 recipes" in texts[1]
    assert "Processing 0" in texts[3] and "0 of 3 slots in use" in texts[3]
    assert "Claims last hour 10" in texts[4] and "6 refused" in texts[4]
    assert "Error rate 8.6 %" in texts[5] and "3 of 35 jobs failed" in texts[5]
    # hits over attempts that reached the pool: 10 claimed of 10 + 3 no backlog + 1 race
    assert "Instant hit rate 71 %" in texts[6] and "10 of 14 last hour" in texts[6] and "last day 71 % of 14" in texts[6]
    banner = pages.overview.health_banner(snap)
    assert banner.color == "warning" and "2 recipes below minimum" in _text(banner)
    assert pages.overview.percent(None) == "—" and pages.overview.percent(0.25) == "25 %"


def test_overview_refresh_callback(dash_app, pages):
    with signed_in(dash_app, "admin"):
        tiles, banner, figures, updated, alert_panel = pages.overview.refresh(3, "24h", 1)
    assert len(tiles) == 7 and "Backlog ready 5" in _text(tiles[0])
    assert figures["figures"]["ov-backlog"]["data"][0]["y"] == ["Cat Olympics"]
    assert updated.dateTime == "2026-03-10T12:00:30Z"
    assert _text(alert_panel) == "Alerts firing now, and resolved in the last 24 h No alerts"
    with signed_in(dash_app, "admin"):  # a hand-made bad range falls back to the default
        assert pages.overview.refresh(0, "bogus", None)[2]["figures"]


def test_overview_alerts_panel_lists_firing_then_recently_resolved(seeded, pages):
    from delula.storage import alerts as store_alerts

    def condition(rule, summary):
        return {"rule": rule, "recipe_id": None, "summary": summary, "value": 1.0, "threshold": 1.0}

    with seeded.store.begin() as s:
        store_alerts.fire_at_once(s, "breaker_open", condition("breaker_open", "the breaker is open"),
                                  now=NOW - timedelta(minutes=5))
        store_alerts.fire_at_once(s, "failure_rate", condition("failure_rate", "6 of 12 jobs failed"),
                                  now=NOW - timedelta(hours=3))
        store_alerts.resolve(s, "failure_rate", now=NOW - timedelta(hours=2))
        store_alerts.fire_at_once(s, "hit_rate", condition("hit_rate", "long ago"), now=NOW - timedelta(days=3))
        store_alerts.resolve(s, "hit_rate", now=NOW - timedelta(days=2))
    snap = overview.snapshot(seeded, "1h")
    assert [a["key"] for a in snap["alerts"]["firing"]] == ["breaker_open"]
    assert [a["key"] for a in snap["alerts"]["resolved"]] == ["failure_rate"]      # not the one of two days ago
    text = " ".join(_text(pages.overview.alerts_panel(snap)).split())
    assert "firing Provider circuit breaker open since 2026-03-10 11:55:30 UTC the breaker is open" in text
    assert "resolved Job failure rate high resolved 2026-03-10 10:00:30 UTC 6 of 12 jobs failed" in text
    assert "No alerts" not in text and "long ago" not in text


def test_maintenance_helpers(pages):
    m = pages.maintenance
    assert m.parse_minimum("") is None and m.parse_minimum(None) is None
    assert m.parse_minimum("4") == 4 and m.parse_minimum(7) == 7 and m.parse_minimum(2.0) == 2
    for bad in ("-1", "1001", "2.5", "many"):
        with pytest.raises(ValueError, match="whole number"):
            m.parse_minimum(bad)
    ok = {"outcome": "ok", "durationMs": 12.0,
          "result": {"created": {2: 2, 6: 1}, "createdTotal": 3, "cleanedUp": 1}}
    color, text = m.run_summary(ok, {2: "Tiny Chef", 6: "Claymation Weather"})
    assert color == "success"
    assert text == ("Maintenance ran in 12 ms and created 3 backlog jobs: Tiny Chef +2, Claymation Weather +1."
                    " Cleaned up 1 old failed job.")
    assert m.run_summary({"outcome": "ok", "durationMs": 3, "result": {"created": {}}}, {})[0] == "secondary"
    assert m.run_summary({"outcome": "error", "durationMs": 3, "error": "boom"}, {}) == \
        ("danger", "Maintenance failed after 3 ms: boom")
    now = datetime(2026, 3, 10, 12, 0, 30, tzinfo=timezone.utc)
    job = {"interval": 60, "nextRun": None, "lastRun": {"startedAt": "2026-03-10T11:58:00Z"}}
    assert m.next_run(job, now) == ("2026-03-10T12:01:00Z", True)
    assert m.next_run({**job, "nextRun": "2026-03-10T12:00:40Z"}, now) == ("2026-03-10T12:00:40Z", False)
    assert m.next_run({"interval": None, "nextRun": None, "lastRun": None}, now) == (None, False)
    assert m.detail_text({"createdTotal": 3, "created": {"2": 3}}) == "createdTotal 3 · created 2: 3"


def _run_in_callback_context(func, *args, triggered: list[dict], states_list=None):
    """Call a callback that reads ``dash.ctx`` the way Dash's docs test them."""
    from dash._callback_context import context_value
    from dash._utils import AttributeDict

    def run():
        context_value.set(AttributeDict(triggered_inputs=triggered, states_list=states_list or []))
        return func(*args)

    return copy_context().run(run)


def test_run_maintenance_now_is_for_ops_and_reports_what_it_created(dash_app, pages, seeded):
    from pages.access import AccessDenied

    auth.create_user(seeded, "pat", role="product", password="pw-product", with_token=False)
    with signed_in(dash_app, "pat"), pytest.raises(AccessDenied, match="role ops"):
        pages.maintenance.run_maintenance(1, 0)
    recipes.set_min_backlog(seeded, 1, 8)  # Cat Olympics: 5 ready, now wants 8
    with signed_in(dash_app, "admin"):
        alert, version = pages.maintenance.run_maintenance(1, 4)
    assert version == 5 and alert.color == "success"
    # Tiny Chef (1 ready + 2 in flight) and Claymation Weather (2 + 1) are at their targets already
    assert re.fullmatch(r"Maintenance ran in .+ and created 3 backlog jobs: Cat Olympics \+3\.", alert.children)
    runs = jobruns.recent_runs(seeded, 1)
    assert runs[0]["job"] == "backlog-maintenance" and runs[0]["detail"]["createdTotal"] == 3
    with signed_in(dash_app, "admin"):
        leader_card, jobs_table, runs_table = pages.maintenance.refresh_status(1, 5)
    assert "worker-1" in _text(leader_card) and "4242" in _text(leader_card)
    assert "backlog-maintenance" in _text(jobs_table) and "ok" in _text(runs_table)


def test_recipes_are_switched_on_and_off_by_ops_only(dash_app, pages, seeded):
    """The maintenance page's toggle (issue 13): every recipe with its state; the buttons work
    for ops only (checked in the callback); the change is audited with the ops user as actor."""
    from pages.access import AccessDenied

    from delula import audit

    m = pages.maintenance
    off = [{"prop_id": json.dumps({"recipe": 2, "to": "off", "type": "mt-active"}, separators=(",", ":"))
            + ".n_clicks", "value": 1}]
    auth.create_user(seeded, "pat", role="product", password="pw-product", with_token=False)
    with signed_in(dash_app, "pat"):
        table = m.refresh_active(0)
        assert "Tiny Chef" in _text(table) and "Deactivate" in _text(table)
        with pytest.raises(AccessDenied):
            _run_in_callback_context(m.set_active, [1], 0, triggered=off)
    assert recipes.get_recipe(seeded, 2).is_active
    with signed_in(dash_app, "admin"):
        alert, version = _run_in_callback_context(m.set_active, [1], 0, triggered=off)
        assert (alert.color, version) == ("success", 1) and "Tiny Chef is inactive" in alert.children
        assert "inactive" in _text(m.refresh_active(1)) and "Activate" in _text(m.refresh_active(1))
    assert not recipes.get_recipe(seeded, 2).is_active
    assert 2 not in {r["recipeId"] for r in backlog.status(seeded)}       # not refilled
    [row] = audit.events(seeded, action="recipe_update")
    assert row["actor"] == "admin" and row["details"] == {"is_active": {"before": True, "after": False}}


def test_minimum_overrides_are_saved_by_ops_only(dash_app, pages, seeded):
    from pages.access import AccessDenied

    save = pages.maintenance.save_minimum
    ids = [{"id": {"type": "mt-min-input", "recipe": rid}, "property": "value"} for rid in range(1, 8)]
    values = [None, 6, None, None, None, None, 2]
    clicked = [{"prop_id": json.dumps({"recipe": 2, "type": "mt-min-save"}, separators=(",", ":")) + ".n_clicks",
                "value": 1}]
    auth.create_user(seeded, "pat", role="product", password="pw-product", with_token=False)
    with signed_in(dash_app, "pat"), pytest.raises(AccessDenied):
        _run_in_callback_context(save, [None, 1], [None] * 7, values, 0, triggered=clicked, states_list=[ids])
    assert recipes.get_recipe(seeded, 2).min_backlog is None

    with signed_in(dash_app, "admin"):
        alert, version = _run_in_callback_context(save, [None, 1], [None] * 7, values, 0,
                                                  triggered=clicked, states_list=[ids])
    assert (alert.color, version) == ("success", 1) and "Tiny Chef: minimum set to 6" in alert.children
    assert recipes.get_recipe(seeded, 2).min_backlog == 6
    row = next(r for r in backlog.status(seeded) if r["recipeId"] == 2)
    assert row["minimum"] == 6 and row["target"] == 6

    bad = [None, "-3", None, None, None, None, 2]
    with signed_in(dash_app, "admin"):
        alert, version = _run_in_callback_context(save, [None, 2], [None] * 7, bad, 1,
                                                  triggered=clicked, states_list=[ids])
    assert alert.color == "danger" and "whole number" in alert.children
    assert recipes.get_recipe(seeded, 2).min_backlog == 6  # unchanged

    reset = [{"prop_id": json.dumps({"recipe": 2, "type": "mt-min-reset"}, separators=(",", ":")) + ".n_clicks",
              "value": 1}]
    with signed_in(dash_app, "admin"):
        alert, _ = _run_in_callback_context(save, [None] * 7, [None, 1], values, 1,
                                            triggered=reset, states_list=[ids])
    assert "back to the default (3)" in alert.children
    assert recipes.get_recipe(seeded, 2).min_backlog is None


# --- the sign-in gate, over HTTP ------------------------------------------------------------------------

def _login(client, username: str, password: str, next_: str = "/"):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": username, "password": password, "csrf": token, "next": next_})


def test_sign_in_gate(dash_app, seeded):
    client = dash_app.server.test_client()
    r = client.get("/queue?status=failed")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/queue%3Fstatus%3Dfailed"
    for path in ("/_dash-layout", "/_dash-dependencies"):
        r = client.get(path)
        assert r.status_code == 401 and "Sign in required" in r.get_json()["message"]
    r = client.post("/_dash-update-component", json={"output": "ov-kpis.children", "inputs": []})
    assert r.status_code == 401 and r.is_json
    assert client.get("/api/me").status_code == 401  # the API keeps its bearer tokens
    assert client.get("/assets/delula.css").status_code == 200

    auth.create_user(seeded, "olga", role="ops", password="pw-ops", with_token=False)
    r = _login(client, "olga", "wrong")
    assert r.status_code == 401 and "Wrong username or password." in r.get_data(as_text=True)
    r = _login(client, "olga", "pw-ops", next_="https://evil.example/")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    assert client.get("/_dash-dependencies").status_code == 200


def test_sign_in_roles_and_rate_limit(dash_app, seeded):
    auth.create_user(seeded, "ulla", role="user", password="pw-user", with_token=False)
    auth.create_user(seeded, "pat", role="product", password="pw-product", with_token=False)
    client = dash_app.server.test_client()
    r = _login(client, "pat", "pw-product", next_="/maintenance")
    assert r.status_code == 302 and r.headers["Location"] == "/maintenance"
    assert client.get("/_dash-layout").status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.post("/logout").headers["Location"] == "/login?signed_out=1"
    assert client.post("/_dash-update-component", json={}).status_code == 401

    # role user: signed in, the layout is the "no access" page, callbacks are refused
    client = dash_app.server.test_client()
    assert _login(client, "ulla", "pw-user").status_code == 302
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert "No access" in layout and "_pages_content" not in layout
    r = client.post("/_dash-update-component", json={})
    assert r.status_code == 403 and "product and ops" in r.get_json()["message"]

    # ten wrong passwords for one name, then 429 even with the right one, for the rest of the
    # 15 minutes' window (issue 13: counted per username in the database)
    client = dash_app.server.test_client()
    for _ in range(10):
        assert _login(client, "pat", "nope").status_code == 401
    r = _login(client, "pat", "pw-product")
    assert r.status_code == 429 and "Too many failed sign-ins" in r.get_data(as_text=True)
    assert 890 <= int(r.headers["Retry-After"]) <= 900
    assert _login(client, "admin", "still-wrong").status_code == 401  # another name is not blocked


def test_sign_in_form_needs_its_csrf_token(dash_app):
    client = dash_app.server.test_client()
    client.get("/login")
    r = client.post("/login", data={"username": "admin", "password": "x", "csrf": "forged"})
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)


def test_safe_next():
    from pages.login import safe_next

    assert safe_next("/queue?status=failed") == "/queue?status=failed"
    for bad in (None, "", "https://evil.example/", "//evil.example", "/\\evil", "/login", "/logout", "queue"):
        assert safe_next(bad) == "/"


def test_a_fresh_app_is_warm_before_its_first_request(seeded):
    """Dash finishes its server set-up on the first request, flagging it done before the callback
    map is filled; simultaneous first callbacks on a fresh gunicorn worker then answer 500
    (plotly/dash#3971). create_app runs that set-up itself, so no request ever finds it half done."""
    import app as app_module

    fresh = app_module.create_app(seeded, start_scheduler=False)
    assert fresh._got_first_request["setup_server"]
    outputs = " ".join(fresh.callback_map)
    assert "ov-kpis.children" in outputs and "recipe" in outputs


# --- the 7-day range from the hourly roll-up ------------------------------------------------------------

def _week_of_activity(rt, start: datetime, rng) -> None:
    """Claim events, completions (with processing times), failures and users' jobs spread over
    eight days before ``start``, some without a recipe or a start time."""
    from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs

    user, _ = auth.create_user(rt, "weekly", credits=10)
    a = recipes.create_recipe(rt, name="Week A", credit_cost=1)
    b = recipes.create_recipe(rt, name="Week B", credit_cost=1)
    outcomes = ["claimed", "claimed", "no_backlog", "race", "insufficient_credits", "invalid"]
    rows = []
    with rt.store.begin() as s:
        for i in range(400):
            at = start - timedelta(minutes=rng.randrange(8 * 24 * 60), seconds=rng.randrange(60))
            recipe = rng.choice([a.id, b.id, b.id])
            pool.record_event(s, user_id=user.id, recipe_id=None if i % 50 == 0 else recipe,
                              outcome=rng.choice(outcomes), generation_id=None, latency_ms=1.0, now=at)
            took = timedelta(seconds=rng.choice([3, 7.5, 14.2, 15, 29.9, 61, 200, 479, 600]) + rng.random())
            kind = rng.choice(["backlog", "user", "failed_backlog", "failed_user"])
            owner = SYSTEM_BACKLOG_USER_ID if kind.endswith("backlog") else user.id
            row = dict(user_id=owner, recipe_id=recipe, form_data={}, priority=10,
                       meta={"source": "backlog" if owner == SYSTEM_BACKLOG_USER_ID else "user"},
                       created_at=at - took - timedelta(seconds=30), updated_at=at)
            if kind.startswith("failed"):
                row.update(status="failed", error="boom")
            else:
                row.update(status="completed", completed_at=at, started_at=None if i % 40 == 0 else at - took)
            rows.append(row)
        jobs.add_generations(s, rows, start)


def _exact(rt, now: datetime, range_key: str, recipe_id=None):
    """What the rolled-up range must show, from the raw per-bucket queries (exact percentiles);
    totals from the hour holding the range's start."""
    from delula.storage import dashboard

    rng = overview.RANGES[range_key]
    first = datetime.fromtimestamp(overview.bucket_starts(now, rng)[0], tz=timezone.utc)
    since = (now - rng.span).replace(minute=0, second=0, microsecond=0)
    with rt.store.begin() as s:
        claims = dashboard.claim_series(s, first, rng.bucket_s, recipe_id)
        normal = dashboard.user_generation_series(s, first, rng.bucket_s, recipe_id)
        failures = dashboard.failure_series(s, first, rng.bucket_s, recipe_id)
        finished = dashboard.finished_counts(s, since, recipe_id)
        histogram = dashboard.processing_histogram(s, since, list(overview.PROCESSING_EDGES), recipe_id)
        n, pcts = dashboard.processing_percentiles(s, since, (0.5, 0.95), recipe_id)
    return claims, normal, failures, finished, histogram, n, pcts


def _shown(snap):
    buckets = [int(datetime.fromisoformat(b.replace("Z", "+00:00")).timestamp()) for b in snap["buckets"]]
    claims = sorted((buckets[i], o, n) for o, series in snap["claims"].items() for i, n in enumerate(series) if n)
    normal = sorted((buckets[i], n) for i, n in enumerate(snap["generations"]["normal"]) if n)
    failures = sorted((buckets[i], src, n) for src in ("backlog", "user")
                      for i, n in enumerate(snap["failures"][src]) if n)
    bins = {i: b["count"] for i, b in enumerate(snap["processing"]["bins"]) if b["count"]}
    k, p = snap["kpis"], snap["processing"]
    return claims, normal, failures, (k["completedInRange"], k["failedInRange"]), bins, p["count"], (p["p50"], p["p95"])


@pytest.mark.parametrize("range_key, recipe_filter", [("7d", False), ("7d", True), ("24h", False), ("24h", True)])
def test_a_rolled_up_range_matches_the_raw_tables(db_url, make_runtime, range_key, recipe_filter):
    import random

    clock = ManualClock(NOW)
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    _week_of_activity(rt, NOW, random.Random(11))
    recipe_id = recipes.list_recipes(rt)[-1].id if recipe_filter else None
    raw_only = _shown(overview.snapshot(rt, range_key, recipe_id))      # nothing rolled up yet: all raw

    runs = []
    while not runs or runs[-1]["hoursRolled"]:
        runs.append(overview.roll_up(rt))
    # from a week and two hours before 12:00:30, whole hours, up to 11:00 (the last hour closed
    # two minutes ago), at most a day per run
    assert [r["hoursRolled"] for r in runs] == [24] * 7 + [1, 0]
    rt.invalidate()
    rolled = _shown(overview.snapshot(rt, range_key, recipe_id))

    claims, normal, failures, finished, histogram, n, (p50, p95) = _exact(rt, NOW, range_key, recipe_id)
    assert rolled[:6] == raw_only[:6] == (
        sorted(claims), sorted(normal), sorted(failures), (finished["completed"], finished["failed"]),
        histogram, n)
    assert rolled[6] == raw_only[6]
    # percentiles from duration buckets: within the bucket's width (12 % from 16 s up, a second below)
    assert rolled[6][0] == pytest.approx(p50, rel=0.12, abs=1.0)
    assert rolled[6][1] == pytest.approx(p95, rel=0.12, abs=1.0)
    assert n > (100 if range_key == "7d" else 5) and len(claims) > (50 if range_key == "7d" else 5)


def test_the_roll_up_waits_for_closed_hours_and_never_counts_twice(db_url, make_runtime):
    from delula.storage import dashboard

    clock = ManualClock(NOW)                       # 12:00:30
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Late", credit_cost=1)

    def claim_at(t):
        with rt.store.begin() as s:
            pool.record_event(s, user_id=None, recipe_id=recipe.id, outcome="claimed", generation_id=None,
                              latency_ms=1.0, now=t)

    def week_claims():
        rt.invalidate()
        return sum(overview.snapshot(rt, "7d")["claims"].get("claimed", []))

    while overview.roll_up(rt)["hoursRolled"]:
        pass
    with rt.store.begin() as s:                    # 11:00-12:00 closed less than two minutes ago
        assert dashboard.rolled_until(s) == datetime(2026, 3, 10, 11, tzinfo=timezone.utc)
    claim_at(NOW - timedelta(minutes=5))           # 11:55:30, in the hour not yet rolled up
    claim_at(NOW)                                  # the open hour
    assert overview.roll_up(rt)["hoursRolled"] == 0 and week_claims() == 2
    clock.advance(120)                             # 12:02:30: 11:00-12:00 is closed for good
    assert overview.roll_up(rt) == {"hoursRolled": 1, "rows": 2, "until": "2026-03-10T12:00:00Z",
                                    "rowsPruned": 0}
    assert overview.roll_up(rt)["hoursRolled"] == 0 and week_claims() == 2
    clock.advance(3600)
    assert overview.roll_up(rt)["hoursRolled"] == 1 and week_claims() == 2
    with rt.store.begin() as s:
        from delula.storage.models import StatCount

        rows = {(r.at.hour, r.recipe_id, r.metric, r.key): r.n for r in s.query(StatCount)}
    assert rows == {(11, recipe.id, "claim", "claimed"): 1, (11, 0, "claim", "claimed"): 1,
                    (12, recipe.id, "claim", "claimed"): 1, (12, 0, "claim", "claimed"): 1}


# --- completions by duration bucket (migration 0019) --------------------------------------------------

def test_duration_buckets_bound_the_rows_and_the_percentiles_error():
    """The buckets hold the histogram's edges, are whole seconds below 16 s and at most 1.118×
    wide above; a percentile read from them stays within 12 % (or a second) of the duration at
    its rank for times spread like real jobs (seconds to minutes), and a whole-second bucket
    reads as before."""
    import random

    from delula.storage import dashboard

    edges = dashboard.DURATION_EDGES
    assert set(overview.PROCESSING_EDGES) <= set(edges) and len(edges) == 117
    assert list(edges[:17]) == list(range(17))
    assert max(b / a for a, b in zip(edges, edges[1:]) if a >= 16) < 1.118
    rng = random.Random(3)
    for _ in range(20):
        times = [min(3000.0, rng.lognormvariate(4.0, 0.9)) for _ in range(rng.randrange(1, 400))]
        counts: dict = {}
        for t in times:
            key = dashboard.duration_key(__import__("bisect").bisect_right(edges, int(t)) - 1)
            bounds = dashboard.duration_bounds(key)
            counts[bounds] = counts.get(bounds, 0) + 1
        n, (p50, p95) = overview._percentiles_of_buckets(counts, (0.5, 0.95))
        assert n == len(times)
        for got, f in ((p50, 0.5), (p95, 0.95)):
            at_rank = sorted(times)[int(f * (len(times) - 1))]
            assert got == pytest.approx(at_rank, rel=0.12, abs=1.0)
    assert overview._percentiles_of_buckets({(7, 8): 2}, (0.5,)) == (2, [7.5])
    assert dashboard.duration_bounds("-") is None and dashboard.duration_bounds("84990") == (84990, None)
    assert dashboard.duration_bounds("18") == (18, 19)          # a whole second off the grid: its bucket


def test_migration_0019_merges_whole_seconds_into_buckets_and_goes_back(db_url, make_runtime):
    from sqlalchemy import inspect, text

    from delula import storage
    from delula.storage.models import StatCount
    from tests.test_storage import _downgrade

    rt = make_runtime(db_url)
    head = storage.current_revision(rt.store)
    _downgrade(rt.store, "0018")
    at = datetime(2026, 3, 10, 11, tzinfo=timezone.utc)
    old = {"3": 2, "17": 1, "18": 4, "100": 1, "107": 2, "-": 3}
    with rt.store.begin() as s:
        assert "ix_stat_counts_recipe_metric_at" not in {i["name"] for i in inspect(s.connection()).get_indexes("stat_counts")}
        s.execute(StatCount.__table__.insert(), [{"at": at, "recipe_id": 0, "metric": "completed", "key": k, "n": n}
                                                 for k, n in old.items()]
                  + [{"at": at, "recipe_id": 0, "metric": "claim", "key": "claimed", "n": 9}])
    storage.upgrade(rt.store)
    assert storage.current_revision(rt.store) == head
    with rt.store.begin() as s:
        rows = {(r.metric, r.key): r.n for r in s.query(StatCount)}
        indexes = {i["name"] for i in inspect(s.connection()).get_indexes("stat_counts")}
    assert rows == {("completed", "3"): 2, ("completed", "17"): 5, ("completed", "99"): 3, ("completed", "-"): 3,
                    ("claim", "claimed"): 9}
    assert "ix_stat_counts_recipe_metric_at" in indexes
    _downgrade(rt.store, "0018")
    with rt.store.begin() as s:
        assert "ix_stat_counts_recipe_metric_at" not in {i["name"] for i in inspect(s.connection()).get_indexes("stat_counts")}
        assert s.execute(text("SELECT count(*) FROM stat_counts")).scalar() == 5
    storage.upgrade(rt.store)
    assert storage.current_revision(rt.store) == head


def test_the_maintenance_tables_show_a_page_of_recipes_at_a_time(seeded, dash_app, pages):
    """Hundreds of recipes are not built as thousands of components: the minimums and the
    recipes tables show :data:`PAGE_ROWS` at a time, with page links once there is more than one page."""
    m = pages.maintenance
    for i in range(m.PAGE_ROWS + 5):
        recipes.create_recipe(seeded, name=f"Paged {i:02d}", credit_cost=1)
    everything = backlog.status(seeded)
    assert len(everything) > m.PAGE_ROWS
    assert m.page_of(list(range(30)), 9) == (list(range(25, 30)), 2, 2)
    assert m.page_of([], None) == ([], 1, 1)
    with signed_in(dash_app, "admin"):
        table, _, pages_n, page, cls = m.refresh_minimums(0, 1)
        assert (pages_n, page) == (-(-len(everything) // m.PAGE_ROWS), 1) and "d-none" not in cls
        assert len(table.children[1].children) == m.PAGE_ROWS
        second, *_ = m.refresh_minimums(0, 2)
        shown = _text(second)
        assert everything[m.PAGE_ROWS]["name"] in shown and everything[0]["name"] not in shown
        active, active_pages, _, _ = m.refresh_active(0, 2)
        assert active_pages == 2 and len(active.children[1].children) == len(recipes.list_recipes(
            seeded, active_only=False)) - m.PAGE_ROWS
