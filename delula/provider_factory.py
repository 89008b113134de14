"""The generation provider the settings ask for: fal.ai or the in-process simulator.

This sits above both :mod:`delula.providers` and :mod:`delula.simulator` (the simulator builds on
the providers' contract), so choosing between them creates no import loop.
"""
from __future__ import annotations

from .providers import DEFAULT_QUEUE_URL, FalProvider, Provider
from .simulator import Simulator, SimulatorProvider

__all__ = ["make_provider"]


def make_provider(settings, *, clock=None) -> Provider:
    """The provider the settings ask for.

    ``settings``: ``provider`` ("simulator" | "fal"), ``fal_key``, ``fal_queue_url``,
    ``simulator_duration`` ((min, max) seconds, or one number), ``simulator_failure_rate``;
    optionally ``simulator_secret``. ``clock`` (with ``.now()``) drives the simulator.
    """
    kind = getattr(settings, "provider", "simulator")
    if kind == "simulator":
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
