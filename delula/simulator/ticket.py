"""The ticket: everything a simulated job will do, carried by its request id.

A request id is ``<body>.<tag>``: the body is base64url of a compact JSON payload (submit time,
duration, outcome, quality score, model id, a summary of the arguments, a nonce and any fault), the tag the
first 12 bytes of HMAC-SHA256 over ``delula-sim/1.<body>`` under the simulator's secret,
base64url too. A deployment's secret is :func:`secret_for` its simulator key (``DELULA_SIMULATOR_KEY``,
else the one generated once and kept in the database), so every process of the deployment, and
the same deployment after a restart, reads the ids the others minted; there is no built-in
secret. The tag protects against typos and tampering; whoever holds the key can submit (and so
mint) ids anyway. The summary is cut at the first of :data:`_LEVELS` that keeps the id under
:data:`MAX_ID_LENGTH` characters.

Faults are chosen at submit time and travel in the id, so their catalogue (:data:`FAULTS`, the
default options of each) and the reading of a fault request live here too.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "FAULTS",
    "MAX_ID_LENGTH",
    "InvalidRequestId",
    "Ticket",
    "choose_fault",
    "cut",
    "mint",
    "number",
    "read",
    "secret_for",
]

MAX_ID_LENGTH = 400

#: fault name -> default options (documented in :mod:`delula.simulator`)
FAULTS: dict[str, dict[str, Any]] = {
    "failed": {},
    "submit_5xx": {"code": 503},
    "status_5xx": {"code": 503, "for_s": 2.0},
    "status_429": {"retry_after": 1.0, "for_s": 2.0},
    "status_hang": {"hang_s": math.inf},   # as long as the engine lets an answer hang
    "status_malformed": {},
    "status_unknown": {},
    "status_missing": {},
    "result_5xx": {"code": 500, "for_s": math.inf},
    "result_malformed": {},
    "result_missing": {},
    "result_empty": {},
    "result_unsized": {},
    "result_oversize": {"bytes": 1e12},
    "result_not_video": {},
    "result_offsite": {},
    "result_duration": {"length_s": 3600.0},
}
# which option a `sim/fault/NAME/SECONDS` number sets (else for_s)
_FAULT_PARAM = {"status_hang": "hang_s", "result_duration": "length_s"}
_TITLE_KEYS = ("recipe", "recipe_name", "recipeName", "title")
_PROMPT_KEYS = ("prompt",)

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


class InvalidRequestId(ValueError):
    """The request id is malformed, forged or was signed with another secret."""


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
    quality: float | None = None   # the result's quality score (ids minted before it carry none)

    def option(self, name: str) -> float:
        value = self.options.get(name)
        if value is None:
            value = FAULTS.get(self.fault or "", {}).get(name, 0.0)
        return float(value)

    @property
    def submitted_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.submitted_at, timezone.utc)


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters, an ellipsis marking the cut."""
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


def number(value: Any, what: str) -> float:
    """The ``_sim.<what>`` option as a finite, non-negative float (else ValueError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"_sim.{what} must be a number, got {value!r}")
    result = float(value)
    if result != result or result < 0:
        raise ValueError(f"_sim.{what} must be a non-negative number, got {value!r}")
    return result


# --------------------------------------------------------------------------------------------
# what a submission asks for
# --------------------------------------------------------------------------------------------
def _normalise_fault(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def choose_fault(model_id: str, opts: dict) -> tuple[str | None, dict[str, float]]:
    """The fault (or None) and its options asked for by ``sim/fault/NAME[/SECONDS]`` or ``_sim``."""
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
            options[_FAULT_PARAM.get(fault, "for_s")] = number(seconds, "seconds")
    if opts.get("fault") is not None:
        fault = _normalise_fault(str(opts["fault"]))
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown simulator fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
    for name in ("code", "for_s", "hang_s", "retry_after", "bytes", "length_s"):
        if name in opts and opts[name] is not None:
            value = number(opts[name], name)
            if name == "code" and not 400 <= value <= 599:
                raise ValueError("_sim.code must be an HTTP error status (400..599)")
            options[name] = min(value, 1e9)
    return fault, options


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


# --------------------------------------------------------------------------------------------
# request ids
# --------------------------------------------------------------------------------------------
def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_for(key: str) -> bytes:
    """The ticket-signing secret of a simulator key: one key, one secret, in every process."""
    return hmac.new(key.encode("utf-8"), b"delula-sim/ticket-secret", hashlib.sha256).digest()


def _sign(secret: bytes, body: str) -> str:
    tag = hmac.new(secret, b"delula-sim/1." + body.encode("ascii"), hashlib.sha256)
    return _b64e(tag.digest()[:12])


def _payload(level, submitted, duration, outcome, model_id, title, prompt, values, nonce,
             fault, options, quality) -> dict:
    t_len, p_len, n_vals, k_len, v_len, m_len = level
    payload: dict[str, Any] = {
        "v": 1, "t": int(round(submitted * 1000)), "d": round(duration, 3),
        "o": 1 if outcome == "failed" else 0, "m": cut(model_id, m_len), "n": nonce,
    }
    if quality is not None:
        payload["q"] = round(quality, 3)
    if title and t_len:
        payload["r"] = cut(title, t_len)
    if prompt and p_len:
        payload["p"] = cut(prompt, p_len)
    if values and n_vals:
        payload["a"] = [[cut(k, k_len), cut(v, v_len)] for k, v in values[:n_vals]]
    if fault:
        payload["f"] = fault
        if options:
            payload["x"] = options
    return payload


def mint(secret: bytes, model_id: str, arguments: dict, opts: dict, *, submitted: float,
         duration: float, outcome: str, nonce: str, fault: str | None,
         options: dict[str, float], quality: float | None = None) -> Ticket:
    """The ticket of a submission whose draws are made, with its signed request id."""
    title, prompt, values = _summary(arguments, opts)
    model_id = _clean(model_id)
    for level in _LEVELS:
        payload = _payload(level, submitted, duration, outcome, model_id, title, prompt,
                           values, nonce, fault, options, quality)
        body = _b64e(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        request_id = f"{body}.{_sign(secret, body)}"
        if len(request_id) < MAX_ID_LENGTH:
            return read(secret, request_id)
    raise ValueError("cannot encode the request id within 400 characters")  # pragma: no cover


def read(secret: bytes, request_id: str) -> Ticket:
    """The ticket a request id carries; InvalidRequestId if it is malformed or not signed with ``secret``."""
    if not isinstance(request_id, str) or len(request_id) >= MAX_ID_LENGTH or "." not in request_id:
        raise InvalidRequestId("unknown request id")
    body, _, tag = request_id.rpartition(".")
    try:
        expected = _sign(secret, body)
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
            quality=float(payload["q"]) if "q" in payload else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidRequestId("unknown request id (undecodable)") from None
