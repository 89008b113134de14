"""What the benchmarks share: a throwaway PostgreSQL database, bulk seeding in SQL, percentiles.

Every script creates its own database on the server named by ``--database-url`` (its database
part is only where to connect for CREATE DATABASE), migrates it with the project's migrations,
seeds it with ``INSERT … SELECT generate_series`` (seconds, not minutes, for millions of rows)
and drops it at the end unless ``--keep``.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

DEFAULT_SERVER = os.environ.get("DELULA_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def libpq_url(url: str) -> str:
    """The same URL as psycopg/libpq wants it (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    base, _, _ = libpq_url(url).rpartition("/")
    return f"{base}/{name}"


@contextmanager
def throwaway_database(server_url: str, name: str, *, keep: bool = False, reuse: bool = False):
    """Create database ``name`` (dropping an old one), yield its SQLAlchemy URL, drop it after.
    ``reuse``: the database is there (an earlier run's ``keep``); use it as it is."""
    admin = libpq_url(server_url)
    if not reuse:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server_url, name).replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def migrate(url: str) -> None:
    from delula import storage

    store = storage.Store(url, pool_size=1)
    try:
        storage.upgrade(store)
    finally:
        store.engine.dispose()


def execute(url: str, *statements: str, params: dict | None = None) -> None:
    """Run SQL statements in one autocommit connection (seeding, VACUUM, ANALYZE)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt, params or {})


def scalar(url: str, query: str, params: dict | None = None):
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        return conn.execute(query, params or {}).fetchone()[0]


# --- seeding ---------------------------------------------------------------------------------------

def seed_system_user(url: str) -> None:
    execute(url, """INSERT INTO users (id, username, role, credits, created_at)
                    VALUES ('system_backlog', 'system_backlog', 'system', 0, now()) ON CONFLICT DO NOTHING""")


def seed_users(url: str, n: int, credits: int, prefix: str = "u") -> None:
    """``n`` users ``{prefix}1…`` with ``credits`` each, granted by a ledger row (so it reconciles)."""
    execute(url,
            f"""INSERT INTO users (id, username, role, credits, created_at)
                SELECT '{prefix}' || i, 'bench_{prefix}' || i, 'user', {credits}, now() - interval '30 days'
                FROM generate_series(1, {n}) i""",
            f"""INSERT INTO credit_transactions (user_id, amount, balance_after, kind, created_at)
                SELECT '{prefix}' || i, {credits}, {credits}, 'grant', now() - interval '30 days'
                FROM generate_series(1, {n}) i""")


def seed_recipes(url: str, n: int, *, cost: int = 1, min_backlog: int | None = None) -> None:
    variables = json.dumps([{"id": "mood", "label": "Mood", "type": "dropdown",
                             "options": [{"value": "calm", "label": "Calm"}, {"value": "wild", "label": "Wild"}]}])
    execute(url, f"""INSERT INTO recipes (name, slug, description, credit_cost, is_active, model_id, variables,
                                          min_backlog, usage_count, created_at)
                     SELECT 'Recipe ' || i, 'recipe-' || i, 'benchmark recipe', {cost}, true, 'fal-ai/veo3/fast',
                            %(variables)s::jsonb, {'NULL' if min_backlog is None else min_backlog}, 0,
                            now() - interval '60 days'
                     FROM generate_series(1, {n}) i""", params={"variables": variables})


def seed_generations(url: str, n: int, *, recipes: int, owner: str, status: str = "completed",
                     recipe_offset: int = 0, spread: str = "1 day", instant: bool = False,
                     users: int | None = None, source: str = "backlog") -> None:
    """``n`` generations spread over ``recipes`` recipes, created over the last ``spread``.

    ``owner`` is a user id, or ``"users"`` to spread them over ``u1…u{users}``.
    """
    who = f"'u' || (1 + (i::bigint * 7919) %% {users})" if owner == "users" else f"'{owner}'"
    meta = {"source": source, **({"isInstant": True} if instant else {})}
    done = status == "completed"
    execute(url, f"""
        INSERT INTO generations (user_id, recipe_id, status, form_data, metadata, priority, attempts, poll_count,
                                 started_at, completed_at, asset_url, thumbnail_url, credits_charged, refunded,
                                 created_at, updated_at)
        SELECT {who}, {recipe_offset} + 1 + (i %% {recipes}), '{status}', '{{"mood": "calm"}}'::jsonb,
               %(meta)s::jsonb, 10, 1, 5,
               t + interval '5 seconds', {"t + interval '90 seconds'" if done else "NULL"},
               {"'/sim/fal/files/x/video.svg'" if done else "NULL"}, {"'/sim/fal/files/x/thumb.svg'" if done else "NULL"},
               0, false, t, t + interval '90 seconds'
        FROM (SELECT i, now() - interval '{spread}' + (interval '{spread}' * i / {n}) AS t
              FROM generate_series(1, {n}) i) s""", params={"meta": json.dumps(meta)})


# --- numbers -----------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(ms: list[float]) -> dict:
    return {"p50": _r(percentile(ms, 50)), "p95": _r(percentile(ms, 95)), "p99": _r(percentile(ms, 99)),
            "max": _r(max(ms) if ms else None)}


def median(values):
    return statistics.median(values) if values else None


def _r(x, nd: int = 2):
    return None if x is None else round(x, nd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def emit(result: dict) -> None:
    print(json.dumps(result, indent=2))
