"""fal.ai's queue REST API over ``requests``: timeouts, retries with backoff, readable errors.

Every failure is a :class:`~delula.providers.base.ProviderError`, never a raw
``requests``/``json`` exception. Timeouts, connection errors, 408/425/429 and 5xx are retried
here with exponential backoff (honouring ``Retry-After`` up to a cap); when the retries are used
up the error is ``retryable=True``. A submit (POST) is retried on connection failures, 429 and
5xx answers, but not after a read timeout, where fal may already have queued the request.

The client talks to the configured queue host only (``DELULA_FAL_QUEUE_URL``: the same scheme,
host and port): a submit answer whose status, result or cancel URL names another host is a
provider error, no call is made to any other host, and redirects are not followed -- so the
``Authorization: Key`` header never leaves for a host the answer chose.

Its assets are elsewhere: fal serves them from its media hosts (``DELULA_FAL_MEDIA_HOSTS``,
``fal.media`` and its subdomains by default, over HTTPS), or, against the simulator's HTTP API,
from the queue host itself. Those are its :attr:`FalProvider.asset_locations`, which the quality
gate checks a backlog job's asset URL against; the client never fetches an asset.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import requests

from .base import (
    RETRY_4XX,
    JobResult,
    JobStatus,
    ProviderError,
    Submission,
    answer_error,
    interpret_cancel,
    interpret_result,
    interpret_status,
    interpret_submit,
)

__all__ = ["DEFAULT_QUEUE_URL", "FalProvider"]

FAL_LABEL = "fal.ai"
DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_MEDIA_HOSTS = ("fal.media",)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the default port filled in; an unreadable port is None."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, parts.hostname or "", port


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
                 retry_after_cap: float = 10.0, media_hosts: tuple[str, ...] = DEFAULT_MEDIA_HOSTS):
        self.key = key
        self.base_url = (base_url or DEFAULT_QUEUE_URL).rstrip("/")
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.retry_after_cap = max(0.0, float(retry_after_cap))
        self.session = session or requests.Session()
        self.label = FAL_LABEL
        self._origin = _origin_of(self.base_url)
        queue_root = urlsplit(self.base_url)
        self.asset_locations = (f"{queue_root.scheme}://{queue_root.netloc}/",
                                *(f"https://{pattern}{host}/" for host in media_hosts for pattern in ("", "*.")))
        self._sleep = time.sleep

    def __repr__(self) -> str:
        return f"FalProvider(base_url={self.base_url!r}, key={'set' if self.key else 'missing'})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "delula-backlog/1"}
        if self.key:
            headers["Authorization"] = f"Key {self.key}"
        return headers

    def _follow(self, op: str, what: str, url: str) -> None:
        """Refuse ``url`` unless it is on the configured queue host."""
        if _origin_of(url) != self._origin:
            host = urlsplit(url).netloc[:80] or repr(url[:80])
            raise ProviderError(f"{self.label} {op}: the {what} names the host {host}, not the configured "
                                f"queue host {urlsplit(self.base_url).netloc}; it is not followed",
                                retryable=False)

    def _call(self, op: str, method: str, url: str, **kwargs) -> tuple[int, str]:
        """One logical call with retries. Returns (status code, body text) of a final answer."""
        self._follow(op, "URL", url)
        attempts = self.retries + 1
        last: ProviderError | None = None
        for attempt in range(1, attempts + 1):
            delay = self.backoff * (2 ** (attempt - 1))
            try:
                resp = self.session.request(method, url, headers=self._headers(), allow_redirects=False,
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
                if code < 500 and code not in RETRY_4XX:
                    return code, text
                last = answer_error(self.label, op, code, text)
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
            sub = interpret_submit(self.label, code, text, self.base_url, model_id)
            for what in ("status_url", "response_url", "cancel_url"):
                self._follow("submit", what, getattr(sub, what))
            return sub
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
