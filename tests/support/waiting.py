"""Waiting for something another thread or process does."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll until ``predicate()`` is truthy (a generous deadline that only guards against hangs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
