"""Recipes, their usage statistics (``recipe_usage_options``) and their recent choices.

The statistics are bounded: at most :data:`MAX_VALUES_PER_FIELD` distinct values are kept per
(recipe, field); a value beyond that is not added (the values already kept go on counting). What
may be counted at all (never free text) is the domain's rule, ``forms.countable``.

:func:`recent_choices` reads what was asked for lately, as it was stored: users' own generations'
form data and the choices of instant attempts that were demand (hits and misses); the domain
(``delula.choices``) strips text and what the schema no longer allows.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import literal, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .db import in_ids, insert_unique, is_postgres
from .jobs import users_own
from .models import DEMAND_OUTCOMES, ClaimEvent, Generation, Recipe, RecipeUsage, RecipeUsageOption

MAX_VALUES_PER_FIELD = 50


def add_recipe(s: Session, *, name: str, slug: str, description: str, credit_cost: int, model_id: str,
               variables: list, min_backlog: int | None, is_active: bool, now: datetime) -> Recipe:
    recipe = Recipe(name=name, slug=slug, description=description, credit_cost=credit_cost, model_id=model_id,
                    variables=variables, min_backlog=min_backlog, is_active=is_active, usage_base=0,
                    created_at=now)
    recipe = insert_unique(s, recipe, f"a recipe with slug {slug!r} already exists")
    recipe.usage_count  # noqa: B018 -- loaded now (a sum over recipe_usage), for readers after the session
    return recipe


def get_recipe(s: Session, recipe_id: int) -> Recipe | None:
    return s.get(Recipe, recipe_id)


def get_recipe_by_slug(s: Session, slug: str) -> Recipe | None:
    return s.scalar(select(Recipe).where(Recipe.slug == slug))


def list_recipes(s: Session, *, active_only: bool = True) -> list[Recipe]:
    q = select(Recipe).order_by(Recipe.id)
    if active_only:
        q = q.where(Recipe.is_active.is_(True))
    return list(s.scalars(q))


def active_recipe_rows(s: Session) -> list:
    """The active recipes as rows (``id``, ``name``, ``variables``, ``min_backlog``,
    ``backlog_policy``), by id: what a maintenance pass reads of them, without building an
    ORM object per recipe."""
    q = (select(Recipe.id, Recipe.name, Recipe.variables, Recipe.min_backlog, Recipe.backlog_policy)
         .where(Recipe.is_active.is_(True)).order_by(Recipe.id))
    return list(s.execute(q))


def set_min_backlog(s: Session, recipe_id: int, value: int | None) -> bool:
    return bool(s.execute(update(Recipe).where(Recipe.id == recipe_id).values(min_backlog=value)).rowcount)


def set_active(s: Session, recipe_id: int, active: bool) -> bool:
    return bool(s.execute(update(Recipe).where(Recipe.id == recipe_id).values(is_active=active)).rowcount)


def update_recipe(s: Session, recipe_id: int, **values) -> bool:
    """Set the given columns of one recipe; ``False`` when it does not exist."""
    recipe = s.get(Recipe, recipe_id)
    if recipe is None:
        return False
    for column, value in values.items():
        setattr(recipe, column, value)
    s.flush()
    return True


def bump_usage_count(s: Session, recipe_id: int, by: int = 1) -> None:
    """Add ``by`` to the recipe's usage, in its row 0 of ``recipe_usage`` (the claim function on
    PostgreSQL adds its own to a row per server process; ``Recipe.usage_count`` sums them all)."""
    stmt = (pg_insert if is_postgres(s) else sqlite_insert)(RecipeUsage).values(recipe_id=recipe_id, slot=0, n=by)
    s.execute(stmt.on_conflict_do_update(index_elements=[RecipeUsage.recipe_id, RecipeUsage.slot],
                                         set_={"n": RecipeUsage.n + stmt.excluded.n}))


def record_choices(s: Session, recipe_id: int, form_data: dict, weight: int = 1) -> None:
    """Count each chosen value of a user generation (one upsert for the whole form); a value new
    to a field that already keeps :data:`MAX_VALUES_PER_FIELD` values is left out."""
    chosen = {k: encode_value(v) for k, v in form_data.items()}
    if not chosen:
        return
    kept = (select(RecipeUsageOption.variable_id, RecipeUsageOption.value)
            .where(RecipeUsageOption.recipe_id == recipe_id, RecipeUsageOption.variable_id.in_(list(chosen))))
    known: dict[str, set] = defaultdict(set)
    for variable_id, value in s.execute(kept):
        known[variable_id].add(value)
    rows = [{"recipe_id": recipe_id, "variable_id": k, "value": v, "count": weight}
            for k, v in sorted(chosen.items())
            if v in known[k] or len(known[k]) < MAX_VALUES_PER_FIELD]
    if not rows:
        return
    insert = pg_insert if is_postgres(s) else sqlite_insert
    stmt = insert(RecipeUsageOption).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["recipe_id", "variable_id", "value"],
        set_={"count": RecipeUsageOption.count + stmt.excluded.count})
    s.execute(stmt)


def usage_statistics(s: Session, recipe_ids: Iterable[int]) -> dict[int, dict[str, dict]]:
    """``{recipe_id: {variable_id: {value: count}}}`` for many recipes in one query."""
    ids = list(recipe_ids)
    out: dict[int, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    if not ids:
        return {}
    q = (select(RecipeUsageOption.recipe_id, RecipeUsageOption.variable_id, RecipeUsageOption.value,
                RecipeUsageOption.count)
         .where(in_ids(s, RecipeUsageOption.recipe_id, ids), RecipeUsageOption.count > 0))
    for recipe_id, variable_id, value, count in s.execute(q):
        out[recipe_id][variable_id][decode_value(value)] = count
    return {k: dict(v) for k, v in out.items()}


def recent_choices(s: Session, recipe_ids: Iterable[int], since: datetime, limit: int) -> dict[int, list[dict]]:
    """``{recipe_id: [choices, newest first]}`` asked for at or after ``since``, for many recipes
    in one statement: the form data of users' own generations (``ix_generations_user_jobs``,
    newest first) and the ``choices`` of instant attempts with a demand outcome
    (``DEMAND_OUTCOMES``: misses included), each source bounded by its newest ``limit`` rows."""
    ids = sorted(set(recipe_ids))
    if not ids or limit <= 0:
        return {}
    made = (select(Generation.recipe_id.label("recipe_id"), Generation.form_data.label("choices"),
                   Generation.created_at.label("at"), literal(0).label("src"))
            .where(users_own(), Generation.created_at >= since, in_ids(s, Generation.recipe_id, ids))
            .order_by(Generation.created_at.desc()).limit(limit).subquery())
    asked = (select(ClaimEvent.recipe_id.label("recipe_id"), ClaimEvent.choices.label("choices"),
                    ClaimEvent.created_at.label("at"), literal(1).label("src"))
             .where(in_ids(s, ClaimEvent.recipe_id, ids), ClaimEvent.created_at >= since,
                    ClaimEvent.outcome.in_(DEMAND_OUTCOMES), ClaimEvent.choices.is_not(None))
             .order_by(ClaimEvent.created_at.desc()).limit(limit).subquery())
    both = union_all(select(made), select(asked)).subquery()
    out: dict[int, list[dict]] = defaultdict(list)
    for recipe_id, choices, _at, _src in s.execute(select(both).order_by(both.c.at.desc(), both.c.src)):
        if isinstance(choices, dict):
            out[recipe_id].append(choices)
    return dict(out)


def encode_value(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)[:500]


def decode_value(raw: str):
    try:
        return json.loads(raw)
    except ValueError:
        return raw
