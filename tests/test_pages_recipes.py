"""Callback unit tests for the Recipes, Queue and Asset viewer pages: the data shaping.

The callbacks are called directly (no browser) inside a Flask request context signed in as a
staff user, on a real app built by ``app.create_app`` over the demo data, on SQLite and on
PostgreSQL. The browser tests (``test_browser_recipes.py`` / ``test_browser_queue.py``) drive the
same pages through Chromium.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager

import dash_bootstrap_components as dbc
import pytest
from dash import dcc, html
from dash._callback_context import context_value
from dash._utils import AttributeDict

from delula import audit, auth, forms, generations, recipes
from delula.demo import RECIPES
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs
from delula.storage.models import CreditTransaction
from pages.access import start_session
from tests.support.factories import add_pool_items

CAT_OLYMPICS, TINY_CHEF, RETRO_AD, DRONE, PET_SHOW, CLAYMATION, SKATE = range(1, 8)


# --- fixtures and helpers ---------------------------------------------------------------------

def build_app(rt):
    """The real dashboard on ``rt`` (migrated, demo data seeded, no scheduler)."""
    import app as app_module

    dash_app = app_module.create_app(rt, start_scheduler=False)
    # The page modules register their callbacks in Dash's process-wide list, which the app takes
    # over on its first request; take them now so they never pile up into a later app (e.g. a
    # browser test's live server) as duplicates.
    dash_app.server.test_client().get("/healthz")
    return dash_app


@pytest.fixture
def dash_app(rt):
    return build_app(rt)


@pytest.fixture
def sqlite_app(sqlite_url, make_runtime):
    from delula import auth as _auth

    runtime = make_runtime(sqlite_url)
    _auth.ensure_system_user(runtime)
    return build_app(runtime)


def page(name: str):
    """The page module as Dash loaded it (``create_app`` executes every page file afresh)."""
    return importlib.import_module(f"pages.{name}")


def rt_of(dash_app):
    return dash_app.server.extensions["delula"]


@contextmanager
def signed_in(dash_app, username: str = "admin"):
    """A request context of the app with ``username`` signed in (as a Dash callback would run)."""
    rt = rt_of(dash_app)
    user = auth.get_user(rt, username=username)
    with dash_app.server.test_request_context("/_dash-update-component", method="POST"):
        start_session(user.id, user.session_epoch)   # as the sign-in form does
        yield user


def user(dash_app, username: str):
    return auth.get_user(rt_of(dash_app), username=username)


def walk(component):
    """Every component and string in a layout tree, depth first."""
    yield component
    children = getattr(component, "children", None) if not isinstance(component, (list, tuple)) else component
    if isinstance(children, (list, tuple)):
        for child in children:
            yield from walk(child)
    elif children is not None and not isinstance(children, (str, int, float)):
        yield from walk(children)
    elif isinstance(children, (str, int, float)) and children is not component:
        yield children


def by_id(tree, wanted):
    return [c for c in walk(tree) if getattr(c, "id", None) == wanted]


def of_type(tree, cls):
    return [c for c in walk(tree) if isinstance(c, cls)]


def text(tree) -> str:
    return " ".join(str(c) for c in walk(tree) if isinstance(c, (str, int, float)))


def field_ids(form) -> list[dict]:
    return [c.id for c in walk(form) if isinstance(getattr(c, "id", None), dict) and c.id["type"] == "gen-field"]


def initial_values(form) -> list:
    return [c.value for c in walk(form) if isinstance(getattr(c, "id", None), dict) and c.id["type"] == "gen-field"]


def feedback_ids(form) -> list[dict]:
    return [c.id for c in walk(form) if isinstance(getattr(c, "id", None), dict) and c.id["type"] == "gen-feedback"]


def add_job(rt, *, recipe_id: int, status: str, user_id: str = SYSTEM_BACKLOG_USER_ID, **fields) -> int:
    """A generation row in any state, through the storage module (as the queue service writes them)."""
    now = rt.now()
    meta = fields.pop("meta", {"source": "backlog" if user_id == SYSTEM_BACKLOG_USER_ID else "user"})
    with rt.store.begin() as s:
        gen = jobs.add_generation(s, user_id=user_id, recipe_id=recipe_id, form_data=fields.pop("form_data", {}),
                                  meta=meta, priority=10, credits_charged=0, now=now, status=status)
        for key, value in fields.items():
            setattr(gen, key, value)
        s.flush()
        return gen.id


# --- recipes: pure shaping ----------------------------------------------------------------------

def test_availability_badge_text_and_colour(sqlite_app):
    rp = page("recipes")
    assert rp.availability(3) == ("3 ready", "success")
    assert rp.availability(1) == ("1 ready", "success")
    assert rp.availability(0) == ("none ready", "secondary")


def test_claim_view_for_every_claim_response(sqlite_app):
    """Each outcome of the instant claim maps to one modal state."""
    rp = page("recipes")
    from delula.claims import ClaimResult, Outcome
    gen = {"id": 12, "assetUrl": "/sim/fal/files/x/video.svg"}
    ok = rp.claim_view(ClaimResult(Outcome.CLAIMED, generation=gen, credits_charged=3, credits_remaining=37))
    assert ok == {"kind": "success", "generationId": 12, "assetUrl": gen["assetUrl"], "creditsCharged": 3,
                  "creditsRemaining": 37}
    empty = rp.claim_view(ClaimResult(Outcome.NO_BACKLOG))
    race = rp.claim_view(ClaimResult(Outcome.RACE))
    assert empty["kind"] == race["kind"] == "fallback"
    assert "someone else" in race["message"].lower() and "no finished video" in empty["message"].lower()
    poor = rp.claim_view(ClaimResult(Outcome.INSUFFICIENT_CREDITS, required=5, available=3))
    assert poor["kind"] == "error" and "Needs 5 credits, has 3" in poor["message"]
    slow = rp.claim_view(ClaimResult(Outcome.RATE_LIMITED, retry_after=7))
    assert slow["kind"] == "error" and "Wait 7 s" in slow["message"]
    gone = rp.claim_view(ClaimResult(Outcome.RECIPE_NOT_FOUND))
    assert gone["kind"] == "error" and gone["message"] == "Recipe not found"


def test_preview_is_an_image_for_posters_and_a_video_otherwise(sqlite_app):
    rp = page("recipes")
    assert isinstance(rp.preview("/sim/fal/files/abc/video.svg"), html.Img)
    assert isinstance(rp.preview("https://cdn.example/v.mp4?sig=1"), html.Video)
    assert "No asset" in text(rp.preview(None))


@pytest.mark.parametrize("field, control, checks", [
    ({"id": "d", "label": "D", "type": "dropdown", "defaultValue": "b",
      "options": [{"label": "A", "value": "a"}, {"label": "B", "value": "b"}]},
     dbc.Select, {"value": "1"}),
    ({"id": "r", "label": "R", "type": "radio", "options": [{"label": "A", "value": 1}, {"label": "B", "value": 2}]},
     dbc.RadioItems, {"value": None}),
    ({"id": "e", "label": "E", "type": "emoji_button", "defaultValue": "p",
      "options": [{"label": "Pizza", "value": "p", "emoji": "🍕"}]},
     dbc.RadioItems, {"value": "0", "inputClassName": "btn-check"}),
    ({"id": "s", "label": "S", "type": "slider", "min": 0.25, "max": 2.0, "step": 0.25, "defaultValue": 0.5},
     dcc.Slider, {"min": 0.25, "max": 2.0, "step": 0.25, "value": 0.5}),
    ({"id": "t", "label": "T", "type": "text", "maxLength": 40, "examples": ["Lisbon"]},
     dbc.Input, {"maxLength": 40, "placeholder": "e.g. Lisbon", "value": ""}),
    ({"id": "g", "label": "G", "type": "toggle", "defaultValue": True}, dbc.Switch, {"value": True, "label": "G"}),
])
def test_form_control_per_field_type(sqlite_app, field, control, checks):
    c = page("recipes").field_control(field)
    assert isinstance(c, control)
    assert c.id == {"type": "gen-field", "field": field["id"]}
    for prop, value in checks.items():
        assert getattr(c, prop) == value, prop


def test_emoji_options_show_their_emoji(sqlite_app):
    c = page("recipes").field_control(RECIPES[1]["variables"][0])  # Tiny Chef: dish
    assert [o["label"] for o in c.options] == ["🍜 Ramen", "🍕 Pizza", "🌮 Tacos", "🍣 Sushi"]
    assert [o["value"] for o in c.options] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("spec", RECIPES, ids=[r["name"] for r in RECIPES])
def test_form_initial_values_are_valid_form_data(sqlite_app, spec):
    """The form as it opens, submitted untouched, is what the schema expects — except a required
    text without a default, which the user must fill in."""
    rp = page("recipes")
    form = rp.form_fields(spec["variables"])
    raw = {i["field"]: v for i, v in zip(field_ids(form), initial_values(form))}
    assert set(raw) == {f["id"] for f in spec["variables"]}
    data = rp.form_values(spec["variables"], raw)
    must_fill = [f["id"] for f in spec["variables"] if f["type"] == "text" and f.get("required")
                 and not f.get("defaultValue")]
    if must_fill:
        with pytest.raises(forms.FormError) as e:
            forms.validate(spec["variables"], data)
        assert set(e.value.errors) == set(must_fill)
    else:
        clean = forms.validate(spec["variables"], data)
        assert clean == {f["id"]: f["defaultValue"] for f in spec["variables"] if "defaultValue" in f}


def test_form_values_map_inputs_back_to_schema_values(sqlite_app):
    rp = page("recipes")
    variables = RECIPES[3]["variables"] + RECIPES[2]["variables"]  # drone (dropdown, float slider) + retro ad
    raw = {"landscape": "2", "speed": 1.25, "product": "moon boots", "decade": "0", "jingle": True}
    assert rp.form_values(variables, raw) == {"landscape": "terraces", "speed": 1.25, "product": "moon boots",
                                              "decade": "70s", "jingle": True}
    chef = RECIPES[1]["variables"]
    assert rp.form_values(chef, {"dish": "3", "mess": 4.0}) == {"dish": "sushi", "mess": 4}
    assert isinstance(rp.form_values(chef, {"mess": 4.0})["mess"], int)
    # Empty inputs are left out so defaults apply / "is required" is reported; junk is passed on.
    assert rp.form_values(RECIPES[2]["variables"], {"product": "", "decade": None}) == {}
    assert rp.form_values(chef, {"dish": "99"}) == {"dish": "99"}


# --- recipes: callbacks on the database ---------------------------------------------------------

def test_layout_shows_a_card_per_active_recipe_with_availability(dash_app):
    rt = rt_of(dash_app)
    add_pool_items(rt, CAT_OLYMPICS, 3)
    recipes.create_recipe(rt, name="Retired", credit_cost=1, is_active=False)
    rt.invalidate()
    with signed_in(dash_app):
        tree = page("recipes").layout()
    badges = {c.id["recipe"]: (c.children, c.color) for c in walk(tree)
              if isinstance(getattr(c, "id", None), dict) and c.id["type"] == "avail-badge"}
    assert badges == {**{rid: ("none ready", "secondary") for rid in range(1, 8)}, CAT_OLYMPICS: ("3 ready", "success")}
    assert "Retired" not in text(tree)
    select = by_id(tree, "recipes-acting-as")[0]
    assert [o["label"] for o in select.options] == ["jonas · 15 credits", "maya · 40 credits", "priya · 3 credits"]
    assert select.value == user(dash_app, "jonas").id
    assert by_id(tree, "recipes-credits")[0].children == "15 credits"


def test_acting_as_offers_a_bounded_list_searches_by_name_and_keeps_the_chosen_user(dash_app):
    """Thousands of test accounts may exist: the selector offers the first ACTING_AS_SHOWN by
    name, the server searches the rest, and the chosen one stays listed. Real customers (role
    user, not a test account) and staff are never offered."""
    rt = rt_of(dash_app)
    rp = page("recipes")
    for i in range(rp.ACTING_AS_SHOWN + 10):
        auth.create_user(rt, f"load_{i:03d}", credits=i, is_test=True)
    zed, _ = auth.create_user(rt, "Zed_1", credits=7, is_test=True)
    auth.create_user(rt, "zed-1", credits=1, is_test=True)
    auth.create_user(rt, "zed_ops", role="ops")
    auth.create_user(rt, "zed_real", credits=3)
    badge_ids = [{"type": "avail-badge", "recipe": CAT_OLYMPICS}]
    by_name = [u.username for u in auth.list_users(rt, roles=("user",)) if u.is_test]

    def names(options):
        return [o["label"].split(" · ")[0] for o in options]

    with signed_in(dash_app):
        first = by_id(page("recipes").layout(), "recipes-acting-as")[0]
        assert names(first.options) == by_name[:rp.ACTING_AS_SHOWN] and "maya" not in names(first.options)
        _, _, found, _ = rp.refresh(1, None, "AY", None, None, badge_ids)      # any case, inside the name
        assert names(found) == ["maya"]
        _, _, literal, _ = rp.refresh(1, None, "d_1", None, None, badge_ids)   # _ and % are not wildcards
        assert names(literal) == ["Zed_1"]
        _, _, percent, _ = rp.refresh(1, None, "%", None, None, badge_ids)
        assert percent == []
        _, _, staff, _ = rp.refresh(1, None, "zed_", None, None, badge_ids)    # test accounts only
        assert names(staff) == ["Zed_1"]
        _, _, kept, balance = rp.refresh(1, zed.id, "load_00", None, None, badge_ids)
        assert names(kept) == [f"load_00{i}" for i in range(10)] + ["Zed_1"] and balance == "7 credits"


def test_instant_success_shows_preview_charges_and_refreshes_badges(dash_app):
    rt = rt_of(dash_app)
    add_pool_items(rt, CAT_OLYMPICS, 3)
    maya = user(dash_app, "maya")
    rp = page("recipes")
    with signed_in(dash_app):
        out = rp.respond("instant", CAT_OLYMPICS, maya.id)
        assert out["instant_open"] is True and "generate_open" not in out
        claim = out["claim"]
        assert claim["kind"] == "success" and claim["creditsCharged"] == 3 and claim["creditsRemaining"] == 37
        img = of_type(out["instant_result"], html.Img)
        assert len(img) == 1 and img[0].src.endswith("video.svg")
        link = by_id(out["instant_result"], "recipes-instant-link")[0]
        assert link.href == f"/generations/{claim['generationId']}"
        badge_ids = [{"type": "avail-badge", "recipe": r} for r in (CAT_OLYMPICS, TINY_CHEF)]
        texts, colours, options, balance = rp.refresh(1, maya.id, None, claim, None, badge_ids)
    gen = generations.get_generation(rt, claim["generationId"])
    assert gen.user_id == maya.id and gen.meta["isInstant"] is True
    assert user(dash_app, "maya").credits == 37
    assert texts == ["2 ready", "none ready"] and colours == ["success", "secondary"]
    assert balance == "37 credits" and "maya · 37 credits" in [o["label"] for o in options]


def test_instant_without_backlog_opens_the_generate_form_instead(dash_app):
    maya = user(dash_app, "maya")
    with signed_in(dash_app):
        out = page("recipes").respond("instant", RETRO_AD, maya.id)
    assert out["instant_open"] is False and out["generate_open"] is True
    assert out["claim"]["kind"] == "fallback"
    assert "No finished video" in text(out["generate_intro"])
    assert [i["field"] for i in field_ids(out["generate_form"])] == ["product", "decade", "jingle"]
    assert out["generate_recipe"] == RETRO_AD and out["submit_disabled"] is False
    assert user(dash_app, "maya").credits == 40  # nothing charged


def test_instant_with_too_few_credits_says_required_and_available(dash_app):
    rt = rt_of(dash_app)
    add_pool_items(rt, SKATE, 1)
    with signed_in(dash_app):
        out = page("recipes").respond("instant", SKATE, user(dash_app, "priya").id)
    assert out["instant_open"] is True and out["claim"]["kind"] == "error"
    assert "Needs 5 credits, has 3" in text(out["instant_result"])
    assert recipes.available_count(rt, SKATE) == 1 and user(dash_app, "priya").credits == 3


def test_second_instant_within_the_cooldown_shows_the_wait(dash_app):
    rt = rt_of(dash_app)
    rt.settings = rt.settings.replace(instant_cooldown_s=10)
    add_pool_items(rt, TINY_CHEF, 2)
    maya = user(dash_app, "maya")
    with signed_in(dash_app):
        first = page("recipes").respond("instant", TINY_CHEF, maya.id)
        second = page("recipes").respond("instant", TINY_CHEF, maya.id)
    assert first["claim"]["kind"] == "success"
    assert second["claim"]["kind"] == "error" and second["instant_open"] is True
    assert "Wait 10 s" in text(second["instant_result"])
    assert recipes.available_count(rt, TINY_CHEF) == 1


def test_open_recipe_reads_the_clicked_button(dash_app):
    """Through Dash's callback context, as the renderer calls it: Generate on Tiny Chef."""
    rp = page("recipes")
    maya = user(dash_app, "maya")
    trigger = '{"recipe":2,"type":"generate-btn"}.n_clicks'
    with signed_in(dash_app):
        token = context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": 1}]))
        try:
            outputs = rp.open_recipe([0] * 7, [0, 1] + [0] * 5, maya.id)
        finally:
            context_value.reset(token)
    named = dict(zip([name for name, _, _ in rp.OPEN_OUTPUTS], outputs))
    assert named["generate_open"] is True and named["generate_recipe"] == TINY_CHEF
    assert named["generate_title"] == "Generate · Tiny Chef"
    assert [i["field"] for i in field_ids(named["generate_form"])] == ["dish", "mess"]


