"""The instant claim's statements: the pool, claim events and idempotency keys.

:func:`claim` is the whole claim after the idempotency key, whatever the database: on PostgreSQL
one call of the ``delula_instant_claim`` function (its newest version in ``sql/``), one round
trip; on SQLite :func:`_claim_steps`, the same steps as separate statements under the database
write lock. :func:`claim_with_token` puts the API's bearer-token check in front of it (on
PostgreSQL in the same statement). What a claim asks for beyond the recipe -- choices, exact or
preferred, and how many items -- is a :class:`Want`. Lock order is fixed — idempotency key row,
the credited user's row, pool rows in the pool index's order — so concurrent claims never
deadlock. ``tests/test_claims.py`` runs every outcome through both.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import NamedTuple
from datetime import datetime, timedelta, timezone

from sqlalchemy import (ARRAY, Boolean, Float, Integer, String, and_, any_, bindparam, cast, delete, false,
                        func, select, text, true, update)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import accounts, audit, catalog
from .db import Store, driver_sql, is_postgres
from .models import (IN_POOL, STAFF_ROLES, ClaimEvent, Generation, IdempotencyKey, User, UTCDateTime, fresh,
                     fresh_after, may_act_for)


MAX_BATCH = 10   # the most items one claim may ask for


@dataclass(frozen=True)
class Want:
    """What a claim asks for beyond the recipe. ``choices`` (``None``: none) is a subset of the
    recipe's form data: an item matches when its form data has every value
    (:func:`forms.matches`; ``@>`` in SQL). ``prefer``: the oldest matching items, then the oldest
    others; otherwise only matching ones. ``count`` items at most (1 to :data:`MAX_BATCH`),
    all or none with ``all``."""
    choices: dict | None = None
    prefer: bool = False
    count: int = 1
    all: bool = False

    def __post_init__(self):
        if not 1 <= self.count <= MAX_BATCH:
            raise ValueError(f"count must be from 1 to {MAX_BATCH}")


ONE = Want()


class Item(NamedTuple):
    """A generation a claim handed out, as the API's generation object shows it
    (``generations.generation_json``): the claim function gives it back as ``to_jsonb`` of the
    row, so no ORM object is built on the hot path."""
    id: int
    recipe_id: int
    user_id: str
    status: str
    form_data: dict
    meta: dict
    asset_url: str | None
    thumbnail_url: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, gen: Generation) -> "Item":
        return cls(*(getattr(gen, f) for f in cls._fields))

    @classmethod
    def from_json(cls, doc: dict) -> "Item":
        """From the function's ``to_jsonb(row)`` (column names; timestamps as ISO text)."""
        return cls(doc["id"], doc["recipe_id"], doc["user_id"], doc["status"], doc["form_data"], doc["metadata"],
                   doc.get("asset_url"), doc.get("thumbnail_url"), doc.get("error"), _utc(doc["created_at"]),
                   _utc(doc["updated_at"]), _utc(doc.get("completed_at")))


def _utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(timezone.utc)


@dataclass(frozen=True)
class ClaimRow:
    """What a claim did. ``outcome``: claimed, recipe_not_found, invalid (no such user),
    rate_limited, insufficient_credits, race (every item locked by other claims) or no_backlog."""
    outcome: str
    generations: tuple[Item, ...] = ()  # handed out, oldest first (matching ones first)
    balance: int | None = None        # after the charge
    cost: int | None = None           # the recipe's credit cost, per item
    available: int | None = None      # the user's credits, when insufficient
    retry_after: int | None = None    # seconds, when rate limited
    required: int | None = None       # the credits needed, when insufficient
    matched: bool | None = None       # every item has the choices (None without choices)

    @property
    def generation(self) -> Item | None:
        return self.generations[0] if self.generations else None


_CLAIM_CALL = text("SELECT * FROM delula_instant_claim(:recipe, :user, :actor, CAST(:patch AS jsonb), :now, :cd, "
                   ":request, :fresh, CAST(:choices AS jsonb), :prefer, :count, :all)")
_CLAIM_SQL = driver_sql(_CLAIM_CALL)
_CLAIM_COLUMNS = ("o_outcome", "o_generations", "o_balance", "o_cost", "o_available", "o_retry_after", "o_required",
                  "o_matched")


def _want_params(want: Want) -> dict:
    return {"choices": None if want.choices is None else json.dumps(want.choices), "prefer": want.prefer,
            "count": want.count, "all": want.all}


