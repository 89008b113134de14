"""A stateless, fal.ai-compatible generation simulator.

The simulator stands in for fal.ai's queue API (SPEC §5 "Providers"). It keeps **no state**: the
request id itself carries, as base64url JSON plus a short HMAC-SHA256 tag, everything the job
will do -- submit time, chosen duration, chosen outcome, model id, a short summary of the
arguments (recipe name, prompt, form values; truncated) and any injected fault. Any process,
including one started after a restart, answers status and result identically, as long as it
uses the same secret (the built-in default unless one is given; the tag protects against
typos and tampering, it is not a security boundary). Ids are URL-safe and shorter than 400
characters.

State is a function of ``clock.now() - submit time``::

    elapsed < 10 % of duration   IN_QUEUE      (HTTP 202)
    elapsed < duration           IN_PROGRESS   (HTTP 202)
    otherwise                    COMPLETED     (HTTP 200; with "error" when the outcome is failed)

A duration of 0 completes at once. The outcome is drawn at submit time: failed with
probability ``failure_rate``.

Two faces share the same logic:

* :class:`SimulatorProvider` -- the in-process :class:`delula.providers.Provider`, no HTTP;
  asset URLs are relative to its ``base_url`` (``/sim/fal/files/<request_id>/video.svg``).
* :func:`create_blueprint` -- a fal-compatible HTTP API, mounted by ``app.py`` at ``/sim/fal``
  (and by :func:`serve` / :func:`create_app` standalone). Results carry absolute URLs::

    POST /sim/fal/<model_id>                          -> 200 {request_id, status_url, response_url, cancel_url, queue_position}
    GET  /sim/fal/<app>/requests/<id>/status[?logs=1] -> 202 IN_QUEUE/IN_PROGRESS, 200 COMPLETED
    GET  /sim/fal/<app>/requests/<id>                 -> 200 result | 400 still in progress | 422 failed
    PUT  /sim/fal/<app>/requests/<id>/cancel          -> 202 CANCELLATION_REQUESTED | 400 ALREADY_COMPLETED
    GET  /sim/fal/files/<id>/video.svg | thumb.svg    -> the SVG poster / thumbnail (no auth, cacheable)

  Like fal, the returned status/result/cancel URLs use only the app root of the model id
  (``fal-ai/veo3/fast`` -> ``fal-ai/veo3``); any prefix is accepted, since the id is
  self-describing. Queue endpoints require ``Authorization: Key <any non-empty key>``
  (``Bearer`` is accepted too); a missing key is 401, an unknown/forged id 404, and every error
  is JSON ``{"detail": ...}``. Cancellation is acknowledged but, being stateless, does not stop
  the simulated job.

Fault injection
---------------
Chosen at submit time and encoded into the request id, so it is stateless too. Either pass
``arguments["_sim"] = {"fault": NAME, ...options}`` or submit to the model id
``sim/fault/NAME`` (optionally ``sim/fault/NAME/SECONDS`` which sets ``for_s``/``hang_s``).
Names accept ``-`` or ``_``.

==================  ==========================================================================
``failed``          the job ends FAILED (status COMPLETED + ``error``; result 422 ``detail``)
``submit_5xx``      submit answers ``code`` (default 503) -- every time (nothing to count on)
``status_5xx``      status answers ``code`` (default 503) while elapsed < ``for_s`` (default
                    2 s; use a large number for a permanent outage), then recovers
``status_429``      status answers 429 with ``Retry-After: retry_after`` (default 1) while
                    elapsed < ``for_s`` (default 2 s)
``status_hang``     status sleeps ``hang_s`` (default 30 s, at most 120) before answering;
                    in process it raises a retryable timeout ProviderError at once
``status_malformed`` status answers 200 with truncated, invalid JSON
``status_unknown``  status answers 200 with ``"status": "WEIRD"``
``status_missing``  status answers 200 JSON without a ``status`` field
``result_5xx``      result answers ``code`` (default 500) while elapsed < ``for_s`` (default:
                    forever)
``result_malformed`` result answers 200 with invalid JSON
``result_missing``  result answers 200 JSON without ``video``
==================  ==========================================================================

Other ``_sim`` options: ``duration`` (seconds, overrides the configured range), ``outcome``
(``"ok"`` or ``"failed"``), ``title`` (the name shown on the poster, else the argument
``recipe``/``recipe_name``/``recipeName``/``title``, else the model id).
"""
from __future__ import annotations

