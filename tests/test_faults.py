"""Faults survived, with real processes: a killed worker, a misbehaving provider, a database
restart under load, a killed leader. Each scenario checks what happened to the data."""
from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import psycopg
import pytest
import requests

from delula import auth, generations, jobruns, recipes
from delula.storage import accounts
from delula.storage.models import CreditTransaction, Generation
from tests.support.api import start_claiming
from tests.support.db import Cluster, free_port, require_clusters
from tests.support.factories import add_pool_items
from tests.support.processes import answers_http, ROOT, TERMINAL, halt_under_claims, spawn, stop_processes, worker_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _jobs(rt, recipe_id: int) -> list[Generation]:
    with rt.store.begin() as s:
        return list(s.query(Generation).filter(Generation.recipe_id == recipe_id).order_by(Generation.id))


def _user_jobs(rt, n: int, *, cost: int = 2, credits: int = 100, model_id: str | None = None, name="Faults"):
    recipe = recipes.create_recipe(rt, name=name, credit_cost=cost, min_backlog=0,
                                   **({"model_id": model_id} if model_id else {}))
    user, _ = auth.create_user(rt, f"u_{name.lower().replace(' ', '_')}", credits=credits)
    for _ in range(n):
        assert generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id, form_data={}).ok
    return recipe, user


def _refunds(rt) -> Counter:
    with rt.store.begin() as s:
        return Counter(t.generation_id for t in s.query(CreditTransaction).filter(CreditTransaction.kind == "refund"))


def _assert_money_is_right(rt, user, jobs, cost: int, credits: int) -> None:
    ids = {g.id for g in jobs}
    refunds = Counter({gid: n for gid, n in _refunds(rt).items() if gid in ids})
    failed = [g for g in jobs if g.status != "completed"]
    assert {g.id for g in failed} == set(refunds) and set(refunds.values()) <= {1}   # exactly once each
    assert all(g.refunded for g in failed) and not any(g.refunded for g in jobs if g.status == "completed")
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        assert accounts.get_user(s, user.id).credits == credits - cost * (len(jobs) - len(failed))


def test_a_worker_killed_mid_job_loses_nothing_and_resubmits_nothing(pg_url, make_runtime, tmp_path):
    """SIGKILL the worker while jobs are processing, start another: every job ends, a job whose
    submission was recorded is polled again (same request id), refunds are exact."""
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    recipe, user = _user_jobs(rt, 12)
    env = worker_env(pg_url, DELULA_SIMULATOR_DURATION="1-3", DELULA_SIMULATOR_FAILURE_RATE="0.35",
               DELULA_MAX_ATTEMPTS=2, DELULA_MAX_CONCURRENT_JOBS=3)
    first = second = None
    try:
        first = spawn(["-m", "delula", "worker"], env, tmp_path / "worker1.log")
        submitted = wait_for(lambda: [g for g in _jobs(rt, recipe.id)
                                      if g.status == "processing" and g.provider_request_id] or None,
                             what="jobs processing at the provider")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        at_kill = {g.id: (g.attempts, g.provider_request_id) for g in _jobs(rt, recipe.id)
                   if g.status == "processing" and g.provider_request_id}
        assert at_kill and set(at_kill) >= {g.id for g in submitted if g.status == "processing"} - set(at_kill)
        second = spawn(["-m", "delula", "worker"], env, tmp_path / "worker2.log")
        jobs = wait_for(lambda: (lambda js: js if all(g.status in TERMINAL for g in js) else None)(_jobs(rt, recipe.id)),
                        timeout=180, what="every job to end")
    finally:
        stop_processes(first, second)
    by_id = {g.id: g for g in jobs}
    for gid, (attempts, request_id) in at_kill.items():
        if by_id[gid].attempts == attempts:        # the same attempt finished: polled, never resubmitted
            assert by_id[gid].provider_request_id == request_id
    assert {g.status for g in jobs} <= {"completed", "failed"}
    assert all(g.error for g in jobs if g.status == "failed")
    _assert_money_is_right(rt, user, jobs, cost=2, credits=100)
    # the new worker recovered the orphans when it took over
    runs = jobruns.recent_runs(rt, limit=100, job="queue-recovery")
    assert any(r["pid"] == second.pid and r["outcome"] == "ok" for r in runs)