def _claim_params(recipe_id: int, user_id: str | None, actor_id: str | None, meta_patch: dict, now: datetime,
                  cooldown_s: float, max_age_h: float, request_id: str | None, want: Want) -> dict:
    return {"recipe": recipe_id, "user": user_id, "actor": actor_id, "patch": json.dumps(meta_patch), "now": now,
            "cd": float(cooldown_s), "request": request_id, "fresh": fresh_after(now, max_age_h), **_want_params(want)}


def claim(s: Session, *, recipe_id: int, user_id: str, meta_patch: dict, now: datetime, cooldown_s: float,
          max_age_h: float, actor_id: str | None = None, request_id: str | None = None, want: Want = ONE) -> ClaimRow:
    """Claim the oldest fresh pool items of ``recipe_id`` that ``want`` asks for (one, by default)
    for ``user_id``, charge them, record the events, in the session's transaction.

    ``max_age_h`` is the age bound (``DELULA_MAX_ITEM_AGE_H``): an item completed longer ago
    is never handed out (:func:`models.fresh`). ``actor_id`` is who asked (``None``: the user
    itself); acting for another user follows :func:`models.may_act_for`, and a claim for
    another user is audited."""
    actor_id = actor_id or user_id
    if is_postgres(s):
        params = _claim_params(recipe_id, user_id, actor_id, meta_patch, now, cooldown_s, max_age_h, request_id, want)
        return _claim_row(s.connection().execute(_CLAIM_CALL, params).one())  # Core: no ORM work per call
    bound = fresh_after(now, max_age_h)
    started = time.perf_counter()
    result, matching = _claim_steps(s, recipe_id, user_id, actor_id, meta_patch, now, cooldown_s, request_id, bound,
                                    want)
    _record_events(s, result, want, matching, user_id=user_id, recipe_id=recipe_id, now=now, actor_id=actor_id,
                   latency_ms=(time.perf_counter() - started) * 1000.0)
    return result


def claim_alone(store: Store, *, recipe_id: int, user_id: str, meta_patch: dict, now: datetime, cooldown_s: float,
                max_age_h: float, actor_id: str | None = None, request_id: str | None = None,
                want: Want = ONE) -> ClaimRow:
    """:func:`claim` as a transaction of its own: on PostgreSQL the function's one call, in
    autocommit on the driver (:meth:`Store.call`, the instant claim's hot path); on SQLite
    :func:`claim` in :meth:`Store.begin`."""
    if not store.is_postgres:
        with store.begin() as s:
            return claim(s, recipe_id=recipe_id, user_id=user_id, meta_patch=meta_patch, now=now,
                         cooldown_s=cooldown_s, max_age_h=max_age_h, actor_id=actor_id, request_id=request_id,
                         want=want)
    return _claim_row(store.call(_CLAIM_SQL, _claim_params(recipe_id, user_id, actor_id or user_id, meta_patch, now,
                                                           cooldown_s, max_age_h, request_id, want)))


def _record_events(s: Session, result: ClaimRow, want: Want, matching: int, **event) -> None:
    """The claim events of a claim (SQLite; the claim function's closing ``INSERT``s say the same):
    every item asked for is an attempt -- one event per item handed out, one per item the pool
    could not give -- and a refusal before the pool is one."""
    asked = want.choices
    for n, gen in enumerate(result.generations):
        record_event(s, **event, outcome="claimed", generation_id=gen.id, choices=asked,
                     matched=None if asked is None else n < matching)
    missed = (want.count - len(result.generations) if result.outcome == "claimed"
              else want.count if result.outcome in ("no_backlog", "race") else 1)
    outcome = "no_backlog" if result.outcome == "claimed" else event_outcome(result.outcome)
    for _ in range(missed):
        record_event(s, **event, outcome=outcome, generation_id=None, choices=asked,
                     matched=None if asked is None else False)


def event_outcome(outcome: str) -> str:
    """The ``claim_events.outcome`` of a claim's outcome: an unknown or inactive recipe is an
    invalid attempt (the claim function's closing ``INSERT`` says the same in SQL)."""
    return "invalid" if outcome == "recipe_not_found" else outcome


def record_refusal(s: Session, *, user_id: str | None, recipe_id: int | None, outcome: str, now: datetime,
                   actor_id: str | None = None) -> None:
    """The claim event of an attempt refused before the claim was tried."""
    record_event(s, user_id=user_id, recipe_id=recipe_id, outcome=event_outcome(outcome), generation_id=None,
                 latency_ms=0.0, now=now, actor_id=actor_id)


