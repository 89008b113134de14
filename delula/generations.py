"""Generations: creating a user's (normal) generation, reading them, their JSON shape.

A user generation is validated against its recipe's schema, charged, queued as a pending job and
counted in the recipe's usage statistics in one transaction.

A generation's status and source are storage's enums, :class:`JobStatus` (with the sets that
may be retried or cancelled) and :class:`JobSource`, re-exported here for the pages, which do
not import storage; :func:`source` tells a row's source.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from . import audit, forms
from .clock import isoformat
from .auth import STAFF_ROLES
from .storage import SYSTEM_BACKLOG_USER_ID, JobSource, accounts, catalog, jobs
from .storage import JobStatus  # noqa: F401  (re-exported for the pages, which do not import storage)

USER_PRIORITY = 0
BACKLOG_PRIORITY = 10


def generation_json(gen) -> dict:
    """The generation object of SPEC §6. A claimed backlog item is its new owner's from the claim:
    ``createdAt`` is the claim time, ``generatedAt`` when it was made (``metadata.generatedAt``);
    for any other generation the two are the same."""
    return {
        "id": gen.id,
        "recipeId": gen.recipe_id,
        "userId": gen.user_id,
        "status": gen.status,
        "formData": gen.form_data or {},
        "assetUrl": gen.asset_url,
        "thumbnailUrl": gen.thumbnail_url,
        "metadata": gen.meta or {},
        "error": gen.error,
        "createdAt": isoformat(gen.created_at),
        "updatedAt": isoformat(gen.updated_at),
        "completedAt": isoformat(gen.completed_at),
        "generatedAt": (gen.meta or {}).get("generatedAt") or isoformat(gen.created_at),
    }


class Refusal(str, enum.Enum):
    RECIPE_NOT_FOUND = "recipe_not_found"
    INVALID = "invalid"
    INSUFFICIENT_CREDITS = "insufficient_credits"


@dataclass(frozen=True)
class CreateResult:
    status_code: int
    body: dict
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None

    @property
    def generation(self) -> dict | None:
        return self.body.get("generation")

    def response(self) -> tuple[int, dict]:
        return self.status_code, self.body


def create_user_generation(rt, *, user_id: str, recipe_id: int, form_data,
                           actor_id: str | None = None) -> CreateResult:
    """Validate, charge and queue a normal generation (202 on success, SPEC §6).

    ``actor_id``: who asked, when staff act for the user (the dashboard's Generate; the face has
    checked they may): the ledger row names them and a ``generate_for_user`` audit row is written
    in the same transaction."""
    actor_id = actor_id or user_id
    now = rt.now()
    with rt.store.begin() as s:
        recipe = catalog.get_recipe(s, recipe_id)
        if recipe is None or not recipe.is_active:
            return CreateResult(404, {"message": "Recipe not found"}, Refusal.RECIPE_NOT_FOUND)
        try:
            clean = forms.validate(recipe.variables, form_data)
        except forms.FormError as e:
            return CreateResult(400, {"message": "Invalid form data", "errors": e.errors}, Refusal.INVALID)
        user = accounts.lock_user(s, user_id)
        if user is None or user_id == SYSTEM_BACKLOG_USER_ID:  # backlog jobs are the maintenance's, uncharged
            problem = "no such user" if user is None else "must not be the system user"
            return CreateResult(400, {"message": "Invalid request", "errors": {"userId": problem}},
                                Refusal.INVALID)
        cost = recipe.credit_cost
        if user.credits < cost and not user.may_overdraw:
            return CreateResult(400, {"message": "Insufficient credits", "required": cost,
                                      "available": user.credits}, Refusal.INSUFFICIENT_CREDITS)
        gen = jobs.add_generation(s, user_id=user_id, recipe_id=recipe_id, form_data=clean,
                                  meta={"source": JobSource.USER, "isInstant": False, "recipeName": recipe.name},
                                  priority=USER_PRIORITY, credits_charged=cost, now=now)
        balance = accounts.change_credits(s, user_id, -cost, kind="generation", now=now, generation_id=gen.id,
                                          allow_debit=user.may_overdraw, actor_id=actor_id)
        if actor_id != user_id:
            audit.record(s, now=now, actor_id=actor_id, action="generate_for_user", target_user_id=user_id,
                         target_job_id=gen.id, target_recipe_id=recipe_id, credits=cost)
        catalog.record_choices(s, recipe_id, forms.countable(recipe.variables, clean))
        catalog.bump_usage_count(s, recipe_id)
        body = {"generation": generation_json(gen), "creditsCharged": cost, "creditsRemaining": balance}
    rt.invalidate()
    return CreateResult(202, body)


def can_view(gen, viewer_id: str, viewer_role: str) -> bool:
    return gen.user_id == viewer_id or viewer_role in STAFF_ROLES


def get_generation(rt, generation_id: int, *, viewer_id: str | None = None, viewer_role: str | None = None):
    """The generation if it exists and the viewer may see it (staff see all), else ``None``."""
    with rt.store.begin() as s:
        gen = jobs.get_generation(s, generation_id)
    if gen is None:
        return None
    if viewer_id is not None and not can_view(gen, viewer_id, viewer_role or "user"):
        return None
    return gen


def list_generations(rt, user_id: str, limit: int = 100) -> list:
    with rt.store.begin() as s:
        return jobs.list_for_user(s, user_id, limit)


def list_jobs(rt, *, statuses: tuple[str, ...] | None = None, recipe_id: int | None = None,
              source: str | None = None, limit: int = 500) -> list:
    """Generations for the queue page, newest first (``source`` a :class:`JobSource` or None)."""
    with rt.store.begin() as s:
        return jobs.list_jobs(s, statuses=statuses, recipe_id=recipe_id, source=source, limit=limit)


def source(gen) -> str:
    """Where a generation comes from (a :class:`JobSource` value): ``metadata.source`` as stored
    (a claimed backlog item stays ``backlog``); a row without one belongs to the backlog when the
    system user owns it. In SQL: ``storage.jobs.from_backlog`` / ``users_own``."""
    return (gen.meta or {}).get("source") or (JobSource.BACKLOG if gen.user_id == SYSTEM_BACKLOG_USER_ID
                                               else JobSource.USER)
