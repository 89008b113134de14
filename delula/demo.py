"""Demo data: realistic recipes, usage statistics and test users (idempotent), and a prefilled backlog.

:func:`prefill` (``python -m delula backlog prefill``) creates backlog jobs and drives the queue
until they are finished, so a fresh installation has items to claim at once. It lives with the
demo data rather than in the domain because it is a way of setting up a database, not a rule of
the service: it seeds the demo data on an empty database, and otherwise only uses what the
service does every day -- the backlog's job rows (``backlog.job_rows``) and the queue's tick.
"""
from __future__ import annotations

import logging
import random
import time
from datetime import timedelta

from . import auth, backlog, forms, queue, recipes
from .queue_actions import QueueError
from .storage import JobStatus, catalog, jobs

log = logging.getLogger(__name__)

PREFILL_MAX_SLEEP_S = 1.0

TEST_USERS = (("maya", 40), ("jonas", 15), ("priya", 3))

RECIPES = [
    {
        "name": "Cat Olympics", "credit_cost": 3, "model_id": "fal-ai/veo3/fast",
        "description": "A cat attempts an Olympic event, filmed like a sports broadcast.",
        "variables": [
            {"id": "sport", "label": "Event", "type": "dropdown", "required": True, "defaultValue": "diving",
             "options": [{"label": "High diving", "value": "diving"}, {"label": "Gymnastics", "value": "gymnastics"},
                         {"label": "Sprint", "value": "sprint"}, {"label": "Curling", "value": "curling"}]},
            {"id": "breed", "label": "Cat", "type": "radio", "required": True, "defaultValue": "tabby",
             "options": [{"label": "Tabby", "value": "tabby"}, {"label": "Siamese", "value": "siamese"},
                         {"label": "Maine Coon", "value": "maine_coon"}]},
            {"id": "slowmo", "label": "Slow-motion replay", "type": "toggle", "required": False,
             "defaultValue": True},
        ],
        "usage": {"sport": {"diving": 42, "gymnastics": 25, "sprint": 9}, "breed": {"tabby": 30, "siamese": 12}},
    },
    {
        "name": "Tiny Chef", "credit_cost": 2, "model_id": "fal-ai/kling-video/v2/master/text-to-video",
        "description": "A miniature chef cooks a dish on a kitchen counter, macro lens.",
        "variables": [
            {"id": "dish", "label": "Dish", "type": "emoji_button", "required": True, "defaultValue": "ramen",
             "options": [{"label": "Ramen", "value": "ramen", "emoji": "🍜"},
                         {"label": "Pizza", "value": "pizza", "emoji": "🍕"},
                         {"label": "Tacos", "value": "tacos", "emoji": "🌮"},
                         {"label": "Sushi", "value": "sushi", "emoji": "🍣"}]},
            {"id": "mess", "label": "Kitchen chaos", "type": "slider", "required": True, "defaultValue": 3,
             "min": 1, "max": 5, "step": 1},
        ],
        "usage": {"dish": {"ramen": 55, "sushi": 31, "pizza": 20}},
    },
    {
        "name": "Retro Product Ad", "credit_cost": 4, "model_id": "fal-ai/veo3",
        "description": "An 80s TV commercial for any product you name.",
        "variables": [
            {"id": "product", "label": "Product", "type": "text", "required": True, "maxLength": 60,
             "examples": ["self-folding socks", "a talking toaster", "moon boots"]},
            {"id": "decade", "label": "Decade", "type": "radio", "required": True, "defaultValue": "80s",
             "options": [{"label": "1970s", "value": "70s"}, {"label": "1980s", "value": "80s"},
                         {"label": "1990s", "value": "90s"}]},
            {"id": "jingle", "label": "Jingle", "type": "toggle", "required": False, "defaultValue": False},
        ],
        "usage": {"decade": {"80s": 40, "90s": 18}},
    },
    {
        "name": "Dreamy Drone Shot", "credit_cost": 2, "model_id": "fal-ai/minimax/video-01",
        "description": "A sweeping aerial shot over a landscape at golden hour.",
        "variables": [
            {"id": "landscape", "label": "Landscape", "type": "dropdown", "required": True,
             "defaultValue": "fjord",
             "options": [{"label": "Norwegian fjord", "value": "fjord"}, {"label": "Desert dunes", "value": "dunes"},
                         {"label": "Rice terraces", "value": "terraces"}, {"label": "Glacier", "value": "glacier"}]},
            {"id": "speed", "label": "Flight speed", "type": "slider", "required": True, "defaultValue": 0.5,
             "min": 0.25, "max": 2.0, "step": 0.25},
        ],
        "usage": {"landscape": {"fjord": 21, "dunes": 17, "glacier": 4}, "speed": {0.5: 12, 1.0: 8}},
    },
    {
        "name": "Pet Talk Show", "credit_cost": 3, "model_id": "fal-ai/veo3/fast",
        "description": "Your pet hosts a late-night talk show monologue.",
        "variables": [
            {"id": "pet", "label": "Host", "type": "emoji_button", "required": True, "defaultValue": "dog",
             "options": [{"label": "Dog", "value": "dog", "emoji": "🐶"}, {"label": "Cat", "value": "cat", "emoji": "🐱"},
                         {"label": "Parrot", "value": "parrot", "emoji": "🦜"}]},
            {"id": "topic", "label": "Monologue topic", "type": "text", "required": False, "maxLength": 80,
             "examples": ["the mail carrier", "bath time", "the vacuum cleaner"]},
            {"id": "audience", "label": "Studio audience", "type": "toggle", "required": False,
             "defaultValue": True},
        ],
        "usage": {"pet": {"dog": 61, "cat": 48, "parrot": 7}, "audience": {True: 30, False: 5}},
    },
    {
        "name": "Claymation Weather", "credit_cost": 1, "model_id": "fal-ai/ltx-video",
        "description": "A claymation weather forecast for a city of your choice.",
        "variables": [
            {"id": "city", "label": "City", "type": "text", "required": True, "maxLength": 40,
             "examples": ["Lisbon", "Osaka", "Reykjavik", "Nairobi"]},
            {"id": "weather", "label": "Weather", "type": "radio", "required": True, "defaultValue": "sunny",
             "options": [{"label": "Sunny", "value": "sunny"}, {"label": "Storm", "value": "storm"},
                         {"label": "Snow", "value": "snow"}]},
        ],
        "usage": {"weather": {"storm": 19, "sunny": 13, "snow": 10}},
    },
    {
        "name": "Skate Trick Replay", "credit_cost": 5, "model_id": "fal-ai/veo3", "min_backlog": 2,
        "description": "An animal lands a skateboard trick, replayed from three angles.",
        "variables": [
            {"id": "rider", "label": "Rider", "type": "dropdown", "required": True, "defaultValue": "goat",
             "options": [{"label": "Goat", "value": "goat"}, {"label": "Penguin", "value": "penguin"},
                         {"label": "Raccoon", "value": "raccoon"}]},
            {"id": "trick", "label": "Trick", "type": "dropdown", "required": True, "defaultValue": "kickflip",
             "options": [{"label": "Kickflip", "value": "kickflip"}, {"label": "Ollie", "value": "ollie"},
                         {"label": "Heelflip", "value": "heelflip"}]},
            {"id": "angles", "label": "Replay angles", "type": "slider", "required": True, "defaultValue": 3,
             "min": 1, "max": 3, "step": 1},
        ],
        "usage": {},
    },
]


