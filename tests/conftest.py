"""Shared fixtures: real databases, migrated with Alembic once per session.

PostgreSQL comes from ``DELULA_TEST_DATABASE_URL`` if set, else the server on 127.0.0.1:5432 if it
answers, else a throwaway cluster when ``initdb``/``pg_ctl`` exist; otherwise PostgreSQL tests are
skipped — or fail, when ``DELULA_REQUIRE_POSTGRES=1``. The schema is migrated once into a template
database; each test gets its own copy (``CREATE DATABASE … TEMPLATE``) and drops it afterwards.
SQLite tests copy a migrated template file the same way.
"""
from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from delula import storage
from delula.config import Settings
from delula.runtime import Runtime
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs

REQUIRE_POSTGRES = os.environ.get("DELULA_REQUIRE_POSTGRES") == "1"
_counter = itertools.count()


def pytest_configure(config):
    for name, doc in [("postgres", "needs PostgreSQL"), ("browser", "needs Chromium + ChromeDriver"),
                      ("slow", "takes more than a few seconds (still run by .ci/run)")]:
        config.addinivalue_line("markers", f"{name}: {doc}")


def _skip_or_fail(reason: str):
    if REQUIRE_POSTGRES:
        pytest.fail(f"PostgreSQL required (DELULA_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(reason)


def _answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder: the fallback when no server runs, and
    a server of a test's own that it may halt and start at will."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="delula-pg-"))
        self.port = _free_port()
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


@pytest.fixture(scope="session")
def pg_admin():
    """``(conninfo, sqlalchemy_base_url)`` of a PostgreSQL server we may create databases on."""
    cluster = None
    url = os.environ.get("DELULA_TEST_DATABASE_URL")
    if url:
        conninfo = storage.db.normalise_url(url).replace("postgresql+psycopg://", "postgresql://")
        if not _answers(conninfo):
            _skip_or_fail(f"DELULA_TEST_DATABASE_URL={url} does not answer")
    elif _answers("host=127.0.0.1 port=5432 user=postgres dbname=postgres"):
        conninfo = "postgresql://postgres@127.0.0.1:5432/postgres"
    elif can_make_clusters():
        try:
            cluster = Cluster()
        except (subprocess.CalledProcessError, OSError, LookupError) as e:
            _skip_or_fail(f"no PostgreSQL server and a throwaway cluster failed: {e}")
        conninfo = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    else:
        _skip_or_fail("no PostgreSQL server on 127.0.0.1:5432 and no initdb to make one")
    yield conninfo
    if cluster is not None:
        cluster.stop()


def _db_url(admin: str, name: str) -> str:
    base = admin.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+psycopg://") + "/" + name


def _admin_exec(admin: str, sql: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_template(pg_admin):
    name = f"delula_t{os.getpid()}_template"
    _admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_exec(pg_admin, f'CREATE DATABASE "{name}"')
    store = storage.Store(_db_url(pg_admin, name))
    storage.upgrade(store)
    store.dispose()
    yield name
    _admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_admin, pg_template):
    """A fresh, migrated PostgreSQL database for one test (dropped afterwards)."""
    name = f"delula_t{os.getpid()}_{next(_counter)}"
    for attempt in range(20):  # the template may still be busy for a moment
        try:
            _admin_exec(pg_admin, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
            break
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1)
    else:
        raise RuntimeError("template database stayed busy")
    yield _db_url(pg_admin, name)
    _admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    store = storage.Store(f"sqlite:///{path}")
    storage.upgrade(store)
    store.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_url(sqlite_template, tmp_path):
    path = tmp_path / "delula.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request):
    """Each test using it runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


def test_settings(url: str, **overrides) -> Settings:
    """Settings for tests: the given database, no cooldown, instant simulator, no env reading."""
    base = dict(database_url=url, instant_cooldown_s=0, simulator_duration=(0.0, 0.0),
                simulator_failure_rate=0.0, scheduler=False)
    base.update(overrides)
    return Settings(**base)


test_settings.__test__ = False  # not a test, despite the name


@pytest.fixture
def make_runtime():
    """``make_runtime(url, clock=None, pool_size=10, **settings)``; closed after the test."""
    made = []

    def make(url: str, *, clock=None, pool_size: int = 10, provider=None, **overrides) -> Runtime:
        rt = Runtime.from_settings(test_settings(url, **overrides), clock=clock, pool_size=pool_size,
                                   provider=provider)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def rt(db_url, make_runtime):
    """A runtime on a fresh database (SQLite and PostgreSQL), with the system user."""
    from delula import auth

    runtime = make_runtime(db_url)
    auth.ensure_system_user(runtime)
    return runtime


@pytest.fixture
def pg_rt(pg_url, make_runtime):
    from delula import auth

    runtime = make_runtime(pg_url, pool_size=40)
    auth.ensure_system_user(runtime)
    return runtime


def pool_row(recipe_id: int, now, **overrides) -> dict:
    """The row of a finished backlog generation ready to claim, for ``jobs.add_generations``."""
    return {**dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe_id, status="completed", form_data={},
                   meta={"source": "backlog"}, priority=10, asset_url=f"/sim/fal/files/test-{recipe_id}/video.svg",
                   completed_at=now), **overrides}


def add_pool_items(rt, recipe_id: int, n: int, *, form_data: dict | None = None) -> list[int]:
    """``n`` finished backlog generations ready to claim, oldest first; returns their ids."""
    now = rt.now()
    rows = [pool_row(recipe_id, now, form_data=form_data or {},
                     asset_url=f"/sim/fal/files/test-{recipe_id}-{i}/video.svg") for i in range(n)]
    with rt.store.begin() as s:
        jobs.add_generations(s, rows, now)
        return [g.id for g in jobs.list_for_user(s, SYSTEM_BACKLOG_USER_ID, limit=100000)
                if g.recipe_id == recipe_id and g.status == "completed"]


def wait_for_a_lock_wait(rt, timeout: float = 10.0) -> None:
    """Until a session of ``rt``'s PostgreSQL database waits for a lock (a transaction of the
    test has made another block on it)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.store.begin() as s:
            if s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND datname = current_database()")).scalar():
                return
        time.sleep(0.02)
    raise AssertionError("nobody waited for a lock")
