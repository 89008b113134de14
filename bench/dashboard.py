"""The dashboard on a big database: every page's refresh callbacks over HTTP, cold, and their plans.

    python bench/dashboard.py                       # 2,000,000 generations
    python bench/dashboard.py --generations 20000000 --events 10000000

Seeds ``--generations`` generations inside the last 7 days (the window the pages show) over 200
recipes of Zipf-like popularity (recipe ``r`` about ``1/r`` of the traffic), with processing
times drawn log-normally (median 60 s, clamped to 5 s - 7 min, like real jobs): claimed items,
users' own jobs, failures, a live queue and the pool; ``--events`` claim events over the same
week (same popularity) and a week of queue samples (one every 30 s), all in bulk SQL
(``generate_series``, timed), the indexes of ``generations`` and ``claim_events`` built after the
load (timed apart). Rows go in in the order they were last written (``updated_at``; a claim
event's ``created_at``), as a live table fills: seeded in random order, a query over the last
hour read one heap page per row (claim events: 32,893 pages for 39,399 rows at 20 M). Rolls the closed hours up into ``stat_counts`` and
``demand_minutes`` as the scheduler would (timed, with the rows it stored).

Then serves the app (``app.create_app``, werkzeug, threaded, on a free port) and, signed in
through the login form as an ops user, POSTs every page's refresh callbacks to
``/_dash-update-component`` as the browser sends them on load (inputs taken from the page's
layout), plus every page's opening (the router callback that returns its layout), each
``--repeat`` times with the in-process caches emptied before each request (every claim empties
them, so under load this is what a refresh costs; the 5 s cache is never what is measured).
Prints p50/p95 ms and response bytes per request. Every SQL statement the app ran is
EXPLAINed: none may plan a sequential scan of ``generations`` or of ``stat_counts``.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

import common
from common import log

#: the refresh callbacks measured: name -> (page path, a fragment of the callback's outputs,
#: inputs set otherwise than the page's layout has them)
CALLBACKS = {
    "overview-1h": ("/", "ov-kpis.children", {"ov-range.value": "1h"}),
    "overview-24h": ("/", "ov-kpis.children", {"ov-range.value": "24h"}),
    "overview-7d": ("/", "ov-kpis.children", {"ov-range.value": "7d"}),
    "recipes": ("/recipes", "recipes-acting-as.options", {}),
    "queue": ("/queue", "queue-grid.rowData", {}),
    "maintenance-status": ("/maintenance", "mt-leader-slot.children", {}),
    "maintenance-controls": ("/maintenance", "mt-controls-slot.children", {}),
    "maintenance-minimums": ("/maintenance", "mt-minimums.children", {}),
    "maintenance-active": ("/maintenance", "mt-active.children", {}),
    "audit": ("/audit", "audit-grid.rowData", {}),
    "banner": ("/", "ops-banner.children", {}),
}
#: the pages opened (the router callback that returns a page's layout)
OPENINGS = ("/", "/recipes", "/queue", "/maintenance", "/audit")
WINDOW = "7 days"          # every seeded row lies inside the longest range the pages show


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=common.DEFAULT_SERVER)
    p.add_argument("--generations", type=int, default=2_000_000)
    p.add_argument("--events", type=int, default=None, help="claim events (default: half the generations)")
    p.add_argument("--recipes", type=int, default=200)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=15, help="timed requests per callback and page opening")
    p.add_argument("--db-name", default="delula_bench_dashboard", help="the benchmark database (dropped and created)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--reuse", action="store_true", help="measure a database kept by an earlier --keep run (no seeding)")
    args = p.parse_args(argv)
    if args.events is None:
        args.events = args.generations // 2
    return args


def _recipe(u: str, recipes: int) -> str:
    """A recipe id of Zipf-like popularity from a uniform ``u``: ``floor((R+1)^u)`` has
    P(r) = ln((r+1)/r) / ln(R+1), about 1/r."""
    return f"least({recipes}, greatest(1, floor(exp(ln({recipes + 1}) * {u}))::int))"


#: processing seconds, log-normal (median 60 s, sigma 0.9: 5 % below 14 s, 5 % above 4.4 min),
#: clamped to 5 s - 7 min; from two uniforms (Box-Muller)
DURATION = "least(420.0, greatest(5.0, exp(ln(60) + 0.9 * sqrt(-2 * ln(1 - u1)) * cos(2 * pi() * u2))))"


def _seed_jobs(conn, n: int, *, recipes: int, users: int, owner: str, status: str, source: str,
               instant: bool = False, span: str = WINDOW) -> None:
    """``n`` generations ending (or, live, created) at random times of the last ``span``."""
    if n <= 0:
        return
    who = f"'u' || (1 + (i::bigint * 7919) %% {users})" if owner == "users" else f"'{owner}'"
    meta = json.dumps({"source": source, **({"isInstant": True} if instant else {})})
    done, live = status == "completed", status in ("pending", "processing")
    # t: when it ended (or, live, was created); a claimed item's created_at is its claim, after it
    created = ("t + (now() - t) * u5 * 0.2" if instant else "t - dur * interval '1 second' - interval '3 seconds'")
    if live:
        created = "t"
    conn.execute(f"""
        INSERT INTO generations (user_id, recipe_id, status, form_data, metadata, priority, attempts, poll_count,
                                 started_at, completed_at, asset_url, thumbnail_url, credits_charged, refunded,
                                 error, created_at, updated_at)
        SELECT {who}, recipe, '{status}', '{{"mood": "calm"}}'::jsonb, %(meta)s::jsonb, 10, 1, 5,
               {"NULL" if status == "pending" else "t - dur * interval '1 second'" if not live else "t"},
               {"t" if done else "NULL"},
               {"'/sim/fal/files/x/video.svg'" if done else "NULL"}, {"'/sim/fal/files/x/thumb.svg'" if done else "NULL"},
               0, false, {"'provider error: 500'" if status == "failed" else "NULL"},
               {created}, greatest({created}, t)
        FROM (SELECT i, {_recipe("u3", recipes)} AS recipe, {DURATION} AS dur,
                     now() - interval '{span}' + interval '1 minute' + (interval '{span}' - interval '2 minutes') * u4 AS t,
                     u5
              FROM (SELECT i, random() AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5
                    FROM generate_series(1, {n}) i) r) s
        ORDER BY 17""", {"meta": meta})   # in the order of updated_at: a table is written as time goes


def seed(url: str, args) -> dict:
    import psycopg

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
    with psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        conn.execute("SELECT setseed(0.18)")
        conn.execute("SET maintenance_work_mem = '1GB'")
        deferred = _drop_secondary_indexes(conn, BULK_TABLES)  # built once after the load, not row by row
        kw = {"recipes": args.recipes, "users": args.users}
        _seed_jobs(conn, claimed, owner="users", status="completed", source="backlog", instant=True, **kw)
        _seed_jobs(conn, normal, owner="users", status="completed", source="user", **kw)
        _seed_jobs(conn, failed, owner="system_backlog", status="failed", source="backlog", **kw)
        _seed_jobs(conn, pool, owner="system_backlog", status="completed", source="backlog", span="2 days", **kw)
        _seed_jobs(conn, live - 3, owner="system_backlog", status="pending", source="backlog", span="1 hour", **kw)
        _seed_jobs(conn, 3, owner="system_backlog", status="processing", source="backlog", span="5 minutes", **kw)
        generations_s = time.perf_counter() - t0
        log(f"seeding {args.events:,} claim events and a week of queue samples …")
        conn.execute(f"""
            INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at)
            SELECT 'u' || (1 + i % {args.users}), {_recipe("u1", args.recipes)},
                   (ARRAY['claimed','claimed','claimed','claimed','claimed','claimed','no_backlog','race',
                          'insufficient_credits','rate_limited'])[1 + i % 10],
                   NULL, 2.0 + (i % 7), now() - interval '{WINDOW}' + interval '1 minute'
                                        + (interval '{WINDOW}' - interval '2 minutes') * u2
            FROM (SELECT i, random() AS u1, random() AS u2 FROM generate_series(1, {args.events}) i) r
            ORDER BY 6""")
        t1 = time.perf_counter()
        for ddl in deferred:
            conn.execute(ddl)
        indexes_s = time.perf_counter() - t1
        log(f"{len(deferred)} indexes built in {indexes_s:.0f} s")
        conn.execute("""
            INSERT INTO queue_samples (created_at, pending, processing, backlog, backlog_in_flight, recipes_below_minimum)
            SELECT now() - interval '30 seconds' * i, 5 + i % 9, i % 4, 3000 + i % 50, 20, i % 3
            FROM generate_series(0, 20159) i""")
        conn.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - t0
    log(f"seeded in {seconds:.0f} s")
    return {"seconds": round(seconds, 1), "generationsSeconds": round(generations_s, 1),
            "indexesSeconds": round(indexes_s, 1), "indexesBuiltAfterLoad": len(deferred)}


BULK_TABLES = ("generations", "claim_events")   # the tables seeded by the million


def _drop_secondary_indexes(conn, tables: tuple[str, ...]) -> list[str]:
    """Drop the indexes of ``tables`` that back no constraint (primary keys and unique keys stay)
    and return their definitions, to build each in one pass after the bulk load instead of
    entry by entry (a 20 M load otherwise spends most of its time in the indexes)."""
    rows = conn.execute("""SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
                             JOIN pg_class c ON c.oid = i.indexrelid
                            WHERE i.indrelid = ANY (%s::regclass[])
                              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
                            ORDER BY c.relname""", (list(tables),)).fetchall()
    for name, _ in rows:
        conn.execute(f'DROP INDEX "{name}"')
    return [ddl for _, ddl in rows]


class Statements:
    """Every SQL statement (with parameters) run while recording."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.engine, self.seen, self.on = engine, {}, False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if self.on and not executemany:
            self.seen.setdefault(statement, parameters)


