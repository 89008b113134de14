"""Instant claims with the user's choices and in batches: every rule on both databases, the
invariants under parallel load, idempotency, the API and the CLI."""
from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from delula import auth, claims, forms, recipes
from delula.claims import Ask, Match, Outcome
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, catalog
from delula.storage.models import ClaimEvent, CreditTransaction, Generation
from tests.support.factories import add_pool_items

VARIABLES = [
    {"id": "animal", "type": "dropdown", "label": "Animal", "required": True,
     "options": [{"value": "bengal cat"}, {"value": "corgi"}, {"value": "owl"}]},
    {"id": "sport", "type": "radio", "label": "Sport",
     "options": [{"value": "pole vault"}, {"value": "surfing"}]},
    {"id": "speed", "type": "slider", "label": "Speed", "min": 1, "max": 5, "step": 1, "defaultValue": 3},
    {"id": "slowmo", "type": "toggle", "label": "Slow motion", "defaultValue": False},
    {"id": "caption", "type": "text", "label": "Caption", "maxLength": 40},
]
CAT_VAULT = {"animal": "bengal cat", "sport": "pole vault", "speed": 3, "slowmo": True, "caption": "hi"}
CORGI_SURF = {"animal": "corgi", "sport": "surfing", "speed": 5, "slowmo": False, "caption": "hi"}


def _recipe(rt, cost=2):
    return recipes.create_recipe(rt, name=f"Choices {random.random()}", credit_cost=cost, variables=VARIABLES)


def _pool(rt, recipe_id, *forms_in_order) -> list[int]:
    """Pool items with these form data, oldest first; their ids in the same order."""
    ids = []
    for form in forms_in_order:
        ids += [i for i in add_pool_items(rt, recipe_id, 1, form_data=form) if i not in ids]
    return ids


def _events(rt) -> list[ClaimEvent]:
    with rt.store.begin() as s:
        return list(s.query(ClaimEvent).order_by(ClaimEvent.id))


def _ledger(rt, user_id) -> list[tuple]:
    with rt.store.begin() as s:
        return [(t.kind, t.amount, t.balance_after, t.generation_id)
                for t in s.query(CreditTransaction).filter_by(user_id=user_id).order_by(CreditTransaction.id)]


def _credits(rt, user_id) -> int:
    return auth.get_user(rt, user_id=user_id).credits


def _claim(rt, recipe, user, **ask):
    return claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, ask=Ask(**ask))


# --- choices ------------------------------------------------------------------------------------

def test_exact_choices_take_the_oldest_matching_item_not_the_oldest(rt):
    recipe = _recipe(rt)
    corgi, cat1, cat2 = _pool(rt, recipe.id, CORGI_SURF, CAT_VAULT, CAT_VAULT)
    user, _ = auth.create_user(rt, "ana", credits=10)

    result = _claim(rt, recipe, user, choices={"animal": "bengal cat", "sport": "pole vault"})

    status, body = result.response()
    assert status == 200 and body["matched"] is True
    assert body["generation"]["id"] == cat1 and body["generation"]["formData"]["animal"] == "bengal cat"
    assert body["creditsCharged"] == 2 and body["creditsRemaining"] == 8
    [event] = _events(rt)
    assert (event.outcome, event.generation_id, event.choices, event.matched) == (
        "claimed", cat1, {"animal": "bengal cat", "sport": "pole vault"}, True)
    with rt.store.begin() as s:
        assert {g.id for g in s.query(Generation).filter_by(user_id=SYSTEM_BACKLOG_USER_ID)} == {corgi, cat2}
        assert accounts.ledger_mismatches(s) == []


def test_numbers_and_booleans_match_by_their_json_type(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CORGI_SURF, CAT_VAULT)
    user, _ = auth.create_user(rt, "bo", credits=10)
    assert _claim(rt, recipe, user, choices={"speed": 3.0, "slowmo": True}).body["generation"]["formData"] == CAT_VAULT
    # the toggle's false is not the number 0, and no item is left with speed 3
    assert _claim(rt, recipe, user, choices={"speed": 3}).outcome is Outcome.NO_BACKLOG


def test_no_matching_item_is_404_with_the_choices_to_prefill_the_form_and_charges_nothing(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CORGI_SURF)
    user, _ = auth.create_user(rt, "cy", credits=10)
    asked = {"animal": "owl"}

    result = _claim(rt, recipe, user, choices=asked)

    assert result.response() == (404, {"message": claims.NO_BACKLOG_MESSAGE, "fallbackToModal": True,
                                       "formData": asked})
    assert _credits(rt, user.id) == 10 and len(_ledger(rt, user.id)) == 1
    [event] = _events(rt)
    assert (event.outcome, event.choices, event.matched) == ("no_backlog", asked, False)