def test_generate_queues_a_user_job_with_the_form_values(dash_app):
    rt = rt_of(dash_app)
    maya = user(dash_app, "maya")
    rp = page("recipes")
    with signed_in(dash_app):
        form = rp.respond("generate", RETRO_AD, maya.id)["generate_form"]
        ids = field_ids(form)
        values = {"product": "moon boots", "decade": "2", "jingle": True}
        result, feedback, disabled, changed = rp.submit_generation(
            1, RETRO_AD, maya.id, [values[i["field"]] for i in ids], ids, feedback_ids(form))
    assert disabled is True and feedback == [None, None, None] and changed
    queued = generations.list_jobs(rt, source="user")
    assert len(queued) == 1
    job = queued[0]
    assert (job.user_id, job.recipe_id, job.status) == (maya.id, RETRO_AD, "pending")
    assert job.form_data == {"product": "moon boots", "decade": "90s", "jingle": True}
    assert f"Queued generation #{job.id} for maya" in text(result)
    assert [c.href for c in of_type(result, dcc.Link)] == ["/queue", f"/generations/{job.id}"]
    assert user(dash_app, "maya").credits == 36
    # asked by the signed-in staff member: the ledger names them, and the audit trail records it
    admin = user(dash_app, "admin")
    (row,) = audit.events(rt)
    assert (row["actorId"], row["action"], row["targetUserId"], row["targetJobId"], row["targetRecipeId"]) == \
        (admin.id, "generate_for_user", maya.id, job.id, RETRO_AD)
    with rt.store.begin() as s:
        charge = s.query(CreditTransaction).filter_by(kind="generation", generation_id=job.id).one()
    assert charge.actor_id == admin.id


