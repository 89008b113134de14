"""The simulated service: time, outcomes and the fal-compatible answers.

A :class:`Simulator` draws a job's duration, outcome and quality score at submit time and mints a
:class:`~delula.simulator.ticket.Ticket`; from then on every answer is a function of the ticket
and ``clock.now()``. Answers are :class:`SimAnswer` values (status code, JSON body, headers, a
hang), which the in-process provider reads and the HTTP face sends; faults are applied here.
"""
from __future__ import annotations

import json
import math
import random
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from delula.providers.base import app_root

from .media import CONTENT_TYPE_SVG, render_poster, render_thumbnail
from .ticket import InvalidRequestId, Ticket, choose_fault, cut, mint, number, read

__all__ = ["MOUNT", "SimAnswer", "Simulator"]

#: where the fal-compatible HTTP API is mounted; in-process asset URLs are relative to it
MOUNT = "/sim/fal"
QUEUE_SHARE = 0.10
#: quality scores drawn for the low-quality share of results, and for the others
LOW_QUALITY, GOOD_QUALITY = (0.0, 0.49), (0.5, 1.0)
#: where a ``result_offsite`` fault puts the asset
OFFSITE = "https://offsite.invalid"
#: the longest a ``status_hang`` answer hangs: an HTTP request holds a server thread meanwhile
MAX_HANG_S = 5.0


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


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


class Simulator:
    """The stateless simulated service. Thread-safe.

    ``secret`` signs the request ids (see :func:`~delula.simulator.ticket.secret_for`); without
    one the instance draws its own, and only it can read the ids it mints.
    """

    def __init__(self, duration=(5.0, 40.0), failure_rate: float = 0.05, *, clock=None,
                 secret: bytes | None = None, rng: random.Random | None = None, low_quality_rate: float = 0.05):
        if isinstance(duration, (int, float)):
            duration = (float(duration), float(duration))
        lo, hi = (float(duration[0]), float(duration[1]))
        if lo < 0 or hi < lo:
            raise ValueError(f"simulator duration must be 0 <= min <= max, got {duration!r}")
        if not 0.0 <= float(failure_rate) <= 1.0:
            raise ValueError(f"simulator failure rate must be within 0..1, got {failure_rate!r}")
        if not 0.0 <= float(low_quality_rate) <= 1.0:
            raise ValueError(f"simulator low-quality rate must be within 0..1, got {low_quality_rate!r}")
        self.duration = (lo, hi)
        self.failure_rate = float(failure_rate)
        self.low_quality_rate = float(low_quality_rate)
        self.clock = clock or _SystemClock()
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._secret = secret or secrets.token_bytes(32)
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
    def create(self, model_id: str, arguments: dict | None) -> Ticket:
        """Draw duration, outcome and quality score, and mint the request id. Raises ValueError
        on bad ``_sim``."""
        arguments = arguments if isinstance(arguments, dict) else {}
        opts = arguments.get("_sim") or {}
        if not isinstance(opts, dict):
            raise ValueError("_sim must be an object")
        fault, options = choose_fault(model_id, opts)
        with self._rng_lock:
            duration = round(self._rng.uniform(*self.duration), 1)
            failed = self._rng.random() < self.failure_rate
            nonce = "%08x" % self._rng.getrandbits(32)
            low = self._rng.random() < self.low_quality_rate
            quality = round(self._rng.uniform(*(LOW_QUALITY if low else GOOD_QUALITY)), 3)
        if "quality" in opts:
            quality = number(opts["quality"], "quality")
            if quality > 1:
                raise ValueError(f"_sim.quality must be a score from 0 to 1, got {opts['quality']!r}")
        if "duration" in opts:
            duration = min(number(opts["duration"], "duration"), 86400.0)
        outcome = "failed" if failed else "ok"
        if "outcome" in opts:
            wanted = str(opts["outcome"]).lower()
            if wanted not in ("ok", "completed", "failed"):
                raise ValueError(f"_sim.outcome must be 'ok' or 'failed', got {opts['outcome']!r}")
            outcome = "failed" if wanted == "failed" else "ok"
        if fault == "failed":
            outcome = "failed"
        return mint(self._secret, model_id, arguments, opts, submitted=round(self.now(), 3),
                    duration=duration, outcome=outcome, nonce=nonce, fault=fault, options=options,
                    quality=quality)

    def decode(self, request_id: str) -> Ticket:
        return read(self._secret, request_id)

    # -- protocol answers -----------------------------------------------------------------------
    def _ticket_or_404(self, request_id: str) -> Ticket | SimAnswer:
        try:
            return self.decode(request_id)
        except InvalidRequestId as exc:
            return SimAnswer(404, {"detail": f"Request {cut(request_id, 48)!r} not found: {exc}"})

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
        video = render_poster(ticket).encode("utf-8")
        thumb = render_thumbnail(ticket).encode("utf-8")
        stem = f"delula-sim-{ticket.nonce}"
        asset = {"url": self.file_url(base, ticket, "video.svg"), "content_type": CONTENT_TYPE_SVG,
                 "file_name": f"{stem}.svg", "file_size": len(video)}
        fault = ticket.fault
        if fault == "result_empty":
            asset["file_size"] = 0
        elif fault == "result_unsized":
            del asset["file_size"]
        elif fault == "result_oversize":
            asset["file_size"] = int(ticket.option("bytes"))
        elif fault == "result_not_video":
            asset.update(content_type="text/html", file_name=f"{stem}.html")
        elif fault == "result_offsite":
            asset["url"] = self.file_url(OFFSITE, ticket, "video.svg")
        elif fault == "result_duration":
            asset["duration"] = ticket.option("length_s")
        body = {
            "video": asset,
            "thumbnail": {"url": self.file_url(base, ticket, "thumb.svg"), "content_type": CONTENT_TYPE_SVG,
                          "file_name": f"{stem}-thumb.svg", "file_size": len(thumb)},
            "seed": int(ticket.nonce, 16),
            "timings": {"inference": round(ticket.duration * (1 - QUEUE_SHARE), 3)},
        }
        if ticket.quality is not None:
            body["quality_score"] = ticket.quality
        return SimAnswer(200, body)

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
        render = render_poster if name == "video.svg" else render_thumbnail
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
