"""Generation providers: the only code (with :mod:`delula.simulator`) that speaks to a generation
service (SPEC §5 "Providers").

* :mod:`.base` -- the contract: :class:`Provider`, its types, :class:`ProviderError` and the
  reading of fal-style answers, shared with the simulator;
* :mod:`.fal` -- :class:`FalProvider`, fal.ai's queue REST API over ``requests``.

The stateless in-process simulator (:class:`delula.simulator.SimulatorProvider`, the default)
implements the same contract; :func:`delula.provider_factory.make_provider` picks one from the
settings.

Error contract: every failure to talk to the service is a :class:`ProviderError` with a
readable ``message`` and a ``retryable`` flag (the rules are in :mod:`.base` and :mod:`.fal`).
"""
from .base import JobResult, JobStatus, Provider, ProviderError, Submission, app_root
from .fal import DEFAULT_QUEUE_URL, FalProvider

__all__ = [
    "DEFAULT_QUEUE_URL",
    "FalProvider",
    "JobResult",
    "JobStatus",
    "Provider",
    "ProviderError",
    "Submission",
    "app_root",
]
