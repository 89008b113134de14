"""The provider circuit breaker: after a run of provider errors, stop calling the provider, and
try again with one probe after a backoff.

States (``provider_breaker``, shared by every process):

- **closed** — calls go through; ``failures`` counts consecutive provider errors, and
  ``DELULA_BREAKER_THRESHOLD`` of them open the breaker;
- **open** — nothing is called: the queue submits nothing, polls and times out nothing, so
  waiting jobs spend no attempts. ``DELULA_BREAKER_BACKOFF_S`` after opening (doubled for each
  probe that failed in a row, at most ``DELULA_BREAKER_MAX_BACKOFF_S``) one caller takes the
  probe;
- **half_open** — that caller's next job goes through (its lease is :data:`PROBE_LEASE_S`); a
  success closes the breaker (and makes every submitted job's poll due at once), an error opens
  it again with the longer backoff.

A *provider error* is what says the provider, not one job, is in trouble: a retryable
:class:`ProviderError` (5xx, 408/425/429, timeouts, connection errors, malformed or incomplete
answers), an authentication refusal (401/403: every call will fail alike) and any other
exception from the client. Another refusal (400, 404, 422 …) is about its job: it neither
counts nor clears. The transitions are the pure function :func:`after_call`.

Every call is counted into ``provider_calls{kind, result}`` in the transaction that records its
outcome, and each opening into ``breaker_opened``. :class:`Gate` is one process's view, refreshed
from the database at every queue tick (and at least every :data:`REFRESH_S` otherwise).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .clock import isoformat
from .providers import ProviderError
from .storage import breaker as store
from .storage import counters, jobs

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
OK, ERROR, REFUSED = "ok", "error", "refused"
AUTH_REFUSALS = frozenset({401, 403})
PROBE_LEASE_S = 60.0     # a half-open probe not decided in this long is offered again
REFRESH_S = 1.0


@dataclass(frozen=True)
class State:
    state: str = CLOSED
    failures: int = 0
    trips: int = 0
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    probe_until: datetime | None = None
    last_error: str | None = None


def outcome_of(error: BaseException | None) -> str:
    """``ok`` (no error), ``error`` (the provider is in trouble) or ``refused`` (about one job)."""
    if error is None:
        return OK
    if isinstance(error, ProviderError) and not error.retryable and error.status_code not in AUTH_REFUSALS:
        return REFUSED
    return ERROR


def backoff_s(trips: int, settings) -> float:
    """Seconds before the next probe after ``trips`` failed probes in a row."""
    return min(settings.breaker_backoff_s * 2 ** trips, settings.breaker_max_backoff_s)


def after_call(st: State, outcome: str, *, now: datetime, settings, error: str | None = None) -> State:
    """The state after one call's ``outcome`` (pure)."""
    if outcome == REFUSED:
        return st
    if outcome == OK:
        if st.state == HALF_OPEN:
            return State(last_error=st.last_error)
        if st.state == CLOSED and st.failures:
            return replace(st, failures=0)
        return st       # closed and clear, or open: a late answer of a call made before it opened
    if st.state == CLOSED:
        failures = st.failures + 1
        if failures < settings.breaker_threshold:
            return replace(st, failures=failures, last_error=error)
        return State(OPEN, failures, 0, now, now + timedelta(seconds=backoff_s(0, settings)), None, error)
    if st.state == HALF_OPEN:
        trips = st.trips + 1
        return State(OPEN, st.failures, trips, now, now + timedelta(seconds=backoff_s(trips, settings)), None, error)
    return replace(st, last_error=error)   # already open


def _state_of(row) -> State:
    if row is None:
        return State()
    return State(row.state, row.failures, row.trips, row.opened_at, row.next_probe_at, row.probe_until,
                 row.last_error)


