"""Asset viewer (``/generations/<id>``): one generation's media, form data, timeline and owner.

Staff see every generation (``generations.get_generation`` without a viewer filter: the shell
already admits only product and ops). While the job is still pending or processing the page
refreshes itself until the asset is there.
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from delula import auth, forms, generations, runtime
from delula import recipes as recipe_domain
from delula.clock import isoformat
from delula.generations import JobStatus
from pages import access
from pages.layout import empty_state, local_time, page_header, status_badge

REFRESH_MS = 3000
IMAGE_EXTENSIONS = (".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp")


def _title(generation_id=None, **_):
    return f"Generation #{generation_id} · Delula" if generation_id else "Generation · Delula"


dash.register_page(__name__, path_template="/generations/<generation_id>", name="Generation", title=_title)


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested directly)

def parse_id(raw) -> int | None:
    """The generation id of the URL, or ``None`` when it is not a positive whole number."""
    text = str(raw or "").strip()
    if not text.isdigit() or len(text) > 18:
        return None
    value = int(text)
    return value if value > 0 else None


def is_image(url: str | None) -> bool:
    """The simulator's posters are SVG images; anything else is treated as a video."""
    return bool(url) and url.split("?", 1)[0].lower().endswith(IMAGE_EXTENSIONS)


def media(gen):
    """The asset: ``<img>`` for an image (the simulator's poster), ``<video>`` otherwise; a
    placeholder that says why when there is nothing to show yet."""
    url = gen.asset_url
    if url and is_image(url):
        return html.Img(src=url, alt=f"generation {gen.id}", className="generation-media", id="generation-media")
    if url:
        return html.Video(src=url, controls=True, autoPlay=True, muted=True, loop=True, poster=gen.thumbnail_url,
                          className="generation-media", id="generation-media")
    reason = {
        JobStatus.PENDING: "Waiting in the queue — the asset appears here when the job completes (this page "
                           "refreshes itself).",
        JobStatus.PROCESSING: "Rendering at the provider — the asset appears here when it completes (this page "
                              "refreshes itself).",
        JobStatus.FAILED: "No asset: the job failed (see the error).",
        JobStatus.CANCELLED: "No asset: the job was cancelled.",
        JobStatus.REJECTED: "No asset: the quality gate rejected the result, which never entered the pool "
                            "(see the error).",
    }.get(gen.status, "No asset was stored for this generation.")
    return html.Div(reason, className="generation-media-empty", id="generation-media-empty")


def timeline(gen) -> list[tuple[str, str | None]]:
    """(step, ISO time or None) for created, started, completed and claimed, in that order."""
    meta = gen.meta or {}
    return [
        ("Created", isoformat(gen.created_at)),
        ("Started", isoformat(gen.started_at)),
        ("Completed", isoformat(gen.completed_at)),
        ("Claimed", meta.get("claimedAt")),
    ]


def form_rows(variables: list[dict], form_data: dict) -> list[tuple[str, str]]:
    """(label, shown value) per form value: option labels (with emoji), on/off for toggles;
    values of fields no longer in the recipe are shown under their id."""
    fields = {f["id"]: f for f in variables or []}
    rows = []
    for key, value in (form_data or {}).items():
        field = fields.get(key)
        if field is None:
            rows.append((key, _plain(value)))
            continue
        shown = _plain(value)
        if field["type"] in forms.CHOICE_TYPES:
            option = next((o for o in field.get("options", []) if o.get("value") == value), None)
            if option is not None:
                shown = f"{option.get('emoji', '')} {option.get('label', value)}".strip()
        elif field["type"] == "toggle":
            shown = "on" if value else "off"
        rows.append((str(field.get("label") or key), shown))
    return rows


