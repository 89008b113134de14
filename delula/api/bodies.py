"""The JSON bodies of the API as pydantic models: what requests must hold, what responses hold.

The request models validate; the response models only describe (the domain builds the bodies) —
both feed the OpenAPI document (:mod:`delula.api.openapi`). Field names are snake_case here and
camelCase on the wire.

A request body is read in two steps, both before anything touches the database:

1. :func:`parse` — the wire: UTF-8, one JSON object, integers within 64 bits, finite numbers,
   no ``NaN``/``Infinity``, no NUL character or lone surrogate in any string or key (PostgreSQL
   could not store them). A refusal names ``body``.
2. :func:`validate` — the fields, strictly: JSON types as they are (``true`` is no integer,
   ``1.0`` is none either, ``"1"`` neither), no field beyond the declared ones. Each refusal names
   its field with the sentence the field's type carries (:func:`refusal`).

Both raise :class:`BodyError` with ``{field: reason}``; the face answers it with 400.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WrapValidator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from ..audit import ACTIONS as AUDIT_ACTIONS
from ..config import BACKLOG_POLICIES
from ..audit import MAX_LIMIT as AUDIT_MAX_LIMIT
from ..auth import ROLES
from ..claims import MAX_COUNT, Match, target_error
from ..generations import JobSource, JobStatus
from ..queue_actions import (CANCEL, FILTER_RULE, IDS_RULE, MAX_IDS, RECIPE_RULE, RETRY, SOURCE_RULE,
                             status_refusal)

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
MAX_USER_ID_LENGTH = 64
MAX_KEY_LENGTH = 200
MAX_FIELD_NAME = 100  # an unknown field is named in the refusal by its first 100 characters
GENERATION_ID_DIGITS = 18

M = TypeVar("M", bound=BaseModel)


class BodyError(ValueError):
    """A refused body; ``errors`` maps a field (or ``body``) to why."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# --- reading a body -------------------------------------------------------------------------

def _parse_int(text: str) -> int:
    if len(text) > 21:  # never hand Python a 5000-digit number to convert
        raise BodyError({"body": "integer too large"})
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise BodyError({"body": "integer too large"})
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError({"body": "number out of range"})
    return value


def _not_json(name: str):
    raise BodyError({"body": "is not valid JSON"})


def _unstorable(data) -> str | None:
    """Why a string somewhere in ``data`` cannot be stored (NUL, lone surrogate), else ``None``."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "must not contain unpaired surrogates"
    return None


def parse(raw: bytes) -> dict:
    """The JSON object in ``raw``; raises :class:`BodyError` naming ``body``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError({"body": "is not valid UTF-8"}) from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_not_json)
    except BodyError:
        raise
    except (ValueError, RecursionError):
        raise BodyError({"body": "is not valid JSON"}) from None
    if not isinstance(data, dict):
        raise BodyError({"body": "must be a JSON object"})
    bad = _unstorable(data)
    if bad:
        raise BodyError({"body": bad})
    return data


def validate(model: type[M], data: dict) -> M:
    """``data`` as ``model``; raises :class:`BodyError` with every refused field at once."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise BodyError(_reasons(e)) from None


def _reasons(error: pydantic.ValidationError) -> dict[str, str]:
    general = {"missing": "is required", "extra_forbidden": "is not a field of this request"}
    return {_field(e["loc"]): general.get(e["type"], e["msg"]) for e in error.errors()}


def _field(loc: tuple) -> str:
    """A refused field's name: a nested object's field as ``filter.status`` (list positions left out)."""
    return ".".join(str(part)[:MAX_FIELD_NAME] for part in loc[:2] if isinstance(part, str))


def refusal(reason: str, **by_error: str) -> WrapValidator:
    """Annotation: a value the annotated type refuses is refused with ``reason`` — or with
    ``by_error[kind]``, where kind is pydantic's error type, or ``null`` for a JSON ``null``."""
    def check(value, handler):
        try:
            return handler(value)
        except pydantic.ValidationError as e:
            kind = "null" if value is None else e.errors()[0]["type"]
            raise PydanticCustomError("refused", by_error.get(kind, reason)) from None
    return WrapValidator(check)