def test_prefer_takes_a_matching_item_else_the_oldest(rt):
    recipe = _recipe(rt)
    corgi, cat = _pool(rt, recipe.id, CORGI_SURF, CAT_VAULT)
    user, _ = auth.create_user(rt, "di", credits=10)

    first = _claim(rt, recipe, user, choices={"animal": "bengal cat"}, match=Match.PREFER)
    second = _claim(rt, recipe, user, choices={"animal": "bengal cat"}, match=Match.PREFER)

    assert (first.generation["id"], first.body["matched"]) == (cat, True)
    assert (second.generation["id"], second.body["matched"]) == (corgi, False)
    assert [(e.generation_id, e.matched) for e in _events(rt)] == [(cat, True), (corgi, False)]


def test_without_choices_the_answer_is_unchanged(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CORGI_SURF)
    user, _ = auth.create_user(rt, "ed", credits=10)
    body = _claim(rt, recipe, user).body
    assert set(body) == {"generation", "creditsCharged", "creditsRemaining"}
    [event] = _events(rt)
    assert (event.choices, event.matched) == (None, None)


@pytest.mark.parametrize("choices, errors", [
    ({"colour": "red"}, {"formData.colour": "is not a field of this recipe"}),
    ({"animal": "cat"}, {"formData.animal": "must be one of 'bengal cat', 'corgi', 'owl'"}),
    ({"speed": 9}, {"formData.speed": "must be between 1 and 5 in steps of 1"}),
    ({"slowmo": 1}, {"formData.slowmo": "must be true or false"}),
    ({"animal": None}, {"formData.animal": "must be one of 'bengal cat', 'corgi', 'owl'"}),
])
def test_choices_invalid_for_the_recipe_are_400_and_change_nothing(rt, choices, errors):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CAT_VAULT)
    user, _ = auth.create_user(rt, "fa", credits=10)

    result = _claim(rt, recipe, user, choices=choices)

    assert result.response() == (400, {"message": "Invalid form data", "errors": errors})
    assert _credits(rt, user.id) == 10
    assert [e.outcome for e in _events(rt)] == ["invalid"]
    with rt.store.begin() as s:
        assert s.query(Generation).filter_by(user_id=SYSTEM_BACKLOG_USER_ID).count() == 1


def test_a_recipe_changed_in_this_process_judges_choices_by_its_new_fields(rt):
    recipe = _recipe(rt)
    user, _ = auth.create_user(rt, "gu", credits=10)
    assert _claim(rt, recipe, user, choices={"animal": "owl"}).outcome is Outcome.NO_BACKLOG  # fields now cached
    recipes.update_recipe(rt, recipe.id, variables=VARIABLES[1:])
    assert _claim(rt, recipe, user, choices={"animal": "owl"}).errors == {
        "formData.animal": "is not a field of this recipe"}


def test_ready_count_counts_matching_fresh_items(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CORGI_SURF, CAT_VAULT, CAT_VAULT)
    assert claims.ready_count(rt, recipe.id, {"animal": "bengal cat"}) == 2
    assert claims.ready_count(rt, recipe.id, {"animal": "owl"}) == 0
    assert claims.ready_count(rt, recipe.id, None) == 3
    assert claims.ready_count(rt, recipe.id, None, limit=2) == 2


def test_matches_is_the_claims_rule():
    assert forms.matches(CAT_VAULT, {"speed": 3.0}) and forms.matches(CAT_VAULT, {})
    assert not forms.matches(CAT_VAULT, {"slowmo": 1}) and not forms.matches(CAT_VAULT, {"colour": "red"})
    assert forms.choice_from_text(VARIABLES, "speed=3") == ("speed", 3)
    assert forms.choice_from_text(VARIABLES, "slowmo=true") == ("slowmo", True)
    assert forms.choice_from_text(VARIABLES, "animal=bengal cat") == ("animal", "bengal cat")
    assert forms.choice_from_text(VARIABLES, "caption=3") == ("caption", "3")
    with pytest.raises(forms.FormError):
        forms.choice_from_text(VARIABLES, "speed")


# --- batches ------------------------------------------------------------------------------------

