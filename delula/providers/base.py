"""The provider contract: the types every generation provider speaks, its error, and the reading
of fal-style queue answers shared by :class:`delula.providers.fal.FalProvider` and the in-process
simulator (:mod:`delula.simulator`).

Reading an answer (``interpret_*``) turns a status code and body text into a
:class:`Submission`, :class:`JobStatus` or :class:`JobResult`, or a :class:`ProviderError`:

* 408/425/429 and 5xx -> ``retryable=True``;
* other 4xx (400/401/403/404/422 ...) -> ``retryable=False`` with the service's ``detail``;
  except "still in progress" on a result fetch, which is ``retryable=True``;
* malformed JSON or a missing field -> ``retryable=True``;
* an unknown status string is not an error: ``JobStatus("UNKNOWN", error=...)``.

A result's facts come from fal's ``File``/``VideoFile`` object of the asset (``content_type``,
``file_size``, ``duration``) and a top-level ``quality_score`` (the simulator's); a fact that is
absent or not a number is ``None`` in the :class:`JobResult`.
"""
from __future__ import annotations

import json
import math
import mimetypes
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

__all__ = [
    "RETRY_4XX",
    "JobResult",
    "JobStatus",
    "Provider",
    "ProviderError",
    "Submission",
    "answer_error",
    "app_root",
    "interpret_cancel",
    "interpret_result",
    "interpret_status",
    "interpret_submit",
]

STATES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "UNKNOWN")
#: 4xx answers that trying again later may cure (like every 5xx)
RETRY_4XX = frozenset({408, 425, 429})


class ProviderError(Exception):
    """Talking to the generation service failed; ``retryable`` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (f"ProviderError({self.message!r}, retryable={self.retryable!r}, "
                f"status_code={self.status_code!r})")


@dataclass(frozen=True)
class Submission:
    """Everything needed to talk about one submitted request later (JSON-serialisable)."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Submission":
        if not isinstance(d, dict):
            raise ValueError(f"a submission must be a dict, got {type(d).__name__}")
        values = {}
        for key in ("request_id", "status_url", "response_url", "cancel_url"):
            value = d.get(key)
            if not isinstance(value, str) or (key == "request_id" and not value):
                raise ValueError(f"submission is missing {key!r}")
            values[key] = value
        return cls(**values)


@dataclass(frozen=True)
class JobStatus:
    state: str            # "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED" | "FAILED" | "UNKNOWN"
    error: str | None = None

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")


@dataclass(frozen=True)
class JobResult:
    """A finished job's asset and what the provider says about it (``None``: not reported); the
    quality gate (:mod:`delula.quality`) judges a backlog job's by these."""

    video_url: str
    content_type: str
    thumbnail_url: str | None
    file_size: int | None = None          # bytes
    duration_s: float | None = None       # the video's length
    quality_score: float | None = None    # the provider's own score of the result (the simulator's: 0 to 1)


@runtime_checkable
class Provider(Protocol):
    name: str
    #: where its assets live: URL prefixes as :func:`delula.quality.at_location` reads them
    asset_locations: tuple[str, ...]

    def submit(self, model_id: str, arguments: dict) -> Submission: ...

    def status(self, sub: Submission) -> JobStatus: ...

    def result(self, sub: Submission) -> JobResult: ...

    def cancel(self, sub: Submission) -> None: ...


# --------------------------------------------------------------------------------------------
# interpreting answers
# --------------------------------------------------------------------------------------------
def app_root(model_id: str) -> str:
    """fal's app id of an endpoint id: ``fal-ai/veo3/fast`` -> ``fal-ai/veo3``.

    Status, result and cancel URLs use only this root (``workflows/`` and ``comfy/`` ids keep
    their namespace).
    """
    parts = [p for p in (model_id or "").split("/") if p]
    keep = 3 if parts and parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(payload: Any, text: str) -> str:
    """A readable sentence out of an error body (fal uses ``detail``: str, list or object)."""
    detail = payload.get("detail", payload.get("message", payload.get("error"))) if isinstance(payload, dict) else None
    if isinstance(detail, str) and detail.strip():
        return _snippet(detail, 300)
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
                msg = str(item.get("msg") or item.get("message") or json.dumps(item))
                parts.append(f"{where}: {msg}" if where else msg)
            else:
                parts.append(str(item))
        return _snippet("; ".join(parts), 300)
    if detail is not None:
        return _snippet(json.dumps(detail, default=str), 300)
    if isinstance(payload, dict) and isinstance(payload.get("status"), str):
        return payload["status"]
    if payload is None and "<" in (text or ""):  # an HTML error page from a proxy
        text = re.sub(r"<(script|style)\b.*?</\1>|<[^>]+>", " ", text, flags=re.S | re.I)
    return _snippet(text) or "no details"


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def answer_error(label: str, op: str, code: int, text: str) -> ProviderError:
    """The ProviderError for a non-2xx answer."""
    payload = _parse_json(text)
    detail = _detail(payload, text)
    retryable = code >= 500 or code in RETRY_4XX
    if op == "result" and code == 400 and "progress" in detail.lower():
        retryable = True  # not finished yet: fetching again later will work
    return ProviderError(f"{label} returned {code}: {detail}", retryable=retryable, status_code=code)


