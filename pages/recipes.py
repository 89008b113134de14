"""Recipe cards (``/recipes``): product staff try instant claims and normal generations.

A card per active recipe with its cost and how many finished videos wait in the backlog. Staff
act as a test account (the API's ``targetUserId``), and only as one: the acting-as list offers
test accounts (``auth.test_users``) and every callback that spends or grants checks the target
again (``auth.acting_target`` / ``auth.top_up``), so a hand-made request for a real customer is
refused. The claim or generation charges the test account; the ledger names the signed-in staff
member as who asked, and the audit trail records it. Instant claims go through ``claims.instant_claim`` and
normal generations through ``generations.create_user_generation`` — the same functions the API
calls — so the page shows exactly what the API would answer.

The InstantMakeModal's progress bar and the 10 s button lock run in the browser
(``assets/recipes.js``); the pure helpers below shape what the callbacks send and are tested
directly.
"""
from __future__ import annotations

import time

import dash
import dash_bootstrap_components as dbc
from dash import ALL, ClientsideFunction, Input, Output, State, callback, clientside_callback, ctx, dcc, html
from dash.exceptions import PreventUpdate

from delula import auth, claims, forms, generations, runtime
from delula import recipes as recipe_domain
from pages import access
from pages.layout import empty_state, page_header, page_of

dash.register_page(__name__, path="/recipes", name="Recipes", title="Recipes · Delula", order=1)

INSTANT_LOCK_S = 10   # the Instant buttons stay disabled this long after a click (SPEC §8)
TOP_UP_CREDITS = 10   # per click; DELULA_TOPUP_MAX bounds any one top-up
REFRESH_MS = 5000     # badges and credits follow claims made elsewhere (API, other tabs)
CARDS_PER_PAGE = 24   # 200 cards in one layout were 400 KB to open; pages via ?page=N
ACTING_AS_SHOWN = 50  # test users offered at once: the first by name, or those matching the search
READY_SHOWN = 20      # the Generate form counts ready items with its choices up to this many
IMAGE_EXTENSIONS = (".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp")


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested directly)

def availability(count: int) -> tuple[str, str]:
    """Badge text and colour for ``count`` ready videos: ("3 ready", "success") / ("none ready", …)."""
    return (f"{count} ready", "success") if count > 0 else ("none ready", "secondary")


def user_options(users) -> list[dict]:
    """``acting as`` choices: test users with their credits."""
    return [{"label": f"{u.username} · {credits(u.credits)}", "value": u.id} for u in users]


def credits_text(users, user_id: str | None) -> str:
    user = next((u for u in users if u.id == user_id), None)
    return "—" if user is None else credits(user.credits)


def is_image(url: str | None) -> bool:
    """The simulator's posters are SVG images; anything else is treated as a video."""
    return bool(url) and url.split("?", 1)[0].lower().endswith(IMAGE_EXTENSIONS)


def preview(url: str | None, *, alt: str = "generation preview", class_name: str = "recipes-preview"):
    """The asset as ``<img>`` (simulator poster) or ``<video>`` (a real model's output)."""
    if not url:
        return html.Div("No asset stored for this generation.", className="text-muted small")
    if is_image(url):
        return html.Img(src=url, alt=alt, className=class_name)
    return html.Video(src=url, controls=True, autoPlay=True, muted=True, loop=True, className=class_name)


def claim_view(result: claims.ClaimResult) -> dict:
    """What the page does with one instant claim's result, by its outcome.

    ``kind`` is ``success`` (InstantMakeModal shows progress, then the preview), ``fallback``
    (nothing to hand out: open the Generate modal instead) or ``error`` (the InstantMakeModal
    shows the reason at once).
    """
    outcome = result.outcome
    if outcome is claims.Outcome.CLAIMED:
        gen = result.generation
        return {"kind": "success", "generationId": gen["id"], "assetUrl": gen.get("assetUrl"),
                "creditsCharged": result.credits_charged, "creditsRemaining": result.credits_remaining}
    if outcome in (claims.Outcome.NO_BACKLOG, claims.Outcome.RACE):
        reason = ("Someone else just took the last ready video."
                  if outcome is claims.Outcome.RACE else "No finished video is waiting in the backlog for this recipe.")
        return {"kind": "fallback", "message": f"{reason} Queue a new one instead — it takes a few minutes."}
    if outcome is claims.Outcome.INSUFFICIENT_CREDITS:
        return {"kind": "error", "color": "warning", "title": "Not enough credits",
                "message": f"Needs {result.required} credits, has {result.available}. "
                           f"Top the user up and try again."}
    if outcome is claims.Outcome.RATE_LIMITED:
        return {"kind": "error", "color": "info", "title": "Cooling down",
                "message": f"Wait {result.retry_after} s before the next instant generation for this user."}
    return {"kind": "error", "color": "danger", "title": "Claim refused", "message": result.body["message"]}


