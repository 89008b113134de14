"""The dashboard's data on a big database: every page's queries, cold and warm, and their plans.

    python bench/dashboard.py --database-url postgresql://postgres@127.0.0.1/postgres

Seeds 2,000,000 generations (30 days of claimed items, normal jobs, failures, a live queue and
the pool) over 200 recipes, 1,000,000 claim events over 7 days and a week of queue samples (one
every 30 s), rolls the closed hours up into ``stat_counts`` as the scheduler would (timed), then
builds each page as a signed-in ops user would get it — the overview's refresh
callback for 1 h, 24 h and 7 d, the recipe cards, the queue page, the maintenance page. Two
timings per page: ``dataMs``, the domain calls the page makes (``overview.snapshot``,
``recipes.list_with_availability``, ``generations.list_jobs``, ``queue_status.status``, ``backlog.status``
…, with the page's arguments), and ``pagesMs``, the page's own layout and callbacks (data plus
building the Dash components). "cold" empties the in-process caches first, "warm" does not.
Every SQL statement the pages ran is EXPLAINed: none may plan a sequential scan of
``generations``. Prints p50/p95 per page (ms) as JSON.
"""
from __future__ import annotations

import argparse
import importlib
import time

import common
from common import log

PAGES = ("overview-1h", "overview-24h", "overview-7d", "recipes", "queue", "maintenance")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=common.DEFAULT_SERVER)
    p.add_argument("--generations", type=int, default=2_000_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--recipes", type=int, default=200)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=15, help="timed builds per page and cache state")
    p.add_argument("--db-name", default="delula_bench_dashboard", help="the benchmark database (dropped and created)")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def seed(url: str, args) -> None:
    t0 = time.perf_counter()
    common.migrate(url)
    common.seed_system_user(url)
    common.seed_users(url, args.users, credits=50)
    common.seed_recipes(url, args.recipes)
    n = args.generations
    pool = args.recipes * 20
    live = 600
    failed = n // 100
    normal = n // 8
    claimed = n - pool - live - failed - normal
    log(f"seeding {n:,} generations …")
    common.seed_generations(url, claimed, recipes=args.recipes, owner="users", users=args.users,
                            spread="30 days", instant=True)
    common.seed_generations(url, normal, recipes=args.recipes, owner="users", users=args.users,
                            spread="30 days", source="user")
    common.seed_generations(url, failed, recipes=args.recipes, owner="system_backlog", status="failed",
                            spread="30 days")
    common.seed_generations(url, pool, recipes=args.recipes, owner="system_backlog", spread="2 days")
    common.seed_generations(url, live - 3, recipes=args.recipes, owner="system_backlog", status="pending",
                            spread="1 hour")
    common.seed_generations(url, 3, recipes=3, owner="system_backlog", status="processing", spread="5 minutes")
    common.execute(url, "UPDATE generations SET error = 'provider error: 500' WHERE status = 'failed'")
    log(f"seeding {args.events:,} claim events and a week of queue samples …")
    common.execute(url, f"""
        INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at)
        SELECT 'u' || (1 + i %% {args.users}), 1 + i %% {args.recipes},
               (ARRAY['claimed','claimed','claimed','claimed','claimed','claimed','no_backlog','race',
                      'insufficient_credits','rate_limited'])[1 + i %% 10],
               NULL, 2.0 + (i %% 7), now() - interval '7 days' * i / {args.events}
        FROM generate_series(1, {args.events}) i""")
    common.execute(url, """
        INSERT INTO queue_samples (created_at, pending, processing, backlog, backlog_in_flight, recipes_below_minimum)
        SELECT now() - interval '30 seconds' * i, 5 + i %% 9, i %% 4, 3000 + i %% 50, 20, i %% 3
        FROM generate_series(0, 20159) i""")
    common.execute(url, "VACUUM ANALYZE")
    log(f"seeded in {time.perf_counter() - t0:.0f} s")


class Statements:
    """Every SQL statement (with parameters) run while recording."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.engine, self.seen, self.on = engine, {}, False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if self.on and not executemany:
            self.seen.setdefault(statement, parameters)


def seq_scans_of_generations(url: str, statements: dict) -> list[str]:
    """Statements whose plan scans ``generations`` sequentially."""
    import psycopg

    bad = []
    with psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        for statement, params in statements.items():
            if "generations" not in statement or not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params or None).fetchone()[0]
            if _has_seq_scan(plan, "generations"):
                bad.append(" ".join(statement.split())[:300])
    return bad


def _has_seq_scan(node, relation: str) -> bool:
    if isinstance(node, list):
        return any(_has_seq_scan(n, relation) for n in node)
    if isinstance(node, dict):
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == relation:
            return True
        return any(_has_seq_scan(v, relation) for v in node.values() if isinstance(v, (list, dict)))
    return False


def _data_calls(rt, pages) -> dict:
    """Each page's data: the domain functions the page's layout and callbacks call, with the
    same arguments (the target of the issue is on these)."""
    from delula import auth, backlog, generations, jobruns, overview, queue_status, schedule
    from delula import recipes

    def queue_data():
        jobs = generations.list_jobs(rt, limit=pages["queue"].LIMIT)
        recipes.list_recipes(rt, active_only=False)
        auth.usernames(rt, (g.user_id for g in jobs))
        queue_status.status(rt)
        recipes.list_recipes(rt, active_only=False)

    return {
        "overview-1h": lambda: (recipes.list_recipes(rt), overview.snapshot(rt, "1h", None)),
        "overview-24h": lambda: overview.snapshot(rt, "24h", None),
        "overview-7d": lambda: overview.snapshot(rt, "7d", None),
        "recipes": lambda: (recipes.list_with_availability(rt),
                            auth.test_users(rt, limit=pages["recipes"].ACTING_AS_SHOWN)),
        "queue": queue_data,
        "maintenance": lambda: (jobruns.leader(rt), schedule.jobs_overview(rt),
                                jobruns.recent_runs(rt, pages["maintenance"].RECENT_RUNS),
                                recipes.list_recipes(rt), backlog.status(rt)),
    }


def _page_builds(rt, pages) -> dict:
    """Each page as the browser gets it: layout and the callbacks that fill it on load."""
    from delula import recipes

    badges = [{"type": "avail-badge", "recipe": r["id"]} for r in recipes.list_with_availability(rt)]
    return {
        "overview-1h": lambda: (pages["overview"].layout(), pages["overview"].refresh(1, "1h", None)),
        "overview-24h": lambda: pages["overview"].refresh(1, "24h", None),
        "overview-7d": lambda: pages["overview"].refresh(1, "7d", None),
        "recipes": lambda: (pages["recipes"].layout(), pages["recipes"].refresh(1, None, None, None, None, badges)),
        "queue": lambda: pages["queue"].layout(),
        "maintenance": lambda: (pages["maintenance"].layout(), pages["maintenance"].refresh_status(1, 0),
                                pages["maintenance"].refresh_minimums(0)),
    }


def _timed(rt, fn, timings: dict) -> None:
    """One cold call (in-process caches emptied first) and one warm call right after."""
    rt.invalidate()
    t0 = time.perf_counter()
    fn()
    timings["cold"].append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    fn()
    timings["warm"].append((time.perf_counter() - t0) * 1000)


def _summary(timings: dict) -> dict:
    return {name: {state: {"p50": round(common.percentile(ms, 50), 1), "p95": round(common.percentile(ms, 95), 1)}
                   for state, ms in t.items()} for name, t in timings.items()}


def roll_up(url: str) -> dict:
    """What the scheduler's ``stats-rollup`` and ``demand-rollup`` jobs do once a minute: the
    closed hours into ``stat_counts`` (the 7-day overview reads them), the closed minutes'
    instant attempts into ``demand_minutes`` (the hit rate and the forecast read them). Here the
    whole seeded history, timed."""
    from delula import demand, overview
    from delula.config import Settings
    from delula.runtime import Runtime

    rt = Runtime.from_settings(Settings.from_env(database_url=url, scheduler=False), pool_size=1)
    t0, runs, rows = time.perf_counter(), [], 0
    while not runs or runs[-1]["hoursRolled"]:
        runs.append(overview.roll_up(rt))
        rows += runs[-1].get("rows", 0)
    seconds = time.perf_counter() - t0
    t0, demand_runs = time.perf_counter(), []
    while len(demand_runs) < 2 or demand_runs[-1].get("until") != demand_runs[-2].get("until"):
        demand_runs.append(demand.roll_up(rt))   # a day a run, until a run ends where the last did
    demand_seconds = time.perf_counter() - t0
    rt.close()
    log(f"rolled up {sum(r['hoursRolled'] for r in runs)} hours in {seconds:.1f} s, "
        f"demand minutes in {demand_seconds:.1f} s")
    return {"hours": sum(r["hoursRolled"] for r in runs), "runs": len(runs) - 1, "rows": rows,
            "seconds": round(seconds, 2), "demandRuns": len(demand_runs) - 1,
            "demandRows": sum(r["rows"] for r in demand_runs), "demandSeconds": round(demand_seconds, 2)}


def measure(url: str, repeat: int) -> dict:
    import gc

    import app as app_module
    from delula import auth
    from delula.config import Settings
    from delula.runtime import Runtime

    rt = Runtime.from_settings(Settings.from_env(database_url=url, scheduler=False), pool_size=4)
    admin, _ = auth.create_user(rt, "bench-ops", role="ops", with_token=False)
    dash_app = app_module.create_app(rt, start_scheduler=False)
    pages = {name: importlib.import_module(f"pages.{name}") for name in ("overview", "recipes", "queue", "maintenance")}
    start_session = importlib.import_module("pages.access").start_session
    data, builds = _data_calls(rt, pages), _page_builds(rt, pages)
    recorder = Statements(rt.store.engine)
    data_ms = {name: {"cold": [], "warm": []} for name in data}
    page_ms = {name: {"cold": [], "warm": []} for name in builds}
    with dash_app.server.test_request_context("/"):
        start_session(admin.id, admin.session_epoch)
        for name, build in builds.items():  # once, recording the SQL, and to load the code
            recorder.on = True
            rt.invalidate()
            build()
            data[name]()
            recorder.on = False
        for i in range(repeat):
            log(f"round {i + 1}/{repeat}")
            for name in builds:
                gc.collect()  # a collection of the previous build's garbage is not this one's time
                _timed(rt, data[name], data_ms[name])
                gc.collect()
                _timed(rt, builds[name], page_ms[name])
    rt.close()
    return {"data": _summary(data_ms), "pages": _summary(page_ms), "statements": recorder.seen}


def main(argv=None) -> dict:
    args = parse_args(argv)
    with common.throwaway_database(args.database_url, args.db_name, keep=args.keep) as url:
        seed(url, args)
        rolled = roll_up(url)
        measured = measure(url, args.repeat)
        bad = seq_scans_of_generations(url, measured["statements"])
        counts = {t: common.scalar(url, f"SELECT count(*) FROM {t}")
                  for t in ("generations", "claim_events", "queue_samples", "recipes", "users")}
    result = {"benchmark": "dashboard", "rows": counts, "repeat": args.repeat, "rollUp": rolled,
              "dataMs": measured["data"], "pagesMs": measured["pages"],
              "worstColdDataP95Ms": max(v["cold"]["p95"] for v in measured["data"].values()),
              "worstColdPageP95Ms": max(v["cold"]["p95"] for v in measured["pages"].values()),
              "statementsExplained": len(measured["statements"]), "seqScansOfGenerations": bad}
    common.emit(result)
    return result


if __name__ == "__main__":
    main()
