"""The monotonic counters of ``/metrics``, kept in the database: exact under parallel claims,
unchanged by the roll-up that moves claims into the stored totals, never lowered by pruning,
and still counting across a worker's restart."""
from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import timedelta

import pytest

from delula import auth, claims, counters, generations, housekeeping, metrics, queue, queue_actions, recipes
from delula.clock import ManualClock
from delula.storage.models import ClaimEvent
from tests.support.factories import add_pool_items
from tests.support.processes import spawn, stop_processes, worker_env
from tests.support.waiting import wait_for


def _series(rt, name: str) -> dict[tuple, int]:
    return {tuple(sorted(labels.items())): n for labels, n in counters.totals(rt).get(name, [])}


def _claims_by_outcome(rt) -> Counter:
    out = Counter()
    for labels, n in _series(rt, "instant_claims").items():
        out[dict(labels)["outcome"]] += n
    return out


@pytest.mark.postgres
def test_the_claims_counter_is_exact_under_parallel_claims_and_the_roll_up_changes_no_total(pg_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(pg_url, clock=clock, pool_size=20)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Counted", credit_cost=1)
    add_pool_items(rt, recipe.id, 30)
    users = [auth.create_user(rt, f"counted{i}", credits=100)[0] for i in range(8)]
    go = threading.Barrier(len(users))

    def claim(user):
        go.wait()
        for _ in range(6):
            claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)

    threads = [threading.Thread(target=claim, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with rt.store.begin() as s:
        events = Counter(outcome for (outcome,) in s.query(ClaimEvent.outcome))
    assert events["claimed"] == 30 and sum(events.values()) == 48
    assert _claims_by_outcome(rt) == events

    clock.advance(180)          # settled: the roll-up moves them into the stored totals
    assert counters.roll_up(rt)["events"] == 48
    assert counters.roll_up(rt)["events"] == 0
    assert _claims_by_outcome(rt) == events
    claims.instant_claim(rt, recipe_id=recipe.id, user_id=users[0].id)   # past the mark: counted live
    assert _claims_by_outcome(rt)["no_backlog"] == events["no_backlog"] + 1


def test_pruning_claim_events_never_lowers_the_claims_counter(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, event_retention_days=1)
    auth.ensure_system_user(rt)
    user, _ = auth.create_user(rt, "pruned", credits=10)
    recipe = recipes.create_recipe(rt, name="Dry", credit_cost=1)
    for _ in range(3):
        claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)   # no_backlog, refused: prunable
    clock.advance(2 * 86400)
    assert counters.prunable_before(rt, rt.now()) < rt.now() - timedelta(days=2)   # nothing added up yet
    assert housekeeping.prune(rt)["claimEventsDeleted"] == 3     # added up first, then pruned
    assert _claims_by_outcome(rt)["no_backlog"] == 3
    with rt.store.begin() as s:
        assert s.query(ClaimEvent).count() == 0


def test_jobs_finished_are_counted_with_their_transition(db_url, make_runtime):
    rt = make_runtime(db_url, max_attempts=1, poll_schedule=(0.01,))
    auth.ensure_system_user(rt)
    user, _ = auth.create_user(rt, "finisher", credits=100)
    good = recipes.create_recipe(rt, name="Good", credit_cost=1)
    bad = recipes.create_recipe(rt, name="Bad", credit_cost=1, model_id="sim/fault/failed")
    done = generations.create_user_generation(rt, user_id=user.id, recipe_id=good.id, form_data={})
    failing = generations.create_user_generation(rt, user_id=user.id, recipe_id=bad.id, form_data={})
    cancelled = generations.create_user_generation(rt, user_id=user.id, recipe_id=good.id, form_data={})
    queue_actions.cancel(rt, cancelled.generation["id"])
    for _ in range(20):
        queue.tick(rt)
        if {generations.get_generation(rt, g.generation["id"]).status for g in (done, failing)} <= {"completed",
                                                                                                     "failed"}:
            break
        threading.Event().wait(0.05)
    assert _series(rt, "jobs_finished") == {
        (("result", "completed"), ("source", "user")): 1,
        (("result", "failed"), ("source", "user")): 1,
        (("result", "cancelled"), ("source", "user")): 1}
    text = metrics.render(rt).decode()
    assert 'delula_jobs_finished_total{result="failed",source="user"} 1.0' in text
    assert re.search(r'delula_provider_calls_total\{kind="submit",result="ok"\} 2\.0', text)
    assert 'delula_provider_breaker_state{provider="simulator",state="closed"} 1.0' in text


@pytest.mark.postgres
def test_counters_keep_increasing_across_a_worker_restart(pg_url, make_runtime, tmp_path):
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    user, _ = auth.create_user(rt, "restart_user", credits=100)
    recipe = recipes.create_recipe(rt, name="Restarted", credit_cost=1)
    env = worker_env(pg_url, DELULA_SIMULATOR_DURATION="0.2", DELULA_SIMULATOR_FAILURE_RATE="0")

    def run_jobs(n: int, log_name: str) -> None:
        worker = spawn(["-m", "delula", "worker"], env, tmp_path / log_name)
        try:
            made = [generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id, form_data={})
                    for _ in range(n)]
            wait_for(lambda: all(generations.get_generation(rt, g.generation["id"]).status == "completed"
                                 for g in made), timeout=60, what=f"{n} jobs through {log_name}")
        finally:
            stop_processes(worker)

    def reading() -> dict:
        rt.invalidate("metrics")
        text = metrics.render(rt).decode()
        found = dict(re.findall(r'^(delula_\w+_total\{[^}]*\}) (\S+)$', text, re.M))
        return {k: float(v) for k, v in found.items()}

    completed = 'delula_jobs_finished_total{result="completed",source="user"}'
    submits = 'delula_provider_calls_total{kind="submit",result="ok"}'
    run_jobs(3, "first.log")
    first = reading()
    assert first[completed] == 3 and first[submits] == 3
    run_jobs(2, "second.log")                       # a new worker process: the totals go on from the database
    second = reading()
    assert second[completed] == 5 and second[submits] == 5
    assert all(second.get(k, 0) >= v for k, v in first.items())
