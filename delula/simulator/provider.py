"""The simulator served in process: a :class:`~delula.providers.base.Provider` without HTTP."""
from __future__ import annotations

from delula.providers.base import (
    JobResult,
    JobStatus,
    ProviderError,
    Submission,
    interpret_cancel,
    interpret_result,
    interpret_status,
    interpret_submit,
)

from .engine import MOUNT, SimAnswer, Simulator

__all__ = ["SimulatorProvider"]

LABEL = "simulator"


class SimulatorProvider:
    """The Provider interface served in process by a :class:`Simulator` (no HTTP).

    Answers go through the same interpretation as :class:`delula.providers.fal.FalProvider`, so
    faults surface identically (5xx -> retryable ProviderError, malformed -> ProviderError,
    unknown status -> UNKNOWN); a hang raises a retryable timeout error at once instead of
    blocking the caller.
    """

    name = "simulator"

    def __init__(self, simulator: Simulator, base_url: str = MOUNT):
        self.simulator = simulator
        self.base_url = base_url.rstrip("/")
        #: its assets: the files this app serves under the mount (relative URLs)
        self.asset_locations = (f"{self.base_url}/files/",)

    def _check(self, answer: SimAnswer, op: str) -> SimAnswer:
        if answer.delay > 0:
            raise ProviderError(f"{LABEL} {op} timed out (simulated hang of {answer.delay:g} s)",
                                retryable=True)
        return answer

    def submit(self, model_id: str, arguments: dict) -> Submission:
        answer = self._check(self.simulator.answer_submit(model_id, arguments, self.base_url), "submit")
        return interpret_submit(LABEL, answer.code, answer.text, self.base_url, model_id)

    def status(self, sub: Submission) -> JobStatus:
        answer = self._check(self.simulator.answer_status(sub.request_id, self.base_url, logs=True), "status")
        return interpret_status(LABEL, answer.code, answer.text)

    def result(self, sub: Submission) -> JobResult:
        answer = self._check(self.simulator.answer_result(sub.request_id, self.base_url), "result")
        return interpret_result(LABEL, answer.code, answer.text)

    def cancel(self, sub: Submission) -> None:
        answer = self._check(self.simulator.answer_cancel(sub.request_id), "cancel")
        interpret_cancel(LABEL, answer.code, answer.text)
