"""Audit (``/audit``, ops only): who did what to whom — claims and generations for another user,
top-ups, retries, cancels, minimum changes, manual runs — newest first.

Filters for the actor (username), the action and a time range narrow the table (a dash-ag-grid);
"Download CSV" exports exactly the rows shown, through ``audit.to_csv`` (cells a spreadsheet would
run as a formula are made inert). The trail is read through ``audit.query``, the same function as
``GET /api/audit`` and ``python -m delula audit``. Product staff see the page's "ops only" notice
and every callback checks the role again (``access.require``).
"""
from __future__ import annotations

import json

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from delula import audit, runtime
from pages import access
from pages.layout import empty_state, page_header

dash.register_page(__name__, path="/audit", name="Audit", title="Audit · Delula backlog", order=10)

SHOWN = 500   # rows in the table (and the CSV) at most


def filters_of(actor: str | None, action: str | None, since: str | None, until: str | None) -> dict:
    """``audit.query``'s filters from the inputs (blank inputs filter nothing)."""
    def clean(value):
        return value.strip() if isinstance(value, str) and value.strip() else None

    return {"actor": clean(actor), "action": clean(action), "since": clean(since), "until": clean(until)}


def grid_rows(events: list[dict]) -> list[dict]:
    """The grid's rows: the events with their details as one line of JSON."""
    return [{**e, "actor": e["actor"] or "(system)", "targetUser": e["targetUser"] or "",
             "details": json.dumps(e["details"], sort_keys=True, separators=(", ", ": "))} for e in events]


COLUMNS = [
    {"field": "at", "headerName": "When (UTC)", "width": 210},
    {"field": "actor", "headerName": "Actor", "width": 130},
    {"field": "action", "headerName": "Action", "width": 150},
    {"field": "targetUser", "headerName": "Target user", "width": 140},
    {"field": "targetJobId", "headerName": "Job", "width": 90},
    {"field": "targetRecipeId", "headerName": "Recipe", "width": 90},
    {"field": "details", "headerName": "Details", "flex": 1, "minWidth": 220, "tooltipField": "details"},
    {"field": "requestId", "headerName": "Request", "width": 150},
]


def layout(**_query):
    user = access.current_user()
    if user is None or not user.is_ops:
        return empty_state("Ops only", "The audit trail is for ops.", icon="🔒", id="audit-ops-only")
    actions = [{"label": a, "value": a} for a in audit.ACTIONS]
    return html.Div([
        page_header("Audit", "Who did what to whom, newest first (the latest "
                             f"{SHOWN} matching events)."),
        dbc.Row([
            dbc.Col([dbc.Label("Actor", html_for="audit-actor"),
                     dbc.Input(id="audit-actor", placeholder="username", debounce=True)], md=3),
            dbc.Col([dbc.Label("Action", html_for="audit-action"),
                     dcc.Dropdown(id="audit-action", options=actions, placeholder="any action")], md=3),
            dbc.Col([dbc.Label("From (UTC, ISO 8601)", html_for="audit-since"),
                     dbc.Input(id="audit-since", placeholder="2026-12-01T00:00", debounce=True)], md=2),
            dbc.Col([dbc.Label("Until", html_for="audit-until"),
                     dbc.Input(id="audit-until", placeholder="2026-12-02T00:00", debounce=True)], md=2),
            dbc.Col(dbc.Button("Download CSV", id="audit-download-btn", color="secondary", outline=True,
                               n_clicks=0), md=2, className="d-flex align-items-end"),
        ], className="g-3 mb-3"),
        html.Div(id="audit-feedback"),
        dag.AgGrid(id="audit-grid", rowData=[], columnDefs=COLUMNS,
                   defaultColDef={"sortable": True, "resizable": True}, getRowId="params.data.id",
                   dashGridOptions={"noRowsOverlayComponent": "DelulaNoRows",   # HTML templates are blocked
                                    "noRowsOverlayComponentParams": {"message": "No audit events match."},
                                    "animateRows": False, "suppressCellFocus": True, "tooltipShowDelay": 300},
                   className="audit-grid", style={"height": "calc(100vh - 18rem)", "minHeight": "420px"}),
        dcc.Download(id="audit-download"),
    ], id="audit-page")


def _events(actor, action, since, until) -> list[dict]:
    return audit.query(runtime.current(), limit=SHOWN, **filters_of(actor, action, since, until))


@callback(Output("audit-grid", "rowData"), Output("audit-feedback", "children"),
          Input("audit-actor", "value"), Input("audit-action", "value"),
          Input("audit-since", "value"), Input("audit-until", "value"))
def show(actor, action, since, until):
    """The table for the filters (also when the page opens)."""
    access.require("ops")
    try:
        return grid_rows(_events(actor, action, since, until)), None
    except audit.QueryError as e:
        return [], dbc.Alert(str(e), color="warning", className="py-2", id="audit-filter-error")


@callback(Output("audit-download", "data"), Input("audit-download-btn", "n_clicks"),
          State("audit-actor", "value"), State("audit-action", "value"),
          State("audit-since", "value"), State("audit-until", "value"), prevent_initial_call=True)
def download(n_clicks, actor, action, since, until):
    """The rows the filters select, as CSV."""
    if not n_clicks:
        raise PreventUpdate
    access.require("ops")
    try:
        rows = _events(actor, action, since, until)
    except audit.QueryError:
        raise PreventUpdate from None
    return {"content": audit.to_csv(rows), "filename": "delula-audit.csv", "type": "text/csv"}