SCANNED = ("generations", "stat_counts")     # tables no dashboard statement may scan sequentially


def seq_scans(url: str, statements: dict) -> dict[str, list[str]]:
    """``{table: [statements whose plan scans it sequentially]}`` for :data:`SCANNED`, and the
    indexes each statement's plan uses (``indexes``: statement -> index names), so every index
    the dashboard needs is shown with the statement that uses it."""
    import psycopg

    bad: dict[str, list[str]] = {t: [] for t in SCANNED}
    used: dict[str, list[str]] = {}
    with psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        for statement, params in statements.items():
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params or None).fetchone()[0]
            short = " ".join(statement.split())[:300]
            for table in SCANNED:
                if table in statement and _has_seq_scan(plan, table):
                    bad[table].append(short)
            indexes = sorted(_indexes(plan, SCANNED))
            if indexes:
                used[short] = indexes
    return {"seqScans": bad, "indexes": used}


def seq_scans_of_generations(url: str, statements: dict) -> list[str]:
    """Statements whose plan scans ``generations`` sequentially (``bench/content.py`` asks)."""
    return seq_scans(url, statements)["seqScans"]["generations"]


def _nodes(node):
    if isinstance(node, list):
        for n in node:
            yield from _nodes(n)
    elif isinstance(node, dict):
        yield node
        for v in node.values():
            if isinstance(v, (list, dict)):
                yield from _nodes(v)


