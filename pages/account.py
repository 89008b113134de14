"""``/account``: a signed-in user changes their own password.

A small server-rendered form like the sign-in page (no Dash callback), guarded by the session's
CSRF token. The current password is asked again; the new one twice. A change ends every other
session of the user (``auth.change_password`` bumps the session epoch) and this one carries on,
re-signed with the new epoch and its original sign-in time (the lifetime does not restart).
"""
from __future__ import annotations

from html import escape

from flask import Blueprint, redirect, request, session

from delula import auth, runtime

from .access import SINCE_KEY, current_user, start_session
from .login import csrf_ok, csrf_token, html_page

bp = Blueprint("delula_account", __name__)


@bp.get("/account")
def account_form():
    user = current_user()
    if user is None:
        return redirect("/login?next=/account")
    return _page(user)


@bp.post("/account")
def account_submit():
    user = current_user()
    if user is None:
        return redirect("/login?next=/account")
    if not csrf_ok():
        return _page(user, status=400, error="Your form expired. Please try again.")
    current = request.form.get("current") or ""
    new, again = request.form.get("new") or "", request.form.get("again") or ""
    if new != again:
        return _page(user, status=400, error="The new password and its repetition differ.")
    rt = runtime.current()
    try:
        epoch = auth.change_password(rt, user.id, current, new)
    except auth.AuthError as e:
        return _page(user, status=400, error=str(e))
    start_session(user.id, epoch, signed_in_at=session[SINCE_KEY])
    return _page(user, notice="Your password has been changed. Your other sessions have ended.")


def _page(user, *, error: str | None = None, notice: str | None = None, status: int = 200):
    alert = ""
    if error:
        alert = f'<div class="alert alert-danger py-2" role="alert" id="account-error">{escape(error)}</div>'
    elif notice:
        alert = f'<div class="alert alert-success py-2" role="status" id="account-notice">{escape(notice)}</div>'
    body = f"""
      <h1 class="h4 mb-1">Change password</h1>
      <p class="text-body-secondary small mb-4">Signed in as <strong>{escape(user.username)}</strong>.
        Changing it signs you out everywhere else.</p>
      {alert}
      <form method="post" action="/account" id="account-form" novalidate>
        <input type="hidden" name="csrf" value="{escape(csrf_token())}">
        <div class="mb-3">
          <label class="form-label" for="current">Current password</label>
          <input class="form-control" id="current" name="current" type="password"
                 autocomplete="current-password" required autofocus>
        </div>
        <div class="mb-3">
          <label class="form-label" for="new">New password</label>
          <input class="form-control" id="new" name="new" type="password" autocomplete="new-password"
                 minlength="{auth.MIN_PASSWORD}" required>
          <div class="form-text">At least {auth.MIN_PASSWORD} characters.</div>
        </div>
        <div class="mb-4">
          <label class="form-label" for="again">New password, again</label>
          <input class="form-control" id="again" name="again" type="password" autocomplete="new-password"
                 minlength="{auth.MIN_PASSWORD}" required>
        </div>
        <button class="btn btn-primary w-100" type="submit" id="account-submit">Change password</button>
      </form>
      <a class="d-block text-center mt-3" href="/">Back to the dashboard</a>"""
    return html_page(body, status=status, title="Change password · Delula backlog")