def test_a_batch_takes_up_to_count_items_each_charged_with_its_own_ledger_row(rt):
    recipe = _recipe(rt, cost=3)
    ids = _pool(rt, recipe.id, CAT_VAULT, CORGI_SURF, CAT_VAULT, CORGI_SURF)
    user, _ = auth.create_user(rt, "hal", credits=20)

    result = _claim(rt, recipe, user, count=3)

    status, body = result.response()
    assert status == 200 and set(body) == {"generations", "creditsCharged", "creditsRemaining"}
    assert [g["id"] for g in body["generations"]] == ids[:3]  # oldest first
    assert body["creditsCharged"] == 9 and body["creditsRemaining"] == 11
    assert _ledger(rt, user.id) == [("grant", 20, 20, None), ("instant_claim", -3, 17, ids[0]),
                                    ("instant_claim", -3, 14, ids[1]), ("instant_claim", -3, 11, ids[2])]
    assert [(e.outcome, e.generation_id) for e in _events(rt)] == [("claimed", i) for i in ids[:3]]
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        assert catalog.get_recipe(s, recipe.id).usage_count == 3


def test_a_batch_of_one_is_still_a_list(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CAT_VAULT)
    user, _ = auth.create_user(rt, "ida", credits=20)
    body = _claim(rt, recipe, user, count=1).body
    assert len(body["generations"]) == 1 and "generation" not in body


def test_a_batch_without_all_takes_what_there_is_and_records_the_rest_as_misses(rt):
    recipe = _recipe(rt)
    cats = _pool(rt, recipe.id, CAT_VAULT, CORGI_SURF, CAT_VAULT)
    user, _ = auth.create_user(rt, "jo", credits=20)

    result = _claim(rt, recipe, user, count=4, choices={"animal": "bengal cat"})

    assert [g["id"] for g in result.body["generations"]] == [cats[0], cats[2]]
    assert result.body["matched"] is True and result.body["creditsCharged"] == 4
    assert [(e.outcome, e.matched) for e in _events(rt)] == [
        ("claimed", True), ("claimed", True), ("no_backlog", False), ("no_backlog", False)]


def test_prefer_fills_a_batch_with_the_oldest_others(rt):
    recipe = _recipe(rt)
    corgi1, cat, corgi2 = _pool(rt, recipe.id, CORGI_SURF, CAT_VAULT, CORGI_SURF)
    user, _ = auth.create_user(rt, "ka", credits=20)
    body = _claim(rt, recipe, user, count=2, choices={"animal": "bengal cat"}, match=Match.PREFER).body
    assert [g["id"] for g in body["generations"]] == [cat, corgi1] and body["matched"] is False
    assert [e.matched for e in _events(rt)] == [True, False]


def test_all_or_nothing_with_too_few_items_is_404_and_charges_nothing(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CAT_VAULT, CORGI_SURF)
    user, _ = auth.create_user(rt, "lu", credits=20)

    result = _claim(rt, recipe, user, count=3, all=True)

    assert result.response() == (404, {"message": claims.NO_BACKLOG_MESSAGE, "fallbackToModal": True})
    assert _credits(rt, user.id) == 20 and len(_ledger(rt, user.id)) == 1
    assert [e.outcome for e in _events(rt)] == ["no_backlog"] * 3
    with rt.store.begin() as s:
        assert s.query(Generation).filter_by(user_id=SYSTEM_BACKLOG_USER_ID).count() == 2
        assert catalog.get_recipe(s, recipe.id).usage_count == 0
    # with enough items, all of them
    assert len(_claim(rt, recipe, user, count=2, all=True).body["generations"]) == 2


def test_all_without_credits_for_every_item_is_400_and_charges_nothing(rt):
    recipe = _recipe(rt, cost=4)
    _pool(rt, recipe.id, CAT_VAULT, CAT_VAULT, CAT_VAULT)
    user, _ = auth.create_user(rt, "mo", credits=10)

    result = _claim(rt, recipe, user, count=3, all=True)

    assert result.response() == (400, {"message": "Insufficient credits", "required": 12, "available": 10})
    assert _credits(rt, user.id) == 10
    assert [e.outcome for e in _events(rt)] == ["insufficient_credits"]


def test_a_batch_the_user_cannot_pay_for_in_full_is_refused_whole(rt):
    recipe = _recipe(rt, cost=4)
    _pool(rt, recipe.id, CAT_VAULT, CAT_VAULT, CAT_VAULT)
    user, _ = auth.create_user(rt, "ny", credits=10)

    result = _claim(rt, recipe, user, count=3)

    assert result.response() == (400, {"message": "Insufficient credits", "required": 12, "available": 10})
    assert _credits(rt, user.id) == 10
    with rt.store.begin() as s:
        assert s.query(Generation).filter_by(user_id=SYSTEM_BACKLOG_USER_ID).count() == 3


