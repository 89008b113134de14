"""The Content page's data on a big database: ``content.snapshot`` per time range, cold and warm,
and the plans of its statements.

    python bench/content.py --database-url postgresql://postgres@127.0.0.1/postgres

Seeds, over 30 days and 200 recipes (a dropdown of six values, a slider of five, a free-text
field): 1,000,000 claimed backlog items, each with its claim event (waited 1 s to 2 h in the
pool; three in ten asked for a value, one in ten of those handed another item), 300,000 misses
asking for a value, 200,000 refused attempts without choices, 50,000 expired and 20,000 rejected
items (five reasons) and 200,000 users' own jobs (all but the recipes in proportion to
``--claims``). Then, ``--repeat`` times per range (1 h, 24 h,
7 d, 30 d): ``dataMs``, the snapshot with the in-process cache emptied (cold) and again (warm),
and ``pageMs``, the snapshot (cold) plus the page's tiles and five figures. Every SQL statement
the snapshots ran is EXPLAINed: none may plan a sequential scan of ``generations``. Prints p50/p95
per range (ms) as JSON.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import time

import common
from common import log
from dashboard import Statements, seq_scans_of_generations

RANGES = ("1h", "24h", "7d", "30d")
VARIABLES = [
    {"id": "style", "label": "Style", "type": "dropdown",
     "options": [{"value": f"s{i}", "label": f"Style {i}"} for i in range(6)]},
    {"id": "level", "label": "Level", "type": "slider", "min": 1, "max": 5, "step": 1},
    {"id": "caption", "label": "Caption", "type": "text", "maxLength": 40},
]
REASONS = ("too dark", "watermark detected", "blurry", "wrong aspect ratio", "silent audio")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=common.DEFAULT_SERVER)
    p.add_argument("--claims", type=int, default=1_000_000)
    p.add_argument("--recipes", type=int, default=200)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=7, help="timed snapshots per range and cache state")
    p.add_argument("--db-name", default="delula_bench_content", help="the benchmark database (dropped and created)")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def seed(url: str, args) -> None:
    t0 = time.perf_counter()
    common.migrate(url)
    common.seed_system_user(url)
    common.seed_users(url, args.users, credits=50)
    common.seed_recipes(url, args.recipes)
    common.execute(url, "UPDATE recipes SET variables = %(v)s::jsonb", params={"v": json.dumps(VARIABLES)})
    n, r, u = args.claims, args.recipes, args.users
    log(f"seeding {n:,} claimed items with their claim events …")
    # a claimed item: created_at is the claim time, completed_at that less its wait in the pool
    common.execute(url, f"""
        INSERT INTO generations (user_id, recipe_id, status, form_data, metadata, priority, attempts, poll_count,
                                 started_at, completed_at, asset_url, credits_charged, refunded, created_at, updated_at)
        SELECT 'u' || (1 + (i::bigint * 7919) %% {u}), 1 + i %% {r}, 'completed',
               jsonb_build_object('style', 's' || (i * 7 %% 6), 'level', 1 + i %% 5, 'caption', 'free text ' || i),
               '{{"source": "backlog", "isInstant": true}}'::jsonb, 10, 1, 5,
               t - make_interval(secs => 1 + i %% 7200) - interval '60 seconds', t - make_interval(secs => 1 + i %% 7200),
               '/sim/fal/files/x/video.svg', 1, false, t, t
        FROM (SELECT i, now() - interval '30 days' * i / {n} AS t FROM generate_series(1, {n}) i) s""")
    common.execute(url, """
        INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at, choices, matched)
        SELECT g.user_id, g.recipe_id, 'claimed', g.id, 3.0, g.created_at,
               CASE WHEN g.id %% 10 < 3 THEN jsonb_build_object('style', 's' || (g.id %% 6)) END,
               CASE WHEN g.id %% 10 < 3 THEN g.id %% 30 <> 0 END
        FROM generations g WHERE g.user_id <> 'system_backlog'""")
    misses, refused = n * 3 // 10, n // 5
    log(f"seeding {misses:,} misses with choices and {refused:,} refused attempts …")
    common.execute(url, f"""
        INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at, choices, matched)
        SELECT 'u' || (1 + i %% {u}), 1 + i %% {r}, (ARRAY['no_backlog', 'race'])[1 + i %% 2], NULL, 2.0,
               now() - interval '30 days' * i / {misses}, jsonb_build_object('style', 's' || (i %% 6)), false
        FROM generate_series(1, {misses}) i""", f"""
        INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at)
        SELECT 'u' || (1 + i %% {u}), 1 + i %% {r}, (ARRAY['insufficient_credits', 'rate_limited'])[1 + i %% 2],
               NULL, 2.0, now() - interval '30 days' * i / {refused}
        FROM generate_series(1, {refused}) i""")
    log("seeding waste and users' own jobs …")
    reasons = "ARRAY[" + ", ".join(f"'{x}'" for x in REASONS) + "]"
    for status, count, error in (("expired", n // 20, "NULL"), ("rejected", n // 50, f"({reasons})[1 + i %% 5]")):
        common.execute(url, f"""
            INSERT INTO generations (user_id, recipe_id, status, form_data, metadata, priority, attempts, poll_count,
                                     completed_at, error, credits_charged, refunded, created_at, updated_at)
            SELECT 'system_backlog', 1 + i %% {r}, '{status}', '{{"style": "s1", "level": 2}}'::jsonb,
                   '{{"source": "backlog"}}'::jsonb, 10, 1, 5, t, {error}, 0, false, t - interval '1 hour', t
            FROM (SELECT i, now() - interval '30 days' * i / {count} AS t FROM generate_series(1, {count}) i) s""")
    common.seed_generations(url, n // 5, recipes=r, owner="users", users=u, spread="30 days", source="user")
    common.execute(url, "VACUUM ANALYZE")
    log(f"seeded in {time.perf_counter() - t0:.0f} s")


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def measure(url: str, repeat: int) -> dict:
    import app as app_module
    from delula import content
    from delula.config import Settings
    from delula.runtime import Runtime

    rt = Runtime.from_settings(Settings.from_env(database_url=url, scheduler=False), pool_size=4)
    app_module.create_app(rt, start_scheduler=False)   # Dash executes the page modules
    page = importlib.import_module("pages.content")
    recorder = Statements(rt.store.engine)
    data = {key: {"cold": [], "warm": []} for key in RANGES}
    built = {key: {"cold": []} for key in RANGES}
    sizes = {}
    recorder.on = True
    for key in RANGES:   # once, recording the SQL
        rt.invalidate()
        snap = content.snapshot(rt, key)
        sizes[key] = {"claimed": snap["kpis"]["claimed"], "attempts": snap["kpis"]["attempts"],
                      "wasted": snap["kpis"]["wasted"], "rows": len(snap["claimed"]) + len(snap["missed"])}
    recorder.on = False
    for i in range(repeat):
        log(f"round {i + 1}/{repeat}")
        for key in RANGES:
            gc.collect()
            rt.invalidate()
            t0 = time.perf_counter()
            content.snapshot(rt, key)
            data[key]["cold"].append(_ms(t0))
            t0 = time.perf_counter()
            content.snapshot(rt, key)
            data[key]["warm"].append(_ms(t0))
            gc.collect()
            rt.invalidate()
            t0 = time.perf_counter()
            snap = content.snapshot(rt, key)
            page.kpi_tiles(snap)
            for build in page.BUILDERS.values():
                build(snap)
            built[key]["cold"].append(_ms(t0))
    rt.close()

    def summary(timings):
        return {k: {state: {"p50": round(common.percentile(ms, 50), 1), "p95": round(common.percentile(ms, 95), 1)}
                    for state, ms in t.items()} for k, t in timings.items()}

    return {"dataMs": summary(data), "pageMs": summary(built), "sizes": sizes, "statements": recorder.seen}


def main(argv=None) -> dict:
    args = parse_args(argv)
    with common.throwaway_database(args.database_url, args.db_name, keep=args.keep) as url:
        seed(url, args)
        measured = measure(url, args.repeat)
        bad = seq_scans_of_generations(url, measured["statements"])
        counts = {t: common.scalar(url, f"SELECT count(*) FROM {t}") for t in ("generations", "claim_events")}
    result = {"benchmark": "content", "rows": counts, "repeat": args.repeat, "inRange": measured["sizes"],
              "dataMs": measured["dataMs"], "pageMs": measured["pageMs"],
              "statementsExplained": len(measured["statements"]), "seqScansOfGenerations": bad}
    common.emit(result)
    return result


if __name__ == "__main__":
    main()
