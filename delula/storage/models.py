"""SQLAlchemy 2 typed models: the schema of SPEC §4.

The Alembic migrations under ``migrations/versions`` create exactly this schema (a test compares
them). Timestamps are timezone-aware UTC on both PostgreSQL and SQLite.
"""
from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone
from typing import ClassVar

from sqlalchemy import (JSON, BigInteger, and_, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index,
                        Integer, MetaData, String, Text, cast, func, select, text)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.types import TypeDecorator

SYSTEM_BACKLOG_USER_ID = "system_backlog"

ROLES = ("user", "product", "ops", "system")


class JobStatus(enum.StrEnum):
    """A generation's status, as the ``generations.status`` column stores it.

    A ``str`` enum: a member is equal to its text, so rows read back (plain strings), JSON bodies
    and URL filters compare with the members directly. The sets below are the rules about
    statuses, stated here once for the SQL, the queue service and the pages; they are tuples in
    the enum's order, so statements and messages built from them always read the same.
    """

    PENDING = "pending"          # waiting for a free slot (or for a retry's backoff to end)
    PROCESSING = "processing"    # marked started, submitted to the provider, being polled
    COMPLETED = "completed"      # the asset is stored
    FAILED = "failed"            # gave up after the last attempt
    CANCELLED = "cancelled"      # stopped by an operator
    EXPIRED = "expired"          # a pool item that waited longer than DELULA_MAX_ITEM_AGE_H: kept, never handed out
    REJECTED = "rejected"        # a finished backlog job the quality gate refused (``error`` says why): never claimable

    LIVE: ClassVar[tuple[JobStatus, ...]]         # not finished: pending or processing
    FINISHED: ClassVar[tuple[JobStatus, ...]]     # completed, failed, cancelled, expired or rejected
    RETRYABLE: ClassVar[tuple[JobStatus, ...]]    # an operator may put it back to pending
    CANCELLABLE: ClassVar[tuple[JobStatus, ...]]  # an operator may cancel it


JobStatus.LIVE = (JobStatus.PENDING, JobStatus.PROCESSING)
JobStatus.FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED,
                      JobStatus.REJECTED)
JobStatus.RETRYABLE = (JobStatus.FAILED,)
JobStatus.CANCELLABLE = (JobStatus.PENDING, JobStatus.PROCESSING)


class JobSource(enum.StrEnum):
    """Where a generation comes from (``metadata.source``, set when the row is created): a
    user's own job, or a backlog refill -- which stays ``backlog`` once a user claims it."""

    USER = "user"
    BACKLOG = "backlog"


STATUSES = tuple(JobStatus)
LEDGER_KINDS = ("instant_claim", "generation", "refund", "grant")
CLAIM_OUTCOMES = ("claimed", "no_backlog", "race", "insufficient_credits", "rate_limited", "invalid", "forbidden")
# The attempts that are demand on the pool: served (a hit) or not (a miss: empty, or every item
# taken by other claims). Demand is attempts, not successful claims: a recipe that ran dry does
# not look less wanted the longer it stays dry.
DEMAND_OUTCOMES = ("claimed", "no_backlog", "race")

STAFF_ROLES = ("product", "ops")