FAULTS = {  # simulator fault (model id sim/fault/...) -> what the job's error must say
    "status_5xx/100000": "503",
    "status_malformed": "malformed",
    "status_unknown": "WEIRD",
    "result_malformed": "malformed",
    "failed": "fail",
    "status_hang/3": "timed out",   # each status call hangs 3 s, past the 1 s client timeout
}


def test_a_misbehaving_provider_fails_jobs_readably_and_the_scheduler_keeps_going(pg_url, make_runtime, tmp_path):
    """The worker talks to the fal-compatible simulator in another process over HTTP; for each
    recipe the provider misbehaves in one way, every time. Jobs are retried, then fail with a
    readable error and a refund; afterwards the same worker still runs a good job to the end."""
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    faulty = {fault: _user_jobs(rt, 2, model_id=f"sim/fault/{fault}", name=f"Fault {fault.split('/')[0]}")
              for fault in FAULTS}
    port = free_port()
    sim = worker = None
    env = worker_env(pg_url, DELULA_PROVIDER="fal", FAL_KEY="test-key", DELULA_SIMULATOR_KEY="test-key",
               DELULA_FAL_QUEUE_URL=f"http://127.0.0.1:{port}/sim/fal", DELULA_MAX_CONCURRENT_JOBS=10,
               DELULA_MAX_ATTEMPTS=2, DELULA_JOB_TIMEOUT_S=8, DELULA_SIMULATOR_DURATION="0.5",
               DELULA_SIMULATOR_FAILURE_RATE="0",   # the faults are the recipes' own; the good job must not fail by chance
               DELULA_PROVIDER_TIMEOUT_S=1,
               DELULA_BREAKER_THRESHOLD=10_000)   # each job's own fault, not an outage: the breaker stays out
    try:
        sim = spawn(["-m", "delula", "simulator", "--port", str(port)], env, tmp_path / "sim.log")
        wait_for(lambda: answers_http(f"http://127.0.0.1:{port}/"), what="the simulator")
        worker = spawn(["-m", "delula", "worker"], env, tmp_path / "worker.log")
        ended = {fault: wait_for(lambda r=recipe: _ended(rt, r.id), timeout=120, what=f"the {fault} jobs to end")
                 for fault, (recipe, _) in faulty.items()}
        good, good_user = _user_jobs(rt, 1, name="Good after faults")
        (after,) = wait_for(lambda: _ended(rt, good.id), timeout=60, what="a good job after the faults")
        assert worker.poll() is None
    finally:
        stop_processes(worker, sim)
    assert after.status == "completed" and after.asset_url, (after.status, after.error, (tmp_path / "worker.log").read_text()[-4000:])
    for fault, jobs in ended.items():
        assert [g.status for g in jobs] == ["failed", "failed"], fault
        for g in jobs:
            assert g.attempts == 2
            assert FAULTS[fault].lower() in g.error.lower(), (fault, g.error)
            assert "Traceback" not in g.error and len(g.error) < 500
        _assert_money_is_right(rt, faulty[fault][1], jobs, cost=2, credits=100)


def _ended(rt, recipe_id: int) -> list[Generation] | None:
    jobs = _jobs(rt, recipe_id)
    return jobs if jobs and all(g.status in TERMINAL for g in jobs) else None



