"""The JSON API of SPEC §6: a Flask blueprint, thin over the domain functions.

Every route reads the runtime with :func:`delula.runtime.current`, authenticates with
``Authorization: Bearer <token>`` and hands a validated request to one domain call; the domain's
result already carries the SPEC's status and body (``ClaimResult.response()``,
``CreateResult.response()``), so the CLI, the dashboard and this API answer alike.

Error contract. Under ``/api/*``, ``/healthz`` and ``/metrics`` every error is JSON
``{"message": ...}`` — never Flask's HTML page: 400 bad body (with per-field ``errors``), 401 (with
``WWW-Authenticate: Bearer``), 403, 404 (also for URLs no route serves, which Dash's catch-all
would otherwise answer with its index page), 405, 413 (bodies above ``MAX_CONTENT_LENGTH``), 415,
503 when the database is unreachable (:class:`storage.DatabaseUnavailable`) and 500 for a bug.
Other paths belong to Dash and keep Flask's default handling.

Request bodies are parsed strictly before anything touches the database: ``Content-Type:
application/json`` (else 415), UTF-8, a JSON object, integers within 64 bits, finite numbers, no
NUL characters or lone surrogates in any string (PostgreSQL could not store them). Unknown keys
are ignored, so older servers accept newer clients; the OpenAPI document says so
(``additionalProperties: true``).

A malformed instant request is **not** recorded as a claim event: it is refused here, before
the claim, and changes nothing at all. Requests that are well formed but name an unknown or
inactive recipe or an unknown target user reach the claim, which records them with outcome
``invalid`` — those are the "failed claims" the dashboard shows.
"""
from __future__ import annotations

import json
import logging
import math
import re
from functools import wraps

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import auth, backlog, claims, generations, metrics, queue_status, recipes, runtime
from .auth import STAFF_ROLES
from .storage import STATUSES, SYSTEM_BACKLOG_USER_ID, DatabaseUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
MAX_KEY_LENGTH = 200
MAX_USER_ID_LENGTH = 64
LIST_LIMIT = 100  # GET /api/generations: the caller's newest generations
# Paths whose errors are JSON; everything else is Dash's.
JSON_PREFIXES = ("/api/", "/healthz", "/metrics")


