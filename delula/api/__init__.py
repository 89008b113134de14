"""The JSON API of SPEC §6: a Flask blueprint, thin over the domain functions.

Every route reads the runtime with :func:`delula.runtime.current`, authenticates with
``Authorization: Bearer <token>`` and hands a validated request to one domain call; the domain's
result already carries the SPEC's status and body (``ClaimResult.response()``,
``CreateResult.response()``), so the CLI, the dashboard and this API answer alike.

Each route is registered with its entry of the route table (:func:`route`): method, path, body
model, parameters and the type of each answer. ``GET /api/openapi.json`` is built from that table
and the pydantic models of :mod:`delula.api.bodies` (:mod:`delula.api.openapi`), so the document
lists exactly the routes served, with the bodies they read and answer.

Error contract. Under ``/api/*``, ``/healthz`` and ``/metrics`` every error is JSON
``{"message": ...}`` — never Flask's HTML page: 400 bad body (with per-field ``errors``), 401 (with
``WWW-Authenticate: Bearer``), 403, 404 (also for URLs no route serves, which Dash's catch-all
would otherwise answer with its index page), 405, 413 (bodies above ``MAX_CONTENT_LENGTH``), 415,
503 when the database is unreachable (:class:`storage.DatabaseUnavailable`) and 500 for a bug.
Other paths belong to Dash and keep Flask's default handling. ``OPTIONS`` names the methods the
path really serves.

Request bodies are read strictly before anything touches the database: ``Content-Type:
application/json`` (else 415), then :mod:`delula.api.bodies` — UTF-8, a JSON object, integers
within 64 bits, finite numbers, no NUL characters or lone surrogates in any string, each field of
its JSON type and no field beyond the model's (the document says ``additionalProperties: false``).

A malformed instant request (400) from an authenticated caller is refused here, before the
claim, and recorded as one ``invalid`` claim event (``claims.record_refused_attempt``), nothing
else; an anonymous one or a refused token changes nothing at all. Requests that are well formed
but name an unknown or inactive recipe or an unknown target user reach the claim, which records
them with outcome ``invalid`` too — those are the "failed claims" the dashboard shows.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime
from functools import cache, wraps
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from pydantic import BaseModel, TypeAdapter, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import (audit, auth, backlog, claims, generations, metrics, pauses, queue_actions, queue_status, recipes,
                runtime)
from ..auth import STAFF_ROLES
from ..storage import DatabaseUnavailable
from . import bodies, openapi
from .openapi import Operation, Parameter, Reply

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)
M = TypeVar("M", bound=BaseModel)

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
    app.before_request(_open_request_id)
    app.after_request(_echo_request_id)
    app.teardown_request(_close_request_id)


# --- the request id -------------------------------------------------------------------------
# Every request of the app (API, dashboard, its callbacks) is served under an id — the caller's
# ``X-Request-Id`` when it sends a sane one, else a fresh one — that audit rows written during the
# request carry and the response echoes back, so a record can be matched to its request and logs.

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _open_request_id():
    asked = request.headers.get(REQUEST_ID_HEADER, "").strip()
    g.delula_request = audit.request_context(asked if _REQUEST_ID.fullmatch(asked) else None)
    g.delula_request_id = g.delula_request.__enter__()


def _echo_request_id(response: Response) -> Response:
    if "delula_request_id" in g:
        response.headers[REQUEST_ID_HEADER] = g.delula_request_id
    return response


def _close_request_id(_error=None):
    context = g.pop("delula_request", None)
    if context is not None:
        context.__exit__(None, None, None)


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


def json_object() -> dict:
    """The request's JSON object, or a 400/413/415 :class:`ApiError` — before any database access."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    raw = request.get_data(cache=True)  # raises 413 when Content-Length is above MAX_CONTENT_LENGTH
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit without an error: treat reaching it as too large.
        raise RequestEntityTooLarge()
    try:
        return bodies.parse(raw)
    except bodies.BodyError as e:
        raise _invalid(e.errors) from None


