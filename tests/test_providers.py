"""FalProvider end to end against the fal-compatible simulator on a real 127.0.0.1 server
(no mocks), plus the provider data types and make_provider."""
from __future__ import annotations

import json
import socket
import threading
import time
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
import requests
from werkzeug.serving import make_server

from delula.providers import (
    FalProvider,
    JobResult,
    JobStatus,
    Provider,
    ProviderError,
    Submission,
    app_root,
)
from delula.provider_factory import make_provider
from delula.simulator import Simulator, SimulatorProvider, create_app


class CountingSession(requests.Session):
    """A real session that counts the HTTP requests it sends."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def request(self, *args, **kwargs):
        self.calls += 1
        return super().request(*args, **kwargs)


@pytest.fixture(scope="module")
def sim_url():
    server = make_server("127.0.0.1", 0, create_app(Simulator(duration=0, failure_rate=0.0), key="test-key"),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def fal(sim_url, key="test-key", **kwargs) -> FalProvider:
    options = dict(timeout=2.0, retries=3, backoff=0.01, session=CountingSession())
    options.update(kwargs)
    return FalProvider(key, f"{sim_url}/sim/fal", **options)


# --------------------------------------------------------------------------------------------
# happy path
# --------------------------------------------------------------------------------------------
def test_submit_status_result_end_to_end(sim_url):
    provider = fal(sim_url)
    assert provider.name == "fal" and isinstance(provider, Provider)
    sub = provider.submit("fal-ai/veo3/fast", {"prompt": "a fox in the snow", "recipe": "Snow Fox",
                                               "camera": "drone"})
    # the URLs returned by the service are used; like fal they drop the endpoint path
    assert sub.status_url == f"{sim_url}/sim/fal/fal-ai/veo3/requests/{sub.request_id}/status"
    assert sub.response_url == f"{sim_url}/sim/fal/fal-ai/veo3/requests/{sub.request_id}"
    assert sub.cancel_url == sub.response_url + "/cancel"
    assert Submission.from_dict(json.loads(json.dumps(sub.to_dict()))) == sub

    assert provider.status(sub) == JobStatus("COMPLETED")
    result = provider.result(sub)
    assert 0 <= result.quality_score <= 1   # the simulator scores its results
    assert result == JobResult(video_url=f"{sim_url}/sim/fal/files/{sub.request_id}/video.svg",
                               content_type="image/svg+xml",
                               thumbnail_url=f"{sim_url}/sim/fal/files/{sub.request_id}/thumb.svg",
                               file_size=result.file_size, quality_score=result.quality_score)
    asset = requests.get(result.video_url, timeout=5)
    assert asset.status_code == 200 and asset.headers["Content-Type"].startswith("image/svg+xml")
    assert result.file_size == len(asset.content) and result.duration_s is None   # a poster has no length
    text = "".join(ET.fromstring(asset.content).itertext())
    assert "Snow Fox" in text and "drone" in text
    assert provider.session.calls == 3  # no retries on the happy path


def test_job_in_progress_and_cancel(sim_url):
    provider = fal(sim_url)
    sub = provider.submit("fal-ai/veo3", {"prompt": "slow", "_sim": {"duration": 3600}})
    assert provider.status(sub).state == "IN_QUEUE"
    with pytest.raises(ProviderError) as err:
        provider.result(sub)
    assert err.value.retryable and err.value.status_code == 400 and "still in progress" in err.value.message
    assert provider.cancel(sub) is None
    done = provider.submit("fal-ai/veo3", {"prompt": "fast"})
    assert provider.cancel(done) is None  # ALREADY_COMPLETED: nothing to cancel, not an error


def test_failed_job(sim_url):
    provider = fal(sim_url)
    sub = provider.submit("fal-ai/veo3", {"prompt": "x", "_sim": {"outcome": "failed"}})
    status = provider.status(sub)
    assert status.state == "FAILED"
    assert "Simulated generation failure" in status.error and "simulated_failure" in status.error
    with pytest.raises(ProviderError) as err:
        provider.result(sub)
    assert not err.value.retryable and err.value.status_code == 422
    assert err.value.message.startswith("fal.ai returned 422: Simulated generation failure")


# --------------------------------------------------------------------------------------------
# transport faults
# --------------------------------------------------------------------------------------------
def test_status_5xx_then_recovery_is_retried(sim_url):
    provider = fal(sim_url, retries=5, backoff=0.1)
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_5xx", "for_s": 0.25}})
    calls = provider.session.calls
    assert provider.status(sub).state == "COMPLETED"
    assert provider.session.calls - calls >= 2  # at least one 503 was retried


def test_persistent_5xx_is_a_retryable_error(sim_url):
    provider = fal(sim_url, retries=2)
    sub = provider.submit("sim/fault/status-5xx/1e6", {})
    calls = provider.session.calls
    with pytest.raises(ProviderError) as err:
        provider.status(sub)
    assert err.value.retryable and err.value.status_code == 503
    assert "fal.ai returned 503" in err.value.message and "after 3 attempts" in err.value.message
    assert provider.session.calls - calls == 3

    with pytest.raises(ProviderError) as err:
        provider.submit("fal-ai/veo3", {"_sim": {"fault": "submit_5xx", "code": 502}})
    assert err.value.retryable and err.value.status_code == 502

    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "result_5xx"}})
    with pytest.raises(ProviderError) as err:
        provider.result(sub)
    assert err.value.retryable and err.value.status_code == 500


def test_retry_after_is_honoured_up_to_a_cap(sim_url):
    provider = fal(sim_url, backoff=0.001)
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_429", "retry_after": 0.4, "for_s": 0.2}})
    started = time.monotonic()
    assert provider.status(sub).state == "COMPLETED"
    assert time.monotonic() - started >= 0.35  # waited as told, not the 1 ms backoff

    provider = fal(sim_url, retries=6, backoff=0.001, retry_after_cap=0.05)
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_429", "retry_after": 600, "for_s": 0.1}})
    started = time.monotonic()
    assert provider.status(sub).state == "COMPLETED"
    assert time.monotonic() - started < 2


def test_hang_times_out_into_a_retryable_error(sim_url):
    provider = fal(sim_url, timeout=0.3, retries=1)
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_hang", "hang_s": 1.5}})
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.status(sub)
    elapsed = time.monotonic() - started
    assert err.value.retryable and "timed out after 0.3 s" in err.value.message
    assert "after 2 attempts" in err.value.message
    assert 0.5 < elapsed < 1.4


def test_unreachable_service_is_a_retryable_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    provider = FalProvider("k", f"http://127.0.0.1:{port}", timeout=0.5, retries=1, backoff=0.0)
    with pytest.raises(ProviderError) as err:
        provider.submit("fal-ai/veo3", {})
    assert err.value.retryable and "could not reach fal.ai" in err.value.message


# --------------------------------------------------------------------------------------------
# malformed answers
# --------------------------------------------------------------------------------------------
def test_malformed_json_is_a_retryable_error(sim_url):
    provider = fal(sim_url)
    sub = provider.submit("sim/fault/status_malformed", {})
    with pytest.raises(ProviderError) as err:
        provider.status(sub)
    assert err.value.retryable and "malformed JSON" in err.value.message

    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "result_malformed"}})
    assert provider.status(sub).state == "COMPLETED"
    with pytest.raises(ProviderError) as err:
        provider.result(sub)
    assert err.value.retryable and "malformed JSON" in err.value.message


def test_missing_fields_are_retryable_errors(sim_url):
    provider = fal(sim_url)
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_missing"}})
    with pytest.raises(ProviderError, match="no 'status' field") as err:
        provider.status(sub)
    assert err.value.retryable
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "result_missing"}})
    with pytest.raises(ProviderError, match="no video url") as err:
        provider.result(sub)
    assert err.value.retryable


def test_unknown_status_is_unknown(sim_url):
    provider = fal(sim_url)
    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_unknown"}})
    assert provider.status(sub) == JobStatus("UNKNOWN", error='unknown status "WEIRD"')


# --------------------------------------------------------------------------------------------
# client errors
# --------------------------------------------------------------------------------------------
def test_missing_key_is_a_non_retryable_401(sim_url):
    provider = fal(sim_url, key=None)
    with pytest.raises(ProviderError) as err:
        provider.submit("fal-ai/veo3", {"prompt": "x"})
    assert not err.value.retryable and err.value.status_code == 401
    assert "fal.ai returned 401: Missing or invalid Authorization header" in err.value.message
    assert "FAL_KEY is not set" in err.value.message
    assert provider.session.calls == 1  # never retried

    sub = fal(sim_url).submit("fal-ai/veo3", {})
    for call in (provider.status, provider.result, provider.cancel):
        with pytest.raises(ProviderError) as err:
            call(sub)
        assert not err.value.retryable and err.value.status_code == 401


def test_unknown_request_and_bad_arguments_are_non_retryable(sim_url):
    provider = fal(sim_url)
    sub = provider.submit("fal-ai/veo3", {})
    forged = Submission(sub.request_id[:-2] + "xx", sub.status_url[:-9] + "xx/status",
                        sub.response_url[:-2] + "xx", sub.cancel_url[:-9] + "xx/cancel")
    with pytest.raises(ProviderError) as err:
        provider.status(forged)
    assert not err.value.retryable and err.value.status_code == 404 and "not found" in err.value.message
    with pytest.raises(ProviderError) as err:
        provider.submit("fal-ai/veo3", {"_sim": {"fault": "no-such-fault"}})
    assert not err.value.retryable and err.value.status_code == 422
    assert err.value.message.startswith("fal.ai returned 422: unknown simulator fault 'no_such_fault'")
    with pytest.raises(ProviderError) as err:
        provider.submit("", {})
    assert not err.value.retryable


# --------------------------------------------------------------------------------------------
# the configured queue host only
# --------------------------------------------------------------------------------------------
class Recorder:
    """A real HTTP server on 127.0.0.1 that answers every request with ``answer(path)`` and
    records each one's method, path and Authorization header."""

    def __init__(self, answer):
        import flask

        app = flask.Flask("recorder")
        self.seen: list[tuple[str, str, str | None]] = []

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT"])
        @app.route("/<path:path>", methods=["GET", "POST", "PUT"])
        def any_path(path):
            self.seen.append((flask.request.method, "/" + path, flask.request.headers.get("Authorization")))
            return answer("/" + path)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def elsewhere():
    """The "other host": 127.0.0.1 on another port, recording whatever reaches it."""
    server = Recorder(lambda path: ({"status": "COMPLETED", "video": {"url": "x"}}, 200))
    yield server
    server.close()


