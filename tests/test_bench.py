"""The benchmark scripts run end to end on tiny data and print the JSON the README quotes.

No figure is asserted (timings belong to the scripts' output, not to tests): only that each
script parses its arguments, creates, seeds and drops its own database, and reports the keys
and invariants it promises.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.db import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("claims", "dashboard", "maintenance", "bulk", "content")

pytestmark = pytest.mark.postgres


def _run(script: str, *args: str, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _exists(admin: str, name: str) -> bool:
    with psycopg.connect(admin, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_describe_their_options(script):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--database-url" in proc.stdout and "--keep" in proc.stdout


def test_maintenance_counts_statements_for_both_sizes(pg_admin):
    name = f"delula_t{os.getpid()}_bench_maint"
    out = _run("maintenance", "--database-url", pg_admin, "--db-name", name, "--recipes", "20", "--small", "5",
               "--runs", "1")
    assert out["benchmark"] == "maintenance"
    assert out["pass"]["recipes"] == 20 and out["small"]["recipes"] == 5
    assert out["pass"]["statements"] and out["small"]["statements"]
    assert out["pass"]["jobsCreated"] > 0
    assert out["statementsIndependentOfRecipes"] is True
    assert not _exists(pg_admin, name)


def test_bulk_retries_in_bounded_batches(pg_admin):
    name = f"delula_t{os.getpid()}_bench_bulk"
    out = _run("bulk", "--database-url", pg_admin, "--db-name", name, "--jobs", "25", "--background", "100",
               "--batch", "10", "--runs", "1")
    assert out["benchmark"] == "bulk" and out["batchSize"] == 10
    for case in ("retryByFilter", "retryByIds", "cancelByFilter"):
        assert (out[case]["done"], out[case]["skipped"]) == (25, 0), case
        assert out[case]["batches"] == out[case]["transactions"] == 3 and out[case]["largestBatch"] == 10, case
    assert out["retryByIds"]["statementsPerTransaction"] == {"min": 1, "max": 2}   # the audit row in the last
    assert out["refunds"] == 25 and out["ledgerMismatches"] == 0
    assert not _exists(pg_admin, name)


def test_claims_in_process_keeps_every_invariant(pg_admin):
    name = f"delula_t{os.getpid()}_bench_claims"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "1",
               "--recipes", "3", "--items", "200", "--history", "500", "--users", "50", "--no-raw")
    assert out["mode"] == "in-process" and out["clients"] == 2
    assert out["ours"]["claims"] > 0 and set(out["ours"]["latencyMs"]) >= {"p50", "p95", "p99"}
    assert out["invariants"]["violations"] == 0, out["invariants"]
    assert not _exists(pg_admin, name)


def test_claims_with_choices_runs_plain_choices_plain_and_keeps_every_invariant(pg_admin):
    name = f"delula_t{os.getpid()}_bench_choices"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "1",
               "--recipes", "3", "--items", "3000", "--history", "500", "--users", "50", "--no-raw", "--choices")
    assert out["choices"] is True and out["ours"]["claims"] > 0
    assert out["ours"]["plainBefore"]["claims"] > 0 and out["ours"]["plainAfter"]["claims"] > 0
    assert out["ours"]["choicesOverPlain"] > 0 and set(out["ours"]["outcomes"]) <= {"claimed", "no_backlog", "race"}
    assert out["invariants"]["violations"] == 0, out["invariants"]
    assert not _exists(pg_admin, name)


def test_claims_hot_reports_the_rate_per_window_ours_and_the_functions(pg_admin):
    _needs_pgbench()
    name = f"delula_t{os.getpid()}_bench_hot"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "2",
               "--hot", "--recipes", "2", "--items", "50", "--history", "200", "--users", "20")
    assert out["hot"] is True and out["ours"]["claimsPerSecondBy10s"] and out["ours"]["lastOverFirst"]
    assert out["ours"]["spread"]["claims"] > 0 and out["ours"]["hotOverSpread"] > 0
    assert out["function"]["claimsPerSecond"] > 0 and out["raw"]["meanClaimsPerSecond"] is None
    assert out["function"]["hotItemsLeft"] > 0       # the windows measured claims, not an emptied pool
    assert out["invariants"]["violations"] == 0, out["invariants"]
    assert not _exists(pg_admin, name)


def _needs_pgbench():
    if shutil.which("pgbench") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/pgbench")):
        skip_or_fail("needs pgbench")


def test_claims_measures_raw_on_our_schema_and_on_the_lean_one(pg_admin):
    _needs_pgbench()
    name = f"delula_t{os.getpid()}_bench_lean"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "1",
               "--recipes", "3", "--items", "4000", "--history", "500", "--users", "50")
    assert out["raw"]["meanClaimsPerSecond"] > 0 and out["lean"]["meanClaimsPerSecond"] > 0
    assert out["ratio"] > 0 and out["ratioLean"] > 0 and out["rawOverLean"] > 0
    assert out["invariants"]["violations"] == 0, out["invariants"]
    assert not _exists(pg_admin, name) and not _exists(pg_admin, f"{name}_lean")


def test_claims_amplification_takes_one_index_key_or_trigger_away_after_another(pg_admin):
    _needs_pgbench()
    name = f"delula_t{os.getpid()}_bench_amp"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "1",
               "--recipes", "2", "--items", "2500", "--history", "200", "--users", "20", "--amplification")
    steps = [s["without"] for s in out["steps"]]
    assert steps[0] == "as migrated" and "trigger generations_pool_arrived" in steps
    assert "index ix_generations_created_at" in steps and "index ix_generations_pool" not in steps
    assert all(s["callsPerSecond"] > 0 and s["serverCpuUsPerCall"] is not None and s["poolLeft"] > 0
               for s in out["steps"])
    assert not _exists(pg_admin, name)


def test_claims_layers_cost_the_domain_call_and_the_whole_flask_app(pg_admin):
    name = f"delula_t{os.getpid()}_bench_layers"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--recipes", "2", "--items", "2500",
               "--history", "100", "--users", "20", "--no-raw", "--layers")
    assert [row["layer"].split(":")[0] for row in out["layers"]] == ["domain", "wsgi"]
    assert all(row["statuses"] == {"200": out["calls"]} and row["cpuUsPerClaim"] > 0 for row in out["layers"])
    assert not _exists(pg_admin, name)


@pytest.mark.parametrize("server", ["gunicorn", "granian"])
def test_claims_through_each_server_driven_by_wrk(pg_admin, server):
    if shutil.which("wrk") is None:
        skip_or_fail("needs wrk (Debian package wrk)")
    name = f"delula_t{os.getpid()}_bench_wrk_{server}"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "1",
               "--recipes", "2", "--items", "2000", "--history", "100", "--users", "20", "--no-raw", "--http",
               "--wrk", "--server", server)
    assert out["ours"]["server"] == server and out["ours"]["loadGenerator"] == "wrk"
    assert out["ours"]["claims"] > 0 and out["ours"]["fiveHundreds"] == 0
    assert set(out["ours"]["latencyMs"]) == {"p50", "p95", "p99", "max"}
    assert out["invariants"]["violations"] == 0, out["invariants"]
    assert not _exists(pg_admin, name)


def test_dashboard_explains_every_statement(pg_admin):
    name = f"delula_t{os.getpid()}_bench_dash"
    out = _run("dashboard", "--database-url", pg_admin, "--db-name", name, "--generations", "20000",
               "--events", "5000", "--recipes", "5", "--users", "20", "--repeat", "1")
    assert {"overview-1h", "overview-24h", "overview-7d", "recipes", "queue", "maintenance-minimums",
            "open /", "open /recipes", "open /queue", "open /maintenance"} <= set(out["requestsMs"])
    assert out["failedRequests"] == []          # every callback answered, signed in
    assert all(r["bytes"] > 0 and r["p95"] >= r["p50"] > 0 for r in out["requestsMs"].values())
    assert out["rows"]["generations"] == 20000 and out["rows"]["claim_events"] == 5000
    assert out["rollUp"]["hours"] >= 168 and out["rollUp"]["rows"] == out["rows"]["stat_counts"]
    assert out["statementsExplained"] > 0 and out["indexesUsed"]
    # tiny tables: a seq scan may be right here
    assert isinstance(out["seqScansOfGenerations"], list) and isinstance(out["seqScansOfStatCounts"], list)
    assert not _exists(pg_admin, name)


def test_content_explains_every_statement(pg_admin):
    name = f"delula_t{os.getpid()}_bench_content"
    out = _run("content", "--database-url", pg_admin, "--db-name", name, "--claims", "2000", "--recipes", "5",
               "--users", "20", "--repeat", "1")
    assert set(out["dataMs"]) == set(out["pageMs"]) == {"1h", "24h", "7d", "30d"}
    assert 1990 <= out["inRange"]["30d"]["claimed"] <= 2000 and out["inRange"]["30d"]["rows"] > 0   # the oldest at the edge
    assert out["statementsExplained"] > 0 and isinstance(out["seqScansOfGenerations"], list)
    assert not _exists(pg_admin, name)


def test_claims_through_gunicorn_reports_memory_and_cpu(pg_admin):
    name = f"delula_t{os.getpid()}_bench_http"
    out = _run("claims", "--database-url", pg_admin, "--db-name", name, "--clients", "2", "--seconds", "1",
               "--recipes", "2", "--items", "100", "--history", "100", "--users", "20", "--no-raw", "--http")
    assert out["mode"] == "http"
    assert out["ours"]["claims"] > 0 and out["ours"]["fiveHundreds"] == 0
    assert out["ours"]["peakWorkerRssMB"] > 0 and out["ours"]["workerCpuMsPerRequest"] is not None
    assert out["ours"]["clientCpuMsPerRequest"] > 0
    assert out["invariants"]["violations"] == 0, out["invariants"]
    assert not _exists(pg_admin, name)