def _option_label(option: dict) -> str:
    label = str(option.get("label", option["value"]))
    return f"{option['emoji']} {label}" if option.get("emoji") else label


def _default_index(field: dict) -> str | None:
    values = forms.option_values(field)
    default = field.get("defaultValue")
    for i, v in enumerate(values):
        if v == default and type(v) is type(default):
            return str(i)
    return None


def field_control(field: dict):
    """The input for one recipe variable, id ``{"type": "gen-field", "field": <id>}``.

    Choice fields carry the option's index as their value (a browser ``<select>`` only holds
    strings; :func:`form_values` maps it back to the schema's value, whatever its type).
    """
    fid = {"type": "gen-field", "field": field["id"]}
    ftype = field["type"]
    if ftype in forms.CHOICE_TYPES:
        options = [{"label": _option_label(o), "value": str(i)} for i, o in enumerate(field["options"])]
        value = _default_index(field)
        if ftype == "dropdown":
            if value is None:
                options = [{"label": "Choose…", "value": "", "disabled": True}] + options
            return dbc.Select(id=fid, options=options, value=value or "")
        if ftype == "radio":
            return dbc.RadioItems(id=fid, options=options, value=value, inline=True)
        return dbc.RadioItems(id=fid, options=options, value=value, className="delula-btn-radio recipes-emoji",
                              inputClassName="btn-check", labelClassName="btn btn-outline-primary",
                              labelCheckedClassName="active")
    if ftype == "slider":
        lo, hi, step = field["min"], field["max"], field.get("step", 1)
        value = field.get("defaultValue")
        return dcc.Slider(id=fid, min=lo, max=hi, step=step, value=lo if value is None else value,
                          marks={lo: str(lo), hi: str(hi)}, tooltip={"placement": "bottom", "always_visible": True})
    if ftype == "text":
        examples = [e for e in field.get("examples") or [] if isinstance(e, str)]
        return dbc.Input(id=fid, type="text", maxLength=field.get("maxLength", forms.MAX_TEXT),
                         value=field.get("defaultValue") or "",
                         placeholder=f"e.g. {examples[0]}" if examples else "")
    if ftype == "toggle":
        return dbc.Switch(id=fid, value=bool(field.get("defaultValue")), label=_label(field))
    raise ValueError(f"unknown field type {ftype!r}")


def _label(field: dict) -> str:
    return str(field.get("label") or field["id"])


def credits(n: int) -> str:
    return f"{n} credit" if n == 1 else f"{n} credits"


def form_fields(variables: list[dict]) -> list:
    """The Generate modal's form: label, input and a per-field error slot for each variable
    (a toggle is its own label)."""
    rows = []
    for field in variables:
        hint = None
        if field["type"] == "text" and field.get("examples"):
            hint = html.Div("Try: " + ", ".join(str(e) for e in field["examples"][:4]), className="form-text")
        rows.append(html.Div([
            None if field["type"] == "toggle" else dbc.Label(
                [_label(field), html.Span(" *", className="text-danger") if field.get("required") else None],
                className="fw-semibold"),
            field_control(field),
            hint,
            html.Div(id={"type": "gen-feedback", "field": field["id"]}, className="invalid-feedback d-block"),
        ], className="mb-3"))
    if not rows:
        rows.append(html.P("This recipe has no options: it runs as it is.", className="text-muted"))
    return rows


def form_values(variables: list[dict], raw: dict) -> dict:
    """Form data for ``create_user_generation`` from the inputs' raw values (field id → value).

    Empty inputs are left out, so defaults apply and required fields are reported as missing;
    anything unexpected is passed through for the domain's validation to name.
    """
    out = {}
    for field in variables:
        fid = field["id"]
        value = raw.get(fid)
        if value is None or value == "":
            continue
        ftype = field["type"]
        if ftype in forms.CHOICE_TYPES:
            try:
                value = field["options"][int(value)]["value"]
            except (ValueError, IndexError, TypeError):
                pass
        elif ftype == "slider" and isinstance(value, float) and value.is_integer() and all(
                isinstance(field.get(k, 1), int) for k in ("min", "step")):
            value = int(value)
        elif ftype == "toggle":
            value = bool(value)
        out[fid] = value
    return out


