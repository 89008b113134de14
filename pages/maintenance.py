"""Maintenance (``/maintenance``): the scheduler's jobs and leader, backlog minimums, a manual run.

- the current leader (host, pid, since, last heartbeat) — or a red card when nobody holds the lock;
- every scheduled job with its interval, last run (when, how long, outcome, error) and next run;
- per recipe the demand-based target next to its minimum, editable by ops
  (``recipes.set_min_backlog``; empty means the ``DELULA_MIN_BACKLOG`` default);
- per recipe, active or inactive, switched by ops (``recipes.set_active``, audited): an inactive
  recipe keeps its pool but is neither refilled nor claimable;
- "Run maintenance now" (ops): ``schedule.run_now(rt, "backlog-maintenance")``, recorded like a
  scheduled run, showing what it created;
- pause and resume (ops, ``delula.pauses``, audited): queue submissions, backlog generation of
  every recipe or of one; and the provider's circuit breaker (``delula.breaker``).

The status part refreshes every few seconds (paused while the tab is hidden). Every change is
checked for the ops role inside its callback (``access.require``), whatever the page showed.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, clientside_callback, ctx, dcc, html
from dash.exceptions import PreventUpdate

from delula import backlog, breaker, jobruns, pauses, recipes, runtime, schedule
from delula.clock import isoformat
from pages import access
from pages.layout import duration_text, empty_state, local_time, page_header, status_badge
from pages.layout import page_of as layout_page_of

dash.register_page(__name__, path="/maintenance", name="Maintenance", title="Maintenance · Delula backlog",
                   order=9)

REFRESH_MS = 10_000
RECENT_RUNS = 15
#: rows per page of the minimums and recipes tables: 200 recipes built as one table were about
#: 3,000 components and 380 KB per refresh (``bench/dashboard.py``)
PAGE_ROWS = 25


def page_of(rows: list, page: int | None) -> tuple[list, int, int]:
    """A page of :data:`PAGE_ROWS` rows (``layout.page_of``)."""
    return layout_page_of(rows, page, PAGE_ROWS)


def _pager(pager_id: str):
    """The page links under a paged table (hidden while everything fits on one page)."""
    return dbc.Pagination(id=pager_id, max_value=1, active_page=1, fully_expanded=False, size="sm",
                          first_last=True, previous_next=True, className="px-3 pt-2 mb-2 d-none")
MAINTENANCE_JOB = "backlog-maintenance"


# --- data shaping (pure, tested directly) -------------------------------------------------------------

def parse_minimum(value) -> int | None:
    """A minimum typed into the table: a whole number 0-1000, or empty for the default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("The minimum must be a whole number from 0 to 1000, or empty for the default.") from None
    if number != int(number) or not 0 <= number <= 1000:
        raise ValueError("The minimum must be a whole number from 0 to 1000, or empty for the default.")
    return int(number)


def interval_text(seconds: float | None) -> str:
    if seconds is None:
        return "once, on taking the lead"
    return "every " + duration_text(seconds).replace(".0 s", " s")


def next_run(job: dict, now: datetime) -> tuple[str | None, bool]:
    """``(iso time, estimated)``: the scheduler's own answer when this process leads, else the
    last run's start plus the interval (an estimate for a leader elsewhere)."""
    if job.get("nextRun"):
        return job["nextRun"], False
    last, interval = job.get("lastRun"), job.get("interval")
    if last and interval and last.get("startedAt"):
        started = datetime.fromisoformat(last["startedAt"].replace("Z", "+00:00"))
        estimate = started + timedelta(seconds=interval)
        while estimate < now:
            estimate += timedelta(seconds=interval)
        return isoformat(estimate), True
    return None, False


def detail_text(detail: dict | None) -> str:
    """A run's recorded result in one line: ``createdTotal 3 · cleanedUp 0``."""
    if not detail:
        return ""
    parts = []
    for key, value in detail.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        parts.append(f"{key} {value}")
    return " · ".join(parts)


