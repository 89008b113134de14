"""The OpenAPI document: valid, complete, and true — what the API answers conforms to it.

Four angles: the document validates as OpenAPI 3 and lists exactly the routes Flask serves (and
``OPTIONS`` names exactly their methods); a scripted walk through every status of SPEC §6
conforms to it; schemathesis, generating valid and invalid requests from the document, finds no
5xx, no answer outside it and no valid body refused except for data (over real HTTP against
PostgreSQL, bounded to a few hundred requests); and schemathesis's own command line, with its
default checks and phases, passes against the whole app.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                                response_headers_conformance, response_schema_conformance,
                                                status_code_conformance)

from delula import api, auth, demo
from delula.storage.models import Generation
from tests.support.api import bearer, make_app, serve
from tests.support.factories import add_pool_items, world

ROOT = Path(__file__).resolve().parents[1]
DOC = api.openapi_document()
EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# schemathesis's command line; the package has no __main__ to run with -m.
SCHEMATHESIS_CLI = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


def test_the_document_is_valid_openapi_3():
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(DOC)
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_the_document_lists_exactly_the_routes_flask_serves(rt):
    app = make_app(rt)
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint == "api.unrouted":
            continue
        path = re.sub(r"<(?:\w+:)?\w+>", "{id}", rule.rule)
        served |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, ops in DOC["paths"].items() for method in ops}
    assert served == documented
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            for status, response in op["responses"].items():
                assert response["content"], (path, method, status)
            if path.startswith("/api/") and path != "/api/openapi.json":
                assert "security" not in op and {"401", "503"} <= set(op["responses"]), (path, method)


def test_options_names_exactly_the_methods_each_path_serves(rt):
    """Not the methods of the catch-all behind every /api/ path (nor of Dash's page route)."""
    c = make_app(rt).test_client()
    for path, ops in DOC["paths"].items():
        r = c.options(path.replace("{id}", "1"))
        served = {m.upper() for m in ops}
        expected = served | {"OPTIONS"} | ({"HEAD"} if "GET" in served else set())
        assert r.status_code == 200 and set(r.headers["Allow"].split(", ")) == expected, (path, r.headers["Allow"])
    assert c.options("/api/nope").status_code == 404 and c.options("/api/nope").is_json


def test_request_bodies_are_closed_and_the_server_says_so(rt):
    """``additionalProperties: false``: a field the document does not name is refused, with the
    other refusals of the body, and the reason names it."""
    for name in ("InstantRequest", "GenerateRequest"):
        assert DOC["components"]["schemas"][name]["additionalProperties"] is False
    c = make_app(rt).test_client()
    _, token = auth.create_user(rt, "closed", credits=5)
    for path in ("/api/generate/instant", "/api/generate"):
        r = c.post(path, json={"recipeId": True, "note": "hi"}, headers=bearer(token))
        assert (r.status_code, r.get_json()) == (400, {"message": "Invalid request body", "errors": {
            "recipeId": "must be an integer", "note": "is not a field of this request"}})


def _operation_for(path: str) -> str:
    path = path.partition("?")[0]
    if re.fullmatch(r"/api/generations/[^/]+", path):
        return "/api/generations/{id}"
    return path


def _conforms(schema, method: str, path: str, response) -> None:
    """The response's status is documented for the operation and its body fits the schema."""
    template = _operation_for(path)
    documented = DOC["paths"][template][method.lower()]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code, documented.keys())
    schema[template][method.upper()].validate_response(response)