import base64
import colorsys
import hashlib
import hmac
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from delula.providers import (
    JobResult,
    JobStatus,
    ProviderError,
    Submission,
    app_root,
    interpret_cancel,
    interpret_result,
    interpret_status,
    interpret_submit,
)

__all__ = [
    "DEFAULT_SECRET",
    "FAULTS",
    "InvalidRequestId",
    "SimAnswer",
    "Simulator",
    "SimulatorProvider",
    "Ticket",
    "create_app",
    "create_blueprint",
    "serve",
]

DEFAULT_SECRET = b"delula-simulator-v1"
MOUNT = "/sim/fal"
MAX_ID_LENGTH = 400
QUEUE_SHARE = 0.10
MAX_HANG_S = 120.0
CONTENT_TYPE_SVG = "image/svg+xml"

#: fault name -> default options (documented in the module docstring)
FAULTS: dict[str, dict[str, Any]] = {
    "failed": {},
    "submit_5xx": {"code": 503},
    "status_5xx": {"code": 503, "for_s": 2.0},
    "status_429": {"retry_after": 1.0, "for_s": 2.0},
    "status_hang": {"hang_s": 30.0},
    "status_malformed": {},
    "status_unknown": {},
    "status_missing": {},
    "result_5xx": {"code": 500, "for_s": math.inf},
    "result_malformed": {},
    "result_missing": {},
}
_FAULT_PARAM = {"status_hang": "hang_s"}  # which option a `sim/fault/NAME/SECONDS` number sets
_TITLE_KEYS = ("recipe", "recipe_name", "recipeName", "title")
_PROMPT_KEYS = ("prompt",)


class InvalidRequestId(ValueError):
    """The request id is malformed, forged or was signed with another secret."""


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------
# the ticket: what a request id encodes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ticket:
    request_id: str
    submitted_at: float            # epoch seconds (ms precision)
    duration: float                # seconds
    outcome: str                   # "ok" | "failed"
    model_id: str
    title: str
    prompt: str
    values: tuple[tuple[str, str], ...]
    nonce: str
    fault: str | None = None
    options: dict[str, float] = field(default_factory=dict, compare=False)

    def option(self, name: str) -> float:
        value = self.options.get(name)
        if value is None:
            value = FAULTS.get(self.fault or "", {}).get(name, 0.0)
        return float(value)

    @property
    def submitted_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.submitted_at, timezone.utc)


