"""Databases for tests: settings, admin statements, throwaway PostgreSQL clusters (and skipping,
or failing, without them), and what the data looks like (everything a refused request must leave unchanged, the claim events recorded)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from delula.config import Settings
from delula.storage.models import (ClaimEvent, CreditTransaction, Generation, IdempotencyKey, Recipe, RecipeUsageOption,
                                   User)


def answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(admin: str, name: str) -> str:
    """The SQLAlchemy URL of database ``name`` on the server of the libpq URL ``admin``."""
    base = admin.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+psycopg://") + "/" + name


def admin_exec(admin: str, sql: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql)


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder: the fallback when no server runs, and
    a server of a test's own that it may halt and start at will."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="delula-pg-"))
        self.port = free_port()
        prefix = []
        if os.geteuid() == 0:  # initdb refuses root: run as the postgres user
            shutil.chown(self.dir, "postgres")
            prefix = ["runuser", "-u", "postgres", "--"]
        self.prefix = prefix
        subprocess.run(prefix + [pg_binary("initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True)
        self.start()
        self.conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        subprocess.run(self.prefix + [pg_binary("pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
                                      "-w", "-o", f"-p {self.port} -k {self.dir} -h 127.0.0.1", "start"],
                       check=True, capture_output=True)

    def halt(self):
        """Stop the server at once (connections are cut), keeping the data for :meth:`start`."""
        subprocess.run(self.prefix + [pg_binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w",
                                      "stop"], check=True, capture_output=True)

    def stop(self):
        subprocess.run(self.prefix + [pg_binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def pg_binary(name: str) -> str:
    """A PostgreSQL server program: on the PATH, else from Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(name)
    return str(candidates[-1])


def can_make_clusters() -> bool:
    try:
        pg_binary("initdb"), pg_binary("pg_ctl")
        return True
    except FileNotFoundError:
        return False


REQUIRE_POSTGRES = os.environ.get("DELULA_REQUIRE_POSTGRES") == "1"


def skip_or_fail(reason: str):
    """Skip a test that cannot run here (no PostgreSQL, or a tool missing: initdb, pg_ctl,
    pgbench) — or fail it, when ``DELULA_REQUIRE_POSTGRES=1`` asks for every such test to run."""
    if REQUIRE_POSTGRES:
        pytest.fail(f"PostgreSQL required (DELULA_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(reason)


def require_clusters() -> None:
    """For a test that makes a cluster of its own: :func:`skip_or_fail` without initdb/pg_ctl."""
    if not can_make_clusters():
        skip_or_fail("needs initdb/pg_ctl for a cluster of the test's own")


def test_settings(url: str, **overrides) -> Settings:
    """Settings for tests: the given database, no cooldown, instant simulator, no env reading."""
    base = dict(database_url=url, instant_cooldown_s=0, simulator_duration=(0.0, 0.0),
                simulator_failure_rate=0.0, scheduler=False)
    base.update(overrides)
    return Settings(**base)


test_settings.__test__ = False  # not a test, despite the name


def wait_for_a_lock_wait(rt, timeout: float = 10.0) -> None:
    """Until a session of ``rt``'s PostgreSQL database waits for a lock (a transaction of the
    test has made another block on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.store.begin() as s:
            if s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND datname = current_database()")).scalar():
                return
        time.sleep(0.02)
    raise AssertionError("nobody waited for a lock")


def db_snapshot(rt) -> dict:
    """Everything a refused request must leave unchanged."""
    with rt.store.begin() as s:
        return {
            "ledger": sorted((t.id, t.user_id, t.amount) for t in s.query(CreditTransaction)),
            "events": s.query(ClaimEvent).count(),
            "generations": sorted((g.id, g.user_id, g.status, json.dumps(g.meta, sort_keys=True))
                                  for g in s.query(Generation)),
            "keys": s.query(IdempotencyKey).count(),
            "credits": sorted((u.id, u.credits) for u in s.query(User)),
            "usage": sorted((r.id, r.usage_count) for r in s.query(Recipe)),
            "options": sorted((o.recipe_id, o.variable_id, o.value, o.count) for o in s.query(RecipeUsageOption)),
        }


def events(rt) -> list[str]:
    """The outcomes of the claim events recorded, oldest first."""
    with rt.store.begin() as s:
        return [e.outcome for e in s.query(ClaimEvent).order_by(ClaimEvent.id)]