@dataclass(frozen=True)
class TokenClaim:
    """What :func:`claim_with_token` did. ``user`` is ``None`` for an unknown or revoked token;
    ``row`` is ``None`` when no claim was tried (the token's user may not make this one)."""
    user: User | None
    row: ClaimRow | None = None


def _claim_with_token_statement():
    """The token lookup (and its touch) and the claim function as one statement. ``me`` is read
    twice, so PostgreSQL materializes it; ``claim`` calls a volatile function, so it is never
    inlined, and its role test filters the scan of ``me``, so the function runs only for a caller
    that may claim at all (a test on the outer join's condition would be applied after the call).
    Whether the caller may claim for the target is the function's own rule."""
    me = accounts.TOKEN_USER.cte("me")
    target = bindparam("target", type_=String)
    call = (func.delula_instant_claim(bindparam("recipe", type_=Integer), func.coalesce(target, me.c.id), me.c.id,
                                      cast(bindparam("patch", type_=String), JSONB),
                                      bindparam("now", type_=UTCDateTime), bindparam("cd", type_=Float),
                                      bindparam("request", type_=String), bindparam("fresh", type_=UTCDateTime),
                                      cast(bindparam("choices", type_=String), JSONB),
                                      bindparam("prefer", type_=Boolean), bindparam("count", type_=Integer),
                                      bindparam("all", type_=Boolean))
            .table_valued(*_CLAIM_COLUMNS).lateral("c"))
    claim = (select(call).select_from(me).join(call, true())
             .where(me.c.role == any_(bindparam("claimers", type_=ARRAY(String))))
             .cte("claim"))
    return select(me, claim).select_from(me.outerjoin(claim, true())).add_cte(accounts.TOKEN_TOUCHED)


_CLAIM_WITH_TOKEN_SQL = driver_sql(_claim_with_token_statement())


def claim_with_token(store: Store, *, token_hash: str, recipe_id: int, target_user_id: str | None,
                     claimers: tuple[str, ...], meta_patch: dict, now: datetime, cooldown_s: float,
                     max_age_h: float, request_id: str | None = None, want: Want = ONE) -> TokenClaim:
    """Authenticate a token and claim for its user, or for ``target_user_id`` as its user (who
    may do so by :func:`models.may_act_for`). Only users whose role is one of ``claimers`` claim
    at all. On PostgreSQL ONE statement in autocommit (:meth:`Store.call`: an API claim's one
    round trip); on SQLite the lookup, then :func:`claim`, in one transaction."""
    if not store.is_postgres:
        with store.begin() as s:
            user = accounts.user_for_token(s, token_hash, now)
            if user is None or user.role not in claimers:
                return TokenClaim(user)
            return TokenClaim(user, claim(s, recipe_id=recipe_id, user_id=target_user_id or user.id,
                                          actor_id=user.id, meta_patch=meta_patch, now=now, cooldown_s=cooldown_s,
                                          max_age_h=max_age_h, request_id=request_id, want=want))
    params = {**accounts.token_params(token_hash, now), "target": target_user_id, "claimers": list(claimers),
              **_claim_params(recipe_id, None, None, meta_patch, now, cooldown_s, max_age_h, request_id, want)}
    row = store.call(_CLAIM_WITH_TOKEN_SQL, params)   # the token's user is the actor: "user", "actor" unused
    if row is None:
        return TokenClaim(None)
    values = row._asdict()
    user = User(**{a.key: _as_read(a.columns[0], values[a.columns[0].name]) for a in User.__mapper__.column_attrs})
    return TokenClaim(user, None if row.o_outcome is None else _claim_row(row))


def _as_read(column, value):
    """A value the driver read, as the ORM would give it: a :class:`models.UTCDateTime` column's
    timestamp in UTC (the session's time zone may be another), other columns as they came."""
    return column.type.process_result_value(value, None) if isinstance(column.type, UTCDateTime) else value


