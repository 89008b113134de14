"""Content the Content page counts (:func:`seed_content`): claimed backlog items with their form
data and time in the pool, instant attempts with choices (hits, misses, fall-backs), expired and
rejected items, spread over the time ranges so each range counts something else.

The demo recipes (``demo.seed``) give the schemas: 1 Cat Olympics (``sport`` dropdown, ``breed``
radio, ``slowmo`` toggle), 2 Tiny Chef (``dish``, ``mess``), 3 Retro Product Ad (``product`` free
text, ``decade`` radio, ``jingle`` toggle). The free text :data:`SECRET` is in claimed items and in
choices: it must never be shown.
"""
from __future__ import annotations

from datetime import timedelta

from delula import auth, demo
from delula.storage import SYSTEM_BACKLOG_USER_ID
from delula.storage.models import ClaimEvent, Generation

SECRET = "my secret product idea"
CAT, CHEF, RETRO = 1, 2, 3


def _item(s, *, owner: str, recipe_id: int, form: dict, status: str, made, completed, updated, error=None) -> int:
    gen = Generation(user_id=owner, recipe_id=recipe_id, status=status, form_data=form,
                     meta={"source": "backlog"}, priority=10, attempts=1, poll_count=1, refunded=False,
                     credits_charged=0, created_at=made, updated_at=updated, started_at=completed - timedelta(seconds=20),
                     completed_at=completed, error=error, asset_url=f"/sim/fal/files/content-{recipe_id}/video.svg")
    s.add(gen)
    s.flush()
    return gen.id


def _claimed(s, user_id: str, recipe_id: int, form: dict, at, waited_s: float, **event) -> int:
    """A backlog item completed ``waited_s`` before the claim at ``at``, handed to the user then:
    its ``created_at`` is the claim time (the claim function rewrites it), with its claim event."""
    completed = at - timedelta(seconds=waited_s)
    gen = _item(s, owner=user_id, recipe_id=recipe_id, form=form, status="completed", made=at, completed=completed,
                updated=at)
    s.get(Generation, gen).meta = {"source": "backlog", "isInstant": True,
                                   "generatedAt": (completed - timedelta(seconds=30)).isoformat()}
    _event(s, user_id, recipe_id, "claimed", at, generation_id=gen, **event)
    return gen


def _event(s, user_id: str, recipe_id: int, outcome: str, at, *, generation_id=None, choices=None, matched=None):
    s.add(ClaimEvent(user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=generation_id,
                     latency_ms=3.0, created_at=at, choices=choices, matched=matched))
    s.flush()


def seed_content(rt) -> None:
    """The demo data and the content described in the tests (``tests/test_content.py``), ending
    at ``rt.now()``."""
    demo.seed(rt)
    now = rt.now()
    maya = auth.get_user(rt, username="maya").id
    minutes = lambda m: now - timedelta(minutes=m)  # noqa: E731
    days = lambda d: now - timedelta(days=d)  # noqa: E731
    cat = lambda sport, slowmo: {"sport": sport, "breed": "tabby", "slowmo": slowmo}  # noqa: E731
    retro = {"product": SECRET, "decade": "80s", "jingle": False}
    with rt.store.begin() as s:
        # the last hour: four Cat Olympics claims that waited 60, 120, 180 and 600 s
        _claimed(s, maya, CAT, cat("diving", True), minutes(5), 60, choices={"sport": "diving"}, matched=True)
        _claimed(s, maya, CAT, cat("diving", True), minutes(10), 120, choices={"sport": "diving"}, matched=True)
        _claimed(s, maya, CAT, cat("diving", False), minutes(15), 180)
        # asked for curling, none ready: handed a sprint (``match: prefer``)
        _claimed(s, maya, CAT, cat("sprint", False), minutes(20), 600, choices={"sport": "curling"}, matched=False)
        for m in (25, 30):
            _event(s, maya, CAT, "no_backlog", minutes(m), choices={"sport": "curling"}, matched=False)
        # not demand on the pool: never counted as asked for
        _event(s, maya, CAT, "insufficient_credits", minutes(35), choices={"sport": "gymnastics"}, matched=False)
        # two hours ago: Retro Product Ad, with the user's free text in the items and in choices
        _claimed(s, maya, RETRO, retro, minutes(120), 30)
        _claimed(s, maya, RETRO, retro, minutes(121), 90)
        _event(s, maya, RETRO, "race", minutes(122), choices={"product": SECRET, "decade": "70s"}, matched=False)
        # three days ago: a Tiny Chef claim that waited an hour, and a miss of a Siamese
        _claimed(s, maya, CHEF, {"dish": "pizza", "mess": 4}, days(3), 3600)
        _event(s, maya, CAT, "no_backlog", days(3), choices={"breed": "siamese"}, matched=False)
        # waste: Cat Olympics items expired two hours ago, Tiny Chef's rejected half an hour ago, and
        # one Tiny Chef item expired ten days ago
        for _ in range(2):
            _item(s, owner=SYSTEM_BACKLOG_USER_ID, recipe_id=CAT, form=cat("curling", True), status="expired",
                  made=days(4), completed=days(4), updated=minutes(120))
        for error in ("too dark", "too dark", "watermark detected"):
            _item(s, owner=SYSTEM_BACKLOG_USER_ID, recipe_id=CHEF, form={"dish": "ramen", "mess": 3},
                  status="rejected", made=minutes(40), completed=minutes(31), updated=minutes(30), error=error)
        _item(s, owner=SYSTEM_BACKLOG_USER_ID, recipe_id=CHEF, form={"dish": "sushi", "mess": 1}, status="expired",
              made=days(14), completed=days(14), updated=days(10))
    rt.invalidate()