def run_summary(result: dict, names: dict[int, str]) -> tuple[str, str]:
    """``(colour, sentence)`` for what "Run maintenance now" did."""
    took = duration_text((result.get("durationMs") or 0) / 1000)
    if result.get("outcome") != "ok":
        return "danger", f"Maintenance failed after {took}: {result.get('error') or 'unknown error'}"
    outcome = result.get("result") or {}
    created = {int(k): v for k, v in (outcome.get("created") or {}).items() if v}
    cleaned = outcome.get("cleanedUp") or 0
    tail = f" Cleaned up {cleaned} old failed job{'s' if cleaned != 1 else ''}." if cleaned else ""
    if not created:
        return "secondary", f"Maintenance ran in {took}: every recipe is at its target, nothing to create.{tail}"
    total = sum(created.values())
    per_recipe = ", ".join(f"{names.get(rid, f'recipe {rid}')} +{n}" for rid, n in sorted(created.items()))
    return "success", (f"Maintenance ran in {took} and created {total} backlog job{'s' if total != 1 else ''}: "
                       f"{per_recipe}.{tail}")


# --- pieces of the page -------------------------------------------------------------------------------

def leader_card(leader: dict | None) -> dbc.Card:
    if leader is None:
        return dbc.Card(dbc.CardBody([
            html.Div("Scheduler leader", className="kpi-label"),
            html.Div("No leader", className="kpi-value text-danger"),
            html.P("No scheduler holds the lock, so backlog maintenance and the queue are not running. "
                   "Start `python -m delula worker` or a web process with DELULA_SCHEDULER=on.",
                   className="text-body-secondary small mb-0 mt-2"),
        ]), className="kpi-tile kpi-danger h-100 shadow-sm", id="mt-leader")
    return dbc.Card(dbc.CardBody([
        html.Div("Scheduler leader", className="kpi-label"),
        html.Div([leader["host"], dbc.Badge("this process", color="primary", className="ms-2 align-middle fs-6")
                  if leader.get("isThisProcess") else None], className="kpi-value text-break", id="mt-leader-host"),
        html.Dl([html.Dt("pid", className="col-5 fw-normal text-body-secondary"),
                 html.Dd(str(leader["pid"]), className="col-7 mb-1 mono", id="mt-leader-pid"),
                 html.Dt("leader since", className="col-5 fw-normal text-body-secondary"),
                 html.Dd(local_time(leader["since"]), className="col-7 mb-1"),
                 html.Dt("last heartbeat", className="col-5 fw-normal text-body-secondary"),
                 html.Dd(local_time(leader["heartbeatAt"], relative=True), className="col-7 mb-0")],
                className="row small mt-3 mb-0"),
    ]), className="kpi-tile kpi-success h-100 shadow-sm", id="mt-leader")


BREAKER_COLORS = {breaker.CLOSED: "success", breaker.OPEN: "danger", breaker.HALF_OPEN: "warning"}


def _pause_button(scope: str, recipe_id: int, paused: bool, *, editable: bool, label: str) -> dbc.Button:
    """The button that pauses or resumes one thing; its id names what and which way."""
    return dbc.Button(f"Resume {label}" if paused else f"Pause {label}",
                      id={"type": "mt-pause", "scope": scope, "recipe": recipe_id,
                          "to": "resume" if paused else "pause"},
                      color="success" if paused else "warning", outline=not paused, size="sm", disabled=not editable)


