"""Overview (``/``): backlog and queue health at a glance, live.

One server callback per refresh reads ``delula.overview.snapshot`` (aggregated in SQL, cached a
few seconds) and returns the tiles, the health banner, the Alerts panel, and every chart's
figure in one store; a clientside callback (``assets/delula.js``) moves the charts' time axes
into the viewer's time zone and hands the figures to the graphs. The refresh interval pauses on the Pause button and
while the browser tab is hidden (``page-visibility``, pushed by ``assets/delula.js``).

The figure builders and tile helpers below are plain functions of a snapshot, tested directly.
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, dcc, html

from delula import overview, runtime
from delula import recipes as recipe_domain
from pages.layout import chart_layout as _layout
from pages.layout import empty_figure, kpi_tile, local_time, page_header, percent

dash.register_page(__name__, path="/", name="Overview", title="Overview · Delula backlog", order=0)

REFRESH_MS = 10_000
GRAPHS = ("ov-backlog", "ov-queue", "ov-claims", "ov-instant", "ov-failures", "ov-processing", "ov-hit-rate")
COLORS = {
    "completed": "#4f46e5", "inFlight": "#c7d2fe", "below": "#dc3545", "belowInFlight": "#f5c2c7",
    "target": "#111827", "minimum": "#dc3545",
    "pending": "#f59e0b", "processing": "#4f46e5", "backlog": "#16a34a",
    "instant": "#4f46e5", "normal": "#14b8a6",
    "failedBacklog": "#dc3545", "failedUser": "#7f1d1d", "rejected": "#db2777", "failedClaims": "#f59e0b",
}
HIT_RATE_COLORS = ("#111827", "#4f46e5", "#14b8a6", "#f59e0b", "#a855f7", "#64748b")
OUTCOME_COLORS = {"claimed": "#16a34a", "no_backlog": "#f59e0b", "race": "#f97316",
                  "insufficient_credits": "#64748b", "rate_limited": "#a855f7", "invalid": "#cbd5e1"}
OUTCOME_LABELS = {"claimed": "claimed", "no_backlog": "no backlog", "race": "race lost",
                  "insufficient_credits": "insufficient credits", "rate_limited": "rate limited",
                  "invalid": "invalid"}


# --- figures (pure functions of a snapshot) ----------------------------------------------------------

def _time_layout(snap: dict, *, yaxis_title: str, peak: float | None = None, **extra) -> dict:
    """A chart over the snapshot's time range; ``peak`` (the largest count drawn) keeps a count
    axis on whole numbers."""
    rng = snap["range"]
    yaxis = {"title": {"text": yaxis_title, "font": {"size": 11}}}
    if peak is not None and peak <= 6:
        yaxis.update(tick0=0, dtick=1)
    return _layout(meta={"localTime": True}, hovermode="x unified", bargap=0.15,
                   xaxis={"type": "date", "range": [rng["since"], rng["until"]]}, yaxis=yaxis, **extra)


def _peak(*series: list) -> float:
    """The largest stacked value of bar series drawn on one axis."""
    return max((sum(v or 0 for v in values) for values in zip(*series)), default=0)


def _bucket_words(snap: dict) -> str:
    seconds = snap["range"]["bucketSeconds"]
    return f"{seconds // 60} min" if seconds < 3600 else f"{seconds // 3600} h"


def backlog_figure(snap: dict) -> dict:
    """Per recipe: ready + in-flight stacked bars, the target and the minimum as ticks; recipes
    below their minimum are drawn red and named in red."""
    rows = snap["recipes"]
    if not rows:
        return empty_figure("No active recipes", "Create one with `python -m delula recipes create`.")
    rows = list(reversed(rows))  # plotly draws the first category at the bottom
    below = [r["completed"] < r["minimum"] for r in rows]
    names = [r["name"] for r in rows]
    ticktext = [f"<span style='color:{COLORS['below']}'><b>{n}</b> ▲</span>" if b else n
                for n, b in zip(names, below)]
    hover = "%{y}: %{x} %{meta}<extra></extra>"
    data = [
        {"type": "bar", "orientation": "h", "name": "ready", "y": names, "x": [r["completed"] for r in rows],
         "marker": {"color": [COLORS["below"] if b else COLORS["completed"] for b in below]},
         "text": [r["completed"] for r in rows], "textposition": "inside", "insidetextanchor": "start",
         "textangle": 0, "textfont": {"color": "#fff", "size": 11},
         "meta": "ready", "hovertemplate": hover},
        {"type": "bar", "orientation": "h", "name": "in flight", "y": names, "x": [r["inFlight"] for r in rows],
         "marker": {"color": [COLORS["belowInFlight"] if b else COLORS["inFlight"] for b in below]},
         "meta": "in flight", "hovertemplate": hover},
        {"type": "scatter", "mode": "markers", "name": "target", "y": names, "x": [r["target"] for r in rows],
         "marker": {"symbol": "line-ns", "size": 22, "line": {"width": 3, "color": COLORS["target"]}},
         "meta": "target", "hovertemplate": hover},
        {"type": "scatter", "mode": "markers", "name": "minimum", "y": names, "x": [r["minimum"] for r in rows],
         "marker": {"symbol": "line-ns", "size": 14, "line": {"width": 2, "color": COLORS["minimum"]}},
         "meta": "minimum", "hovertemplate": hover},
    ]
    height = max(260, 60 + 34 * len(rows))
    return {"data": data, "layout": _layout(
        height=height, barmode="stack", bargap=0.35, hovermode="closest", margin={"l": 8, "t": 30},
        xaxis={"title": {"text": "generations", "font": {"size": 11}}, "rangemode": "tozero", "dtick": None},
        yaxis={"tickmode": "array", "tickvals": names, "ticktext": ticktext, "gridcolor": "rgba(0,0,0,0)"})}


def queue_figure(snap: dict) -> dict:
    q = snap["queue"]
    if all(v is None for v in q["pending"]):
        return empty_figure(f"No queue samples in the {snap['range']['label']}",
                            "The scheduler records one every 30 seconds while it runs.")
    x = snap["buckets"]
    lines = [("pending", "pending", COLORS["pending"]), ("processing", "processing", COLORS["processing"]),
             ("backlog", "backlog ready", COLORS["backlog"])]
    data = [{"type": "scatter", "mode": "lines", "name": label, "x": x, "y": q[key], "connectgaps": False,
             "line": {"color": color, "width": 2, "shape": "spline", "smoothing": 0.4},
             "hovertemplate": "%{y:.1f}"}
            for key, label, color in lines]
    return {"data": data, "layout": _time_layout(snap, yaxis_title=f"jobs (avg per {_bucket_words(snap)})")}


def claims_figure(snap: dict) -> dict:
    claims = snap["claims"]
    if not any(sum(v) for v in claims.values()):
        return empty_figure(f"No instant claims in the {snap['range']['label']}",
                            "Claims from the API, the CLI and the Recipes page show up here.")
    data = [{"type": "bar", "name": OUTCOME_LABELS.get(outcome, outcome), "x": snap["buckets"], "y": claims[outcome],
             "marker": {"color": OUTCOME_COLORS.get(outcome, "#94a3b8")}, "hovertemplate": "%{y}"}
            for outcome in OUTCOME_COLORS if outcome in claims and sum(claims[outcome])]
    return {"data": data, "layout": _time_layout(snap, yaxis_title=f"attempts per {_bucket_words(snap)}",
                                                 barmode="stack", peak=_peak(*claims.values()))}


def instant_figure(snap: dict) -> dict:
    g = snap["generations"]
    if not sum(g["instant"]) and not sum(g["normal"]):
        return empty_figure(f"No generations for users in the {snap['range']['label']}",
                            "Instant = claimed from the backlog; normal = queued and generated on demand.")
    data = [{"type": "bar", "name": "instant (claimed)", "x": snap["buckets"], "y": g["instant"],
             "marker": {"color": COLORS["instant"]}, "hovertemplate": "%{y}"},
            {"type": "bar", "name": "normal (queued)", "x": snap["buckets"], "y": g["normal"],
             "marker": {"color": COLORS["normal"]}, "hovertemplate": "%{y}"}]
    return {"data": data, "layout": _time_layout(snap, yaxis_title=f"generations per {_bucket_words(snap)}",
                                                 barmode="group", peak=max(max(g["instant"]), max(g["normal"])))}


def failures_figure(snap: dict) -> dict:
    f = snap["failures"]
    if not (sum(f["backlog"]) or sum(f["user"]) or sum(f["rejected"]) or sum(f["claims"])):
        return empty_figure(f"No failures in the {snap['range']['label']}",
                            "Failed generations, rejected backlog items and refused claims would appear here.")
    data = [{"type": "bar", "name": "failed backlog jobs", "x": snap["buckets"], "y": f["backlog"],
             "marker": {"color": COLORS["failedBacklog"]}, "hovertemplate": "%{y}"},
            {"type": "bar", "name": "failed user jobs", "x": snap["buckets"], "y": f["user"],
             "marker": {"color": COLORS["failedUser"]}, "hovertemplate": "%{y}"},
            {"type": "bar", "name": "rejected backlog items", "x": snap["buckets"], "y": f["rejected"],
             "marker": {"color": COLORS["rejected"]}, "hovertemplate": "%{y}"},
            {"type": "bar", "name": "refused claims", "x": snap["buckets"], "y": f["claims"],
             "marker": {"color": COLORS["failedClaims"]}, "hovertemplate": "%{y}"}]
    return {"data": data, "layout": _time_layout(snap, yaxis_title=f"per {_bucket_words(snap)}", barmode="stack",
                                                 peak=_peak(f["backlog"], f["user"], f["rejected"], f["claims"]))}


def _bin_label(low: float, high: float | None) -> str:
    """``0–5 s``, ``1.5–2 min``, ``≥ 8 min``."""
    if high is None:
        return f"≥ {low / 60:g} min" if low >= 60 else f"≥ {low:g} s"
    if high <= 60:
        return f"{low:g}–{high:g} s"
    return f"{low / 60:g}–{high / 60:g} min"


def _category_position(bins: list[dict], seconds: float) -> float:
    """Where ``seconds`` falls on the histogram's category axis (bin i spans i-0.5 .. i+0.5)."""
    for i, b in enumerate(bins):
        if b["to"] is None or seconds < b["to"]:
            if b["to"] is None:
                return float(i)
            return i - 0.5 + (seconds - b["from"]) / (b["to"] - b["from"])
    return float(len(bins) - 1)