def chosen(variables: list[dict], raw: dict) -> dict:
    """The choices the Generate form holds, as an instant claim asks for them: its values
    (:func:`form_values`, defaults for what is left empty) of every field but free text, which no
    backlog item was made with; a value the recipe would refuse is left out."""
    defaults = {f["id"]: f["defaultValue"] for f in variables if f.get("defaultValue") is not None}
    picked = forms.countable(variables, defaults | form_values(variables, raw))
    return {k: v for k, v in picked.items() if _valid_choice(variables, k, v)}


def _valid_choice(variables: list[dict], field: str, value) -> bool:
    try:
        forms.validate_choices(variables, {field: value})
    except forms.FormError:
        return False
    return True


def ready_text(n: int) -> str:
    """The Generate form's offer when items with its choices wait in the pool."""
    more = "+" if n >= READY_SHOWN else ""
    return f"{n}{more} ready with these choices —"


def submit_view(status: int, body: dict, username: str) -> dict:
    """What the Generate modal shows after ``create_user_generation`` answered."""
    if status == 202:
        gen = body["generation"]
        return {"kind": "queued", "generationId": gen["id"],
                "message": f"Queued generation #{gen['id']} for {username}: {body['creditsCharged']} credits "
                           f"charged, {body['creditsRemaining']} left."}
    if status == 400 and "required" in body:
        return {"kind": "error", "message": f"Not enough credits: needs {body['required']} credits, "
                                            f"has {body['available']}.", "errors": {}}
    errors = body.get("errors") or {}
    message = body.get("message") or f"Refused (HTTP {status})."
    if errors:
        message += " — see the fields marked in red."
    return {"kind": "error", "message": message, "errors": errors}


# ---------------------------------------------------------------------------------------------
# Layout

def recipe_card(recipe: dict):
    rid = recipe["id"]
    text, color = availability(recipe["instantAvailable"])
    fields = ", ".join(str(v.get("label") or v["id"]) for v in recipe["variables"]) or "no options"
    return dbc.Card([
        dbc.CardBody([
            html.Div([
                html.H5(recipe["name"], className="card-title mb-0"),
                dbc.Badge(credits(recipe["creditCost"]), color="light", text_color="dark",
                          className="border recipes-cost"),
            ], className="d-flex justify-content-between align-items-start gap-2 mb-2"),
            html.P(recipe.get("description") or "", className="text-muted small mb-2"),
            html.Div([html.Span("Options: ", className="fw-semibold"), fields], className="small text-muted"),
        ]),
        dbc.CardFooter(html.Div([
            dbc.Button("⚡ Instant", id={"type": "instant-btn", "recipe": rid}, color="primary",
                       className="recipes-instant", n_clicks=0),
            dbc.Button("Generate…", id={"type": "generate-btn", "recipe": rid}, color="secondary",
                       outline=True, n_clicks=0, className="recipes-generate-open"),
            dbc.Badge(text, id={"type": "avail-badge", "recipe": rid}, color=color, pill=True,
                      className="recipes-availability ms-auto"),
        ], className="d-flex align-items-center gap-2"), className="bg-transparent"),
    ], className="h-100 shadow-sm recipes-card", id=f"recipe-card-{rid}")


def card_page(active: list, page) -> tuple[list, int, int]:
    """A page of :data:`CARDS_PER_PAGE` cards (``layout.page_of``)."""
    return page_of(active, page, CARDS_PER_PAGE)


def card_pager(page: int, pages: int, total: int):
    """Links to every page of cards (``/recipes?page=N``); nothing when one page holds them all."""
    if pages <= 1:
        return None
    first = (page - 1) * CARDS_PER_PAGE + 1
    links = [dcc.Link(str(n), href=f"/recipes?page={n}", id={"type": "recipes-page", "page": n},
                      className="btn btn-sm " + ("btn-primary" if n == page else "btn-outline-secondary"))
             for n in range(1, pages + 1)]
    return html.Div([html.Span(f"Recipes {first}-{min(total, first + CARDS_PER_PAGE - 1)} of {total}",
                               className="text-body-secondary small me-2"), *links],
                    className="d-flex flex-wrap align-items-center gap-1 mt-4", id="recipes-pages")


