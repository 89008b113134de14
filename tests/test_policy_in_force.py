"""The policy in force: the environment's until an operator applies one (``backlog_settings``),
a recipe's own over it, every change audited, bad input refused with nothing changed."""
from __future__ import annotations

import pytest

from delula import audit, auth, backlog, recipes
from delula.clock import ManualClock, isoformat
from delula.config import BACKLOG_POLICIES


@pytest.fixture
def setup(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, backlog_policy="reactive", service_level=0.95)
    auth.ensure_system_user(rt)
    ops, _ = auth.create_user(rt, "olga", role="ops", password="pw-olga-123")
    a = recipes.create_recipe(rt, name="Alpha", credit_cost=1, variables=[])
    b = recipes.create_recipe(rt, name="Beta", credit_cost=1, variables=[])
    return rt, clock, ops, a, b


def _policy_events(rt):
    return [e for e in audit.events(rt, action="set_policy")]


def test_the_environment_is_in_force_until_a_policy_is_applied(setup):
    rt, clock, ops, a, b = setup
    assert backlog.policy_in_force(rt) == {"policy": "reactive", "serviceLevel": 0.95, "source": "settings"}

    clock.advance(60)
    done = backlog.apply_policy(rt, ops.id, "static", 0.9)
    assert done == {"scope": "global", "policy": "static", "serviceLevel": 0.9}
    assert backlog.policy_in_force(rt) == {"policy": "static", "serviceLevel": 0.9, "source": "database"}
    # applied again: the one row changes
    backlog.apply_policy(rt, ops.id, "reactive", 0.99)
    assert backlog.policy_in_force(rt) == {"policy": "reactive", "serviceLevel": 0.99, "source": "database"}

    events = _policy_events(rt)
    assert [e["details"]["after"] for e in events] == [{"policy": "reactive", "serviceLevel": 0.99},
                                                       {"policy": "static", "serviceLevel": 0.9}]
    assert events[1]["details"]["before"] == {"policy": "reactive", "serviceLevel": 0.95, "source": "settings"}
    assert events[0]["details"]["before"] == {"policy": "static", "serviceLevel": 0.9}
    assert {e["actor"] for e in events} == {"olga"} and events[1]["at"] == isoformat(clock.now())
    assert all(e["details"]["scope"] == "global" and e["targetRecipeId"] is None for e in events)


def test_a_recipe_gets_its_own_policy_and_loses_it(setup):
    rt, _, ops, a, b = setup
    assert backlog.recipe_policies(rt) == {}
    assert backlog.apply_policy(rt, ops, "static", None, [b.id, a.id]) == {
        "scope": "recipes", "policy": "static", "recipeIds": sorted([a.id, b.id])}
    assert backlog.recipe_policies(rt) == {a.id: "static", b.id: "static"}
    assert backlog.policy_in_force(rt)["source"] == "settings"     # the global row is untouched

    backlog.apply_policy(rt, ops, None, recipe_ids=[a.id])          # cleared
    assert backlog.recipe_policies(rt) == {b.id: "static"}
    events = _policy_events(rt)
    assert [(e["targetRecipeId"], e["details"]["before"], e["details"]["after"]) for e in events] == [
        (a.id, "static", None), (b.id, None, "static"), (a.id, None, "static")]


@pytest.mark.parametrize("args, message", [
    (("greedy", 0.9), "policy must be one of " + ", ".join(BACKLOG_POLICIES)),
    ((None, 0.9), "policy must be one of"),
    (("static", 0), "service level must be a number between 0 and 1"),
    (("static", 1), "service level must be a number between 0 and 1"),
    (("static", 1.2), "service level"),
    (("static", float("nan")), "service level"),
    (("static", "0.9"), "service level"),
    (("static", True), "service level"),
    (("static", None), "service level"),
    (("static", None, []), "non-empty list of recipe ids"),
    (("static", None, "1"), "list of recipe ids"),
    (("static", None, [1.5]), "recipe ids"),
    (("greedy", None, [1]), "policy must be one of"),
    (("static", 0.9, [1]), "the service level applies to every recipe"),
    (("static", None, [1, 999]), "no recipe 999"),
])
def test_bad_input_is_refused_and_changes_nothing(setup, args, message):
    rt, _, ops, a, b = setup
    with pytest.raises(backlog.PolicyError, match=message):
        backlog.apply_policy(rt, ops.id, *args)
    assert backlog.policy_in_force(rt) == {"policy": "reactive", "serviceLevel": 0.95, "source": "settings"}
    assert backlog.recipe_policies(rt) == {}
    assert _policy_events(rt) == []
