"""A stateless, fal.ai-compatible generation simulator.

The simulator stands in for fal.ai's queue API (SPEC §5 "Providers"). It keeps **no state**: the
request id itself carries, as base64url JSON plus a short HMAC-SHA256 tag, everything the job
will do -- submit time, chosen duration, chosen outcome, model id, a short summary of the
arguments (recipe name, prompt, form values; truncated) and any injected fault. Any process,
including one started after a restart, answers status and result identically, as long as it
uses the same secret: a deployment's is derived from its simulator key (:func:`secret_for`), so
it is the same in every process of the deployment and there is no built-in one. Ids are URL-safe
and shorter than 400 characters.

State is a function of ``clock.now() - submit time``::

    elapsed < 10 % of duration   IN_QUEUE      (HTTP 202)
    elapsed < duration           IN_PROGRESS   (HTTP 202)
    otherwise                    COMPLETED     (HTTP 200; with "error" when the outcome is failed)

A duration of 0 completes at once. The outcome is drawn at submit time: failed with
probability ``failure_rate``. So is the result's ``quality_score``, which the quality gate may
check (``DELULA_MIN_QUALITY``): from 0.00 to 0.49 for a share ``low_quality_rate`` of the jobs
(``DELULA_SIMULATOR_LOW_QUALITY_RATE``), from 0.50 to 1.00 for the others; it travels in the id,
so a job's score is the same wherever and whenever its result is asked for.

Two faces share the same logic:

* :class:`SimulatorProvider` -- the in-process :class:`delula.providers.Provider`, no HTTP;
  asset URLs are relative to its ``base_url`` (``/sim/fal/files/<request_id>/video.svg``).
* :func:`create_blueprint` -- a fal-compatible HTTP API, mounted by ``app.py`` at ``/sim/fal``
  only when ``DELULA_PROVIDER=simulator`` (with ``fal`` every URL under it is a 404), and by
  :func:`serve` / :func:`create_app` standalone. Results carry absolute URLs::

    POST /sim/fal/<model_id>                          -> 200 {request_id, status_url, response_url, cancel_url, queue_position}
    GET  /sim/fal/<app>/requests/<id>/status[?logs=1] -> 202 IN_QUEUE/IN_PROGRESS, 200 COMPLETED
    GET  /sim/fal/<app>/requests/<id>                 -> 200 result | 400 still in progress | 422 failed
    PUT  /sim/fal/<app>/requests/<id>/cancel          -> 202 CANCELLATION_REQUESTED | 400 ALREADY_COMPLETED
    GET  /sim/fal/files/<id>/video.svg | thumb.svg    -> the SVG poster / thumbnail (no auth, cacheable)

  Like fal, the returned status/result/cancel URLs use only the app root of the model id
  (``fal-ai/veo3/fast`` -> ``fal-ai/veo3``); any prefix is accepted, since the id is
  self-describing. Queue endpoints require ``Authorization: Key <simulator key>`` (``Bearer``
  is accepted too): ``DELULA_SIMULATOR_KEY``, else in the app the key generated once and kept in
  the database (a fal client pointed here sends its ``FAL_KEY``, so give both the same value).
  A missing or wrong key is 401, an unknown/forged id 404, and every error is JSON
  ``{"detail": ...}``. Cancellation is acknowledged but, being stateless, does not stop the
  simulated job.

Fault injection
---------------
Chosen at submit time and encoded into the request id, so it is stateless too. Either pass
``arguments["_sim"] = {"fault": NAME, ...options}`` or submit to the model id
``sim/fault/NAME`` (optionally ``sim/fault/NAME/SECONDS`` which sets ``for_s``/``hang_s``).
Names accept ``-`` or ``_``.

==================  ==========================================================================
``failed``          the job ends FAILED (status COMPLETED + ``error``; result 422 ``detail``)
``submit_5xx``      submit answers ``code`` (default 503) -- every time (nothing to count on)
``status_5xx``      status answers ``code`` (default 503) while elapsed < ``for_s`` (default
                    2 s; use a large number for a permanent outage), then recovers
``status_429``      status answers 429 with ``Retry-After: retry_after`` (default 1) while
                    elapsed < ``for_s`` (default 2 s)
``status_hang``     status sleeps ``hang_s`` (default and at most 5 s: a hanging request holds
                    a server thread) before answering; in process it raises a retryable
                    timeout ProviderError at once. To see a client time out, give the client
                    a shorter timeout (``DELULA_PROVIDER_TIMEOUT_S``)
``status_malformed`` status answers 200 with truncated, invalid JSON
``status_unknown``  status answers 200 with ``"status": "WEIRD"``
``status_missing``  status answers 200 JSON without a ``status`` field
``result_5xx``      result answers ``code`` (default 500) while elapsed < ``for_s`` (default:
                    forever)
``result_malformed`` result answers 200 with invalid JSON
``result_missing``  result answers 200 JSON without ``video``
``result_empty``    the result's ``file_size`` is 0
``result_unsized``  the result reports no ``file_size``
``result_oversize`` the result's ``file_size`` is ``bytes`` (default 10^12)
``result_not_video`` the result's asset is ``text/html``
``result_offsite``  the result's asset URL is on another host (``https://offsite.invalid``)
``result_duration`` the result reports the video lasting ``length_s`` seconds (default 3600;
                    ``sim/fault/result_duration/SECONDS`` sets it); otherwise no length is reported
==================  ==========================================================================

Other ``_sim`` options: ``duration`` (seconds, overrides the configured range), ``outcome``
(``"ok"`` or ``"failed"``), ``quality`` (the score, 0 to 1, instead of a drawn one), ``title``
(the name shown on the poster, else the argument ``recipe``/``recipe_name``/``recipeName``/``title``,
else the model id).

The package, by responsibility:

* :mod:`.ticket` -- what a request id carries, its signing and the fault catalogue;
* :mod:`.engine` -- :class:`Simulator`: the draws, the state over time, the answers and faults;
* :mod:`.media` -- the SVG poster and thumbnail of a ticket;
* :mod:`.provider` -- :class:`SimulatorProvider`, the in-process face;
* :mod:`.http` -- the fal-compatible HTTP face.

It depends on :mod:`delula.providers.base` (the provider contract), never the other way round.
"""
from .engine import MOUNT, SimAnswer, Simulator
from .http import create_app, create_blueprint, serve
from .provider import SimulatorProvider
from .ticket import FAULTS, InvalidRequestId, Ticket, secret_for

__all__ = [
    "FAULTS",
    "MOUNT",
    "InvalidRequestId",
    "SimAnswer",
    "Simulator",
    "SimulatorProvider",
    "Ticket",
    "create_app",
    "create_blueprint",
    "secret_for",
    "serve",
]
