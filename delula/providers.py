"""Generation providers: the only code (with :mod:`delula.simulator`) that speaks to a generation
service (SPEC §5 "Providers").

* :class:`FalProvider` -- fal.ai's queue REST API over ``requests``.
* :class:`delula.simulator.SimulatorProvider` -- the stateless in-process simulator (default).

Both implement :class:`Provider`; :func:`make_provider` picks one from the settings.

Error contract: every failure to talk to the service is a :class:`ProviderError` with a
readable ``message`` and a ``retryable`` flag -- never a raw ``requests``/``json`` exception:

* timeouts, connection errors, 408/425/429 and 5xx are retried here with exponential backoff
  (honouring ``Retry-After`` up to a cap); when the retries are used up -> ``retryable=True``;
* other 4xx (400/401/403/404/422 ...) -> ``retryable=False`` with the service's ``detail``;
  except "still in progress" on a result fetch, which is ``retryable=True``;
* malformed JSON or a missing field -> ``retryable=True``;
* an unknown status string is not an error: ``JobStatus("UNKNOWN", error=...)``.

A submit (POST) is retried on connection failures, 429 and 5xx answers, but not after a read
timeout, where fal may already have queued the request.
"""
from __future__ import annotations

import json
import mimetypes
import re
import time
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import requests

__all__ = [
    "FalProvider",
    "JobResult",
    "JobStatus",
    "Provider",
    "ProviderError",
    "Submission",
    "app_root",
    "make_provider",
]

STATES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "UNKNOWN")
FAL_LABEL = "fal.ai"
DEFAULT_QUEUE_URL = "https://queue.fal.run"
_RETRY_4XX = frozenset({408, 425, 429})


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
    video_url: str
    content_type: str
    thumbnail_url: str | None


@runtime_checkable
class Provider(Protocol):
    name: str

    def submit(self, model_id: str, arguments: dict) -> Submission: ...

    def status(self, sub: Submission) -> JobStatus: ...

    def result(self, sub: Submission) -> JobResult: ...

    def cancel(self, sub: Submission) -> None: ...


# --------------------------------------------------------------------------------------------
# interpreting answers (shared by FalProvider and the in-process simulator)
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


def _error(label: str, op: str, code: int, text: str) -> ProviderError:
    """The ProviderError for a non-2xx answer."""
    payload = _parse_json(text)
    detail = _detail(payload, text)
    retryable = code >= 500 or code in _RETRY_4XX
    if op == "result" and code == 400 and "progress" in detail.lower():
        retryable = True  # not finished yet: fetching again later will work
    return ProviderError(f"{label} returned {code}: {detail}", retryable=retryable, status_code=code)


def _body(label: str, op: str, code: int, text: str) -> dict:
    """The JSON object of a 2xx answer, or a retryable ProviderError."""
    if not 200 <= code < 300:
        raise _error(label, op, code, text)
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
    return JobResult(video_url=url, content_type=content_type, thumbnail_url=thumbnail)


def interpret_cancel(label: str, code: int, text: str) -> None:
    if 200 <= code < 300:
        return
    payload = _parse_json(text)
    if code == 400 and isinstance(payload, dict) and payload.get("status") == "ALREADY_COMPLETED":
        return  # nothing left to cancel
    raise _error(label, "cancel", code, text)