class ApiError(Exception):
    """A refusal with its HTTP status and JSON body; raised anywhere inside a view."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}
        self.headers = headers or {}


def init_app(app: Flask, rt) -> None:
    """Mount the API on ``app`` with ``rt`` as the request runtime, and JSON errors for its paths."""
    app.extensions["delula"] = rt
    app.session_interface = _NoSessionUnderApi()
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error_outside_views)
    app.register_error_handler(500, _server_error_outside_views)


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith(JSON_PREFIXES)


class _NoSessionUnderApi(SecureCookieSessionInterface):
    """The API authenticates by bearer token only: under its paths the dashboard's session cookie is
    not read (a browser's cookie never authorizes an API call) and no request pays for opening it."""

    def open_session(self, app, request):
        if is_api_path(request.path):
            return self.make_null_session(app)
        return super().open_session(app, request)


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# --- errors ---------------------------------------------------------------------------------

@bp.errorhandler(ApiError)
def _api_error(e: ApiError):
    return _json(e.status, e.body, e.headers)


@bp.errorhandler(DatabaseUnavailable)
def _database_unavailable(e: DatabaseUnavailable):
    log.warning("database unavailable during %s %s: %s", request.method, request.path, e)
    return _json(503, {"message": "Database unavailable"}, {"Retry-After": "5"})


@bp.errorhandler(HTTPException)
def _http_error(e: HTTPException):
    return _http_json(e)


@bp.errorhandler(Exception)
def _unexpected(e: Exception):
    log.exception("unhandled error in %s %s", request.method, request.path)
    return _json(500, {"message": "Internal server error"})


def _http_json(e: HTTPException) -> Response:
    messages = {404: "Not found", 405: "Method not allowed",
                413: "Request body too large", 415: "Unsupported media type"}
    headers = {}
    if e.code == 405 and getattr(e, "valid_methods", None):
        headers["Allow"] = ", ".join(e.valid_methods)
    return _json(e.code or 500, {"message": messages.get(e.code, e.name)}, headers)


def _http_error_outside_views(e: HTTPException):
    """404/405/413 raised by routing, before any view: JSON for API paths, Flask's page elsewhere."""
    if e.code is None or not is_api_path(request.path):
        return e
    return _http_json(e)


def _server_error_outside_views(e: HTTPException):
    if not is_api_path(request.path):
        return e
    return _json(500, {"message": "Internal server error"})


# --- authentication -------------------------------------------------------------------------

def _unauthorized(message: str, error: str | None = None) -> ApiError:
    challenge = 'Bearer realm="delula"' + (f', error="{error}"' if error else "")
    return ApiError(401, message, {"WWW-Authenticate": challenge})


def bearer_token() -> str:
    """This request's bearer token, unchecked; raises 401 when the header is missing or malformed."""
    header = request.headers.get("Authorization", "")
    if not header.strip():
        raise _unauthorized("Authentication required: send Authorization: Bearer <token>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization must be 'Bearer <token>'", "invalid_request")
    return token.strip()


def _invalid_token() -> ApiError:
    return _unauthorized("Invalid or revoked token", "invalid_token")


def current_user():
    """The user behind this request's bearer token; raises 401 when missing or not valid."""
    user = auth.authenticate_token(runtime.current(), bearer_token())
    if user is None:
        raise _invalid_token()
    return user


def authenticated(*roles: str):
    """Decorator: the view receives the authenticated user first; ``roles`` restricts who may call."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if roles and user.role not in roles:
                raise ApiError(403, f"This needs the role {' or '.join(roles)}")
            return view(user, *args, **kwargs)
        return wrapper
    return decorate


# --- request bodies -------------------------------------------------------------------------

def _invalid(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Invalid request body", errors=errors)


def _parse_int(text: str) -> int:
    if len(text) > 21:
        raise ValueError("integer too large")
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError("integer too large")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _bad_string(data) -> str | None:
    """Why a string somewhere in ``data`` cannot be stored (NUL, lone surrogate), else ``None``."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "must not contain unpaired surrogates"
    return None


def json_body() -> dict:
    """The request's JSON object, or a 400/413/415 :class:`ApiError` — before any database access."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    raw = request.get_data(cache=True)  # raises 413 when Content-Length is above MAX_CONTENT_LENGTH
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit without an error: treat reaching it as too large.
        raise RequestEntityTooLarge()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid({"body": "is not valid UTF-8"}) from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        reason = str(e) if "too large" in str(e) or "out of range" in str(e) else "is not valid JSON"
        raise _invalid({"body": reason}) from None
    if not isinstance(data, dict):
        raise _invalid({"body": "must be a JSON object"})
    bad = _bad_string(data)
    if bad:
        raise _invalid({"body": bad})
    return data


def _int32_field(body: dict, name: str, errors: dict) -> int | None:
    value = body.get(name)
    if name not in body or value is None:
        errors[name] = "is required"
    elif isinstance(value, bool) or not isinstance(value, int):
        errors[name] = "must be an integer"
    elif not INT32[0] <= value <= INT32[1]:
        errors[name] = "is out of range"
    else:
        return value
    return None


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header: 1-200 printable ASCII characters, or absent."""
    if "Idempotency-Key" not in request.headers:
        return None
    key = request.headers["Idempotency-Key"].strip()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or any(not " " <= c <= "~" for c in key):
        raise _invalid({"Idempotency-Key": f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters"})
    return key


# --- routes ---------------------------------------------------------------------------------

@bp.post("/api/generate/instant")
def instant():
    """Authenticates by itself: the token check and the claim are one statement (one round trip)."""
    token = bearer_token()
    try:
        recipe_id, target, key = _instant_request()
    except (ApiError, HTTPException):
        current_user()  # a refused token comes before a refused body
        raise
    user, result = claims.instant_claim_with_token(runtime.current(), token, recipe_id=recipe_id,
                                                   target_user_id=target, idempotency_key=key)
    if user is None:
        raise _invalid_token()
    if result is None:
        raise ApiError(403, "targetUserId needs the role product or ops")
    status, payload = result.response()
    headers = {"Retry-After": str(payload["retryAfter"])} if status == 429 else None
    return _json(status, payload, headers)


def _instant_request() -> tuple[int, str | None, str | None]:
    """``recipeId``, ``targetUserId`` and the idempotency key of an instant claim, or a 4xx."""
    body = json_body()
    errors: dict[str, str] = {}
    recipe_id = _int32_field(body, "recipeId", errors)
    target = body.get("targetUserId")
    if "targetUserId" in body:
        if not isinstance(target, str) or not 1 <= len(target) <= MAX_USER_ID_LENGTH:
            errors["targetUserId"] = f"must be a user id (1-{MAX_USER_ID_LENGTH} characters)"
        elif target == SYSTEM_BACKLOG_USER_ID:
            errors["targetUserId"] = "must not be the system user"
    key = None
    try:
        key = idempotency_key()
    except ApiError as e:
        errors.update(e.body["errors"])
    if errors:
        raise _invalid(errors)
    return recipe_id, target, key


@bp.post("/api/generate")
@authenticated()
def generate(user):
    body = json_body()
    errors: dict[str, str] = {}
    recipe_id = _int32_field(body, "recipeId", errors)
    form_data = body.get("formData", {})
    if not isinstance(form_data, dict):
        errors["formData"] = "must be an object"
    if errors:
        raise _invalid(errors)
    result = generations.create_user_generation(runtime.current(), user_id=user.id, recipe_id=recipe_id,
                                                form_data=form_data)
    return _json(*result.response())


@bp.get("/api/generations/<generation_id>")
@authenticated()
def generation(user, generation_id: str):
    not_found = ApiError(404, "Generation not found")
    if not re.fullmatch(r"[0-9]{1,18}", generation_id):
        raise not_found
    gen = generations.get_generation(runtime.current(), int(generation_id), viewer_id=user.id,
                                     viewer_role=user.role)
    if gen is None:
        raise not_found
    return _json(200, generations.generation_json(gen))


@bp.get("/api/generations")
@authenticated()
def my_generations(user):
    rows = generations.list_generations(runtime.current(), user.id, limit=LIST_LIMIT)
    return _json(200, {"generations": [generations.generation_json(g) for g in rows]})



@bp.get("/api/recipes")
@authenticated()
def recipe_list(user):
    return _json(200, {"recipes": recipes.list_with_availability(runtime.current())})


@bp.get("/api/backlog")
@authenticated(*STAFF_ROLES)
def backlog_status(user):
    return _json(200, {"recipes": backlog.status(runtime.current())})


@bp.get("/api/queue/stats")
@authenticated()
def queue_stats(user):
    return _json(200, queue_status.stats(runtime.current()))


@bp.get("/api/me")
@authenticated()
def me(user):
    return _json(200, auth.user_json(user))


@bp.get("/api/openapi.json")
def openapi():
    return _json(200, openapi_document())


@bp.get("/healthz")
def healthz():
    if runtime.current().store.ping():
        return _json(200, {"status": "ok", "database": "ok"})
    return _json(503, {"status": "degraded", "database": "unreachable", "message": "Database unavailable"})


@bp.get("/metrics")
def prometheus_metrics():
    return Response(metrics.render(runtime.current()), content_type=metrics.CONTENT_TYPE)


@bp.route("/api", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/api/", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unrouted(rest: str = ""):
    """URLs under /api that no route serves: 405 when another method would, else 404.

    Without this, Dash's catch-all page route would answer ``GET /api/typo`` with HTML.
    """
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != request.endpoint:
            allowed.add(method)
    if allowed:
        raise ApiError(405, "Method not allowed", {"Allow": ", ".join(sorted(allowed))})
    raise ApiError(404, "Not found")


# --- OpenAPI --------------------------------------------------------------------------------

def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict, example: dict | None = None) -> dict:
    media = {"schema": schema, **({"example": example} if example is not None else {})}
    return {"content": {"application/json": media}}


def _response(description: str, schema: dict | str = "Error", headers: dict | None = None) -> dict:
    out = {"description": description, **_content(_ref(schema) if isinstance(schema, str) else schema)}
    if headers:
        out["headers"] = headers
    return out


_UNAUTHORIZED = _response("Missing, malformed or revoked bearer token", headers={
    "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}})
_UNAVAILABLE = _response("The database is unreachable")
_BAD_BODY = {
    "400": _response("Invalid body; per-field reasons in errors", "ValidationError"),
    "413": _response("Body larger than 64 KiB"),
    "415": _response("Content-Type is not application/json"),
}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def openapi_document() -> dict:
    """An OpenAPI 3.0 document of every route, with the schemas the API really answers."""
    integer = {"type": "integer"}
    string = {"type": "string"}
    timestamp = {"type": "string", "format": "date-time"}
    schemas = {
        "Error": {"type": "object", "required": ["message"], "properties": {"message": string}},
        "ValidationError": {
            "type": "object", "required": ["message", "errors"],
            "properties": {"message": string,
                           "errors": {"type": "object", "additionalProperties": string,
                                      "description": "field name → reason"}}},
        "InsufficientCredits": {
            "type": "object", "required": ["message", "required", "available"],
            "properties": {"message": {"type": "string", "enum": ["Insufficient credits"]},
                           "required": integer, "available": integer}},
        "NoInstantGeneration": {
            "type": "object", "required": ["message", "fallbackToModal"],
            "properties": {"message": string, "fallbackToModal": {"type": "boolean", "enum": [True]}}},
        "RateLimited": {
            "type": "object", "required": ["message", "retryAfter"],
            "properties": {"message": string, "retryAfter": {"type": "integer", "minimum": 1}}},
        "Generation": {
            "type": "object",
            "required": ["id", "recipeId", "userId", "status", "formData", "assetUrl", "thumbnailUrl",
                         "metadata", "error", "createdAt", "updatedAt", "completedAt"],
            "properties": {
                "id": integer, "recipeId": integer, "userId": string,
                "status": {"type": "string", "enum": list(STATUSES)},
                "formData": {"type": "object"}, "assetUrl": _nullable(string),
                "thumbnailUrl": _nullable(string), "metadata": {"type": "object"},
                "error": _nullable(string), "createdAt": timestamp, "updatedAt": timestamp,
                "completedAt": _nullable(timestamp)}},
        "Charged": {
            "type": "object", "required": ["generation", "creditsCharged", "creditsRemaining"],
            "properties": {"generation": _ref("Generation"), "creditsCharged": integer,
                           "creditsRemaining": integer}},
        "InstantRequest": {
            "type": "object", "required": ["recipeId"], "additionalProperties": True,
            "properties": {
                "recipeId": {"type": "integer", "minimum": INT32[0], "maximum": INT32[1]},
                "targetUserId": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_LENGTH,
                                 "description": "credit another user (roles product and ops only)"}}},
        "GenerateRequest": {
            "type": "object", "required": ["recipeId"], "additionalProperties": True,
            "properties": {
                "recipeId": {"type": "integer", "minimum": INT32[0], "maximum": INT32[1]},
                "formData": {"type": "object", "description": "values by variable id; defaults fill gaps"}}},
        "Recipe": {
            "type": "object",
            "required": ["id", "name", "slug", "creditCost", "variables", "instantAvailable"],
            "properties": {
                "id": integer, "name": string, "slug": string, "description": string,
                "creditCost": {"type": "integer", "minimum": 0}, "isActive": {"type": "boolean"},
                "modelId": string, "variables": {"type": "array", "items": {"type": "object"}},
                "minBacklog": _nullable(integer), "usageCount": integer,
                "instantAvailable": {"type": "integer", "minimum": 0}}},
        "BacklogRecipe": {
            "type": "object", "required": ["recipeId", "name", "completed", "inFlight", "target", "deficit"],
            "properties": {
                "recipeId": integer, "name": string, "completed": integer, "inFlight": integer,
                "target": integer, "deficit": {"type": "integer", "minimum": 0}, "minimum": integer,
                "claimRatePerMin": {"type": "number"}, "leadTimeMin": {"type": "number"},
                "belowMinimum": {"type": "boolean"}}},
        "QueueStats": {
            "type": "object",
            "required": ["pending", "processing", "completedLastHour", "failedLastHour", "avgProcessingSeconds",
                         "p95ProcessingSeconds", "cachedAt"],
            "properties": {
                "pending": integer, "processing": integer, "completedLastHour": integer,
                "failedLastHour": integer, "avgProcessingSeconds": _nullable({"type": "number"}),
                "p95ProcessingSeconds": _nullable({"type": "number"}), "cachedAt": timestamp}},
        "Me": {
            "type": "object", "required": ["id", "username", "role", "credits"],
            "properties": {"id": string, "username": string,
                           "role": {"type": "string", "enum": list(auth.ROLES)}, "credits": integer}},
        "Health": {
            "type": "object", "required": ["status", "database"],
            "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]},
                           "database": {"type": "string", "enum": ["ok", "unreachable"]},
                           "message": string}},
    }
    retry_after = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1},
                                   "description": "seconds until the cooldown passes"}}
    authed = {"401": _UNAUTHORIZED, "503": _UNAVAILABLE}
    paths = {
        "/api/generate/instant": {"post": {
            "summary": "Claim a finished backlog generation instantly",
            "operationId": "instantClaim",
            "parameters": [{
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "a repeat by the same user returns the first response and never charges twice",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH,
                           "pattern": "^[!-~]([ -~]*[!-~])?$"}}],
            "requestBody": {"required": True, **_content(_ref("InstantRequest"), {"recipeId": 1})},
            "responses": {
                "200": _response("Claimed and charged", "Charged"),
                "400": _response("Invalid body, or insufficient credits", {"oneOf": [
                    _ref("ValidationError"), _ref("InsufficientCredits")]}),
                **authed,
                "403": _response("targetUserId given without role product or ops"),
                "404": _response("Recipe not found (unknown or inactive), or no instant generation available",
                                 {"anyOf": [_ref("NoInstantGeneration"), _ref("Error")]}),
                "409": _response("Every claimable item was taken by concurrent claims", "NoInstantGeneration"),
                "413": _BAD_BODY["413"], "415": _BAD_BODY["415"],
                "429": _response("Cooldown after the credited user's last claim", "RateLimited",
                                 headers=retry_after),
            }}},
        "/api/generate": {"post": {
            "summary": "Queue a normal generation (validated, charged, pending)",
            "operationId": "createGeneration",
            "requestBody": {"required": True, **_content(_ref("GenerateRequest"), {
                "recipeId": 2, "formData": {"dish": "ramen", "mess": 3}})},
            "responses": {
                "202": _response("Charged and queued; the generation is pending", "Charged"),
                "400": _response("Invalid body or form data, or insufficient credits", {"oneOf": [
                    _ref("ValidationError"), _ref("InsufficientCredits")]}),
                **authed,
                "404": _response("Recipe not found (unknown or inactive)"),
                "413": _BAD_BODY["413"], "415": _BAD_BODY["415"],
            }}},
        "/api/generations/{id}": {"get": {
            "summary": "One generation (its owner and staff only; 404 for anyone else)",
            "operationId": "getGeneration",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {"200": _response("The generation", "Generation"), **authed,
                          "404": _response("No such generation, or not visible to the caller")}}},
        "/api/generations": {"get": {
            "summary": f"The caller's own generations, newest first (at most {LIST_LIMIT})",
            "operationId": "listGenerations",
            "responses": {"200": _response("Generations", {
                "type": "object", "required": ["generations"],
                "properties": {"generations": {"type": "array", "items": _ref("Generation")}}}), **authed}}},
        "/api/recipes": {"get": {
            "summary": "Active recipes with the number of instantly claimable generations",
            "operationId": "listRecipes",
            "responses": {"200": _response("Recipes", {
                "type": "object", "required": ["recipes"],
                "properties": {"recipes": {"type": "array", "items": _ref("Recipe")}}}), **authed}}},
        "/api/backlog": {"get": {
            "summary": "Backlog per active recipe: claimable, in flight, target, deficit (staff only)",
            "operationId": "backlogStatus",
            "responses": {"200": _response("Backlog", {
                "type": "object", "required": ["recipes"],
                "properties": {"recipes": {"type": "array", "items": _ref("BacklogRecipe")}}}), **authed,
                "403": _response("Role user may not see the backlog")}}},
        "/api/queue/stats": {"get": {
            "summary": "Queue counts and processing times (cached up to 30 s)",
            "operationId": "queueStats",
            "responses": {"200": _response("Queue statistics", "QueueStats"), **authed}}},
        "/api/me": {"get": {
            "summary": "The caller",
            "operationId": "me",
            "responses": {"200": _response("The authenticated user", "Me"), **authed}}},
        "/api/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": _response("OpenAPI 3.0 document", {"type": "object"})}}},
        "/healthz": {"get": {
            "summary": "Liveness and database reachability", "operationId": "health", "security": [],
            "responses": {"200": _response("Healthy", "Health"),
                          "503": _response("The database is unreachable", "Health")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics computed from the database (cached a few seconds)",
            "operationId": "metrics", "security": [],
            "responses": {"200": {"description": "Prometheus text exposition format 0.0.4",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "503": _UNAVAILABLE}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Delula backlog API", "version": "1.0.0",
                 "description": "Instant claims from the backlog, normal generations, backlog and queue "
                                "status. Errors are JSON {\"message\": ...}; timestamps ISO 8601 UTC."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
                       "schemas": schemas},
    }
