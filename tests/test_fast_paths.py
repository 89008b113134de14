"""The shortcuts the benchmarks led to keep their promises.

- The keyless instant claim runs in autocommit on PostgreSQL (one function call, no
  BEGIN/COMMIT: ``Store.call``); it commits on its own and sees what other transactions did.
  ``Store.single_statement`` is autocommit on PostgreSQL only.
- ``Store.call``, the same statement on the driver's own cursor: it commits by itself, hands the
  connection back to transactions, keeps a connection an error of the statement left usable and
  discards one that died under it (``DatabaseUnavailable``, the next call on a fresh one).
- The pool's check of a connection before use (instead of a ``SELECT 1`` per checkout): a
  connection the server terminated while it sat in the pool is replaced, not handed out — also
  when the backend is told to terminate but has not closed its socket yet (the transaction's
  ``BEGIN`` is sent at checkout, and its failure replaces the connection).
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from delula import auth, claims, recipes
from delula.storage import db
from delula.storage.models import ClaimEvent, Generation
from tests.support.factories import add_pool_items

pytestmark = pytest.mark.postgres


def test_keyless_claim_commits_by_itself_and_keyed_claim_still_replays(pg_rt):
    recipe = recipes.create_recipe(pg_rt, name="Fast", credit_cost=2)
    ids = sorted(add_pool_items(pg_rt, recipe.id, 3))  # oldest first
    user, _ = auth.create_user(pg_rt, "fast", credits=10, with_token=False)
    first = claims.instant_claim(pg_rt, recipe_id=recipe.id, user_id=user.id)
    assert first.ok and first.generation["id"] == ids[0] and first.body["creditsRemaining"] == 8
    keyed = claims.instant_claim(pg_rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="k-1")
    again = claims.instant_claim(pg_rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="k-1")
    assert keyed.ok and again.replayed and again.body == keyed.body
    with pg_rt.store.begin() as s:  # another session sees both claims: they were committed
        owners = dict(s.execute(text("SELECT id, user_id FROM generations WHERE id = ANY(:ids)"),
                                {"ids": ids}).all())
        assert owners == {ids[0]: user.id, ids[1]: user.id, ids[2]: "system_backlog"}
        assert s.query(ClaimEvent).filter_by(outcome="claimed").count() == 2
        assert s.get(Generation, ids[0]).meta["isInstant"] is True
    assert auth.get_user(pg_rt, user_id=user.id).credits == 6


def _autocommit(s) -> bool:
    return s.connection().connection.dbapi_connection.autocommit


def test_single_statement_is_autocommit_on_postgres_only(pg_url, pg_rt):
    with pg_rt.store.single_statement() as s:
        assert _autocommit(s) is True
        s.execute(text("INSERT INTO app_settings (key, value) VALUES ('probe', 'x')"))
        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as other:
            # committed when the statement ended, before the block did
            assert other.execute("SELECT value FROM app_settings WHERE key = 'probe'").fetchone() == ("x",)
    for _ in range(3):  # the pooled connection went back to transactions
        with pg_rt.store.begin() as s:
            assert _autocommit(s) is False


def test_single_statement_on_sqlite_is_a_transaction(sqlite_url, make_runtime):
    lite = make_runtime(sqlite_url)
    with lite.store.single_statement() as s:
        assert s.in_transaction()
        assert s.execute(text("SELECT 1")).scalar() == 1


def test_a_connection_terminated_in_the_pool_is_replaced_before_use(pg_url, make_runtime):
    rt = make_runtime(pg_url, pool_size=1)
    with rt.store.begin() as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
    other = make_runtime(pg_url, pool_size=1)
    with other.store.begin() as s:
        assert s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
    for _ in range(3):  # no DatabaseUnavailable: the dead connection is never handed out
        with rt.store.begin() as s:
            assert s.execute(text("SELECT pg_backend_pid()")).scalar() != pid


def _stoppable_backend(s) -> int | None:
    """The pid of the session's backend when it is a process of this machine that this test may
    stop: its process title names this database and this connection's client port."""
    pid, dbname = s.execute(text("SELECT pg_backend_pid(), current_database()")).one()
    dbapi_conn = s.connection().connection.dbapi_connection
    try:
        with socket.fromfd(dbapi_conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
            port = sock.getsockname()[1]
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except (OSError, IndexError):
        return None
    if not (title.startswith("postgres") and f" {dbname} " in title and f"({port})" in title):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def test_a_connection_terminated_as_it_is_checked_out_is_replaced(pg_url, make_runtime, monkeypatch):
    """The race of the test above, made certain: the backend is stopped (SIGSTOP) when it is told
    to terminate, so its socket still looks idle at checkout, and resumed once the transaction's
    BEGIN is on its way: the BEGIN is answered "terminating connection", the pool connects anew,
    the transaction runs there."""
    rt = make_runtime(pg_url, pool_size=1)
    with rt.store.begin() as s:
        pid = _stoppable_backend(s)
    if pid is None:
        pytest.skip("the database's backends are not processes of this machine this test may stop")
    begins, begin = [], db._begin

    def begin_then_resume(dbapi_conn):
        if not begins:
            threading.Timer(0.2, os.kill, (pid, signal.SIGCONT)).start()
        try:
            begin(dbapi_conn)
            begins.append("ok")
        except Exception as e:
            begins.append(type(e).__name__)
            raise

    other = make_runtime(pg_url, pool_size=1)
    os.kill(pid, signal.SIGSTOP)
    try:
        with other.store.begin() as s:
            assert s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
        monkeypatch.setattr(db, "_begin", begin_then_resume)
        with rt.store.begin() as s:
            assert s.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert begins == ["DisconnectionError"]   # the new connection, just made, is used as it is


def test_recipes_leave_room_for_the_usage_counter(pg_rt):
    """Migration 0004: a hot recipe's counter updates stay on their page (HOT)."""
    with pg_rt.store.begin() as s:
        options = s.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'recipes'")).scalar()
    assert "fillfactor=10" in options and "autovacuum_vacuum_scale_factor=0" in options


def test_a_call_commits_by_itself_and_hands_the_connection_back_to_transactions(pg_url, make_runtime):
    rt = make_runtime(pg_url, pool_size=1)
    row = rt.store.call("INSERT INTO app_settings (key, value) VALUES (%(k)s, %(v)s) RETURNING key, value",
                        {"k": "probe", "v": "x"})
    assert (row.key, row.value) == ("probe", "x")
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as other:
        assert other.execute("SELECT value FROM app_settings WHERE key = 'probe'").fetchone() == ("x",)
    with pytest.raises(psycopg.errors.DivisionByZero):   # the statement's own error, as the driver raised it
        rt.store.call("SELECT 1 / %(zero)s AS n", {"zero": 0})
    assert rt.store.call("SELECT 2 AS n", {}).n == 2       # the same connection, still usable
    with pytest.raises(RuntimeError):
        with rt.store.begin() as s:                        # ... and transactional again: this rolls back
            assert _autocommit(s) is False
            s.execute(text("UPDATE app_settings SET value = 'y' WHERE key = 'probe'"))
            raise RuntimeError("roll back")
    assert rt.store.call("SELECT value FROM app_settings WHERE key = 'probe'", {}).value == "x"


def test_a_call_whose_connection_dies_under_it_is_unavailable_and_the_next_is_not(pg_url, make_runtime):
    rt = make_runtime(pg_url, pool_size=1)
    pid = rt.store.call("SELECT pg_backend_pid() AS pid", {}).pid
    other = make_runtime(pg_url, pool_size=1)

    def terminate_when_asleep():
        with other.store.begin() as s:
            for _ in range(200):
                if s.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE pid = :pid AND query LIKE 'SELECT pg_sleep%'"), {"pid": pid}).first():
                    return
                threading.Event().wait(0.02)

    killer = threading.Thread(target=terminate_when_asleep)
    killer.start()
    with pytest.raises(db.DatabaseUnavailable):
        rt.store.call("SELECT pg_sleep(10)", {})
    killer.join()
    assert rt.store.call("SELECT pg_backend_pid() AS pid", {}).pid != pid


def test_a_call_to_an_unreachable_server_is_unavailable():
    store = db.Store("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(db.DatabaseUnavailable):
        store.call("SELECT 1", {})
    store.dispose()
