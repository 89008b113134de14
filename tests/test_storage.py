"""The schema: migrations equal the models, indexes exist, timestamps are aware UTC."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from delula import auth, storage
from delula.storage import accounts
from delula.storage.db import insert_unique
from delula.storage.models import AppSetting, Base, QueueSample
from tests.support.db import wait_for_a_lock_wait


def test_migrations_create_exactly_the_models(rt):
    with rt.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_at_head(rt):
    storage.upgrade(rt.store)
    storage.upgrade(rt.store)
    assert storage.current_revision(rt.store) is not None
    names = set(inspect(rt.store.engine).get_table_names())
    assert {"users", "api_tokens", "recipes", "generations", "credit_transactions", "recipe_usage_options",
            "claim_events", "queue_samples", "idempotency_keys", "scheduler_runs", "scheduler_leader"} <= names


def test_pool_index_is_partial(rt):
    indexes = {ix["name"]: ix for ix in inspect(rt.store.engine).get_indexes("generations")}
    assert indexes["ix_generations_pool"]["column_names"] == ["recipe_id", "created_at", "id"]
    with rt.store.engine.connect() as conn:
        if rt.store.is_postgres:
            ddl = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_generations_pool'")).scalar()
        else:
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ix_generations_pool'")).scalar()
    assert "system_backlog" in ddl and "completed" in ddl and "WHERE" in ddl.upper()


def test_timestamps_come_back_aware_utc(rt):
    local = datetime(2026, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    with rt.store.begin() as s:
        s.add(QueueSample(created_at=local, pending=1, processing=2, backlog=3))
    with rt.store.begin() as s:
        sample = s.query(QueueSample).one()
    assert sample.created_at == local
    assert sample.created_at.tzinfo is not None and sample.created_at.utcoffset() == timedelta(0)
    assert sample.created_at.hour == 12


def test_naive_datetimes_are_refused(rt):
    with pytest.raises(Exception, match="naive"):
        with rt.store.begin() as s:
            s.add(QueueSample(created_at=datetime(2026, 1, 1), pending=0, processing=0, backlog=0))


def test_every_credit_change_is_a_ledger_row(rt):
    user, token = auth.create_user(rt, "led", credits=7)
    assert auth.grant(rt, "led", 5) == 12
    with rt.store.begin() as s:
        rows = accounts.ledger(s, user.id)
        assert [(r.kind, r.amount, r.balance_after) for r in reversed(rows)] == [("grant", 7, 7), ("grant", 5, 12)]
        assert accounts.ledger_mismatches(s) == []


def test_conditional_debit_never_goes_below_zero(rt):
    user, _ = auth.create_user(rt, "poor", credits=3)
    with rt.store.begin() as s:
        assert accounts.change_credits(s, user.id, -5, kind="generation", now=rt.now()) is None
        assert accounts.change_credits(s, user.id, -3, kind="generation", now=rt.now()) == 0
    with rt.store.begin() as s:
        assert accounts.get_user(s, user.id).credits == 0
        assert accounts.ledger_mismatches(s) == []


def test_unreachable_database_is_reported_as_unavailable():
    store = storage.Store("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(storage.DatabaseUnavailable):
        with store.begin() as s:
            s.execute(text("SELECT 1"))
    assert store.ping() is False
    store.dispose()


def test_secret_key_is_generated_once_and_shared(rt, make_runtime):
    first = auth.secret_key(rt)
    other = make_runtime(rt.settings.database_url)
    assert auth.secret_key(other) == first and len(first) == 64


@pytest.mark.postgres
def test_postgres_sessions_plan_with_the_real_parameters(pg_rt):
    """psycopg prepares repeated statements; a generic plan would ignore e.g. a time window."""
    with pg_rt.store.begin() as s:
        assert s.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"


@pytest.mark.postgres
def test_the_claim_function_keeps_its_plans(pg_rt):
    """Sessions force custom plans (time windows); the claim function, all key lookups, must not
    pay for planning its statements on every call (migration 0007)."""
    with pg_rt.store.begin() as s:
        assert s.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
        config = s.execute(text("SELECT proconfig FROM pg_proc WHERE proname = 'delula_instant_claim'")).scalar()
    assert config == ["plan_cache_mode=auto"]


def test_migration_0002_tunes_the_hot_tables(pg_rt):
    with pg_rt.store.begin() as s:
        options = dict(s.execute(text("SELECT relname, array_to_string(reloptions, ',') FROM pg_class "
                                      "WHERE relname IN ('generations', 'users')")).all())
        assert s.execute(text("SELECT count(*) FROM pg_proc WHERE proname = 'delula_instant_claim'")).scalar() == 1
    assert "autovacuum_vacuum_scale_factor=0" in options["generations"] and "fillfactor=90" in options["generations"]
    assert "fillfactor=80" in options["users"]


@pytest.mark.postgres
def test_migration_0005_locks_the_user_for_no_key_update_and_goes_back(pg_rt):
    def user_lock() -> str:
        with pg_rt.store.begin() as s:
            body = s.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'delula_instant_claim'")).scalar_one()
        return "no key" if "p_user_id FOR NO KEY UPDATE;" in body else "update" if "p_user_id FOR UPDATE;" in body else "?"

    assert user_lock() == "no key"
    head = storage.current_revision(pg_rt.store)
    _downgrade(pg_rt.store, "0004")
    assert user_lock() == "update"
    storage.upgrade(pg_rt.store)
    assert user_lock() == "no key" and storage.current_revision(pg_rt.store) == head


def _downgrade(store, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from delula.storage.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with store.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


def test_migration_0008_the_pool_head_goes_back_and_forth(rt):
    """Down to 0007: the columns, the triggers and the head in the claim go, the rest of the
    claim stays as 0007 left it; up again: all back."""
    def state():
        with rt.store.begin() as s:
            columns = {c["name"] for c in inspect(s.connection()).get_columns("recipes")}
            if not storage.db.is_postgres(s):
                return "pool_head" in columns, None, None
            body, config = s.execute(text("SELECT prosrc, proconfig FROM pg_proc "
                                          "WHERE proname = 'delula_instant_claim'")).one()
            triggers = s.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'generations_pool_%'")).scalar()
            return "pool_head" in columns, ("v_head" in body, "FOR NO KEY UPDATE" in body, config), triggers

    postgres = rt.store.is_postgres
    head = storage.current_revision(rt.store)
    assert state() == ((True, (True, True, ["plan_cache_mode=auto"]), 2) if postgres else (True, None, None))
    _downgrade(rt.store, "0007")
    assert state() == ((False, (False, True, ["plan_cache_mode=auto"]), 0) if postgres else (False, None, None))
    storage.upgrade(rt.store)
    assert state()[0] is True and storage.current_revision(rt.store) == head


SQL_FILES = Path(storage.__file__).parent / "sql"


def _newest_files() -> dict[str, Path]:
    """Each database function's newest version file, by function (``instant_claim_v4.sql`` …)."""
    newest: dict[str, tuple[int, Path]] = {}
    for path in SQL_FILES.glob("*_v*.sql"):
        name, version = path.stem.rsplit("_v", 1)
        newest[name] = max(newest.get(name, (0, path)), (int(version), path))
    return {name: path for name, (_, path) in newest.items()}


