"""The instant claim: one transaction that hands a finished backlog generation to a user.

Order (SPEC §5): may the actor claim for this user → recipe exists and is active → cooldown →
credits → pool (its oldest item completed within ``DELULA_MAX_ITEM_AGE_H``; an older one is
never handed out) → claim. Staff act for another user as ``storage.may_act_for`` says (ops for any
account, product staff for test accounts; anyone else is ``forbidden``, 403). The claim, the
conditional credit deduction, the ledger row (naming the actor), the recipe usage counter, the
generation's ``metadata.isInstant``/``claimedAt``/``generatedAt`` (its ``created_at`` becomes the
claim time, ``credits_charged`` the cost), the cooldown, the claim event and — for another user —
the ``claim_for_user`` audit row commit together or not at all. Lock order is fixed — idempotency key, then the credited user's row, then one pool row — so
concurrent claims never deadlock, and ``FOR UPDATE SKIP LOCKED`` lets them take different rows.
How the database does it is storage's business (``storage/pool.py``: on PostgreSQL one call of
the function in ``storage/sql/instant_claim_v*.sql``, one round trip).

A claim may ask for more than the recipe's oldest item (:class:`Ask`): ``choices``, a subset of
the recipe's form data validated like a normal generation's (``forms.validate_choices``), which
an item must have (``exact``) or should have (``prefer``: the oldest matching item, else the
oldest); and ``count`` items (1-10) in the same transaction, ``all`` of them or none. Each item
is charged with its own ledger row; the cooldown applies once. Every item asked for is an
attempt: a claim event per item handed out and per item the pool could not give, with the
choices, so misses are the unmet demand the backlog follows.

The contract is the :class:`Outcome` and the typed fields of :class:`ClaimResult`. One mapping,
:func:`response`, turns a result into the HTTP status and JSON body of SPEC §6 (the API answers
it, the CLI prints it); the dashboard switches on the outcome. An idempotent replay stores the
outcome, the body and a hash of what was asked (:func:`request_hash`), and gives back the same
result for the same request; the key with another request is ``key_reused`` (422).
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

from . import audit, auth, forms
from .clock import isoformat
from .generations import generation_json
from .runtime import RECIPE_VARIABLES_CACHE
from .storage import SYSTEM_BACKLOG_USER_ID, catalog, pool

NO_BACKLOG_MESSAGE = "No instant generation available"
RACE_MESSAGE = "No instant generation available (race condition)"
FORBIDDEN_MESSAGE = "targetUserId: ops may act for any account, product staff for test accounts only"
KEY_REUSED_MESSAGE = "This Idempotency-Key was used for a different request"


class Outcome(str, enum.Enum):
    """What a claim attempt came to; the values are those of ``delula_instant_claim``."""
    CLAIMED = "claimed"
    NO_BACKLOG = "no_backlog"
    RACE = "race"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    RATE_LIMITED = "rate_limited"
    RECIPE_NOT_FOUND = "recipe_not_found"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"                         # the caller may not claim for this user
    KEY_REUSED = "key_reused"                       # the idempotency key was used for another request

    @property
    def event(self) -> str:
        """The ``claim_events.outcome`` recorded for this outcome."""
        return pool.event_outcome(self.value)


class Match(str, enum.Enum):
    """How a claim's choices are applied."""
    EXACT = "exact"     # only an item with every chosen value
    PREFER = "prefer"   # the oldest matching item, else the oldest item


MAX_COUNT = pool.MAX_BATCH
SCHEMA_TTL_S = 30.0   # a recipe's fields, as claims validate choices against them, are this old at most


@dataclass(frozen=True)
class Ask:
    """What a claim asks for beyond the recipe. ``choices``: a subset of its form data (``None``
    or empty: none); ``count``: how many items (``None``: one, answered as a single claim);
    ``all``: all of them or none (without ``count`` a single claim, which is that already)."""
    choices: dict | None = None
    match: Match = Match.EXACT
    count: int | None = None
    all: bool = False

    @property
    def batch(self) -> bool:
        return self.count is not None

    @property
    def plain(self) -> bool:
        return self == PLAIN

    def errors(self) -> dict | None:
        """Why this ask is malformed, as ``{field: problem}``, or ``None`` (the API's body model
        asks the same)."""
        if self.count is not None and (type(self.count) is not int or not 1 <= self.count <= MAX_COUNT):
            return {"count": f"must be a whole number from 1 to {MAX_COUNT}"}
        return None

    def want(self, choices: dict | None) -> pool.Want:
        return pool.Want(choices=choices or None, prefer=self.match is Match.PREFER, count=self.count or 1,
                         all=self.all)