def controls_card(paused: list[dict], provider: dict, all_recipes: list, *, editable: bool) -> dbc.Card:
    """Pause and resume, and the provider's breaker: what stops work when the provider is in trouble."""
    held = {(p["scope"], p["recipeId"] or 0): p for p in paused}

    def line(scope: str, recipe_id: int, what: str, label: str):
        p = held.get((scope, recipe_id))
        state = (html.Span(["paused by ", html.Span(p["by"] or "the CLI", className="fw-semibold"), " since ",
                            local_time(p["since"])], className="text-warning-emphasis")
                 if p else html.Span("running", className="text-success"))
        return html.Div([html.Div([html.Div(what, className="fw-semibold"), html.Div(state, className="small")]),
                         _pause_button(scope, recipe_id, p is not None, editable=editable, label=label)],
                        className="d-flex justify-content-between align-items-center gap-2 mb-3",
                        id=f"mt-pause-{scope}-{recipe_id or 'all'}")

    names = {r.id: r.name for r in all_recipes}
    own = [line(pauses.BACKLOG, p["recipeId"], f"Backlog of {names.get(p['recipeId'], p['recipeId'])}", "backlog")
           for p in paused if p["scope"] == pauses.BACKLOG and p["recipeId"]]
    pick = dbc.InputGroup([
        dbc.Select(id="mt-pause-recipe", options=[{"label": r.name, "value": str(r.id)} for r in all_recipes
                                                  if (pauses.BACKLOG, r.id) not in held],
                   placeholder="a recipe", disabled=not editable),
        dbc.Button("Pause its backlog", id="mt-pause-recipe-go", color="warning", outline=True, disabled=not editable),
    ], size="sm")
    state = provider["state"]
    probe = provider.get("nextProbeAt")
    breaker_part = html.Div([
        html.Div(["Provider circuit breaker ",
                  dbc.Badge(state.replace("_", "-"), color=BREAKER_COLORS.get(state, "secondary"), id="mt-breaker-state",
                            className="ms-1 text-uppercase")], className="fw-semibold mb-1"),
        html.Div(breaker.sentence(provider), className="small"),
        html.Div([f"{provider['failures']} of {provider['threshold']} errors in a row",
                  (html.Span([" · next probe ", local_time(probe, relative=True)]) if state == breaker.OPEN and probe
                   else None)], className="small text-body-secondary"),
    ], id="mt-breaker")
    return dbc.Card([
        dbc.CardHeader([html.Span("Pause and the provider", className="panel-title"),
                        html.Span("stop what burns attempts during an outage; every change is audited",
                                  className="panel-subtitle ms-2")]),
        dbc.CardBody(dbc.Row([
            dbc.Col([line(pauses.QUEUE, 0, "Queue submissions (polls of submitted jobs go on)", "queue"),
                     line(pauses.BACKLOG, 0, "Backlog generation, all recipes", "backlog"),
                     *own,
                     html.Div(pick)], md=7),
            dbc.Col(breaker_part, md=5, className="border-start-md"),
        ], className="g-4")),
    ], className="shadow-sm h-100", id="mt-controls")


def jobs_table(jobs: list[dict], now: datetime) -> html.Table:
    rows = []
    for job in jobs:
        last = job.get("lastRun")
        upcoming, estimated = next_run(job, now)
        rows.append(html.Tr([
            html.Td([html.Div(job["id"], className="fw-semibold mono"),
                     html.Div(job.get("description") or "", className="text-body-secondary small")]),
            html.Td(interval_text(job.get("interval")), className="text-nowrap"),
            html.Td(local_time(last["startedAt"], relative=True) if last else "never"),
            html.Td(duration_text((last["durationMs"] or 0) / 1000) if last and last.get("durationMs") is not None
                    else "—", className="text-nowrap"),
            html.Td(status_badge(last["outcome"]) if last else html.Span("—", className="text-body-secondary")),
            html.Td([local_time(upcoming, relative=True) if upcoming else "—",
                     html.Span(" (estimate)", className="text-body-secondary small") if estimated else None]),
            html.Td(last.get("error") if last and last.get("error") else "", className="error-text"),
        ], id={"type": "mt-job-row", "job": job["id"]}))
    head = html.Thead(html.Tr([html.Th(h) for h in ("Job", "Schedule", "Last run", "Duration", "Outcome",
                                                     "Next run", "Error")]))
    return dbc.Table([head, html.Tbody(rows)], hover=True, responsive=True, className="align-middle",
                     id="mt-jobs-table")


def runs_table(runs: list[dict]):
    if not runs:
        return empty_state("No runs recorded yet",
                           "Runs appear here once a scheduler has led for a moment, or after "
                           "\"Run maintenance now\".", id="mt-runs-empty")
    head = html.Thead(html.Tr([html.Th(h) for h in ("Started", "Job", "Duration", "Outcome", "Where", "Result")]))
    body = html.Tbody([html.Tr([
        html.Td(local_time(r["startedAt"])),
        html.Td(r["job"], className="mono"),
        html.Td(duration_text(r["durationMs"] / 1000) if r.get("durationMs") is not None else "—"),
        html.Td(status_badge(r["outcome"])),
        html.Td(f"{r['host']} · {r['pid']}", className="small text-body-secondary"),
        html.Td(r["error"] if r.get("error") else detail_text(r.get("detail")),
                className="error-text" if r.get("error") else "small"),
    ]) for r in runs])
    return dbc.Table([head, body], hover=True, responsive=True, size="sm", className="align-middle",
                     id="mt-runs-table")


def policy_line(in_force: dict):
    """The policy in force, and where it comes from."""
    source = "applied on the Planner page" if in_force["source"] == "database" else "DELULA_BACKLOG_POLICY"
    return html.Div([html.Span("Policy in force: "), html.Span(in_force["policy"], className="fw-semibold",
                                                             id="mt-policy"),
                     html.Span(f", service level {in_force['serviceLevel']:g} ({source}); a recipe's own "
                               "policy shows in its row.", className="text-body-secondary")],
                    className="px-3 pt-3 small")


