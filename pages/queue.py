"""Queue (``/queue``): generation jobs by status, with retry and cancel for ops.

Counts per status at the top (``queue_status.status``), then the newest jobs matching the filters
in a grid (``generations.list_jobs``): recipe, source, owner, status, attempts, error, next poll,
age. A failed (or cancelled) job can be retried and a pending or processing one cancelled — by ops
only, checked again inside the callback — after a confirmation; ``queue_actions`` holds the rules
(a row's buttons come from ``queue_actions.allowed``) and refuses with a readable ``QueueError``.
Filters live in the URL query (``/queue?status=failed&recipe=3&source=user``) so other pages can
link to a filtered view. The grid refreshes every few seconds while the tab is visible.
"""
from __future__ import annotations

import time
from datetime import datetime

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, clientside_callback, dcc, html
from dash.exceptions import PreventUpdate

from delula import auth, generations, queue_actions, queue_status, runtime
from delula import recipes as recipe_domain
from delula.clock import isoformat
from delula.generations import JobSource, JobStatus
from pages import access
from pages.layout import local_time, page_header

dash.register_page(__name__, path="/queue", name="Queue", title="Queue · Delula", order=2)

LIMIT = 500
REFRESH_MS = 5000
STATUSES = tuple(JobStatus)
SOURCES = tuple(JobSource)
STATUS_HINTS = {
    JobStatus.PENDING: "waiting for a free slot",
    JobStatus.PROCESSING: "at the provider",
    JobStatus.COMPLETED: "finished, last 24 h",
    JobStatus.FAILED: "gave up after retries, last 24 h",
    JobStatus.CANCELLED: "stopped by ops, last 24 h",
    JobStatus.EXPIRED: "backlog items too old to hand out, kept, last 24 h",
}


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested directly)

def parse_filters(status=None, recipe=None, source=None) -> dict:
    """Filters from the URL query (or the filter controls); unknown values are ignored."""
    if isinstance(status, str):
        status = status.split(",")
    statuses = [s for s in (status or []) if s in STATUSES]
    try:
        recipe_id = int(recipe) if recipe not in (None, "", "all") else None
    except (TypeError, ValueError):
        recipe_id = None
    return {"statuses": statuses, "recipe": recipe_id, "source": source if source in SOURCES else None}


def actions_for(status: str, is_ops: bool) -> list[str]:
    """What ops may do to a job in this status (nothing for product staff)."""
    return queue_actions.allowed(status) if is_ops else []


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else round((later - earlier).total_seconds(), 1)


def job_row(gen, *, now: datetime, recipe_names: dict, usernames: dict, is_ops: bool) -> dict:
    """One grid row. Times go out as ISO UTC / seconds; the browser shows them in local time."""
    meta = gen.meta or {}
    if gen.status == JobStatus.PROCESSING:
        next_poll = _seconds(gen.next_poll_at, now)
    elif gen.status == JobStatus.PENDING:
        next_poll = _seconds(gen.next_attempt_at, now)  # a retry waiting for its backoff
    else:
        next_poll = None
    return {
        "id": gen.id,
        "rowId": str(gen.id),  # AG Grid row ids are strings
        "recipe": recipe_names.get(gen.recipe_id, f"recipe {gen.recipe_id}"),
        "recipeId": gen.recipe_id,
        "source": generations.source(gen),
        "owner": usernames.get(gen.user_id, gen.user_id),
        "instant": bool(meta.get("isInstant")),
        "status": gen.status,
        "attempts": gen.attempts,
        "error": gen.error or "",
        "nextPoll": next_poll,
        "age": _seconds(now, gen.created_at),
        "createdAt": isoformat(gen.created_at),
        "actions": actions_for(gen.status, is_ops),
    }


def status_counts(summary: dict) -> dict[str, int]:
    """Counts per status from ``queue_status.status`` (every status present, missing ones 0)."""
    counts = summary.get("counts") or {}
    return {s: int(counts.get(s) or 0) for s in STATUSES}


