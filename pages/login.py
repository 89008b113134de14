"""Sign-in and sign-out: a small Flask form in front of the Dash app.

The form is plain server-rendered HTML (with the dashboard's local Bootstrap), so signing in
needs no JavaScript and no Dash callback — callbacks are refused until the session holds a user.
``sign_in.attempt`` counts the attempt in the database per username and per client address and
checks the password; past a limit the form answers 429 until the window has passed. The client
address is werkzeug's ``remote_addr``, which ``app.py`` takes from ``X-Forwarded-For`` only over
the ``DELULA_TRUSTED_PROXIES`` hops it trusts. A CSRF token kept in the session guards the forms
(:func:`csrf_ok`). Signing out ends every session of the user (``auth.sign_out``).
"""
from __future__ import annotations

import secrets
from html import escape
from urllib.parse import urlsplit

from flask import Blueprint, redirect, request, session

from delula import auth, runtime, sign_in

from .access import EPOCH_KEY, SESSION_KEY, current_user, start_session

bp = Blueprint("delula_login", __name__)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith(("/login", "/logout")):
        return "/"
    return target


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok() -> bool:
    """Whether the form posted carries this session's CSRF token (compared as bytes: any text
    a client sends is a refusal, never an error)."""
    expected = session.get("csrf")
    given = request.form.get("csrf") or ""
    return isinstance(expected, str) and bool(expected) and secrets.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


@bp.get("/login")
def login_form():
    user = current_user()
    if user is not None and user.is_staff:
        return redirect(safe_next(request.args.get("next")))
    notice = "You have been signed out." if request.args.get("signed_out") else None
    return _page(next_=safe_next(request.args.get("next")), notice=notice)


@bp.post("/login")
def login_submit():
    rt = runtime.current()
    username = (request.form.get("username") or "").strip()[:64]
    password = request.form.get("password") or ""
    next_ = safe_next(request.form.get("next"))
    if not csrf_ok():
        return _page(next_=next_, username=username, status=400,
                     error="Your sign-in form expired. Please try again.")
    if not username or not password:
        return _page(next_=next_, username=username, status=400, error="Enter your username and password.")
    outcome = sign_in.attempt(rt, username, password, request.remote_addr or "unknown")
    if outcome.retry_after_s is not None:
        minutes = max(1, round(outcome.retry_after_s / 60))
        return _page(next_=next_, username=username, status=429,
                     error=f"Too many failed sign-ins. Wait {minutes} minutes, then try again.",
                     headers={"Retry-After": str(outcome.retry_after_s)})
    if outcome.user is None:
        return _page(next_=next_, username=username, status=401, error="Wrong username or password.")
    start_session(outcome.user.id, outcome.user.session_epoch)  # a fresh session for the signed-in user
    return redirect(next_)


@bp.post("/logout")
def logout():
    user_id, epoch = session.get(SESSION_KEY), session.get(EPOCH_KEY)
    if isinstance(user_id, str) and type(epoch) is int:
        auth.sign_out(runtime.current(), user_id, epoch)
    session.clear()
    return redirect("/login?signed_out=1")


@bp.get("/logout")
def logout_get():
    """Signing out changes state, so it is a POST; a plain visit gets the button."""
    if current_user() is None:
        return redirect("/login")
    body = """
      <h1 class="h4 mb-3">Sign out?</h1>
      <form method="post" action="/logout"><button class="btn btn-primary w-100" type="submit">Sign out</button></form>
      <a class="d-block text-center mt-3" href="/">Back to the dashboard</a>"""
    return html_page(body)


def _page(*, next_: str, username: str = "", error: str | None = None, notice: str | None = None,
          status: int = 200, headers: dict | None = None):
    alert = ""
    if error:
        alert = f'<div class="alert alert-danger py-2" role="alert" id="login-error">{escape(error)}</div>'
    elif notice:
        alert = f'<div class="alert alert-secondary py-2" role="status" id="login-notice">{escape(notice)}</div>'
    body = f"""
      <div class="text-center mb-4">
        <div class="brand-mark mx-auto mb-3">D</div>
        <h1 class="h4 mb-1">Delula backlog</h1>
        <p class="text-body-secondary small mb-0">Operations dashboard — sign in with your staff account</p>
      </div>
      {alert}
      <form method="post" action="/login" id="login-form" novalidate>
        <input type="hidden" name="csrf" value="{escape(csrf_token())}">
        <input type="hidden" name="next" value="{escape(next_)}">
        <div class="mb-3">
          <label class="form-label" for="username">Username</label>
          <input class="form-control" id="username" name="username" autocomplete="username" required
                 autofocus value="{escape(username)}" maxlength="64">
        </div>
        <div class="mb-4">
          <label class="form-label" for="password">Password</label>
          <input class="form-control" id="password" name="password" type="password"
                 autocomplete="current-password" required>
        </div>
        <button class="btn btn-primary w-100" type="submit" id="login-submit">Sign in</button>
      </form>"""
    return html_page(body, status=status, headers=headers, title="Sign in · Delula backlog")


def html_page(body: str, *, status: int = 200, headers: dict | None = None, title: str = "Delula backlog"):
    page = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{escape(title)}</title>
  <link rel="icon" href="/_favicon.ico">
  <link rel="stylesheet" href="/assets/bootstrap.min.css">
  <link rel="stylesheet" href="/assets/delula.css">
</head>
<body class="login-body">
  <main class="login-card card shadow-sm"><div class="card-body p-4 p-md-5">{body}</div></main>
</body>
</html>"""
    response_headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    response_headers.update(headers or {})
    return page, status, response_headers
