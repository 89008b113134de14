"""The instant claim: one transaction that hands a finished backlog generation to a user.

Order (SPEC §5): recipe exists and is active → cooldown → credits → pool → claim. The claim,
the conditional credit deduction, the ledger row, the recipe usage counter, the generation's
``metadata.isInstant``/``claimedAt``, the cooldown and the claim event commit together or not at
all. Lock order is fixed — idempotency key, then the credited user's row (``FOR NO KEY UPDATE``,
which the key row's foreign-key KEY SHARE lock does not block), then one pool row — so concurrent
claims never deadlock, and ``FOR UPDATE SKIP LOCKED`` lets them take different rows.
On PostgreSQL everything after the idempotency key is one call of a SQL function (one round trip,
see ``storage/pool.py``); without a key that call is the whole transaction, sent in autocommit
mode (``Store.single_statement``), so no ``BEGIN``/``COMMIT`` round trips either.

The result is a typed :class:`ClaimResult`; :meth:`ClaimResult.response` gives the HTTP status
and JSON body of SPEC §6, used alike by the API, the CLI and the dashboard.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from . import auth, storage
from .generations import generation_json, isoformat
from .storage import SYSTEM_BACKLOG_USER_ID, pool

NO_BACKLOG_MESSAGE = "No instant generation available"
RACE_MESSAGE = "No instant generation available (race condition)"


class Outcome(str, enum.Enum):
    CLAIMED = "claimed"
    NO_BACKLOG = "no_backlog"
    RACE = "race"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    RATE_LIMITED = "rate_limited"
    RECIPE_NOT_FOUND = "recipe_not_found"
    INVALID = "invalid"

    @property
    def event(self) -> str:
        """The ``claim_events.outcome`` recorded for this result."""
        return "invalid" if self in (Outcome.RECIPE_NOT_FOUND, Outcome.INVALID) else self.value


@dataclass(frozen=True)
class ClaimResult:
    outcome: Outcome
    status_code: int
    body: dict = field(default_factory=dict)
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.CLAIMED

    @property
    def generation(self) -> dict | None:
        return self.body.get("generation")

    @property
    def retry_after(self) -> int | None:
        return self.body.get("retryAfter")

    def response(self) -> tuple[int, dict]:
        return self.status_code, self.body


def _result(outcome: Outcome, **extra) -> ClaimResult:
    if outcome is Outcome.CLAIMED:
        return ClaimResult(outcome, 200, extra)
    if outcome is Outcome.NO_BACKLOG:
        return ClaimResult(outcome, 404, {"message": NO_BACKLOG_MESSAGE, "fallbackToModal": True})
    if outcome is Outcome.RACE:
        return ClaimResult(outcome, 409, {"message": RACE_MESSAGE, "fallbackToModal": True})
    if outcome is Outcome.INSUFFICIENT_CREDITS:
        return ClaimResult(outcome, 400, {"message": "Insufficient credits", **extra})
    if outcome is Outcome.RATE_LIMITED:
        secs = extra["retryAfter"]
        return ClaimResult(outcome, 429, {
            "message": f"Please wait {secs} s before the next instant generation", "retryAfter": secs})
    if outcome is Outcome.RECIPE_NOT_FOUND:
        return ClaimResult(outcome, 404, {"message": "Recipe not found"})
    return ClaimResult(outcome, 400, {"message": "Invalid request", "errors": extra.get("errors", {})})


def instant_claim(rt, *, recipe_id: int, user_id: str, actor_id: str | None = None,
                  idempotency_key: str | None = None) -> ClaimResult:
    """Claim the oldest finished backlog generation of ``recipe_id`` for ``user_id``.

    ``actor_id`` is who asked (the credited user unless staff acted for a test user); an
    ``idempotency_key`` is scoped to the actor. Never raises for a refused claim: the refusal is
    the result. Raises :class:`storage.DatabaseUnavailable` when the database is down.
    """
    actor_id = actor_id or user_id
    now = rt.now()
    # Without an idempotency key the claim is one statement (on PostgreSQL one function call),
    # atomic by itself: no BEGIN/COMMIT round trips around it.
    with (rt.store.begin() if idempotency_key is not None else rt.store.single_statement()) as s:
        if idempotency_key is not None and not pool.reserve_key(s, actor_id, idempotency_key, now):
            stored = pool.stored_response(s, actor_id, idempotency_key)
            if stored is not None:
                code, body = stored
                return ClaimResult(_outcome_for(code, body), code, body, replayed=True)
        if user_id == SYSTEM_BACKLOG_USER_ID:  # the pool's owner: the item would stay in the pool, charged
            pool.record_event(s, user_id=user_id, recipe_id=recipe_id, outcome=Outcome.INVALID.event,
                              generation_id=None, latency_ms=0.0, now=now)
            result = _result(Outcome.INVALID, errors={"targetUserId": "must not be the system user"})
        else:
            row = pool.claim(s, recipe_id=recipe_id, user_id=user_id, now=now,
                             meta_patch=_meta_patch(now),
                             cooldown_s=rt.settings.instant_cooldown_s)
            result = _from_row(row)
        if idempotency_key is not None:
            pool.store_response(s, actor_id, idempotency_key, result.status_code, result.body)
    if result.ok:
        rt.invalidate()
    return result


def instant_claim_with_token(rt, token: str, *, recipe_id: int, target_user_id: str | None = None,
                             idempotency_key: str | None = None) -> tuple[storage.User | None, ClaimResult | None]:
    """Authenticate a bearer token and claim for its user, or for ``target_user_id`` (staff only).

    Returns ``(None, None)`` for a token that authenticates nobody (unknown, revoked, the system
    user's), ``(user, None)`` when the user may not claim for ``target_user_id``, else
    ``(user, result)`` as :func:`instant_claim`. On PostgreSQL without an idempotency key the
    token check and the claim are ONE statement: an API claim costs one round trip.
    """
    if idempotency_key is not None or not rt.store.is_postgres or target_user_id == SYSTEM_BACKLOG_USER_ID:
        user = auth.authenticate_token(rt, token)
        if user is None or (target_user_id is not None and user.role not in auth.STAFF_ROLES):
            return user, None
        return user, instant_claim(rt, recipe_id=recipe_id, user_id=target_user_id or user.id, actor_id=user.id,
                                   idempotency_key=idempotency_key)
    if not auth.plausible_token(token):
        return None, None
    now = rt.now()
    with rt.store.single_statement() as s:
        done = pool.claim_with_token(s, token_hash=auth.hash_token(token), recipe_id=recipe_id,
                                     target_user_id=target_user_id, claimers=auth.ROLES, targeters=auth.STAFF_ROLES,
                                     meta_patch=_meta_patch(now), now=now, cooldown_s=rt.settings.instant_cooldown_s)
    user = auth.caller(done.user)
    if user is None or done.row is None:
        return user, None
    result = _from_row(done.row)
    if result.ok:
        rt.invalidate()
    return user, result


def _meta_patch(now) -> dict:
    return {"isInstant": True, "claimedAt": isoformat(now)}


def _from_row(row: pool.ClaimRow) -> ClaimResult:
    outcome = Outcome(row.outcome)
    if outcome is Outcome.CLAIMED:
        return _result(outcome, generation=generation_json(row.generation), creditsCharged=row.cost,
                       creditsRemaining=row.balance)
    if outcome is Outcome.INSUFFICIENT_CREDITS:
        return _result(outcome, required=row.cost, available=row.available)
    if outcome is Outcome.RATE_LIMITED:
        return _result(outcome, retryAfter=row.retry_after)
    if outcome is Outcome.INVALID:
        return _result(outcome, errors={"targetUserId": "no such user"})
    return _result(outcome)


def _outcome_for(code: int, body: dict) -> Outcome:
    if code == 200:
        return Outcome.CLAIMED
    if code == 409:
        return Outcome.RACE
    if code == 429:
        return Outcome.RATE_LIMITED
    if code == 404:
        return Outcome.NO_BACKLOG if body.get("fallbackToModal") else Outcome.RECIPE_NOT_FOUND
    if body.get("message") == "Insufficient credits":
        return Outcome.INSUFFICIENT_CREDITS
    return Outcome.INVALID


__all__ = ["instant_claim", "instant_claim_with_token", "ClaimResult", "Outcome", "storage"]
