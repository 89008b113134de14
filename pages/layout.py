"""The dashboard's shell: navigation, the sign-in gate, and small UI pieces every page shares.

:func:`init_app` mounts the sign-in routes and ``/account`` (a user's own password), puts a gate in front of every Dash request and sets
``app.layout``: the navbar plus ``dash.page_container`` for product and ops staff, a "no access"
page for everyone else. The gate answers Dash's data requests from a signed-out session with
401 JSON (and callbacks from a non-staff session with 403), and sends a signed-out browser asking
for a page to ``/login``.

Shared helpers for pages: :func:`page_header`, :func:`empty_state`, :func:`local_time` (rendered
in the viewer's time zone by ``assets/delula.js``), :func:`status_badge`, :func:`kpi_tile`;
for charts :func:`chart_layout`, :func:`empty_figure` and :func:`percent`.
"""
from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import quote

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, dcc, html
from dash.exceptions import CallbackException, DependencyException, InvalidResourceError, PreventUpdate
from flask import jsonify, redirect, request

from delula import breaker, pauses, runtime
from delula.clock import isoformat

from . import account, login
from .access import AccessDenied, SessionUser, current_user, no_access

NAV = (("Overview", "/", "exact"), ("Recipes", "/recipes", "partial"), ("Content", "/content", "partial"),
       ("Queue", "/queue", "partial"), ("Planner", "/planner", "partial"), ("Maintenance", "/maintenance", "partial"))
OPS_NAV = (("Audit", "/audit", "partial"),)   # shown to ops only

# Dash's own routes (endpoint names are the rule paths, see dash.Dash._add_url).
DASH_DATA_ENDPOINTS = frozenset({"/_dash-layout", "/_dash-dependencies", "/_dash-update-component",
                                 "/_reload-hash"})
DASH_PAGE_ENDPOINTS = frozenset({"/", "/<path:path>"})
CALLBACK_ENDPOINT = "/_dash-update-component"

log = logging.getLogger("delula.dashboard")

BANNER_REFRESH_MS = 10_000

STATUS_COLORS = {"pending": "secondary", "processing": "primary", "completed": "success", "failed": "danger",
                 "cancelled": "dark", "expired": "warning", "rejected": "danger", "ok": "success", "error": "danger", "running": "primary"}


def init_app(app: dash.Dash, rt) -> None:
    server = app.server
    server.register_blueprint(login.bp)
    server.register_blueprint(account.bp)
    server.before_request(_gate)
    server.extensions["delula_dash"] = app
    server.register_error_handler(AccessDenied, lambda e: (jsonify(message=str(e)), 403))
    server.register_error_handler(CallbackException, _malformed_callback)
    # Dash's component-suite route raises these for a library or file it does not serve
    for missing in (DependencyException, InvalidResourceError):
        server.register_error_handler(missing, lambda e: (jsonify(message="Not found"), 404))
    app.layout = serve_layout
    app.callback(Output("ops-banner", "children"), Input("ops-banner-tick", "n_intervals"),
                 Input("page-visibility", "data"))(refresh_ops_banner)


def _callback_request_problem(body) -> str | None:
    """Why a callback request cannot be for one of this app's callbacks (None when it can)."""
    from flask import current_app

    if not isinstance(body, dict):
        return "the body must be a JSON object"
    callback = current_app.extensions["delula_dash"].callback_map.get(body.get("output"))
    if callback is None:
        return "no such callback"
    for part in ("inputs", "state"):
        given = body.get(part, [])
        if not isinstance(given, list) or len(given) != len(callback.get(part, [])):
            return f"{part} do not match the callback"
    return None


def _malformed_callback(e: CallbackException):
    """A callback request that does not match the callback (a hand-made or stale POST) is the
    client's mistake: 400 JSON. Anything else Dash raises about callbacks is ours: 500."""
    if type(e) is CallbackException:
        return jsonify(message=f"Malformed callback request: {e}"), 400
    log.exception("callback failed")
    return jsonify(message="Internal error in a dashboard callback"), 500


def _gate():
    endpoint = request.endpoint
    if endpoint in DASH_DATA_ENDPOINTS:
        user = current_user()
        if user is None:
            return jsonify(message="Sign in required: your session has ended. Reload the page to sign in."), 401
        if endpoint == CALLBACK_ENDPOINT and not user.is_staff:
            return jsonify(message="The dashboard is for product and ops staff only."), 403
        if endpoint == CALLBACK_ENDPOINT:
            problem = _callback_request_problem(request.get_json(silent=True))
            if problem:
                return jsonify(message=f"Malformed callback request: {problem}"), 400
    elif endpoint in DASH_PAGE_ENDPOINTS and current_user() is None:
        target = request.full_path if request.query_string else request.path
        return redirect("/login?next=" + quote(target, safe="/"))
    return None