def _claimable_for(user_id: str) -> str:
    errors = target_error(user_id)
    if errors is not None:
        raise PydanticCustomError("refused", errors["targetUserId"])
    return user_id


# --- field types ----------------------------------------------------------------------------

# What parse() vouches for, stated for the document: no string holds a NUL character (PostgreSQL
# stores none), integers fit in 64 bits.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]
FormValue = Text | Int64 | float | bool | None  # what a form field holds; null (or "") takes the default


def _an_object(value, handler):
    """Form data is checked here only for being an object: :func:`parse` vouched for its strings
    and numbers, and the recipe's form (``forms.validate``) judges its fields, with its own reasons.
    The annotated type describes it for the document."""
    if not isinstance(value, dict):
        raise PydanticCustomError("refused", "must be an object")
    return value


RecipeId = Annotated[int, Field(ge=INT32[0], le=INT32[1]),
                     refusal("must be an integer", null="is required", greater_than_equal="is out of range",
                             less_than_equal="is out of range")]
TargetUserId = Annotated[
    Text, StringConstraints(min_length=1, max_length=MAX_USER_ID_LENGTH),
    refusal(f"must be a user id (1-{MAX_USER_ID_LENGTH} characters)"), AfterValidator(_claimable_for),
    Field(description="credit another user (roles product and ops only)")]
FormData = Annotated[dict[str, FormValue], WrapValidator(_an_object),
                     Field(description="values by field id (the recipe's `variables`); defaults fill gaps")]
Choices = Annotated[dict[str, FormValue], WrapValidator(_an_object),
                    Field(description="any subset of the recipe's fields (`variables`), each value valid as in "
                                      "`POST /api/generate`: an item must have them all (`match: exact`, the "
                                      "default) or should (`prefer`)")]
# The header, stripped of surrounding white space: 1-200 printable ASCII characters.
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH,
                                                  pattern=r"^[!-~]([ -~]*[!-~])?$")]
GenerationId = Annotated[int, Field(ge=0, le=10**GENERATION_ID_DIGITS - 1)]
RetryAfter = Annotated[int, Field(ge=1, description="seconds to wait before trying again")]
Count = Annotated[int, Field(ge=0)]


class _Body(BaseModel):
    """camelCase on the wire, nothing beyond the declared fields, JSON types as they are."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=True)


# --- requests -------------------------------------------------------------------------------

class InstantRequest(_Body):
    """An instant claim: the recipe, for staff the user to credit, the user's choices and how many
    items (a batch answers with a list)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"recipeId": 1}, {"recipeId": 1, "formData": {"animal": "bengal cat"}, "match": "prefer"},
        {"recipeId": 1, "count": 3, "all": True}]})

    # Each may be left out, none sent as null.
    recipe_id: RecipeId
    target_user_id: TargetUserId = None
    form_data: Choices = None
    match: Annotated[Literal[tuple(m.value for m in Match)], refusal("must be exact or prefer")] = None
    count: Annotated[int, Field(ge=1, le=MAX_COUNT, description="take up to this many items (the answer lists them)"),
                     refusal(f"must be a whole number from 1 to {MAX_COUNT}")] = None
    all: Annotated[bool, Field(description="with count: all of them or none"), refusal("must be true or false")] = None