def minimums_table(rows: list[dict], overrides: dict[int, int | None], default_minimum: int, *, editable: bool):
    if not rows:
        return empty_state("No active recipes", "Create one with `python -m delula recipes create`.")
    head = html.Thead(html.Tr([html.Th(h) for h in ("Recipe", "Ready", "In flight", "Attempts / min",
                                                     "Forecast / min", "Lead time", "Policy", "Demand target",
                                                     "Minimum", "")]))
    body = []
    for r in rows:
        rid = r["recipeId"]
        override = overrides.get(rid)
        below = r["completed"] < r["minimum"]
        body.append(html.Tr([
            html.Td([html.Span(r["name"], className="fw-semibold"),
                     dbc.Badge("below minimum", color="danger", className="ms-2") if below else None,
                     dbc.Badge("paused", color="warning", text_color="dark", className="ms-2")
                     if r.get("paused") else None]),
            html.Td(r["completed"]),
            html.Td(r["inFlight"]),
            html.Td(f"{r['claimRatePerMin']:g}"),
            html.Td("–" if r["forecastPerMin"] is None else f"{r['forecastPerMin']:g}",
                    id={"type": "mt-forecast", "recipe": rid}),
            html.Td(f"{r['leadTimeMin']:g} min"),
            html.Td(r["policy"]),
            html.Td(html.Span(r["target"], className="fw-semibold"), id={"type": "mt-target", "recipe": rid}),
            html.Td(dbc.InputGroup([
                dbc.Input(id={"type": "mt-min-input", "recipe": rid}, type="number", min=0, max=1000, step=1,
                          value=override, placeholder=f"default {default_minimum}", disabled=not editable,
                          className="min-input", debounce=True),
                dbc.Button("Save", id={"type": "mt-min-save", "recipe": rid}, color="primary", outline=True,
                           disabled=not editable),
            ], size="sm", className="flex-nowrap")),
            html.Td(dbc.Button("Use default", id={"type": "mt-min-reset", "recipe": rid}, color="link", size="sm",
                               disabled=not editable or override is None, className="p-0")),
        ], className="row-below-min" if below else None))
    return dbc.Table([head, html.Tbody(body)], hover=True, responsive=True, className="align-middle",
                     id="mt-min-table")


def active_table(all_recipes: list, *, editable: bool):
    """Every recipe with its state and the button that switches it (the id names the new state)."""
    if not all_recipes:
        return empty_state("No recipes", "Create one with `python -m delula recipes create`.")
    head = html.Thead(html.Tr([html.Th(h) for h in ("Recipe", "State", "")]))
    body = [html.Tr([
        html.Td(r.name, className="fw-semibold"),
        html.Td(dbc.Badge("active", color="success") if r.is_active else dbc.Badge("inactive", color="secondary")),
        html.Td(dbc.Button("Deactivate" if r.is_active else "Activate",
                           id={"type": "mt-active", "recipe": r.id, "to": "off" if r.is_active else "on"},
                           color="danger" if r.is_active else "success", outline=True, size="sm",
                           disabled=not editable)),
    ]) for r in all_recipes]
    return dbc.Table([head, html.Tbody(body)], hover=True, responsive=True, className="align-middle",
                     id="mt-active-table")


def _card(title: str, subtitle: str, body, *, class_name: str = "mb-4") -> dbc.Card:
    return dbc.Card([dbc.CardHeader([html.Span(title, className="panel-title"),
                                     html.Span(subtitle, className="panel-subtitle ms-2")]),
                     dbc.CardBody(body, className="p-0 table-panel")], className=f"shadow-sm {class_name}")


# --- layout and callbacks -----------------------------------------------------------------------------