def processing_figure(snap: dict) -> dict:
    p = snap["processing"]
    if not p["count"]:
        return empty_figure(f"No jobs completed in the {snap['range']['label']}",
                            "Processing time runs from a job's start at the provider to its completion.")
    bins = p["bins"]
    labels = [_bin_label(b["from"], b["to"]) for b in bins]
    data = [{"type": "bar", "name": "jobs", "x": labels, "y": [b["count"] for b in bins],
             "marker": {"color": COLORS["processing"]}, "hovertemplate": "%{x}: %{y} jobs<extra></extra>"}]
    shapes, annotations = [], []
    for key, color in (("p50", "#16a34a"), ("p95", "#dc3545")):
        if p[key] is None:
            continue
        x = _category_position(bins, p[key])
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": color, "width": 2, "dash": "dash"}})
        annotations.append({"x": x, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom", "showarrow": False,
                            "text": f"{key} {p[key]:.1f} s", "font": {"color": color, "size": 11}})
    return {"data": data, "layout": _layout(
        showlegend=False, hovermode="closest", bargap=0.08, shapes=shapes, annotations=annotations,
        xaxis={"type": "category", "tickangle": -30},
        yaxis={"title": {"text": "jobs", "font": {"size": 11}}})}


def hit_rate_figure(snap: dict) -> dict:
    """The instant hit rate per hour over the last day: all recipes and the most attempted ones
    (or the filtered recipe); an hour without attempts is a gap."""
    h = snap.get("hitRate") or {}
    series = h.get("series") or {}
    lines = [line for line in series.get("lines", []) if sum(line["attempts"])]
    if not lines:
        return empty_figure("No instant attempts in the last 24 hours",
                            "The hit rate is the share of attempts served from the pool, hits over hits and misses.")
    data = [{"type": "scatter", "mode": "lines+markers", "name": line["name"], "x": series["buckets"],
             "y": line["hitRate"], "customdata": line["attempts"], "connectgaps": False,
             "line": {"color": HIT_RATE_COLORS[i % len(HIT_RATE_COLORS)], "width": 3 if line["recipeId"] is None else 2},
             "marker": {"size": 5}, "hovertemplate": "%{y:.0%} of %{customdata} attempts"}
            for i, line in enumerate(lines)]
    return {"data": data, "layout": _layout(
        meta={"localTime": True}, hovermode="x unified",
        xaxis={"type": "date", "range": [series["since"], series["until"]]},
        yaxis={"title": {"text": "hit rate per hour", "font": {"size": 11}}, "tickformat": ".0%",
               "range": [0, 1.05], "rangemode": "normal"})}