def _acting_as(users, signed_in) -> list:
    """The "acting as" bar; always rendered (its ids feed the callbacks), disabled without users.
    The selector searches the test users by name on the server (there may be thousands)."""
    first = users[0].id if users else None
    notice = [] if users else [dbc.Alert([
        html.Strong("No test users yet. "),
        "Instant and Generate act for a test account (role user, created with --test). Create one with ",
        html.Code("python -m delula users create maya --test --credits 40"), " or run ",
        html.Code("python -m delula demo seed"), ".",
    ], color="warning", className="mb-3")]
    bar = dbc.Card(dbc.CardBody(dbc.Row([
        dbc.Col([
            dbc.Label("Acting as", html_for="recipes-acting-as", className="fw-semibold mb-1"),
            dcc.Dropdown(id="recipes-acting-as", options=user_options(users), value=first, disabled=not users,
                         clearable=False, placeholder="Search test users by name",
                         persistence=True, persistence_type="session"),
        ], md=5),
        dbc.Col([
            html.Div("Balance", className="fw-semibold mb-1"),
            html.Div(credits_text(users, first), id="recipes-credits", className="fs-5 recipes-credits"),
        ], md=3),
        dbc.Col([
            dbc.Button(f"Top up +{TOP_UP_CREDITS}", id="recipes-topup", color="success", outline=True, n_clicks=0,
                       disabled=not users),
            html.Div(f"Claims are charged to this test user and recorded as asked by "
                     f"{getattr(signed_in, 'username', 'you')}.", className="form-text"),
        ], md=4, className="text-md-end"),
    ], className="align-items-end g-3")), className="mb-4 shadow-sm")
    return notice + [bar]


def _instant_modal():
    return dbc.Modal([
        dbc.ModalHeader(dbc.ModalTitle("Instant generation", id="recipes-instant-title")),
        dbc.ModalBody([
            html.Div([
                html.Div("Finding a finished video in the backlog…", className="mb-2 text-muted",
                         id="recipes-instant-stage"),
                dbc.Progress(id="recipes-instant-progress", value=0, striped=True, animated=True,
                             className="recipes-progress"),
            ], id="recipes-instant-progress-box"),
            html.Div(id="recipes-instant-result", style={"display": "none"}),
        ]),
        dbc.ModalFooter(dbc.Button("Close", id="recipes-instant-close", color="secondary", n_clicks=0)),
    ], id="recipes-instant-modal", is_open=False, size="lg", centered=True, backdrop="static")


def _generate_modal():
    return dbc.Modal([
        dbc.ModalHeader(dbc.ModalTitle("Generate", id="recipes-generate-title")),
        dbc.ModalBody([
            html.Div(id="recipes-generate-intro"),
            html.Div(id="recipes-generate-form"),
            dbc.Alert([html.Span(id="recipes-ready-text"),
                       dbc.Button("⚡ get one now", id="recipes-ready-claim", color="success", size="sm",
                                  className="ms-2", n_clicks=0)],
                      id="recipes-ready", color="success", className="d-flex align-items-center", is_open=False),
            html.Div(id="recipes-generate-result"),
        ]),
        dbc.ModalFooter([
            dbc.Button("Close", id="recipes-generate-close", color="secondary", outline=True, n_clicks=0),
            dbc.Button("Queue generation", id="recipes-generate-submit", color="primary", n_clicks=0),
        ]),
    ], id="recipes-generate-modal", is_open=False, size="lg", centered=True)


