"""Recipe variable schemas and form data (SPEC §4 "Recipe variable schema").

- :func:`check_schema` — is a recipe's ``variables`` list well formed?
- :func:`validate` — check a user's form data against a schema; returns clean data or per-field errors.
- :func:`validate_choices` — check the choices of an instant claim: any subset of the fields.
- :func:`matches` — whether form data has every value of some choices.
- :func:`random_value` — a random valid value for one field (the backlog's fallback).
- :func:`weighted_form` — form data drawn field by field from usage statistics, falling back to
  random values (the seed design's backlog draw; backlog jobs now draw whole combinations of
  recent choices, ``delula.choices``, which falls back to the statistics field by field).
- :func:`countable` — the part of a user's form data the usage statistics may count.
- :func:`counted_fields` — the fields whose values may be counted and shown (every one but text).

Free text is never counted and never drawn from the statistics: backlog jobs are drawn from them
and handed, prompt included, to whoever claims them, so one user's text would reach a stranger.
A backlog job's text field takes what the recipe's author wrote (an example, the default, the
label) instead.
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping

FIELD_TYPES = ("dropdown", "radio", "emoji_button", "slider", "text", "toggle")
CHOICE_TYPES = ("dropdown", "radio", "emoji_button")
COUNTED_TYPES = (*CHOICE_TYPES, "slider", "toggle")  # every type but text
MAX_TEXT = 2000


class SchemaError(ValueError):
    """A recipe's variables are not a valid schema."""


