"""Queue (``/queue``): generation jobs by status, with retry and cancel for ops.

Counts per status at the top (``queue_status.status``), then the newest jobs matching the filters
in a grid (``generations.list_jobs``): recipe, source, owner, status, attempts, error, next poll,
age (a rejected backlog item's error is the quality gate's reason). A failed job can be retried and a pending or processing one cancelled — by ops
only, checked again inside the callback — after a confirmation; ``queue_actions`` holds the rules
(a row's buttons come from ``queue_actions.allowed``) and refuses with a readable ``QueueError``.
Filters live in the URL query (``/queue?status=failed&recipe=3&source=user``) so other pages can
link to a filtered view. The grid refreshes every few seconds while the tab is visible.

Bulk actions (ops only): rows are selected with their checkboxes, then "Retry selected (n)" /
"Cancel selected (n)" act on the selected rows the action applies to, and "Retry all N matching" /
"Cancel all N matching" on every job the filters match among the statuses the action applies to,
however old (N counted with a bounded query, ``queue_actions.matching``). A modal states the count
and the action; once confirmed, ``queue_actions.bulk`` runs it in batches and the toast says what
happened ("Retried 198, skipped 2").
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
    JobStatus.REJECTED: "backlog results the quality gate refused (the error says why), last 24 h",
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


def selected_ids(action: str, selected: list | None, rows: list | None) -> list[int]:
    """The ids of the selected rows that ``action`` applies to, by their status in the grid's
    current ``rows`` (a selected row no longer shown keeps the status it was selected with)."""
    current = {r.get("id"): r.get("status") for r in rows or [] if isinstance(r, dict)}
    ids = []
    for row in selected or []:
        job_id = row.get("id") if isinstance(row, dict) else None
        if isinstance(job_id, int) and action in queue_actions.allowed(current.get(job_id, row.get("status"))):
            ids.append(job_id)
    return ids


def bulk_filter(action: str, filters: dict) -> queue_actions.JobFilter | None:
    """The page's filters as ``action``'s filter (``None``: the chosen statuses leave it nothing)."""
    return queue_actions.narrow(action, filters["statuses"], filters["recipe"], filters["source"])


def _verb(action: str) -> str:
    return "Retry" if action == queue_actions.RETRY else "Cancel"


def _count(n: int, more: bool = False) -> str:
    return f"{n:,}{'+' if more else ''}"


def selected_label(action: str, n: int) -> str:
    return f"{_verb(action)} selected ({n:,})"


def matching_label(action: str, n: int, more: bool = False) -> str:
    return f"{_verb(action)} all {_count(n, more)} matching"


def _jobs(n: int, more: bool = False) -> str:
    return f"{_count(n, more)} job{'' if n == 1 and not more else 's'}"


def bulk_question(action: str, n: int, *, matching: bool, more: bool = False) -> str:
    """What the confirmation asks: the action, the count, and what the action does."""
    which = (f"all {_jobs(n, more)} matching the filters ({queue_actions.rule(action)}, of any age)"
             if matching else f"{_jobs(n)} selected")
    if action == queue_actions.RETRY:
        return (f"Retry {which}? They go back to pending with fresh attempts and are submitted again. "
                "Jobs that changed meanwhile are skipped.")
    return (f"Cancel {which}? They stop now (and are cancelled at the provider); users' credits are refunded. "
            "Jobs that changed meanwhile are skipped.")


def bulk_result(action: str, result: dict) -> str:
    """The toast after a bulk action: "Retried 198, skipped 2"."""
    done = "Retried" if action == queue_actions.RETRY else "Cancelled"
    return f"{done} {result['done']:,}, skipped {result['skipped']:,}."


def confirm_text(action: str, job_id: int) -> str:
    if action == queue_actions.RETRY:
        return f"Retry job #{job_id}? It goes back to pending with fresh attempts and is submitted again."
    return f"Cancel job #{job_id}? It stops now (and is cancelled at the provider); a user's credits are refunded."


# ---------------------------------------------------------------------------------------------
# Layout

COLUMNS = [
    {"field": "id", "headerName": "Job", "cellRenderer": "DelulaJobLink", "width": 85, "sort": "desc"},
    {"field": "recipe", "headerName": "Recipe", "minWidth": 130, "flex": 1, "filter": True},
    {"field": "source", "headerName": "Source", "width": 100},
    {"field": "owner", "headerName": "Owner", "width": 140, "filter": True},
    {"field": "status", "headerName": "Status", "cellRenderer": "DelulaStatus", "width": 125},
    {"field": "attempts", "headerName": "Attempts", "width": 100, "type": "numericColumn"},
    {"field": "error", "headerName": "Error", "minWidth": 110, "flex": 1.5, "tooltipField": "error", "filter": True},
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
            html.Div(f"{counts[status]:,}" + ("+" if status in (summary.get("countsAbove") or {}) else ""),
                     className="queue-count-value", id=f"queue-count-{status}"),
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


BULK_BUTTONS = [(f"queue-bulk-{action}-{scope}", action, scope)
                for scope in ("selected", "all") for action in (queue_actions.RETRY, queue_actions.CANCEL)]
SELECTION = {"mode": "multiRow", "checkboxes": True, "headerCheckbox": True, "enableClickSelection": False,
             "selectAll": "filtered"}
SELECTION_COLUMN = {"width": 44}


def bulk_counts(rt, filters: dict, selected: list | None, rows: list | None) -> list[tuple[str, bool]]:
    """Each bulk button's label and whether it is disabled (nothing to act on), in
    :data:`BULK_BUTTONS` order: the selected rows the action applies to, or the jobs the filters
    match among those it applies to (a bounded count)."""
    out = []
    for _, action, scope in BULK_BUTTONS:
        if scope == "selected":
            n = len(selected_ids(action, selected, rows))
            out.append((selected_label(action, n), n == 0))
            continue
        where = bulk_filter(action, filters)
        n, more = queue_actions.matching(rt, action, where) if where else (0, False)
        out.append((matching_label(action, n, more), n == 0))
    return out


def bulk_bar(rt, filters: dict) -> html.Div:
    """Ops only: the bulk buttons above the grid, their confirmation and the request it holds."""
    counts = dict(zip((b[0] for b in BULK_BUTTONS), bulk_counts(rt, filters, [], [])))

    def button(button_id, action, scope):
        color = "primary" if action == queue_actions.RETRY else "danger"
        label, disabled = counts[button_id]
        return dbc.Button(label, id=button_id, size="sm", disabled=disabled, color=color,
                          outline=scope == "all", className="queue-bulk-button")

    return html.Div([
        html.Div([button(*b) for b in BULK_BUTTONS[:2]], className="d-flex gap-2"),
        html.Div([button(*b) for b in BULK_BUTTONS[2:]], className="d-flex gap-2"),
        dbc.Modal([
            dbc.ModalHeader(dbc.ModalTitle("Confirm a bulk action")),
            dbc.ModalBody(id="queue-bulk-question"),
            dbc.ModalFooter([dbc.Button("Back", id="queue-bulk-dismiss", color="secondary", outline=True),
                             dbc.Button("Confirm", id="queue-bulk-confirm", color="danger")]),
        ], id="queue-bulk-modal", is_open=False, centered=True),
        dcc.Store(id="queue-bulk-request"),
    ], id="queue-bulk", className="d-flex flex-wrap justify-content-between gap-2 mb-2")


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
    hint = ("Retry a failed job or cancel a pending/processing one with the buttons on its row, or select "
            "rows (or take every job the filters match) for a bulk action."
            if user.is_ops else "Retry and cancel are for ops; you can watch and filter.")
    selection = {"rowSelection": SELECTION, "selectionColumnDef": SELECTION_COLUMN} if user.is_ops else {}
    return html.Div([
        page_header("Queue", f"Generation jobs, newest first: user jobs run before backlog refills, "
                             f"at most {rt.settings.max_concurrent_jobs} at once. {hint}"),
        html.Div(count_tiles(summary), id="queue-counts-box"),
        _filters(filters, recipe_options),
        bulk_bar(rt, filters) if user.is_ops else None,
        dag.AgGrid(
            id="queue-grid",
            rowData=rows,
            columnDefs=columns(user.is_ops),
            defaultColDef={"sortable": True, "resizable": True, "filter": False},
            getRowId="params.data.rowId",
            dashGridOptions={**no_rows(filters), "tooltipShowDelay": 300, "animateRows": False,
                             "suppressCellFocus": True, **selection},
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


# --- bulk actions (ops; the bar exists on ops' page only) -------------------------------------

@callback(
    *[Output(button_id, "children") for button_id, _, _ in BULK_BUTTONS],
    *[Output(button_id, "disabled") for button_id, _, _ in BULK_BUTTONS],
    Input("queue-grid", "selectedRows"),
    Input("queue-grid", "rowData"),
    State("queue-filter-status", "value"),
    State("queue-filter-recipe", "value"),
    State("queue-filter-source", "value"),
    prevent_initial_call=True,
)
def bulk_buttons(selected, rows, statuses, recipe, source):
    """The bulk buttons' counts, whenever the selection or the grid's rows change."""
    user = access.current_user()
    if user is None or not user.is_ops:
        raise PreventUpdate
    counts = bulk_counts(runtime.current(), parse_filters(statuses, recipe, source), selected, rows)
    return *[label for label, _ in counts], *[disabled for _, disabled in counts]


@callback(
    Output("queue-bulk-modal", "is_open"),
    Output("queue-bulk-question", "children"),
    Output("queue-bulk-confirm", "children"),
    Output("queue-bulk-request", "data"),
    Output("queue-toast", "is_open", allow_duplicate=True),
    Output("queue-toast", "children", allow_duplicate=True),
    Output("queue-toast", "icon", allow_duplicate=True),
    *[Input(button_id, "n_clicks") for button_id, _, _ in BULK_BUTTONS],
    Input("queue-bulk-dismiss", "n_clicks"),
    State("queue-grid", "selectedRows"),
    State("queue-grid", "rowData"),
    State("queue-filter-status", "value"),
    State("queue-filter-recipe", "value"),
    State("queue-filter-source", "value"),
    prevent_initial_call=True,
)
def bulk_ask(*args):
    """A bulk button: count again, then ask (ops only); Back closes the question."""
    selected, rows, statuses, recipe, source = args[-5:]
    pressed = dash.ctx.triggered_id
    if pressed == "queue-bulk-dismiss":
        return False, dash.no_update, dash.no_update, None, *([dash.no_update] * 3)
    button = next((b for b in BULK_BUTTONS if b[0] == pressed), None)
    if button is None:
        raise PreventUpdate
    user = access.current_user()
    if user is None or not user.is_ops:
        return False, dash.no_update, dash.no_update, None, True, "Retry and cancel are for ops.", "danger"
    _, action, scope = button
    if scope == "selected":
        ids = selected_ids(action, selected, rows)
        n, more, request = len(ids), False, {"action": action, "ids": ids}
    else:
        where = bulk_filter(action, parse_filters(statuses, recipe, source))
        n, more = queue_actions.matching(runtime.current(), action, where) if where else (0, False)
        request = {"action": action, "filter": {"statuses": list(where.statuses), "recipe": where.recipe_id,
                                                "source": where.source} if where else None}
    if n == 0:
        return False, dash.no_update, dash.no_update, None, True, f"Nothing to {action}.", "warning"
    question = bulk_question(action, n, matching=scope == "all", more=more)
    return True, question, f"{_verb(action)} {_jobs(n, more)}", request, *([dash.no_update] * 3)


@callback(
    Output("queue-bulk-modal", "is_open", allow_duplicate=True),
    Output("queue-toast", "is_open", allow_duplicate=True),
    Output("queue-toast", "children", allow_duplicate=True),
    Output("queue-toast", "icon", allow_duplicate=True),
    Output("queue-changed", "data", allow_duplicate=True),
    Output("queue-grid", "deselectAll"),
    Input("queue-bulk-confirm", "n_clicks"),
    State("queue-bulk-request", "data"),
    prevent_initial_call=True,
)
def bulk_act(_confirmed, request):
    """Confirmed: the bulk action through the queue service; the toast says what it did."""
    if not request:
        raise PreventUpdate
    message, ok = perform_bulk(request)
    return False, True, message, "success" if ok else "danger", time.time(), ok


def perform_bulk(request: dict) -> tuple[str, bool]:
    """Run a confirmed bulk request (checked again: ops only, and by the domain's rules);
    (message for the toast, whether it ran)."""
    user = access.require("ops")
    action = request.get("action") if isinstance(request, dict) else None
    if action not in queue_actions.APPLIES_TO:
        return f"Unknown action {action!r}.", False
    asked = request.get("filter")
    where = None
    if isinstance(asked, dict):
        where = queue_actions.JobFilter(statuses=asked.get("statuses") or (), recipe_id=asked.get("recipe"),
                                        source=asked.get("source"))
    try:
        result = queue_actions.bulk(runtime.current(), action, ids=request.get("ids"), filter=where,
                                    actor_id=user.id)
    except queue_actions.BulkRefused as e:
        return f"Not done: {e}", False
    return bulk_result(action, result), True