PLAIN = Ask()


@dataclass(frozen=True)
class ClaimResult:
    """An outcome and the fields that go with it (the others stay ``None``)."""
    outcome: Outcome
    generation: dict | None = None        # CLAIMED: the generation object of SPEC §6 (a batch's first)
    credits_charged: int | None = None    # CLAIMED: for every item
    credits_remaining: int | None = None  # CLAIMED
    required: int | None = None           # INSUFFICIENT_CREDITS
    available: int | None = None          # INSUFFICIENT_CREDITS
    retry_after: int | None = None        # RATE_LIMITED: seconds
    errors: dict | None = None            # INVALID: field → problem
    replayed: bool = False                # given back for a repeated idempotency key
    generations: list | None = None       # CLAIMED by a batch (``count``): every item, oldest first
    matched: bool | None = None           # CLAIMED with choices: every item has them
    choices: dict | None = None           # NO_BACKLOG, RACE: the choices as given, to prefill the form

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.CLAIMED

    @property
    def status_code(self) -> int:
        return response(self)[0]

    @property
    def body(self) -> dict:
        return response(self)[1]

    def response(self) -> tuple[int, dict]:
        return response(self)


def response(result: ClaimResult) -> tuple[int, dict]:
    """The HTTP status and JSON body of SPEC §6 for a claim's result: the one mapping."""
    o = result.outcome
    if o is Outcome.CLAIMED:
        items = ({"generations": result.generations} if result.generations is not None
                 else {"generation": result.generation})
        return 200, {**items, "creditsCharged": result.credits_charged, "creditsRemaining": result.credits_remaining,
                     **({"matched": result.matched} if result.matched is not None else {})}
    prefill = {"formData": result.choices} if result.choices is not None else {}
    if o is Outcome.NO_BACKLOG:
        return 404, {"message": NO_BACKLOG_MESSAGE, "fallbackToModal": True, **prefill}
    if o is Outcome.RACE:
        return 409, {"message": RACE_MESSAGE, "fallbackToModal": True, **prefill}
    if o is Outcome.INSUFFICIENT_CREDITS:
        return 400, {"message": "Insufficient credits", "required": result.required, "available": result.available}
    if o is Outcome.RATE_LIMITED:
        return 429, {"message": f"Please wait {result.retry_after} s before the next instant generation",
                     "retryAfter": result.retry_after}
    if o is Outcome.RECIPE_NOT_FOUND:
        return 404, {"message": "Recipe not found"}
    if o is Outcome.FORBIDDEN:
        return 403, {"message": FORBIDDEN_MESSAGE}
    if o is Outcome.KEY_REUSED:
        return 422, {"message": KEY_REUSED_MESSAGE}
    errors = result.errors or {}
    # choices the recipe refuses are form data it refuses, answered as POST /api/generate answers them
    message = "Invalid form data" if any(k.startswith("formData.") for k in errors) else "Invalid request"
    return 400, {"message": message, "errors": errors}


def _replayed(outcome: Outcome, body: dict) -> ClaimResult:
    """The result a stored ``(outcome, body)`` was made from (the inverse of :func:`response`)."""
    items = body.get("generations")
    return ClaimResult(outcome, generation=items[0] if items else body.get("generation"),
                       credits_charged=body.get("creditsCharged"), credits_remaining=body.get("creditsRemaining"),
                       required=body.get("required"), available=body.get("available"),
                       retry_after=body.get("retryAfter"),
                       errors=body.get("errors") if outcome is Outcome.INVALID else None, replayed=True,
                       generations=items, matched=body.get("matched"), choices=body.get("formData"))


def target_error(user_id: str | None) -> dict | None:
    """Why ``user_id`` may not receive a claim, as ``{field: problem}``, or ``None``.

    The system user owns the pool: a claim for it would leave the item in the pool, charged."""
    if user_id == SYSTEM_BACKLOG_USER_ID:
        return {"targetUserId": "must not be the system user"}
    return None