def test_every_function_has_its_versions_one_after_another():
    for name in _newest_files():
        versions = sorted(int(p.stem.rsplit("_v", 1)[1]) for p in SQL_FILES.glob(f"{name}_v*.sql"))
        assert versions == list(range(1, len(versions) + 1)), name


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(_newest_files()))
def test_the_function_installed_at_head_is_exactly_its_newest_file(pg_rt, name):
    """The migrations install each function's newest file as it is: the catalog's definition of
    the migrated function equals that of the file installed afresh in a scratch schema."""
    function = f"delula_{name}"
    define = "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace " \
             "WHERE p.proname = :f AND n.nspname = :schema"
    with pg_rt.store.engine.connect() as conn:
        installed = conn.execute(text(define), {"f": function, "schema": "public"}).scalar_one()
        conn.execute(text("CREATE SCHEMA scratch"))
        conn.execute(text("SET LOCAL search_path = scratch, public"))
        conn.execute(text(_newest_files()[name].read_text()))
        fresh = conn.execute(text(define), {"f": function, "schema": "scratch"}).scalar_one()
        conn.rollback()
    assert installed == fresh.replace(f"scratch.{function}(", f"public.{function}(", 1)


def test_a_token_is_marked_used_at_most_once_a_minute(db_url, make_runtime):
    """The lookup marks the token used when the mark is older than a minute (on PostgreSQL in
    the same statement); a revoked token finds nobody and is not touched."""
    from delula.clock import ManualClock
    from delula.storage.models import ApiToken

    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock)
    user, token = auth.create_user(rt, "toucher")

    def last_used():
        with rt.store.begin() as s:
            return s.query(ApiToken.last_used_at).filter_by(user_id=user.id).scalar()

    assert last_used() is None
    first = clock.now()
    assert auth.authenticate_token(rt, token).id == user.id and last_used() == first
    clock.advance(59)
    assert auth.authenticate_token(rt, token).id == user.id and last_used() == first   # no write
    clock.advance(2)
    assert auth.authenticate_token(rt, token).id == user.id and last_used() == clock.now()
    auth.revoke_tokens(rt, "toucher")
    clock.advance(120)
    marked = last_used()
    assert auth.authenticate_token(rt, token) is None and last_used() == marked
    assert auth.authenticate_token(rt, "not-a-token") is None


