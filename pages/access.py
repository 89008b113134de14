"""Who is signed in, and what they may do — for the dashboard's layouts and callbacks.

The Flask session holds only the user's id; :func:`current_user` reads the user (and so the
role) from the database, cached for a few seconds, so a changed role takes effect quickly
without a query per callback. ``pages.layout`` already refuses every Dash request from a
signed-out session (401) or a non-staff one (403); actions reserved to ops are checked again
inside their callbacks with :func:`require`, so a hand-made callback POST cannot skip the check.
"""
from __future__ import annotations

from dataclasses import dataclass

import dash_bootstrap_components as dbc
from dash import html
from flask import has_request_context, session

from delula import auth, runtime
from delula.auth import STAFF_ROLES

SESSION_KEY = "uid"
USER_CACHE_TTL_S = 5


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


def load_user(rt, user_id: str) -> SessionUser | None:
    """The user behind a session id, or ``None`` if it no longer exists (or is the system user)."""
    def load():
        user = auth.get_user(rt, user_id=user_id)
        if user is None or user.role == "system":
            return None
        return SessionUser(id=user.id, username=user.username, role=user.role)

    return rt.cache("session-users", ttl=USER_CACHE_TTL_S).get_or_compute(user_id, load)


def current_user() -> SessionUser | None:
    """The signed-in user of this request, or ``None`` (signed out, or outside a request)."""
    if not has_request_context():
        return None
    user_id = session.get(SESSION_KEY)
    if not isinstance(user_id, str):
        return None
    return load_user(runtime.current(), user_id)


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
