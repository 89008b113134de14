"""Users, roles, API tokens, passwords, credit grants and the sessions of the dashboard.

API tokens are random, shown once, and stored only as their SHA-256 hash. Passwords use
werkzeug's salted hashes. Every credit change is a ledger row (``storage.accounts.change_credits``).

Sessions end on the server: each user has a session epoch, which a dashboard session carries
from its sign-in. Signing out, a new password, a new role and deactivation bump the epoch, and
every session signed with an older one has ended (:func:`session_user`), a copied cookie too.
A session also ends :func:`session_expired` hours after its sign-in, however much it is used.
Every change of an account here is audited in its own transaction (``via``: which face asked).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime

from werkzeug.security import check_password_hash, generate_password_hash

from . import audit, storage
from .storage import STAFF_ROLES, SYSTEM_BACKLOG_USER_ID, Conflict, accounts

ROLES = ("user", "product", "ops")
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_GRANT = 1_000_000_000
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# Verified against when the username is unknown, so a miss costs as much as a hit.
_DUMMY_HASH = generate_password_hash("not-a-password")


class AuthError(ValueError):
    """A refused account operation; the message is for the person who asked."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def user_json(user) -> dict:
    return {"id": user.id, "username": user.username, "role": user.role, "credits": user.credits,
            "isTest": bool(user.is_test)}


def create_user(rt, username: str, *, role: str = "user", credits: int = 0, password: str | None = None,
                user_id: str | None = None, with_token: bool = True, is_test: bool = False) -> tuple[object, str | None]:
    """Create a user with an initial grant (a ledger row) and, by default, a fresh API token.
    ``is_test``: a test account, which product staff may act for."""
    if not isinstance(username, str) or not USERNAME.match(username):
        raise AuthError("username must be 1-64 letters, digits or . _ - @")
    if role not in ROLES + ("system",):
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    _check_amount(credits, allow_zero=True)
    now = rt.now()
    token = secrets.token_urlsafe(32) if with_token else None
    with rt.store.begin() as s:
        try:
            user = accounts.add_user(s, id=user_id or f"u_{uuid.uuid4().hex[:20]}", username=username, role=role,
                                     password_hash=generate_password_hash(password) if password else None, now=now,
                                     is_test=is_test)
        except Conflict as e:
            raise AuthError(str(e)) from None
        if credits:
            accounts.change_credits(s, user.id, credits, kind="grant", now=now)
            user.credits = credits
        if token:
            accounts.add_token(s, user.id, hash_token(token), now)
    return user, token


def authenticate_token(rt, token: str | None):
    """The user behind a bearer token, or ``None`` (unknown, revoked, or the system user)."""
    if not plausible_token(token):
        return None
    with rt.store.single_statement() as s:
        return caller(accounts.user_for_token(s, hash_token(token), rt.now()))


def caller(user):
    """``user`` as the one a token authenticates, or ``None``: the system user never does."""
    return user if user is not None and user.role in ROLES else None


DASHBOARD_FORBIDDEN_MESSAGE = "The dashboard acts for test accounts only: choose a test user."


def may_act_for(actor, target) -> bool:
    """Whether ``actor`` may claim, generate or top up for the account ``target``: itself, or as
    :func:`storage.may_act_for` says (ops any account, product staff test accounts only)."""
    return actor.id == target.id or storage.may_act_for(actor.role, target.is_test)


def plausible_token(token: str | None) -> bool:
    """Whether ``token`` is worth looking up (not empty, not absurdly long)."""
    return bool(token) and len(token) <= 512


def check_password(rt, username: str, password: str):
    """The user if the password matches, else ``None`` (the system user and deactivated
    accounts never sign in)."""
    if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
        return None
    with rt.store.begin() as s:
        user = accounts.get_user_by_name(s, username)
    if user is None or not user.password_hash or user.role == "system" or not user.is_active:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


# --- sessions -------------------------------------------------------------------------------

def session_user(rt, user_id: str, epoch: int):
    """The user of a dashboard session signed with ``epoch``, or ``None`` when that session has
    ended (a newer epoch, a deactivated or deleted account, the system user). One query by key."""
    with rt.store.single_statement() as s:
        user = accounts.get_user(s, user_id)
    if user is None or user.role == "system" or not user.is_active or user.session_epoch != epoch:
        return None
    return user


def session_expired(signed_in_at: float, now: datetime, hours: float) -> bool:
    """Whether a session signed in at ``signed_in_at`` (Unix seconds) has outlived its ``hours``."""
    return now.timestamp() - signed_in_at >= hours * 3600