def serve_layout():
    user = current_user()
    if user is None:  # only while Dash validates its layout: the gate answers signed-out requests
        return html.Div(id="app-shell")
    return shell(user, dash.page_container if user.is_staff else no_access(user=user))


def shell(user: SessionUser, content) -> html.Div:
    return html.Div([
        navbar(user),
        dcc.Interval(id="ops-banner-tick", interval=BANNER_REFRESH_MS),
        html.Div(id="ops-banner"),
        html.Main(dbc.Container(content, fluid="xxl", className="py-4"), className="app-main"),
        # "visible"/"hidden", set by assets/delula.js on visibilitychange (pages pause refreshes).
        dcc.Store(id="page-visibility", data="visible"),
    ], id="app-shell", className="app-shell")


def navbar(user: SessionUser) -> dbc.Navbar:
    entries = (NAV + (OPS_NAV if user.is_ops else ())) if user.is_staff else ()
    links = [dbc.NavItem(dbc.NavLink(label, href=href, active=match, id=f"nav-{label.lower()}"))
             for label, href, match in entries]
    return dbc.Navbar(dbc.Container([
        html.A([html.Span("D", className="brand-mark brand-mark-sm me-2"), html.Span("Delula backlog")],
               href="/", className="navbar-brand d-flex align-items-center fw-semibold"),
        dbc.Nav(links, className="me-auto", navbar=True),
        html.Div([
            html.Span([html.Span(user.username, className="fw-semibold", id="nav-username"),
                       dbc.Badge(user.role, color="light", text_color="dark", className="ms-2 role-badge",
                                 id="nav-role")],
                      className="text-white me-3 small"),
            html.A("Password", href="/account", className="btn btn-sm btn-link link-light me-2",
                   id="nav-account", title="Change your password"),
            html.Form(html.Button("Sign out", type="submit", className="btn btn-sm btn-outline-light",
                                  id="nav-signout"),
                      action="/logout", method="POST", className="m-0"),
        ], className="d-flex align-items-center"),
    ], fluid="xxl"), color="dark", dark=True, className="app-navbar py-2", sticky="top")


# --- the ops banner: what is paused, and the provider's breaker, on every page -------------------------

def ops_banner(paused: list[dict], provider: dict):
    """A strip under the navbar while anything is paused (what, by whom, since when) or the
    provider's circuit breaker is not closed; nothing otherwise."""
    lines = [html.Div([html.Span(f"{p['what']} paused", className="fw-semibold"),
                       f" by {p['by'] or 'the CLI'} since ", local_time(p["since"]), "."],
                      className="ops-banner-line", id=f"ops-paused-{p['scope']}-{p['recipeId'] or 'all'}")
             for p in paused]
    if provider["state"] != breaker.CLOSED:
        lines.append(html.Div(breaker.sentence(provider), className="ops-banner-line fw-semibold",
                              id="ops-breaker"))
    if not lines:
        return None
    link = html.A("Pause and resume on the Maintenance page", href="/maintenance", className="alert-link small")
    return dbc.Alert(dbc.Container([html.Div(lines), link], fluid="xxl",
                                   className="d-flex flex-wrap justify-content-between align-items-center gap-2"),
                     color="danger" if provider["state"] != breaker.CLOSED else "warning",
                     className="ops-banner rounded-0 border-0 border-bottom mb-0 py-2", id="ops-banner-alert")


def refresh_ops_banner(_n, visibility):
    """Registered on each app by :func:`init_app` (the shell is not a page module, whose
    callbacks Dash registers anew for every app)."""
    if visibility == "hidden":
        raise PreventUpdate
    rt = runtime.current()
    return ops_banner(pauses.described(rt), breaker.current(rt))


# --- shared UI pieces -------------------------------------------------------------------------------

def page_header(title: str, subtitle: str | None = None, actions=None) -> html.Div:
    """A page title with an optional line of explanation and controls on the right."""
    return html.Div([
        html.Div([html.H1(title, className="h3 mb-1"),
                  html.P(subtitle, className="text-body-secondary mb-0") if subtitle else None]),
        html.Div(actions, className="d-flex flex-wrap align-items-center gap-2") if actions else None,
    ], className="page-header d-flex flex-wrap justify-content-between align-items-end gap-3 mb-4")


