"""The instant claim's statements: the pool, claim events and idempotency keys.

:func:`claim` is the whole claim after the idempotency key, whatever the database: on PostgreSQL
one call of the ``delula_instant_claim`` function (its newest version in ``sql/``), one round
trip; on SQLite :func:`_claim_steps`, the same steps as separate statements under the database
write lock. :func:`claim_with_token` puts the API's bearer-token check in front of it (on
PostgreSQL in the same statement). Lock order is fixed — idempotency key row, the credited user's
row, one pool row — so concurrent claims never deadlock. ``tests/test_claims.py`` runs every
outcome through both.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import NamedTuple
from datetime import datetime, timedelta, timezone

from sqlalchemy import (ARRAY, Float, Integer, String, any_, bindparam, cast, delete, exists, func,
                        select, text, true, update)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import accounts, audit, catalog
from .db import is_postgres
from .models import (IN_POOL, STAFF_ROLES, ClaimEvent, Generation, IdempotencyKey, User, UTCDateTime, fresh,
                     fresh_after, may_act_for)


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


_CLAIM_CALL = text("SELECT * FROM delula_instant_claim(:recipe, :user, :actor, CAST(:patch AS jsonb), :now, :cd, "
                   ":request, :fresh)")
_CLAIM_COLUMNS = ("o_outcome", "o_generation", "o_balance", "o_cost", "o_available", "o_retry_after")


def claim(s: Session, *, recipe_id: int, user_id: str, meta_patch: dict, now: datetime, cooldown_s: float,
          max_age_h: float, actor_id: str | None = None, request_id: str | None = None) -> ClaimRow:
    """Claim the oldest fresh pool item of ``recipe_id`` for ``user_id``, charge it, record the event.

    ``max_age_h`` is the age bound (``DELULA_MAX_ITEM_AGE_H``): an item completed longer ago
    is never handed out (:func:`models.fresh`). ``actor_id`` is who asked (``None``: the user
    itself); acting for another user follows :func:`models.may_act_for`, and a claim for
    another user is audited."""
    actor_id = actor_id or user_id
    bound = fresh_after(now, max_age_h)
    if is_postgres(s):
        params = {"recipe": recipe_id, "user": user_id, "actor": actor_id, "patch": json.dumps(meta_patch),
                  "now": now, "cd": float(cooldown_s), "request": request_id, "fresh": bound}
        return _claim_row(s.connection().execute(_CLAIM_CALL, params).one())  # Core: no ORM work per call
    started = time.perf_counter()
    result = _claim_steps(s, recipe_id, user_id, actor_id, meta_patch, now, cooldown_s, request_id, bound)
    record_event(s, user_id=user_id, recipe_id=recipe_id, outcome=event_outcome(result.outcome),
                 generation_id=result.generation.id if result.generation is not None else None,
                 latency_ms=(time.perf_counter() - started) * 1000.0, now=now, actor_id=actor_id)
    return result


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
                                      bindparam("request", type_=String), bindparam("fresh", type_=UTCDateTime))
            .table_valued(*_CLAIM_COLUMNS).lateral("c"))
    claim = (select(call).select_from(me).join(call, true())
             .where(me.c.role == any_(bindparam("claimers", type_=ARRAY(String))))
             .cte("claim"))
    return select(me, claim).select_from(me.outerjoin(claim, true())).add_cte(accounts.TOKEN_TOUCHED)


_CLAIM_WITH_TOKEN = _claim_with_token_statement()


def claim_with_token(s: Session, *, token_hash: str, recipe_id: int, target_user_id: str | None,
                     claimers: tuple[str, ...], meta_patch: dict, now: datetime, cooldown_s: float,
                     max_age_h: float, request_id: str | None = None) -> TokenClaim:
    """Authenticate a token and claim for its user, or for ``target_user_id`` as its user (who
    may do so by :func:`models.may_act_for`). Only users whose role is one of ``claimers`` claim
    at all. On PostgreSQL ONE statement (an API claim's one round trip); on SQLite the lookup,
    then :func:`claim`, in the session's transaction."""
    if not is_postgres(s):
        user = accounts.user_for_token(s, token_hash, now)
        if user is None or user.role not in claimers:
            return TokenClaim(user)
        return TokenClaim(user, claim(s, recipe_id=recipe_id, user_id=target_user_id or user.id, actor_id=user.id,
                                      meta_patch=meta_patch, now=now, cooldown_s=cooldown_s, max_age_h=max_age_h,
                                      request_id=request_id))
    params = {**accounts.token_params(token_hash, now), "recipe": recipe_id, "target": target_user_id,
              "patch": json.dumps(meta_patch), "now": now, "cd": float(cooldown_s), "request": request_id,
              "fresh": fresh_after(now, max_age_h), "claimers": list(claimers)}
    row = s.connection().execute(_CLAIM_WITH_TOKEN, params).one_or_none()
    if row is None:
        return TokenClaim(None)
    values = row._mapping
    user = User(**{a.key: values[a.columns[0].name] for a in User.__mapper__.column_attrs})
    return TokenClaim(user, None if row.o_outcome is None else _claim_row(row))


def _claim_steps(s: Session, recipe_id: int, user_id: str, actor_id: str, meta_patch: dict, now: datetime,
                 cooldown_s: float, request_id: str | None, bound: datetime) -> ClaimRow:
    """The steps of ``delula_instant_claim`` as separate statements (SQLite)."""
    actor = accounts.get_user(s, actor_id) if actor_id != user_id else None
    actor_role = actor.role if actor is not None else None
    if actor_id != user_id and actor_role not in STAFF_ROLES:
        return ClaimRow("forbidden")
    recipe = catalog.get_recipe(s, recipe_id)
    if recipe is None or not recipe.is_active:
        return ClaimRow("recipe_not_found")
    cost = recipe.credit_cost
    user = accounts.lock_user(s, user_id)
    if user is None:
        return ClaimRow("invalid", cost=cost)
    if actor_role is not None and not may_act_for(actor_role, user.is_test):
        return ClaimRow("forbidden", cost=cost)
    if cooldown_s > 0 and user.instant_cooldown_until is not None and user.instant_cooldown_until > now:
        wait = math.ceil((user.instant_cooldown_until - now).total_seconds())
        return ClaimRow("rate_limited", cost=cost, retry_after=max(1, wait))
    allow_debit = user.may_overdraw
    if user.credits < cost and not allow_debit:
        return ClaimRow("insufficient_credits", cost=cost, available=user.credits)
    gen = take_item(s, recipe_id, user_id, meta_patch, now, cost, bound)
    if gen is None:
        return ClaimRow("race" if has_items(s, recipe_id, bound) else "no_backlog", cost=cost)
    balance = accounts.change_credits(
        s, user_id, -cost, kind="instant_claim", now=now, generation_id=gen.id, allow_debit=allow_debit,
        cooldown_until=now + timedelta(seconds=cooldown_s) if cooldown_s > 0 else None, actor_id=actor_id)
    if balance is None:  # cannot happen under the row lock; never hand out an unpaid item
        raise RuntimeError("credit deduction failed under lock")
    catalog.bump_usage_count(s, recipe_id)
    if actor_id != user_id:
        audit.add(s, at=now, actor_id=actor_id, action="claim_for_user", target_user_id=user_id,
                  target_job_id=gen.id, target_recipe_id=recipe_id, details={"credits": cost}, request_id=request_id)
    return ClaimRow("claimed", gen, balance, cost)


def _claim_row(row) -> ClaimRow:
    """A :class:`ClaimRow` from the columns of ``delula_instant_claim``."""
    gen = _generation_from_json(row.o_generation) if row.o_generation is not None else None
    return ClaimRow(row.o_outcome, gen, row.o_balance, row.o_cost, row.o_available, row.o_retry_after)


def _generation_from_json(doc: dict) -> Generation:
    """A detached :class:`Generation` from the function's ``to_jsonb(row)``."""
    values = {}
    for attr in Generation.__mapper__.column_attrs:
        value = doc.get(attr.columns[0].name)
        if value is not None and attr.key.endswith("_at"):
            value = datetime.fromisoformat(value).astimezone(timezone.utc)
        values[attr.key] = value
    return Generation(**values)


def take_item(s: Session, recipe_id: int, user_id: str, meta_patch: dict, now: datetime,
              cost: int, bound: datetime) -> Generation | None:
    """Move the oldest claimable generation of a recipe, completed at or after ``bound``
    (:func:`models.fresh`), to ``user_id`` (SQLite's step).

    The item becomes its new owner's: ``created_at`` is the claim time, ``credits_charged`` the
    cost and ``metadata.generatedAt`` keeps when it was made. ``None`` when no fresh item is left.
    """
    oldest = s.execute(select(Generation.id, Generation.created_at)
                       .where(Generation.recipe_id == recipe_id, IN_POOL, fresh(bound))
                       .order_by(Generation.created_at, Generation.id).limit(1)).first()
    if oldest is None:
        return None
    patch = {**meta_patch, "generatedAt": generated_at(oldest.created_at)}
    stmt = (update(Generation).where(Generation.id == oldest.id, IN_POOL)
            .values(user_id=user_id, meta=func.json_patch(Generation.meta, json.dumps(patch)), created_at=now,
                    updated_at=now, credits_charged=cost)
            .returning(Generation)
            .execution_options(synchronize_session=False))
    return s.scalars(stmt).first()


def generated_at(made: datetime) -> str:
    """When a claimed item was made, as ``metadata.generatedAt`` keeps it (the claim function
    writes the same with ``to_char``)."""
    return made.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def has_items(s: Session, recipe_id: int, bound: datetime) -> bool:
    """Whether any claimable row completed at or after ``bound`` exists, locked or not (tells a
    race from an empty pool)."""
    return bool(s.scalar(select(exists().where(Generation.recipe_id == recipe_id, IN_POOL, fresh(bound)))))


def count_items(s: Session, recipe_id: int) -> int:
    return s.scalar(select(func.count()).select_from(Generation)
                    .where(Generation.recipe_id == recipe_id, IN_POOL)) or 0


def record_event(s: Session, *, user_id: str | None, recipe_id: int | None, outcome: str,
                 generation_id: int | None, latency_ms: float, now: datetime, actor_id: str | None = None) -> None:
    s.add(ClaimEvent(user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=generation_id,
                     latency_ms=latency_ms, created_at=now, actor_id=actor_id))
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