def layout(**_query):
    user = access.current_user()
    if user is None or not user.is_staff:
        return access.no_access()
    rt = runtime.current()
    active = recipe_domain.list_with_availability(rt)
    users = auth.test_users(rt, limit=ACTING_AS_SHOWN)
    if active:
        shown, page, pages = card_page(active, _query.get("page"))
        cards = html.Div([dbc.Row([dbc.Col(recipe_card(r), xs=12, md=6, xl=4) for r in shown], className="g-4"),
                          card_pager(page, pages, len(active))])
    else:
        cards = empty_state("No active recipes",
                            "Create one with: python -m delula recipes create --name … --credit-cost 2",
                            icon="🎬", id="recipes-empty")
    return html.Div([
        page_header("Recipe cards", "Claim a finished video instantly from the backlog, or queue a new one "
                                    "— exactly what a user gets through the API."),
        *_acting_as(users, user),
        cards,
        _instant_modal(),
        _generate_modal(),
        dbc.Toast(id="recipes-toast", is_open=False, dismissable=True, duration=5000, icon="success",
                  header="Credits", className="recipes-toast"),
        dcc.Store(id="recipes-claim"),           # the last claim's view (drives the progress animation)
        dcc.Store(id="recipes-clicked-at"),      # ms timestamp of the last Instant click (button lock)
        dcc.Store(id="recipes-generate-recipe"),  # recipe id of the open Generate modal
        dcc.Store(id="recipes-changed"),          # bumped after a top up or a queued generation
        dcc.Interval(id="recipes-tick", interval=500, disabled=True),
        dcc.Interval(id="recipes-anim", interval=180, disabled=True),
        dcc.Interval(id="recipes-refresh", interval=REFRESH_MS),
        html.Div(str(INSTANT_LOCK_S), id="recipes-lock-seconds", hidden=True),
    ], className="recipes-page")


# ---------------------------------------------------------------------------------------------
# Callbacks

def _recipe(rt, recipe_id: int) -> dict | None:
    return next((r for r in recipe_domain.list_with_availability(rt) if r["id"] == recipe_id), None)


def _username(rt, user_id: str | None) -> str:
    user = auth.get_user(rt, user_id=user_id) if user_id else None
    return user.username if user is not None else "?"


@callback(
    Output({"type": "avail-badge", "recipe": ALL}, "children"),
    Output({"type": "avail-badge", "recipe": ALL}, "color"),
    Output("recipes-acting-as", "options"),
    Output("recipes-credits", "children"),
    Input("recipes-refresh", "n_intervals"),
    Input("recipes-acting-as", "value"),
    Input("recipes-acting-as", "search_value"),
    Input("recipes-claim", "data"),
    Input("recipes-changed", "data"),
    State({"type": "avail-badge", "recipe": ALL}, "id"),
)
def refresh(_n, acting_as, search, _claim, _changed, badge_ids):
    """Badges and balances after a claim, a top up, or anything done elsewhere meanwhile; the
    acting-as choices for what was typed in the selector. Also runs when the page opens: a test
    user chosen earlier in the session (kept by the selector) may be past the first choices."""
    access.require(*auth.STAFF_ROLES)
    rt = runtime.current()
    counts = {r["id"]: r["instantAvailable"] for r in recipe_domain.list_with_availability(rt)}
    shown = [availability(counts.get(i["recipe"], 0)) for i in badge_ids]
    users = auth.test_users(rt, search=search, keep=acting_as, limit=ACTING_AS_SHOWN)
    return [t for t, _ in shown], [c for _, c in shown], user_options(users), credits_text(users, acting_as)


# What clicking a card's button may change, in the order of open_recipe's outputs.
OPEN_OUTPUTS = (
    ("instant_open", "recipes-instant-modal", "is_open"),
    ("instant_title", "recipes-instant-title", "children"),
    ("instant_result", "recipes-instant-result", "children"),
    ("claim", "recipes-claim", "data"),
    ("generate_open", "recipes-generate-modal", "is_open"),
    ("generate_title", "recipes-generate-title", "children"),
    ("generate_intro", "recipes-generate-intro", "children"),
    ("generate_form", "recipes-generate-form", "children"),
    ("generate_result", "recipes-generate-result", "children"),
    ("submit_disabled", "recipes-generate-submit", "disabled"),
    ("generate_recipe", "recipes-generate-recipe", "data"),
)


@callback(
    *[Output(cid, prop) for _, cid, prop in OPEN_OUTPUTS],
    Input({"type": "instant-btn", "recipe": ALL}, "n_clicks"),
    Input({"type": "generate-btn", "recipe": ALL}, "n_clicks"),
    State("recipes-acting-as", "value"),
    prevent_initial_call=True,
)
def open_recipe(_instant, _generate, acting_as):
    """A card's Instant or Generate button was clicked (see :func:`respond`)."""
    trigger = ctx.triggered_id
    if not trigger or not any(t["value"] for t in ctx.triggered):
        raise PreventUpdate  # buttons re-rendered, not clicked
    kind = "instant" if trigger["type"] == "instant-btn" else "generate"
    changes = respond(kind, trigger["recipe"], acting_as)
    return [changes.get(name, dash.no_update) for name, _, _ in OPEN_OUTPUTS]