def seed(rt) -> dict:
    """Create what is missing: system user, admin, test users, demo recipes with statistics.

    Returns what was created (for the CLI), including a generated admin password if any.
    """
    created = {"recipes": [], "users": [], "adminPassword": None}
    auth.ensure_system_user(rt)
    created["adminPassword"] = auth.ensure_admin(rt)
    for name, credits in TEST_USERS:
        if auth.get_user(rt, username=name) is None:
            try:
                auth.create_user(rt, name, role="user", credits=credits, with_token=False, is_test=True)
                created["users"].append(name)
            except auth.AuthError:
                pass
    for spec in RECIPES:
        slug = recipes.slugify(spec["name"])
        with rt.store.begin() as s:
            exists = catalog.get_recipe_by_slug(s, slug) is not None
        if exists:
            continue
        try:
            recipe = recipes.create_recipe(rt, name=spec["name"], credit_cost=spec["credit_cost"],
                                           variables=spec["variables"], model_id=spec["model_id"],
                                           description=spec["description"], min_backlog=spec.get("min_backlog"))
        except recipes.RecipeError:
            continue  # created meanwhile by another process
        with rt.store.begin() as s:
            for variable_id, counts in spec["usage"].items():
                for value, count in counts.items():
                    catalog.record_choices(s, recipe.id, {variable_id: value}, weight=count)
        created["recipes"].append(recipe.name)
    return created