def sign_out(rt, user_id: str, epoch: int) -> None:
    """End every session of the user, if the one signing out is still live (audited)."""
    with rt.store.begin() as s:
        user = accounts.get_user(s, user_id)
        if user is None or user.session_epoch != epoch:
            return
        accounts.end_sessions(s, user.id)
        audit.record(s, now=rt.now(), actor_id=user.id, action="sign_out", target_user_id=user.id)


# --- account changes (audited; ``actor_id`` None: the CLI, which has no user) ---------------

def set_password(rt, username: str, password: str, *, actor_id: str | None = None, via: str = "cli") -> None:
    """Give the user a new password; every session of theirs ends."""
    _check_password_text(password)
    with rt.store.begin() as s:
        user = _require_user(s, username)
        _store_password(rt, s, user.id, password, actor_id=actor_id, via=via)


def change_password(rt, user_id: str, current: str, new: str) -> int:
    """A signed-in user's own change, which needs their current password: every session of
    theirs ends; returns the new session epoch, for the session that asked to carry on."""
    _check_password_text(new)
    with rt.store.begin() as s:
        user = accounts.get_user(s, user_id)
        if user is None or not user.is_active or not user.password_hash or not isinstance(current, str) \
                or len(current) > MAX_PASSWORD or not check_password_hash(user.password_hash, current):
            raise AuthError("The current password is wrong.")
        return _store_password(rt, s, user.id, new, actor_id=user.id, via="dashboard")