def empty_state(title: str, text: str | None = None, *, icon: str = "○", id: str | None = None) -> html.Div:
    """What an empty list or chart shows: what is missing and why, never a blank box."""
    kw = {"id": id} if id else {}
    return html.Div([
        html.Div(icon, className="empty-state-icon", **{"aria-hidden": "true"}),
        html.Div(title, className="fw-semibold"),
        html.Div(text, className="text-body-secondary small") if text else None,
    ], className="empty-state", **kw)


def local_time(value: datetime | str | None, *, relative: bool = False, placeholder: str = "—") -> html.Time | str:
    """A timestamp shown in the viewer's time zone (``assets/delula.js`` formats every
    ``time.local-time``); the ISO UTC text stays as the fallback and in the tooltip.
    ``relative`` shows "3 min ago" / "in 20 s"."""
    if value is None or value == "":
        return placeholder
    iso = isoformat(value) if isinstance(value, datetime) else str(value)
    fallback = iso.replace("T", " ").replace("Z", " UTC")
    return html.Time(fallback, dateTime=iso, className="local-time",
                     **{"data-format": "relative" if relative else "datetime"})


def status_badge(status: str | None, *, id=None) -> dbc.Badge:
    kw = {"id": id} if id is not None else {}
    return dbc.Badge(status or "—", color=STATUS_COLORS.get(status or "", "secondary"),
                     className="status-badge text-uppercase", **kw)


def kpi_tile(label: str, value, *, hint=None, tone: str | None = None, id: str | None = None) -> dbc.Card:
    """A number that matters, large, with a line that says what it counts. ``tone`` is a
    Bootstrap colour (``danger``, ``warning``, ``success``) for a tile that needs attention."""
    kw = {"id": id} if id else {}
    return dbc.Card(dbc.CardBody([
        html.Div(label, className="kpi-label"),
        html.Div(value, className="kpi-value"),
        html.Div(hint, className="kpi-hint") if hint is not None else None,
    ]), className=f"kpi-tile h-100{' kpi-' + tone if tone else ''}", **kw)


def duration_text(seconds: float | None) -> str:
    """``850 ms``, ``12.4 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(int(round(seconds)) // 60, 60)
    return f"{h} h {m} min" if m else f"{h} h"


# --- charts: plotly figures as plain dicts, one look on every page -----------------------------------

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
GRID = "#eef0f3"


def chart_layout(**extra) -> dict:
    """A figure's layout in the dashboard's style; ``extra`` overrides it (a dict merged into the
    base's dict of the same name, e.g. ``xaxis``)."""
    base = {
        "height": 300, "margin": {"l": 48, "r": 16, "t": 30, "b": 36},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT, "size": 12, "color": "#374151"},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 11},
                   "traceorder": "normal"},
        "xaxis": {"gridcolor": GRID, "zeroline": False, "automargin": True},
        "yaxis": {"gridcolor": GRID, "zeroline": False, "rangemode": "tozero", "automargin": True},
        "hoverlabel": {"font": {"family": FONT}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def empty_figure(message: str, hint: str | None = None) -> dict:
    """A chart with nothing to draw says so, in the middle of where the chart would be."""
    text = f"<b>{message}</b>" + (f"<br><span style='color:#6b7280'>{hint}</span>" if hint else "")
    return {"data": [], "layout": chart_layout(
        xaxis={"visible": False}, yaxis={"visible": False}, margin={"l": 16, "r": 16, "t": 16, "b": 16},
        annotations=[{"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                      "font": {"size": 13, "color": "#374151"}}])}


def percent(value: float | None) -> str:
    """A share as ``25 %`` (``2.5 %`` below ten, ``—`` for none)."""
    if value is None:
        return "—"
    pct = value * 100
    return f"{pct:.0f} %" if pct >= 10 or pct == 0 else f"{pct:.1f} %"


def page_of(rows: list, page, per_page: int) -> tuple[list, int, int]:
    """``(the rows of page ``page``, the page shown, how many pages)`` of ``per_page`` rows: pages
    are 1-based and clamped to those there are; a page that is not a number is page 1."""
    pages = max(1, -(-len(rows) // per_page))
    try:
        page = min(max(1, int(page or 1)), pages)
    except (TypeError, ValueError):
        page = 1
    return rows[(page - 1) * per_page:page * per_page], page, pages