def test_the_api_survives_a_database_restart_under_load(tmp_path):
    """A cluster of the test's own (never the shared server) is halted while clients claim: the
    API answers 503 JSON and /healthz says why; once it is back, claims succeed again without
    restarting the app, and nothing claimed was lost or charged twice."""
    require_clusters()
    cluster = Cluster()
    app = None
    try:
        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            conn.execute("CREATE DATABASE delula")
        url = cluster.url.rsplit("/", 1)[0] + "/delula"
        from delula.config import Settings
        from delula.runtime import Runtime

        rt = Runtime.from_settings(Settings.from_env(database_url=url, instant_cooldown_s=0, scheduler=False))
        import app as app_module

        app_module.boot(rt)
        recipe = recipes.create_recipe(rt, name="Restart", credit_cost=1)
        add_pool_items(rt, recipe.id, 400)
        user, token = auth.create_user(rt, "restarter", credits=1000)
        port = free_port()
        env = worker_env(url, DELULA_SCHEDULER="off", DELULA_INSTANT_COOLDOWN_S=0, DELULA_ADMIN_PASSWORD="x-admin-pass")
        app = spawn([str(ROOT / "app.py"), "--port", str(port), "--no-scheduler"], env, tmp_path / "app.log")
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers_http(f"{base}/healthz"), timeout=60, what="the app")
        results: list[tuple[int, dict]] = []
        stop = threading.Event()

        clients = start_claiming(base, recipe.id, token, results, stop)
        halt_under_claims(cluster, base, results, unavailable=5)
        cluster.start()
        up_at = len(results)
        wait_for(lambda: sum(1 for s, _ in results[up_at:] if s == 200) >= 20, timeout=60,
                 what="claims after the restart")
        stop.set()
        for t in clients:
            t.join(60)
        assert requests.get(f"{base}/healthz", timeout=30).json() == {"status": "ok", "database": "ok"}
        assert app.poll() is None                                     # the same process all along
    finally:
        stop_processes(app)
        cluster.stop()
    statuses = Counter(s for s, _ in results)
    assert set(statuses) <= {200, 503}, statuses                      # no 500, no connection errors
    for status, body in results:
        if status == 503:
            assert isinstance(body["message"], str) and body["message"]
    # what the clients were told matches the data: every 200 is one charged, owned generation
    ok_ids = [body["generation"]["id"] for s, body in results if s == 200]
    assert len(ok_ids) == len(set(ok_ids))


def test_a_killed_leader_is_replaced_and_the_cap_holds(pg_url, make_runtime, tmp_path):
    """Two workers, a cap of 2 concurrent jobs, 10 jobs of 1-2 s: the leader is killed mid-way;
    the standby takes over, every job ends, and at no sampled moment were more than 2 processing."""
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    recipe, user = _user_jobs(rt, 10, name="Cap")
    env = worker_env(pg_url, DELULA_SIMULATOR_DURATION="1-2", DELULA_SIMULATOR_FAILURE_RATE="0", DELULA_MAX_CONCURRENT_JOBS=2)
    workers = []
    seen: list[int] = []
    stop = threading.Event()

    def sample():
        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            while not stop.is_set():
                seen.append(conn.execute("SELECT count(*) FROM generations WHERE status = 'processing'").fetchone()[0])
                time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        workers = [spawn(["-m", "delula", "worker"], env, tmp_path / f"worker{i}.log") for i in range(2)]
        by_pid = {p.pid: p for p in workers}
        leader = wait_for(lambda: jobruns.leader(rt), what="a leader")["pid"]
        wait_for(lambda: sum(1 for g in _jobs(rt, recipe.id) if g.status == "completed") >= 3,
                 what="some jobs done by the first leader")
        by_pid[leader].send_signal(signal.SIGKILL)
        by_pid[leader].wait(timeout=30)
        (standby,) = set(by_pid) - {leader}
        wait_for(lambda: (jobruns.leader(rt) or {}).get("pid") == standby, what="the standby to lead")
        jobs = wait_for(lambda: (lambda js: js if all(g.status in TERMINAL for g in js) else None)(_jobs(rt, recipe.id)),
                        timeout=120, what="every job to end")
    finally:
        stop.set()
        sampler.join(10)
        stop_processes(*workers)
    assert [g.status for g in jobs] == ["completed"] * 10
    assert seen and max(seen) <= 2, Counter(seen)
    _assert_money_is_right(rt, user, jobs, cost=2, credits=100)