def _body(label: str, op: str, code: int, text: str) -> dict:
    """The JSON object of a 2xx answer, or a retryable ProviderError."""
    if not 200 <= code < 300:
        raise answer_error(label, op, code, text)
    try:
        payload = json.loads(text)
    except (ValueError, TypeError):
        raise ProviderError(f"{label} returned malformed JSON for {op} ({code}): {_snippet(text, 80)!r}",
                            retryable=True, status_code=code) from None
    if not isinstance(payload, dict):
        raise ProviderError(f"{label} {op} answer is not a JSON object: {_snippet(text, 80)!r}",
                            retryable=True, status_code=code)
    return payload


def interpret_submit(label: str, code: int, text: str, base_url: str, model_id: str) -> Submission:
    payload = _body(label, "submit", code, text)
    request_id = payload.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise ProviderError(f"{label} submit answer has no request_id: {_snippet(text, 80)!r}",
                            retryable=True, status_code=code)
    # Use the URLs fal returns (its status URL drops the endpoint path); rebuild only if absent.
    root = f"{base_url.rstrip('/')}/{app_root(model_id)}/requests/{quote(request_id, safe='')}"
    fallback = {"response_url": root, "status_url": root + "/status", "cancel_url": root + "/cancel"}
    urls = {key: payload[key] if isinstance(payload.get(key), str) and payload[key] else fallback[key]
            for key in fallback}
    return Submission(request_id=request_id, **urls)


def interpret_status(label: str, code: int, text: str) -> JobStatus:
    payload = _body(label, "status", code, text)
    status = payload.get("status")
    if not isinstance(status, str):
        raise ProviderError(f"{label} status answer has no 'status' field: {_snippet(text, 80)!r}",
                            retryable=True, status_code=code)
    if status in ("IN_QUEUE", "IN_PROGRESS"):
        return JobStatus(status)
    if status == "COMPLETED":
        error = payload.get("error")
        if error:
            kind = payload.get("error_type")
            message = _snippet(error if isinstance(error, str) else json.dumps(error, default=str), 300)
            return JobStatus("FAILED", error=f"{message} ({kind})" if kind else message)
        return JobStatus("COMPLETED")
    if status in ("FAILED", "ERROR"):
        error = payload.get("error") or payload.get("detail") or f"{label} reported {status}"
        return JobStatus("FAILED", error=_snippet(str(error), 300))
    if status in ("CANCELLED", "CANCELED"):
        return JobStatus("FAILED", error=f"the request was cancelled at {label}")
    return JobStatus("UNKNOWN", error=f'unknown status "{_snippet(status, 60)}"')


def _url_of(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("url"), str) and value["url"]:
        return value["url"]
    if isinstance(value, list) and value:
        return _url_of(value[0])
    return None


def interpret_result(label: str, code: int, text: str) -> JobResult:
    payload = _body(label, "result", code, text)
    video = payload.get("video")
    url = _url_of(video)
    if url is None:
        for key in ("videos", "images", "image"):  # other fal media shapes
            video = payload.get(key)
            url = _url_of(video)
            if url:
                break
    if url is None:
        raise ProviderError(f"{label} result has no video url (keys: {', '.join(sorted(payload)) or 'none'})",
                            retryable=True, status_code=code)
    if isinstance(video, list):
        video = video[0]
    content_type = video.get("content_type") if isinstance(video, dict) else None
    if not isinstance(content_type, str) or not content_type:
        content_type = mimetypes.guess_type(urlsplit(url).path)[0] or "application/octet-stream"
    thumbnail = _url_of(payload.get("thumbnail")) or _url_of(payload.get("thumbnail_url"))
    facts = video if isinstance(video, dict) else {}
    size = facts.get("file_size")
    return JobResult(video_url=url, content_type=content_type, thumbnail_url=thumbnail,
                     file_size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
                     duration_s=_number(facts.get("duration"), minimum=0.0),
                     quality_score=_number(payload.get("quality_score")))


def _number(value: Any, minimum: float | None = None) -> float | None:
    """A reported number, ``None`` when absent or not a finite number (at least ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if minimum is None or value >= minimum else None


def interpret_cancel(label: str, code: int, text: str) -> None:
    if 200 <= code < 300:
        return
    payload = _parse_json(text)
    if code == 400 and isinstance(payload, dict) and payload.get("status") == "ALREADY_COMPLETED":
        return  # nothing left to cancel
    raise answer_error(label, "cancel", code, text)