def may_act_for(actor_role: str, target_is_test: bool) -> bool:
    """Whether a user of ``actor_role`` may claim, generate or top up for ANOTHER account: ops for
    any account, product staff for test accounts only, nobody else. (The claim function in
    ``sql/`` states the same in SQL.)"""
    return actor_role == "ops" or (actor_role == "product" and target_is_test)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONDoc = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict: JSONDoc, list: JSONDoc}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        # only the system role's credits go below zero (migration 0010)
        CheckConstraint("credits >= 0 OR role = 'system'", name="credits"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    instant_cooldown_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # a test account: product staff may act for it (migration 0010)
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # a deactivated account signs in and authenticates no more
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # bumped by sign-out, password and role changes: every session signed with an older one ends
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def may_overdraw(self) -> bool:
        """Whether spending may take the credits below zero: the system role's only (the claim
        function in ``sql/`` says the same)."""
        return self.role == "system"


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Recipe(Base):
    __tablename__ = "recipes"
    __table_args__ = (CheckConstraint("credit_cost >= 0", name="credit_cost"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    credit_cost: Mapped[int] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    model_id: Mapped[str] = mapped_column(String(200))
    variables: Mapped[list] = mapped_column(default=list)
    min_backlog: Mapped[int | None] = mapped_column(Integer)
    # the usage counted before migration 0020; later usage is in recipe_usage, and usage_count
    # (below RecipeUsage) is the sum of both
    usage_base: Mapped[int] = mapped_column("usage_count", Integer, default=0)
    created_at: Mapped[datetime]
    # PostgreSQL's claim keeps these (migration 0008): a lower bound of the created_at of the
    # recipe's claimable items, where the claim's scan starts (NULL: unknown, scan from the
    # start), and a count of items that entered the pool, which voids a claim's stale view.
    pool_head: Mapped[datetime | None]
    pool_arrivals: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # the recipe's own backlog policy, over the one in force (migration 0013; NULL: none)
    backlog_policy: Mapped[str | None] = mapped_column(String(32))


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        # Work the queue service looks for: pending by priority then age, processing by next poll.
        Index("ix_generations_pending", "priority", "created_at", "id",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        Index("ix_generations_processing", "next_poll_at",
              postgresql_where=text("status = 'processing'"), sqlite_where=text("status = 'processing'")),
        Index("ix_generations_user_id_created_at", "user_id", "created_at"),
        Index("ix_generations_recipe_id_status", "recipe_id", "status"),
        Index("ix_generations_status_updated_at", "status", "updated_at"),
        Index("ix_generations_created_at", "created_at"),
        # The dashboard's bounded aggregates (migration 0003): the oldest pending job; completions
        # with their processing time, index-only (it replaced a plain completed_at index, so a
        # claim writes no more index entries than before); users' own jobs by creation time.
        Index("ix_generations_pending_age", "created_at", "id",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        Index("ix_generations_finished", "completed_at", "started_at",
              postgresql_where=text("status = 'completed'"), sqlite_where=text("status = 'completed'")),
        Index("ix_generations_user_jobs", "created_at",
              postgresql_where=text("(metadata ->> 'source') = 'user' AND user_id <> 'system_backlog'"),
              sqlite_where=text("json_extract(metadata, '$.source') = 'user' AND user_id <> 'system_backlog'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    form_data: Mapped[dict] = mapped_column(default=dict)
    meta: Mapped[dict] = mapped_column("metadata", default=dict)
    # Lower runs first: user jobs (0) before backlog refills (10).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    provider_request_id: Mapped[str | None] = mapped_column(String(512))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    next_poll_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    asset_url: Mapped[str | None] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    credits_charged: Mapped[int] = mapped_column(Integer, default=0)
    refunded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


IN_POOL = and_(Generation.user_id == SYSTEM_BACKLOG_USER_ID, Generation.status == JobStatus.COMPLETED)
"""The pool: what a claim may take. Finished generations still owned by the system user."""


def fresh_after(now: datetime, max_age_h: float) -> datetime:
    """The age bound of the pool at ``now``: the earliest completion a pool item may have and
    still be handed out (``DELULA_MAX_ITEM_AGE_H``). Passed as is to the claim function in
    ``sql/`` (its ``p_fresh_after``), so the arithmetic has this one home."""
    return now - timedelta(hours=max_age_h)


def fresh(bound: datetime):
    """A pool item young enough to hand out: completed at or after ``bound``
    (:func:`fresh_after`). An item without a completion time is aged from its creation, which
    came before it. The claim function in ``sql/`` states the same in SQL; maintenance marks
    the rest of the pool ``expired`` (:func:`stale`)."""
    return func.coalesce(Generation.completed_at, Generation.created_at) >= bound


def stale(bound: datetime):
    """A pool item too old to hand out: the complement of :func:`fresh` within the pool."""
    return func.coalesce(Generation.completed_at, Generation.created_at) < bound


# The claimable pool: oldest first per recipe. Partial, so it stays small however large the table
# grows; `id` makes the scan order total.
Index("ix_generations_pool", Generation.recipe_id, Generation.created_at, Generation.id,
      postgresql_where=IN_POOL, sqlite_where=IN_POOL)


class CreditTransaction(Base):
    __tablename__ = "credit_transactions"
    __table_args__ = (
        CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
        Index("ix_credit_transactions_user_id_id", "user_id", "id"),
        Index("ix_credit_transactions_generation_id", "generation_id"),
        # A generation is refunded at most once, whatever races.
        Index("uq_credit_transactions_refund", "generation_id", unique=True,
              postgresql_where=text("kind = 'refund'"), sqlite_where=text("kind = 'refund'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    generation_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64))   # who asked, when not the user (0010)


class RecipeUsageOption(Base):
    __tablename__ = "recipe_usage_options"

    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id", ondelete="CASCADE"), primary_key=True)
    variable_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The chosen value, JSON-encoded so strings, numbers and booleans keep their type.
    value: Mapped[str] = mapped_column(String(500), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class RecipeUsage(Base):
    """How often a recipe was used (claims and users' own generations), in up to 65 rows per
    recipe (migration 0020). A claim on PostgreSQL adds to the row of its server process (slot
    1 + pid mod 64), so claims of one recipe in different sessions do not wait for each other
    (``sql/instant_claim_v8.sql`` and later); everything else adds to slot 0. ``Recipe.usage_count`` sums
    them."""

    __tablename__ = "recipe_usage"

    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id", ondelete="CASCADE"), primary_key=True,
                                           autoincrement=False)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


Recipe.usage_count = column_property(cast(
    Recipe.usage_base + func.coalesce(select(func.sum(RecipeUsage.n)).where(RecipeUsage.recipe_id == Recipe.id)
                                      .correlate_except(RecipeUsage).scalar_subquery(), 0), BigInteger),
    expire_on_flush=False)   # an edit of the recipe leaves its usage as it was read


class ClaimEvent(Base):
    __tablename__ = "claim_events"
    __table_args__ = (
        CheckConstraint(_in("outcome", CLAIM_OUTCOMES), name="outcome"),
        # outcome in the keys: the dashboard's claim series are index-only scans (migration 0003)
        Index("ix_claim_events_created_at_outcome", "created_at", "outcome"),
        Index("ix_claim_events_recipe_id_created_at_outcome", "recipe_id", "created_at", "outcome"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(String(64))
    # No foreign key: an attempt on an unknown recipe is recorded too.
    recipe_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    generation_id: Mapped[int | None] = mapped_column(BigId)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64))   # who asked, when not the user (0010)
    # the choices the attempt asked for (a subset of the recipe's form data; NULL: none), and
    # whether what it was handed has them all (NULL without choices; false on a miss) (0017)
    choices: Mapped[dict | None]
    matched: Mapped[bool | None] = mapped_column(Boolean)


class QueueSample(Base):
    __tablename__ = "queue_samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    pending: Mapped[int] = mapped_column(Integer)
    processing: Mapped[int] = mapped_column(Integer)
    backlog: Mapped[int] = mapped_column(Integer)  # claimable items, all recipes
    backlog_in_flight: Mapped[int] = mapped_column(Integer, default=0)
    recipes_below_minimum: Mapped[int] = mapped_column(Integer, default=0)


class StatCount(Base):
    """Counts rolled up from ``claim_events`` and ``generations`` (``dashboard.add_rolled``), so
    a day or a week on the overview reads thousands of rows instead of millions.

    ``metric``/``key``: ``claim``/outcome, ``failed``/``backlog`` or ``user``, ``normal``/``""``
    (a user's own job created) per quarter hour starting ``at``; ``completed``/the lower edge,
    in whole seconds, of the processing-time bucket (``dashboard.DURATION_EDGES``, migration
    0019; ``-`` without a start) per hour. ``recipe_id`` 0 holds the sum over every recipe, -1
    the claims of no recipe. The overview reads one recipe's (or the sums') rows of a metric
    over a time range through ``ix_stat_counts_recipe_metric_at`` (an index-only scan on
    PostgreSQL); the primary key, led by ``at``, serves the roll-up's pruning.
    """

    __tablename__ = "stat_counts"
    __table_args__ = (
        Index("ix_stat_counts_recipe_metric_at", "recipe_id", "metric", "at", postgresql_include=["key", "n"]),
    )

    at: Mapped[datetime] = mapped_column(primary_key=True)
    recipe_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    metric: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class DemandMinute(Base):
    """Instant attempts that reached the pool, per minute and recipe (migration 0012), rolled up
    from ``claim_events`` (``storage.demand``): what a forecast over weeks reads."""

    __tablename__ = "demand_minutes"

    minute: Mapped[datetime] = mapped_column(primary_key=True)
    recipe_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    attempts: Mapped[int] = mapped_column(Integer)     # hits and misses
    hits: Mapped[int] = mapped_column(Integer)         # served from the pool


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    status_code: Mapped[int] = mapped_column(Integer)   # 0 while reserved
    response: Mapped[dict]
    outcome: Mapped[str | None] = mapped_column(String(32))   # the claim's outcome (migration 0009)
    request_hash: Mapped[str | None] = mapped_column(String(64))   # what was asked (migration 0010)
    created_at: Mapped[datetime] = mapped_column(index=True)


class SchedulerRun(Base):
    __tablename__ = "scheduler_runs"
    __table_args__ = (Index("ix_scheduler_runs_job_started_at", "job", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16))  # running | ok | error
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict | None]
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)


class SchedulerLeader(Base):
    """Who holds the scheduler lock now (one row per lock name), for the dashboard."""

    __tablename__ = "scheduler_leader"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class BacklogSettings(Base):
    """The backlog policy in force, as an operator applied it (migration 0013): one row, id 1.
    Without it the environment's ``DELULA_BACKLOG_POLICY`` and ``DELULA_SERVICE_LEVEL`` hold."""

    __tablename__ = "backlog_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("service_level > 0 AND service_level < 1", name="service_level"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    policy: Mapped[str] = mapped_column(String(32))
    service_level: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str | None] = mapped_column(String(64))   # the user who applied it


class AppSetting(Base):
    """Small key/value store: the generated Flask secret key, shared by every web process."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AuditEvent(Base):
    """Who did what to whom, written in the transaction of the action itself (migration 0010).
    Append-only: nothing updates or deletes these rows."""
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_actor_id_at", "actor_id", "at"),
        Index("ix_audit_events_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64))     # None: the system itself
    action: Mapped[str] = mapped_column(String(48))
    target_user_id: Mapped[str | None] = mapped_column(String(64))
    target_job_id: Mapped[int | None] = mapped_column(BigInteger)
    target_recipe_id: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict] = mapped_column(default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64))



class SignInFailure(Base):
    """Sign-in attempts counted in a fixed window, per username and per client address
    (migration 0011): the throttle every process of the deployment shares."""
    __tablename__ = "sign_in_failures"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)    # "username" or "address"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]


PAUSE_SCOPES = ("backlog", "queue")   # what an operator can pause (migration 0015)
ALL_RECIPES = 0                       # ``pauses.recipe_id`` of a pause of the whole scope


class Pause(Base):
    """What an operator paused, by whom and since when (migration 0015); a row exists while paused.

    ``("backlog", 0)`` stops backlog generation for every recipe, ``("backlog", id)`` for one
    recipe, ``("queue", 0)`` stops submissions to the provider (polls go on)."""
    __tablename__ = "pauses"
    __table_args__ = (
        CheckConstraint("scope IN ('backlog', 'queue')", name="scope"),
        CheckConstraint("scope = 'backlog' OR recipe_id = 0", name="queue_whole"),
    )

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    recipe_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    paused_by: Mapped[str | None] = mapped_column(String(64))
    paused_at: Mapped[datetime]


class Counter(Base):
    """A monotonic counter kept in the database (migration 0015): every process adds to the same
    row, so totals survive restarts and add up across processes. ``labels`` is the canonical
    ``k=v,k=v`` text of the label set (keys sorted)."""
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class CounterMark(Base):
    """How far a counter derived from an event table has been added up (migration 0015): the
    instant claims counter holds every ``claim_events`` row before ``until``."""
    __tablename__ = "counter_marks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime]


BREAKER_STATES = ("closed", "open", "half_open")


class ProviderBreaker(Base):
    """The provider circuit breaker's state (migration 0015), one row per provider, shared by
    every process. ``failures``: consecutive provider errors while closed; ``trips``: probes
    failed in a row (the backoff doubles with each); ``probe_until``: the half-open probe's
    lease."""
    __tablename__ = "provider_breaker"
    __table_args__ = (CheckConstraint("state IN ('closed', 'open', 'half_open')", name="state"),)

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    trips: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None]
    next_probe_at: Mapped[datetime | None]
    probe_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


ALERT_STATES = ("pending", "firing", "resolved")     # migration 0016
NOTIFICATION_KINDS = ("firing", "resolved")


class Alert(Base):
    """One alert per key (migration 0016): ``below_minimum:<recipe id>``, ``hit_rate``,
    ``breaker_open``, ``no_leader``, ``failure_rate``. The row is the alert's latest episode:
    ``pending`` since ``pending_since`` (the condition holds, its for-duration not yet),
    ``firing`` since ``fired_at``, or ``resolved`` (it does not hold: ``resolved_at`` is when the
    last firing ended, ``fired_at`` null if it never fired). ``summary``, ``value`` and
    ``threshold`` are the last evaluation's while it held."""
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in("state", ALERT_STATES), name="state"),
        Index("ix_alerts_state_resolved_at", "state", "resolved_at"),   # the overview's panel
    )

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(32))
    recipe_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    pending_since: Mapped[datetime | None]
    fired_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    summary: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime]


class AlertNotification(Base):
    """The notifications outbox (migration 0016): a row per firing or resolution, inserted in
    the transaction of that transition, sent to ``DELULA_ALERT_WEBHOOK_URL`` by the delivery.
    ``next_attempt_at`` is when it is due — or, while one delivery holds it, the end of that
    lease; null once settled: ``sent_at`` set, or given up (``last_error`` says why)."""
    __tablename__ = "alert_notifications"
    __table_args__ = (
        CheckConstraint(_in("kind", NOTIFICATION_KINDS), name="kind"),
        Index("ix_alert_notifications_due", "next_attempt_at",
              postgresql_where=text("next_attempt_at IS NOT NULL"), sqlite_where=text("next_attempt_at IS NOT NULL")),
        Index("ix_alert_notifications_alert_key_id", "alert_key", "id"),
        Index("ix_alert_notifications_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_key: Mapped[str] = mapped_column(ForeignKey("alerts.key", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
