"""Planner (``/planner``, product and ops): replay demand against the backlog policies.

Choose the demand — the recorded history of the selected recipes (``planner.traces.recorded``)
or a built-in trace — the policies (what ``delula.policies.POLICIES`` offers), the service level,
the cap on concurrent jobs and the days simulated (warm-up, then scored). *Run* starts a Dash
background callback (``DiskcacheManager``; its cache lives under the system's temporary
directory, :data:`CACHE_DIR`) that calls ``delula.planner.run`` once for the chosen policies and
once per service level of :data:`TRADEOFF_LEVELS` for the forecast policy, reporting its progress
to the bar while the button stays disabled. The result draws:

- the pools' stock over the scored hours per policy, against the demand (attempts per hour);
- a table of hit rate, generations, work, expired items and mean stock per policy, beside the
  clairvoyant oracle's hit rate and generations;
- the trade-off of hit rate against generations across service levels;
- on a trace with choices (the built-in ``choices``), each policy's **choice hit rate** (attempts
  with choices served an item that has them all ÷ attempts with choices), with the backlog's
  joint sampler beside the per-field baseline.

Ops also get *Apply*: a policy and a service level for every recipe, or a policy for the selected
recipes (``backlog.apply_policy``, audited; the callback checks the role again with
``access.require``). The figures and rows are plain functions of the run's report, tested directly.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import uuid
from pathlib import Path

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import diskcache
import pandas as pd
import plotly.graph_objects as go
from dash import DiskcacheManager, Input, Output, State, callback, dcc, html, no_update
from dash.exceptions import PreventUpdate

from delula import backlog, config, planner, policies, runtime
from delula import recipes as recipe_domain
from delula.planner import traces
from pages import access
from pages.layout import page_header

dash.register_page(__name__, path="/planner", name="Planner", title="Planner · Delula backlog", order=8)

log = logging.getLogger("delula.dashboard.planner")

ROLES = ("product", "ops")          # who may open the page; applying a policy is for ops
RECORDED = "recorded"
TRADEOFF_POLICY = "forecast"
TRADEOFF_LEVELS = (0.9, 0.95, 0.98, 0.99)
LIMITS = {"days": (0.25, 14.0), "warmup": (0.0, 14.0), "cap": (1, 100), "level": (0.5, 0.999)}
CACHE_DIR = Path(tempfile.gettempdir()) / f"delula-planner-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
MANAGER = DiskcacheManager(diskcache.Cache(str(CACHE_DIR)), expire=3600)

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
GRID = "#eef0f3"
POLICY_COLORS = {"static": "#64748b", "reactive": "#f59e0b", "forecast": "#4f46e5"}
DEMAND_COLOR = "rgba(20, 184, 166, 0.35)"
ORACLE_COLOR = "#16a34a"


# --- what is offered ------------------------------------------------------------------------------

def source_options() -> list[dict]:
    return ([{"label": "Recorded history (selected recipes, all when none)", "value": RECORDED}]
            + [{"label": f"Built-in trace: {n}", "value": n} for n in traces.NAMES])


# --- the run (in the background job) ---------------------------------------------------------------

def _number(name: str, value, low: float, high: float, *, whole: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high or (whole and number != int(number)):
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {kind} from {low:g} to {high:g}")
    return int(number) if whole else number


def parse_options(source, chosen, service_level, cap, days, warmup, recipe_ids=None) -> dict:
    """The run's options from the form, or ``ValueError`` with a sentence for the page."""
    valid = [o["value"] for o in source_options() if not o.get("disabled")]
    if source not in valid:
        raise ValueError("Choose the demand: recorded history or a built-in trace.")
    known = list(policies.POLICIES)
    chosen = [p for p in known if p in (chosen or [])]
    if not chosen:
        raise ValueError(f"Choose at least one policy ({', '.join(known)}).")
    return {
        "source": source, "policies": chosen,
        "serviceLevel": _number("The service level", service_level, *LIMITS["level"]),
        "concurrency": _number("The cap", cap, *LIMITS["cap"], whole=True),
        "days": _number("The scored days", days, *LIMITS["days"]),
        "warmupDays": _number("The warm-up days", warmup, *LIMITS["warmup"]),
        "recipeIds": sorted({int(r) for r in recipe_ids or []}),
    }