BUILDERS = {"ov-backlog": backlog_figure, "ov-queue": queue_figure, "ov-claims": claims_figure,
            "ov-instant": instant_figure, "ov-failures": failures_figure, "ov-processing": processing_figure,
            "ov-hit-rate": hit_rate_figure}


def build_figures(snap: dict) -> dict:
    """``{"order": GRAPHS, "figures": {graph id: figure}}`` — what the clientside callback draws."""
    return {"order": list(GRAPHS), "figures": {gid: BUILDERS[gid](snap) for gid in GRAPHS}}


# --- tiles and banner ---------------------------------------------------------------------------------

def kpi_tiles(snap: dict, *, max_concurrent: int | None = None) -> list:
    k, label = snap["kpis"], snap["range"]["label"]
    below = k["recipesBelowMinimum"]
    err = k["errorRate"]
    rejected = k["rejectedInRange"]
    finished = k["completedInRange"] + k["failedInRange"] + rejected
    err_tone = None if err is None else "danger" if err >= 0.2 else "warning" if err >= 0.05 else "success"
    slots = f"{k['processing']} of {max_concurrent} slots in use" if max_concurrent else "at the provider"
    tiles = [
        kpi_tile("Backlog ready", k["backlogTotal"], hint=f"{k['inFlightTotal']} in flight", tone="primary",
                 id="kpi-backlog"),
        kpi_tile("Below minimum", below, id="kpi-below", tone="danger" if below else "success",
                 hint=f"of {k['recipesTotal']} recipes" if below else "every recipe at its minimum"),
        kpi_tile("Pending", k["pending"], hint="waiting for a slot", id="kpi-pending",
                 tone="warning" if k["pending"] else None),
        kpi_tile("Processing", k["processing"], hint=slots, id="kpi-processing"),
        kpi_tile("Claims last hour", k["claimsLastHour"], id="kpi-claims",
                 hint=f"{k['failedClaimsLastHour']} refused" if k["claimAttemptsLastHour"] else "no attempts"),
        kpi_tile("Error rate", percent(err), id="kpi-errors", tone=err_tone,
                 hint=(f"{k['failedInRange']} of {finished} jobs failed"
                       + (f", {rejected} rejected" if rejected else "") + f", {label}" if finished
                       else f"no jobs finished, {label}")),
        hit_rate_tile(snap),
    ]
    return [dbc.Col(t, xs=6, md=4, xl=True) for t in tiles]


