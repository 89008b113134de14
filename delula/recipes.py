"""Recipes: creating them (with a validated variable schema), changing them (audited) and reading them.

An inactive recipe is neither offered nor claimable nor refilled by the backlog pass; its pool
is kept, so activating it again makes its finished items claimable at once.
"""
from __future__ import annotations

import re

from . import audit, forms
from .runtime import RECIPE_VARIABLES_CACHE
from .storage import Conflict, catalog, pool, stats

DEFAULT_MODEL = "fal-ai/veo3/fast"
MAX_COST = 1_000_000


class RecipeError(ValueError):
    """A refused recipe operation; the message says which value is wrong."""


class UnknownRecipe(RecipeError):
    """No recipe has this id."""


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:200] or "recipe"


def recipe_json(recipe) -> dict:
    return {"id": recipe.id, "name": recipe.name, "slug": recipe.slug, "description": recipe.description,
            "creditCost": recipe.credit_cost, "isActive": recipe.is_active, "modelId": recipe.model_id,
            "variables": recipe.variables, "minBacklog": recipe.min_backlog, "usageCount": recipe.usage_count}


def _checked_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise RecipeError("name must be 1-200 characters")
    return name.strip()


def _checked_cost(credit_cost) -> int:
    if not isinstance(credit_cost, int) or isinstance(credit_cost, bool) or not 0 <= credit_cost <= MAX_COST:
        raise RecipeError(f"credit cost must be a whole number from 0 to {MAX_COST}")
    return credit_cost


def _checked_min_backlog(min_backlog) -> int | None:
    if min_backlog is not None and (not isinstance(min_backlog, int) or isinstance(min_backlog, bool)
                                    or not 0 <= min_backlog <= 1000):
        raise RecipeError("min backlog must be a whole number from 0 to 1000")
    return min_backlog


def _checked_variables(variables) -> list:
    try:
        return forms.check_schema(variables)
    except forms.SchemaError as e:
        raise RecipeError(f"variables: {e}") from None


def create_recipe(rt, *, name: str, credit_cost: int, variables=None, model_id: str = DEFAULT_MODEL,
                  min_backlog: int | None = None, is_active: bool = True, description: str = "",
                  slug: str | None = None):
    name, credit_cost = _checked_name(name), _checked_cost(credit_cost)
    min_backlog = _checked_min_backlog(min_backlog)
    if not isinstance(model_id, str) or not re.match(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$", model_id):
        raise RecipeError("model id must look like owner/app[/path], e.g. fal-ai/veo3/fast")
    variables = _checked_variables(variables if variables is not None else [])
    with rt.store.begin() as s:
        try:
            recipe = catalog.add_recipe(s, name=name, slug=slug or slugify(name), description=description,
                                        credit_cost=credit_cost, model_id=model_id, variables=variables,
                                        min_backlog=min_backlog, is_active=is_active, now=rt.now())
        except Conflict as e:
            raise RecipeError(str(e)) from None
    rt.invalidate()
    rt.invalidate(RECIPE_VARIABLES_CACHE)
    return recipe


_UNSET = object()


def update_recipe(rt, recipe_id: int, *, name=_UNSET, credit_cost=_UNSET, variables=_UNSET, is_active=_UNSET,
                  min_backlog=_UNSET, actor_id: str | None = None):
    """Change the given fields of a recipe (the others stay), with a ``recipe_update`` audit row
    naming ``actor_id`` (``None``: the CLI) and each changed field's before and after, in the same
    transaction. Returns the recipe; raises :class:`RecipeError` for a bad value,
    :class:`UnknownRecipe` for an unknown id."""
    changes = {}
    if name is not _UNSET:
        changes["name"] = _checked_name(name)
    if credit_cost is not _UNSET:
        changes["credit_cost"] = _checked_cost(credit_cost)
    if variables is not _UNSET:
        changes["variables"] = _checked_variables(variables)
    if is_active is not _UNSET:
        if not isinstance(is_active, bool):
            raise RecipeError("active must be true or false")
        changes["is_active"] = is_active
    if min_backlog is not _UNSET:
        changes["min_backlog"] = _checked_min_backlog(min_backlog)
    with rt.store.begin() as s:
        recipe = catalog.get_recipe(s, recipe_id)
        if recipe is None:
            raise UnknownRecipe(f"no recipe {recipe_id}")
        changed = {k: {"before": getattr(recipe, k), "after": v} for k, v in changes.items()
                   if getattr(recipe, k) != v}
        catalog.update_recipe(s, recipe_id, **changes)   # sets them on ``recipe`` too (one identity map)
        audit.record(s, now=rt.now(), actor_id=actor_id, action="recipe_update", target_recipe_id=recipe_id,
                     **changed)
    rt.invalidate()
    rt.invalidate(RECIPE_VARIABLES_CACHE)
    return recipe


def set_active(rt, recipe_id: int, active: bool, *, actor_id: str | None = None):
    """Activate or deactivate a recipe (the maintenance page's toggle), audited as ``recipe_update``."""
    return update_recipe(rt, recipe_id, is_active=active, actor_id=actor_id)


def get_recipe(rt, recipe_id: int):
    with rt.store.begin() as s:
        return catalog.get_recipe(s, recipe_id)


def list_recipes(rt, *, active_only: bool = True) -> list:
    with rt.store.begin() as s:
        return catalog.list_recipes(s, active_only=active_only)


def set_min_backlog(rt, recipe_id: int, value: int | None, *, actor_id: str | None = None) -> None:
    """Override a recipe's backlog minimum (``None``: back to ``DELULA_MIN_BACKLOG``), with a
    ``set_minimum`` audit row naming ``actor_id`` in the same transaction."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000):
        raise RecipeError("min backlog must be a whole number from 0 to 1000, or empty for the default")
    with rt.store.begin() as s:
        before = catalog.get_recipe(s, recipe_id)
        if before is None:
            raise RecipeError(f"no recipe {recipe_id}")
        previous = before.min_backlog
        catalog.set_min_backlog(s, recipe_id, value)
        audit.record(s, now=rt.now(), actor_id=actor_id, action="set_minimum", target_recipe_id=recipe_id,
                     before=previous, after=value)
    rt.invalidate()


def list_with_availability(rt) -> list[dict]:
    """Active recipes as JSON with ``instantAvailable`` (ready items), cached for a few seconds.

    Claims, completions and maintenance call ``rt.invalidate()``, so a user never sees an item
    as available right after claiming it in this process.
    """
    def load():
        with rt.store.begin() as s:
            active = catalog.list_recipes(s, active_only=True)
            counts = stats.backlog_counts(s)
        return [{**recipe_json(r), "instantAvailable": counts.get(r.id, {}).get("completed", 0)} for r in active]

    return rt.cache("recipes", ttl=5).get_or_compute("active", load)


def available_count(rt, recipe_id: int) -> int:
    with rt.store.begin() as s:
        return pool.count_items(s, recipe_id)