def test_generate_reports_field_errors_and_charges_nothing(dash_app):
    rt = rt_of(dash_app)
    maya = user(dash_app, "maya")
    rp = page("recipes")
    with signed_in(dash_app):
        form = rp.respond("generate", RETRO_AD, maya.id)["generate_form"]
        ids = field_ids(form)
        result, feedback, disabled, changed = rp.submit_generation(
            1, RETRO_AD, maya.id, ["", "1", False], ids, feedback_ids(form))
    assert feedback == ["Product is required", None, None]
    assert disabled is False and "fields marked in red" in text(result)
    assert generations.list_jobs(rt) == [] and user(dash_app, "maya").credits == 40


def test_generate_with_too_few_credits(dash_app):
    priya = user(dash_app, "priya")
    rp = page("recipes")
    with signed_in(dash_app):
        form = rp.respond("generate", RETRO_AD, priya.id)["generate_form"]
        ids = field_ids(form)
        result, feedback, disabled, _ = rp.submit_generation(
            1, RETRO_AD, priya.id, ["socks", "1", False], ids, feedback_ids(form))
    assert "needs 4 credits, has 3" in text(result) and disabled is False
    assert generations.list_jobs(rt_of(dash_app)) == []


def test_top_up_grants_credits_to_the_acting_test_user(dash_app):
    rp = page("recipes")
    with signed_in(dash_app):
        is_open, message, icon, changed = rp.top_up(1, user(dash_app, "priya").id)
        refused = rp.top_up(1, user(dash_app, "admin").id)
    assert (is_open, icon) == (True, "success") and message == "Granted 10 credits to priya: now 13."
    assert changed and user(dash_app, "priya").credits == 13
    assert refused[2] == "warning" and user(dash_app, "admin").credits == 0


