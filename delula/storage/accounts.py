"""Users, API tokens, the credits ledger and app settings.

Every change of a user's credits goes through :func:`change_credits`, which writes the ledger row
with ``balance_after`` in the same statement sequence, so ``credits == sum(amount)`` always holds.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from .db import Conflict, insert_unique, is_postgres
from .models import ApiToken, AppSetting, CreditTransaction, User


def add_user(s: Session, *, id: str, username: str, role: str, password_hash: str | None, now: datetime,
             is_test: bool = False) -> User:
    user = User(id=id, username=username, role=role, credits=0, password_hash=password_hash, created_at=now,
                is_test=is_test)
    return insert_unique(s, user, f"user {username!r} already exists")


def get_user(s: Session, user_id: str) -> User | None:
    return s.get(User, user_id)


def get_user_by_name(s: Session, username: str) -> User | None:
    return s.scalar(select(User).where(User.username == username))


def lock_user(s: Session, user_id: str) -> User | None:
    """The user's row, locked until the transaction ends (first lock of every claim).

    ``FOR NO KEY UPDATE`` on PostgreSQL: exclusive among writers of the row, but not against the
    KEY SHARE lock a foreign-key check takes (e.g. the idempotency key inserted just before),
    which ``FOR UPDATE`` would turn into a deadlock between two claims of one user.
    """
    return s.scalar(select(User).where(User.id == user_id).with_for_update(key_share=True).execution_options(
        populate_existing=True))


def list_users(s: Session, roles: tuple[str, ...] | None = None, *, search: str | None = None,
               limit: int | None = None, test_only: bool = False) -> list[User]:
    """Users by name; only ``roles``, only names containing ``search`` (any case), only test
    accounts with ``test_only``, at most ``limit``."""
    q = select(User).order_by(User.username).limit(limit)
    if roles:
        q = q.where(User.role.in_(roles))
    if test_only:
        q = q.where(User.is_test)
    if search:
        q = q.where(User.username.icontains(search, autoescape=True))
    return list(s.scalars(q))


def usernames(s: Session, user_ids) -> dict[str, str]:
    """``{id: username}`` for the given ids (one indexed query, whatever the number of users)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    return dict(s.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def set_password_hash(s: Session, user_id: str, password_hash: str) -> None:
    s.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


def end_sessions(s: Session, user_id: str) -> int:
    """Bump the user's session epoch: every session signed with an older one has ended. The new epoch."""
    return s.scalar(update(User).where(User.id == user_id).values(session_epoch=User.session_epoch + 1)
                    .returning(User.session_epoch))


def set_role(s: Session, user_id: str, role: str) -> None:
    s.execute(update(User).where(User.id == user_id).values(role=role))


def deactivate(s: Session, user_id: str) -> None:
    s.execute(update(User).where(User.id == user_id).values(is_active=False))


def change_credits(s: Session, user_id: str, amount: int, *, kind: str, now: datetime,
                   generation_id: int | None = None, allow_debit: bool = False,
                   cooldown_until: datetime | None = None, actor_id: str | None = None) -> int | None:
    """Add ``amount`` (negative spends) and write the ledger row. Returns the new balance.

    Spending is conditional on ``credits >= -amount`` unless ``allow_debit``; when the condition
    fails nothing changes and ``None`` is returned. ``cooldown_until`` sets the instant-claim
    cooldown in the same statement. The ledger row names ``actor_id`` as who asked (the user
    itself by default).
    """
    values = {"credits": User.credits + amount}
    if cooldown_until is not None:
        values["instant_cooldown_until"] = cooldown_until
    q = update(User).where(User.id == user_id)
    if amount < 0 and not allow_debit:
        q = q.where(User.credits >= -amount)
    balance = s.scalar(q.values(**values).returning(User.credits))
    if balance is None:
        return None
    s.add(CreditTransaction(user_id=user_id, amount=amount, balance_after=balance, kind=kind,
                            generation_id=generation_id, created_at=now, actor_id=actor_id or user_id))
    s.flush()
    return balance


def ledger(s: Session, user_id: str, limit: int = 100) -> list[CreditTransaction]:
    return list(s.scalars(select(CreditTransaction).where(CreditTransaction.user_id == user_id)
                          .order_by(CreditTransaction.id.desc()).limit(limit)))


def ledger_mismatches(s: Session) -> list[tuple[str, int, int]]:
    """Users whose credits differ from the sum of their ledger: ``(user_id, credits, ledger_sum)``."""
    sums = (select(CreditTransaction.user_id, func.sum(CreditTransaction.amount).label("total"))
            .group_by(CreditTransaction.user_id).subquery())
    q = (select(User.id, User.credits, func.coalesce(sums.c.total, 0))
         .outerjoin(sums, sums.c.user_id == User.id)
         .where(User.credits != func.coalesce(sums.c.total, 0)))
    return [tuple(r) for r in s.execute(q)]


# --- API tokens -----------------------------------------------------------------------------

def add_token(s: Session, user_id: str, token_hash: str, now: datetime) -> ApiToken:
    token = ApiToken(user_id=user_id, token_hash=token_hash, created_at=now)
    s.add(token)
    s.flush()
    return token


TOKEN_TOUCH_S = 60
LIVE_TOKEN = (ApiToken.token_hash == bindparam("hash"), ApiToken.revoked_at.is_(None))
"""The token of ``:hash``, unless revoked (parameters: :func:`token_params`)."""
TOUCH_TOKEN = (update(ApiToken).where(*LIVE_TOKEN, or_(ApiToken.last_used_at.is_(None),
                                                       ApiToken.last_used_at < bindparam("stale_before")))
               .values(last_used_at=bindparam("when")))
"""Marks that token used, unless it was within :data:`TOKEN_TOUCH_S` (a CTE on PostgreSQL)."""
TOKEN_USER = select(User).join(ApiToken, ApiToken.user_id == User.id).where(*LIVE_TOKEN, User.is_active.is_(True))
"""The owner of that token, unless deactivated."""
TOKEN_TOUCHED = TOUCH_TOKEN.returning(ApiToken.id).cte("touched")
"""The touch as a data-modifying CTE: a statement that adds it looks the token up and marks it at once."""
_LOOKUP_AND_TOUCH = TOKEN_USER.add_cte(TOKEN_TOUCHED)  # PostgreSQL


def user_for_token(s: Session, token_hash: str, now: datetime) -> User | None:
    """The owner of a live token; marks it used (at most once a minute, to spare writes).

    On PostgreSQL one statement — the lookup with the conditional touch as a data-modifying
    CTE — so it can run in autocommit (:meth:`Store.single_statement`): one round trip per
    authenticated request, and a write (with its commit) only when the mark is stale. The
    statements are built once (an API request spends no time composing them).
    """
    params = token_params(token_hash, now)
    if is_postgres(s):
        return s.scalar(_LOOKUP_AND_TOUCH, params)
    user = s.scalar(TOKEN_USER, params)
    if user is not None:
        s.execute(TOUCH_TOKEN, params)
    return user


def token_params(token_hash: str, now: datetime) -> dict:
    """The parameters of :data:`LIVE_TOKEN` and :data:`TOUCH_TOKEN`."""
    return {"hash": token_hash, "when": now, "stale_before": now - timedelta(seconds=TOKEN_TOUCH_S)}


def revoke_tokens(s: Session, user_id: str, now: datetime) -> int:
    result = s.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                       .values(revoked_at=now))
    return result.rowcount or 0


# --- app settings ---------------------------------------------------------------------------

def get_setting(s: Session, key: str) -> str | None:
    row = s.get(AppSetting, key)
    return None if row is None else row.value


def put_setting_once(s: Session, key: str, value: str) -> str:
    """Store ``value`` unless the key exists; returns whichever value is stored."""
    existing = s.get(AppSetting, key)
    if existing is not None:
        return existing.value
    try:
        insert_unique(s, AppSetting(key=key, value=value), f"setting {key!r} exists")
    except Conflict:
        return s.get(AppSetting, key, populate_existing=True).value
    return value