def hit_rate_tile(snap: dict) -> dbc.Card:
    """The share of instant attempts served from the pool, last hour (and last day below)."""
    h = snap.get("hitRate") or {}
    hour, day = h.get("lastHour") or {}, h.get("lastDay") or {}
    rate = hour.get("hitRate")
    tone = None if rate is None else "success" if rate >= 0.95 else "warning" if rate >= 0.8 else "danger"
    first = (f"{hour['hits']} of {hour['attempts']} last hour" if hour.get("attempts") else "no attempts last hour")
    second = (f"last day {percent(day['hitRate'])} of {day['attempts']}" if day.get("attempts")
              else "none last day")
    return kpi_tile("Instant hit rate", percent(rate), id="kpi-hit-rate", tone=tone, hint=f"{first} · {second}")


def health_banner(snap: dict):
    health = snap["health"]
    leader = snap["leader"]
    if health["ok"]:
        where = f"{leader['host']} (pid {leader['pid']})" if leader else "—"
        return dbc.Alert([html.Span("✓", className="health-icon"),
                          html.Div(["All recipes are at or above their minimum. Scheduler leader: ",
                                    html.Span(where, className="fw-semibold"), ", since ",
                                    local_time(leader["since"]) if leader else "—", "."])],
                         color="success", className="health-banner py-2 mb-4", id="health-banner")
    no_leader = [p for p in health["problems"] if p["kind"] == "no_leader"]
    tripped = [p for p in health["problems"] if p["kind"] == "breaker_open"]
    below = [p for p in health["problems"] if p["kind"] == "below_minimum"]
    parts = []
    if no_leader:
        parts.append(html.Div(no_leader[0]["message"], className="fw-semibold", id="health-no-leader"))
    if tripped:
        probe = tripped[0]["nextProbeAt"]
        parts.append(html.Div([html.Span(tripped[0]["message"], className="fw-semibold"),
                               html.Span([" Next probe: ", local_time(probe, relative=True), "."]) if probe else None],
                              id="health-breaker"))
    if below:
        parts.append(html.Div([
            html.Span(f"{len(below)} recipe{'s' if len(below) != 1 else ''} below minimum",
                      className="fw-semibold"),
            html.Ul([html.Li(p["message"]) for p in below]),
        ], id="health-below-minimum"))
    return dbc.Alert([html.Span("!", className="health-icon fw-bold"), html.Div(parts)],
                     color="danger" if no_leader or tripped else "warning", className="health-banner mb-4",
                     id="health-banner")