# --------------------------------------------------------------------------------------------
# fal.ai
# --------------------------------------------------------------------------------------------
def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class FalProvider:
    """fal.ai's queue REST API over ``requests`` (timeouts, retries, readable errors)."""

    name = "fal"

    def __init__(self, key: str | None, base_url: str = DEFAULT_QUEUE_URL, *, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.5, session: requests.Session | None = None,
                 retry_after_cap: float = 10.0):
        self.key = key
        self.base_url = (base_url or DEFAULT_QUEUE_URL).rstrip("/")
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.retry_after_cap = max(0.0, float(retry_after_cap))
        self.session = session or requests.Session()
        self.label = FAL_LABEL
        self._sleep = time.sleep

    def __repr__(self) -> str:
        return f"FalProvider(base_url={self.base_url!r}, key={'set' if self.key else 'missing'})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "delula-backlog/1"}
        if self.key:
            headers["Authorization"] = f"Key {self.key}"
        return headers

    def _call(self, op: str, method: str, url: str, **kwargs) -> tuple[int, str]:
        """One logical call with retries. Returns (status code, body text) of a final answer."""
        attempts = self.retries + 1
        last: ProviderError | None = None
        for attempt in range(1, attempts + 1):
            delay = self.backoff * (2 ** (attempt - 1))
            try:
                resp = self.session.request(method, url, headers=self._headers(),
                                            timeout=(self.timeout, self.timeout), **kwargs)
                text = resp.text
            except requests.exceptions.ReadTimeout:
                last = ProviderError(f"{self.label} {op} timed out after {self.timeout:g} s", retryable=True)
                if method == "POST":
                    raise last from None  # fal may have queued it: let the caller decide
            except requests.exceptions.Timeout:
                last = ProviderError(f"{self.label} {op} timed out connecting after {self.timeout:g} s",
                                     retryable=True)
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                last = ProviderError(f"could not reach {self.label} for {op} ({urlsplit(url).netloc}): "
                                     f"{exc.__class__.__name__}", retryable=True)
            except requests.exceptions.RequestException as exc:
                raise ProviderError(f"{self.label} {op} request failed: {exc}", retryable=False) from None
            else:
                code = resp.status_code
                if code < 500 and code not in _RETRY_4XX:
                    return code, text
                last = _error(self.label, op, code, text)
                hinted = _retry_after(resp.headers.get("Retry-After"))
                if hinted is not None:
                    delay = min(hinted, self.retry_after_cap)
            if attempt < attempts:
                self._sleep(delay)
        assert last is not None
        tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
        raise ProviderError(f"{last.message} (gave up after {tries})", retryable=True,
                            status_code=last.status_code)

    def _missing_key_hint(self, exc: ProviderError) -> ProviderError:
        if exc.status_code == 401 and not self.key:
            return ProviderError(f"{exc.message} (FAL_KEY is not set)", retryable=False, status_code=401)
        return exc

    def submit(self, model_id: str, arguments: dict) -> Submission:
        model_id = (model_id or "").strip("/")
        if not model_id:
            raise ProviderError("cannot submit: empty model id", retryable=False)
        url = f"{self.base_url}/{quote(model_id, safe='/-_.~')}"
        try:
            code, text = self._call("submit", "POST", url, json=arguments)
            return interpret_submit(self.label, code, text, self.base_url, model_id)
        except ProviderError as exc:
            raise self._missing_key_hint(exc) from None

    def status(self, sub: Submission) -> JobStatus:
        try:
            code, text = self._call("status", "GET", sub.status_url, params={"logs": "1"})
            return interpret_status(self.label, code, text)
        except ProviderError as exc:
            raise self._missing_key_hint(exc) from None

    def result(self, sub: Submission) -> JobResult:
        try:
            code, text = self._call("result", "GET", sub.response_url)
            return interpret_result(self.label, code, text)
        except ProviderError as exc:
            raise self._missing_key_hint(exc) from None

    def cancel(self, sub: Submission) -> None:
        try:
            code, text = self._call("cancel", "PUT", sub.cancel_url)
            interpret_cancel(self.label, code, text)
        except ProviderError as exc:
            raise self._missing_key_hint(exc) from None


# --------------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------------
def make_provider(settings, *, clock=None) -> Provider:
    """The provider the settings ask for.

    ``settings``: ``provider`` ("simulator" | "fal"), ``fal_key``, ``fal_queue_url``,
    ``simulator_duration`` ((min, max) seconds, or one number), ``simulator_failure_rate``;
    optionally ``simulator_secret``. ``clock`` (with ``.now()``) drives the simulator.
    """
    kind = getattr(settings, "provider", "simulator")
    if kind == "simulator":
        from delula.simulator import Simulator, SimulatorProvider

        simulator = Simulator(
            duration=getattr(settings, "simulator_duration", (5.0, 40.0)),
            failure_rate=getattr(settings, "simulator_failure_rate", 0.05),
            clock=clock,
            secret=getattr(settings, "simulator_secret", None),
        )
        return SimulatorProvider(simulator)
    if kind == "fal":
        return FalProvider(getattr(settings, "fal_key", None),
                           getattr(settings, "fal_queue_url", None) or DEFAULT_QUEUE_URL,
                           timeout=getattr(settings, "provider_timeout_s", 10.0))
    raise ValueError(f"unknown provider {kind!r}: expected 'simulator' or 'fal'")