def test_a_unique_conflict_leaves_the_transaction_usable(rt):
    """``insert_unique`` catches a duplicate in its own savepoint: the surrounding transaction
    carries on and commits its other work."""
    with rt.store.begin() as s:
        accounts.put_setting_once(s, "conflict_probe", "first")
    with rt.store.begin() as s:
        with pytest.raises(storage.Conflict):
            insert_unique(s, AppSetting(key="conflict_probe", value="second"), "exists")
        accounts.put_setting_once(s, "conflict_after", "kept")
    with rt.store.begin() as s:
        assert s.get(AppSetting, "conflict_probe").value == "first"
        assert s.get(AppSetting, "conflict_after").value == "kept"


@pytest.mark.postgres
def test_two_first_starts_racing_for_a_setting_agree_on_one_value(pg_rt):
    """Several web workers booting on a fresh database each generate a secret key: the second
    insert waits on the first's uncommitted row, then must take the stored value (it used to
    abort its transaction, the worker failed to boot and gunicorn stopped the whole server)."""
    inserted, results = threading.Event(), {}

    def first():
        with pg_rt.store.begin() as s:
            results["first"] = accounts.put_setting_once(s, "race_probe", "from-first")
            inserted.set()
            wait_for_a_lock_wait(pg_rt)   # the second insert waits on this uncommitted row

    def second():
        inserted.wait(10)
        with pg_rt.store.begin() as s:
            results["second"] = accounts.put_setting_once(s, "race_probe", "from-second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"first": "from-first", "second": "from-first"}


@pytest.mark.postgres
def test_workers_booting_at_once_on_a_fresh_database_seed_it_once(pg_url, make_runtime):
    """What each of several gunicorn workers does on its first start, at the same moment on an
    empty database: every boot succeeds, and the demo data, the admin and the secret key exist
    once, shared by all."""
    import app as app_module
    from delula import demo
    from delula.storage import catalog

    runtimes = [make_runtime(pg_url, pool_size=2) for _ in range(4)]
    start, keys, errors = threading.Barrier(len(runtimes)), [], []

    def boot(rt):
        try:
            start.wait(10)
            app_module.boot(rt)
            keys.append(auth.secret_key(rt))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=boot, args=(rt,)) for rt in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(keys) == len(runtimes) and len(set(keys)) == 1
    with runtimes[0].store.begin() as s:
        names = [r.name for r in catalog.list_recipes(s, active_only=False)]
        users = s.execute(text("SELECT username FROM users")).scalars().all()
    assert sorted(names) == sorted(spec["name"] for spec in demo.RECIPES)
    assert len(users) == len(set(users)) and users.count("admin") == 1
    assert set(users) >= {name for name, _ in demo.TEST_USERS}