def _job_runtime():
    """The web app's runtime, seen from the background job's process."""
    try:
        return runtime.current()
    except RuntimeError:   # outside the request's context: the app that started the job
        return dash.get_app().server.extensions["delula"]


def _trace(options: dict):
    """What ``planner.run`` replays: a built-in trace's name, or the recorded history as a trace
    (read through a runtime of the job's own, so no connection is shared with the web process)."""
    total = options["days"] + options["warmupDays"]
    if options["source"] != RECORDED:
        return options["source"]
    parent = _job_runtime()
    rt = runtime.Runtime.from_settings(parent.settings, clock=parent.clock, pool_size=1)
    try:
        return traces.recorded(rt, total, recipe_ids=options["recipeIds"] or None)
    finally:
        rt.close()


def simulate_all(options: dict, progress=lambda fraction: None) -> dict:
    """``planner.run`` for the chosen policies, then the forecast policy at every level of
    :data:`TRADEOFF_LEVELS`: the report the page draws (``run``'s document with ``tradeoff``)."""
    trace = _trace(options)
    levels = list(TRADEOFF_LEVELS) if TRADEOFF_POLICY in policies.POLICIES else []
    steps = 1 + len(levels)
    settings = _job_runtime().settings   # how backlog jobs draw their choices, as the maintenance pass
    common = dict(days=options["days"], warmup_days=options["warmupDays"], concurrency=options["concurrency"],
                  exploration=settings.exploration, choice_window_h=settings.choice_window_h)
    report = planner.run(trace, policies=options["policies"], service_level=options["serviceLevel"],
                         progress=lambda f: progress(min(1.0, f / steps)), **common)
    chosen = report["policies"].get(TRADEOFF_POLICY)
    report["tradeoff"] = planner.tradeoff(
        trace, levels, policy=TRADEOFF_POLICY, done={options["serviceLevel"]: chosen} if chosen else None,
        progress=lambda f: progress(min(1.0, (1 + f * len(levels)) / steps)), **common)
    report["options"] = options
    report["attemptsTotal"] = int(sum(a for _, a in report["demandSeries"]))   # scored
    report["trace"] = options["source"]
    for result in report["policies"].values():
        result.pop("missesByRecipe", None)   # per recipe, not drawn: keep the store small
    return report


# --- frames and figures (pure functions of a report) ----------------------------------------------

def _layout(**extra) -> dict:
    base = {"height": 320, "margin": {"l": 56, "r": 56, "t": 30, "b": 44},
            "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
            "font": {"family": FONT, "size": 12, "color": "#374151"},
            "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 11}},
            "hovermode": "x unified"}
    base.update(extra)
    return base


