"""Engine, sessions and transactions.

PostgreSQL goes through psycopg 3; a pooled connection is checked before use without a round trip
of its own (:func:`_check_on_checkout`); SQLite runs in WAL mode with a busy timeout, and every
transaction there starts with ``BEGIN IMMEDIATE`` so that a read-then-write transaction (the
claim) holds the database write lock from its first statement.
"""
from __future__ import annotations

import logging
import select
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from ..config import ConfigError, masked_url, normalise_url

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Set while :meth:`Store.single_statement` checks out its connection: no BEGIN for an autocommit one.
_FOR_AUTOCOMMIT: ContextVar[bool] = ContextVar("delula_checkout_for_autocommit", default=False)
_NEW = "delula_new"   # in a pool entry's info from connecting until its first checkout


def is_postgres(s: Session) -> bool:
    """Whether the session is bound to PostgreSQL (else SQLite): where the SQL differs."""
    return s.get_bind().dialect.name == "postgresql"


def in_ids(s: Session, column, ids: list[int]):
    """``column IN ids`` as one array parameter on PostgreSQL (``= ANY(:ids)``: one bind value
    however many ids, where an expanding ``IN`` binds and renders one parameter per id), a
    plain ``IN`` on SQLite."""
    if is_postgres(s):
        from sqlalchemy import BigInteger, any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))
    return column.in_(list(ids))


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (down, restarting, network). Callers answer 503."""


class Conflict(RuntimeError):
    """A uniqueness rule was broken (e.g. a username that exists)."""


def insert_unique(s: Session, row, conflict: str):
    """Insert ``row`` in a savepoint: a unique violation raises :class:`Conflict` with the message
    ``conflict`` and leaves the surrounding transaction usable."""
    try:
        # The savepoint first: adding the row before it would let the savepoint's own flush
        # insert the row outside it, and a violation would then abort the whole transaction.
        with s.begin_nested():
            s.add(row)
            s.flush()
    except exc.IntegrityError as e:
        raise Conflict(conflict) from e
    return row


class Store:
    """One database: its engine and a way to run a transaction on it."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20, echo: bool = False):
        self.url = normalise_url(url)
        try:
            parsed = make_url(self.url)
        except (ValueError, exc.ArgumentError):
            raise ConfigError(f"the database URL {masked_url(self.url)!r} cannot be read") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = create_engine(self.url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})
            _configure_sqlite(self.engine)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                self.url, echo=echo, pool_size=pool_size, max_overflow=max_overflow,
                pool_recycle=1800,
                # psycopg prepares a statement after 5 runs; PostgreSQL may then switch to a generic
                # plan, blind to the parameters, e.g. a time window's bound: a count over the last
                # 24 h planned as over all time. Keep the saved parse, plan with the real values.
                connect_args={"connect_timeout": 5, "application_name": "delula",
                              "options": "-c plan_cache_mode=force_custom_plan"})
            event.listen(self.engine, "connect", _mark_new)
            event.listen(self.engine, "checkout", _check_on_checkout)
        else:
            raise ConfigError(f"unsupported database {self.dialect!r}: use sqlite or postgresql+psycopg")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A transaction: commits when the block ends, rolls back on any exception.

        Connection-level failures surface as :class:`DatabaseUnavailable`.
        """
        with _unavailable_on_disconnect(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def single_statement(self) -> Iterator[Session]:
        """A session for ONE statement that is atomic by itself (e.g. a call of a SQL function).

        On PostgreSQL the connection is in autocommit mode: the statement is its own transaction,
        without the round trips of ``BEGIN`` and ``COMMIT`` (a token's look-up is one round trip
        instead of three; the pool checks the connection without one). :meth:`call` is the same
        on the driver's own cursor, for the instant claim. Two statements in this
        session would be two transactions, so use :meth:`begin` for anything more. On SQLite it
        is :meth:`begin` (``BEGIN IMMEDIATE`` takes the write lock the claim's steps need).

        Unlike a transaction's, this statement is not retried when the server turns out to be
        closing the connection as it arrives (see :func:`_check_on_checkout`): it commits by
        itself, so its failure does not prove it did nothing. The caller answers 503.
        """
        if not self.is_postgres:
            with self.begin() as session:
                yield session
            return
        with _unavailable_on_disconnect(), self._autocommit_connection() as conn:
            with Session(bind=conn, expire_on_commit=False, autoflush=False) as session:
                yield session

    def _autocommit_connection(self) -> Connection:
        checkout = _FOR_AUTOCOMMIT.set(True)
        try:
            conn = self.engine.connect()
        finally:
            _FOR_AUTOCOMMIT.reset(checkout)
        return conn.execution_options(isolation_level="AUTOCOMMIT")

    def call(self, sql: str, params: dict):
        """PostgreSQL only: ONE statement that is atomic by itself (a call of a SQL function) on
        the driver's own cursor, psycopg's, of a pooled connection in autocommit; its first row
        as a named tuple, or ``None``.

        The instant claim's path. :meth:`single_statement` wraps a statement in a session and a
        Core connection switched to autocommit and back, and processes its result: about as much
        CPU again as the rest of a claim in Python (``python bench/claims.py --layers``). Here the
        pool's checkout (with its socket check) is all that remains. ``sql`` is the driver's
        text with ``%(name)s`` parameters, e.g. a Core statement compiled once
        (:func:`driver_sql`); it is prepared after a few runs, as every statement is. A
        connection-level failure raises :class:`DatabaseUnavailable` and discards the
        connection; like :meth:`single_statement`'s, the statement is not retried.
        """
        checkout = _FOR_AUTOCOMMIT.set(True)
        try:
            with _unavailable_on_disconnect():
                pooled = self.engine.raw_connection()   # the driver's errors in connecting, unwrapped
        except psycopg.Error as e:
            raise DatabaseUnavailable(_short(e)) from e
        finally:
            _FOR_AUTOCOMMIT.reset(checkout)
        driver = pooled.driver_connection
        try:
            driver.autocommit = True
            with driver.cursor(row_factory=namedtuple_row) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()
        except psycopg.Error as e:
            if isinstance(e, psycopg.InterfaceError) or driver.broken or _says_disconnected(str(e)):
                pooled.invalidate(e)
                raise DatabaseUnavailable(_short(e)) from e
            raise
        finally:
            if not driver.closed:
                driver.autocommit = False
            pooled.close()

    def ping(self) -> bool:
        try:
            with self.begin() as s:
                s.execute(text("SELECT 1"))
            return True
        except (DatabaseUnavailable, exc.SQLAlchemyError):
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def _mark_new(_dbapi_conn, record) -> None:
    record.info[_NEW] = True


def _check_on_checkout(dbapi_conn, record, _proxy) -> None:
    """Pessimistic disconnect handling without the round trip of ``pool_pre_ping``.

    Two checks; either raises :class:`exc.DisconnectionError`, which makes the pool discard the
    connection and check out a fresh one:

    - :func:`_check_socket` finds a connection the server has closed while it sat in the pool;
    - for a transaction, :func:`_begin` sends its ``BEGIN`` now. A backend told to terminate (a
      restart, ``pg_terminate_backend``) closes its connection only when it next runs, which on a
      busy machine can be after the socket looked fine: its answer to the next message is then
      "terminating connection". That message is the ``BEGIN``, which does nothing, so the
      connection can still be replaced, where the first statement could not have been retried.
      psycopg sends the same ``BEGIN`` as its own round trip before a transaction's first
      statement anyway, so this costs none.

    A connection checked out for :meth:`Store.single_statement` gets only the socket check: it
    runs in autocommit, without a ``BEGIN``. A connection just made is handed out unchecked: it
    has not sat in the pool, and the pool replaces a connection twice at most, then raises an
    error that does not say "disconnected" (a statement failing on it says so: 503).
    """
    if record.info.pop(_NEW, False):
        return
    _check_socket(dbapi_conn)
    if not _FOR_AUTOCOMMIT.get():
        _begin(dbapi_conn)


def _check_socket(dbapi_conn) -> None:
    """An idle pooled connection has nothing to read: the server only writes to it when it goes
    away (a restart or shutdown sends "terminating connection" and closes it, a crashed server's
    socket reads as end of file). So a readable (or broken) socket means the connection is
    stale. Polling it replaces the ``SELECT 1`` of a ping: half the database round trips of an
    API claim.
    """
    if dbapi_conn.closed or dbapi_conn.broken:
        raise exc.DisconnectionError("connection closed")
    try:
        poller = select.poll()  # not select.select: no limit on the descriptor's number
        poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLPRI)
        events = poller.poll(0)
    except (OSError, ValueError) as e:
        raise exc.DisconnectionError(str(e)) from e
    if events:  # data, end of file, an error or a hang-up: not usable as it is
        raise exc.DisconnectionError("the server closed the connection")


def _begin(dbapi_conn) -> None:
    """Start the transaction psycopg would start before the first statement, the same way.

    Sent on the libpq connection psycopg exposes for this (``pgconn``): psycopg decides whether
    to begin from the transaction status the server reports, so it sees the transaction open and
    sends no ``BEGIN`` of its own; commit and rollback are unchanged. A connection psycopg would
    begin otherwise (an isolation level, read-only, deferrable) is left to psycopg.
    """
    from psycopg import OperationalError, pq

    if (dbapi_conn.autocommit or dbapi_conn.info.transaction_status != pq.TransactionStatus.IDLE
            or (dbapi_conn.isolation_level, dbapi_conn.read_only, dbapi_conn.deferrable) != (None, None, None)):
        return
    try:
        result = dbapi_conn.pgconn.exec_(b"BEGIN")
    except OperationalError as e:
        raise exc.DisconnectionError(str(e)) from e
    if result.status != pq.ExecStatus.COMMAND_OK:
        message = (result.error_message or dbapi_conn.pgconn.error_message).decode("utf-8", "replace").strip()
        raise exc.DisconnectionError(message or "BEGIN failed")


@contextmanager
def _unavailable_on_disconnect() -> Iterator[None]:
    """Connection-level failures surface as :class:`DatabaseUnavailable`."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as e:
        if _is_disconnect(e):
            raise DatabaseUnavailable(_short(e)) from e
        raise
    except exc.DBAPIError as e:
        if e.connection_invalidated:
            raise DatabaseUnavailable(_short(e)) from e
        raise


def _is_disconnect(e: exc.DBAPIError) -> bool:
    if e.connection_invalidated:
        return True
    return isinstance(e, exc.InterfaceError) or _says_disconnected(str(e.orig if e.orig is not None else e))


def _says_disconnected(message: str) -> bool:
    """Whether a driver's error message says the connection is gone or the server unreachable."""
    msg = message.lower()
    needles = ("connection", "server closed", "terminating", "could not connect", "shutting down",
               "starting up", "recovery", "no such host", "timeout expired", "the database system is")
    return any(n in msg for n in needles)


def driver_sql(statement) -> str:
    """A Core statement (or ``text()``) as psycopg's SQL text, ``%(name)s`` parameters, for
    :meth:`Store.call`: compiled once, where it is defined."""
    from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

    return str(statement.compile(dialect=psycopg_dialect.dialect()))


def _short(e: Exception) -> str:
    text_ = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text_[0] if text_ else type(e).__name__


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(store: Store, revision: str = "head") -> None:
    """Run Alembic migrations to ``revision``; safe when several processes start at once."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with _unavailable_on_disconnect(), store.engine.connect() as conn:
        if store.is_postgres:
            conn.execute(text("SELECT pg_advisory_lock(hashtext('delula:migrations'))"))
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if store.is_postgres:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext('delula:migrations'))"))
                conn.commit()


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except exc.DBAPIError:
            return None
