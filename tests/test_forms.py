"""Recipe variable schemas and form data: validation, random values, weighted choice."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delula import auth, forms, generations, recipes
from delula.demo import RECIPES
from delula.storage import catalog

SCHEMA = [
    {"id": "style", "label": "Style", "type": "dropdown", "required": True,
     "options": [{"label": "A", "value": "a"}, {"label": "B", "value": "b"}, {"label": "C", "value": "c"}]},
    {"id": "mood", "label": "Mood", "type": "radio", "required": False, "defaultValue": "calm",
     "options": [{"label": "Calm", "value": "calm"}, {"label": "Wild", "value": "wild"}]},
    {"id": "pet", "label": "Pet", "type": "emoji_button", "required": True,
     "options": [{"label": "Dog", "value": "dog", "emoji": "🐶"}, {"label": "Cat", "value": "cat", "emoji": "🐱"}]},
    {"id": "speed", "label": "Speed", "type": "slider", "required": True, "min": 0.5, "max": 2, "step": 0.5},
    {"id": "title", "label": "Title", "type": "text", "required": False, "maxLength": 10, "examples": ["hi"]},
    {"id": "loop", "label": "Loop", "type": "toggle", "required": False, "defaultValue": False},
]


def test_valid_form_gets_defaults_filled():
    clean = forms.validate(SCHEMA, {"style": "b", "pet": "cat", "speed": 1.5})
    assert clean == {"style": "b", "mood": "calm", "pet": "cat", "speed": 1.5, "loop": False}


@pytest.mark.parametrize("form, field, message", [
    ({"pet": "dog", "speed": 1}, "style", "is required"),
    ({"style": "z", "pet": "dog", "speed": 1}, "style", "must be one of"),
    ({"style": "a", "pet": "dog", "speed": 3}, "speed", "between"),
    ({"style": "a", "pet": "dog", "speed": 0.7}, "speed", "steps"),
    ({"style": "a", "pet": "dog", "speed": "1"}, "speed", "number"),
    ({"style": "a", "pet": "dog", "speed": True}, "speed", "number"),
    ({"style": "a", "pet": "dog", "speed": 1, "title": "x" * 11}, "title", "at most 10"),
    ({"style": "a", "pet": "dog", "speed": 1, "title": 5}, "title", "text"),
    ({"style": "a", "pet": "dog", "speed": 1, "loop": "yes"}, "loop", "true or false"),
    ({"style": "a", "pet": "dog", "speed": 1, "extra": 1}, "extra", "not a field"),
    ({"style": ["a"], "pet": "dog", "speed": 1}, "style", "must be one of"),
])
def test_invalid_forms_name_the_field(form, field, message):
    with pytest.raises(forms.FormError) as e:
        forms.validate(SCHEMA, form)
    assert message in e.value.errors[field]


def test_form_must_be_an_object():
    with pytest.raises(forms.FormError) as e:
        forms.validate(SCHEMA, ["style", "a"])
    assert "formData" in e.value.errors


@pytest.mark.parametrize("bad", [
    "nope", [{"type": "dropdown"}], [{"id": "a", "type": "video"}], [{"id": "a", "type": "radio", "options": []}],
    [{"id": "a", "type": "slider", "min": 5, "max": 1}], [{"id": "a", "type": "toggle"}, {"id": "a", "type": "toggle"}],
    [{"id": "a", "type": "radio", "options": [{"value": 1}], "defaultValue": 2}],
])
def test_bad_schemas_are_refused(bad):
    with pytest.raises(forms.SchemaError):
        forms.check_schema(bad)


def test_demo_schemas_are_valid_and_cover_every_field_type():
    types = set()
    for spec in RECIPES:
        forms.check_schema(spec["variables"])
        types |= {f["type"] for f in spec["variables"]}
    assert types == set(forms.FIELD_TYPES)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_random_values_are_always_valid(seed):
    rng = random.Random(seed)
    for spec in RECIPES + [{"variables": SCHEMA}]:
        form = {f["id"]: forms.random_value(f, rng) for f in spec["variables"]}
        assert forms.validate(spec["variables"], form)


def test_weighted_choice_never_draws_a_zero_count_and_follows_proportions():
    rng = random.Random(1)
    draws = Counter(forms.weighted_choice({"a": 6, "b": 3, "c": 1, "never": 0}, rng) for _ in range(20000))
    assert "never" not in draws
    assert draws["a"] / 20000 == pytest.approx(0.6, abs=0.02)
    assert draws["b"] / 20000 == pytest.approx(0.3, abs=0.02)
    assert draws["c"] / 20000 == pytest.approx(0.1, abs=0.015)


def test_weighted_form_uses_statistics_and_falls_back_per_field():
    stats = {"style": {"c": 5, "retired-value": 100}, "speed": {1.0: 3}}
    rng = random.Random(3)
    for _ in range(300):
        form = forms.weighted_form(SCHEMA, stats, rng)
        assert form["style"] == "c"  # the only still-valid value users chose
        assert form["speed"] == 1.0
        assert form["pet"] in ("dog", "cat")  # no statistics: random valid value
        assert forms.validate(SCHEMA, form) == form


def test_user_generation_counts_its_choices_in_the_same_transaction(rt):
    recipe = recipes.create_recipe(rt, name="Stats", credit_cost=2, variables=SCHEMA)
    user, _ = auth.create_user(rt, "chooser", credits=3)
    ok = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id,
                                            form_data={"style": "a", "pet": "dog", "speed": 2})
    assert ok.status_code == 202 and ok.generation["status"] == "pending"
    assert ok.body["creditsRemaining"] == 1
    refused = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id,
                                                 form_data={"style": "b", "pet": "dog", "speed": 2})
    assert refused.response() == (400, {"message": "Insufficient credits", "required": 2, "available": 1})
    invalid = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id, form_data={"style": 1})
    assert invalid.status_code == 400 and set(invalid.body["errors"]) == {"style", "pet", "speed"}
    with rt.store.begin() as s:
        stats = catalog.usage_statistics(s, [recipe.id])[recipe.id]
        assert catalog.get_recipe(s, recipe.id).usage_count == 1
    assert stats == {"style": {"a": 1}, "mood": {"calm": 1}, "pet": {"dog": 1}, "speed": {2: 1}, "loop": {False: 1}}