def test_product_staff_may_claim_and_role_user_may_not(dash_app):
    from pages.access import AccessDenied

    rt = rt_of(dash_app)
    add_pool_items(rt, CAT_OLYMPICS, 1)
    auth.create_user(rt, "pia", role="product", with_token=False)
    rp = page("recipes")
    with signed_in(dash_app, "maya"), pytest.raises(AccessDenied):
        rp.respond("instant", CAT_OLYMPICS, user(dash_app, "maya").id)
    assert recipes.available_count(rt, CAT_OLYMPICS) == 1
    with signed_in(dash_app, "pia"):
        assert rp.respond("instant", CAT_OLYMPICS, user(dash_app, "jonas").id)["claim"]["kind"] == "success"


# --- asset viewer -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [("12", 12), (" 7 ", 7), ("0", None), ("-3", None), ("abc", None),
                                           ("1.5", None), ("", None), (None, None), ("9" * 30, None)])
def test_viewer_parses_generation_ids(sqlite_app, raw, expected):
    assert page("generation").parse_id(raw) == expected


def test_viewer_not_found_for_unknown_and_malformed_ids(dash_app):
    gp = page("generation")
    with signed_in(dash_app):
        trees = {raw: gp.layout(generation_id=raw) for raw in ("abc", "999", "-1")}
    assert all(by_id(tree, "generation-not-found") for tree in trees.values())
    assert "There is no generation #999." in text(trees["999"])
    assert "There is no generation “abc”." in text(trees["abc"])


