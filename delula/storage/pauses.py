"""What is paused: a ``pauses`` row per paused thing, inserted by a pause, deleted by a resume.

Every process reads the whole (tiny) table at each tick or pass, so a pause set anywhere is
obeyed everywhere at once. A pause of something already paused keeps the first row (who paused
it first, and since when); :func:`pause` says whether it was new.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import is_postgres
from .models import ALL_RECIPES, Pause


def pause(s: Session, scope: str, recipe_id: int = ALL_RECIPES, *, by: str | None, now: datetime) -> bool:
    """Pause ``scope`` (for one recipe, or all); ``True`` unless it was paused already."""
    insert = (postgresql.insert if is_postgres(s) else sqlite.insert)(Pause)
    stmt = (insert.values(scope=scope, recipe_id=recipe_id, paused_by=by, paused_at=now)
            .on_conflict_do_nothing(index_elements=["scope", "recipe_id"]).returning(Pause.scope))
    return s.execute(stmt).first() is not None


def resume(s: Session, scope: str, recipe_id: int = ALL_RECIPES) -> Pause | None:
    """Lift the pause; the row it was (``None`` when it was not paused)."""
    stmt = (delete(Pause).where(Pause.scope == scope, Pause.recipe_id == recipe_id)
            .returning(Pause.scope, Pause.recipe_id, Pause.paused_by, Pause.paused_at))
    row = s.execute(stmt).first()
    return None if row is None else Pause(scope=row[0], recipe_id=row[1], paused_by=row[2], paused_at=row[3])


def all_pauses(s: Session) -> list[Pause]:
    """Every pause in force, scope then recipe."""
    return list(s.scalars(select(Pause).order_by(Pause.scope, Pause.recipe_id)))