def _claim_steps(s: Session, recipe_id: int, user_id: str, actor_id: str, meta_patch: dict, now: datetime,
                 cooldown_s: float, request_id: str | None, bound: datetime, want: Want) -> tuple[ClaimRow, int]:
    """The steps of ``delula_instant_claim`` as separate statements (SQLite), and how many of the
    items handed out match the choices."""
    actor = accounts.get_user(s, actor_id) if actor_id != user_id else None
    actor_role = actor.role if actor is not None else None
    if actor_id != user_id and actor_role not in STAFF_ROLES:
        return ClaimRow("forbidden"), 0
    recipe = catalog.get_recipe(s, recipe_id)
    if recipe is None or not recipe.is_active:
        return ClaimRow("recipe_not_found"), 0
    cost = recipe.credit_cost
    user = accounts.lock_user(s, user_id)
    if user is None:
        return ClaimRow("invalid", cost=cost), 0
    if actor_role is not None and not may_act_for(actor_role, user.is_test):
        return ClaimRow("forbidden", cost=cost), 0
    if cooldown_s > 0 and user.instant_cooldown_until is not None and user.instant_cooldown_until > now:
        wait = math.ceil((user.instant_cooldown_until - now).total_seconds())
        return ClaimRow("rate_limited", cost=cost, retry_after=max(1, wait)), 0
    allow_debit = user.may_overdraw
    needed = cost * (want.count if want.all else 1)
    if user.credits < needed and not allow_debit:
        return ClaimRow("insufficient_credits", cost=cost, available=user.credits, required=needed), 0
    ids = _oldest(s, recipe_id, bound, want.count, want.choices)
    matching = len(ids)
    if want.choices is not None and want.prefer and matching < want.count:
        ids += _oldest(s, recipe_id, bound, want.count - matching, None, besides=ids)
    if not ids or (want.all and len(ids) < want.count):
        enough = want.count if want.all else 1
        held = len(_oldest(s, recipe_id, bound, enough, None if want.prefer else want.choices))
        return ClaimRow("race" if held >= enough else "no_backlog", cost=cost), 0
    if user.credits < cost * len(ids) and not allow_debit:
        return ClaimRow("insufficient_credits", cost=cost, available=user.credits, required=cost * len(ids)), 0
    gens = tuple(Item.of(take_item(s, item, user_id, meta_patch, now, cost)) for item in ids)
    cooldown_until = now + timedelta(seconds=cooldown_s) if cooldown_s > 0 else None
    for gen in gens:
        balance = accounts.change_credits(s, user_id, -cost, kind="instant_claim", now=now, generation_id=gen.id,
                                          allow_debit=allow_debit, cooldown_until=cooldown_until, actor_id=actor_id)
        if balance is None:  # cannot happen under the row lock; never hand out an unpaid item
            raise RuntimeError("credit deduction failed under lock")
        if actor_id != user_id:
            audit.add(s, at=now, actor_id=actor_id, action="claim_for_user", target_user_id=user_id,
                      target_job_id=gen.id, target_recipe_id=recipe_id, details={"credits": cost},
                      request_id=request_id)
    catalog.bump_usage_count(s, recipe_id, len(gens))
    matched = None if want.choices is None else matching == len(gens)
    return ClaimRow("claimed", gens, balance, cost, matched=matched), matching


def _claim_row(row) -> ClaimRow:
    """A :class:`ClaimRow` from the columns of ``delula_instant_claim``."""
    gens = tuple(Item.from_json(doc) for doc in row.o_generations or ())
    return ClaimRow(row.o_outcome, gens, row.o_balance, row.o_cost, row.o_available, row.o_retry_after,
                    row.o_required, row.o_matched)


def _oldest(s: Session, recipe_id: int, bound: datetime, limit: int, choices: dict | None,
            besides: list[int] = ()) -> list[int]:
    """The ids of the oldest fresh pool items of a recipe with ``choices`` (SQLite's step)."""
    q = (select(Generation.id).where(Generation.recipe_id == recipe_id, IN_POOL, fresh(bound),
                                     *([has_choices(s, choices)] if choices is not None else []),
                                     *([Generation.id.not_in(besides)] if besides else []))
         .order_by(Generation.created_at, Generation.id).limit(limit))
    return list(s.scalars(q))


def take_item(s: Session, item_id: int, user_id: str, meta_patch: dict, now: datetime, cost: int) -> Generation:
    """Move a pool item to ``user_id`` (SQLite's step). The item becomes its new owner's:
    ``created_at`` is the claim time, ``credits_charged`` the cost and ``metadata.generatedAt``
    keeps when it was made."""
    made = s.scalar(select(Generation.created_at).where(Generation.id == item_id))
    patch = {**meta_patch, "generatedAt": generated_at(made)}
    stmt = (update(Generation).where(Generation.id == item_id, IN_POOL)
            .values(user_id=user_id, meta=func.json_patch(Generation.meta, json.dumps(patch)), created_at=now,
                    updated_at=now, credits_charged=cost)
            .returning(Generation)
            .execution_options(synchronize_session=False))
    return s.scalars(stmt).one()


