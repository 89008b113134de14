"""Content (``/content``, product and ops): what users get, what they ask for and miss, how long
items wait in the pool, and what the pool throws away — over a chosen time range.

One callback reads ``delula.content.snapshot`` (grouped in SQL, the top 20 of each list, cached
for half a minute) when the page opens, when the range or the recipe filter changes, and every
minute while the tab is visible, and returns the tiles and every chart. The figures are plain
functions of a snapshot, tested directly; a chart with nothing to draw says what would be there.
Values are labelled as the recipe's schema names them; free text is never counted, so never shown.
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from delula import content, runtime
from delula import recipes as recipe_domain
from delula.auth import STAFF_ROLES
from pages import access
from pages.layout import chart_layout, duration_text, empty_figure, kpi_tile, local_time, page_header, percent

dash.register_page(__name__, path="/content", name="Content", title="Content · Delula backlog", order=3)

REFRESH_MS = 60_000
GRAPHS = ("ct-claimed", "ct-missed", "ct-pool", "ct-waste", "ct-reasons")
RECIPE_COLORS = ("#4f46e5", "#14b8a6", "#f59e0b", "#a855f7", "#0ea5e9", "#ec4899", "#64748b", "#16a34a")
COLORS = {"noItem": "#f59e0b", "fellBack": "#f97316", "p50": "#4f46e5", "p95": "#b91c1c",
          "expired": "#f59e0b", "rejected": "#dc3545"}
REASON_CHARS = 60   # of a waste reason on the axis; the whole in the tooltip


# --- figures (pure functions of a snapshot) ----------------------------------------------------------

def _value_label(row: dict, snap: dict) -> str:
    """``Cat Olympics · Event: Sprint``; without the recipe when the page shows one recipe."""
    text = f"{row['fieldLabel']}: {row['valueLabel']}"
    return text if snap.get("recipeId") is not None else f"{row['recipe']} · {text}"


def _bars_layout(labels: list[str], *, xaxis_title: str, xaxis: dict | None = None, **extra) -> dict:
    """Horizontal bars, the first label on top, as tall as the labels need."""
    return chart_layout(
        height=max(240, 70 + 28 * len(labels)), hovermode="closest", bargap=0.3, margin={"l": 8, "t": 30},
        xaxis={"title": {"text": xaxis_title, "font": {"size": 11}}, "rangemode": "tozero", **(xaxis or {})},
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": list(reversed(labels)),
               "gridcolor": "rgba(0,0,0,0)", "automargin": True},
        **extra)


def _whole_numbers(peak: float) -> dict:
    return {"tick0": 0, "dtick": 1} if peak <= 6 else {}


def _recipe_colors(rows: list[dict]) -> dict[int, str]:
    order = list(dict.fromkeys(r["recipeId"] for r in rows))
    return {rid: RECIPE_COLORS[i % len(RECIPE_COLORS)] for i, rid in enumerate(order)}


def claimed_figure(snap: dict) -> dict:
    """The form values of the items handed out most, one bar each, coloured by recipe."""
    rows = snap["claimed"]
    if not rows:
        return empty_figure(f"No claims in the {snap['range']['label']}",
                            "The form values of the items instant claims hand out show up here.")
    labels = [_value_label(r, snap) for r in rows]
    colors = _recipe_colors(rows)
    data = []
    for rid, color in colors.items():
        mine = [(label, r) for label, r in zip(labels, rows) if r["recipeId"] == rid]
        data.append({"type": "bar", "orientation": "h", "name": mine[0][1]["recipe"],
                     "y": [label for label, _ in mine], "x": [r["claims"] for _, r in mine],
                     "marker": {"color": color}, "text": [percent(r["share"]) for _, r in mine],
                     "textposition": "outside", "cliponaxis": False,
                     "customdata": [percent(r["share"]) for _, r in mine],
                     "hovertemplate": "%{y}<br>%{x} claims, %{customdata} of the recipe's<extra></extra>"})
    peak = max(r["claims"] for r in rows)
    return {"data": data, "layout": _bars_layout(
        labels, xaxis_title="claims (label: share of the recipe's claims)", showlegend=len(colors) > 1,
        barmode="overlay", xaxis={**_whole_numbers(peak), "range": [0, peak * 1.15]})}   # room for the labels


def missed_figure(snap: dict) -> dict:
    """The choices missed most: attempts given no item, and attempts handed another one."""
    rows = snap["missed"]
    if not rows:
        return empty_figure(f"No missed choices in the {snap['range']['label']}",
                            "Attempts that ask for values the pool does not have show up here.")
    labels = [_value_label(r, snap) for r in rows]
    custom = [[r["asked"], percent(r["missRate"])] for r in rows]
    hover = "%{y}<br>%{x} %{meta} · missed %{customdata[1]} of %{customdata[0]} asking<extra></extra>"
    data = [{"type": "bar", "orientation": "h", "name": "no item ready", "y": labels, "x": [r["noItem"] for r in rows],
             "marker": {"color": COLORS["noItem"]}, "customdata": custom, "meta": "got no item",
             "hovertemplate": hover},
            {"type": "bar", "orientation": "h", "name": "handed another item", "y": labels,
             "x": [r["fellBack"] for r in rows], "marker": {"color": COLORS["fellBack"]}, "customdata": custom,
             "meta": "handed another item", "hovertemplate": hover}]
    return {"data": data, "layout": _bars_layout(labels, xaxis_title="attempts that missed", barmode="stack",
                                                 xaxis=_whole_numbers(max(r["missed"] for r in rows)))}


def _unit(seconds: float) -> tuple[str, float]:
    """The unit a time axis reads best in, for values up to ``seconds``."""
    if seconds < 120:
        return "seconds", 1.0
    if seconds < 2 * 3600:
        return "minutes", 60.0
    if seconds < 3 * 86400:
        return "hours", 3600.0
    return "days", 86400.0


def pool_figure(snap: dict) -> dict:
    """Per recipe, the median time an item waited from completion to claim (a bar), a whisker on
    to the p95 (a tick)."""
    rows = snap["poolTimes"]
    if not rows:
        return empty_figure(f"No claimed items in the {snap['range']['label']}",
                            "The time from an item's completion to its claim shows up here.")
    unit, scale = _unit(max(r["p95"] for r in rows))
    labels = [f"{r['recipe']} ({r['items']})" for r in rows]
    hover = "%{y}: %{meta} %{customdata}<extra></extra>"
    data = [{"type": "bar", "orientation": "h", "name": "median", "y": labels, "x": [r["p50"] / scale for r in rows],
             "marker": {"color": COLORS["p50"]}, "meta": "median", "hovertemplate": hover,
             "customdata": [duration_text(r["p50"]) for r in rows],
             "error_x": {"type": "data", "symmetric": False, "array": [(r["p95"] - r["p50"]) / scale for r in rows],
                         "arrayminus": [0] * len(rows), "color": COLORS["p95"], "thickness": 1.5, "width": 0}},
            {"type": "scatter", "mode": "markers", "name": "p95", "y": labels, "x": [r["p95"] / scale for r in rows],
             "marker": {"symbol": "line-ns", "size": 20, "line": {"width": 3, "color": COLORS["p95"]}},
             "meta": "p95", "hovertemplate": hover, "customdata": [duration_text(r["p95"]) for r in rows]}]
    return {"data": data, "layout": _bars_layout(labels, xaxis_title=f"{unit} in the pool (claimed items)")}


def waste_figure(snap: dict) -> dict:
    """Per recipe, the items that expired and those the quality gate rejected, stacked."""
    rows = snap["waste"]["recipes"]
    if not rows:
        return empty_figure(f"Nothing wasted in the {snap['range']['label']}",
                            "Pool items that expire and jobs the quality gate rejects show up here.")
    labels = [r["recipe"] for r in rows]
    data = [{"type": "bar", "orientation": "h", "name": status, "y": labels, "x": [r[status] for r in rows],
             "marker": {"color": COLORS[status]}, "meta": status, "hovertemplate": "%{y}: %{x} %{meta}<extra></extra>"}
            for status in ("expired", "rejected")]
    return {"data": data, "layout": _bars_layout(labels, xaxis_title="items", barmode="stack",
                                                 xaxis=_whole_numbers(max(r["expired"] + r["rejected"] for r in rows)))}


def _short(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


def reasons_figure(snap: dict) -> dict:
    """Why items were wasted, by recipe and reason, coloured by expired or rejected."""
    rows = snap["waste"]["reasons"]
    if not rows:
        return empty_figure(f"Nothing wasted in the {snap['range']['label']}",
                            "The quality gate's reasons, and items that were never claimed in time, show up here.")
    one = snap.get("recipeId") is not None
    labels = [_short(r["reason"]) if one else f"{r['recipe']} · {_short(r['reason'])}" for r in rows]
    data = []
    for status in ("expired", "rejected"):
        mine = [(label, r) for label, r in zip(labels, rows) if r["status"] == status]
        if mine:
            data.append({"type": "bar", "orientation": "h", "name": status, "y": [label for label, _ in mine],
                         "x": [r["items"] for _, r in mine], "marker": {"color": COLORS[status]},
                         "customdata": [r["reason"] for _, r in mine],
                         "hovertemplate": "%{customdata}: %{x} items<extra></extra>"})
    return {"data": data, "layout": _bars_layout(labels, xaxis_title="items", barmode="overlay",
                                                 xaxis=_whole_numbers(max(r["items"] for r in rows)))}


BUILDERS = {"ct-claimed": claimed_figure, "ct-missed": missed_figure, "ct-pool": pool_figure,
            "ct-waste": waste_figure, "ct-reasons": reasons_figure}


# --- tiles ------------------------------------------------------------------------------------------

def kpi_tiles(snap: dict) -> list:
    k, label = snap["kpis"], snap["range"]["label"]
    rate = k["missRate"]
    miss_tone = None if rate is None else "danger" if rate >= 0.5 else "warning" if rate >= 0.2 else "success"
    tiles = [
        kpi_tile("Claims", k["claimed"], id="ct-kpi-claims", tone="primary",
                 hint=f"of {k['attempts']} attempts that reached the pool, {label}"),
        kpi_tile("Choices missed", percent(rate), id="ct-kpi-missed", tone=miss_tone,
                 hint=(f"{k['missed']} of {k['asked']} attempts with choices" if k["asked"]
                       else "no attempts with choices")),
        kpi_tile("Time in pool", duration_text(k["poolP50"]), id="ct-kpi-pool",
                 hint=(f"median; p95 {duration_text(k['poolP95'])}, {k['pooled']} items" if k["pooled"]
                       else "no claimed items")),
        kpi_tile("Wasted", k["wasted"], id="ct-kpi-waste", tone="warning" if k["wasted"] else None,
                 hint=f"{k['expired']} expired, {k['rejected']} rejected"),
    ]
    return [dbc.Col(t, xs=6, xl=3) for t in tiles]


# --- layout and callbacks -----------------------------------------------------------------------------

def _panel(title: str, graph_id: str, subtitle: str) -> dbc.Card:
    return dbc.Card([
        dbc.CardHeader([html.Span(title, className="panel-title"), html.Span(subtitle, className="panel-subtitle ms-2")]),
        dbc.CardBody(dcc.Loading(dcc.Graph(id=graph_id, config={"displaylogo": False, "displayModeBar": False,
                                                                 "responsive": True}),
                                 type="dot", delay_show=400)),
    ], className="graph-panel h-100 shadow-sm")


def range_label(key: str) -> str:
    return key.replace("h", " h").replace("d", " d")


def layout(**_query):
    user = access.current_user()
    if user is None or user.role not in STAFF_ROLES:
        return access.no_access("The Content page is for product and ops staff.")
    rt = runtime.current()
    controls = [
        html.Span(["updated ", html.Span("—", id="ct-updated")], className="text-body-secondary small"),
        dbc.RadioItems(id="ct-range", value=content.DEFAULT_RANGE, inline=True,
                       options=[{"label": range_label(k), "value": k} for k in content.RANGES],
                       className="btn-group range-selector", inputClassName="btn-check",
                       labelClassName="btn btn-outline-primary btn-sm", labelCheckedClassName="active"),
        dcc.Dropdown(id="ct-recipe", placeholder="All recipes", clearable=True, className="recipe-filter",
                     options=[{"label": r.name, "value": r.id}
                              for r in recipe_domain.list_recipes(rt, active_only=False)]),
    ]
    top = f"top {content.TOP}"
    row = "g-3 mb-3"
    return html.Div([
        dcc.Interval(id="ct-interval", interval=REFRESH_MS),
        page_header("Content", "What users get, ask for and miss; how long items wait; what the pool throws away",
                    actions=controls),
        dbc.Row(id="ct-kpis", className="g-3 mb-4"),
        dbc.Row([dbc.Col(_panel("Claimed most", "ct-claimed", f"form values of the items handed out, {top}"), lg=6),
                 dbc.Col(_panel("Asked for and missed", "ct-missed", f"unmet demand by recipe and value, {top}"),
                         lg=6)], className=row),
        dbc.Row([dbc.Col(_panel("Time in pool", "ct-pool", "completion to claim: median (bar) to p95 (tick)"), lg=6),
                 dbc.Col(_panel("Waste by recipe", "ct-waste", "expired pool items and rejected jobs"), lg=6)],
                className=row),
        dbc.Row([dbc.Col(_panel("Waste by reason", "ct-reasons", f"by recipe and reason, {top}"), lg=12)],
                className=row),
    ], id="content-page")


@callback(Output("ct-kpis", "children"), *[Output(gid, "figure") for gid in GRAPHS], Output("ct-updated", "children"),
          Input("ct-interval", "n_intervals"), Input("ct-range", "value"), Input("ct-recipe", "value"),
          State("page-visibility", "data"))
def refresh(_n, range_key, recipe_id, visibility):
    if dash.ctx.triggered_id == "ct-interval" and visibility == "hidden":
        raise PreventUpdate
    access.require(*STAFF_ROLES)
    rt = runtime.current()
    try:
        snap = content.snapshot(rt, range_key, int(recipe_id) if recipe_id not in (None, "") else None)
    except (content.ContentError, ValueError, TypeError):
        snap = content.snapshot(rt)
    return (kpi_tiles(snap), *[BUILDERS[gid](snap) for gid in GRAPHS], local_time(snap["generatedAt"]))