def test_the_fal_client_follows_no_url_off_its_queue_host(elsewhere):
    """A submit answer naming another host for its status, result or cancel URL is a provider
    error; a stored submission pointing elsewhere is refused without a call; a redirect is not
    followed. The other host never receives a request, let alone the key."""
    def queue_answer(path):
        if path.startswith("/moved"):
            return "", 302, {"Location": f"{elsewhere.url}/stolen"}
        root = f"{queue.url}/fal-ai/veo3/requests/r1"
        urls = {"status_url": root + "/status", "response_url": root, "cancel_url": root + "/cancel"}
        urls[path.rsplit("/", 1)[-1]] = f"{elsewhere.url}/fal-ai/veo3/requests/r1"   # one URL elsewhere
        return {"request_id": "r1", **urls}, 200

    queue = Recorder(queue_answer)
    try:
        provider = FalProvider("secret-fal-key", queue.url, timeout=2.0, retries=0)
        for which in ("status_url", "response_url", "cancel_url"):
            with pytest.raises(ProviderError) as err:
                provider.submit(f"fal-ai/{which}", {})
            assert not err.value.retryable
            assert err.value.message == (f"fal.ai submit: the {which} names the host {elsewhere.url[7:]}, not the "
                                         f"configured queue host {queue.url[7:]}; it is not followed")
        assert [m for m, _, _ in queue.seen] == ["POST"] * 3
        assert all(auth == "Key secret-fal-key" for _, _, auth in queue.seen)

        stored = Submission("r1", f"{elsewhere.url}/s", f"{elsewhere.url}/r", f"{elsewhere.url}/c")
        for call in (provider.status, provider.result, provider.cancel):
            with pytest.raises(ProviderError, match="not the configured queue host") as err:
                call(stored)
            assert not err.value.retryable
        for other in (elsewhere.url.replace("http:", "https:"), "http://localhost:" + queue.url.rsplit(":", 1)[1]):
            with pytest.raises(ProviderError, match="not followed"):
                provider.status(Submission("r1", f"{other}/s", "", ""))

        moved = Submission("r1", f"{queue.url}/moved/status", f"{queue.url}/moved", f"{queue.url}/moved/cancel")
        with pytest.raises(ProviderError) as err:
            provider.status(moved)
        assert err.value.status_code == 302
        assert elsewhere.seen == []
    finally:
        queue.close()