def instant_claim(rt, *, recipe_id: int, user_id: str, actor_id: str | None = None,
                  idempotency_key: str | None = None, ask: Ask = PLAIN) -> ClaimResult:
    """Claim the oldest finished backlog generation of ``recipe_id`` for ``user_id`` (or what
    ``ask`` asks for: choices, a batch).

    ``actor_id`` is who asked (the credited user unless staff acted for a test user); an
    ``idempotency_key`` is scoped to the actor. Never raises for a refused claim: the refusal is
    the result. Raises :class:`storage.DatabaseUnavailable` when the database is down.
    """
    actor_id = actor_id or user_id
    now = rt.now()
    choices, errors = checked_choices(rt, recipe_id, ask)
    errors = errors or target_error(user_id)
    claim = dict(recipe_id=recipe_id, user_id=user_id, actor_id=actor_id, now=now, meta_patch=_meta_patch(now),
                 cooldown_s=rt.settings.instant_cooldown_s, max_age_h=rt.settings.max_item_age_h,
                 request_id=audit.request_id(), want=ask.want(choices) if errors is None else None)
    if idempotency_key is None and errors is None:
        # one statement (on PostgreSQL one function call), atomic by itself: no BEGIN/COMMIT around it
        result = _from_row(pool.claim_alone(rt.store, **claim), ask, choices)
    else:
        asked = request_hash(recipe_id, user_id, ask)
        with rt.store.begin() as s:
            if idempotency_key is not None and not pool.reserve_key(s, actor_id, idempotency_key, now, asked):
                stored = pool.stored_response(s, actor_id, idempotency_key)
                if stored is not None:
                    if stored.request_hash not in (None, asked):
                        return ClaimResult(Outcome.KEY_REUSED)
                    return _replayed(Outcome(stored.outcome), stored.response)
            if errors is not None:
                pool.record_refusal(s, user_id=user_id, recipe_id=recipe_id, outcome=Outcome.INVALID.value, now=now,
                                    actor_id=actor_id)
                result = ClaimResult(Outcome.INVALID, errors=errors)
            else:
                result = _from_row(pool.claim(s, **claim), ask, choices)
            if idempotency_key is not None:
                pool.store_response(s, actor_id, idempotency_key, result.outcome.value, *response(result))
    if result.ok:
        rt.invalidate()
    return result


def refused(rt, *, recipe_id: int, user_id: str, actor_id: str) -> ClaimResult:
    """A claim a face refused before trying it (the dashboard acts for test accounts only): the
    attempt is recorded as a ``forbidden`` claim event and nothing else changes."""
    with rt.store.begin() as s:
        pool.record_refusal(s, user_id=user_id, recipe_id=recipe_id, outcome=Outcome.FORBIDDEN.value, now=rt.now(),
                            actor_id=actor_id)
    return ClaimResult(Outcome.FORBIDDEN)


def record_refused_attempt(rt, user_id: str, recipe_id: int | None) -> None:
    """A malformed claim request from an authenticated caller (the API's 400 for its body): one
    ``invalid`` claim event, nothing else changes."""
    with rt.store.begin() as s:
        pool.record_refusal(s, user_id=user_id, recipe_id=recipe_id, outcome=Outcome.INVALID.value, now=rt.now(),
                            actor_id=user_id)


def request_hash(recipe_id: int, user_id: str, ask: Ask = PLAIN) -> str:
    """What a claim asks for, hashed: an idempotency key repeated with another recipe, for
    another user, or with other choices, match, count or all is refused (422), not answered with
    the first claim. A plain claim hashes as it did before choices existed."""
    asked = [recipe_id, user_id]
    if not ask.plain:
        asked.append({"formData": ask.choices, "match": ask.match.value, "count": ask.count, "all": ask.all})
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def checked_choices(rt, recipe_id: int, ask: Ask) -> tuple[dict | None, dict | None]:
    """``(choices, None)`` when ``ask`` is well formed and its choices are valid for the recipe's
    fields (``None``: it has none), else ``(None, {field: problem})``. An unknown recipe's
    choices are not judged: the claim answers that the recipe is not found."""
    errors = ask.errors()
    if errors is not None:
        return None, errors
    if not ask.choices:
        return None, None
    variables = recipe_variables(rt, recipe_id)
    if variables is None:
        return dict(ask.choices), None
    try:
        return forms.validate_choices(variables, ask.choices), None
    except forms.FormError as e:
        return None, {f"formData.{k}": v for k, v in e.errors.items()}