@pytest.mark.postgres
def test_a_walk_through_every_status_conforms_to_the_document(pg_url, make_runtime):
    rt = make_runtime(pg_url, instant_cooldown_s=60)
    auth.ensure_system_user(rt)
    w = world(rt, pool=2, cost=2)
    c = make_app(rt).test_client()
    schema = schemathesis.openapi.from_dict(DOC)
    seen = set()

    def call(method, path, token=None, **kw):
        headers = {**(bearer(token) if token else {}), **kw.pop("headers", {})}
        r = getattr(c, method)(path, headers=headers, **kw)
        _conforms(schema, method, path, r)
        seen.add((_operation_for(path), method, r.status_code))
        return r

    inst = "/api/generate/instant"
    gen = call("post", inst, w.user_token, json={"recipeId": w.recipe.id}).get_json()["generation"]
    call("post", inst, w.user_token, json={"recipeId": w.recipe.id})  # 429
    call("post", inst, w.other_token, json={"recipeId": "1"})
    call("post", inst, w.poor_token, json={"recipeId": w.recipe.id})
    call("post", inst, None, json={"recipeId": w.recipe.id})
    call("post", inst, w.other_token, json={"recipeId": w.recipe.id, "targetUserId": w.user.id})
    call("post", inst, w.other_token, json={"recipeId": 999})
    key = {"Idempotency-Key": "walk-1"}
    call("post", inst, w.other_token, json={"recipeId": w.empty.id}, headers=key)
    call("post", inst, w.other_token, json={"recipeId": 999}, headers=key)  # 422: the key, another body
    call("post", inst, w.other_token, json={"recipeId": w.empty.id})
    call("post", inst, w.other_token, data=b"x" * (70 * 1024), headers={"Content-Type": "application/json"})
    call("post", inst, w.other_token, data=b"{}", headers={"Content-Type": "text/plain"})
    with rt.store.begin() as s:
        s.query(Generation).filter(Generation.id.in_(w.pool)).with_for_update().all()  # claims in flight
        assert call("post", inst, w.other_token, json={"recipeId": w.recipe.id}).status_code == 409
    call("post", "/api/generate", w.other_token, json={"recipeId": w.recipe.id, "formData": {"mood": "wild"}})
    call("post", "/api/generate", w.other_token, json={"recipeId": w.recipe.id, "formData": {"mood": 1}})
    call("post", "/api/generate", w.poor_token, json={"recipeId": w.recipe.id})
    call("post", "/api/generate", w.other_token, json={"recipeId": 999})
    call("post", "/api/generate", None, json={"recipeId": 1})
    call("post", "/api/generate", w.other_token, data=b"[]", headers={"Content-Type": "application/xml"})
    call("post", "/api/generate", w.other_token, data=b"{" * 70000, headers={"Content-Type": "application/json"})
    for token in (w.user_token, w.other_token, None):
        call("get", f"/api/generations/{gen['id']}", token)
    call("get", "/api/generations/not-a-number", w.ops_token)
    for path in ("/api/generations", "/api/recipes", "/api/queue/stats", "/api/me", "/api/backlog"):
        call("get", path, w.ops_token)
        call("get", path, None)
    call("get", "/api/backlog", w.user_token)
    for path in ("/api/jobs/retry", "/api/jobs/cancel"):   # issue 16: bulk actions, ops only
        call("post", path, w.ops_token, json={"ids": [gen["id"], 999]})
        call("post", path, w.ops_token, json={"filter": {"source": "user"}})
        call("post", path, w.ops_token, json={"ids": [1], "filter": {}})
        call("post", path, w.product_token, json={"ids": [1]})
        call("post", path, None, json={"ids": [1]})
    call("get", "/api/audit?action=top_up&limit=5&since=2026-01-01T00:00:00Z", w.ops_token)
    call("get", "/api/audit?limit=0", w.ops_token)
    call("get", "/api/audit", w.product_token)
    call("get", "/api/openapi.json")
    call("get", "/healthz")
    call("get", "/metrics")
    statuses = {status for _, _, status in seen}
    assert statuses == {200, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429}


def valid_bodies_are_refused_only_for_data(ctx, response, case):
    """A request valid by the document is refused (400) for data the document cannot know — a
    targetUserId no user has, form data the recipe refuses, too few credits — or for a NUL
    character in a form field's name (OpenAPI 3.0 has no keyword for an object's keys); for
    nothing else. This is what schemathesis.toml's exception for the two bodies relies on."""
    if response.status_code != 400:
        return None
    body = response.json()
    if body.get("message") in ("Insufficient credits", "Invalid form data") \
            or body.get("errors") == {"targetUserId": "no such user"}:
        return None
    form = case.body.get("formData") if isinstance(case.body, dict) else None
    if body.get("errors") == {"body": "must not contain NUL characters"} and isinstance(form, dict) \
            and any("\x00" in key for key in form):
        return None
    raise AssertionError(f"a valid request was refused: {body}")