def test_viewer_shows_a_claimed_generation(dash_app):
    rt = rt_of(dash_app)
    add_pool_items(rt, PET_SHOW, 1, form_data={"pet": "parrot", "topic": "bath time", "audience": False})
    maya = user(dash_app, "maya")
    with signed_in(dash_app):
        gid = page("recipes").respond("instant", PET_SHOW, maya.id)["claim"]["generationId"]
        tree = page("generation").layout(generation_id=str(gid))
    gen = generations.get_generation(rt, gid)
    media = by_id(tree, "generation-media")[0]
    assert isinstance(media, html.Img) and media.src == gen.asset_url
    times = {c.dateTime for c in of_type(by_id(tree, "generation-timeline")[0], html.Time)}
    assert gen.meta["claimedAt"] in times and generations.isoformat(gen.created_at) in times
    details = text(by_id(tree, "generation-details")[0])
    assert "maya (user)" in details and "yes — claimed from the backlog" in details and "Pet Talk Show" in details
    assert text(by_id(tree, "generation-form")[0]).split() == "Host 🦜 Parrot Monologue topic bath time " \
                                                                "Studio audience off".split()
    assert by_id(tree, "generation-refresh")[0].disabled is True  # finished: no refresh


def test_viewer_video_failed_and_live_states(dash_app):
    rt = rt_of(dash_app)
    gp = page("generation")
    video = add_job(rt, recipe_id=DRONE, status="completed", asset_url="https://cdn.example/out.mp4",
                    thumbnail_url="https://cdn.example/out.jpg")
    failed = add_job(rt, recipe_id=DRONE, status="failed", error="provider said: out of GPUs", attempts=3)
    pending = add_job(rt, recipe_id=DRONE, status="pending")
    with signed_in(dash_app):
        v = gp.layout(generation_id=str(video))
        f = gp.layout(generation_id=str(failed))
        p = gp.layout(generation_id=str(pending))
        still_pending = gp.refresh(1, pending)
    media = by_id(v, "generation-media")[0]
    assert isinstance(media, html.Video) and media.src.endswith(".mp4") and media.poster.endswith(".jpg")
    assert "out of GPUs" in text(by_id(f, "generation-error")[0])
    assert "the job failed" in text(by_id(f, "generation-media-empty")[0])
    assert "Waiting in the queue" in text(by_id(p, "generation-media-empty")[0])
    assert by_id(p, "generation-refresh")[0].disabled is False
    assert still_pending[1] is False and by_id(still_pending[0], "generation-media-empty")