def alerts_panel(snap: dict) -> dbc.Card:
    """The alerts firing now (since when, what), then those resolved in the last day; a quiet
    "No alerts" when there are none."""
    a = snap.get("alerts") or {}
    firing, resolved = a.get("firing", []), a.get("resolved", [])
    header = dbc.CardHeader([html.Span("Alerts", className="panel-title"),
                             html.Span("firing now, and resolved in the last 24 h", className="panel-subtitle ms-2")])
    if not firing and not resolved:
        body = html.Div("No alerts", className="text-body-secondary small", id="alerts-none")
        return dbc.Card([header, dbc.CardBody(body, className="py-2")], className="shadow-sm mb-4", id="alerts-panel")
    items = [html.Li([dbc.Badge("firing", color="danger", className="me-2"),
                      html.Span(x["title"], className="fw-semibold"), " since ", local_time(x["startsAt"]),
                      html.Div(x["summary"], className="small")],
                     className="alert-item alert-firing mb-2", **{"data-key": x["key"]})
             for x in firing]
    items += [html.Li([dbc.Badge("resolved", color="success", className="me-2"),
                       html.Span(x["title"], className="fw-semibold"), " resolved ", local_time(x["endsAt"]),
                       html.Div(x["summary"], className="small text-body-secondary")],
                      className="alert-item alert-resolved mb-2", **{"data-key": x["key"]})
              for x in resolved]
    return dbc.Card([header, dbc.CardBody(html.Ul(items, className="list-unstyled mb-0"), className="py-2")],
                    className="shadow-sm mb-4" + (" border-danger" if firing else ""), id="alerts-panel")


# --- layout and callbacks -----------------------------------------------------------------------------

def _panel(title: str, graph_id: str, subtitle: str) -> dbc.Card:
    return dbc.Card([
        dbc.CardHeader([html.Span(title, className="panel-title"), html.Span(subtitle, className="panel-subtitle ms-2")]),
        dbc.CardBody(dcc.Loading(dcc.Graph(id=graph_id, config={"displaylogo": False, "displayModeBar": False,
                                                                 "responsive": True}),
                                 type="dot", delay_show=400)),
    ], className="graph-panel h-100 shadow-sm")