class GenerateRequest(_Body):
    """A normal generation: the recipe and its form data."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"recipeId": 2, "formData": {"dish": "ramen",
                                                                                           "mess": 3}}]})

    recipe_id: RecipeId
    form_data: FormData = Field(default_factory=dict)


def _filter_status(action: str) -> WrapValidator:
    """Annotation: a filter's status is refused with the rule's own sentence (``queue_actions``)."""
    def check(value, handler):
        try:
            return handler(value)
        except pydantic.ValidationError:
            raise PydanticCustomError("refused", status_refusal(action, value) or "is not usable here") from None
    return WrapValidator(check)


JobIds = Annotated[list[GenerationId], Field(min_length=1, max_length=MAX_IDS), refusal(IDS_RULE),
                   Field(description="the jobs to act on (an id given twice counts once)")]
FilterRecipeId = Annotated[int, Field(ge=INT32[0], le=INT32[1]), refusal(RECIPE_RULE)]
FilterSource = Annotated[Literal[tuple(str(s) for s in JobSource)], refusal(SOURCE_RULE)]
def _object(reason: str) -> WrapValidator:
    """Annotation: anything but a JSON object is refused with ``reason``; an object's own fields
    keep their reasons."""
    def check(value, handler):
        if not isinstance(value, dict):
            raise PydanticCustomError("refused", reason)
        return handler(value)
    return WrapValidator(check)


# Exactly one of the two fields (JSON Schema cannot say it through the fields themselves).
_IDS_OR_FILTER = {"oneOf": [{"required": ["ids"]}, {"required": ["filter"]}]}


class RetryFilter(_Body):
    """Jobs to retry: each field narrows, none given means every failed job."""

    status: Annotated[Literal[tuple(str(s) for s in JobStatus.RETRYABLE)], _filter_status(RETRY)] = None
    recipe_id: FilterRecipeId = None
    source: FilterSource = None


class CancelFilter(_Body):
    """Jobs to cancel: each field narrows, none given means every pending or processing job."""

    status: Annotated[Literal[tuple(str(s) for s in JobStatus.CANCELLABLE)], _filter_status(CANCEL)] = None
    recipe_id: FilterRecipeId = None
    source: FilterSource = None


class RetryJobsRequest(_Body):
    """A bulk retry: the jobs by ``ids``, or every job matching ``filter`` — one of the two."""

    model_config = ConfigDict(json_schema_extra={**_IDS_OR_FILTER, "examples": [{"filter": {"status": "failed"}}]})

    ids: JobIds = None      # may be left out, never sent as null
    filter: Annotated[RetryFilter, _object(FILTER_RULE)] = None


class CancelJobsRequest(_Body):
    """A bulk cancel: the jobs by ``ids``, or every job matching ``filter`` — one of the two."""

    model_config = ConfigDict(json_schema_extra={**_IDS_OR_FILTER, "examples": [{"ids": [1, 2, 3]}]})

    ids: JobIds = None
    filter: Annotated[CancelFilter, _object(FILTER_RULE)] = None


# --- responses ------------------------------------------------------------------------------

class Error(_Body):
    """Every refusal without further details."""

    message: str


class InvalidRequest(_Body):
    """A refused body, form or target user; per-field reasons in `errors`."""

    message: str
    errors: dict[str, str] = Field(description="field name → reason")


class InsufficientCredits(_Body):
    """The credited user has fewer credits than the recipe costs."""

    message: Literal["Insufficient credits"]
    required: int
    available: int


class NoInstantGeneration(_Body):
    """No finished generation to claim: fall back to the normal (modal) flow, prefilled with the
    choices asked for (``formData``, when the claim had any)."""

    message: str
    fallback_to_modal: Literal[True]
    form_data: dict[str, Any] = None


class RateLimited(_Body):
    """The credited user's cooldown after their last claim."""

    message: str
    retry_after: RetryAfter


class Generation(_Body):
    """A generation (SPEC §6); timestamps ISO 8601 UTC. A claimed backlog item's ``createdAt`` is
    its claim time and ``generatedAt`` when it was made; otherwise the two are equal."""

    id: int
    recipe_id: int
    user_id: str
    status: Literal[tuple(JobStatus)]
    form_data: dict[str, Any]
    asset_url: str | None
    thumbnail_url: str | None
    metadata: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    generated_at: datetime


class Charged(_Body):
    """A generation the caller (or the credited user) was charged for; ``matched`` (with choices
    only) says whether it has them."""

    generation: Generation
    credits_charged: int
    credits_remaining: int
    matched: bool = None