def _has_seq_scan(node, relation: str) -> bool:
    return any(n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == relation for n in _nodes(node))


def _indexes(node, relations) -> set[str]:
    return {f"{n['Relation Name']}.{n['Index Name']}" for n in _nodes(node)
            if n.get("Index Name") and n.get("Relation Name") in relations}


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


def _components(tree, out: dict) -> dict:
    """``{id: props}`` of every component with an id in a layout's JSON (ids of pattern-matching
    components as their JSON, keys sorted, as Dash writes them)."""
    if isinstance(tree, list):
        for t in tree:
            _components(t, out)
    elif isinstance(tree, dict):
        props = tree.get("props") if "type" in tree and "namespace" in tree else None
        if props is not None:
            if "id" in props:
                cid = props["id"]
                out[json.dumps(cid, sort_keys=True, separators=(",", ":")) if isinstance(cid, dict) else cid] = props
            for v in props.values():
                _components(v, out)
        else:
            for v in tree.values():
                _components(v, out)
    return out


def _matches(pattern: dict, cid) -> bool:
    return isinstance(cid, dict) and set(cid) == set(pattern) and all(
        v == ["ALL"] or cid[k] == v for k, v in pattern.items())


def _dependency(spec: str, props: dict, overrides: dict, with_value: bool):
    """One entry of a callback body (an input, state or output) as the browser sends it; a
    pattern-matching ``ALL`` id becomes the list of the layout's matching components."""
    cid, _, prop = spec.rpartition(".")
    prop = prop.partition("@")[0]
    if cid.startswith("{"):
        pattern = json.loads(cid)
        found = [(json.loads(k), p) for k, p in props.items() if k.startswith("{") and _matches(pattern, json.loads(k))]
        return [{"id": c, "property": prop, **({"value": c if prop == "id" else p.get(prop)} if with_value else {})}
                for c, p in found]
    entry = {"id": cid, "property": prop}
    if with_value:
        entry["value"] = overrides.get(f"{cid}.{prop}", props.get(cid, {}).get(prop))
    return entry