@pytest.mark.parametrize("ask, errors", [
    (dict(count=0), {"count": "must be a whole number from 1 to 10"}),
    (dict(count=11), {"count": "must be a whole number from 1 to 10"}),
])
def test_a_malformed_batch_is_refused(rt, ask, errors):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CAT_VAULT)
    user, _ = auth.create_user(rt, "ole", credits=10)
    assert _claim(rt, recipe, user, **ask).response() == (400, {"message": "Invalid request", "errors": errors})
    assert _credits(rt, user.id) == 10


def test_the_cooldown_applies_once_to_a_batch(db_url, make_runtime):
    rt = make_runtime(db_url, instant_cooldown_s=60)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CAT_VAULT, CAT_VAULT, CAT_VAULT)
    user, _ = auth.create_user(rt, "pia", credits=20)
    assert len(_claim(rt, recipe, user, count=2).body["generations"]) == 2
    assert _claim(rt, recipe, user).outcome is Outcome.RATE_LIMITED


def test_one_idempotency_key_covers_the_whole_batch(rt):
    recipe = _recipe(rt)
    _pool(rt, recipe.id, CAT_VAULT, CAT_VAULT, CAT_VAULT, CAT_VAULT)
    user, _ = auth.create_user(rt, "quin", credits=20)
    ask = Ask(count=2, choices={"animal": "bengal cat"})

    first = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="k1", ask=ask)
    again = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="k1", ask=ask)
    other = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="k1",
                                 ask=Ask(count=3, choices={"animal": "bengal cat"}))

    assert again.replayed and again.response() == first.response()
    assert other.outcome is Outcome.KEY_REUSED
    assert _credits(rt, user.id) == 16 and len(_ledger(rt, user.id)) == 3


def test_a_plain_claim_hashes_as_before_choices_existed():
    import hashlib
    import json
    assert claims.request_hash(3, "u") == hashlib.sha256(json.dumps([3, "u"]).encode()).hexdigest()
    assert claims.request_hash(3, "u", Ask(count=1)) != claims.request_hash(3, "u")


# --- under parallel load (PostgreSQL: real connections, row locks) ------------------------------