def test_the_queue_host_compares_scheme_host_and_port():
    same = FalProvider("k", "HTTPS://Queue.Example/sim/fal")
    same._follow("status", "URL", "https://queue.example:443/other/path")   # default port, any path
    for url in ("http://queue.example/x", "https://queue.example:8443/x", "https://evil.example/x",
                "https://queue.example.evil/x", "https://queue.example:bad/x", "/relative/x"):
        with pytest.raises(ProviderError):
            same._follow("status", "URL", url)


# --------------------------------------------------------------------------------------------
# data types and the factory
# --------------------------------------------------------------------------------------------
def test_provider_error_carries_its_attributes():
    exc = ProviderError("fal.ai returned 422: prompt is required", retryable=False, status_code=422)
    assert str(exc) == exc.message == "fal.ai returned 422: prompt is required"
    assert exc.retryable is False and exc.status_code == 422
    assert ProviderError("x", retryable=True).status_code is None


def test_submission_from_dict_validates():
    d = {"request_id": "r", "status_url": "s", "response_url": "p", "cancel_url": "c", "extra": 1}
    assert Submission.from_dict(d) == Submission("r", "s", "p", "c")
    for broken in ({"request_id": "r"}, {**d, "request_id": ""}, {**d, "status_url": None}, None, []):
        with pytest.raises(ValueError):
            Submission.from_dict(broken)