def empty_figure(message: str, hint: str | None = None) -> go.Figure:
    text = f"<b>{message}</b>" + (f"<br><span style='color:#6b7280'>{hint}</span>" if hint else "")
    return go.Figure(layout=_layout(
        xaxis={"visible": False}, yaxis={"visible": False}, margin={"l": 16, "r": 16, "t": 16, "b": 16},
        annotations=[{"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                      "font": {"size": 13}}]))


def pool_frame(report: dict) -> pd.DataFrame:
    """Long form: ``hour, policy, stock`` over the scored hours."""
    rows = [(float(point[0]), name, point[1]) for name, result in report.get("policies", {}).items()
            for point in result.get("series") or []]   # [hour, stock, …]
    return pd.DataFrame(rows, columns=["hour", "policy", "stock"])


def demand_frame(report: dict) -> pd.DataFrame:
    return pd.DataFrame(report.get("demandSeries") or [], columns=["hour", "attempts"], dtype=float)


def pool_figure(report: dict | None) -> go.Figure:
    """Per policy, the items in every pool at each scored hour; the attempts per hour behind."""
    if not report:
        return empty_figure("No simulation yet", "Choose the demand and the policies, then Run.")
    pools, demand = pool_frame(report), demand_frame(report)
    if pools.empty:
        return empty_figure("The simulation recorded no pool levels")
    fig = go.Figure()
    if not demand.empty:
        fig.add_bar(x=demand["hour"].tolist(), y=demand["attempts"].tolist(), name="demand (attempts / h)", yaxis="y2",
                    marker_color=DEMAND_COLOR, hovertemplate="%{y:.0f} attempts")
    for name, rows in pools.groupby("policy", sort=False):
        fig.add_scatter(x=rows["hour"].tolist(), y=rows["stock"].tolist(), mode="lines", name=name, line_shape="hv",
                        line={"width": 2, "color": POLICY_COLORS.get(name)}, hovertemplate="%{y} items")
    fig.update_layout(**_layout(
        bargap=0.1,
        xaxis={"title": {"text": "hours into the scored days"}, "gridcolor": GRID, "zeroline": False},
        yaxis={"title": {"text": "items in the pools"}, "gridcolor": GRID, "rangemode": "tozero"},
        yaxis2={"title": {"text": "attempts per hour"}, "overlaying": "y", "side": "right",
                "rangemode": "tozero", "showgrid": False}))
    return fig


def results_frame(report: dict) -> pd.DataFrame:
    oracle = report.get("oracle") or {}
    rows = [{"policy": name, "hitRate": r.get("hitRate"), "oracleHitRate": oracle.get("hitRate"),
             "generations": r.get("generations"), "oracleGenerations": oracle.get("generations"),
             "work": r.get("work"), "expired": r.get("expired"), "meanStock": r.get("meanStock"),
             "attempts": r.get("attempts")}
            for name, r in report.get("policies", {}).items()]
    return pd.DataFrame(rows, columns=["policy", "hitRate", "oracleHitRate", "generations", "oracleGenerations",
                                       "work", "expired", "meanStock", "attempts"])


def table_rows(report: dict | None) -> list[dict]:
    """The results grid's rows: one per policy, the oracle's figures beside."""
    if not report:
        return []
    frame = results_frame(report)
    frame["meanStock"] = frame["meanStock"].round(2)
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def tradeoff_frame(report: dict) -> pd.DataFrame:
    return pd.DataFrame(report.get("tradeoff") or [], columns=["serviceLevel", "hitRate", "generations"])


def tradeoff_figure(report: dict | None) -> go.Figure:
    """Hit rate against generations: the forecast policy across service levels, the other
    policies run as points, and the oracle's bound."""
    if not report:
        return empty_figure("No simulation yet", "The forecast policy runs at each service level of the trade-off.")
    frame = tradeoff_frame(report)
    if frame.empty:
        return empty_figure("No trade-off", f"The {TRADEOFF_POLICY} policy is not available to the simulator.")
    frame = frame.sort_values("serviceLevel")
    fig = go.Figure()
    fig.add_scatter(x=frame["generations"].tolist(), y=frame["hitRate"].tolist(), mode="lines+markers+text", name=TRADEOFF_POLICY,
                    text=[f"{v:g}" for v in frame["serviceLevel"]], textposition="top left",
                    line={"color": POLICY_COLORS[TRADEOFF_POLICY], "width": 2},
                    customdata=frame["serviceLevel"].tolist(),
                    hovertemplate="service level %{customdata}: hit rate %{y:.1%}, %{x} generations<extra></extra>")
    for name, r in report.get("policies", {}).items():
        if name == TRADEOFF_POLICY:
            continue
        fig.add_scatter(x=[r["generations"]], y=[r["hitRate"]], mode="markers", name=name,
                        marker={"size": 11, "color": POLICY_COLORS.get(name), "symbol": "diamond"},
                        hovertemplate=f"{name}: hit rate %{{y:.1%}}, %{{x}} generations<extra></extra>")
    oracle = report.get("oracle")
    if oracle:
        fig.add_scatter(x=[oracle["generations"]], y=[oracle["hitRate"]], mode="markers", name="oracle (bound)",
                        marker={"size": 13, "color": ORACLE_COLOR, "symbol": "star"},
                        hovertemplate="oracle: hit rate %{y:.1%}, %{x} generations<extra></extra>")
    fig.update_layout(**_layout(
        hovermode="closest",
        xaxis={"title": {"text": "generations (scored days)"}, "gridcolor": GRID, "zeroline": False},
        yaxis={"title": {"text": "instant hit rate"}, "gridcolor": GRID, "tickformat": ".1%"}))
    return fig


def choice_rows(report: dict | None) -> list[dict]:
    """``[{"policy", "attempts", "joint", "marginal"}]`` on a trace with choices, else ``[]``."""
    return [{"policy": name, "attempts": r["choiceAttempts"], "joint": r["choiceHitRate"],
             "marginal": (r.get("marginal") or {}).get("choiceHitRate")}
            for name, r in (report or {}).get("policies", {}).items() if "choiceHitRate" in r]


def choice_hit_rates(report: dict | None):
    """The choice hit rates as a sentence per policy, or nothing when the trace has no choices."""
    rows = choice_rows(report)
    if not rows:
        return None
    items = [html.Li([html.Span(row["policy"], className="fw-semibold"),
                      f": {row['joint']:.1%} with the backlog's joint draw"
                      + (f", {row['marginal']:.1%} with per-field draws" if row["marginal"] is not None else ""),
                      ], id=f"pl-choice-{row['policy']}")
             for row in rows]
    return html.Div([
        html.Div(f"Choice hit rate: of {rows[0]['attempts']:,} attempts that asked for choices, the share "
                 "served an item with all of them.", className="small fw-semibold mb-1"),
        html.Ul(items, className="small mb-0")])


def summary(report: dict | None):
    if not report:
        return "Nothing simulated yet."
    o = report.get("options") or {}
    source = "recorded history" if report.get("trace") == RECORDED else f"the {report.get('trace')} trace"
    return (f"{report.get('attemptsTotal', 0):,} attempts of {source}: {o.get('warmupDays', 0):g} warm-up "
            f"+ {o.get('days', 0):g} scored days, cap {o.get('concurrency')}, service level "
            f"{o.get('serviceLevel', 0):g}.")


def in_force_text(rt) -> list:
    force = backlog.policy_in_force(rt)
    own = backlog.recipe_policies(rt)
    where = "applied in the dashboard" if force["source"] == "database" else "from the settings"
    parts = [html.Span("In force: "), html.Span(force["policy"], className="fw-semibold", id="pl-in-force-policy"),
             html.Span(f" at service level {force['serviceLevel']:g} ({where}).")]
    if own:
        names = {r.id: r.name for r in recipe_domain.list_recipes(rt, active_only=False)}
        parts.append(html.Span(" Recipes with their own: " + ", ".join(
            f"{names.get(rid, rid)} {p}" for rid, p in sorted(own.items())) + "."))
    return parts


# --- layout ---------------------------------------------------------------------------------------

def _field(label: str, control, hint: str | None = None) -> html.Div:
    return html.Div([dbc.Label(label, className="small fw-semibold mb-1"), control,
                     html.Div(hint, className="form-text") if hint else None], className="mb-3")


COLUMNS = [
    {"field": "policy", "headerName": "Policy", "width": 120, "pinned": "left"},
    {"field": "hitRate", "headerName": "Hit rate", "valueFormatter": {"function": "d3.format('.1%')(params.value)"}},
    {"field": "oracleHitRate", "headerName": "Oracle hit rate",
     "valueFormatter": {"function": "d3.format('.1%')(params.value)"}},
    {"field": "generations", "headerName": "Generations"},
    {"field": "oracleGenerations", "headerName": "Oracle generations"},
    {"field": "work", "headerName": "Work (job runs)"},
    {"field": "expired", "headerName": "Expired"},
    {"field": "meanStock", "headerName": "Mean stock"},
]


def _graph(graph_id: str, figure) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=figure, config={"displaylogo": False, "displayModeBar": False,
                                                          "responsive": True})


def _card(title: str, subtitle: str, body, **kw) -> dbc.Card:
    return dbc.Card([dbc.CardHeader([html.Span(title, className="panel-title"),
                                     html.Span(subtitle, className="panel-subtitle ms-2")]),
                     dbc.CardBody(body)], className="graph-panel shadow-sm mb-3", **kw)


def apply_card(rt, user) -> dbc.Card:
    if not user.is_ops:
        return dbc.Alert("Applying a policy to the backlog is for ops; product staff can simulate.",
                         color="light", className="small", id="pl-apply-ops-only")
    force = backlog.policy_in_force(rt)
    options = [{"label": p, "value": p} for p in config.BACKLOG_POLICIES]
    return _card("Apply", "the policy the maintenance pass uses", [
        html.Div(in_force_text(rt), id="pl-in-force", className="small mb-3"),
        dbc.Row([
            dbc.Col(_field("Policy", dbc.Select(id="pl-apply-policy", options=options + [
                {"label": "none (a recipe's own cleared)", "value": ""}], value=force["policy"])), md=3),
            dbc.Col(_field("Service level", dbc.Input(id="pl-apply-level", type="number", min=0.5, max=0.999,
                                                     step=0.005, value=force["serviceLevel"]),
                           "every recipe; left out for recipes"), md=3),
            dbc.Col(_field("To", dbc.RadioItems(id="pl-apply-scope", value="global", options=[
                {"label": "every recipe", "value": "global"},
                {"label": "the recipes selected above", "value": "recipes"}])), md=3),
            dbc.Col(dbc.Button("Apply", id="pl-apply", color="danger", className="mt-4"), md=3),
        ], className="g-3"),
        html.Div(id="pl-apply-feedback"),
    ], id="pl-apply-card")


def layout(**_query):
    user = access.current_user()
    if user is None or user.role not in ROLES:
        return access.no_access("The planner is for product and ops staff.")
    rt = runtime.current()
    force = backlog.policy_in_force(rt)
    known = list(policies.POLICIES)
    controls = dbc.Card(dbc.CardBody([
        _field("Recipes", dcc.Dropdown(id="pl-recipes", multi=True, placeholder="All recipes",
                                       options=[{"label": r.name, "value": r.id}
                                                for r in recipe_domain.list_recipes(rt)]),
               "for recorded history and for Apply"),
        _field("Demand", dbc.Select(id="pl-source", options=source_options(), value="diurnal")),
        _field("Policies", dbc.Checklist(id="pl-policies", inline=True, value=known,
                                         options=[{"label": p, "value": p} for p in known])),
        dbc.Row([
            dbc.Col(_field("Service level", dbc.Input(id="pl-service-level", type="number", min=LIMITS["level"][0],
                                                     max=LIMITS["level"][1], step=0.005,
                                                     value=force["serviceLevel"])), xs=6),
            dbc.Col(_field("Cap (jobs at once)", dbc.Input(id="pl-cap", type="number", min=1, max=100, step=1,
                                                          value=rt.settings.max_concurrent_jobs)), xs=6),
            dbc.Col(_field("Scored days", dbc.Input(id="pl-days", type="number", min=LIMITS["days"][0],
                                                   max=LIMITS["days"][1], step=0.25, value=1)), xs=6),
            dbc.Col(_field("Warm-up days", dbc.Input(id="pl-warmup", type="number", min=0, max=LIMITS["warmup"][1],
                                                    step=0.25, value=1)), xs=6),
        ], className="g-2"),
        dbc.Button("Run", id="pl-run", color="primary", className="w-100"),
        html.Div(dbc.Progress(id="pl-progress", value=0, label="", striped=True, animated=True,
                              className="mt-3"), id="pl-progress-wrap", style={"display": "none"}),
        html.Div(id="pl-run-message", className="mt-3"),
    ]), className="shadow-sm mb-3")
    results = html.Div([
        html.P(summary(None), id="pl-summary", className="text-body-secondary small"),
        _card("Pool level", "items per policy over the scored hours, against demand",
              _graph("pl-pool", pool_figure(None))),
        _card("Results", "per policy, beside the clairvoyant oracle's bound",
              [dag.AgGrid(id="pl-table", columnDefs=COLUMNS, rowData=[], className="ag-theme-alpine",
                          defaultColDef={"sortable": True, "resizable": True, "flex": 1, "minWidth": 95},
                          dashGridOptions={"domLayout": "autoHeight"}, style={"height": None}),
               html.Div(id="pl-choices", className="mt-3")]),
        _card("Trade-off", f"hit rate against generations, {TRADEOFF_POLICY} at service levels "
                           + ", ".join(f"{v:g}" for v in TRADEOFF_LEVELS),
              _graph("pl-tradeoff", tradeoff_figure(None))),
    ])
    return html.Div([
        dcc.Store(id="pl-report"),
        dcc.Store(id="pl-nonce", data=uuid.uuid4().hex),   # one background job per page, never shared
        page_header("Planner", "Replay demand against the backlog policies and the clairvoyant bound"),
        dbc.Row([dbc.Col(controls, lg=4), dbc.Col(results, lg=8)], className="g-3"),
        apply_card(rt, user),
    ], id="planner-page")


# --- callbacks ------------------------------------------------------------------------------------

@callback(Output("pl-report", "data"), Output("pl-run-message", "children"),
          Input("pl-run", "n_clicks"),
          State("pl-source", "value"), State("pl-policies", "value"), State("pl-service-level", "value"),
          State("pl-cap", "value"), State("pl-days", "value"), State("pl-warmup", "value"),
          State("pl-recipes", "value"), State("pl-nonce", "data"),
          background=True, manager=MANAGER, prevent_initial_call=True,
          running=[(Output("pl-run", "disabled"), True, False),
                   (Output("pl-progress-wrap", "style"), {"display": "block"}, {"display": "none"})],
          progress=[Output("pl-progress", "value"), Output("pl-progress", "label")])
def run_simulation(set_progress, n_clicks, source, chosen, service_level, cap, days, warmup, recipe_ids, _nonce):
    if not n_clicks:
        raise PreventUpdate
    try:
        options = parse_options(source, chosen, service_level, cap, days, warmup, recipe_ids)
    except ValueError as e:
        return no_update, dbc.Alert(str(e), color="danger", id="pl-run-alert")
    shown = [-1]

    def progress(fraction: float) -> None:
        pct = int(fraction * 100)
        if pct != shown[0]:
            shown[0] = pct
            set_progress((pct, f"{pct} %"))

    set_progress((0, "0 %"))
    try:
        report = simulate_all(options, progress)
    except (ValueError, TypeError) as e:
        log.warning("planner run refused: %s", e)
        return no_update, dbc.Alert(f"The simulation could not run: {e}", color="danger", id="pl-run-alert")
    text = "Simulated."
    if not report["attemptsTotal"]:
        return report, dbc.Alert("No recorded attempts in that window: nothing to replay.", color="warning",
                                 id="pl-run-alert")
    return report, dbc.Alert(text, color="success", duration=4000, id="pl-run-alert")


@callback(Output("pl-pool", "figure"), Output("pl-table", "rowData"), Output("pl-tradeoff", "figure"),
          Output("pl-summary", "children"), Output("pl-choices", "children"), Input("pl-report", "data"),
          prevent_initial_call=True)
def show_report(report):
    return (pool_figure(report), table_rows(report), tradeoff_figure(report), summary(report),
            choice_hit_rates(report))


def parse_level(value) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise backlog.PolicyError("service level must be a number between 0 and 1 (exclusive), e.g. 0.98") from None


@callback(Output("pl-apply-feedback", "children"), Output("pl-in-force", "children"),
          Input("pl-apply", "n_clicks"),
          State("pl-apply-policy", "value"), State("pl-apply-level", "value"), State("pl-apply-scope", "value"),
          State("pl-recipes", "value"), prevent_initial_call=True)
def apply(n_clicks, policy, level, scope, recipe_ids):
    if not n_clicks:
        raise PreventUpdate
    user = access.require("ops")
    rt = runtime.current()
    try:
        if scope == "recipes":
            if not recipe_ids:
                raise backlog.PolicyError("select the recipes above first")
            done = backlog.apply_policy(rt, user.id, policy or None, None, [int(r) for r in recipe_ids])
            names = {r.id: r.name for r in recipe_domain.list_recipes(rt, active_only=False)}
            which = ", ".join(names.get(r, str(r)) for r in done["recipeIds"])
            text = (f"{which}: own policy {done['policy']}." if done["policy"]
                    else f"{which}: own policy cleared, the global one applies.")
        else:
            done = backlog.apply_policy(rt, user.id, policy or None, parse_level(level))
            text = f"Every recipe: policy {done['policy']} at service level {done['serviceLevel']:g}."
    except backlog.PolicyError as e:
        return dbc.Alert(f"Not applied: {e}.", color="danger", dismissable=True, id="pl-apply-alert"), no_update
    return (dbc.Alert(text + " The next maintenance pass uses it.", color="success", dismissable=True,
                      id="pl-apply-alert"), in_force_text(rt))