def json_body(model: type[M], header_errors: dict[str, str] | None = None) -> M:
    """The request's body as ``model``; its refused fields and ``header_errors`` make one 400."""
    data = json_object()
    try:
        body = bodies.validate(model, data)
    except bodies.BodyError as e:
        raise _invalid({**e.errors, **(header_errors or {})}) from None
    if header_errors:
        raise _invalid(header_errors)
    return body


_IDEMPOTENCY_KEY = TypeAdapter(bodies.IdempotencyKey)


def idempotency_key() -> tuple[str | None, dict[str, str]]:
    """The ``Idempotency-Key`` header (``None`` when absent) and, when malformed, its refusal."""
    if "Idempotency-Key" not in request.headers:
        return None, {}
    try:
        return _IDEMPOTENCY_KEY.validate_python(request.headers["Idempotency-Key"].strip()), {}
    except ValidationError:
        return None, {"Idempotency-Key": f"must be 1-{bodies.MAX_KEY_LENGTH} printable ASCII characters"}


# --- the route table ------------------------------------------------------------------------

OPERATIONS: list[Operation] = []
_UNAUTHORIZED = Reply("Missing, malformed or revoked bearer token", bodies.Error, {"WWW-Authenticate": str})
_UNAVAILABLE = Reply("The database is unreachable", bodies.Error, {"Retry-After": bodies.RetryAfter})
_TOO_LARGE = Reply("Body larger than 64 KiB", bodies.Error)
_NOT_JSON = Reply("Content-Type is not application/json", bodies.Error)


def _error(description: str) -> Reply:
    return Reply(description, bodies.Error)


def route(method: str, path: str, operation_id: str, summary: str, responses: dict[int, Reply], *,
          body: type[BaseModel] | None = None, body_required: bool = True, parameters: tuple[Parameter, ...] = (),
          public: bool = False):
    """Decorator: serve the view at ``path`` (OpenAPI's form, ``{id}``) and list it in the document,
    with the answers every route shares: 401 and 503 unless public, 413 and 415 with a body."""
    shared = {} if public else {401: _UNAUTHORIZED, 503: _UNAVAILABLE}
    if body is not None:
        shared |= {413: _TOO_LARGE, 415: _NOT_JSON}
    OPERATIONS.append(Operation(method, path, operation_id, summary, {**shared, **responses}, body, body_required,
                                parameters, public))

    def register(view):
        bp.add_url_rule(re.sub(r"{(\w+)}", r"<\1>", path), view_func=view, methods=[method])
        return view
    return register


@cache
def openapi_document() -> dict:
    return openapi.document(OPERATIONS, title="Delula backlog API", version="1.0.0", description=(
        "Instant claims from the backlog, normal generations, backlog and queue status. Errors are JSON "
        "{\"message\": ...}; timestamps ISO 8601 UTC. Request bodies are UTF-8 JSON objects of at most "
        "64 KiB; no string in them, keys included, may hold a NUL character or a lone surrogate, and "
        "integers are written without a fraction or an exponent and fit in 64 bits."))


# --- routes ---------------------------------------------------------------------------------

@route("POST", "/api/generate/instant", "instantClaim", "Claim a finished backlog generation instantly",
       body=bodies.InstantRequest, parameters=(Parameter(
           "Idempotency-Key", "header", bodies.IdempotencyKey,
           "a repeat by the same user with the same body returns the first response and never charges "
           "twice; the key with another body is refused (422)"),),
       responses={
           200: Reply("Claimed and charged: one generation, or with count a list of them",
                      bodies.Charged | bodies.ChargedBatch),
           400: Reply("Invalid body or Idempotency-Key, formData not valid for the recipe (errors.formData.<field>), "
                      "an unknown targetUserId (errors.targetUserId: \"no such user\"), or "
                      "insufficient credits (for every item asked with all)",
                      bodies.InvalidRequest | bodies.InsufficientCredits),
           403: _error("targetUserId names an account the caller may not act for (ops: any account; product "
                       "staff: test accounts only; anyone else: none)"),
           404: Reply("Recipe not found (unknown or inactive), or no instant generation available (with the "
                      "choices, or as many as all asks for)",
                      bodies.NoInstantGeneration | bodies.Error),
           409: Reply("Every claimable item was taken by concurrent claims", bodies.NoInstantGeneration),
           422: _error("The Idempotency-Key was used before for another recipe or target user"),
           429: Reply("Cooldown after the credited user's last claim", bodies.RateLimited,
                      {"Retry-After": bodies.RetryAfter}),
       })