# --- queue --------------------------------------------------------------------------------------

def test_queue_filters_from_the_url_ignore_unknown_values(sqlite_app):
    qp = page("queue")
    assert qp.parse_filters("failed,pending,bogus", "3", "user") == {"statuses": ["failed", "pending"], "recipe": 3,
                                                                     "source": "user"}
    assert qp.parse_filters(["completed"], "all", "all") == {"statuses": ["completed"], "recipe": None, "source": None}
    assert qp.parse_filters(None, "x", "elsewhere") == {"statuses": [], "recipe": None, "source": None}
    assert qp.empty_message(qp.parse_filters("failed")) == "No jobs match these filters."
    assert qp.empty_message(qp.parse_filters()).startswith("No jobs yet")


@pytest.mark.parametrize("status, ops, expected", [
    ("failed", True, ["retry"]), ("cancelled", True, []), ("pending", True, ["cancel"]),
    ("processing", True, ["cancel"]), ("completed", True, []), ("failed", False, []), ("pending", False, []),
])
def test_queue_actions_per_status_and_role(sqlite_app, status, ops, expected):
    assert page("queue").actions_for(status, ops) == expected


def test_queue_rows_carry_what_the_grid_shows(dash_app):
    from datetime import timedelta

    from delula.clock import ManualClock

    rt = rt_of(dash_app)
    rt.clock = ManualClock(rt.now())  # still while the rows are shaped: exact ages and next polls
    now = rt.now()
    maya = user(dash_app, "maya")
    polling = add_job(rt, recipe_id=TINY_CHEF, status="processing", attempts=1, next_poll_at=now + timedelta(seconds=30),
                      started_at=now)
    waiting = add_job(rt, recipe_id=RETRO_AD, status="pending", user_id=maya.id, attempts=1,
                      next_attempt_at=now + timedelta(seconds=45))
    broken = add_job(rt, recipe_id=DRONE, status="failed", attempts=3, error="provider: FAILED (simulated failure)")
    with signed_in(dash_app):
        tree = page("queue").layout()
    grid = by_id(tree, "queue-grid")[0]
    rows = {r["id"]: r for r in grid.rowData}
    assert set(rows) == {polling, waiting, broken}
    assert [r["id"] for r in grid.rowData] == sorted(rows, reverse=True)  # newest first
    p, w, b = rows[polling], rows[waiting], rows[broken]
    assert (p["recipe"], p["source"], p["owner"], p["status"], p["attempts"]) == (
        "Tiny Chef", "backlog", "system_backlog", "processing", 1)
    assert p["nextPoll"] == 30.0 and p["actions"] == ["cancel"] and p["rowId"] == str(polling)
    assert (w["source"], w["owner"], w["nextPoll"], w["actions"]) == ("user", "maya", 45.0, ["cancel"])
    assert (b["error"], b["nextPoll"], b["actions"]) == ("provider: FAILED (simulated failure)", None, ["retry"])
    assert b["createdAt"] == generations.isoformat(generations.get_generation(rt, broken).created_at)
    assert all(r["age"] == 0.0 for r in rows.values())
    counts = {s: text(by_id(tree, f"queue-count-{s}")[0]) for s in ("pending", "processing", "failed", "completed")}
    assert counts == {"pending": "1", "processing": "1", "failed": "1", "completed": "0"}
    assert "1 of 3 slots in use" in text(by_id(tree, "queue-glance")[0])
    assert next(c for c in grid.columnDefs if c["field"] == "actions").get("hide") is not True


