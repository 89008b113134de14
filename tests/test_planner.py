"""The demand planner: traces, the discrete-event simulator and the clairvoyant oracle."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from delula import forms, planner
from delula.planner import oracle, simulation, traces


def test_package_imports_no_storage_or_web_stack():
    code = ("import sys, delula.planner; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'alembic', 'psycopg', 'psycopg2', 'pages') or m.startswith(("
            "'delula.storage', 'delula.api', 'delula.cli', 'delula.scheduler'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, expected", [("steady", 4.0), ("burst", 4.0 * (1 + 9 * 30 / 1440 * 3 / 7 / 20))])
def test_flat_traces_mean_rate(name, expected):
    tr = traces.make(name, 7, seed=3)
    rate = len(tr) / (7 * 1440)
    # burst: one recipe (share ≥ 1/72) at 10× for 30 min three times a week — a little above 4
    if name == "burst":
        assert 4.0 * 0.95 < rate < 4.0 * 1.15
    else:
        assert rate == pytest.approx(expected, rel=0.05)
    assert tr.recipes == [f"recipe-{i:02d}" for i in range(1, 21)]
    assert np.all(np.diff(tr.times) >= 0)


def test_diurnal_curve_and_weekends():
    hours = np.arange(0, 24, 1 / 60)
    curve = traces.diurnal_rate(hours)
    assert curve.min() == pytest.approx(1.5, abs=0.01)
    assert curve.max() == pytest.approx(9.0, abs=0.01)
    assert curve.mean() == pytest.approx(4.6, abs=0.15)
    assert 3 <= hours[curve.argmin()] <= 4 and hours[curve.argmax()] == pytest.approx(20, abs=0.1)
    tr = traces.make("diurnal", 7, seed=1)
    day = (tr.times // 86400).astype(int)
    weekday = np.sum(day < 5) / 5 / 1440
    weekend = np.sum(day >= 5) / 2 / 1440
    assert weekday == pytest.approx(curve.mean(), rel=0.05)
    assert weekend / weekday == pytest.approx(0.7, rel=0.07)


def test_zipf_shares():
    tr = traces.make("steady", 7, seed=2)
    counts = np.bincount(tr.recipe, minlength=20)
    assert counts[0] / counts[1] == pytest.approx(2.0, rel=0.1)
    assert counts[0] / counts[9] == pytest.approx(10.0, rel=0.2)


def test_launch_recipe_ramps_to_a_third():
    tr = traces.make("launch", 11, seed=1)
    assert tr.recipes[-1] == "recipe-21"
    new = tr.recipe == 20
    assert not np.any(tr.times[new] < 9 * 86400)
    day10 = (tr.times >= 10 * 86400) & (tr.times < 11 * 86400)
    assert np.mean(new[day10]) == pytest.approx(1 / 3, rel=0.1)


def test_make_is_seeded_and_rejects_unknown_names():
    a, b = traces.make("burst", 3, seed=5), traces.make("burst", 3, seed=5)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.recipe, b.recipe)
    with pytest.raises(ValueError, match="unknown trace"):
        traces.make("nope", 1, 1)


def test_read_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("minute,recipe,attempts\n0,alpha,3\n1,brand-new,2\n5,alpha,0\n")
    tr = traces.read_csv(str(p))
    assert tr.recipes == ["alpha", "brand-new"]
    assert len(tr) == 5
    assert np.all(tr.times[tr.recipe == 0] < 60) and np.all((tr.times[tr.recipe == 1] >= 60) & (tr.times[tr.recipe == 1] < 120))
    for text, msg in [("minute,recipe\n0,a\n", "header"), ("minute,recipe,attempts\nx,a,1\n", ":2: minute must be a whole number"),
                      ("minute,recipe,attempts\n0,a,1\n1,b,-1\n", ":3: attempts must be a whole number >= 0"),
                      ("minute,recipe,attempts\n0,a,1.5\n", "attempts must be a whole number"),
                      ("minute,recipe,attempts\n0,a\n", "attempts must be a whole number"),
                      ("minute,recipe,attempts\n0,a,1,9\n", "not a CSV"),
                      ("minute,recipe,attempts\n0,,1\n", "recipe name is empty"),
                      ("", "header")]:
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            traces.read_csv(str(p))


def test_csv_trace_with_unknown_recipe_runs(tmp_path):
    p = tmp_path / "rec.csv"
    rows = ["minute,recipe,attempts"] + [f"{m},totally-unknown,{m % 3}" for m in range(0, 2880)]
    p.write_text("\n".join(rows) + "\n")
    out = planner.run(str(p), days=1, warmup_days=1)
    res = out["policies"]["static"]
    assert res["attempts"] == sum(m % 3 for m in range(1440, 2880))
    assert set(res["missesByRecipe"]) == {"totally-unknown"}
    json.dumps(out)


def _short(name="diurnal", seed=1):
    return traces.make(name, 2, seed)


def test_simulate_result_shape_and_determinism():
    tr = _short()
    a = simulation.simulate(tr, "reactive", days_scored=1, warmup_days=1, seed=7)
    b = simulation.simulate(tr, "reactive", days_scored=1, warmup_days=1, seed=7)
    assert a == b
    assert {"attempts", "hits", "hitRate", "generations", "work", "expired", "meanStock",
            "stockItemHours", "missesByRecipe"} <= set(a)
    assert a["attempts"] == np.sum(tr.times >= 86400)
    assert a["hits"] + sum(a["missesByRecipe"].values()) == a["attempts"]
    assert a["work"] >= a["generations"] and a["meanStock"] > 0
    assert a["stockItemHours"] == pytest.approx(a["meanStock"] * 24)
    assert len(a["series"]) == 24
    json.dumps(a)


def test_static_pool_sits_at_minimum_when_idle():
    tr = traces.Trace("empty", ["a", "b"], np.zeros(0), np.zeros(0, dtype=np.int64))
    r = simulation.simulate(tr, "static", days_scored=1, warmup_days=1)
    assert r["meanStock"] == pytest.approx(6.0)
    assert r["generations"] == 0 and r["attempts"] == 0


def test_items_expire():
    tr = traces.Trace("empty", ["a"], np.zeros(0), np.zeros(0, dtype=np.int64))
    r = simulation.simulate(tr, "static", days_scored=1, warmup_days=1, max_age_h=6.0, failure_rate=0.0)
    assert r["expired"] == 12          # 3 items every 6 hours, rebuilt
    assert r["generations"] == 12


def test_reactive_holds_more_with_long_lead_times():
    tr = _short("steady")
    kw = dict(days_scored=1, warmup_days=1, lead_time=(60.0, 240.0), concurrency=20)
    s = simulation.simulate(tr, "static", **kw)
    r = simulation.simulate(tr, "reactive", **kw)
    assert r["meanStock"] > s["meanStock"]
    assert r["hitRate"] >= s["hitRate"]


def test_progress_and_unknown_policy():
    seen = []
    simulation.simulate(_short(), "static", days_scored=1, warmup_days=1, progress=seen.append)
    assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
    with pytest.raises(ValueError, match="unknown backlog policy"):
        simulation.simulate(_short(), "nope", days_scored=1, warmup_days=1)


@pytest.mark.parametrize("name", ["steady", "diurnal", "burst"])
def test_oracle_bounds_every_policy(name):
    tr = _short(name, seed=4)
    kw = dict(days_scored=1, warmup_days=1, concurrency=1, lead_time=(20.0, 60.0))
    o = oracle.oracle(tr, **kw)
    for p in ("static", "reactive", "forecast"):
        r = simulation.simulate(tr, p, **kw)
        assert o["hitRate"] >= r["hitRate"]
        assert o["generations"] <= r["generations"] or o["hitRate"] > r["hitRate"]


def test_greedy_matches_brute_force():
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(0, 8)
        c = rng.randint(1, 3)
        L = rng.choice([1.0, 2.0, 3.5])
        t0 = rng.choice([0.0, 1.0])
        times = [round(rng.uniform(0, 8), 1) for _ in range(n)]
        assert oracle.max_served(times, c, L, t0) == oracle.brute_force(times, c, L, t0), (times, c, L, t0)


def test_the_stock_bound_limits_the_oracle_and_stays_a_bound():
    # 1 slot, 10 s jobs, five attempts at once at t=100: unbounded stock serves all five; at most
    # three waiting items (the bound plus the slot's slack) serve three
    assert oracle.max_served([100] * 5, 1, 10.0) == 5
    assert oracle.max_served_stocked([100] * 5, 1, 10.0, 3) == 3
    # it never beats the unbounded fluid: with room to spare it is the capacity bound
    assert oracle.max_served_stocked([30, 30, 30], 1, 10.0, 100) == 3
    assert oracle.max_served_stocked([], 2, 10.0, 5) == 0
    # against brute force with unbounded stock it is never below the exact answer
    rng = random.Random(3)
    for _ in range(200):
        times = [round(rng.uniform(0, 8), 1) for _ in range(rng.randint(0, 8))]
        c, L = rng.randint(1, 3), rng.choice([1.0, 2.0, 3.5])
        assert oracle.max_served_stocked(times, c, L, len(times) + c) >= oracle.brute_force(times, c, L)


def test_the_oracle_bounds_every_policy_when_capacity_is_short():
    tr = traces.launch(2, seed=2, added=0.5)
    kw = dict(days_scored=1, warmup_days=1, concurrency=2, lead_time=(5.0, 40.0), max_backlog=5)
    o = oracle.oracle(tr, **kw)
    results = {p: simulation.simulate(tr, p, series=False, **kw) for p in ("static", "reactive", "forecast")}
    assert o["hitRate"] < 1
    assert all(o["hitRate"] >= r["hitRate"] for r in results.values()), (o, results)
    assert all(o["generations"] <= r["work"] for r in results.values())


def test_run_report():
    out = planner.run("steady", days=1, warmup_days=1)
    assert out["trace"] == "steady" and out["days"] == 1
    assert set(out["policies"]) == {"static", "reactive", "forecast"}
    assert set(out["oracle"]) == {"hitRate", "generations"}
    assert out["oracle"]["hitRate"] >= max(p["hitRate"] for p in out["policies"].values())
    json.dumps(out)


def test_tradeoff_runs_each_level_once_and_reuses_what_is_done():
    tr = _short("diurnal", seed=2)
    kw = dict(days=1, warmup_days=1, concurrency=2)
    done = planner.run(tr, "forecast", service_level=0.98, **kw)["policies"]["forecast"]
    seen = []
    out = planner.tradeoff(tr, [0.5, 0.98], done={0.98: done}, progress=seen.append, **kw)
    assert [p["serviceLevel"] for p in out] == [0.5, 0.98]
    assert out[1]["hitRate"] == done["hitRate"] and out[1]["generations"] == done["generations"]
    assert seen[-1] == 1.0 and seen == sorted(seen)


# --- choices ---------------------------------------------------------------------------------------

CAT = '"{""animal"": ""bengal cat"", ""sport"": ""pole vault""}"'


def test_read_csv_with_a_choices_column(tmp_path):
    p = tmp_path / "asked.csv"
    p.write_text("minute,recipe,attempts,choices\n"
                 f"0,cats,3,{CAT}\n"
                 "1,cats,2,\n"                                  # empty: no choices
                 "2,cats,1,{}\n"                                # an empty object: no choices either
                 '3,dogs,2,"{""good"": true, ""size"": 2}"\n'
                 "4,cats,1\n")                                 # the column left out: no choices
    tr = traces.read_csv(str(p))
    assert tr.has_choices and tr.recipes == ["cats", "dogs"] and len(tr) == 9
    minute = (tr.times // 60).astype(int).tolist()
    asked = dict(zip(range(len(tr)), tr.choices))
    assert [asked[i] for i in range(len(tr)) if minute[i] == 0] == [{"animal": "bengal cat", "sport": "pole vault"}] * 3
    assert all(asked[i] is None for i in range(len(tr)) if minute[i] in (1, 2, 4))
    assert [asked[i] for i in range(len(tr)) if minute[i] == 3] == [{"good": True, "size": 2}] * 2
    # a recipe known only by its choices: a field per name, of the values seen
    assert tr.schemas["cats"] == [
        {"id": "animal", "label": "animal", "type": "dropdown", "required": True,
         "options": [{"label": "bengal cat", "value": "bengal cat"}]},
        {"id": "sport", "label": "sport", "type": "dropdown", "required": True,
         "options": [{"label": "pole vault", "value": "pole vault"}]}]
    assert [f["type"] for f in tr.schemas["dogs"]] == ["toggle", "dropdown"]
    for schema in tr.schemas.values():
        forms.check_schema(schema)
    # the column present but never filled: a trace without choices
    p.write_text("minute,recipe,attempts,choices\n0,a,1,\n1,a,2,\n")
    assert not traces.read_csv(str(p)).has_choices


@pytest.mark.parametrize("row, message", [
    ("0,a,1,{not json}", ":3: choices must be a JSON object"),
    ('0,a,1,"{""animal"": ""cat"""', ":3: choices must be a JSON object"),
    ('0,a,1,"[""cat""]"', ":3: choices must be a JSON object"),
    ("0,a,1,42", ":3: choices must be a JSON object"),
    ('0,a,1,"{""animal"": [""cat""]}"', ":3: choices must map field names to strings, numbers or booleans"),
    ('0,a,1,"{""animal"": null}"', ":3: choices must map"),
    ('0,a,1,"{""speed"": NaN}"', ":3: choices must map"),
    ('0,a,1,"{"""": 1}"', ":3: choices must map"),
    ("0,a,1,,extra", "not a CSV"),
])
def test_bad_choices_name_the_line(tmp_path, row, message):
    p = tmp_path / "bad.csv"
    p.write_text(f"minute,recipe,attempts,choices\n1,a,1,\n{row}\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        traces.read_csv(str(p))


def test_a_fourth_column_must_be_choices(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("minute,recipe,attempts,wishes\n0,a,1,\n")
    with pytest.raises(ValueError, match="header must be exactly 'minute,recipe,attempts' \\(optionally ',choices'\\)"):
        traces.read_csv(str(p))


def test_the_built_in_choices_trace():
    tr = traces.make("choices", 7, seed=1)
    assert tr.has_choices and tr.recipes == list(traces.CHOICE_RECIPES) and "choices" in traces.NAMES
    rate = len(tr) / (7 * 1440)
    assert rate == pytest.approx(traces.CHOICE_RATE_FACTOR * 4.6 * (5 + 2 * 0.7) / 7, rel=0.06)
    shares = np.bincount(tr.recipe) / len(tr)
    assert shares == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=0.02)
    for name, schema in tr.schemas.items():
        forms.check_schema(schema)
    kinds = Counter()
    for r, asked in zip(tr.recipe.tolist(), tr.choices):
        schema = tr.schemas[tr.recipes[r]]
        if asked is None:
            kinds["none"] += 1
            continue
        assert forms.validate_choices(schema, asked) == asked
        kinds["one" if len(asked) == 1 else "all"] += 1
    assert kinds["all"] / len(tr) == pytest.approx(0.65, abs=0.02)
    assert kinds["one"] / len(tr) == pytest.approx(0.20, abs=0.02)
    # correlated: among attempts for a whole Animal Olympics pair, the cat mostly pole-vaults
    pairs = Counter(tuple(c.values()) for r, c in zip(tr.recipe.tolist(), tr.choices) if r == 0 and c and len(c) == 2)
    cat = sum(n for (animal, _), n in pairs.items() if animal == "bengal cat")
    assert pairs[("bengal cat", "pole vault")] / cat > 0.75
    again = traces.make("choices", 7, seed=1)
    assert again.choices == tr.choices and np.array_equal(again.times, tr.times)


def test_an_attempt_with_choices_takes_only_an_item_that_has_them():
    """Half the attempts ask for a value the recipe's schema does not offer: no item ever has it,
    so they all miss, while the attempts without choices take whatever is oldest."""
    schema = [{"id": "animal", "label": "Animal", "type": "dropdown", "required": True,
               "options": [{"label": "Cat", "value": "cat"}, {"label": "Dog", "value": "dog"}]}]
    times = np.arange(60.0, 2 * 86400.0, 600.0)
    unicorn = {"animal": "unicorn"}
    asked = [unicorn if i % 2 else None for i in range(len(times))]
    tr = traces.Trace("unmet", ["zoo"], times, np.zeros(len(times), dtype=np.int64), choices=asked,
                      schemas={"zoo": schema})
    r = simulation.simulate(tr, "static", days_scored=1, warmup_days=1, failure_rate=0.0)
    scored = int(np.sum(times >= 86400))
    assert r["attempts"] == scored and r["choiceAttempts"] == scored // 2
    assert r["choiceHits"] == 0 and r["choiceHitRate"] == 0.0
    assert r["hits"] == scored - scored // 2          # every attempt without choices is served
    # asked for a value the schema offers, and nothing explored: every item is made for it
    asked = [{"animal": "dog"} if i % 2 else None for i in range(len(times))]
    tr.choices = asked
    r = simulation.simulate(tr, "static", days_scored=1, warmup_days=1, failure_rate=0.0, exploration=0.0)
    assert r["choiceHits"] == r["choiceAttempts"] == scored // 2


def test_joint_draws_serve_more_choices_than_per_field_draws_on_the_built_in_trace():
    out = planner.run("choices", ["static", "forecast"], days=1, warmup_days=1, seed=2)
    for name, r in out["policies"].items():
        assert {"choiceAttempts", "choiceHits", "choiceHitRate", "marginal"} <= set(r)
        assert r["choiceHits"] <= r["hits"] <= r["attempts"] and r["choiceAttempts"] < r["attempts"]
        assert r["marginal"]["choiceAttempts"] == r["choiceAttempts"]
        assert set(r["marginal"]) == set(planner.MARGINAL_KEYS)
        assert r["choiceHitRate"] > 1.3 * r["marginal"]["choiceHitRate"], (name, r)
        assert r["hitRate"] > r["marginal"]["hitRate"]
    json.dumps(out)
    # without choices the report is as it was
    plain = planner.run("steady", "static", days=0.25, warmup_days=0)["policies"]["static"]
    assert not {"choiceAttempts", "choiceHitRate", "marginal"} & set(plain)