def recipe_options(rt) -> list[dict]:
    return [{"label": r.name, "value": r.id} for r in recipe_domain.list_recipes(rt)]


def layout(**_query):
    rt = runtime.current()
    controls = [
        html.Span("Live", id="ov-live", className="live-indicator live-live"),
        html.Span(["updated ", html.Span("—", id="ov-updated")], className="text-body-secondary small"),
        dbc.Button("Pause", id="ov-pause", color="secondary", outline=True, size="sm"),
        dbc.RadioItems(id="ov-range", value=overview.DEFAULT_RANGE, inline=True,
                       options=[{"label": k.replace("h", " h").replace("d", " d"), "value": k}
                                for k in overview.RANGES],
                       className="btn-group range-selector", inputClassName="btn-check",
                       labelClassName="btn btn-outline-primary btn-sm",
                       labelCheckedClassName="active"),
        dcc.Dropdown(id="ov-recipe", options=recipe_options(rt), placeholder="All recipes", clearable=True,
                     className="recipe-filter"),
    ]
    row = "g-3 mb-3"
    return html.Div([
        dcc.Interval(id="ov-interval", interval=REFRESH_MS),
        dcc.Store(id="ov-paused", data=False),
        dcc.Store(id="ov-figures"),
        page_header("Overview", "Backlog levels, queue and claims — refreshed live", actions=controls),
        html.Div(id="ov-health"),
        html.Div(id="ov-alerts"),
        dbc.Row(id="ov-kpis", className="g-3 mb-4"),
        dbc.Row([dbc.Col(_panel("Backlog per recipe", "ov-backlog", "ready + in flight vs target"), lg=6),
                 dbc.Col(_panel("Queue length", "ov-queue", "sampled every 30 s, all recipes"), lg=6)],
                className=row),
        dbc.Row([dbc.Col(_panel("Instant claims", "ov-claims", "attempts by outcome"), lg=6),
                 dbc.Col(_panel("Instant vs normal", "ov-instant", "generations delivered to users"), lg=6)],
                className=row),
        dbc.Row([dbc.Col(_panel("Failures", "ov-failures", "failed and rejected jobs, refused claims"), lg=6),
                 dbc.Col(_panel("Processing time", "ov-processing", "completed jobs, p50 / p95"), lg=6)],
                className=row),
        dbc.Row([dbc.Col(_panel("Instant hit rate", "ov-hit-rate",
                                "per hour over the last 24 h: all recipes and the most attempted"), lg=12)],
                className=row),
    ], id="overview-page")


@callback(Output("ov-kpis", "children"), Output("ov-health", "children"), Output("ov-figures", "data"),
          Output("ov-updated", "children"), Output("ov-alerts", "children"),
          Input("ov-interval", "n_intervals"), Input("ov-range", "value"), Input("ov-recipe", "value"))
def refresh(_n, range_key, recipe_id):
    rt = runtime.current()
    try:
        snap = overview.snapshot(rt, range_key, int(recipe_id) if recipe_id not in (None, "") else None)
    except (overview.OverviewError, ValueError, TypeError):
        snap = overview.snapshot(rt)
    return (kpi_tiles(snap, max_concurrent=rt.settings.max_concurrent_jobs), health_banner(snap),
            build_figures(snap), local_time(snap["generatedAt"]), alerts_panel(snap))


clientside_callback(ClientsideFunction("delula", "renderFigures"),
                    [Output(gid, "figure") for gid in GRAPHS], Input("ov-figures", "data"))

clientside_callback(
    "function (n, paused) { return n ? !paused : Boolean(paused); }",
    Output("ov-paused", "data"), Input("ov-pause", "n_clicks"), State("ov-paused", "data"),
    prevent_initial_call=True)

clientside_callback(ClientsideFunction("delula", "liveState"),
                    Output("ov-interval", "disabled"), Output("ov-live", "children"),
                    Output("ov-live", "className"), Output("ov-pause", "children"),
                    Input("page-visibility", "data"), Input("ov-paused", "data"), State("ov-interval", "interval"))