def test_job_status_rejects_unknown_states():
    assert JobStatus("IN_QUEUE").error is None
    with pytest.raises(ValueError):
        JobStatus("DONE")


def test_app_root():
    assert app_root("fal-ai/veo3/fast") == "fal-ai/veo3"
    assert app_root("fal-ai/veo3") == "fal-ai/veo3"
    assert app_root("workflows/me/flow/sub") == "workflows/me/flow"
    assert app_root("/fal-ai/x/y/z/") == "fal-ai/x"


def test_make_provider():
    sim_settings = SimpleNamespace(provider="simulator", fal_key=None, fal_queue_url="https://queue.fal.run",
                                   simulator_duration=(0.0, 0.0), simulator_failure_rate=0.0)
    provider = make_provider(sim_settings)
    assert isinstance(provider, SimulatorProvider) and provider.name == "simulator"
    assert isinstance(provider, Provider)
    assert provider.simulator.duration == (0.0, 0.0) and provider.simulator.failure_rate == 0.0
    sub = provider.submit("fal-ai/veo3", {"prompt": "x"})
    assert provider.status(sub).state == "COMPLETED"
    assert provider.result(sub).video_url.startswith("/sim/fal/files/")

    fal_settings = SimpleNamespace(provider="fal", fal_key="k", fal_queue_url="https://queue.example/",
                                   simulator_duration=(5.0, 40.0), simulator_failure_rate=0.05)
    provider = make_provider(fal_settings)
    assert isinstance(provider, FalProvider) and provider.name == "fal"
    assert provider.base_url == "https://queue.example" and provider.key == "k"

    with pytest.raises(ValueError):
        make_provider(SimpleNamespace(provider="replicate"))


def test_make_provider_from_project_settings():
    config = pytest.importorskip("delula.config")
    settings = config.Settings.from_env({"DELULA_SIMULATOR_DURATION": "0", "DELULA_SIMULATOR_FAILURE_RATE": "1"})
    provider = make_provider(settings)
    sub = provider.submit("fal-ai/veo3", {})
    assert provider.status(sub).state == "FAILED"


def test_error_messages_are_readable():
    from delula.providers.base import interpret_result, interpret_status

    html = "<html><head><style>h1{}</style></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
    with pytest.raises(ProviderError) as err:
        interpret_status("fal.ai", 502, html)
    assert err.value.message == "fal.ai returned 502: 502 Bad Gateway nginx" and err.value.retryable
    detail = {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]}
    with pytest.raises(ProviderError) as err:
        interpret_result("fal.ai", 422, json.dumps(detail))
    assert err.value.message == "fal.ai returned 422: prompt: field required" and not err.value.retryable
    with pytest.raises(ProviderError) as err:
        interpret_status("fal.ai", 403, "")
    assert err.value.message == "fal.ai returned 403: no details" and not err.value.retryable
    with pytest.raises(ProviderError, match="not a JSON object"):
        interpret_status("fal.ai", 200, "[1, 2]")
    assert interpret_status("fal.ai", 200, '{"status": "CANCELLED"}').state == "FAILED"
    result = interpret_result("fal.ai", 200, '{"video": "https://cdn/x.mp4", "thumbnail": {"url": "https://cdn/t.png"}}')
    assert result == JobResult("https://cdn/x.mp4", "video/mp4", "https://cdn/t.png")