def instant():
    """Authenticates by itself: the token check and the claim are one statement (one round trip)."""
    token = bearer_token()
    try:
        key, key_error = idempotency_key()
        body = json_body(bodies.InstantRequest, key_error)
    except (ApiError, HTTPException) as refusal:
        user = current_user()  # a refused token comes before a refused body
        if isinstance(refusal, ApiError) and refusal.status == 400:
            claims.record_refused_attempt(runtime.current(), user.id, _recipe_id_asked())
        raise
    ask = claims.Ask(choices=body.form_data, match=claims.Match(body.match or "exact"), count=body.count,
                     all=bool(body.all))
    user, result = claims.instant_claim_with_token(runtime.current(), token, recipe_id=body.recipe_id,
                                                   target_user_id=body.target_user_id, idempotency_key=key, ask=ask)
    if user is None:
        raise _invalid_token()
    if result is None:  # a token whose user may not claim at all (the function was not called)
        raise ApiError(403, claims.FORBIDDEN_MESSAGE)
    status, payload = result.response()
    headers = {"Retry-After": str(payload["retryAfter"])} if status == 429 else None
    return _json(status, payload, headers)


def _recipe_id_asked() -> int | None:
    """The ``recipeId`` of a refused instant body, when it has a usable one (for its claim event)."""
    try:
        value = bodies.parse(request.get_data(cache=True)).get("recipeId")
    except bodies.BodyError:
        return None
    return value if type(value) is int and 0 < value < 2**31 else None


@route("POST", "/api/generate", "createGeneration", "Queue a normal generation (validated, charged, pending)",
       body=bodies.GenerateRequest, responses={
           202: Reply("Charged and queued; the generation is pending", bodies.Charged),
           400: Reply("Invalid body or form data, or insufficient credits",
                      bodies.InvalidRequest | bodies.InsufficientCredits),
           404: _error("Recipe not found (unknown or inactive)"),
       })
@authenticated()
def generate(user):
    body = json_body(bodies.GenerateRequest)
    result = generations.create_user_generation(runtime.current(), user_id=user.id, recipe_id=body.recipe_id,
                                                form_data=body.form_data)
    return _json(*result.response())


@route("GET", "/api/generations/{id}", "getGeneration",
       "One generation (its owner and staff only; 404 for anyone else)",
       parameters=(Parameter("id", "path", bodies.GenerationId),), responses={
           200: Reply("The generation", bodies.Generation),
           404: _error("No such generation, or not visible to the caller"),
       })
@authenticated()
def generation(user, id: str):
    not_found = ApiError(404, "Generation not found")
    if not re.fullmatch(f"[0-9]{{1,{bodies.GENERATION_ID_DIGITS}}}", id):
        raise not_found
    gen = generations.get_generation(runtime.current(), int(id), viewer_id=user.id, viewer_role=user.role)
    if gen is None:
        raise not_found
    return _json(200, generations.generation_json(gen))


@route("GET", "/api/generations", "listGenerations",
       f"The caller's own generations, newest first (at most {LIST_LIMIT})",
       responses={200: Reply("Generations", bodies.Generations)})
@authenticated()
def my_generations(user):
    rows = generations.list_generations(runtime.current(), user.id, limit=LIST_LIMIT)
    return _json(200, {"generations": [generations.generation_json(g) for g in rows]})


@route("GET", "/api/recipes", "listRecipes", "Active recipes with the number of instantly claimable generations",
       responses={200: Reply("Recipes", bodies.Recipes)})
@authenticated()
def recipe_list(user):
    return _json(200, {"recipes": recipes.list_with_availability(runtime.current())})