def test_queue_filters_narrow_the_rows_and_explain_an_empty_grid(dash_app):
    rt = rt_of(dash_app)
    maya = user(dash_app, "maya")
    backlog_failed = add_job(rt, recipe_id=DRONE, status="failed", error="boom")
    user_pending = add_job(rt, recipe_id=RETRO_AD, status="pending", user_id=maya.id)
    add_job(rt, recipe_id=DRONE, status="completed")
    qp = page("queue")
    with signed_in(dash_app):
        failed = qp.refresh(1, ["failed"], "all", "all", None, {})
        users = qp.refresh(1, [], "all", "user", None, {})
        drone = qp.refresh(1, None, str(DRONE), "all", None, {})
        nothing = qp.refresh(1, ["cancelled"], "all", "all", None, {"tooltipShowDelay": 300})
        url = qp.layout(status="failed", source="backlog")
    assert [r["id"] for r in failed[0]] == [backlog_failed]
    assert [r["id"] for r in users[0]] == [user_pending]
    assert {r["recipe"] for r in drone[0]} == {"Dreamy Drone Shot"} and len(drone[0]) == 2
    assert nothing[0] == [] and nothing[1]["noRowsOverlayComponentParams"]["message"] == "No jobs match these filters."
    assert nothing[1]["tooltipShowDelay"] == 300  # other grid options kept
    assert [r["id"] for r in by_id(url, "queue-grid")[0].rowData] == [backlog_failed]
    assert by_id(url, "queue-filter-status")[0].value == ["failed"]