def recipe_variables(rt, recipe_id: int) -> list[dict] | None:
    """A recipe's fields (``None``: no such recipe), kept :data:`SCHEMA_TTL_S` seconds, so that a
    claim with choices stays one round trip; changing a recipe empties the cache in its process."""
    def load():
        with rt.store.begin() as s:
            recipe = catalog.get_recipe(s, recipe_id)
            return None if recipe is None else recipe.variables
    return rt.cache(RECIPE_VARIABLES_CACHE, ttl=SCHEMA_TTL_S, maxsize=4096, keep=True).get_or_compute(recipe_id, load)


def ready_count(rt, recipe_id: int, choices: dict | None, *, limit: int = 100) -> int:
    """How many items a claim with ``choices`` could take now (up to ``limit``), for a form that
    says "2 ready with these choices"."""
    with rt.store.begin() as s:
        return pool.count_ready(s, recipe_id, now=rt.now(), max_age_h=rt.settings.max_item_age_h,
                                choices=choices or None, limit=limit)


def instant_claim_with_token(rt, token: str, *, recipe_id: int, target_user_id: str | None = None,
                             idempotency_key: str | None = None,
                             ask: Ask = PLAIN) -> tuple[object | None, ClaimResult | None]:
    """Authenticate a bearer token and claim for its user, or for ``target_user_id`` (staff only).

    Returns ``(None, None)`` for a token that authenticates nobody (unknown, revoked, the system
    user's), else ``(user, result)`` as :func:`instant_claim` (``FORBIDDEN`` when the user may not
    claim for ``target_user_id``). Without an idempotency key the token check and
    the claim are one statement (on PostgreSQL an API claim costs one round trip).
    """
    choices, errors = checked_choices(rt, recipe_id, ask)
    if idempotency_key is not None or (errors or target_error(target_user_id)) is not None:
        user = auth.authenticate_token(rt, token)
        if user is None:
            return None, None
        return user, instant_claim(rt, recipe_id=recipe_id, user_id=target_user_id or user.id, actor_id=user.id,
                                   idempotency_key=idempotency_key, ask=ask)
    if not auth.plausible_token(token):
        return None, None
    now = rt.now()
    done = pool.claim_with_token(rt.store, token_hash=auth.hash_token(token), recipe_id=recipe_id,
                                 target_user_id=target_user_id, claimers=auth.ROLES, meta_patch=_meta_patch(now),
                                 now=now, cooldown_s=rt.settings.instant_cooldown_s,
                                 max_age_h=rt.settings.max_item_age_h, request_id=audit.request_id(),
                                 want=ask.want(choices))
    user = auth.caller(done.user)
    if user is None or done.row is None:
        return user, None
    result = _from_row(done.row, ask, choices)
    if result.ok:
        rt.invalidate()
    return user, result


def _meta_patch(now) -> dict:
    return {"isInstant": True, "claimedAt": isoformat(now)}


def _from_row(row: pool.ClaimRow, ask: Ask, choices: dict | None) -> ClaimResult:
    outcome = Outcome(row.outcome)
    if outcome is Outcome.CLAIMED:
        items = [generation_json(g) for g in row.generations]
        return ClaimResult(outcome, generation=items[0], credits_charged=row.cost * len(items),
                           credits_remaining=row.balance, generations=items if ask.batch else None,
                           matched=row.matched)
    if outcome in (Outcome.NO_BACKLOG, Outcome.RACE):
        return ClaimResult(outcome, choices=choices)
    if outcome is Outcome.INSUFFICIENT_CREDITS:
        return ClaimResult(outcome, required=row.required if row.required is not None else row.cost,
                           available=row.available)
    if outcome is Outcome.RATE_LIMITED:
        return ClaimResult(outcome, retry_after=row.retry_after)
    if outcome is Outcome.INVALID:
        return ClaimResult(outcome, errors={"targetUserId": "no such user"})
    return ClaimResult(outcome)


__all__ = ["instant_claim", "instant_claim_with_token", "refused", "target_error", "response", "ready_count",
           "Ask", "ClaimResult", "Match", "Outcome"]