class FormError(ValueError):
    """Form data does not fit the schema; ``errors`` maps field id to a sentence."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_schema(variables) -> list[dict]:
    """Raise :class:`SchemaError` unless ``variables`` is a well-formed list of fields."""
    if not isinstance(variables, list):
        raise SchemaError("variables must be a list of fields")
    seen: set[str] = set()
    for i, f in enumerate(variables):
        where = f"field {i}"
        if not isinstance(f, dict):
            raise SchemaError(f"{where} must be an object")
        fid = f.get("id")
        if not isinstance(fid, str) or not fid or len(fid) > 100:
            raise SchemaError(f"{where} needs a string id")
        where = f"field {fid!r}"
        if fid in seen:
            raise SchemaError(f"{where} appears twice")
        seen.add(fid)
        ftype = f.get("type")
        if ftype not in FIELD_TYPES:
            raise SchemaError(f"{where} has unknown type {ftype!r} (expected one of {', '.join(FIELD_TYPES)})")
        if ftype in CHOICE_TYPES:
            options = f.get("options")
            if not isinstance(options, list) or not options:
                raise SchemaError(f"{where} needs a non-empty options list")
            for o in options:
                if not isinstance(o, dict) or "value" not in o:
                    raise SchemaError(f"{where} has an option without a value")
        elif ftype == "slider":
            lo, hi, step = f.get("min"), f.get("max"), f.get("step", 1)
            if not (_is_number(lo) and _is_number(hi) and _is_number(step)) or hi < lo or step <= 0:
                raise SchemaError(f"{where} needs numeric min <= max and a positive step")
        elif ftype == "text":
            ml = f.get("maxLength", MAX_TEXT)
            if not isinstance(ml, int) or isinstance(ml, bool) or ml < 1:
                raise SchemaError(f"{where} needs a positive integer maxLength")
        if "defaultValue" in f and f["defaultValue"] is not None:
            err = _field_error(f, f["defaultValue"])
            if err:
                raise SchemaError(f"{where} has an invalid defaultValue: {err}")
    return variables


def option_values(field: Mapping) -> list:
    return [o["value"] for o in field.get("options", [])]


def _slider_ok(field: Mapping, v) -> bool:
    lo, hi, step = field["min"], field["max"], field.get("step", 1)
    if not (lo <= v <= hi):
        return False
    k = (v - lo) / step
    return abs(k - round(k)) < 1e-9


def _field_error(field: Mapping, value) -> str | None:
    ftype = field["type"]
    if ftype in CHOICE_TYPES:
        allowed = option_values(field)
        if not any(value == a and type(value) is type(a) for a in allowed):
            shown = ", ".join(repr(a) for a in allowed[:10])
            return f"must be one of {shown}"
    elif ftype == "slider":
        if not _is_number(value):
            return "must be a number"
        if not _slider_ok(field, value):
            return f"must be between {field['min']} and {field['max']} in steps of {field.get('step', 1)}"
    elif ftype == "text":
        if not isinstance(value, str):
            return "must be text"
        if len(value) > field.get("maxLength", MAX_TEXT):
            return f"must be at most {field.get('maxLength', MAX_TEXT)} characters"
        if "\x00" in value:
            return "must not contain NUL characters"
    elif ftype == "toggle":
        if not isinstance(value, bool):
            return "must be true or false"
    return None


def validate(variables: list[dict], form_data) -> dict:
    """Clean form data for a schema, defaults filled in; raises :class:`FormError`."""
    if not isinstance(form_data, dict):
        raise FormError({"formData": "must be an object"})
    fields = {f["id"]: f for f in variables}
    errors: dict[str, str] = {}
    for key in form_data:
        if key not in fields:
            errors[str(key)[:100]] = "is not a field of this recipe"
    clean = {}
    for fid, field in fields.items():
        if fid in form_data and form_data[fid] is not None and form_data[fid] != "":
            err = _field_error(field, form_data[fid])
            if err:
                errors[fid] = err
            else:
                clean[fid] = form_data[fid]
        elif field.get("defaultValue") is not None:
            clean[fid] = field["defaultValue"]
        elif field.get("required"):
            errors[fid] = "is required"
    if errors:
        raise FormError(errors)
    return clean


def validate_choices(variables: list[dict], choices) -> dict:
    """The choices an instant claim asks for: any subset of the recipe's fields, each value
    valid as in :func:`validate`, nothing filled in. Raises :class:`FormError`."""
    if not isinstance(choices, dict):
        raise FormError({"formData": "must be an object"})
    fields = {f["id"]: f for f in variables}
    errors: dict[str, str] = {}
    for key, value in choices.items():
        field = fields.get(key)
        if field is None:
            errors[str(key)[:100]] = "is not a field of this recipe"
        elif (err := _field_error(field, value)) is not None:
            errors[key] = err
    if errors:
        raise FormError(errors)
    return dict(choices)


def choice_from_text(variables: list[dict], text: str) -> tuple[str, object]:
    """``field=value`` as typed on a command line, as ``(field, value)``: the value as written if
    the field takes it, else read as JSON (``3``, ``true``) if that fits, else as written (for
    :func:`validate_choices` to refuse with its reason). Raises :class:`FormError` without ``=``."""
    fid, sep, raw = text.partition("=")
    if not sep or not fid:
        raise FormError({"choice": f"{text!r} is not field=value"})
    field = next((f for f in variables if f["id"] == fid), None)
    if field is None or _field_error(field, raw) is None:
        return fid, raw
    try:
        value = json.loads(raw)
    except ValueError:
        return fid, raw
    return fid, value if _field_error(field, value) is None else raw


def matches(form_data: Mapping, choices: Mapping) -> bool:
    """Whether ``form_data`` has every value of ``choices`` (JSON equality: ``1 == 1.0``, and a
    boolean is no number). The claim function in ``storage/sql/`` asks the same with ``@>``."""
    return all(k in form_data and _same(form_data[k], v) for k, v in choices.items())


def _same(a, b) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def random_value(field: Mapping, rng: random.Random):
    """A uniformly random valid value for one field."""
    ftype = field["type"]
    if ftype in CHOICE_TYPES:
        return rng.choice(option_values(field))
    if ftype == "slider":
        lo, hi, step = field["min"], field["max"], field.get("step", 1)
        n = int(math.floor((hi - lo) / step + 1e-9))
        v = lo + step * rng.randint(0, n)
        return int(v) if all(isinstance(x, int) for x in (lo, step)) else round(v, 10)
    if ftype == "toggle":
        return rng.random() < 0.5
    if ftype == "text":
        examples = [e for e in field.get("examples") or [] if isinstance(e, str)
                    and len(e) <= field.get("maxLength", MAX_TEXT)]
        if examples:
            return rng.choice(examples)
        if isinstance(field.get("defaultValue"), str) and field["defaultValue"]:
            return field["defaultValue"]
        return str(field.get("label") or field["id"])[: field.get("maxLength", MAX_TEXT)]
    raise SchemaError(f"unknown field type {ftype!r}")


def weighted_choice(counts: Mapping, rng: random.Random):
    """A key of ``counts`` drawn with probability proportional to its count (zero never drawn)."""
    items = [(v, c) for v, c in counts.items() if c > 0]
    if not items:
        raise ValueError("no positive counts")
    total = sum(c for _, c in items)
    x = rng.random() * total
    for value, c in items:
        x -= c
        if x < 0:
            return value
    return items[-1][0]


def counted_fields(variables: list[dict]) -> list[str]:
    """The ids of the fields whose values may be counted and shown to staff: choice, slider and
    toggle fields, never free text."""
    return [f["id"] for f in variables if f.get("type") in COUNTED_TYPES]


def countable(variables: list[dict], form_data: Mapping) -> dict:
    """The values of ``form_data`` the usage statistics may count (:func:`counted_fields`)."""
    counted = set(counted_fields(variables))
    return {k: v for k, v in form_data.items() if k in counted}


def weighted_form(variables: list[dict], stats: Mapping[str, Mapping], rng: random.Random) -> dict:
    """Form data drawn field by field: per field a value weighted by how often users chose it
    (only values still valid for the schema), else a random valid value. Always validated.
    Text fields ignore the statistics (rows counted before text was excluded included)."""
    form = {}
    for field in variables:
        fid = field["id"]
        counted = stats.get(fid) if field["type"] in COUNTED_TYPES else None
        counts = {v: c for v, c in (counted or {}).items() if c > 0 and _field_error(field, v) is None}
        form[fid] = weighted_choice(counts, rng) if counts else random_value(field, rng)
    return validate(variables, form)