def is_empty(rt) -> bool:
    with rt.store.begin() as s:
        has_recipes = bool(catalog.list_recipes(s, active_only=False))
    return not has_recipes and auth.get_user(rt, username="admin") is None


def prefill(rt, *, recipe_id: int | None, count: int, timeout: float, on_progress=None,
            sleep=time.sleep) -> dict:
    """Create ``count`` backlog jobs per recipe (every active recipe when ``recipe_id`` is None)
    and drive the queue until they are all finished or ``timeout`` seconds (of ``rt.clock``)
    have passed; ``on_progress(done, total)`` after every tick.

    Between ticks it sleeps until the next poll or retry falls due (at most a second), so the
    poll schedule is respected. Jobs unfinished at the timeout stay queued for the scheduler.
    ``sleep`` is injectable: with a ManualClock pass ``clock.advance``.
    On a database without any recipe (a fresh file) the demo data is seeded first, as
    ``python app.py`` does. Returns ``{"created", "completed", "failed", "rejected" (by the quality
    gate), "timedOut", "ids"}``;
    raises :class:`QueueError` for a bad count or timeout, or a recipe it cannot prefill.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
        raise QueueError("count must be a whole number from 1 to 10000")
    if not timeout or timeout <= 0:
        raise QueueError("timeout must be a positive number of seconds")
    _seed_if_empty(rt)
    ids = _create_backlog_jobs(rt, recipe_id, count)
    rt.invalidate()
    total = len(ids)
    deadline = rt.now() + timedelta(seconds=timeout)
    while True:
        queue.tick(rt)
        with rt.store.begin() as s:
            states = jobs.statuses_of(s, ids)
            wakeup = jobs.next_wakeup(s, rt.now())
        done = sum(1 for st in states.values() if st in JobStatus.FINISHED)
        if on_progress is not None:
            on_progress(done, total)
        now = rt.now()
        if done == total or now >= deadline:
            break
        wait = PREFILL_MAX_SLEEP_S if wakeup is None else (wakeup - now).total_seconds()
        sleep(min(PREFILL_MAX_SLEEP_S, max(0.01, wait), max(0.01, (deadline - now).total_seconds())))
    completed = sum(1 for st in states.values() if st == JobStatus.COMPLETED)
    failed = sum(1 for st in states.values() if st in (JobStatus.FAILED, JobStatus.CANCELLED))
    rejected = sum(1 for st in states.values() if st == JobStatus.REJECTED)
    return {"created": total, "completed": completed, "failed": failed, "rejected": rejected,
            "timedOut": total - completed - failed - rejected, "ids": ids}


def _seed_if_empty(rt) -> None:
    auth.ensure_system_user(rt)
    if is_empty(rt):
        created = seed(rt)
        log.info("queue: empty database, demo data seeded (%d recipes)", len(created["recipes"]))
        if created["adminPassword"]:
            log.warning("ops user 'admin' created with password: %s", created["adminPassword"])


def _create_backlog_jobs(rt, recipe_id: int | None, count: int) -> list[int]:
    now = rt.now()
    rng = random.Random()
    with rt.store.begin() as s:
        if recipe_id is None:
            targets = catalog.list_recipes(s, active_only=True)
            if not targets:
                raise QueueError("there is no active recipe to prefill")
        else:
            recipe = catalog.get_recipe(s, recipe_id)
            if recipe is None or not recipe.is_active:
                raise QueueError(f"recipe {recipe_id} does not exist or is not active")
            targets = [recipe]
        usage = catalog.usage_statistics(s, [r.id for r in targets])
        observed = backlog.recent_choices(s, rt, [r.id for r in targets])
        rows = []
        for recipe in targets:
            try:
                rows += backlog.job_rows(recipe, count, usage.get(recipe.id, {}), rng,
                                         observed=observed.get(recipe.id, ()), exploration=rt.settings.exploration)
            except (forms.FormError, forms.SchemaError) as e:
                raise QueueError(f"recipe {recipe.id} ({recipe.name}): no valid form data: {e}") from None
        return [jobs.add_generation(s, **row, credits_charged=0, now=now).id for row in rows]
