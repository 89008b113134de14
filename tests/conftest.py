"""Shared fixtures: real databases, migrated with Alembic once per session.

PostgreSQL comes from ``DELULA_TEST_DATABASE_URL`` if set, else the server on 127.0.0.1:5432 if it
answers, else a throwaway cluster when ``initdb``/``pg_ctl`` exist; otherwise PostgreSQL tests are
skipped — or fail, when ``DELULA_REQUIRE_POSTGRES=1``. The schema is migrated once into a template
database; each test gets its own copy (``CREATE DATABASE … TEMPLATE``) and drops it afterwards.
SQLite tests copy a migrated template file the same way.

The helpers the fixtures use, and the test modules share, are in ``tests/support``.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time

import psycopg
import pytest

from delula import auth, storage
from delula.runtime import Runtime
from tests.support import browser as browsers
from tests.support import dash
from tests.support.db import Cluster, admin_exec, answers, can_make_clusters, database_url, test_settings
from tests.support.db import skip_or_fail as _skip_or_fail

_counter = itertools.count()


def pytest_configure(config):
    for name, doc in [("postgres", "needs PostgreSQL"), ("browser", "needs Chromium + ChromeDriver"),
                      ("slow", "takes more than a few seconds (still run by .ci/run)")]:
        config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.fixture(scope="session")
def pg_admin():
    """``(conninfo, sqlalchemy_base_url)`` of a PostgreSQL server we may create databases on."""
    cluster = None
    url = os.environ.get("DELULA_TEST_DATABASE_URL")
    if url:
        conninfo = storage.db.normalise_url(url).replace("postgresql+psycopg://", "postgresql://")
        if not answers(conninfo):
            _skip_or_fail(f"DELULA_TEST_DATABASE_URL={url} does not answer")
    elif answers("host=127.0.0.1 port=5432 user=postgres dbname=postgres"):
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


@pytest.fixture(scope="session")
def pg_template(pg_admin):
    name = f"delula_t{os.getpid()}_template"
    admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_exec(pg_admin, f'CREATE DATABASE "{name}"')
    store = storage.Store(database_url(pg_admin, name))
    storage.upgrade(store)
    store.dispose()
    yield name
    admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_admin, pg_template):
    """A fresh, migrated PostgreSQL database for one test (dropped afterwards)."""
    name = f"delula_t{os.getpid()}_{next(_counter)}"
    for attempt in range(20):  # the template may still be busy for a moment
        try:
            admin_exec(pg_admin, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
            break
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1)
    else:
        raise RuntimeError("template database stayed busy")
    yield database_url(pg_admin, name)
    admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
    runtime = make_runtime(db_url)
    auth.ensure_system_user(runtime)
    return runtime


@pytest.fixture
def pg_rt(pg_url, make_runtime):
    runtime = make_runtime(pg_url, pool_size=40)
    auth.ensure_system_user(runtime)
    return runtime


@pytest.fixture
def env(rt):
    """The API's world on SQLite and PostgreSQL (:func:`tests.support.factories.world`: users of
    every role with tokens, recipes, a pool) with ``rt`` and a Flask test ``client`` of the API."""
    from tests.support.api import make_app
    from tests.support.factories import world as api_world

    w = api_world(rt)
    w.rt = rt
    w.client = make_app(rt).test_client()
    return w


@pytest.fixture
def world(db_url, make_runtime):
    """The whole app on a fresh database (SQLite and PostgreSQL) with a user of each role:
    ``(rt, dash_app, users, failed_job_id)`` (:func:`tests.support.dash.app_world`)."""
    rt = make_runtime(db_url)
    auth.ensure_system_user(rt)
    return dash.app_world(rt)


@pytest.fixture
def live_app(sqlite_url, make_runtime):
    """The whole app on a fresh SQLite database, demo data seeded, scheduler off, served in a
    thread (:mod:`tests.support.browser`)."""
    browsers.require_browser()
    rt = make_runtime(sqlite_url, admin_password=browsers.ADMIN_PASSWORD)
    live = browsers.start_live_app(rt)
    yield live
    live.stop()


@pytest.fixture
def browser(request):
    """The session's Chromium, with no cookies left from an earlier test."""
    browsers.require_browser()
    driver = browsers.session_driver(request.config)
    driver.delete_all_cookies()
    b = browsers.Browser(driver)
    b.console_errors()  # drop what earlier tests logged
    yield b
    driver.get("about:blank")   # a dashboard left open keeps refreshing, using CPU for the rest of the run
    driver.delete_all_cookies()
