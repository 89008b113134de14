"""The instant claim's statements: the pool, claim events and idempotency keys.

:func:`claim` is the whole claim after the idempotency key: on PostgreSQL one call of the
``delula_instant_claim`` function (migration 0002), one round trip; on SQLite the same steps as
separate statements under the database write lock. Lock order is fixed — idempotency key row,
the credited user's row, one pool row — so concurrent claims never deadlock.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, exists, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import SYSTEM_BACKLOG_USER_ID, ClaimEvent, Generation, IdempotencyKey

_POOL = (Generation.user_id == SYSTEM_BACKLOG_USER_ID, Generation.status == "completed")


@dataclass(frozen=True)
class ClaimRow:
    """What a claim did. ``outcome``: claimed, recipe_not_found, invalid (no such user),
    rate_limited, insufficient_credits, race (every item locked by other claims) or no_backlog."""
    outcome: str
    generation: Generation | None = None
    balance: int | None = None        # after the charge
    cost: int | None = None           # the recipe's credit cost
    available: int | None = None      # the user's credits, when insufficient
    retry_after: int | None = None    # seconds, when rate limited


_CLAIM_CALL = text("SELECT * FROM delula_instant_claim(:recipe, :user, CAST(:patch AS jsonb), :now, :cd)")


def claim(s: Session, *, recipe_id: int, user_id: str, meta_patch: dict, now: datetime,
          cooldown_s: float) -> ClaimRow:
    """Claim the oldest pool item of ``recipe_id`` for ``user_id``, charge it, record the event."""
    if is_postgres(s):
        row = s.execute(_CLAIM_CALL, {"recipe": recipe_id, "user": user_id, "patch": json.dumps(meta_patch),
                                      "now": now, "cd": float(cooldown_s)}).one()
        gen = _generation_from_json(row.o_generation) if row.o_generation is not None else None
        return ClaimRow(row.o_outcome, gen, row.o_balance, row.o_cost, row.o_available, row.o_retry_after)
    started = time.perf_counter()
    result = _claim_steps(s, recipe_id, user_id, meta_patch, now, cooldown_s)
    record_event(s, user_id=user_id, recipe_id=recipe_id,
                 outcome="invalid" if result.outcome == "recipe_not_found" else result.outcome,
                 generation_id=result.generation.id if result.generation is not None else None,
                 latency_ms=(time.perf_counter() - started) * 1000.0, now=now)
    return result


def _claim_steps(s: Session, recipe_id: int, user_id: str, meta_patch: dict, now: datetime,
                 cooldown_s: float) -> ClaimRow:
    """The steps of ``delula_instant_claim`` as separate statements (SQLite)."""
    from . import accounts, catalog

    recipe = catalog.get_recipe(s, recipe_id)
    if recipe is None or not recipe.is_active:
        return ClaimRow("recipe_not_found")
    cost = recipe.credit_cost
    user = accounts.lock_user(s, user_id)
    if user is None:
        return ClaimRow("invalid", cost=cost)
    if cooldown_s > 0 and user.instant_cooldown_until is not None and user.instant_cooldown_until > now:
        wait = math.ceil((user.instant_cooldown_until - now).total_seconds())
        return ClaimRow("rate_limited", cost=cost, retry_after=max(1, wait))
    allow_debit = user.role == "system"
    if user.credits < cost and not allow_debit:
        return ClaimRow("insufficient_credits", cost=cost, available=user.credits)
    gen = take_item(s, recipe_id, user_id, meta_patch, now)
    if gen is None:
        return ClaimRow("race" if has_items(s, recipe_id) else "no_backlog", cost=cost)
    balance = accounts.change_credits(
        s, user_id, -cost, kind="instant_claim", now=now, generation_id=gen.id, allow_debit=allow_debit,
        cooldown_until=now + timedelta(seconds=cooldown_s) if cooldown_s > 0 else None)
    if balance is None:  # cannot happen under the row lock; never hand out an unpaid item
        raise RuntimeError("credit deduction failed under lock")
    catalog.bump_usage_count(s, recipe_id)
    return ClaimRow("claimed", gen, balance, cost)


def _generation_from_json(doc: dict) -> Generation:
    """A detached :class:`Generation` from the function's ``to_jsonb(row)``."""
    values = {}
    for attr in Generation.__mapper__.column_attrs:
        value = doc.get(attr.columns[0].name)
        if value is not None and attr.key.endswith("_at"):
            value = datetime.fromisoformat(value).astimezone(timezone.utc)
        values[attr.key] = value
    return Generation(**values)


def take_item(s: Session, recipe_id: int, user_id: str, meta_patch: dict, now: datetime) -> Generation | None:
    """Move the oldest claimable generation of a recipe to ``user_id`` in one statement.

    On PostgreSQL the row is picked with ``FOR UPDATE SKIP LOCKED`` so concurrent claims take
    different rows; on SQLite the statement runs under the database write lock. ``None`` when no
    unlocked row is left.
    """
    oldest = (select(Generation.id).where(Generation.recipe_id == recipe_id, *_POOL)
              .order_by(Generation.created_at, Generation.id).limit(1)
              .with_for_update(skip_locked=True).scalar_subquery())
    if is_postgres(s):
        meta = Generation.meta.op("||")(literal(meta_patch, JSONB))
    else:
        meta = func.json_patch(Generation.meta, json.dumps(meta_patch))
    stmt = (update(Generation).where(Generation.id == oldest, *_POOL)
            .values(user_id=user_id, meta=meta, updated_at=now)
            .returning(Generation)
            .execution_options(synchronize_session=False))
    return s.scalars(stmt).first()


def has_items(s: Session, recipe_id: int) -> bool:
    """Whether any claimable row exists, locked or not (tells a race from an empty pool)."""
    return bool(s.scalar(select(exists().where(Generation.recipe_id == recipe_id, *_POOL))))


def count_items(s: Session, recipe_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Generation)
                    .where(Generation.recipe_id == recipe_id, *_POOL)) or 0


def record_event(s: Session, *, user_id: str | None, recipe_id: int | None, outcome: str,
                 generation_id: int | None, latency_ms: float, now: datetime) -> None:
    s.add(ClaimEvent(user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=generation_id,
                     latency_ms=latency_ms, created_at=now))
    s.flush()


def reserve_key(s: Session, user_id: str, key: str, now: datetime) -> bool:
    """Insert a placeholder for an idempotency key. ``False`` when the key was used before.

    A concurrent transaction inserting the same key waits for this one to end, then sees it.
    """
    insert = pg_insert if is_postgres(s) else sqlite_insert
    stmt = (insert(IdempotencyKey)
            .values(user_id=user_id, key=key, status_code=0, response={}, created_at=now)
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
            .returning(IdempotencyKey.key))
    return s.scalar(stmt) is not None


def stored_response(s: Session, user_id: str, key: str) -> tuple[int, dict] | None:
    row = s.get(IdempotencyKey, (user_id, key), populate_existing=True)
    if row is None or row.status_code == 0:
        return None
    return row.status_code, row.response


def prune_keys(s: Session, before: datetime) -> int:
    """Forget idempotency keys created before ``before``; returns how many went."""
    return s.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before)).rowcount or 0


def store_response(s: Session, user_id: str, key: str, status_code: int, response: dict) -> None:
    s.execute(update(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
              .values(status_code=status_code, response=response))
