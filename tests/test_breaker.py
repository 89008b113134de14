"""The provider circuit breaker: its pure transitions, and the queue against the simulator's
failing submit mode — it opens, spends no attempt while open, probes with one job after a
growing backoff, and closes when the provider recovers. Two processes share one breaker."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from delula import auth, breaker, counters, queue, recipes
from delula.clock import ManualClock
from delula.config import Settings
from delula.providers import ProviderError
from delula.simulator import Simulator, SimulatorProvider
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs
from delula.storage import breaker as store_breaker
from delula.storage.models import Recipe
from tests.support.db import free_port
from tests.support.processes import answers_http, spawn, stop_processes, worker_env
from tests.support.waiting import wait_for

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
SETTINGS = Settings(breaker_threshold=3, breaker_backoff_s=30, breaker_max_backoff_s=100)
OUTAGE = "sim/fault/submit_5xx"


# --- the pure transitions ---------------------------------------------------------------------------

@pytest.mark.parametrize("error, outcome", [
    (None, breaker.OK),
    (ProviderError("503", retryable=True, status_code=503), breaker.ERROR),
    (ProviderError("timed out", retryable=True), breaker.ERROR),
    (ProviderError("malformed JSON", retryable=True, status_code=200), breaker.ERROR),
    (ProviderError("bad key", retryable=False, status_code=401), breaker.ERROR),
    (ProviderError("forbidden", retryable=False, status_code=403), breaker.ERROR),
    (ProviderError("prompt refused", retryable=False, status_code=422), breaker.REFUSED),
    (ProviderError("no such request", retryable=False, status_code=404), breaker.REFUSED),
    (ValueError("garbage"), breaker.ERROR),
])
def test_what_counts_against_the_provider(error, outcome):
    assert breaker.outcome_of(error) == outcome


def _after(st, *outcomes, now=T0):
    for o in outcomes:
        st = breaker.after_call(st, o, now=now, settings=SETTINGS, error="boom")
    return st


def test_threshold_errors_in_a_row_open_it_and_a_success_in_between_clears_the_run():
    st = _after(breaker.State(), "error", "error")
    assert st.state == "closed" and st.failures == 2
    st = _after(st, "ok")
    assert st.state == "closed" and st.failures == 0
    st = _after(st, "error", "refused", "error")        # a refusal about one job neither counts nor clears
    assert st.failures == 2
    st = _after(st, "error")
    assert (st.state, st.opened_at, st.next_probe_at) == ("open", T0, T0 + timedelta(seconds=30))
    assert _after(st, "ok") == st                       # a late answer of a call made before it opened


def test_failed_probes_double_the_backoff_up_to_the_cap_and_a_good_probe_closes_it():
    st = _after(breaker.State(), "error", "error", "error")
    waits = []
    for _ in range(4):
        st = breaker.State("half_open", st.failures, st.trips, st.opened_at, st.next_probe_at, T0, st.last_error)
        st = _after(st, "error")
        waits.append((st.next_probe_at - T0).total_seconds())
    assert waits == [60, 100, 100, 100] and st.trips == 4
    st = _after(breaker.State("half_open", st.failures, st.trips, st.opened_at, st.next_probe_at, T0), "ok")
    assert st == breaker.State(last_error=None) and st.state == "closed" and st.trips == 0


# --- the queue against the simulator's outage ------------------------------------------------------

def _setup(make_runtime, db_url, *, jobs_n=6):
    clock = ManualClock(T0)
    sim = SimulatorProvider(Simulator(duration=(0.0, 0.0), failure_rate=0.0, clock=clock))
    rt = make_runtime(db_url, clock=clock, provider=sim, breaker_threshold=3, breaker_backoff_s=30,
                      breaker_max_backoff_s=100, max_concurrent_jobs=10, max_attempts=5,
                      poll_schedule=(1.0,))
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Outage", credit_cost=1, model_id=OUTAGE)
    with rt.store.begin() as s:
        jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, form_data={},
                                      meta={"source": "backlog"}, priority=10) for _ in range(jobs_n)], rt.now())
    return rt, clock, recipe


def _jobs(rt, recipe_id):
    with rt.store.begin() as s:
        return sorted((g for g in jobs.list_for_user(s, SYSTEM_BACKLOG_USER_ID, limit=1000)
                       if g.recipe_id == recipe_id), key=lambda g: g.id)


def _calls(rt) -> int:
    return sum(n for _, n in counters.totals(rt).get("provider_calls", []))


def _heal(rt, recipe_id):
    with rt.store.begin() as s:
        s.execute(update(Recipe).where(Recipe.id == recipe_id).values(model_id="fal-ai/veo3/fast"))


def test_the_breaker_opens_on_an_outage_burns_no_attempt_while_open_probes_and_closes(db_url, make_runtime):
    rt, clock, recipe = _setup(make_runtime, db_url)
    queue.tick(rt)          # ten slots, six jobs: the third failed submit opens the breaker
    state = breaker.current(rt)
    assert state["state"] == "open" and state["failures"] == 3 and "503" in state["lastError"]
    spent = [g.attempts for g in _jobs(rt, recipe.id)]
    assert sum(spent) == 3 and all(g.status == "pending" for g in _jobs(rt, recipe.id))
    assert _calls(rt) == 3

    for _ in range(5):      # open: backoffs of the failed jobs pass, nothing is called, no attempt spent
        clock.advance(5)
        queue.tick(rt)
    assert [g.attempts for g in _jobs(rt, recipe.id)] == spent and _calls(rt) == 3

    clock.advance(6)        # 31 s after opening: one probe, which fails: open again, the backoff doubled
    queue.tick(rt)
    state = breaker.current(rt)
    assert state["state"] == "open" and state["trips"] == 1 and _calls(rt) == 4
    assert sum(g.attempts for g in _jobs(rt, recipe.id)) == 4
    assert state["nextProbeAt"] == (T0 + timedelta(seconds=31 + 60)).isoformat().replace("+00:00", "Z")

    _heal(rt, recipe.id)
    clock.advance(59)
    queue.tick(rt)          # still inside the doubled backoff
    assert _calls(rt) == 4
    clock.advance(1)
    queue.tick(rt)          # the probe submits one job and succeeds: closed
    assert breaker.current(rt)["state"] == "closed"
    for _ in range(6):
        clock.advance(2)
        queue.tick(rt)
    done = _jobs(rt, recipe.id)
    assert all(g.status == "completed" for g in done), [(g.status, g.error) for g in done]
    totals = {tuple(sorted(labels.items())): n for labels, n in counters.totals(rt)["provider_calls"]}
    assert totals[(("kind", "submit"), ("result", "error"))] == 4
    assert totals[(("kind", "submit"), ("result", "ok"))] == 6
    assert counters.totals(rt)["breaker_opened"] == [({"provider": "simulator"}, 2)]


def test_jobs_claimed_when_the_breaker_opens_mid_tick_go_back_with_their_attempt(db_url, make_runtime):
    rt, clock, recipe = _setup(make_runtime, db_url, jobs_n=8)
    queue.tick(rt)
    gens = _jobs(rt, recipe.id)
    assert [g.status for g in gens] == ["pending"] * 8
    assert sorted(g.attempts for g in gens) == [0, 0, 0, 0, 0, 1, 1, 1]
    assert all(g.started_at is None for g in gens if g.attempts == 0)


@pytest.mark.postgres
def test_two_processes_share_one_breaker_it_opens_once_and_one_of_them_takes_the_probe(pg_url, make_runtime):
    clock = ManualClock(T0)
    a = make_runtime(pg_url, clock=clock, breaker_threshold=4)
    b = make_runtime(pg_url, clock=clock, breaker_threshold=4)
    error = ProviderError("503", retryable=True, status_code=503)
    go = threading.Barrier(8)

    def fail(rt):
        go.wait()
        breaker.gate(rt).record("status", error)

    threads = [threading.Thread(target=fail, args=(rt,)) for rt in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.current(a)["state"] == "open"
    assert counters.totals(a)["breaker_opened"] == [({"provider": "simulator"}, 1)]
    assert breaker.gate(a).is_open() and breaker.gate(b).is_open()

    clock.advance(31)
    ready = threading.Barrier(2)
    won = []

    def probe(rt):
        ready.wait()
        breaker.gate(rt).refresh()
        won.append(breaker.gate(rt).enter())

    threads = [threading.Thread(target=probe, args=(rt,)) for rt in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, True]
    assert breaker.current(a)["state"] == "half_open"


@pytest.mark.postgres
def test_a_worker_against_the_simulator_over_http_opens_probes_and_closes_on_recovery(pg_url, make_runtime,
                                                                                      tmp_path):
    """Real processes: the fal client of a worker talks to the simulator's HTTP face, whose
    submits all answer 503 for the recipe's model. The breaker opens after three; while it is
    open no job is submitted (the attempts spent equal the submit calls made, all of them
    probes after the first three); once the model answers again a probe closes it and every
    job completes."""
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Over HTTP", credit_cost=1, model_id=OUTAGE)
    with rt.store.begin() as s:
        jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, form_data={},
                                      meta={"source": "backlog"}, priority=10) for _ in range(6)], rt.now())
    port = free_port()
    env = worker_env(pg_url, DELULA_PROVIDER="fal", FAL_KEY="test-key", DELULA_SIMULATOR_KEY="test-key",
                     DELULA_FAL_QUEUE_URL=f"http://127.0.0.1:{port}/sim/fal", DELULA_MAX_CONCURRENT_JOBS=10,
                     DELULA_MAX_ATTEMPTS=50, DELULA_SIMULATOR_DURATION="0.2", DELULA_SIMULATOR_FAILURE_RATE="0",
                     DELULA_BREAKER_THRESHOLD=3, DELULA_BREAKER_BACKOFF_S=1.5, DELULA_BREAKER_MAX_BACKOFF_S=3)
    sim = worker = None
    try:
        sim = spawn(["-m", "delula", "simulator", "--port", str(port)], env, tmp_path / "sim.log")
        wait_for(lambda: answers_http(f"http://127.0.0.1:{port}/"), what="the simulator")
        worker = spawn(["-m", "delula", "worker"], env, tmp_path / "worker.log")
        wait_for(lambda: _state(rt) == "open", timeout=30, what="the breaker to open")
        for _ in range(8):   # open and probing: every attempt spent is a submit call, or the probe in flight
            time.sleep(0.5)
            gens = _jobs(rt, recipe.id)
            spent, probing = sum(g.attempts for g in gens), sum(g.status == "processing" for g in gens)
            calls = _submit_calls(rt)
            assert probing <= 1 and {g.status for g in gens} <= {"pending", "processing"}
            assert calls <= spent <= calls + probing, (spent, calls, probing)
        assert 3 <= calls <= 3 + 4, calls   # 4 s of a 1.5 s / 3 s backoff: at most a few probes
        assert _state(rt) in ("open", "half_open")
        _heal(rt, recipe.id)
        wait_for(lambda: _state(rt) == "closed", timeout=30, what="a probe to close the breaker")
        wait_for(lambda: all(g.status == "completed" for g in _jobs(rt, recipe.id)), timeout=60,
                 what="every job once the provider recovered")
        assert worker.poll() is None
    finally:
        stop_processes(worker, sim)
    log = (tmp_path / "worker.log").read_text()
    assert "breaker: fal opened" in log and "breaker: fal closed" in log


def _state(rt) -> str:
    with rt.store.begin() as s:
        row = store_breaker.get(s, "fal")
    return "closed" if row is None else row.state


def _submit_calls(rt) -> int:
    return sum(n for labels, n in counters.totals(rt).get("provider_calls", []) if labels["kind"] == "submit")

