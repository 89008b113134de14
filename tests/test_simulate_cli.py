"""``python -m delula simulate`` as a user runs it: real subprocesses, built-in and CSV traces,
and recorded demand replayed from a real database."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from delula import auth, recipes
from delula.clock import ManualClock
from delula.storage import pool

ROOT = Path(__file__).resolve().parents[1]
POLICY_KEYS = {"attempts", "hits", "hitRate", "generations", "work", "expired", "meanStock", "stockItemHours",
               "missesByRecipe"}


def _simulate(*args, url=None, expect=0, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if url:
        env["DELULA_DATABASE_URL"] = url
    proc = subprocess.run([sys.executable, "-m", "delula", "simulate", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return proc


def test_every_policy_and_the_oracle_in_one_json_document():
    proc = _simulate("--trace", "diurnal", "--policy", "all", "--days", "0.5", "--warmup-days", "0.5", "--json")
    doc = json.loads(proc.stdout)
    assert set(doc) == {"trace", "days", "policies", "oracle"}
    assert doc["trace"] == "diurnal" and doc["days"] == 0.5
    assert set(doc["policies"]) == {"static", "reactive", "forecast"}
    for result in doc["policies"].values():
        assert set(result) == POLICY_KEYS
        assert result["hits"] <= result["attempts"] and 0 <= result["hitRate"] <= 1
        assert result["work"] >= result["generations"]
        assert sum(result["missesByRecipe"].values()) == result["attempts"] - result["hits"]
    assert set(doc["oracle"]) == {"hitRate", "generations"}
    assert doc["oracle"]["hitRate"] >= max(r["hitRate"] for r in doc["policies"].values())
    assert "simulate diurnal" in proc.stderr          # the progress bar


def test_a_csv_trace_with_a_recipe_nobody_configured_runs(tmp_path):
    path = tmp_path / "shop.csv"
    rows = ["minute,recipe,attempts"] + [f"{m},{'Night Owl' if m % 3 else 'brand new'},{1 + m % 2}"
                                         for m in range(0, 2 * 1440, 7)]
    path.write_text("\n".join(rows) + "\n")
    proc = _simulate("--trace", str(path), "--policy", "forecast", "--days", "1", "--warmup-days", "1",
                     "--concurrency", "2", "--lead-time", "10-30", "--failure-rate", "0", "--service-level", "0.9",
                     "--max-age-h", "24", "--seed", "7", "--fallback-rate", "0.5", "--json")
    doc = json.loads(proc.stdout)
    assert doc["trace"] == "shop"
    result = doc["policies"]["forecast"]
    assert set(result["missesByRecipe"]) == {"Night Owl", "brand new"}
    assert result["attempts"] > 100


def test_a_table_without_json():
    out = _simulate("--trace", "steady", "--policy", "static", "--days", "0.25", "--warmup-days", "0").stdout
    assert "trace steady" in out and "POLICY" in out and "oracle" in out and "static" in out


@pytest.mark.parametrize("args, message", [
    (["--trace", "nowhere.csv"], "unknown trace"),
    (["--policy", "clairvoyant"], "invalid choice"),
    (["--concurrency", "0"], "at least 1"),
    (["--lead-time", "40-5"], "MIN <= MAX"),
    (["--failure-rate", "1.5"], "between 0 and 1"),
    (["--service-level", "1"], "above 0 and below 1"),
    (["--days", "-1"], "between 0 and 366"),
    (["--max-age-h", "0"], "positive"),
])
def test_bad_options_exit_2_with_a_message(args, message):
    proc = _simulate(*args, expect=2)
    assert message in proc.stderr


def test_a_bad_csv_exits_2_naming_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("minute,recipe,attempts\n0,a,1\n1,a,lots\n")
    proc = _simulate("--trace", str(path), expect=2)
    assert "bad.csv:3: attempts must be a whole number" in proc.stderr


def test_a_trace_with_choices_reports_the_choice_hit_rate_beside_the_per_field_baseline(tmp_path):
    doc = json.loads(_simulate("--trace", "choices", "--policy", "static", "--days", "0.5", "--warmup-days", "0.5",
                               "--exploration", "0.2", "--json").stdout)
    result = doc["policies"]["static"]
    assert set(result) == POLICY_KEYS | {"choiceAttempts", "choiceHits", "choiceHitRate", "sampler", "marginal"}
    assert result["sampler"] == "joint" and 0 < result["choiceAttempts"] < result["attempts"]
    assert result["choiceHitRate"] == result["choiceHits"] / result["choiceAttempts"]
    assert result["marginal"]["choiceAttempts"] == result["choiceAttempts"]
    assert result["choiceHitRate"] > result["marginal"]["choiceHitRate"]
    table = _simulate("--trace", "choices", "--policy", "static", "--days", "0.25", "--warmup-days", "0").stdout
    assert "CHOICE HIT RATE" in table and "MARGINAL" in table
    # a CSV trace with choices: recipes known only by what was asked of them
    path = tmp_path / "asked.csv"
    rows = ["minute,recipe,attempts,choices"] + [
        f'{m},Animal Olympics,1,"{{""animal"": ""{"bengal cat" if m % 3 else "corgi"}""}}"' for m in range(0, 1440, 4)]
    path.write_text("\n".join(rows) + "\n")
    doc = json.loads(_simulate("--trace", str(path), "--policy", "static", "--days", "0.5", "--warmup-days", "0.5",
                               "--json").stdout)
    assert doc["trace"] == "asked" and doc["policies"]["static"]["choiceAttempts"] == 180


def test_bad_choices_in_a_csv_exit_2_naming_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('minute,recipe,attempts,choices\n0,a,1,"{""animal"": ""cat""}"\n1,a,1,{cat}\n')
    proc = _simulate("--trace", str(path), expect=2)
    assert "bad.csv:3: choices must be a JSON object" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_recorded_demand_replays_from_the_database(pg_url, make_runtime):
    """Misses recorded by real claims come back as the replay's attempts (the command reads the
    last days up to the real clock, so the claims happen in the last hours)."""
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    clock = ManualClock(start)
    rt = make_runtime(pg_url, clock=clock)
    auth.ensure_system_user(rt)
    wanted = recipes.create_recipe(rt, name="Replayed", credit_cost=1, variables=[])
    recipes.create_recipe(rt, name="Unasked", credit_cost=1, variables=[])
    user, _ = auth.create_user(rt, "asker", credits=100)
    for minute in range(0, 120, 2):          # misses on an empty pool, one every 2 minutes
        clock.set(start + timedelta(minutes=minute, seconds=5))
        with rt.store.begin() as s:
            assert pool.claim(s, recipe_id=wanted.id, user_id=user.id, meta_patch={}, now=rt.now(),
                              cooldown_s=0, max_age_h=72).outcome == "no_backlog"
    doc = json.loads(_simulate("--from-db", "--days", "1", "--warmup-days", "0", "--policy", "static",
                               "--json", url=pg_url).stdout)
    assert doc["trace"] == "recorded"
    result = doc["policies"]["static"]
    assert result["attempts"] == 60
    assert set(result["missesByRecipe"]) == {"Replayed", "Unasked"}
    assert result["missesByRecipe"]["Unasked"] == 0