def _plain(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "—" if value is None or value == "" else str(value)


# ---------------------------------------------------------------------------------------------
# Layout

def not_found(raw) -> html.Div:
    what = f"#{raw}" if parse_id(raw) is not None else f"“{str(raw)[:40]}”"
    return html.Div([
        page_header("Generation not found"),
        dbc.Card(dbc.CardBody([
            empty_state(f"There is no generation {what}.",
                        "Generation ids are whole numbers. Find jobs on the queue, or claims on the recipe cards.",
                        icon="🔍", id="generation-not-found"),
            html.Div([dcc.Link(dbc.Button("Open the queue", color="primary"), href="/queue"),
                      dcc.Link(dbc.Button("Recipe cards", color="secondary", outline=True), href="/recipes")],
                     className="d-flex justify-content-center gap-2 mt-3"),
        ]), className="shadow-sm"),
    ])


def _details(gen, recipe, owner) -> dbc.Card:
    meta = gen.meta or {}
    source = generations.source(gen)
    owner_text = (f"{owner.username} ({owner.role})" if owner is not None else gen.user_id)
    instant = bool(meta.get("isInstant"))
    items = [
        ("Recipe", recipe.name if recipe is not None else f"recipe {gen.recipe_id}"),
        ("Owner", owner_text),
        ("Source", source),
        ("Instant", "yes — claimed from the backlog" if instant else "no"),
        # An instant claim's charge is its ledger row; the column holds a normal generation's.
        None if instant else ("Credits charged", str(gen.credits_charged) + (" (refunded)" if gen.refunded else "")),
        ("Attempts", str(gen.attempts)),
        ("Provider request", html.Span(gen.provider_request_id, title=gen.provider_request_id,
                                       className="d-block text-truncate font-monospace small")
         if gen.provider_request_id else "—"),
        ("Asset", html.A("open the file ↗", href=gen.asset_url, target="_blank", title=gen.asset_url)
         if gen.asset_url else "—"),
    ]
    items = [i for i in items if i is not None]
    return dbc.Card([
        dbc.CardHeader("Details"),
        dbc.CardBody(html.Dl(sum(([html.Dt(k, className="col-sm-5 text-body-secondary fw-normal"),
                                   html.Dd(v, className="col-sm-7 mb-2")] for k, v in items), []),
                             className="row mb-0", id="generation-details")),
    ], className="shadow-sm mb-4")


def _timeline(gen) -> dbc.Card:
    steps = [html.Li([html.Div(label, className="fw-semibold"),
                      html.Div(local_time(iso, placeholder="not yet" if label != "Claimed" else "—"),
                               className="small text-body-secondary")],
                     className="" if iso else "generation-step-missing")
             for label, iso in timeline(gen)]
    return dbc.Card([dbc.CardHeader("Timeline"),
                     dbc.CardBody(html.Ul(steps, className="generation-timeline", id="generation-timeline"))],
                    className="shadow-sm mb-4")


def _form(gen, recipe) -> dbc.Card:
    rows = form_rows(recipe.variables if recipe is not None else [], gen.form_data)
    body = (dbc.Table(html.Tbody([html.Tr([html.Th(k, className="fw-normal text-body-secondary w-50"), html.Td(v)])
                                  for k, v in rows]), className="mb-0", size="sm", id="generation-form")
            if rows else html.Div("No form values: the recipe ran with its defaults.", className="text-muted"))
    return dbc.Card([dbc.CardHeader("Form data"), dbc.CardBody(body)], className="shadow-sm mb-4")


def view(rt, gen):
    """The whole page for one generation."""
    recipe = recipe_domain.get_recipe(rt, gen.recipe_id)
    owner = auth.get_user(rt, user_id=gen.user_id)
    meta = gen.meta or {}
    badges = [status_badge(gen.status, id="generation-status")]
    if meta.get("isInstant"):
        badges.append(dbc.Badge("⚡ instant", color="warning", text_color="dark", className="ms-2"))
    title = f"Generation #{gen.id}"
    subtitle = recipe.name if recipe is not None else None
    error = dbc.Alert([html.Strong("Error: "), gen.error], color="danger", id="generation-error") if gen.error else None
    return html.Div([
        page_header(title, subtitle, actions=[html.Div(badges),
                                              dcc.Link("← Queue", href="/queue", className="btn btn-sm btn-light")]),
        error,
        dbc.Row([
            dbc.Col(dbc.Card(dbc.CardBody(media(gen)), className="shadow-sm mb-4"), lg=7),
            dbc.Col([_details(gen, recipe, owner), _timeline(gen), _form(gen, recipe)], lg=5),
        ]),
    ])


def layout(generation_id=None, **_query):
    user = access.current_user()
    if user is None or not user.is_staff:
        return access.no_access()
    gid = parse_id(generation_id)
    rt = runtime.current()
    gen = generations.get_generation(rt, gid) if gid is not None else None
    if gen is None:
        return not_found(generation_id)
    return html.Div([
        html.Div(view(rt, gen), id="generation-content"),
        dcc.Store(id="generation-id", data=gid),
        dcc.Interval(id="generation-refresh", interval=REFRESH_MS, disabled=gen.status not in JobStatus.LIVE),
    ])


@callback(
    Output("generation-content", "children"),
    Output("generation-refresh", "disabled"),
    Input("generation-refresh", "n_intervals"),
    State("generation-id", "data"),
    prevent_initial_call=True,
)
def refresh(_n, generation_id):
    """Follow a live job until it ends, then stop refreshing."""
    if generation_id is None:
        raise PreventUpdate
    rt = runtime.current()
    gen = generations.get_generation(rt, generation_id)
    if gen is None:
        return not_found(generation_id), True
    return view(rt, gen), gen.status not in JobStatus.LIVE