@dataclass(frozen=True)
class SimAnswer:
    """One answer of the simulated service: what an HTTP response would carry.

    ``body`` is a JSON value, or a ``str`` sent verbatim (used for malformed answers).
    ``delay`` is how long the answer hangs before it is sent.
    """

    code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @property
    def text(self) -> str:
        if isinstance(self.body, str):
            return self.body
        return json.dumps(self.body)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cut(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _clean(text: str) -> str:
    """Text safe to encode as UTF-8 (lone surrogates, e.g. from JSON ``"\\ud800"``, become '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return _clean(value)
    try:
        return _clean(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    except (TypeError, ValueError, RecursionError):
        return _clean(repr(value))


def _normalise_fault(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"_sim.{what} must be a number, got {value!r}")
    number = float(value)
    if number != number or number < 0:
        raise ValueError(f"_sim.{what} must be a non-negative number, got {value!r}")
    return number


# Summary limits, from generous to bare; the first that fits under MAX_ID_LENGTH is used.
_LEVELS = [
    # title, prompt, n values, key, value, model
    (40, 80, 6, 16, 24, 80),
    (32, 60, 5, 14, 20, 80),
    (28, 40, 4, 12, 16, 64),
    (24, 24, 3, 10, 12, 48),
    (16, 12, 2, 8, 8, 40),
    (12, 0, 0, 0, 0, 32),
    (0, 0, 0, 0, 0, 16),
]


class Simulator:
    """The stateless simulated service. Thread-safe."""

    def __init__(self, duration=(5.0, 40.0), failure_rate: float = 0.05, *, clock=None,
                 secret: bytes | None = None, rng: random.Random | None = None):
        if isinstance(duration, (int, float)):
            duration = (float(duration), float(duration))
        lo, hi = (float(duration[0]), float(duration[1]))
        if lo < 0 or hi < lo:
            raise ValueError(f"simulator duration must be 0 <= min <= max, got {duration!r}")
        if not 0.0 <= float(failure_rate) <= 1.0:
            raise ValueError(f"simulator failure rate must be within 0..1, got {failure_rate!r}")
        self.duration = (lo, hi)
        self.failure_rate = float(failure_rate)
        self.clock = clock or _SystemClock()
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._secret = secret or DEFAULT_SECRET
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    # -- time ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now().timestamp()

    def elapsed(self, ticket: Ticket) -> float:
        return self.now() - ticket.submitted_at

    def state(self, ticket: Ticket) -> str:
        """IN_QUEUE, IN_PROGRESS, COMPLETED or FAILED (FAILED = completed with an error)."""
        elapsed = self.elapsed(ticket)
        if ticket.duration <= 0 or elapsed >= ticket.duration:
            return "FAILED" if ticket.outcome == "failed" else "COMPLETED"
        if elapsed < ticket.duration * QUEUE_SHARE:
            return "IN_QUEUE"
        return "IN_PROGRESS"

    # -- request ids ----------------------------------------------------------------------------
    def _sign(self, body: str) -> str:
        tag = hmac.new(self._secret, b"delula-sim/1." + body.encode("ascii"), hashlib.sha256)
        return _b64e(tag.digest()[:12])

    def create(self, model_id: str, arguments: dict | None) -> Ticket:
        """Draw duration and outcome, and mint the request id. Raises ValueError on bad ``_sim``."""
        arguments = arguments if isinstance(arguments, dict) else {}
        opts = arguments.get("_sim") or {}
        if not isinstance(opts, dict):
            raise ValueError("_sim must be an object")
        fault, options = self._fault(model_id, opts)
        with self._rng_lock:
            duration = round(self._rng.uniform(*self.duration), 1)
            failed = self._rng.random() < self.failure_rate
            nonce = "%08x" % self._rng.getrandbits(32)
        if "duration" in opts:
            duration = min(_finite(opts["duration"], "duration"), 86400.0)
        outcome = "failed" if failed else "ok"
        if "outcome" in opts:
            wanted = str(opts["outcome"]).lower()
            if wanted not in ("ok", "completed", "failed"):
                raise ValueError(f"_sim.outcome must be 'ok' or 'failed', got {opts['outcome']!r}")
            outcome = "failed" if wanted == "failed" else "ok"
        if fault == "failed":
            outcome = "failed"
        title, prompt, values = self._summary(arguments, opts)
        model_id = _clean(model_id)
        submitted = round(self.now(), 3)
        for level in _LEVELS:
            payload = self._payload(level, submitted, duration, outcome, model_id, title, prompt,
                                    values, nonce, fault, options)
            body = _b64e(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
            request_id = f"{body}.{self._sign(body)}"
            if len(request_id) < MAX_ID_LENGTH:
                return self.decode(request_id)
        raise ValueError("cannot encode the request id within 400 characters")  # pragma: no cover

    @staticmethod
    def _payload(level, submitted, duration, outcome, model_id, title, prompt, values, nonce,
                 fault, options) -> dict:
        t_len, p_len, n_vals, k_len, v_len, m_len = level
        payload: dict[str, Any] = {
            "v": 1, "t": int(round(submitted * 1000)), "d": round(duration, 3),
            "o": 1 if outcome == "failed" else 0, "m": _cut(model_id, m_len), "n": nonce,
        }
        if title and t_len:
            payload["r"] = _cut(title, t_len)
        if prompt and p_len:
            payload["p"] = _cut(prompt, p_len)
        if values and n_vals:
            payload["a"] = [[_cut(k, k_len), _cut(v, v_len)] for k, v in values[:n_vals]]
        if fault:
            payload["f"] = fault
            if options:
                payload["x"] = options
        return payload

    def decode(self, request_id: str) -> Ticket:
        if not isinstance(request_id, str) or len(request_id) >= MAX_ID_LENGTH or "." not in request_id:
            raise InvalidRequestId("unknown request id")
        body, _, tag = request_id.rpartition(".")
        try:
            expected = self._sign(body)
        except UnicodeEncodeError:
            raise InvalidRequestId("unknown request id") from None
        if not hmac.compare_digest(expected, tag):
            raise InvalidRequestId("unknown request id (bad signature)")
        try:
            payload = json.loads(_b64d(body).decode("utf-8"))
            if payload.get("v") != 1:
                raise ValueError("version")
            fault = payload.get("f")
            options = {str(k): float(v) for k, v in (payload.get("x") or {}).items()}
            return Ticket(
                request_id=request_id,
                submitted_at=int(payload["t"]) / 1000.0,
                duration=float(payload["d"]),
                outcome="failed" if payload.get("o") else "ok",
                model_id=str(payload["m"]),
                title=str(payload.get("r", "")),
                prompt=str(payload.get("p", "")),
                values=tuple((str(k), str(v)) for k, v in payload.get("a", [])),
                nonce=str(payload["n"]),
                fault=str(fault) if fault else None,
                options=options,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidRequestId("unknown request id (undecodable)") from None

    @staticmethod
    def _fault(model_id: str, opts: dict) -> tuple[str | None, dict[str, float]]:
        fault = None
        options: dict[str, float] = {}
        parts = [p for p in (model_id or "").split("/") if p]
        if len(parts) >= 3 and parts[0] == "sim" and parts[1] == "fault":
            fault = _normalise_fault(parts[2])
            if len(parts) >= 4:
                try:
                    seconds = float(parts[3])
                except ValueError:
                    raise ValueError(f"fault parameter must be a number of seconds, got {parts[3]!r}") from None
                options[_FAULT_PARAM.get(fault, "for_s")] = _finite(seconds, "seconds")
        if opts.get("fault") is not None:
            fault = _normalise_fault(str(opts["fault"]))
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown simulator fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
        for name in ("code", "for_s", "hang_s", "retry_after"):
            if name in opts and opts[name] is not None:
                value = _finite(opts[name], name)
                if name == "code" and not 400 <= value <= 599:
                    raise ValueError("_sim.code must be an HTTP error status (400..599)")
                options[name] = min(value, 1e9)
        return fault, options

    @staticmethod
    def _summary(arguments: dict, opts: dict) -> tuple[str, str, list[tuple[str, str]]]:
        title = opts.get("title")
        used = set()
        if not title:
            for key in _TITLE_KEYS:
                if arguments.get(key):
                    title = arguments[key]
                    break
        prompt = ""
        for key in _PROMPT_KEYS:
            if arguments.get(key):
                prompt = _as_text(arguments[key])
                used.add(key)
                break
        values = []
        for key, value in arguments.items():
            key = str(key)
            if key in used or key.startswith("_") or key in _TITLE_KEYS:
                continue
            values.append((_clean(key), _as_text(value)))
        return (_as_text(title) if title else ""), prompt, values

    # -- protocol answers -----------------------------------------------------------------------
    def _ticket_or_404(self, request_id: str) -> Ticket | SimAnswer:
        try:
            return self.decode(request_id)
        except InvalidRequestId as exc:
            return SimAnswer(404, {"detail": f"Request {_cut(request_id, 48)!r} not found: {exc}"})

    @staticmethod
    def urls(base: str, ticket: Ticket) -> dict[str, str]:
        root = f"{base.rstrip('/')}/{app_root(ticket.model_id)}/requests/{ticket.request_id}"
        return {"response_url": root, "status_url": root + "/status", "cancel_url": root + "/cancel"}

    @staticmethod
    def file_url(base: str, ticket: Ticket, name: str) -> str:
        return f"{base.rstrip('/')}/files/{ticket.request_id}/{name}"

    def answer_submit(self, model_id: str, arguments: Any, base: str) -> SimAnswer:
        model_id = (model_id or "").strip("/")
        if not model_id:
            return SimAnswer(404, {"detail": "Model id is required: POST /<owner>/<app>[/<path>]"})
        if not isinstance(arguments, dict):
            return SimAnswer(422, {"detail": "Request body must be a JSON object of arguments"})
        try:
            ticket = self.create(model_id, arguments)
        except ValueError as exc:
            return SimAnswer(422, {"detail": str(exc)})
        if ticket.fault == "submit_5xx":
            code = int(ticket.option("code"))
            return SimAnswer(code, {"detail": f"Simulated outage: submit answered {code}"})
        return SimAnswer(200, {"request_id": ticket.request_id, **self.urls(base, ticket),
                               "queue_position": 0, "status": "IN_QUEUE"})

    def answer_status(self, request_id: str, base: str, logs: bool = False) -> SimAnswer:
        ticket = self._ticket_or_404(request_id)
        if isinstance(ticket, SimAnswer):
            return ticket
        elapsed = self.elapsed(ticket)
        fault = ticket.fault
        delay = 0.0
        if fault == "status_5xx" and elapsed < ticket.option("for_s"):
            code = int(ticket.option("code"))
            return SimAnswer(code, {"detail": f"Simulated outage: status answered {code}"})
        if fault == "status_429" and elapsed < ticket.option("for_s"):
            retry_after = ticket.option("retry_after")
            return SimAnswer(429, {"detail": "Simulated rate limit"},
                             {"Retry-After": f"{retry_after:g}"})
        if fault == "status_hang":
            delay = min(ticket.option("hang_s"), MAX_HANG_S)
        if fault == "status_malformed":
            return SimAnswer(200, '{"status": "IN_PROGRESS", "request_id": "' + ticket.request_id[:8])
        state = self.state(ticket)
        body: dict[str, Any] = {
            "status": "COMPLETED" if state == "FAILED" else state,
            "request_id": ticket.request_id,
            **self.urls(base, ticket),
            "logs": self._logs(ticket, elapsed) if logs else None,
        }
        if state == "IN_QUEUE":
            body["queue_position"] = max(0, math.ceil(3 * (1 - elapsed / (ticket.duration * QUEUE_SHARE))) - 1)
        if state in ("COMPLETED", "FAILED"):
            body["metrics"] = {"inference_time": round(ticket.duration * (1 - QUEUE_SHARE), 3)}
        if state == "FAILED":
            body["error"] = self.failure_message(ticket)
            body["error_type"] = "simulated_failure"
        if fault == "status_unknown":
            body["status"] = "WEIRD"
        if fault == "status_missing":
            del body["status"]
        return SimAnswer(202 if state in ("IN_QUEUE", "IN_PROGRESS") else 200, body, delay=delay)

    def answer_result(self, request_id: str, base: str) -> SimAnswer:
        ticket = self._ticket_or_404(request_id)
        if isinstance(ticket, SimAnswer):
            return ticket
        if ticket.fault == "result_5xx" and self.elapsed(ticket) < ticket.option("for_s"):
            code = int(ticket.option("code"))
            return SimAnswer(code, {"detail": f"Simulated outage: result answered {code}"})
        state = self.state(ticket)
        if state in ("IN_QUEUE", "IN_PROGRESS"):
            return SimAnswer(400, {"detail": "Request is still in progress", "status": state})
        if state == "FAILED":
            return SimAnswer(422, {"detail": [{"loc": ["body"], "msg": self.failure_message(ticket),
                                               "type": "simulated_failure"}]})
        if ticket.fault == "result_malformed":
            return SimAnswer(200, '{"video": {"url": "' + self.file_url(base, ticket, "video.svg"))
        if ticket.fault == "result_missing":
            return SimAnswer(200, {"seed": int(ticket.nonce, 16)})
        video = self.render_poster(ticket).encode("utf-8")
        thumb = self.render_thumbnail(ticket).encode("utf-8")
        stem = f"delula-sim-{ticket.nonce}"
        return SimAnswer(200, {
            "video": {"url": self.file_url(base, ticket, "video.svg"), "content_type": CONTENT_TYPE_SVG,
                      "file_name": f"{stem}.svg", "file_size": len(video)},
            "thumbnail": {"url": self.file_url(base, ticket, "thumb.svg"), "content_type": CONTENT_TYPE_SVG,
                          "file_name": f"{stem}-thumb.svg", "file_size": len(thumb)},
            "seed": int(ticket.nonce, 16),
            "timings": {"inference": round(ticket.duration * (1 - QUEUE_SHARE), 3)},
        })

    def answer_cancel(self, request_id: str) -> SimAnswer:
        ticket = self._ticket_or_404(request_id)
        if isinstance(ticket, SimAnswer):
            return ticket
        if self.state(ticket) in ("COMPLETED", "FAILED"):
            return SimAnswer(400, {"status": "ALREADY_COMPLETED"})
        return SimAnswer(202, {"status": "CANCELLATION_REQUESTED"})

    def answer_file(self, request_id: str, name: str) -> tuple[int, str, str]:
        """(status, content type, body) for ``files/<id>/<name>``."""
        try:
            ticket = self.decode(request_id)
        except InvalidRequestId as exc:
            return 404, "application/json", json.dumps({"detail": f"File not found: {exc}"})
        if ticket.outcome == "failed" or name not in ("video.svg", "thumb.svg"):
            return 404, "application/json", json.dumps({"detail": "File not found"})
        render = self.render_poster if name == "video.svg" else self.render_thumbnail
        return 200, CONTENT_TYPE_SVG + "; charset=utf-8", render(ticket)

    @staticmethod
    def failure_message(ticket: Ticket) -> str:
        return f"Simulated generation failure for {ticket.model_id}: the model returned no video"

    @staticmethod
    def _logs(ticket: Ticket, elapsed: float) -> list[dict[str, str]]:
        def at(offset: float, message: str, level: str = "INFO") -> dict[str, str]:
            when = datetime.fromtimestamp(ticket.submitted_at + offset, timezone.utc)
            return {"message": message, "level": level, "source": "user",
                    "timestamp": when.isoformat().replace("+00:00", "Z")}

        d = ticket.duration
        logs = [at(0, "Request queued (simulator)")]
        start = d * QUEUE_SHARE
        if elapsed >= start or d <= 0:
            logs.append(at(start, f"Starting {ticket.model_id} on a simulated runner"))
        for pct in (25, 50, 75):
            offset = start + (d - start) * pct / 100
            if elapsed >= offset and d > 0 and elapsed < d:
                logs.append(at(offset, f"Rendering frames: {pct}%"))
        if elapsed >= d or d <= 0:
            if ticket.outcome == "failed":
                logs.append(at(d, Simulator.failure_message(ticket), "ERROR"))
            else:
                logs.append(at(d, "Generation complete"))
        return logs

    # -- assets ---------------------------------------------------------------------------------
    @staticmethod
    def _palette(ticket: Ticket) -> tuple[str, str, str]:
        hue = int(hashlib.sha256(ticket.request_id.encode()).hexdigest()[:4], 16) / 0xFFFF

        def hexcolor(h: float, s: float, v: float) -> str:
            r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
            return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))

        return hexcolor(hue, 0.62, 0.78), hexcolor(hue + 0.11, 0.72, 0.46), hexcolor(hue + 0.23, 0.65, 0.20)

    def render_poster(self, ticket: Ticket) -> str:
        """A 1280x720 SVG poster: gradient, recipe/model name, prompt, form values, request id."""
        c1, c2, c3 = self._palette(ticket)
        title = _cut(ticket.title or ticket.model_id, 30)
        rid = ticket.request_id
        short_id = rid if len(rid) <= 56 else f"{rid[:40]}…{rid[-12:]}"
        when = ticket.submitted_datetime.strftime("%Y-%m-%d %H:%M:%S UTC")
        sans = "Inter, 'Helvetica Neue', Arial, sans-serif"
        mono = "'JetBrains Mono', Menlo, Consolas, monospace"
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<svg xmlns="http://www.w3.org/2000/svg" width="1280" height="720" viewBox="0 0 1280 720" '
            f'role="img" aria-label="{_attr(title)} - simulated generation">',
            f"<title>{_xml(title)} - Delula simulated generation</title>",
            f"<desc>model {_xml(ticket.model_id)}; request id {_xml(rid)}</desc>",
            "<defs>",
            '<linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
            f'<stop offset="0" stop-color="{c1}"/><stop offset="0.55" stop-color="{c2}"/>'
            f'<stop offset="1" stop-color="{c3}"/></linearGradient>',
            '<radialGradient id="glow" cx="0.5" cy="0.5" r="0.5">'
            '<stop offset="0" stop-color="#ffffff" stop-opacity="0.35"/>'
            '<stop offset="1" stop-color="#ffffff" stop-opacity="0"/></radialGradient>',
            "</defs>",
            '<rect width="1280" height="720" fill="url(#bg)"/>',
            '<circle cx="1060" cy="170" r="330" fill="url(#glow)"/>',
            f'<circle cx="140" cy="700" r="260" fill="{c1}" fill-opacity="0.18"/>',
            '<path d="M0 560 C 320 470, 640 660, 1280 520 L 1280 720 L 0 720 Z" fill="#000000" fill-opacity="0.18"/>',
        ]
        for x in range(24, 1280, 64):  # film-strip perforations
            out.append(f'<rect x="{x}" y="14" width="30" height="16" rx="4" fill="#ffffff" fill-opacity="0.14"/>')
            out.append(f'<rect x="{x}" y="690" width="30" height="16" rx="4" fill="#ffffff" fill-opacity="0.14"/>')
        out += [
            f'<g font-family="{_attr(sans)}" fill="#ffffff">',
            '<text x="72" y="104" font-size="20" letter-spacing="5" fill-opacity="0.8">'
            "DELULA · SIMULATED GENERATION</text>",
            f'<text x="72" y="184" font-size="62" font-weight="700">{_xml(title)}</text>',
            f'<text x="72" y="228" font-size="22" font-family="{_attr(mono)}" fill-opacity="0.78">'
            f"{_xml(_cut(ticket.model_id, 64))}</text>",
        ]
        y = 290
        if ticket.prompt:
            for i, line in enumerate(_wrap(f"“{ticket.prompt}”", 62, 3)):
                out.append(f'<text x="72" y="{y + i * 36}" font-size="27" font-style="italic" '
                           f'fill-opacity="0.92">{_xml(line)}</text>')
            y += 36 * min(3, len(_wrap(f"“{ticket.prompt}”", 62, 3))) + 24
        for i, (key, value) in enumerate(ticket.values[:6]):
            col, row = i % 2, i // 2
            x, yy = 72 + col * 430, y + row * 58
            text = _cut(f"{key}: {value}", 34)
            out.append(f'<rect x="{x}" y="{yy}" width="{min(400, 40 + 13 * len(text))}" height="42" rx="21" '
                       'fill="#ffffff" fill-opacity="0.16" stroke="#ffffff" stroke-opacity="0.35"/>')
            out.append(f'<text x="{x + 20}" y="{yy + 28}" font-size="20">'
                       f'<tspan font-weight="700">{_xml(_cut(key, 16))}:</tspan> '
                       f"{_xml(_cut(value, 33 - min(len(key), 16)))}</text>")
        out += [
            '<circle cx="1060" cy="400" r="92" fill="#ffffff" fill-opacity="0.16" stroke="#ffffff" '
            'stroke-opacity="0.7" stroke-width="4"/>',
            '<path d="M1030 350 L1030 450 L1118 400 Z" fill="#ffffff" fill-opacity="0.92"/>',
            f'<text x="72" y="636" font-size="17" font-family="{_attr(mono)}" fill-opacity="0.75">'
            f"request {_xml(short_id)}</text>",
            f'<text x="72" y="664" font-size="17" fill-opacity="0.75">'
            f"{ticket.duration:g} s simulated · submitted {when} · seed {int(ticket.nonce, 16)}</text>",
            "</g>",
            "</svg>",
        ]
        return "\n".join(out) + "\n"

    def render_thumbnail(self, ticket: Ticket) -> str:
        """A 320x180 SVG thumbnail."""
        c1, c2, c3 = self._palette(ticket)
        title = _cut(ticket.title or ticket.model_id, 22)
        return "\n".join([
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180" viewBox="0 0 320 180" '
            f'role="img" aria-label="{_attr(title)}">',
            "<defs>",
            '<linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
            f'<stop offset="0" stop-color="{c1}"/><stop offset="0.55" stop-color="{c2}"/>'
            f'<stop offset="1" stop-color="{c3}"/></linearGradient>',
            "</defs>",
            '<rect width="320" height="180" fill="url(#bg)"/>',
            '<circle cx="160" cy="78" r="30" fill="#ffffff" fill-opacity="0.2" stroke="#ffffff" stroke-opacity="0.7" stroke-width="2"/>',
            '<path d="M150 62 L150 94 L178 78 Z" fill="#ffffff"/>',
            f'<text x="160" y="148" text-anchor="middle" font-family="Inter, Arial, sans-serif" font-size="17" '
            f'font-weight="700" fill="#ffffff">{_xml(title)}</text>',
            "</svg>",
        ]) + "\n"


_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", str(text))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _xml(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;").replace("\r", "&#13;")


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        while len(word) > width:  # very long words are hard-split
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        candidate = f"{line} {word}".strip()
        if len(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _cut(lines[-1], width - 1) if len(lines[-1]) >= width - 1 else lines[-1] + "…"
    return lines


# --------------------------------------------------------------------------------------------
# in-process provider
# --------------------------------------------------------------------------------------------
LABEL = "simulator"


class SimulatorProvider:
    """The Provider interface served in process by a :class:`Simulator` (no HTTP).

    Answers go through the same interpretation as :class:`delula.providers.FalProvider`, so
    faults surface identically (5xx -> retryable ProviderError, malformed -> ProviderError,
    unknown status -> UNKNOWN); a hang raises a retryable timeout error at once instead of
    blocking the caller.
    """

    name = "simulator"

    def __init__(self, simulator: Simulator, base_url: str = MOUNT):
        self.simulator = simulator
        self.base_url = base_url.rstrip("/")

    def _check(self, answer: SimAnswer, op: str) -> SimAnswer:
        if answer.delay > 0:
            raise ProviderError(f"{LABEL} {op} timed out (simulated hang of {answer.delay:g} s)",
                                retryable=True)
        return answer

    def submit(self, model_id: str, arguments: dict) -> Submission:
        answer = self._check(self.simulator.answer_submit(model_id, arguments, self.base_url), "submit")
        return interpret_submit(LABEL, answer.code, answer.text, self.base_url, model_id)

    def status(self, sub: Submission) -> JobStatus:
        answer = self._check(self.simulator.answer_status(sub.request_id, self.base_url, logs=True), "status")
        return interpret_status(LABEL, answer.code, answer.text)

    def result(self, sub: Submission) -> JobResult:
        answer = self._check(self.simulator.answer_result(sub.request_id, self.base_url), "result")
        return interpret_result(LABEL, answer.code, answer.text)

    def cancel(self, sub: Submission) -> None:
        answer = self._check(self.simulator.answer_cancel(sub.request_id), "cancel")
        interpret_cancel(LABEL, answer.code, answer.text)


# --------------------------------------------------------------------------------------------
# fal-compatible HTTP API
# --------------------------------------------------------------------------------------------
_AUTH = re.compile(r"^\s*(Key|Bearer)\s+\S+", re.IGNORECASE)


def create_blueprint(simulator_factory: Callable[[], Simulator] | Simulator):
    """The fal-compatible HTTP API as a Flask blueprint; register it at ``url_prefix="/sim/fal"``.

    ``simulator_factory`` is called on every request (return a cached instance); a
    :class:`Simulator` itself is accepted too.
    """
    from flask import Blueprint, Response, request, url_for
    from werkzeug.exceptions import HTTPException

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
        if _AUTH.match(request.headers.get("Authorization", "")):
            return None
        return json_response(401, {"detail": "Missing or invalid Authorization header: expected 'Key <FAL_KEY>'"},
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


def create_app(simulator: Simulator):
    """A plain Flask app holding only the simulator blueprint at ``/sim/fal``."""
    from flask import Flask, jsonify
    from werkzeug.exceptions import HTTPException

    app = Flask("delula.simulator")
    app.register_blueprint(create_blueprint(lambda: simulator), url_prefix=MOUNT)

    @app.get("/")
    def root():
        return jsonify({"service": "delula fal-compatible simulator", "mount": MOUNT})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"detail": exc.description or exc.name}), exc.code or 500

    return app


def serve(host: str, port: int, simulator: Simulator, *, ssl_context=None) -> None:
    """Serve the simulator alone (``python -m delula simulator --port P``) until interrupted.

    ``ssl_context`` (a ``(cert, key)`` pair of file names or an ``ssl.SSLContext``) serves it
    over HTTPS, which the official ``fal-client`` requires for submit (its queue URL is
    ``https://$FAL_QUEUE_RUN_HOST/``).
    """
    from werkzeug.serving import run_simple

    run_simple(host, port, create_app(simulator), threaded=True, use_reloader=False,
               ssl_context=ssl_context)