class ChargedBatch(_Body):
    """The generations of a batch claim (``count``), oldest first, each charged; ``matched`` (with
    choices only) says whether every one has them."""

    generations: list[Generation] = Field(min_length=1, max_length=MAX_COUNT)
    credits_charged: int
    credits_remaining: int
    matched: bool = None


class BulkResult(_Body):
    """What a bulk action did: jobs changed, and jobs asked for but left as they were (an unknown
    id, a status the action does not apply to, or another actor first)."""

    done: Count
    skipped: Count


class Generations(_Body):
    generations: list[Generation]


class Recipe(_Body):
    """An active recipe with its number of instantly claimable generations."""

    id: int
    name: str
    slug: str
    description: str
    credit_cost: Count
    is_active: bool
    model_id: str
    variables: list[dict[str, Any]] = Field(description="the form's fields (SPEC §4)")
    min_backlog: int | None
    usage_count: int
    instant_available: Count


class Recipes(_Body):
    recipes: list[Recipe]


class BacklogRecipe(_Body):
    """One active recipe's backlog: claimable, in flight, target and what is missing."""

    recipe_id: int
    name: str
    completed: int
    in_flight: int
    target: int
    deficit: Count
    minimum: int
    claim_rate_per_min: float = Field(description="instant attempts per minute over the last hour, hits and misses")
    forecast_per_min: float | None = Field(description="the forecast policy's attempts per minute for the "
                                                       "coming quarter hour (null when no recipe plans by forecast)")
    lead_time_min: float
    below_minimum: bool
    paused: bool = Field(description="its backlog generation is paused (all recipes, or this one)")
    policy: Literal[BACKLOG_POLICIES] = Field(description="the backlog policy that set the target: the "
                                                          "recipe's own, else the one applied on the Planner "
                                                          "page, else DELULA_BACKLOG_POLICY")


class Backlog(_Body):
    recipes: list[BacklogRecipe]


class Paused(_Body):
    """What an operator paused."""

    queue: bool = Field(description="submissions to the provider are paused (polls go on)")
    backlog: bool = Field(description="backlog generation is paused for every recipe")
    recipes: list[int] = Field(description="recipes whose backlog generation is paused on their own")


class QueueStats(_Body):
    """Queue counts and processing times of the last hour."""

    pending: int
    processing: int
    completed_last_hour: int
    failed_last_hour: int
    avg_processing_seconds: float | None
    p95_processing_seconds: float | None
    cached_at: datetime
    paused: Paused = Field(description="what is paused now (read at every request, not cached)")


class PauseRequest(_Body):
    """Optional body of the backlog's pause and resume: without ``recipeId``, every recipe."""

    recipe_id: RecipeId | None = None


class PauseAnswer(_Body):
    """What a pause or resume did."""

    scope: Literal["backlog", "queue"]
    recipe_id: int | None
    paused: bool = Field(description="true after a pause, false after a resume")
    changed: bool = Field(description="false when it was paused (or running) already; nothing was audited")
    what: str
    state: Paused


class Me(_Body):
    """The authenticated user."""

    id: str
    username: str
    role: Literal[ROLES]
    credits: int
    is_test: bool = Field(description="a test account, which product staff may act for")


class AuditEvent(_Body):
    """One row of the audit trail: who (``actor``; null for the system or the command line) did
    what to whom, with the request it came with."""

    id: int
    at: datetime
    actor: str | None
    actor_id: str | None
    action: Literal[AUDIT_ACTIONS]
    target_user: str | None
    target_user_id: str | None
    target_job_id: int | None
    target_recipe_id: int | None
    details: dict[str, Any]
    request_id: str | None


class AuditEvents(_Body):
    events: list[AuditEvent]


AuditAction = Literal[AUDIT_ACTIONS]
AuditLimit = Annotated[int, Field(ge=1, le=AUDIT_MAX_LIMIT)]


class Health(_Body):
    """The service and its database answer."""

    status: Literal["ok"]
    database: Literal["ok"]


class HealthDegraded(_Body):
    """The database does not answer."""

    status: Literal["degraded"]
    database: Literal["unreachable"]
    message: str
