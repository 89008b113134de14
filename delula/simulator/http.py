"""The simulator's fal-compatible HTTP API: a Flask blueprint, a standalone app and server.

The routes are listed in :mod:`delula.simulator`; every answer comes from the
:class:`~delula.simulator.engine.Simulator`, sent as JSON (``{"detail": ...}`` for errors).
The queue endpoints answer only the holder of the simulator key; the SVG files stay open, since
the dashboard shows them in ``<img>`` tags. Flask and werkzeug are imported only when the API is
built.
"""
from __future__ import annotations

import hmac
import json
import re
import time
from typing import Any, Callable

from .engine import MOUNT, SimAnswer, Simulator
from .ticket import FAULTS

__all__ = ["create_app", "create_blueprint", "serve"]

_AUTH = re.compile(r"^\s*(?:Key|Bearer)\s+(\S+)\s*$", re.IGNORECASE)


def _holds_key(header: str, key: str) -> bool:
    """Whether an ``Authorization`` header value is ``Key <key>`` (or ``Bearer <key>``)."""
    match = _AUTH.match(header or "")
    return match is not None and hmac.compare_digest(match.group(1).encode("utf-8", "replace"),
                                                     key.encode("utf-8"))


def create_blueprint(simulator_factory: Callable[[], Simulator] | Simulator, *, key: str):
    """The fal-compatible HTTP API as a Flask blueprint; register it at ``url_prefix="/sim/fal"``.

    ``simulator_factory`` is called on every request (return a cached instance); a
    :class:`Simulator` itself is accepted too. ``key`` is the simulator key the queue endpoints
    require.
    """
    from flask import Blueprint, Response, request, url_for
    from werkzeug.exceptions import HTTPException

    if not key:
        raise ValueError("the simulator needs a key")
    if isinstance(simulator_factory, Simulator):
        instance = simulator_factory
        simulator_factory = lambda: instance  # noqa: E731

    bp = Blueprint("fal_simulator", __name__)

    def json_response(code: int, body: Any, headers: dict | None = None) -> Response:
        text = body if isinstance(body, str) else json.dumps(body)
        return Response(text, status=code, mimetype="application/json", headers=headers or {})

    def send(answer: SimAnswer) -> Response:
        if answer.delay > 0:
            time.sleep(answer.delay)
        return json_response(answer.code, answer.body, answer.headers)

    def base() -> str:
        return url_for(".index", _external=True).rstrip("/")

    def unauthorised() -> Response | None:
        if _holds_key(request.headers.get("Authorization", ""), key):
            return None
        return json_response(401, {"detail": "Missing or invalid Authorization header: expected 'Key <simulator key>'"},
                             {"WWW-Authenticate": "Key"})

    @bp.route("/", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], strict_slashes=False)
    def index():
        if request.method != "GET":
            return json_response(404, {"detail": "Model id is required: POST /<owner>/<app>[/<path>]"})
        return json_response(200, {
            "service": "delula fal-compatible simulator",
            "submit": f"POST {base()}/<model_id>",
            "faults": sorted(FAULTS),
        })

    @bp.post("/<path:model_id>")
    def submit(model_id: str):
        if (denied := unauthorised()) is not None:
            return denied
        raw = request.get_data(cache=False, as_text=True)
        try:
            arguments = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            return json_response(400, {"detail": "Request body is not valid JSON"})
        return send(simulator_factory().answer_submit(model_id, arguments, base()))

    @bp.get("/<path:prefix>/requests/<request_id>/status")
    def status(prefix: str, request_id: str):
        if (denied := unauthorised()) is not None:
            return denied
        logs = request.args.get("logs", "0").lower() in ("1", "true", "yes")
        return send(simulator_factory().answer_status(request_id, base(), logs=logs))

    @bp.get("/<path:prefix>/requests/<request_id>")
    def result(prefix: str, request_id: str):
        if (denied := unauthorised()) is not None:
            return denied
        return send(simulator_factory().answer_result(request_id, base()))

    @bp.put("/<path:prefix>/requests/<request_id>/cancel")
    def cancel(prefix: str, request_id: str):
        if (denied := unauthorised()) is not None:
            return denied
        return send(simulator_factory().answer_cancel(request_id))

    @bp.get("/files/<request_id>/<name>")
    def files(request_id: str, name: str):
        code, content_type, body = simulator_factory().answer_file(request_id, name)
        resp = Response(body, status=code, content_type=content_type)
        if code == 200:
            resp.headers["Cache-Control"] = "public, max-age=86400, immutable"
        return resp

    @bp.route("/<path:rest>", methods=["GET", "PUT", "DELETE", "PATCH"])
    def not_found(rest: str):
        return json_response(404, {"detail": f"Not found: {request.method} {request.path}"})

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return json_response(exc.code or 500, {"detail": exc.description or exc.name})

    @bp.errorhandler(Exception)
    def crash(exc: Exception):  # pragma: no cover - defensive
        return json_response(500, {"detail": f"Simulator error: {exc.__class__.__name__}"})

    return bp


def create_app(simulator: Simulator, *, key: str):
    """A plain Flask app holding only the simulator blueprint at ``/sim/fal``, behind ``key``."""
    from flask import Flask, jsonify
    from werkzeug.exceptions import HTTPException

    app = Flask("delula.simulator")
    app.register_blueprint(create_blueprint(lambda: simulator, key=key), url_prefix=MOUNT)

    @app.get("/")
    def root():
        return jsonify({"service": "delula fal-compatible simulator", "mount": MOUNT})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"detail": exc.description or exc.name}), exc.code or 500

    return app


def serve(host: str, port: int, simulator: Simulator, *, key: str, ssl_context=None) -> None:
    """Serve the simulator alone (``python -m delula simulator --port P``), behind ``key``,
    until interrupted.

    ``ssl_context`` (a ``(cert, key)`` pair of file names or an ``ssl.SSLContext``) serves it
    over HTTPS, which the official ``fal-client`` requires for submit (its queue URL is
    ``https://$FAL_QUEUE_RUN_HOST/``).
    """
    from werkzeug.serving import run_simple

    run_simple(host, port, create_app(simulator, key=key), threaded=True, use_reloader=False,
               ssl_context=ssl_context)