def _strategy(operation, mode):
    """Generated cases, plus (positive) the document's examples, which name demo recipes that exist."""
    generated = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        return generated
    return st.one_of(generated, *operation.get_strategies_from_examples())


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(pg_rt, mode):
    """Property-based requests from the served document, over real HTTP, as an ops user."""
    rt = pg_rt
    demo.seed(rt)
    # Generations 1..21 exist, so small generated ids and recipe ids sometimes hit real rows.
    pool = [gid for recipe_id in range(1, 8) for gid in add_pool_items(rt, recipe_id, 3)]
    assert sorted(pool) == list(range(1, 22))
    _, token = auth.create_user(rt, "fuzzer", role="ops", credits=1_000_000)
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE
                       else [valid_bodies_are_refused_only_for_data])
    with serve(make_app(rt)) as base:
        schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
        calls: Counter = Counter()
        operations = [result.ok() for result in schema.get_all_operations()]
        if mode is GenerationMode.NEGATIVE:  # only inputs can be invalid: skip operations without any
            operations = [op for op in operations
                          if {"parameters", "requestBody"} & set(DOC["paths"][op.path][op.method.lower()])]
        for operation in operations:

            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=_strategy(operation, mode))
            def run(case):
                response = case.call(base_url=base, headers=bearer(token))
                calls[(operation.label, response.status_code)] += 1
                case.validate_response(response, checks=checks)

            run()
    assert {label for label, _ in calls} == {op.label for op in operations}
    assert sum(calls.values()) >= 5 * len(operations) and not [k for k in calls if k[1] >= 500], calls


@pytest.mark.slow
@pytest.mark.postgres
def test_schemathesis_run_passes_with_its_default_checks_and_phases(pg_rt, tmp_path):
    """``schemathesis run <document> -H "Authorization: Bearer <ops token>"`` against the whole app
    (Dash included) on PostgreSQL with the demo data, as in the README, bounded to a few examples
    per operation. Its data generation's speed health check is off: a busy machine would trip it."""
    from app import create_app

    rt = pg_rt
    demo.seed(rt)
    for recipe_id in range(1, 8):
        add_pool_items(rt, recipe_id, 3)
    _, token = auth.create_user(rt, "fuzzer", role="ops", credits=1_000_000)
    with serve(create_app(rt, start_scheduler=False).server) as base:
        run = subprocess.run(
            [sys.executable, "-c", SCHEMATHESIS_CLI, "--config-file", str(ROOT / "schemathesis.toml"), "--no-color",
             "run", f"{base}/api/openapi.json", "-H", f"Authorization: Bearer {token}", "--max-examples", "20",
             "--suppress-health-check", "too_slow", "--report", "json", "--report-json-path", "report.json"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    operations = sum(len(ops) for ops in DOC["paths"].values()) - 1  # it leaves out the document's own URL
    assert report["operations"]["total"] == report["operations"]["tested"] == operations
    assert {phase: result["status"] for phase, result in report["phases"].items()} == {
        "examples": "success", "coverage": "success", "fuzzing": "success", "stateful": "success"}


@pytest.mark.slow
@pytest.mark.postgres
def test_schemathesis_covers_the_instant_claims_choices_and_batches(pg_rt):
    """Issue 15: the generated instant claims use each new field (formData, match, count, all),
    and every answer -- single, batch, miss with the choices given back -- fits the document."""
    rt = pg_rt
    demo.seed(rt)
    for recipe_id in range(1, 8):
        add_pool_items(rt, recipe_id, 6)
    _, token = auth.create_user(rt, "fuzzer", role="ops", credits=1_000_000)
    used: Counter = Counter()
    statuses: Counter = Counter()
    with serve(make_app(rt)) as base:
        schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
        operation = next(r.ok() for r in schema.get_all_operations() if r.ok().path == "/api/generate/instant")

        @settings(max_examples=120, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=_strategy(operation, GenerationMode.POSITIVE))
        def run(case):
            if isinstance(case.body, dict):
                used.update(k for k in ("formData", "match", "count", "all") if k in case.body)
            response = case.call(base_url=base, headers=bearer(token))
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS + [valid_bodies_are_refused_only_for_data])

        run()
    assert set(used) == {"formData", "match", "count", "all"}, used
    assert not [s for s in statuses if s >= 500], statuses