def respond(kind: str, recipe_id: int, acting_as: str | None) -> dict:
    """Instant: claim for the acting user, then show the InstantMakeModal (progress, then the
    result) — or, when nothing is ready to hand out, the Generate modal instead.
    Generate: open the recipe's form straight away. Returns the changed outputs by name
    (:data:`OPEN_OUTPUTS`)."""
    staff = access.require(*auth.STAFF_ROLES)
    rt = runtime.current()
    recipe = _recipe(rt, recipe_id)
    if kind == "generate":
        return _show_generate(recipe, acting_as, rt)
    refusal = _refusal(rt, staff, acting_as) if acting_as else None
    if not acting_as:
        view = {"kind": "error", "color": "warning", "title": "No test user",
                "message": "Choose who to act as first (create a test user if the list is empty)."}
    elif refusal is not None:
        claims.refused(rt, recipe_id=recipe_id, user_id=acting_as, actor_id=staff.id)
        view = {"kind": "error", "color": "danger", "title": "Claim refused", "message": refusal}
    else:
        view = claim_view(claims.instant_claim(rt, recipe_id=recipe_id, user_id=acting_as, actor_id=staff.id))
    view.update(recipeId=recipe_id, at=time.time())
    if view["kind"] == "fallback":
        return {**_show_generate(recipe, acting_as, rt, intro=view["message"]), "claim": view}
    name = recipe["name"] if recipe else f"recipe {recipe_id}"
    return {"instant_open": True, "instant_title": f"Instant · {name}", "instant_result": instant_result(view),
            "claim": view}


def _refusal(rt, staff, acting_as: str) -> str | None:
    """Why ``staff`` may not act as ``acting_as`` from the dashboard, or ``None``."""
    try:
        auth.acting_target(rt, staff, acting_as)
    except auth.AuthError as e:
        return str(e)
    return None


def instant_result(view: dict):
    """The InstantMakeModal's final state (revealed by the progress animation on success)."""
    if view["kind"] != "success":
        return dbc.Alert([html.H5(view["title"], className="alert-heading"), html.P(view["message"], className="mb-0")],
                         color=view["color"], className="recipes-claim-error mb-0")
    gid = view["generationId"]
    return html.Div([
        dbc.Alert([html.Strong("Ready! "), f"Generation #{gid} is yours: {view['creditsCharged']} credits charged, "
                                           f"{view['creditsRemaining']} left."], color="success",
                  className="recipes-claim-success"),
        html.Div(preview(view.get("assetUrl")), className="text-center mb-3"),
        dcc.Link(dbc.Button("Open in the asset viewer →", color="primary"), href=f"/generations/{gid}",
                 id="recipes-instant-link"),
    ])


def _show_generate(recipe: dict | None, acting_as: str | None, rt, *, intro: str | None = None) -> dict:
    if recipe is None:
        return {"instant_open": False, "generate_open": True, "generate_title": "Generate", "generate_intro": None,
                "generate_form": dbc.Alert("This recipe is no longer active.", color="warning"),
                "generate_result": None, "submit_disabled": True, "generate_recipe": None}
    who = _username(rt, acting_as) if acting_as else None
    cost = html.P([f"Costs {credits(recipe['creditCost'])}", f", charged to {who}." if who else ".",
                   " The job runs through the queue like any user's."], className="text-muted small")
    intro_box = [dbc.Alert(intro, color="info", className="recipes-fallback")] if intro else []
    return {"instant_open": False, "generate_open": True, "generate_title": f"Generate · {recipe['name']}",
            "generate_intro": intro_box + [cost], "generate_form": form_fields(recipe["variables"]),
            "generate_result": None, "submit_disabled": not acting_as, "generate_recipe": recipe["id"]}


