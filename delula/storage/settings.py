"""The backlog policy in force: the one ``backlog_settings`` row and the recipes' own policies.

``backlog_settings`` holds at most one row (id 1), written by :func:`put_backlog` and read by
:func:`backlog`; ``recipes.backlog_policy`` is a recipe's override (``NULL``: none). The domain
(``delula.backlog``) validates what is written and audits it in the same transaction.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .db import Conflict, insert_unique
from .models import BacklogSettings, Recipe

ROW_ID = 1


def backlog(s: Session, *, lock: bool = False) -> BacklogSettings | None:
    """The applied policy row, or ``None`` when nobody applied one; ``lock`` holds it (if any)
    until the transaction ends."""
    q = select(BacklogSettings).where(BacklogSettings.id == ROW_ID)
    if lock:
        q = q.with_for_update()
    return s.scalar(q)


def put_backlog(s: Session, *, policy: str, service_level: float, now: datetime,
                user_id: str | None) -> BacklogSettings:
    """Write the row: update it, or insert it the first time (a concurrent first insert is
    taken as there and updated)."""
    values = dict(policy=policy, service_level=float(service_level), updated_at=now, updated_by=user_id)
    row = backlog(s, lock=True)
    if row is None:
        try:
            return insert_unique(s, BacklogSettings(id=ROW_ID, **values), "backlog settings exist")
        except Conflict:
            row = backlog(s, lock=True)
    for key, value in values.items():
        setattr(row, key, value)
    s.flush()
    return row


def recipe_policies(s: Session, recipe_ids: Iterable[int] | None = None) -> dict[int, str | None]:
    """``{recipe id: its own policy or None}`` of the given recipes (every recipe when ``None``);
    an id no recipe has is absent."""
    q = select(Recipe.id, Recipe.backlog_policy)
    if recipe_ids is not None:
        q = q.where(Recipe.id.in_(list(recipe_ids)))
    return {rid: policy for rid, policy in s.execute(q.order_by(Recipe.id))}


def set_recipe_policies(s: Session, recipe_ids: Iterable[int], policy: str | None) -> int:
    """Give the recipes ``policy`` as their own (``None``: clear it); returns the rows changed."""
    ids = list(recipe_ids)
    if not ids:
        return 0
    return s.execute(update(Recipe).where(Recipe.id.in_(ids)).values(backlog_policy=policy)).rowcount or 0
