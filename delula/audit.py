"""The audit trail: who did what to whom, written with the action itself, read by ops.

Every action staff take on someone else's behalf or on the system — claims and generations for
another user, top-ups, retry and cancel (a bulk one is one event with its counts), minimum
changes, run-now, sign-ins, password, role and token changes — calls :func:`record` in the session of the action, so the record and the action
commit together. The faces set the request id (:func:`request_context`) so a record can be
matched to its request's log lines.
"""
from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

from .clock import isoformat
from .storage import accounts
from .storage import audit as store

MAX_LIMIT = 1000

ACTIONS = ("claim_for_user", "generate_for_user", "top_up", "retry", "cancel", "bulk_retry", "bulk_cancel",
           "set_minimum", "set_policy", "run_now", "sign_in", "sign_in_failed", "sign_out", "password_change",
           "role_change", "token_issue", "token_revoke", "deactivate", "recipe_update", "pause", "resume")
FIELDS = ("id", "at", "actor", "actorId", "action", "targetUser", "targetUserId", "targetJobId", "targetRecipeId",
          "details", "requestId")

_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("delula_request_id", default=None)


def request_id() -> str | None:
    """The id of the request (or CLI command) being served, if a face set one."""
    return _REQUEST_ID.get()


@contextlib.contextmanager
def request_context(value: str | None = None) -> Iterator[str]:
    """Serve one request or command under ``value`` (a fresh id when ``None``)."""
    token = _REQUEST_ID.set(value or uuid.uuid4().hex)
    try:
        yield _REQUEST_ID.get()
    finally:
        _REQUEST_ID.reset(token)


def record(s, *, now: datetime, actor_id: str | None, action: str, target_user_id: str | None = None,
           target_job_id: int | None = None, target_recipe_id: int | None = None, **details) -> None:
    """Append one event in session ``s`` (the action's own transaction)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    store.add(s, at=now, actor_id=actor_id, action=action, target_user_id=target_user_id,
              target_job_id=target_job_id, target_recipe_id=target_recipe_id, details=details,
              request_id=request_id())


def events(rt, *, since: datetime | None = None, until: datetime | None = None, actor_id: str | None = None,
           action: str | None = None, target_user_id: str | None = None, limit: int | None = 500) -> list[dict]:
    """Events newest first, as JSON objects (``FIELDS``)."""
    with rt.store.begin() as s:
        return [_json(e, actor, target) for e, actor, target in store.events(
            s, since=since, until=until, actor_id=actor_id, action=action, target_user_id=target_user_id,
            limit=limit)]


class QueryError(ValueError):
    """A filter of :func:`query` that cannot be used; the message names it."""


def query(rt, *, since: str | None = None, until: str | None = None, actor: str | None = None,
          action: str | None = None, limit: int | str | None = 500) -> list[dict]:
    """:func:`events` filtered as a person asks — times as ISO 8601 text, the actor by username
    (one no account has matches nothing), ``limit`` 1 to :data:`MAX_LIMIT` — for the API, the CLI
    and the Audit page alike. Raises :class:`QueryError` for a value it cannot use."""
    start, end = parse_time("since", since), parse_time("until", until)
    if action is not None and action not in ACTIONS:
        raise QueryError(f"action must be one of {', '.join(ACTIONS)}")
    try:
        count = 500 if limit is None else int(limit)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    actor_id = None
    if actor is not None:
        with rt.store.begin() as s:
            user = accounts.get_user_by_name(s, actor)
        if user is None:
            return []
        actor_id = user.id
    return events(rt, since=start, until=end, actor_id=actor_id, action=action, limit=count)


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time (a ``Z`` or an offset; none means UTC), or :class:`QueryError`."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name} must be an ISO 8601 time, e.g. 2026-12-01T00:00:00Z") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _json(e, actor: str | None, target: str | None) -> dict:
    return {"id": e.id, "at": isoformat(e.at), "actor": actor, "actorId": e.actor_id, "action": e.action,
            "targetUser": target, "targetUserId": e.target_user_id, "targetJobId": e.target_job_id,
            "targetRecipeId": e.target_recipe_id, "details": e.details or {}, "requestId": e.request_id}


def to_csv(rows: list[dict]) -> str:
    """The events as CSV with a header row (details as compact JSON)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {**row, "details": json.dumps(row["details"], sort_keys=True, separators=(",", ":"))}
        writer.writerow({k: _inert(v) for k, v in cells.items()})
    return out.getvalue()


def _inert(value):
    """A cell a spreadsheet will not run as a formula (a leading ``=``, ``+``, ``-`` or ``@``)."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value