@route("GET", "/api/backlog", "backlogStatus",
       "Backlog per active recipe: claimable, in flight, target, deficit (staff only)", responses={
           200: Reply("Backlog", bodies.Backlog),
           403: _error("Role user may not see the backlog"),
       })
@authenticated(*STAFF_ROLES)
def backlog_status(user):
    return _json(200, {"recipes": backlog.status(runtime.current())})


@route("GET", "/api/queue/stats", "queueStats", "Queue counts and processing times (cached up to 30 s)",
       responses={200: Reply("Queue statistics", bodies.QueueStats)})
@authenticated()
def queue_stats(user):
    rt = runtime.current()
    return _json(200, {**queue_status.stats(rt), "paused": pauses.state(rt).summary()})


# --- pause and resume (ops) -------------------------------------------------------------------

def _pause_route(scope: str, pausing: bool):
    verb = "pause" if pausing else "resume"
    path = f"/api/{scope}/{verb}"
    if scope == pauses.BACKLOG:
        summary = (f"{verb.capitalize()} backlog generation: every recipe, or the body's recipeId (ops only)")
        extra = dict(body=bodies.PauseRequest, body_required=False)
        errors = {400: Reply("Invalid body", bodies.InvalidRequest), 404: _error("No recipe has that recipeId")}
    else:
        summary = (f"{verb.capitalize()} submissions to the provider; polls of submitted jobs go on (ops only)")
        extra = {}
        errors = {}

    def view(user):
        recipe_id = None
        if scope == pauses.BACKLOG and (request.content_length or request.mimetype):
            recipe_id = json_body(bodies.PauseRequest).recipe_id
        change = pauses.pause if pausing else pauses.resume
        try:
            answer = change(runtime.current(), scope, recipe_id, actor_id=user.id)
        except pauses.NoSuchRecipe as e:
            raise ApiError(404, str(e)) from None
        except pauses.PauseError as e:
            raise ApiError(400, str(e), errors={"recipeId": str(e)}) from None
        return _json(200, answer)

    view.__name__ = f"{verb}_{scope}"
    responses = {200: Reply(f"{'Paused' if pausing else 'Running'} (changed: false when it was already)",
                            bodies.PauseAnswer),
                 403: _error(f"Only ops may {verb} the {scope}"), **errors}
    return route("POST", path, f"{verb}{scope.capitalize()}", summary, responses, **extra)(
        authenticated("ops")(view))


for _scope in (pauses.BACKLOG, pauses.QUEUE):
    for _pausing in (True, False):
        _pause_route(_scope, _pausing)


# Bulk actions on the queue (ops): the jobs by ids or by filter, in batches (queue_actions.bulk).
_BULK_REPLIES = {
    200: Reply("Done: jobs changed, and jobs asked for but left as they were", bodies.BulkResult),
    400: Reply("Invalid body: ids and filter both or neither, no ids or too many, an id that is no whole "
               "number, an unknown field, status or source, or a status the action never applies to; "
               "nothing changed", bodies.InvalidRequest),
    403: _error("Only ops may act on the queue"),
}


def _bulk(user, action: str, model) -> Response:
    body = json_body(model)
    where = None
    if body.filter is not None:
        f = body.filter
        where = queue_actions.JobFilter(statuses=(f.status,) if f.status else (), recipe_id=f.recipe_id,
                                        source=f.source)
    try:
        result = queue_actions.bulk(runtime.current(), action, ids=body.ids, filter=where, actor_id=user.id)
    except queue_actions.BulkRefused as e:
        raise _invalid(e.errors) from None
    return _json(200, result)


@route("POST", "/api/jobs/retry", "retryJobs",
       "Retry failed jobs, by ids or by filter, in bounded batches (ops only)",
       body=bodies.RetryJobsRequest, responses=_BULK_REPLIES)
@authenticated("ops")
def retry_jobs(user):
    return _bulk(user, queue_actions.RETRY, bodies.RetryJobsRequest)


@route("POST", "/api/jobs/cancel", "cancelJobs",
       "Cancel pending or processing jobs (refunding charged user jobs once), by ids or by filter, in bounded "
       "batches (ops only)", body=bodies.CancelJobsRequest, responses=_BULK_REPLIES)
