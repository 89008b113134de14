"""Pause and resume: an operator stops backlog generation (everywhere or for one recipe) or the
queue's submissions to the provider, and starts them again.

Kept in the database (``storage.pauses``), so every process obeys at its next tick or pass:

- **backlog** paused: maintenance orders no backlog job, and the queue starts no pending backlog
  job, for every recipe or for the paused ones; items already in the pool are still claimed;
- **queue** paused: no job is submitted to the provider, user jobs included; jobs already
  submitted are still polled, completed and timed out, so nothing in flight is lost.

Every pause and resume is audited (``pause`` / ``resume``) in its own transaction, with what it
was about; pausing something already paused, or resuming something running, changes nothing
and says so (``changed: false``), unaudited.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from . import audit
from .clock import isoformat
from .storage import accounts, catalog
from .storage import pauses as store
from .storage.models import ALL_RECIPES, PAUSE_SCOPES

BACKLOG, QUEUE = PAUSE_SCOPES


class PauseError(ValueError):
    """A pause or resume that cannot be applied; nothing changed. The message says why."""


class NoSuchRecipe(PauseError):
    """The recipe to pause or resume does not exist."""


@dataclass(frozen=True)
class Paused:
    """What is paused now: ``{recipe id or 0 (all): (by user id, since)}`` per scope."""
    backlog: dict[int, tuple[str | None, datetime]] = field(default_factory=dict)
    queue: dict[int, tuple[str | None, datetime]] = field(default_factory=dict)

    @property
    def queue_paused(self) -> bool:
        return bool(self.queue)

    @property
    def backlog_paused(self) -> bool:
        """Backlog generation is paused for every recipe."""
        return ALL_RECIPES in self.backlog

    @property
    def recipes(self) -> list[int]:
        """Recipes whose backlog is paused on their own."""
        return sorted(r for r in self.backlog if r != ALL_RECIPES)

    def backlog_paused_for(self, recipe_id: int) -> bool:
        return self.backlog_paused or recipe_id in self.backlog

    def summary(self) -> dict:
        """``{"queue": bool, "backlog": bool, "recipes": [ids]}`` (``GET /api/queue/stats``)."""
        return {"queue": self.queue_paused, "backlog": self.backlog_paused, "recipes": self.recipes}


def read(s) -> Paused:
    """What is paused, in session ``s`` (one read of a tiny table)."""
    paused = Paused()
    for row in store.all_pauses(s):
        getattr(paused, row.scope)[row.recipe_id] = (row.paused_by, row.paused_at)
    return paused


def state(rt) -> Paused:
    with rt.store.begin() as s:
        return read(s)


def _target(s, scope: str, recipe_id: int | None) -> tuple[int, str]:
    """``(recipe id or 0, what it is in words)``; raises :class:`PauseError`."""
    if scope not in PAUSE_SCOPES:
        raise PauseError(f"scope must be one of {', '.join(PAUSE_SCOPES)}, got {scope!r}")
    if recipe_id is None:
        return ALL_RECIPES, "queue submissions" if scope == QUEUE else "backlog generation"
    if scope == QUEUE:
        raise PauseError("the queue is paused as a whole: submissions stop for every recipe")
    if isinstance(recipe_id, bool) or not isinstance(recipe_id, int):
        raise PauseError(f"recipeId must be a recipe id, got {recipe_id!r}")
    recipe = catalog.get_recipe(s, recipe_id)
    if recipe is None:
        raise NoSuchRecipe(f"no recipe {recipe_id}")
    return recipe_id, f"backlog generation of recipe {recipe_id} ({recipe.name})"


def pause(rt, scope: str, recipe_id: int | None = None, *, actor_id: str | None, **details) -> dict:
    """Pause ``scope`` (``"backlog"``, optionally for one recipe, or ``"queue"``); audited, with
    ``details`` (e.g. ``via="cli"``). Returns ``{"scope", "recipeId", "paused": true, "changed",
    "what", "state"}`` (``state``: :meth:`Paused.summary` after it)."""
    return _change(rt, scope, recipe_id, actor_id, details, pausing=True)


def resume(rt, scope: str, recipe_id: int | None = None, *, actor_id: str | None, **details) -> dict:
    """Lift the pause of ``scope`` (and recipe); audited. A recipe's own pause and the pause of
    every recipe are separate: resuming one leaves the other. Returns like :func:`pause`."""
    return _change(rt, scope, recipe_id, actor_id, details, pausing=False)


def _change(rt, scope, recipe_id, actor_id, extra: dict, *, pausing: bool) -> dict:
    now = rt.now()
    with rt.store.begin() as s:
        rid, what = _target(s, scope, recipe_id)
        if pausing:
            changed = store.pause(s, scope, rid, by=actor_id, now=now)
        else:
            was = store.resume(s, scope, rid)
            changed = was is not None
        if changed:
            details = {"scope": scope, "what": what, **extra}
            if not pausing:
                details["pausedSince"] = isoformat(was.paused_at)
            audit.record(s, now=now, actor_id=actor_id, action="pause" if pausing else "resume",
                         target_recipe_id=rid or None, **details)
        after = read(s)
    if changed:
        rt.invalidate()
    return {"scope": scope, "recipeId": rid or None, "paused": pausing, "changed": changed, "what": what,
            "state": after.summary()}


def described(rt) -> list[dict]:
    """What is paused, for people: ``[{"scope", "recipeId", "what", "by", "byId", "since"}]``,
    the whole queue first, then backlog generation of all recipes, then single recipes."""
    with rt.store.begin() as s:
        paused = read(s)
        names = {r.id: r.name for r in catalog.list_recipes(s, active_only=False)} if paused.backlog else {}
        users = accounts.usernames(s, {by for d in (paused.queue, paused.backlog) for by, _ in d.values() if by})
    out = []
    for scope, pauses in ((QUEUE, paused.queue), (BACKLOG, paused.backlog)):
        for rid, (by, since) in sorted(pauses.items()):
            if scope == QUEUE:
                what = "Queue submissions"
            elif rid == ALL_RECIPES:
                what = "Backlog generation (all recipes)"
            else:
                what = f"Backlog generation of {names.get(rid, f'recipe {rid}')}"
            out.append({"scope": scope, "recipeId": rid or None, "what": what, "by": users.get(by, by),
                        "byId": by, "since": isoformat(since)})
    return out