def at_a_glance(summary: dict) -> list[str]:
    """Slots in use, the oldest pending job and the next poll, from ``queue_status.status``."""
    slots = summary.get("slots") or {}
    parts = [f"{slots.get('inUse', 0)} of {slots.get('max', '?')} slots in use"]
    oldest = summary.get("oldestPending")
    parts.append(f"oldest pending: #{oldest['id']}, waiting {duration(oldest['ageSeconds'])}" if oldest
                 else "nothing pending")
    polls = summary.get("nextPolls") or []
    if polls:
        first = polls[0]
        when = "due now" if first["inSeconds"] <= 0 else f"in {duration(first['inSeconds'])}"
        parts.append(f"next poll: #{first['id']} {when}")
    return parts


def duration(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def empty_message(filters: dict) -> str:
    if filters["statuses"] or filters["recipe"] is not None or filters["source"]:
        return "No jobs match these filters."
    return "No jobs yet: the backlog service queues some within a minute, or use Generate on the recipe cards."


def no_rows(filters: dict) -> dict:
    """Grid options for the empty grid: a component saying why (HTML templates are blocked)."""
    return {"noRowsOverlayComponent": "DelulaNoRows", "noRowsOverlayComponentParams": {"message": empty_message(filters)}}


def confirm_text(action: str, job_id: int) -> str:
    if action == queue_actions.RETRY:
        return f"Retry job #{job_id}? It goes back to pending with fresh attempts and is submitted again."
    return f"Cancel job #{job_id}? It stops now (and is cancelled at the provider); a user's credits are refunded."


# ---------------------------------------------------------------------------------------------
# Layout

COLUMNS = [
    {"field": "id", "headerName": "Job", "cellRenderer": "DelulaJobLink", "width": 85, "sort": "desc"},
    {"field": "recipe", "headerName": "Recipe", "minWidth": 160, "flex": 1, "filter": True},
    {"field": "source", "headerName": "Source", "width": 100},
    {"field": "owner", "headerName": "Owner", "width": 140, "filter": True},
    {"field": "status", "headerName": "Status", "cellRenderer": "DelulaStatus", "width": 125},
    {"field": "attempts", "headerName": "Attempts", "width": 100, "type": "numericColumn"},
    {"field": "error", "headerName": "Error", "minWidth": 140, "flex": 1.5, "tooltipField": "error", "filter": True},
    {"field": "nextPoll", "headerName": "Next poll", "width": 105,
     "valueFormatter": {"function": "delulaNextPoll(params.value)"}},
    {"field": "age", "headerName": "Age", "width": 85, "valueFormatter": {"function": "delulaDuration(params.value)"}},
    {"field": "createdAt", "headerName": "Created", "width": 165,
     "valueFormatter": {"function": "delulaLocalTime(params.value)"}},
    {"field": "actions", "headerName": "Actions", "width": 100, "cellRenderer": "DelulaJobActions",
     "cellDataType": False, "sortable": False},
]


def columns(is_ops: bool) -> list[dict]:
    return [{**c, "hide": True} if c["field"] == "actions" and not is_ops else c for c in COLUMNS]


def count_tiles(summary: dict) -> html.Div:
    """A tile per status, each linking to the queue filtered by it, and the queue at a glance."""
    counts = status_counts(summary)
    tiles = dbc.Row([
        dbc.Col(dcc.Link(dbc.Card(dbc.CardBody([
            html.Div(status.capitalize(), className="text-body-secondary small text-uppercase fw-semibold"),
            html.Div(f"{counts[status]:,}", className="queue-count-value", id=f"queue-count-{status}"),
            html.Div(STATUS_HINTS[status], className="small text-body-secondary"),
        ]), className=f"queue-count queue-count-{status} shadow-sm h-100"),
            href=f"/queue?status={status}", className="text-decoration-none text-reset"), xs=6, md=4, xl=True)
        for status in STATUSES
    ], className="g-3 mb-2", id="queue-counts")
    glance = html.Div(" · ".join(at_a_glance(summary)), className="small text-body-secondary mb-4",
                      id="queue-glance")
    return html.Div([tiles, glance])


def _filters(filters: dict, recipe_options: list[dict]) -> dbc.Card:
    return dbc.Card(dbc.CardBody(dbc.Row([
        dbc.Col([dbc.Label("Status", html_for="queue-filter-status", className="fw-semibold mb-1"),
                 dcc.Dropdown(id="queue-filter-status", options=[{"label": s, "value": s} for s in STATUSES],
                              value=filters["statuses"], multi=True, placeholder="All statuses")], md=5),
        dbc.Col([dbc.Label("Recipe", html_for="queue-filter-recipe", className="fw-semibold mb-1"),
                 dbc.Select(id="queue-filter-recipe", options=[{"label": "All recipes", "value": "all"}]
                            + recipe_options, value=str(filters["recipe"]) if filters["recipe"] else "all")], md=3),
        dbc.Col([dbc.Label("Source", className="fw-semibold mb-1 d-block"),
                 dbc.RadioItems(id="queue-filter-source", value=filters["source"] or "all",
                                options=[{"label": "All", "value": "all"}]
                                + [{"label": source.capitalize(), "value": source} for source in SOURCES],
                                className="delula-btn-radio", inputClassName="btn-check",
                                labelClassName="btn btn-outline-secondary", labelCheckedClassName="active")],
                md=4),
    ], className="g-3 align-items-end")), className="shadow-sm mb-3")


def _load(rt, filters: dict, is_ops: bool) -> tuple[list[dict], dict]:
    jobs = generations.list_jobs(rt, statuses=tuple(filters["statuses"]) or None, recipe_id=filters["recipe"],
                                 source=filters["source"], limit=LIMIT)
    names = {r.id: r.name for r in recipe_domain.list_recipes(rt, active_only=False)}
    users = auth.usernames(rt, (g.user_id for g in jobs))
    now = rt.now()
    rows = [job_row(g, now=now, recipe_names=names, usernames=users, is_ops=is_ops) for g in jobs]
    return rows, queue_status.status(rt)


def _footnote(rows: list, now: datetime) -> list:
    shown = f"{len(rows):,} job{'s' if len(rows) != 1 else ''}"
    more = f" (the newest {LIMIT}; narrow the filters to see older ones)" if len(rows) >= LIMIT else ""
    return [shown, more, " · refreshed ", local_time(now), f", every {REFRESH_MS // 1000} s while this tab is visible"]


def layout(status=None, recipe=None, source=None, **_query):
    user = access.current_user()
    if user is None or not user.is_staff:
        return access.no_access()
    rt = runtime.current()
    filters = parse_filters(status, recipe, source)
    rows, summary = _load(rt, filters, user.is_ops)
    recipe_options = [{"label": r.name + ("" if r.is_active else " (inactive)"), "value": str(r.id)}
                      for r in recipe_domain.list_recipes(rt, active_only=False)]
    hint = ("Retry a failed job or cancel a pending/processing one with the buttons on its row."
            if user.is_ops else "Retry and cancel are for ops; you can watch and filter.")
    return html.Div([
        page_header("Queue", f"Generation jobs, newest first: user jobs run before backlog refills, "
                             f"at most {rt.settings.max_concurrent_jobs} at once. {hint}"),
        html.Div(count_tiles(summary), id="queue-counts-box"),
        _filters(filters, recipe_options),
        dag.AgGrid(
            id="queue-grid",
            rowData=rows,
            columnDefs=columns(user.is_ops),
            defaultColDef={"sortable": True, "resizable": True, "filter": False},
            getRowId="params.data.rowId",
            dashGridOptions={**no_rows(filters), "tooltipShowDelay": 300, "animateRows": False,
                             "suppressCellFocus": True},
            className="queue-grid",
            style={"height": "calc(100vh - 26rem)", "minHeight": "420px"},
        ),
        html.Div(_footnote(rows, rt.now()), id="queue-footnote", className="small text-body-secondary mt-2"),
        dcc.ConfirmDialog(id="queue-confirm"),
        dcc.Store(id="queue-pending-action"),
        dcc.Store(id="queue-changed"),
        dbc.Toast(id="queue-toast", is_open=False, dismissable=True, duration=6000, header="Queue",
                  className="recipes-toast"),
        dcc.Interval(id="queue-refresh", interval=REFRESH_MS),
    ])


# ---------------------------------------------------------------------------------------------
# Callbacks

@callback(
    Output("queue-grid", "rowData"),
    Output("queue-grid", "dashGridOptions"),
    Output("queue-counts-box", "children"),
    Output("queue-footnote", "children"),
    Input("queue-refresh", "n_intervals"),
    Input("queue-filter-status", "value"),
    Input("queue-filter-recipe", "value"),
    Input("queue-filter-source", "value"),
    Input("queue-changed", "data"),
    State("queue-grid", "dashGridOptions"),
    prevent_initial_call=True,
)
def refresh(_n, statuses, recipe, source, _changed, grid_options):
    """Reload rows and counts on the interval, on a filter change and after an action."""
    user = access.require(*auth.STAFF_ROLES)
    filters = parse_filters(statuses, recipe, source)
    rt = runtime.current()
    rows, summary = _load(rt, filters, user.is_ops)
    options = {**(grid_options or {}), **no_rows(filters)}
    return rows, options, count_tiles(summary), _footnote(rows, rt.now())


# No refresh while nobody looks at the tab ("page-visibility" is kept by assets/delula.js).
clientside_callback("function (visibility) { return visibility === 'hidden'; }",
                    Output("queue-refresh", "disabled"), Input("page-visibility", "data"))


@callback(
    Output("queue-confirm", "displayed"),
    Output("queue-confirm", "message"),
    Output("queue-pending-action", "data"),
    Output("queue-toast", "is_open", allow_duplicate=True),
    Output("queue-toast", "children", allow_duplicate=True),
    Output("queue-toast", "icon", allow_duplicate=True),
    Input("queue-grid", "cellRendererData"),
    prevent_initial_call=True,
)
def ask(data):
    """A row's Retry/Cancel button: confirm first (ops only)."""
    request = (data or {}).get("value") or {}
    action, job_id = request.get("action"), request.get("id")
    if action not in (queue_actions.RETRY, queue_actions.CANCEL) or not isinstance(job_id, int):
        raise PreventUpdate
    user = access.current_user()
    if user is None or not user.is_ops:
        return False, dash.no_update, None, True, "Retry and cancel are for ops.", "danger"
    return True, confirm_text(action, job_id), {"action": action, "id": job_id}, *([dash.no_update] * 3)


@callback(
    Output("queue-toast", "is_open"),
    Output("queue-toast", "children"),
    Output("queue-toast", "icon"),
    Output("queue-changed", "data"),
    Input("queue-confirm", "submit_n_clicks"),
    State("queue-pending-action", "data"),
    prevent_initial_call=True,
)
def act(_submitted, pending):
    """Confirmed: retry or cancel through the queue service; the toast says what happened."""
    if not pending:
        raise PreventUpdate
    message, ok = perform(pending["action"], pending["id"])
    return True, message, "success" if ok else "danger", time.time()


def perform(action: str, job_id: int) -> tuple[str, bool]:
    """Run a confirmed action; (message for the toast, whether it worked)."""
    user = access.require("ops")
    rt = runtime.current()
    try:
        if action == queue_actions.RETRY:
            queue_actions.retry(rt, job_id, actor_id=user.id)
            return f"Job #{job_id} is pending again and will be resubmitted.", True
        if action == queue_actions.CANCEL:
            queue_actions.cancel(rt, job_id, actor_id=user.id)
            return f"Job #{job_id} was cancelled.", True
    except queue_actions.QueueError as e:
        return f"Job #{job_id}: {e}", False
    return f"Unknown action {action!r}.", False
