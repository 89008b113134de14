"""Backlog form data that follows demand (``delula.choices``): every draw validates, the
exploration share holds, text never comes from an observation, and combinations stay together
where per-field draws break them apart."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delula import choices, forms


def _options(*values):
    return [{"label": str(v), "value": v} for v in values]


ANIMALS = ("bengal cat", "golden retriever", "corgi", "red panda")
SPORTS = ("pole vault", "frisbee", "surfing", "sumo")
SCHEMA = [
    {"id": "animal", "label": "Animal", "type": "dropdown", "required": True, "options": _options(*ANIMALS)},
    {"id": "sport", "label": "Sport", "type": "radio", "required": True, "options": _options(*SPORTS)},
    {"id": "speed", "label": "Speed", "type": "slider", "required": True, "min": 1, "max": 5, "step": 1},
    {"id": "loud", "label": "Loud", "type": "toggle", "required": False, "defaultValue": False},
    {"id": "caption", "label": "Caption", "type": "text", "required": True, "maxLength": 40,
     "examples": ["Going for gold", "A personal best"]},
    {"id": "note", "label": "Note", "type": "text", "required": False, "maxLength": 40},
]
AUTHOR_TEXT = {"caption": {"Going for gold", "A personal best"}, "note": {"Note"}}


def _draw(observations, n, exploration=0.0, seed=1, **kw):
    return choices.draw_forms(SCHEMA, observations, n, exploration=exploration, rng=random.Random(seed), **kw)


# values an observation may hold: valid ones, retired ones, wrong types, fields the schema lacks, text
_value = st.one_of(st.sampled_from([*ANIMALS, *SPORTS, "unicorn", "ballet"]), st.integers(-2, 8),
                   st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                   st.text(max_size=50), st.lists(st.integers(), max_size=2))
_observation = st.tuples(
    st.dictionaries(st.sampled_from(["animal", "sport", "speed", "loud", "caption", "note", "gone"]), _value,
                    max_size=6),
    st.one_of(st.integers(-1, 5), st.floats(-1, 10, allow_nan=False)))


@settings(max_examples=150, deadline=None)
@given(st.lists(_observation, max_size=25), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_every_drawn_form_validates_and_its_text_is_the_authors(observations, exploration, seed):
    drawn = _draw(observations, 8, exploration, seed)
    assert len(drawn) == 8
    for form in drawn:
        assert forms.validate(SCHEMA, form) == form
        assert set(form) == {f["id"] for f in SCHEMA}
        for fid, allowed in AUTHOR_TEXT.items():
            assert form[fid] in allowed
    for form in choices.marginal_forms(SCHEMA, observations, 4, random.Random(seed)):
        assert forms.validate(SCHEMA, form) == form


def test_text_is_never_taken_from_an_observation():
    secret = {"animal": "corgi", "caption": "my secret words", "note": "call me on 555"}
    assert choices.usable(SCHEMA, [(secret, 1)]) == [({"animal": "corgi"}, 1.0)]
    for form in _draw([(secret, 100)], 300) + choices.marginal_forms(SCHEMA, [(secret, 100)], 300, random.Random(2)):
        assert form["animal"] == "corgi"
        assert form["caption"] in AUTHOR_TEXT["caption"] and form["note"] == "Note"


def test_usable_merges_combinations_and_drops_what_the_schema_no_longer_allows():
    seen = choices.usable(SCHEMA, [
        ({"animal": "corgi", "sport": "sumo"}, 1),
        ({"sport": "sumo", "animal": "corgi", "gone": "a field removed since"}, 2),   # the same, once stripped
        ({"animal": "unicorn", "sport": "frisbee"}, 5),     # a retired value: dropped whole
        ({"animal": "corgi", "speed": "fast"}, 5),          # a wrong type: dropped whole
        ({"loud": True}, 1), ({"loud": 1}, 1),              # true is no number, 1 no boolean
        ({"caption": "only text"}, 4),                      # nothing countable left
        ({"animal": "corgi"}, 0), ({"animal": "corgi"}, -1),   # no weight
        ({"animal": ["corgi"]}, 1),                         # unhashable
    ])
    assert seen == [({"animal": "corgi", "sport": "sumo"}, 3.0), ({"loud": True}, 1.0)]
    assert choices.marginals(seen) == {"animal": {"corgi": 3.0}, "sport": {"sumo": 3.0}, "loud": {True: 1.0}}


def test_a_combination_stays_together_and_open_fields_come_from_the_observations():
    observed = [({"animal": "bengal cat", "sport": "pole vault"}, 6), ({"animal": "golden retriever"}, 3),
                ({"speed": 4}, 1)]
    drawn = _draw(observed, 2000)
    pairs = Counter((f["animal"], f["sport"]) for f in drawn)
    # the cat always pole-vaults; the retriever's sport comes from the sports asked for (only the vault)
    assert set(pairs) == {("bengal cat", "pole vault"), ("golden retriever", "pole vault")}
    assert {f["speed"] for f in drawn if f["animal"] == "bengal cat"} == {4}
    counted = Counter(f["animal"] for f in drawn)
    # by weight, 6 : 3 : 1; the speed-only observation leaves the animal to the animals' counts (6 : 3)
    assert counted["bengal cat"] / 2000 == pytest.approx(0.6 + 0.1 * 6 / 9, abs=0.03)


def test_fields_nobody_asked_about_fall_back_to_usage_then_to_random_values():
    usage = {"sport": {"surfing": 9, "retired": 100}, "caption": {"someone's words": 50}, "speed": {"2": 3}}
    drawn = _draw([({"animal": "corgi"}, 1)], 500, usage=usage)
    assert {f["sport"] for f in drawn} == {"surfing"}          # the still valid value users chose
    assert {f["speed"] for f in drawn} == {1, 2, 3, 4, 5}      # a bad count key: random valid values
    assert all(f["caption"] in AUTHOR_TEXT["caption"] for f in drawn)
    assert {f["loud"] for f in drawn} == {True, False}
    nothing = _draw([], 500)                                    # nothing at all: the schema alone
    assert {f["animal"] for f in nothing} == set(ANIMALS)


@pytest.mark.parametrize("exploration", [0.0, 0.1, 0.3, 1.0])
def test_the_exploration_share_is_respected(exploration):
    n = 20000
    drawn = _draw([({"animal": "corgi", "sport": "sumo"}, 1)], n, exploration, seed=11)
    off = sum(1 for f in drawn if (f["animal"], f["sport"]) != ("corgi", "sumo"))
    # an exploring draw repeats the observed pair by chance 1 time in 16
    assert off / n == pytest.approx(exploration * (1 - 1 / 16), abs=0.012)
    if exploration == 1.0:
        assert Counter(f["animal"] for f in drawn)["corgi"] / n == pytest.approx(0.25, abs=0.015)


def test_joint_draws_keep_the_correlation_that_per_field_draws_lose():
    observed = [({"animal": "bengal cat", "sport": "pole vault"}, 50), ({"animal": "golden retriever",
                                                                         "sport": "frisbee"}, 50)]
    n = 4000

    def share_asked(drawn):
        return sum(1 for f in drawn if {"animal": f["animal"], "sport": f["sport"]} in [c for c, _ in observed]) / n

    joint = share_asked(_draw(observed, n, exploration=0.1, seed=5))
    marginal = share_asked(choices.marginal_forms(SCHEMA, observed, n, random.Random(5)))
    assert joint == pytest.approx(0.9 + 0.1 * 2 / 16, abs=0.02)     # every non-exploring draw
    assert marginal == pytest.approx(0.5, abs=0.03)                 # the four pairs alike
    assert joint > marginal + 0.3


def test_a_schema_no_form_fits_raises():
    with pytest.raises(forms.SchemaError):
        choices.draw_forms([{"id": "clip", "type": "video"}], [], 1, exploration=0.0, rng=random.Random(1))