class Gate:
    """One process's breaker: :meth:`enter` before a job's provider calls, :meth:`record` after
    each call. Thread-safe (a tick's polls run side by side)."""

    def __init__(self, rt):
        self.rt = rt
        self.name = rt.settings.provider
        self._lock = threading.Lock()
        self.state = State()
        self._probe_token = False     # this process holds the half-open probe, unused
        self._read_at = float("-inf")

    def refresh(self) -> State:
        """Read the shared state; take the probe when it is due (one process wins it)."""
        now = self.rt.now()
        with self.rt.store.begin() as s:
            row = store.get(s, self.name)
            won = False
            if row is not None and row.state != CLOSED:
                won = store.take_probe(s, self.name, now=now,
                                       lease_until=now + timedelta(seconds=PROBE_LEASE_S))
                if won:
                    row = store.get(s, self.name)
            st = _state_of(row)
        with self._lock:
            self.state = st
            if won:
                self._probe_token = True
                log.info("breaker: probing %s with one job", self.name)
            elif st.state == CLOSED:
                self._probe_token = False
            self._read_at = time.monotonic()
        return st

    def _fresh(self) -> None:
        if time.monotonic() - self._read_at > REFRESH_S:
            self.refresh()

    def is_open(self) -> bool:
        """Would :meth:`enter` refuse? (Open, or half-open with the probe elsewhere or spent.)"""
        self._fresh()
        with self._lock:
            return self.state.state != CLOSED and not self._probe_token

    def enter(self) -> bool:
        """May the next job talk to the provider? Always while closed; half-open, once, for the
        process holding the probe."""
        self._fresh()
        with self._lock:
            if self.state.state == CLOSED:
                return True
            if self._probe_token:
                self._probe_token = False
                return True
            return False

    def record(self, kind: str, error: BaseException | None = None) -> str:
        """Count one call of ``kind`` and apply its outcome to the shared state; returns the
        outcome (:func:`outcome_of`)."""
        outcome = outcome_of(error)
        now = self.rt.now()
        message = None if error is None else (str(error) or type(error).__name__)[:500]
        series = {(counters.PROVIDER_CALLS, counters.labels_text({"kind": kind, "result": outcome})): 1}
        with self._lock:
            seen = self.state
        quiet = outcome == REFUSED or (outcome == OK and seen.state == CLOSED and not seen.failures)
        with self.rt.store.begin() as s:
            if quiet:   # nothing to change: count the call only, no lock on the breaker row
                counters.add(s, series)
                after = None
            else:
                row = store.locked(s, self.name, now=now)
                before = _state_of(row)
                after = after_call(before, outcome, now=now, settings=self.rt.settings, error=message)
                if after != before:
                    store.write(s, row, vars(after), now=now)
                if after.state == CLOSED and before.state != CLOSED:
                    jobs.repoll_submitted(s, now)   # what waited while open is due at once
                if after.state == OPEN and before.state != OPEN:
                    series[(counters.BREAKER_OPENED, counters.labels_text({"provider": self.name}))] = 1
                counters.add(s, series)
        if after is not None:
            with self._lock:
                self.state = after
                self._read_at = time.monotonic()
            if after.state != seen.state:
                self._announce(seen, after)
        return outcome

    def _announce(self, before: State, after: State) -> None:
        if after.state == OPEN:
            log.warning("breaker: %s opened after %d provider error(s) (last: %s); next probe at %s",
                        self.name, after.failures, after.last_error, isoformat(after.next_probe_at))
        elif after.state == CLOSED:
            log.warning("breaker: %s closed: the probe succeeded", self.name)
        self.rt.invalidate()


def gate(rt) -> Gate:
    """This runtime's gate (one per process and database)."""
    return rt.cache("breaker-gate", ttl=float("inf"), maxsize=1, keep=True).get_or_compute("gate", lambda: Gate(rt))


def call(rt, kind: str, fn, *args):
    """``fn(*args)``, a provider call of ``kind``, counted and recorded in the breaker."""
    g = gate(rt)
    try:
        value = fn(*args)
    except Exception as e:
        g.record(kind, e)
        raise
    g.record(kind)
    return value


def current(rt) -> dict:
    """The breaker as people see it: ``{"provider", "state", "failures", "threshold", "trips",
    "openedAt", "nextProbeAt", "lastError"}``."""
    with rt.store.begin() as s:
        st = _state_of(store.get(s, rt.settings.provider))
    return {"provider": rt.settings.provider, "state": st.state, "failures": st.failures,
            "threshold": rt.settings.breaker_threshold, "trips": st.trips, "openedAt": isoformat(st.opened_at),
            "nextProbeAt": isoformat(st.next_probe_at), "lastError": st.last_error}


def sentence(current_state: dict) -> str:
    """What the breaker of :func:`current` means, in a sentence for people (times left out: the
    faces show ``nextProbeAt`` in the viewer's time zone)."""
    provider, state = current_state["provider"], current_state["state"]
    if state == CLOSED:
        return f"The circuit breaker to {provider} is closed: calls go through."
    last = f" (last: {current_state['lastError']})" if current_state.get("lastError") else ""
    if state == HALF_OPEN:
        return (f"The circuit breaker to {provider} is half-open: one probe job is testing the provider; "
                f"its success closes the breaker{last}.")
    return (f"The circuit breaker to {provider} is open after {current_state['failures']} provider errors in a "
            f"row{last}: nothing is submitted or polled and no job spends an attempt until a probe succeeds.")
