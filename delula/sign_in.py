"""Signing in with a password, throttled in the database per username and per client address.

Each attempt is counted BEFORE its password is checked, by one statement for both counts
(``storage.throttle.count_attempt``): a parallel burst cannot pass the check before its failures
are counted, and every process of the deployment sees the same counts. Past a limit, attempts
are refused until the window that began with the first counted one has passed, whatever the
password. A success takes its attempt back: the username's count starts again and the
address's loses the success (many staff behind one proxy address are not locked out by signing
in). The address is the client's as the web face determined it (trusted proxy hops).

Audited: every success (``sign_in``), every wrong password or refused account and the first
refusal of each window (``sign_in_failed``, with the username tried and the address; no actor,
since who tried is unknown).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from . import audit, auth
from .storage import accounts, throttle

WINDOW = timedelta(minutes=15)
LIMITS = {"username": 10, "address": 50}   # attempts per window, per username and per client address


@dataclass(frozen=True)
class Outcome:
    user: object | None = None          # the user, signed in
    retry_after_s: int | None = None    # set when the attempt was refused unheard, throttled


def attempt(rt, username: str, password: str, address: str) -> Outcome:
    """Count the attempt, then, within the limits, check the password."""
    now = rt.now()
    keys = [("username", username.lower()[:128]), ("address", address[:128])]
    with rt.store.begin() as s:
        counts = throttle.count_attempt(s, keys, now=now, expired_before=now - WINDOW)
        over = {scope: counts[scope] for scope in LIMITS if counts[scope][0] > LIMITS[scope]}
        if any(n == LIMITS[scope] + 1 for scope, (n, _) in over.items()):
            audit.record(s, now=now, actor_id=None, action="sign_in_failed", username=username, address=address,
                         reason="throttled")
    if over:
        ends = max(start + WINDOW for _, start in over.values())
        return Outcome(retry_after_s=max(1, math.ceil((ends - now).total_seconds())))
    user = auth.check_password(rt, username, password)
    with rt.store.begin() as s:
        if user is None:
            tried = accounts.get_user_by_name(s, username)
            audit.record(s, now=now, actor_id=None, action="sign_in_failed",
                         target_user_id=tried.id if tried is not None else None, username=username, address=address)
        else:
            throttle.forgive(s, reset=keys[0], uncount=keys[1])
            audit.record(s, now=now, actor_id=user.id, action="sign_in", target_user_id=user.id, address=address)
    return Outcome(user=user)


def prune(rt) -> int:
    """Forget the counts whose window has passed (housekeeping)."""
    with rt.store.begin() as s:
        return throttle.prune(s, rt.now() - WINDOW)