@pytest.mark.postgres
def test_parallel_claims_with_choices_and_batches_keep_every_invariant(pg_rt):
    """16 threads, each on its own connection, claim with exact and preferred choices, singly and
    in batches (some all or nothing), from a mixed pool, for users with limited credits."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    rng = random.Random(11)
    combos = [CAT_VAULT, CORGI_SURF, {**CAT_VAULT, "sport": "surfing"}, {**CORGI_SURF, "animal": "owl"}]
    pool_forms = {}
    for _ in range(120):
        form = rng.choice(combos)
        for gid in add_pool_items(rt, recipe.id, 1, form_data=form):
            pool_forms.setdefault(gid, form)
    users = [auth.create_user(rt, f"pc{i}", credits=9)[0].id for i in range(12)]
    asks = [Ask(), Ask(choices={"animal": "bengal cat"}), Ask(choices={"sport": "surfing"}, match=Match.PREFER),
            Ask(count=3), Ask(count=2, all=True, choices={"animal": "corgi"}),
            Ask(count=4, choices={"animal": "owl", "sport": "surfing"})]
    todo = [(rng.choice(users), rng.choice(asks)) for _ in range(240)]
    results, lock, start = [], threading.Lock(), threading.Barrier(16)

    def worker():
        start.wait()
        while True:
            with lock:
                if not todo:
                    return
                uid, ask = todo.pop()
            r = claims.instant_claim(rt, recipe_id=recipe.id, user_id=uid, ask=ask)
            with lock:
                results.append((uid, ask, r))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 240

    handed = []
    for uid, ask, r in results:
        if not r.ok:
            assert r.outcome in (Outcome.NO_BACKLOG, Outcome.RACE, Outcome.INSUFFICIENT_CREDITS)
            continue
        items = r.generations if ask.batch else [r.generation]
        assert 1 <= len(items) <= (ask.count or 1)
        if ask.all:
            assert len(items) == ask.count
        for item in items:
            handed.append((uid, item["id"]))
            if ask.choices and ask.match is Match.EXACT:
                assert forms.matches(pool_forms[item["id"]], ask.choices), "an exact claim got a non-matching item"
        if ask.choices:
            assert r.body["matched"] is all(forms.matches(pool_forms[i["id"]], ask.choices) for i in items)
        assert r.credits_charged == len(items)
    ids = [gid for _, gid in handed]
    assert len(ids) == len(set(ids)), "an item was claimed twice"
    per_user = Counter(uid for uid, _ in handed)
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        for uid in users:
            assert accounts.get_user(s, uid).credits == 9 - per_user[uid] >= 0  # credits conserved
        owners = {g.id: g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_forms))}
        charges = Counter(t.generation_id for t in s.query(CreditTransaction).filter_by(kind="instant_claim"))
        claimed_events = Counter(e.generation_id for e in s.query(ClaimEvent).filter_by(outcome="claimed"))
        assert catalog.get_recipe(s, recipe.id).usage_count == len(ids)
    assert all(owners[gid] == uid for uid, gid in handed)
    assert sum(o == SYSTEM_BACKLOG_USER_ID for o in owners.values()) == len(pool_forms) - len(ids)
    assert set(charges.values()) == {1} and set(charges) == set(ids)
    assert set(claimed_events.values()) == {1} and set(claimed_events) == set(ids)


@pytest.mark.postgres
def test_racing_all_or_nothing_batches_never_split_the_last_items(pg_rt):
    """Eight users race for a pool of 5 with batches of 3, all or nothing: at most one wins (the
    racers may split the items so that none gets three), and no one is charged for a part."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    _pool(rt, recipe.id, *[CAT_VAULT] * 5)
    users = [auth.create_user(rt, f"rb{i}", credits=10)[0].id for i in range(8)]
    start = threading.Barrier(8)
    results = {}

    def claim(uid):
        start.wait()
        results[uid] = claims.instant_claim(rt, recipe_id=recipe.id, user_id=uid, ask=Ask(count=3, all=True))

    threads = [threading.Thread(target=claim, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [u for u, r in results.items() if r.ok]
    assert len(results) == 8 and len(won) <= 1
    assert all(len(results[u].generations) == 3 for u in won)
    assert {r.outcome for u, r in results.items() if u not in won} <= {Outcome.NO_BACKLOG, Outcome.RACE}
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        assert sorted(accounts.get_user(s, u).credits for u in users) == [7] * len(won) + [10] * (8 - len(won))
        assert s.query(Generation).filter_by(user_id=SYSTEM_BACKLOG_USER_ID).count() == 5 - 3 * len(won)
    # what is left is whole: a batch of 2 takes it at once
    if won:
        assert len(claims.instant_claim(rt, recipe_id=recipe.id, user_id=users[0], ask=Ask(count=2, all=True))
                   .generations) == 2


def test_migrations_0018_and_0017_go_down_and_up(rt):
    """Down to 0016: the claim function is version 6 again, a rejected item becomes cancelled
    (never claimable), and claim events lose their choices; up again: version 7."""
    from sqlalchemy import text

    from delula import storage
    from tests.test_freshness import _claim_function, _migrate_down

    recipe = _recipe(rt)
    [item] = _pool(rt, recipe.id, CAT_VAULT)
    with rt.store.begin() as s:
        s.execute(text("UPDATE generations SET status = 'rejected', error = 'too small' WHERE id = :i"), {"i": item})
    head = storage.current_revision(rt.store)

    _migrate_down(rt.store, "0016")

    with rt.store.begin() as s:
        assert s.execute(text("SELECT status, error FROM generations WHERE id = :i"), {"i": item}).one() == (
            "cancelled", "too small")
    if rt.store.is_postgres:
        count, args = _claim_function(rt)
        assert count == 1 and args.endswith("p_fresh_after timestamp with time zone")
    storage.upgrade(rt.store)
    assert storage.current_revision(rt.store) == head
    if rt.store.is_postgres:
        assert _claim_function(rt)[1].endswith("p_count integer, p_all boolean")
    user, _ = auth.create_user(rt, "up", credits=5)
    _pool(rt, recipe.id, CAT_VAULT)
    assert _claim(rt, recipe, user, choices={"animal": "bengal cat"}).body["matched"] is True


def test_all_without_count_is_a_single_claim(rt):
    recipe = _recipe(rt)
    [item] = _pool(rt, recipe.id, CAT_VAULT)
    user, _ = auth.create_user(rt, "solo", credits=10)
    body = _claim(rt, recipe, user, all=True).body
    assert set(body) == {"generation", "creditsCharged", "creditsRemaining"} and body["generation"]["id"] == item