@authenticated("ops")
def cancel_jobs(user):
    return _bulk(user, queue_actions.CANCEL, bodies.CancelJobsRequest)


@route("GET", "/api/me", "me", "The caller", responses={200: Reply("The authenticated user", bodies.Me)})
@authenticated()
def me(user):
    return _json(200, auth.user_json(user))


@route("GET", "/api/audit", "auditEvents", "The audit trail, newest first (ops only)", parameters=(
           Parameter("since", "query", datetime, "only events at or after this time (ISO 8601)"),
           Parameter("actor", "query", str, "only events of this username"),
           Parameter("action", "query", bodies.AuditAction, "only this action"),
           Parameter("limit", "query", bodies.AuditLimit, "at most this many events (default 500)")),
       responses={
           200: Reply("Audit events", bodies.AuditEvents),
           400: _error("A filter's value is not usable (the message names it)"),
           403: _error("Only ops may read the audit trail"),
       })
@authenticated("ops")
def audit_events(user):
    args = request.args
    unknown = sorted(set(args) - {"since", "actor", "action", "limit"})
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0]!r}: since, actor, action and limit are")
    try:
        rows = audit.query(runtime.current(), since=args.get("since"), actor=args.get("actor"),
                           action=args.get("action"), limit=args.get("limit"))
    except audit.QueryError as e:
        raise ApiError(400, str(e)) from None
    return _json(200, {"events": rows})


@route("GET", "/api/openapi.json", "openapi", "This document", public=True,
       responses={200: Reply(f"OpenAPI {openapi.OPENAPI_VERSION} document", dict[str, Any])})
def openapi_json():
    return _json(200, openapi_document())


@route("GET", "/healthz", "health", "Liveness and database reachability", public=True, responses={
    200: Reply("Healthy", bodies.Health),
    503: Reply("The database is unreachable", bodies.HealthDegraded),
})
def healthz():
    if runtime.current().store.ping():
        return _json(200, {"status": "ok", "database": "ok"})
    return _json(503, {"status": "degraded", "database": "unreachable", "message": "Database unavailable"})


@route("GET", "/metrics", "metrics", "Prometheus metrics computed from the database (cached a few seconds); "
       "Bearer: an ops token or DELULA_METRICS_TOKEN", responses={
           200: Reply("Prometheus text exposition format 0.0.4", str, media_type="text/plain"),
           403: _error("The token's user is not ops"),
       })
def prometheus_metrics():
    rt = runtime.current()
    if not metrics.is_metrics_token(rt.settings, bearer_token()):
        user = current_user()
        if user.role != "ops":
            raise ApiError(403, "This needs the role ops or the metrics token")
    return Response(metrics.render(rt), content_type=metrics.CONTENT_TYPE)


# --- what no route serves -------------------------------------------------------------------

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _served_methods() -> list[str]:
    """The methods a route of the API serves at this request's path (the catch-all aside)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    served = []
    for method in _METHODS:
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != "api.unrouted":
            served.append(method)
    return served


@bp.before_request
def _options():
    """``OPTIONS``: the methods the path really serves. Flask's automatic answer would list every
    rule matching the path — the catch-all below and Dash's page route too."""
    if request.method != "OPTIONS":
        return None
    served = _served_methods()
    if not served:
        raise ApiError(404, "Not found")
    implied = ["HEAD"] if "GET" in served else []
    return Response(status=200, headers={"Allow": ", ".join(served + implied + ["OPTIONS"])})


@bp.route("/api", methods=list(_METHODS))
@bp.route("/api/", methods=list(_METHODS))
@bp.route("/api/<path:rest>", methods=list(_METHODS))
def unrouted(rest: str = ""):
    """URLs under /api that no route serves: 405 when another method would, else 404.

    Without this, Dash's catch-all page route would answer ``GET /api/typo`` with HTML.
    """
    allowed = _served_methods()
    if allowed:
        raise ApiError(405, "Method not allowed", {"Allow": ", ".join(sorted(allowed))})
    raise ApiError(404, "Not found")