def test_queue_retry_and_cancel_are_ops_only_with_confirmation(dash_app):
    from dash.exceptions import PreventUpdate
    from pages.access import AccessDenied

    rt = rt_of(dash_app)
    maya = user(dash_app, "maya")
    auth.create_user(rt, "pia", role="product", with_token=False)
    broken = add_job(rt, recipe_id=DRONE, status="failed", attempts=3, error="provider: timed out")
    qp = page("queue")
    click = {"value": {"action": "retry", "id": broken}, "colId": "actions", "rowIndex": 0}

    with signed_in(dash_app, "pia"):
        tree = qp.layout()
        refused = qp.ask(click)
        with pytest.raises(AccessDenied):
            qp.act(1, {"action": "retry", "id": broken})
    assert next(c for c in by_id(tree, "queue-grid")[0].columnDefs if c["field"] == "actions")["hide"] is True
    assert all(r["actions"] == [] for r in by_id(tree, "queue-grid")[0].rowData)
    assert refused[0] is False and refused[3] is True and "for ops" in refused[4]
    assert generations.get_generation(rt, broken).status == "failed"

    with signed_in(dash_app):
        displayed, message, pending, *_ = qp.ask(click)
        assert displayed is True and pending == {"action": "retry", "id": broken}
        assert message.startswith(f"Retry job #{broken}?")
        with pytest.raises(PreventUpdate):
            qp.ask({"value": {"action": "delete", "id": broken}})
        is_open, text_, icon, changed = qp.act(1, pending)
        again = qp.act(2, pending)  # it is pending now: the queue refuses, readably
    assert (is_open, icon) == (True, "success") and f"Job #{broken} is pending again" in text_ and changed
    job = generations.get_generation(rt, broken)
    assert (job.status, job.attempts, job.error) == ("pending", 0, None)
    assert again[2] == "danger" and "only failed jobs can be retried" in again[1]

    with signed_in(dash_app):
        form = page("recipes").respond("generate", RETRO_AD, maya.id)["generate_form"]
        ids = field_ids(form)
        page("recipes").submit_generation(1, RETRO_AD, maya.id, ["socks", "1", False], ids, feedback_ids(form))
        queued = generations.list_jobs(rt, source="user")[0].id
        assert user(dash_app, "maya").credits == 36
        result = qp.act(1, {"action": "cancel", "id": queued})
        missing = qp.act(1, {"action": "cancel", "id": 999999})
    assert result[2] == "success" and generations.get_generation(rt, queued).status == "cancelled"
    assert user(dash_app, "maya").credits == 40  # refunded
    assert missing[2] == "danger" and "does not exist" in missing[1]


def test_the_generate_forms_choices_are_its_values_defaults_included_text_left_out(sqlite_app):
    recipes_page = page("recipes")
    variables = [
        {"id": "animal", "type": "dropdown", "label": "Animal", "options": [{"value": "cat"}, {"value": "owl"}]},
        {"id": "speed", "type": "slider", "label": "Speed", "min": 1, "max": 5, "step": 1, "defaultValue": 3},
        {"id": "loud", "type": "toggle", "label": "Loud", "defaultValue": False},
        {"id": "caption", "type": "text", "label": "Caption", "maxLength": 5},
    ]
    assert recipes_page.chosen(variables, {"animal": "1", "caption": "mine"}) == {
        "animal": "owl", "speed": 3, "loud": False}
    assert recipes_page.chosen(variables, {"animal": "", "speed": 9.0, "loud": True}) == {"loud": True}
    assert recipes_page.ready_text(2) == "2 ready with these choices —"
    assert recipes_page.ready_text(recipes_page.READY_SHOWN).startswith(f"{recipes_page.READY_SHOWN}+ ready")


def test_the_cards_come_a_page_at_a_time():
    """Hundreds of recipes open as one page of cards and links to the others (``?page=N``)."""
    from pages import recipes as page

    active = [{"id": i} for i in range(1, 60)]
    shown, at, pages = page.card_page(active, "2")
    assert (at, pages) == (2, 3) and [r["id"] for r in shown] == list(range(25, 49))
    assert page.card_page(active, "junk")[1] == 1 and page.card_page(active, 99)[1] == 3
    assert page.card_page(active[:5], None) == (active[:5], 1, 1) and page.card_pager(1, 1, 5) is None
    pager = page.card_pager(3, 3, 59)
    assert "Recipes 49-59 of 59" in pager.children[0].children
    assert [link.href for link in pager.children[1:]] == ["/recipes?page=1", "/recipes?page=2", "/recipes?page=3"]