@callback(
    Output("recipes-generate-result", "children", allow_duplicate=True),
    Output({"type": "gen-feedback", "field": ALL}, "children"),
    Output("recipes-generate-submit", "disabled", allow_duplicate=True),
    Output("recipes-changed", "data", allow_duplicate=True),
    Input("recipes-generate-submit", "n_clicks"),
    State("recipes-generate-recipe", "data"),
    State("recipes-acting-as", "value"),
    State({"type": "gen-field", "field": ALL}, "value"),
    State({"type": "gen-field", "field": ALL}, "id"),
    State({"type": "gen-feedback", "field": ALL}, "id"),
    prevent_initial_call=True,
)
def submit_generation(n_clicks, recipe_id, acting_as, values, field_ids, feedback_ids):
    """Queue a normal generation for the acting user with the form's values."""
    if not n_clicks or recipe_id is None:
        raise PreventUpdate
    staff = access.require(*auth.STAFF_ROLES)
    rt = runtime.current()
    recipe = _recipe(rt, recipe_id)
    if recipe is None or not acting_as:
        msg = "This recipe is no longer active." if recipe is None else "Choose who to act as first."
        return dbc.Alert(msg, color="warning"), [None] * len(feedback_ids), False, dash.no_update
    refusal = _refusal(rt, staff, acting_as)
    if refusal is not None:
        return (dbc.Alert(refusal, color="danger", className="recipes-generate-error"), [None] * len(feedback_ids),
                False, dash.no_update)
    raw = {i["field"]: v for i, v in zip(field_ids, values)}
    status, body = generations.create_user_generation(
        rt, user_id=acting_as, recipe_id=recipe_id, form_data=form_values(recipe["variables"], raw),
        actor_id=staff.id).response()
    view = submit_view(status, body, _username(rt, acting_as))
    if view["kind"] == "queued":
        gid = view["generationId"]
        result = dbc.Alert([
            html.P(view["message"], className="mb-2"),
            html.Div(["Follow it on ", dcc.Link("the queue", href="/queue"), " or in ",
                      dcc.Link(f"the asset viewer (#{gid})", href=f"/generations/{gid}",
                               id="recipes-generate-link"), "."]),
        ], color="success", className="recipes-queued mb-0")
        return result, [None] * len(feedback_ids), True, time.time()
    errors = view["errors"]
    labels = {f["id"]: _label(f) for f in recipe["variables"]}
    feedback = [f"{labels.get(i['field'], i['field'])} {errors[i['field']]}" if i["field"] in errors else None
                for i in feedback_ids]
    unplaced = {k: v for k, v in errors.items() if k not in {i["field"] for i in feedback_ids}}
    detail = [html.Div(f"{k} {v}") for k, v in unplaced.items()]
    return dbc.Alert([html.Div(view["message"]), *detail], color="danger", className="recipes-generate-error"), \
        feedback, False, dash.no_update


@callback(
    Output("recipes-ready", "is_open"),
    Output("recipes-ready-text", "children"),
    Input({"type": "gen-field", "field": ALL}, "value"),
    State({"type": "gen-field", "field": ALL}, "id"),
    State("recipes-generate-recipe", "data"),
    State("recipes-acting-as", "value"),
)
def ready_with_choices(values, field_ids, recipe_id, acting_as):
    """While the form's values change: how many ready items have them (the offer to claim one)."""
    if recipe_id is None:
        return False, None
    access.require(*auth.STAFF_ROLES)
    rt = runtime.current()
    recipe = _recipe(rt, recipe_id)
    if recipe is None:
        return False, None
    choices = chosen(recipe["variables"], {i["field"]: v for i, v in zip(field_ids, values)})
    n = claims.ready_count(rt, recipe_id, choices, limit=READY_SHOWN)
    return n > 0 and bool(acting_as), ready_text(n)