def has_choices(s: Session, choices: dict):
    """A generation whose form data has every value of ``choices`` (the rule of
    :func:`forms.matches`): ``@>`` on PostgreSQL, as the claim function asks it; on SQLite each
    value compared with its JSON type, so ``true`` is not ``1``."""
    if is_postgres(s):
        return Generation.form_data.op("@>")(cast(bindparam(None, json.dumps(choices), type_=String), JSONB))
    clauses = []
    for key, value in choices.items():
        path = '$."' + key.replace('"', '""') + '"'
        kind = func.json_type(Generation.form_data, path)
        if isinstance(value, bool):
            clauses.append(kind == ("true" if value else "false"))
        elif isinstance(value, (int, float)):
            clauses.append(and_(kind.in_(("integer", "real")), func.json_extract(Generation.form_data, path) == value))
        elif isinstance(value, str):
            clauses.append(and_(kind == "text", func.json_extract(Generation.form_data, path) == value))
        else:  # a value no field takes: it matches nothing
            clauses.append(false())
    return and_(true(), *clauses)


def generated_at(made: datetime) -> str:
    """When a claimed item was made, as ``metadata.generatedAt`` keeps it (the claim function
    writes the same with ``to_char``)."""
    return made.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def count_ready(s: Session, recipe_id: int, *, now: datetime, max_age_h: float, choices: dict | None,
                limit: int) -> int:
    """How many fresh pool items of a recipe have ``choices`` (all of them without), counted up
    to ``limit``: a bounded scan of the pool index."""
    ready = (select(Generation.id).where(Generation.recipe_id == recipe_id, IN_POOL,
                                         fresh(fresh_after(now, max_age_h)),
                                         *([has_choices(s, choices)] if choices else []))
             .limit(limit).subquery())
    return s.scalar(select(func.count()).select_from(ready)) or 0


def count_items(s: Session, recipe_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Generation)
                    .where(Generation.recipe_id == recipe_id, IN_POOL)) or 0


def record_event(s: Session, *, user_id: str | None, recipe_id: int | None, outcome: str,
                 generation_id: int | None, latency_ms: float, now: datetime, actor_id: str | None = None,
                 choices: dict | None = None, matched: bool | None = None) -> None:
    s.add(ClaimEvent(user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=generation_id,
                     latency_ms=latency_ms, created_at=now, actor_id=actor_id, choices=choices, matched=matched))
    s.flush()


def reserve_key(s: Session, user_id: str, key: str, now: datetime, request_hash: str | None = None) -> bool:
    """Insert a placeholder for an idempotency key, with a hash of what it asks for. ``False``
    when the key was used before.

    A concurrent transaction inserting the same key waits for this one to end, then sees it.
    """
    insert = pg_insert if is_postgres(s) else sqlite_insert
    stmt = (insert(IdempotencyKey)
            .values(user_id=user_id, key=key, status_code=0, response={}, created_at=now, request_hash=request_hash)
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
            .returning(IdempotencyKey.key))
    return s.scalar(stmt) is not None


class StoredResponse(NamedTuple):
    outcome: str
    response: dict
    request_hash: str | None   # None for keys stored before requests were hashed (migration 0010)


def stored_response(s: Session, user_id: str, key: str) -> StoredResponse | None:
    """The outcome, body and request hash stored for a key, or ``None`` while it is only reserved."""
    row = s.get(IdempotencyKey, (user_id, key), populate_existing=True)
    if row is None or row.status_code == 0:
        return None
    return StoredResponse(row.outcome, row.response, row.request_hash)


def prune_keys(s: Session, before: datetime) -> int:
    """Forget idempotency keys created before ``before``; returns how many went."""
    return s.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before)).rowcount or 0


def store_response(s: Session, user_id: str, key: str, outcome: str, status_code: int, response: dict) -> None:
    """What a reserved key answered: its outcome, with the HTTP status and body it was given."""
    s.execute(update(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
              .values(outcome=outcome, status_code=status_code, response=response))
