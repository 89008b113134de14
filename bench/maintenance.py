"""One backlog maintenance pass over many recipes: its time, and its SQL statements counted.

    python bench/maintenance.py --database-url postgresql://postgres@127.0.0.1/postgres --recipes 1000

Seeds ``--recipes`` active recipes (each with usage statistics and a week of history: completed
backlog items, claims, failures) and times ``delula.backlog.maintain`` — the pass that creates the
missing backlog jobs of every recipe in one bulk insert. The same pass on ``--small`` recipes is
counted too: the number of SQL statements must not grow with the number of recipes. Runs
``--runs`` passes on fresh copies of the data and prints the median. JSON on stdout.
"""
from __future__ import annotations

import argparse
import time

import common
from common import log


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=common.DEFAULT_SERVER)
    p.add_argument("--recipes", type=int, default=1000)
    p.add_argument("--small", type=int, default=10, help="the recipe count to compare statements with")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--db-name", default="delula_bench_maintenance", help="the benchmark database (dropped and created)")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def seed(url: str, recipes: int) -> None:
    common.migrate(url)
    common.seed_system_user(url)
    common.seed_users(url, 200, credits=100)
    common.seed_recipes(url, recipes)
    common.execute(url, f"""INSERT INTO recipe_usage_options (recipe_id, variable_id, value, count)
                            SELECT r, 'mood', v, c FROM generate_series(1, {recipes}) r,
                                   (VALUES ('"calm"', 40), ('"wild"', 7)) o(v, c)""")
    # a day of history per recipe: claimed items (demand), a few ready ones, failures to clean up
    common.seed_generations(url, recipes * 20, recipes=recipes, owner="users", users=200, spread="1 day",
                            instant=True)
    common.seed_generations(url, recipes, recipes=recipes, owner="system_backlog", spread="1 day")
    common.seed_generations(url, recipes * 2, recipes=recipes, owner="system_backlog", status="failed",
                            spread="3 days")
    common.execute(url, """INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at)
                           SELECT user_id, recipe_id, 'claimed', id, 3.0, now() - (random() * interval '50 minutes')
                           FROM generations WHERE user_id LIKE 'u%%'""", "VACUUM ANALYZE")


def one_pass(url: str) -> dict:
    from sqlalchemy import event

    from delula import backlog
    from delula.config import Settings
    from delula.runtime import Runtime

    rt = Runtime.from_settings(Settings.from_env(database_url=url, scheduler=False), pool_size=2)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    try:
        with rt.store.begin() as s:  # connect before timing
            s.connection()
        event.listen(rt.store.engine, "before_cursor_execute", count)
        t0 = time.perf_counter()
        result = backlog.maintain(rt)
        seconds = time.perf_counter() - t0
    finally:
        rt.close()
    return {"seconds": seconds, "statements": len(statements), "created": result["createdTotal"],
            "cleanedUp": result["cleanedUp"]}


def measure(server: str, db_name: str, recipes: int, runs: int, keep: bool) -> dict:
    passes = []
    for i in range(runs):
        with common.throwaway_database(server, db_name, keep=keep and i == runs - 1) as url:
            seed(url, recipes)
            passes.append(one_pass(url))
            log(f"{recipes} recipes, run {i + 1}: {passes[-1]['seconds'] * 1000:.0f} ms, "
                f"{passes[-1]['statements']} statements, {passes[-1]['created']} jobs created")
    return {"recipes": recipes, "runs": runs,
            "medianSeconds": round(common.median([p["seconds"] for p in passes]), 4),
            "statements": sorted({p["statements"] for p in passes}),
            "jobsCreated": passes[-1]["created"], "failedCleanedUp": passes[-1]["cleanedUp"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    big = measure(args.database_url, args.db_name, args.recipes, args.runs, args.keep)
    small = measure(args.database_url, args.db_name, args.small, 1, False)
    result = {"benchmark": "maintenance", "pass": big, "small": small,
              "statementsIndependentOfRecipes": big["statements"] == small["statements"]}
    common.emit(result)
    return result


if __name__ == "__main__":
    main()
