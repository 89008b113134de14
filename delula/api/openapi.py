"""The OpenAPI document, built from the API's route table and its pydantic models.

Each route of :mod:`delula.api` is registered with an :class:`Operation`: its method and path,
its request body model, its parameters and, per status, a :class:`Reply` naming the response's
type. :func:`document` turns the table into the document: every type goes through pydantic's
JSON Schema generator in one pass, so the models land once in ``components/schemas`` and are
referred to from everywhere else. No schema is written by hand.

The document is OpenAPI 3.0, not 3.1, on purpose. 3.1 speaks JSON Schema 2020-12, where ``2.0``
is an integer; 3.0's schemas follow the older drafts, where an integer is a number written
without a fraction or an exponent — the API's rule (``{"recipeId": 2.0}`` is refused), which 3.1
cannot state. So pydantic's 2020-12 output is rewritten into 3.0's dialect (:func:`_openapi_30`):
``nullable`` for a ``null`` branch, ``enum`` for ``const``, ``example`` for ``examples``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

OPENAPI_VERSION = "3.0.3"
REF_TEMPLATE = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Reply:
    """A response: what it means, the type of its body (anything pydantic describes: a model, a
    union of models, ``str``...) and of its headers, all of them always sent."""

    description: str
    type: Any
    headers: Mapping[str, Any] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # "path" | "header" | "query"
    type: Any
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI's form: /api/generations/{id}
    operation_id: str
    summary: str
    responses: Mapping[int, Reply]
    body: Any = None  # the request body's model
    body_required: bool = True  # False: a request without a body means the model's defaults
    parameters: tuple[Parameter, ...] = ()
    public: bool = False  # no bearer token needed


class _Generator(GenerateJsonSchema):
    """pydantic's generator minus two things that would misdescribe the API: a title on every
    field (noise) and ``"default": null`` on a field that may be left out but never be null."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema):
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def document(operations: list[Operation], *, title: str, version: str, description: str) -> dict:
    """The OpenAPI document of ``operations``; every request requires a bearer token unless public."""
    types = {id(t): t for t in _types_of(operations)}
    mapping, definitions = TypeAdapter.json_schemas(
        [(key, "validation", TypeAdapter(t)) for key, t in types.items()],
        ref_template=REF_TEMPLATE, schema_generator=_Generator)

    def schema(type_) -> dict:
        return _openapi_30(mapping[(id(type_), "validation")])

    paths: dict[str, dict] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schema)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
                       "schemas": {name: _openapi_30(s) for name, s in definitions.get("$defs", {}).items()}},
    }


def _types_of(operations: list[Operation]):
    for op in operations:
        if op.body is not None:
            yield op.body
        for parameter in op.parameters:
            yield parameter.type
        for reply in op.responses.values():
            yield reply.type
            yield from reply.headers.values()


def _operation(op: Operation, schema) -> dict:
    out: dict[str, Any] = {"summary": op.summary, "operationId": op.operation_id}
    if op.public:
        out["security"] = []
    if op.parameters:
        out["parameters"] = [{"name": p.name, "in": p.location, "required": p.required or p.location == "path",
                              **_described(p.description), "schema": schema(p.type)} for p in op.parameters]
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {"application/json": {"schema": schema(op.body)}}}
    out["responses"] = {str(status): _reply(reply, schema) for status, reply in sorted(op.responses.items())}
    return out


def _reply(reply: Reply, schema) -> dict:
    out: dict[str, Any] = {"description": reply.description,
                           "content": {reply.media_type: {"schema": schema(reply.type)}}}
    if reply.headers:
        out["headers"] = {name: {"required": True, "schema": schema(t)} for name, t in reply.headers.items()}
    return out


def _described(description: str) -> dict:
    return {"description": description} if description else {}


def _openapi_30(schema: dict) -> dict:
    """A JSON Schema of pydantic's (2020-12) in OpenAPI 3.0's dialect: a ``{"type": "null"}`` branch
    of ``anyOf`` becomes ``nullable`` on the other branches (the ``anyOf`` goes when one is left),
    ``const`` becomes a one-value ``enum``, ``examples`` the first ``example``. The keywords the
    models produce are covered; a test validates the document as OpenAPI 3.0."""
    out = {}
    for key, value in schema.items():
        if key == "properties":
            value = {name: _openapi_30(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _openapi_30(value)
        elif key == "anyOf":
            value = [_openapi_30(s) for s in value]
        out[key] = value
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out:
        out["example"] = out.pop("examples")[0]
    branches = [s for s in out.get("anyOf", ()) if s != {"type": "null"}]
    if len(branches) < len(out.get("anyOf", ())):
        branches = [{**s, "nullable": True} for s in branches]
        del out["anyOf"]
        out.update(branches[0] if len(branches) == 1 else {"anyOf": branches})
    return out
