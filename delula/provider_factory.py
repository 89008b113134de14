"""The generation provider the settings ask for: fal.ai or the in-process simulator.

This sits above both :mod:`delula.providers` and :mod:`delula.simulator` (the simulator builds on
the providers' contract), so choosing between them creates no import loop.
"""
from __future__ import annotations

from .providers import DEFAULT_QUEUE_URL, FalProvider, Provider
from .providers.fal import DEFAULT_MEDIA_HOSTS
from .simulator import Simulator, SimulatorProvider, secret_for

__all__ = ["make_provider", "make_simulator"]


def make_simulator(settings, *, clock=None, key: str | None = None) -> Simulator:
    """The simulator of the settings (``simulator_duration``: (min, max) seconds or one number,
    ``simulator_failure_rate``, ``simulator_low_quality_rate``), signing its request ids with the
    secret of the simulator ``key``; without a key its ids are readable by this instance only.
    ``clock`` (with ``.now()``) drives it."""
    return Simulator(
        duration=getattr(settings, "simulator_duration", (5.0, 40.0)),
        failure_rate=getattr(settings, "simulator_failure_rate", 0.05),
        low_quality_rate=getattr(settings, "simulator_low_quality_rate", 0.05),
        clock=clock,
        secret=secret_for(key) if key else None,
    )


def make_provider(settings, *, clock=None, simulator_key: str | None = None) -> Provider:
    """The provider the settings ask for.

    ``settings``: ``provider`` ("simulator" | "fal"), ``fal_key``, ``fal_queue_url``,
    ``provider_timeout_s``, ``fal_media_hosts`` and what :func:`make_simulator` reads;
    ``simulator_key`` (the deployment's, :attr:`delula.runtime.Runtime.simulator_key`) and
    ``clock`` go to the simulator.
    """
    kind = getattr(settings, "provider", "simulator")
    if kind == "simulator":
        return SimulatorProvider(make_simulator(settings, clock=clock, key=simulator_key))
    if kind == "fal":
        return FalProvider(getattr(settings, "fal_key", None),
                           getattr(settings, "fal_queue_url", None) or DEFAULT_QUEUE_URL,
                           timeout=getattr(settings, "provider_timeout_s", 10.0),
                           media_hosts=getattr(settings, "fal_media_hosts", DEFAULT_MEDIA_HOSTS))
    raise ValueError(f"unknown provider {kind!r}: expected 'simulator' or 'fal'")