@callback(
    Output("recipes-instant-modal", "is_open", allow_duplicate=True),
    Output("recipes-instant-title", "children", allow_duplicate=True),
    Output("recipes-instant-result", "children", allow_duplicate=True),
    Output("recipes-claim", "data", allow_duplicate=True),
    Output("recipes-generate-modal", "is_open", allow_duplicate=True),
    Output("recipes-generate-result", "children", allow_duplicate=True),
    Input("recipes-ready-claim", "n_clicks"),
    State("recipes-generate-recipe", "data"),
    State("recipes-acting-as", "value"),
    State({"type": "gen-field", "field": ALL}, "value"),
    State({"type": "gen-field", "field": ALL}, "id"),
    prevent_initial_call=True,
)
def claim_with_choices(n_clicks, recipe_id, acting_as, values, field_ids):
    """"Get one now": an instant claim with the form's choices for the acting user, shown like a
    card's Instant claim; when the item went meanwhile, the form stays open and says so."""
    if not n_clicks or recipe_id is None:
        raise PreventUpdate
    staff = access.require(*auth.STAFF_ROLES)
    rt = runtime.current()
    recipe = _recipe(rt, recipe_id)
    refusal = "Choose who to act as first." if not acting_as else _refusal(rt, staff, acting_as)
    if recipe is None or refusal is not None:
        msg = refusal or "This recipe is no longer active."
        return (dash.no_update,) * 4 + (True, dbc.Alert(msg, color="warning", className="recipes-generate-error"))
    choices = chosen(recipe["variables"], {i["field"]: v for i, v in zip(field_ids, values)})
    view = claim_view(claims.instant_claim(rt, recipe_id=recipe_id, user_id=acting_as, actor_id=staff.id,
                                           ask=claims.Ask(choices=choices)))
    view.update(recipeId=recipe_id, at=time.time())
    if view["kind"] == "fallback":
        note = "The ready item with these choices was just taken. Queue one below — it takes a few minutes."
        return (dash.no_update,) * 3 + (view, True, dbc.Alert(note, color="info", className="recipes-fallback"))
    return True, f"Instant · {recipe['name']}", instant_result(view), view, False, None


@callback(
    Output("recipes-toast", "is_open"),
    Output("recipes-toast", "children"),
    Output("recipes-toast", "icon"),
    Output("recipes-changed", "data"),
    Input("recipes-topup", "n_clicks"),
    State("recipes-acting-as", "value"),
    prevent_initial_call=True,
)
def top_up(n_clicks, acting_as):
    """Grant the acting test user more credits (a ledger ``grant`` row and a ``top_up`` audit row)."""
    if not n_clicks:
        raise PreventUpdate
    staff = access.require(*auth.STAFF_ROLES)
    rt = runtime.current()
    if not acting_as:
        return True, "Choose a test user to top up.", "warning", dash.no_update
    try:
        user, balance = auth.top_up(rt, staff, acting_as, TOP_UP_CREDITS)
    except auth.AuthError as e:
        return True, str(e), "warning", dash.no_update
    return True, f"Granted {TOP_UP_CREDITS} credits to {user.username}: now {balance}.", "success", time.time()


@callback(Output("recipes-instant-modal", "is_open", allow_duplicate=True),
          Input("recipes-instant-close", "n_clicks"), prevent_initial_call=True)
def close_instant(_n):
    return False


@callback(Output("recipes-generate-modal", "is_open", allow_duplicate=True),
          Input("recipes-generate-close", "n_clicks"), prevent_initial_call=True)
def close_generate(_n):
    return False


# No refresh while nobody looks at the tab ("page-visibility" is kept by assets/delula.js).
clientside_callback("function (visibility) { return visibility === 'hidden'; }",
                    Output("recipes-refresh", "disabled"), Input("page-visibility", "data"))

# Browser side (assets/recipes.js): remember the click, lock/count down the Instant buttons,
# and animate the InstantMakeModal's progress before revealing the result.
clientside_callback(
    ClientsideFunction(namespace="delula_recipes", function_name="rememberClick"),
    Output("recipes-clicked-at", "data"),
    Input({"type": "instant-btn", "recipe": ALL}, "n_clicks"),
    prevent_initial_call=True,
)

clientside_callback(
    ClientsideFunction(namespace="delula_recipes", function_name="lockButtons"),
    Output({"type": "instant-btn", "recipe": ALL}, "disabled"),
    Output({"type": "instant-btn", "recipe": ALL}, "children"),
    Output("recipes-tick", "disabled"),
    Input("recipes-tick", "n_intervals"),
    Input("recipes-clicked-at", "data"),
    Input("recipes-instant-modal", "is_open"),
    State({"type": "instant-btn", "recipe": ALL}, "id"),
    State("recipes-acting-as", "value"),
    State("recipes-lock-seconds", "children"),
)

clientside_callback(
    ClientsideFunction(namespace="delula_recipes", function_name="animateClaim"),
    Output("recipes-instant-progress", "value"),
    Output("recipes-instant-progress", "label"),
    Output("recipes-instant-stage", "children"),
    Output("recipes-instant-progress-box", "style"),
    Output("recipes-instant-result", "style"),
    Output("recipes-anim", "disabled"),
    Input("recipes-claim", "data"),
    Input("recipes-anim", "n_intervals"),
    State("recipes-instant-progress", "value"),
    prevent_initial_call=True,
)