def layout(**_query):
    user = access.current_user()
    is_ops = user is not None and user.is_ops
    run_button = dbc.Button("Run maintenance now", id="mt-run-now", color="primary", disabled=not is_ops,
                            title=None if is_ops else "Only ops can run maintenance")
    return html.Div([
        dcc.Interval(id="mt-interval", interval=REFRESH_MS),
        dcc.Store(id="mt-version", data=0),
        page_header("Maintenance", "Scheduler jobs, the leader and per-recipe backlog minimums",
                    actions=[html.Span("Only ops can change anything here.", className="text-body-secondary small")
                             if not is_ops else None, run_button]),
        html.Div(id="mt-run-result"),
        html.Div(id="mt-pause-feedback"),
        dbc.Row([
            dbc.Col(html.Div(id="mt-leader-slot", className="h-100"), lg=3, className="mb-4"),
            dbc.Col(html.Div(id="mt-controls-slot", className="h-100"), lg=9, className="mb-4"),
        ], className="g-3"),
        _card("Scheduled jobs", "last and next run of each", html.Div(id="mt-jobs")),
        _card("Backlog minimums", "the policy in force sets each target from the minimum, the instant attempts "
                                  "per minute (hits and misses, last hour) against their forecast, and the lead time",
              [html.Div(id="mt-policy-line"), html.Div(id="mt-min-feedback", className="px-3 pt-3"),
               html.Div(id="mt-minimums"), _pager("mt-min-pages")]),
        _card("Recipes", "inactive: not offered, not claimable, not refilled; its pool is kept",
              [html.Div(id="mt-active-feedback", className="px-3 pt-3"), html.Div(id="mt-active"),
               _pager("mt-active-pages")]),
        _card("Recent runs", f"the last {RECENT_RUNS}, newest first", html.Div(id="mt-runs")),
    ], id="maintenance-page")


def _clicked_by_ops():
    """``(the button's id, the ops user)`` of a click on a pattern-matched button; no update when
    the buttons were only (re)rendered, :class:`access.AccessDenied` for anyone but ops."""
    trigger = ctx.triggered_id
    if not trigger or not any(t.get("value") for t in ctx.triggered):
        raise PreventUpdate
    return trigger, access.require("ops")


@callback(Output("mt-leader-slot", "children"), Output("mt-jobs", "children"), Output("mt-runs", "children"),
          Input("mt-interval", "n_intervals"), Input("mt-version", "data"))
def refresh_status(_n, _version):
    rt = runtime.current()
    return (leader_card(jobruns.leader(rt)), jobs_table(schedule.jobs_overview(rt), rt.now()),
            runs_table(jobruns.recent_runs(rt, RECENT_RUNS)))


@callback(Output("mt-controls-slot", "children"), Input("mt-interval", "n_intervals"), Input("mt-version", "data"))
def refresh_controls(_n, _version):
    rt = runtime.current()
    user = access.current_user()
    return controls_card(pauses.described(rt), breaker.current(rt), recipes.list_recipes(rt),
                         editable=user is not None and user.is_ops)


@callback(Output("mt-pause-feedback", "children"), Output("mt-version", "data", allow_duplicate=True),
          Input({"type": "mt-pause", "scope": ALL, "recipe": ALL, "to": ALL}, "n_clicks"),
          Input("mt-pause-recipe-go", "n_clicks"), State("mt-pause-recipe", "value"), State("mt-version", "data"),
          prevent_initial_call=True)
def pause_or_resume(_clicks, _go, picked, version):
    trigger, user = _clicked_by_ops()
    if trigger == "mt-pause-recipe-go":
        if not picked:
            return dbc.Alert("Pick a recipe first.", color="warning", dismissable=True, id="mt-pause-alert"), dash.no_update
        scope, recipe_id, pausing = pauses.BACKLOG, int(picked), True
    else:
        scope, recipe_id, pausing = trigger["scope"], trigger["recipe"] or None, trigger["to"] == "pause"
    change = pauses.pause if pausing else pauses.resume
    try:
        answer = change(runtime.current(), scope, recipe_id, actor_id=user.id)
    except pauses.PauseError as e:
        return dbc.Alert(str(e), color="danger", dismissable=True, id="mt-pause-alert"), dash.no_update
    verb = "paused" if pausing else "resumed"
    text = (f"{answer['what'].capitalize()} {verb}." if answer["changed"]
            else f"{answer['what'].capitalize()} was {'paused' if pausing else 'running'} already.")
    return (dbc.Alert(text, color="success", dismissable=True, duration=8000, id="mt-pause-alert"),
            (version or 0) + 1)


def _pager_props(page: int, pages: int) -> tuple[int, int, str]:
    return pages, page, "px-3 pt-2 mb-2" + ("" if pages > 1 else " d-none")


@callback(Output("mt-minimums", "children"), Output("mt-policy-line", "children"),
          Output("mt-min-pages", "max_value"), Output("mt-min-pages", "active_page"),
          Output("mt-min-pages", "className"),
          Input("mt-version", "data"), Input("mt-min-pages", "active_page"))