def callback_body(dash_app, fragment: str, props: dict, overrides: dict) -> dict:
    """The body the browser POSTs for the callback whose outputs include ``fragment``, its inputs
    as the page's layout (``props``) has them, changed by ``overrides``."""
    key = next(k for k in dash_app.callback_map if fragment in k)
    spec = dash_app.callback_map[key]
    outputs = [_dependency(part, props, {}, False) for part in key.strip(".").split("...")]
    inputs = [_dependency(f"{d['id']}.{d['property']}", props, overrides, True) for d in spec["inputs"]]
    state = [_dependency(f"{d['id']}.{d['property']}", props, overrides, True) for d in spec.get("state", [])]
    first = inputs[0] if isinstance(inputs[0], dict) else (inputs[0] or [{"id": "", "property": ""}])[0]
    changed = json.dumps(first["id"], sort_keys=True, separators=(",", ":")) if isinstance(first["id"], dict) else first["id"]
    return {"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0], "inputs": inputs, "state": state,
            "changedPropIds": [f"{changed}.{first['property']}"]}


class _Server:
    """The app served by werkzeug (threaded) on a free port, in this process: so the bench can
    empty the app's in-process caches before each request, as a claim does."""

    def __init__(self, flask_app):
        import logging

        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)    # no line per request

        self.port = common.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = make_server("127.0.0.1", self.port, flask_app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def _sign_in(base: str, username: str, password: str):
    import re

    import requests

    http = requests.Session()
    page = http.get(f"{base}/login", timeout=30).text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = http.post(f"{base}/login", data={"username": username, "password": password, "csrf": token, "next": "/"},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text[:300]
    return http


def measure(url: str, repeat: int) -> dict:
    import gc

    import app as app_module
    from delula import auth
    from delula.config import Settings
    from delula.runtime import Runtime

    rt = Runtime.from_settings(Settings.from_env(database_url=url, scheduler=False), pool_size=4)
    password = "bench-ops-password-1"
    if auth.get_user(rt, username="bench-ops") is None:
        auth.create_user(rt, "bench-ops", role="ops", password=password, with_token=False)
    dash_app = app_module.create_app(rt, start_scheduler=False)
    recorder = Statements(rt.store.engine)
    router = next(k for k in dash_app.callback_map if "_pages_content.children" in k)
    requests_: dict[str, dict] = {}
    with _Server(dash_app.server) as server:
        http = _sign_in(server.base, "bench-ops", password)
        layouts: dict[str, dict] = {}
        for path in OPENINGS:
            body = {"output": router, "outputs": [{"id": "_pages_content", "property": "children"},
                                                  {"id": "_pages_store", "property": "data"}],
                    "inputs": [{"id": "_pages_location", "property": "pathname", "value": path},
                               {"id": "_pages_location", "property": "search", "value": ""}],
                    "state": [], "changedPropIds": ["_pages_location.pathname"]}
            requests_[f"open {path}"] = body
            r = http.post(f"{server.base}/_dash-update-component", json=body, timeout=60)
            r.raise_for_status()
            layouts[path] = _components(r.json()["response"]["_pages_content"]["children"], {})
        shell = {"page-visibility": {"data": "visible"}, "ops-banner-tick": {"n_intervals": 0}}   # the app's frame
        for name, (path, fragment, overrides) in CALLBACKS.items():
            props = {**shell, **layouts[path]}
            requests_[name] = callback_body(dash_app, fragment, props, overrides)
        timings = {name: [] for name in requests_}
        sizes, statuses = {}, {}

        def post(name):
            rt.invalidate()
            gc.collect()   # a collection of the previous request's garbage is not this one's time
            t0 = time.perf_counter()
            r = http.post(f"{server.base}/_dash-update-component", json=requests_[name], timeout=120)
            ms = (time.perf_counter() - t0) * 1000
            sizes[name], statuses[name] = len(r.content), r.status_code
            return ms

        recorder.on = True
        for name in requests_:          # once, recording the SQL, and to load the code
            post(name)
        recorder.on = False
        for i in range(repeat):
            log(f"round {i + 1}/{repeat}")
            for name in requests_:
                timings[name].append(post(name))
    rt.close()
    summary = {name: {"p50": round(common.percentile(ms, 50), 1), "p95": round(common.percentile(ms, 95), 1),
                      "bytes": sizes[name], "status": statuses[name]} for name, ms in timings.items()}
    return {"requests": summary, "statements": recorder.seen}


def main(argv=None) -> dict:
    args = parse_args(argv)
    with common.throwaway_database(args.database_url, args.db_name, keep=args.keep or args.reuse,
                                   reuse=args.reuse) as url:
        if args.reuse:      # a kept database, perhaps of older code: migrate it (timed), roll up afresh
            seeded, t0 = None, time.perf_counter()
            common.migrate(url)
            migrated = round(time.perf_counter() - t0, 1)
            common.execute(url, "DELETE FROM stat_counts", "DELETE FROM app_settings WHERE key = 'stat_counts_until'",
                           "VACUUM ANALYZE stat_counts")
        else:
            seeded, migrated = seed(url, args), None
        rolled = roll_up(url)
        common.execute(url, "VACUUM ANALYZE stat_counts")
        measured = measure(url, args.repeat)
        explained = seq_scans(url, measured["statements"])
        counts = {t: common.scalar(url, f"SELECT count(*) FROM {t}")
                  for t in ("generations", "claim_events", "queue_samples", "recipes", "users", "stat_counts")}
    reqs = measured["requests"]
    result = {"benchmark": "dashboard", "rows": counts, "repeat": args.repeat, "seed": seeded, "migrationSeconds": migrated,
              "rollUp": rolled,
              "requestsMs": reqs,
              "worstCallbackP95Ms": max(v["p95"] for k, v in reqs.items() if not k.startswith("open ")),
              "worstOpeningP95Ms": max(v["p95"] for k, v in reqs.items() if k.startswith("open ")),
              "failedRequests": sorted(k for k, v in reqs.items() if v["status"] >= 400),
              "statementsExplained": len(measured["statements"]),
              "seqScansOfGenerations": explained["seqScans"]["generations"],
              "seqScansOfStatCounts": explained["seqScans"]["stat_counts"],
              "indexesUsed": explained["indexes"]}
    common.emit(result)
    return result


if __name__ == "__main__":
    main()
