"""Who is signed in, and what they may do — for the dashboard's layouts and callbacks.

The Flask session (a signed cookie) holds the user's id, their session epoch and the time of
the sign-in (:func:`start_session`). :func:`current_user` reads the user (and so the role) from
the database once per request, and takes the session as ended when the epoch is no longer the
user's (signed out, new password, new role, deactivated: ``auth.session_user``) or when the
session is ``DELULA_SESSION_HOURS`` old (``auth.session_expired``; the cookie is not re-signed by
use, so the lifetime does not slide). ``pages.layout`` already refuses every Dash request from a
signed-out session (401) or a non-staff one (403); actions reserved to ops are checked again
inside their callbacks with :func:`require`, so a hand-made callback POST cannot skip the check.
"""
from __future__ import annotations

from dataclasses import dataclass

import dash_bootstrap_components as dbc
from dash import html
from flask import g, has_request_context, session

from delula import auth, runtime
from delula.auth import STAFF_ROLES

SESSION_KEY = "uid"
EPOCH_KEY = "epoch"
SINCE_KEY = "since"     # the sign-in, in Unix seconds


class AccessDenied(Exception):
    """The signed-in user's role does not allow this action; answered as 403 JSON."""


@dataclass(frozen=True)
class SessionUser:
    id: str
    username: str
    role: str

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def is_ops(self) -> bool:
        return self.role == "ops"


def start_session(user_id: str, epoch: int, *, signed_in_at: float | None = None) -> None:
    """Make this request's session a fresh one of the user, signed with their session ``epoch``:
    signed in now, or at ``signed_in_at`` (Unix seconds) when a session carries on."""
    since = runtime.current().now().timestamp() if signed_in_at is None else signed_in_at
    session.clear()
    session.update({SESSION_KEY: user_id, EPOCH_KEY: epoch, SINCE_KEY: since})
    session.permanent = True


def current_user() -> SessionUser | None:
    """The signed-in user of this request, or ``None`` (signed out, the session ended, or
    outside a request). One query per request, whatever the number of calls."""
    if not has_request_context():
        return None
    key = (session.get(SESSION_KEY), session.get(EPOCH_KEY), session.get(SINCE_KEY))
    cached = g.get("delula_session")
    if cached is None or cached[0] != key:
        cached = g.delula_session = (key, _session_user(*key))
    return cached[1]


def _session_user(user_id, epoch, since) -> SessionUser | None:
    if not isinstance(user_id, str) or type(epoch) is not int or type(since) not in (int, float):
        return None
    rt = runtime.current()
    if auth.session_expired(since, rt.now(), rt.settings.session_hours):
        return None
    user = auth.session_user(rt, user_id, epoch)
    return None if user is None else SessionUser(id=user.id, username=user.username, role=user.role)


def require(*roles: str) -> SessionUser:
    """The signed-in user if their role is one of ``roles``; else raises :class:`AccessDenied`.

    Call it first thing in a callback that changes something reserved to some roles, e.g.
    ``require("ops")`` before retrying a job.
    """
    user = current_user()
    if user is None:
        raise AccessDenied("Sign in required")
    if roles and user.role not in roles:
        raise AccessDenied(f"This action needs the role {' or '.join(roles)}; you are signed in as {user.role}")
    return user


def no_access(message: str | None = None, *, user: SessionUser | None = None) -> html.Div:
    """A full-page explanation for someone whose role may not see the dashboard (or a part of it)."""
    user = user or current_user()
    who = f"You are signed in as {user.username} (role {user.role}). " if user else ""
    return html.Div(
        dbc.Card(dbc.CardBody([
            html.Div("!", className="no-access-icon mx-auto mb-3", **{"aria-hidden": "true"}),
            html.H1("No access", className="h3 mb-3"),
            html.P(message or (who + "The operations dashboard is for product and ops staff only."),
                   className="text-body-secondary mb-2"),
            html.P("Ask an ops colleague to change your role, or sign in with another account.",
                   className="text-body-secondary mb-4"),
            html.Form(html.Button("Sign out", type="submit", className="btn btn-outline-secondary"),
                      action="/logout", method="POST"),
        ]), className="no-access-card text-center shadow-sm"),
        className="d-flex justify-content-center pt-5", id="no-access")