def set_role(rt, username: str, role: str, *, actor_id: str | None = None, via: str = "cli"):
    """Give the user another role; every session of theirs ends. The user as it is now."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    with rt.store.begin() as s:
        user = _require_user(s, username)
        before = user.role
        if before != role:
            accounts.set_role(s, user.id, role)
            accounts.end_sessions(s, user.id)
            audit.record(s, now=rt.now(), actor_id=actor_id, action="role_change", target_user_id=user.id,
                         via=via, **{"from": before, "to": role})
        user.role = role
    return user


def issue_token(rt, username: str, *, actor_id: str | None = None, via: str = "cli") -> str:
    """A new API token for an active user (the ones it has stay valid)."""
    token = secrets.token_urlsafe(32)
    with rt.store.begin() as s:
        user = _require_user(s, username)
        if not user.is_active:
            raise AuthError(f"user {username!r} is deactivated")
        accounts.add_token(s, user.id, hash_token(token), rt.now())
        audit.record(s, now=rt.now(), actor_id=actor_id, action="token_issue", target_user_id=user.id, via=via)
    return token


def deactivate(rt, username: str, *, actor_id: str | None = None, via: str = "cli") -> int:
    """The account signs in and authenticates no more: its tokens are revoked and its sessions
    end. Returns how many tokens were revoked."""
    with rt.store.begin() as s:
        user = _require_user(s, username)
        accounts.deactivate(s, user.id)
        revoked = accounts.revoke_tokens(s, user.id, rt.now())
        accounts.end_sessions(s, user.id)
        audit.record(s, now=rt.now(), actor_id=actor_id, action="deactivate", target_user_id=user.id, via=via,
                     tokensRevoked=revoked)
    return revoked


def _check_password_text(password) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"A password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long.")


def _store_password(rt, s, user_id: str, password: str, *, actor_id: str | None, via: str) -> int:
    accounts.set_password_hash(s, user_id, generate_password_hash(password))
    epoch = accounts.end_sessions(s, user_id)
    audit.record(s, now=rt.now(), actor_id=actor_id, action="password_change", target_user_id=user_id, via=via)
    return epoch


def grant(rt, username: str, amount: int, *, actor_id: str | None = None) -> int:
    """Add credits (a ``grant`` ledger row) and its ``top_up`` audit row; returns the new balance.
    ``actor_id``: who granted (``None``: an operator at the command line)."""
    _check_amount(amount, allow_zero=False)
    with rt.store.begin() as s:
        user = _require_user(s, username)
        balance = _top_up(s, rt.now(), user, amount, actor_id)
    rt.invalidate()
    return balance


def dashboard_target(s, actor, target_id: str | None):
    """The account the dashboard acts for, in session ``s``: a test account (role ``user``,
    ``is_test``) that ``actor`` may act for (:func:`may_act_for`). Raises :class:`AuthError`
    otherwise — the acting-as list offers nothing else, so only a hand-made request gets here."""
    user = accounts.get_user(s, target_id) if target_id else None
    if user is None or user.role != "user" or not user.is_test or not may_act_for(actor, user):
        raise AuthError(DASHBOARD_FORBIDDEN_MESSAGE)
    return user


def acting_target(rt, actor, target_id: str | None):
    """:func:`dashboard_target` in a transaction of its own."""
    with rt.store.begin() as s:
        return dashboard_target(s, actor, target_id)


def top_up(rt, actor, target_id: str | None, amount: int) -> tuple[object, int]:
    """Staff top up a test account from the dashboard (:func:`dashboard_target`), at most
    ``DELULA_TOPUP_MAX`` credits at once. Returns ``(user, balance)``; raises :class:`AuthError`
    with the reason."""
    limit = rt.settings.topup_max
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= limit:
        raise AuthError(f"A top-up is 1 to {limit} credits (DELULA_TOPUP_MAX).")
    with rt.store.begin() as s:
        user = dashboard_target(s, actor, target_id)
        balance = _top_up(s, rt.now(), user, amount, actor.id)
    rt.invalidate()
    return user, balance


def _top_up(s, now, user, amount: int, actor_id: str | None) -> int:
    accounts.lock_user(s, user.id)
    balance = accounts.change_credits(s, user.id, amount, kind="grant", now=now, actor_id=actor_id)
    audit.record(s, now=now, actor_id=actor_id, action="top_up", target_user_id=user.id, credits=amount,
                 balance=balance)
    return balance


def revoke_tokens(rt, username: str, *, actor_id: str | None = None, via: str = "cli") -> int:
    with rt.store.begin() as s:
        user = _require_user(s, username)
        revoked = accounts.revoke_tokens(s, user.id, rt.now())
        audit.record(s, now=rt.now(), actor_id=actor_id, action="token_revoke", target_user_id=user.id, via=via,
                     tokensRevoked=revoked)
    return revoked


def get_user(rt, *, user_id: str | None = None, username: str | None = None):
    with rt.store.begin() as s:
        if user_id is not None:
            return accounts.get_user(s, user_id)
        return accounts.get_user_by_name(s, username)


def list_users(rt, roles: tuple[str, ...] | None = None, *, search: str | None = None,
               limit: int | None = None) -> list:
    with rt.store.begin() as s:
        return accounts.list_users(s, roles, search=search, limit=limit)


def test_users(rt, *, search: str | None = None, keep: str | None = None, limit: int | None = None) -> list:
    """Test accounts (role ``user``, ``is_test``) by name: at most ``limit`` whose names contain
    ``search``, and the test account ``keep`` too when those leave it out (a selector must still
    show its choice)."""
    with rt.store.begin() as s:
        users = accounts.list_users(s, ("user",), search=search, limit=limit, test_only=True)
        if keep and all(u.id != keep for u in users):
            kept = accounts.get_user(s, keep)
            if kept is not None and kept.role == "user" and kept.is_test:
                users.append(kept)
    return users


def usernames(rt, user_ids) -> dict[str, str]:
    with rt.store.begin() as s:
        return accounts.usernames(s, user_ids)


def ensure_system_user(rt) -> None:
    with rt.store.begin() as s:
        if accounts.get_user(s, SYSTEM_BACKLOG_USER_ID) is not None:
            return
    try:
        create_user(rt, SYSTEM_BACKLOG_USER_ID, role="system", user_id=SYSTEM_BACKLOG_USER_ID, with_token=False)
    except AuthError:
        pass  # created meanwhile by another process


def ensure_admin(rt) -> str | None:
    """Create the ops user ``admin`` if missing; returns the password when one was generated."""
    if get_user(rt, username="admin") is not None:
        return None
    password = rt.settings.admin_password
    generated = password is None
    if generated:
        password = secrets.token_urlsafe(12)
    try:
        create_user(rt, "admin", role="ops", password=password, with_token=False)
    except AuthError:
        return None
    return password if generated else None


def secret_key(rt) -> str:
    """``DELULA_SECRET_KEY``, else one generated once and kept in the database."""
    return rt.kept_secret("flask_secret_key", rt.settings.secret_key)


def _require_user(s, username: str):
    user = accounts.get_user_by_name(s, username)
    if user is None or user.role == "system":
        raise AuthError(f"no user named {username!r}")
    return user


def _check_amount(amount, *, allow_zero: bool) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise AuthError("credits must be a whole number")
    if amount < 0 or amount > MAX_GRANT or (amount == 0 and not allow_zero):
        raise AuthError(f"credits must be between {0 if allow_zero else 1} and {MAX_GRANT}")