def refresh_minimums(_version, page=1):
    """One page of :data:`PAGE_ROWS` recipes (in ``backlog.status`` order)."""
    rt = runtime.current()
    user = access.current_user()
    overrides = {r.id: r.min_backlog for r in recipes.list_recipes(rt)}
    rows, page, pages = page_of(backlog.status(rt), page)
    return (minimums_table(rows, overrides, rt.settings.min_backlog,
                           editable=user is not None and user.is_ops),
            policy_line(backlog.policy_in_force(rt)), *_pager_props(page, pages))


@callback(Output("mt-run-result", "children"), Output("mt-version", "data", allow_duplicate=True),
          Input("mt-run-now", "n_clicks"), State("mt-version", "data"),
          running=[(Output("mt-run-now", "disabled"), True, False)], prevent_initial_call=True)
def run_maintenance(n_clicks, version):
    if not n_clicks:
        raise PreventUpdate
    user = access.require("ops")
    rt = runtime.current()
    result = schedule.run_now(rt, MAINTENANCE_JOB, actor_id=user.id)
    names = {r.id: r.name for r in recipes.list_recipes(rt)}
    color, text = run_summary(result, names)
    return (dbc.Alert(text, color=color, dismissable=True, className="mb-4", id="mt-run-alert"),
            (version or 0) + 1)


@callback(Output("mt-min-feedback", "children"), Output("mt-version", "data", allow_duplicate=True),
          Input({"type": "mt-min-save", "recipe": ALL}, "n_clicks"),
          Input({"type": "mt-min-reset", "recipe": ALL}, "n_clicks"),
          State({"type": "mt-min-input", "recipe": ALL}, "value"), State("mt-version", "data"),
          prevent_initial_call=True)
def save_minimum(_saves, _resets, values, version):
    trigger, user = _clicked_by_ops()
    recipe_id = trigger["recipe"]
    ids = [s["id"]["recipe"] for s in ctx.states_list[0]]
    rt = runtime.current()
    try:
        value = None if trigger["type"] == "mt-min-reset" else parse_minimum(values[ids.index(recipe_id)])
        recipes.set_min_backlog(rt, recipe_id, value, actor_id=user.id)
    except (ValueError, recipes.RecipeError) as e:
        return dbc.Alert(str(e), color="danger", dismissable=True, id="mt-min-alert"), dash.no_update
    name = next((r.name for r in recipes.list_recipes(rt) if r.id == recipe_id), f"recipe {recipe_id}")
    text = (f"{name}: minimum set to {value}." if value is not None
            else f"{name}: minimum back to the default ({rt.settings.min_backlog}).")
    return (dbc.Alert(text + " The next maintenance pass uses it.", color="success", dismissable=True,
                      duration=8000, id="mt-min-alert"),
            (version or 0) + 1)


@callback(Output("mt-active", "children"), Output("mt-active-pages", "max_value"),
          Output("mt-active-pages", "active_page"), Output("mt-active-pages", "className"),
          Input("mt-version", "data"), Input("mt-active-pages", "active_page"))
def refresh_active(_version, page=1):
    """One page of :data:`PAGE_ROWS` recipes, active and inactive."""
    user = access.current_user()
    rows, page, pages = page_of(recipes.list_recipes(runtime.current(), active_only=False), page)
    return active_table(rows, editable=user is not None and user.is_ops), *_pager_props(page, pages)


@callback(Output("mt-active-feedback", "children"), Output("mt-version", "data", allow_duplicate=True),
          Input({"type": "mt-active", "recipe": ALL, "to": ALL}, "n_clicks"), State("mt-version", "data"),
          prevent_initial_call=True)
def set_active(_clicks, version):
    trigger, user = _clicked_by_ops()
    try:
        recipe = recipes.set_active(runtime.current(), trigger["recipe"], trigger["to"] == "on", actor_id=user.id)
    except recipes.RecipeError as e:
        return dbc.Alert(str(e), color="danger", dismissable=True, id="mt-active-alert"), dash.no_update
    text = (f"{recipe.name} is active: offered, claimable and refilled." if recipe.is_active
            else f"{recipe.name} is inactive: its pool is kept, but it is not offered, claimed or refilled.")
    return (dbc.Alert(text, color="success", dismissable=True, duration=8000, id="mt-active-alert"),
            (version or 0) + 1)


clientside_callback("function (visibility) { return document.visibilityState === 'hidden'; }",
                    Output("mt-interval", "disabled"), Input("page-visibility", "data"))
