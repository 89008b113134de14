"""The stateless fal-compatible simulator: state over a fake clock, request ids, assets, the
HTTP blueprint (real server on 127.0.0.1) and the official ``fal-client`` package against it."""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, given, settings, strategies as st
from werkzeug.serving import make_server

import delula.simulator
from delula.providers import JobStatus, ProviderError, Submission
from delula.simulator import (
    FAULTS,
    InvalidRequestId,
    Simulator,
    SimulatorProvider,
    create_app,
    create_blueprint,
)
from delula.simulator.media import render_poster, render_thumbnail

ROOT = Path(__file__).resolve().parents[1]
SIM_KEY = "test-key"
KEY = {"Authorization": f"Key {SIM_KEY}"}


class FakeClock:
    def __init__(self):
        self._now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)


class ServerThread:
    """A real werkzeug server for a WSGI app on a free 127.0.0.1 port."""

    def __init__(self, app, ssl_context=None):
        self.server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}"
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def http_clock():
    return FakeClock()


@pytest.fixture(scope="module")
def server(http_clock):
    srv = ServerThread(create_app(Simulator(duration=(10.0, 10.0), failure_rate=0.0, clock=http_clock), key=SIM_KEY))
    yield srv
    srv.close()


def submit(server, model_id="fal-ai/veo3/fast", arguments=None, headers=KEY):
    return requests.post(f"{server.url}/sim/fal/{model_id}", json=arguments or {}, headers=headers, timeout=5)


# --------------------------------------------------------------------------------------------
# state over a fake clock
# --------------------------------------------------------------------------------------------
def test_state_goes_queue_progress_completed(clock):
    sim = Simulator(duration=(10.0, 10.0), failure_rate=0.0, clock=clock)
    provider = SimulatorProvider(sim)
    sub = provider.submit("fal-ai/veo3/fast", {"prompt": "a cat", "recipe": "Cat Clip"})
    seen = []
    for step in (0.0, 0.5, 0.49, 0.01, 5.0, 3.99, 0.01):  # t = 0, .5, .99, 1, 6, 9.99, 10
        clock.advance(step)
        seen.append(provider.status(sub).state)
    assert seen == ["IN_QUEUE", "IN_QUEUE", "IN_QUEUE", "IN_PROGRESS", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    result = provider.result(sub)
    assert result.content_type == "image/svg+xml"
    assert result.video_url == f"/sim/fal/files/{sub.request_id}/video.svg"
    assert result.thumbnail_url == f"/sim/fal/files/{sub.request_id}/thumb.svg"


def test_result_before_completion_is_a_retryable_error(clock):
    provider = SimulatorProvider(Simulator(duration=(10.0, 10.0), failure_rate=0.0, clock=clock))
    sub = provider.submit("fal-ai/veo3", {"prompt": "x"})
    clock.advance(5)
    with pytest.raises(ProviderError) as err:
        provider.result(sub)
    assert err.value.retryable and err.value.status_code == 400
    assert "still in progress" in str(err.value)


def test_failure_outcome(clock):
    sim = Simulator(duration=(2.0, 2.0), failure_rate=1.0, clock=clock)
    provider = SimulatorProvider(sim)
    sub = provider.submit("fal-ai/veo3", {"prompt": "doomed"})
    assert provider.status(sub).state == "IN_QUEUE"
    clock.advance(2.0)
    status = provider.status(sub)
    assert status.state == "FAILED" and "Simulated generation failure" in status.error
    answer = sim.answer_status(sub.request_id, "/sim/fal")
    assert answer.code == 200 and answer.body["status"] == "COMPLETED" and answer.body["error"]
    with pytest.raises(ProviderError) as err:
        provider.result(sub)
    assert not err.value.retryable and err.value.status_code == 422
    # no asset for a failed job
    assert sim.answer_file(sub.request_id, "video.svg")[0] == 404


def test_duration_zero_completes_at_once(clock):
    provider = SimulatorProvider(Simulator(duration=0, failure_rate=0.0, clock=clock))
    sub = provider.submit("fal-ai/veo3", {"prompt": "now"})
    assert provider.status(sub) == JobStatus("COMPLETED")
    assert provider.result(sub).video_url.endswith("/video.svg")


def test_duration_and_outcome_are_drawn_from_the_configuration(clock):
    sim = Simulator(duration=(5.0, 40.0), failure_rate=0.3, clock=clock, rng=random.Random(7))
    tickets = [sim.create("fal-ai/veo3", {"prompt": str(i)}) for i in range(1500)]
    assert all(5.0 <= t.duration <= 40.0 for t in tickets)
    assert min(t.duration for t in tickets) < 8 and max(t.duration for t in tickets) > 37
    share = sum(t.outcome == "failed" for t in tickets) / len(tickets)
    assert 0.25 < share < 0.35
    assert len({t.request_id for t in tickets}) == len(tickets)


def test_sim_options_override_duration_and_outcome(clock):
    sim = Simulator(duration=(5.0, 40.0), failure_rate=0.0, clock=clock)
    t = sim.create("fal-ai/veo3", {"_sim": {"duration": 0, "outcome": "failed"}})
    assert t.duration == 0 and t.outcome == "failed" and sim.state(t) == "FAILED"
    t = sim.create("sim/fault/failed", {})
    assert t.outcome == "failed"


def test_configuration_is_validated():
    with pytest.raises(ValueError):
        Simulator(duration=(10, 5))
    with pytest.raises(ValueError):
        Simulator(duration=(-1, 5))
    with pytest.raises(ValueError):
        Simulator(failure_rate=1.5)


# --------------------------------------------------------------------------------------------
# request ids: stateless, survive a restart, reject forgeries
# --------------------------------------------------------------------------------------------
def test_request_ids_survive_a_restart(clock):
    first = Simulator(duration=(10.0, 10.0), failure_rate=0.0, clock=clock, secret=b"s3cret")
    sub = SimulatorProvider(first).submit("fal-ai/veo3/fast", {"prompt": "persist", "recipe": "Restart"})
    clock.advance(3)
    second = Simulator(duration=(1.0, 1.0), failure_rate=1.0, clock=clock, secret=b"s3cret")  # other config
    for sim in (first, second):
        assert sim.answer_status(sub.request_id, "/sim/fal", logs=True).body["status"] == "IN_PROGRESS"
    assert first.answer_status(sub.request_id, "/b").body == second.answer_status(sub.request_id, "/b").body
    clock.advance(10)
    assert first.answer_result(sub.request_id, "/b").body == second.answer_result(sub.request_id, "/b").body
    assert SimulatorProvider(second).status(sub).state == "COMPLETED"
    assert render_poster(first.decode(sub.request_id)) == render_poster(second.decode(sub.request_id))


def flip_bit(text: str, index: int) -> str:
    """Unpadded base64url ``text`` with the low bit of its decoded byte ``index`` flipped: the
    bytes always differ (editing a character could leave them equal, e.g. in unused low bits)."""
    data = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    data[index] ^= 1
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


def test_forged_and_tampered_ids_are_rejected(clock):
    sim = Simulator(duration=(1.0, 1.0), failure_rate=0.0, clock=clock, secret=b"one")
    rid = sim.create("fal-ai/veo3", {"prompt": "x"}).request_id
    other = Simulator(clock=clock, secret=b"two")
    with pytest.raises(InvalidRequestId):
        other.decode(rid)
    body, tag = rid.split(".")
    flipped, forged_tag = flip_bit(body, 7), flip_bit(tag, -1)
    assert flipped != body and forged_tag != tag
    for bad in (f"{flipped}.{tag}", f"{body}.{forged_tag}", "", "nope", "a.b", "x" * 500, rid + "/x",
                "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(InvalidRequestId):
            sim.decode(bad)
        assert sim.answer_status(bad, "/b").code == 404
    provider = SimulatorProvider(sim)
    with pytest.raises(ProviderError) as err:
        provider.status(Submission(f"{flipped}.{tag}", "", "", ""))
    assert not err.value.retryable and err.value.status_code == 404


json_scalars = st.one_of(st.text(max_size=60), st.integers(), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False), st.none())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_id=st.text(min_size=1, max_size=120),
       prompt=st.text(max_size=400),
       recipe=st.text(max_size=80),
       values=st.dictionaries(st.text(min_size=1, max_size=30).filter(lambda k: not k.startswith("_")),
                              st.one_of(json_scalars, st.lists(json_scalars, max_size=4)), max_size=12))
def test_request_id_round_trip(model_id, prompt, recipe, values):
    sim = Simulator(duration=(0.0, 50.0), failure_rate=0.5, clock=FakeClock(), secret=b"k")
    arguments = {**values, "prompt": prompt, "recipe": recipe}
    ticket = sim.create(model_id, arguments)
    rid = ticket.request_id
    assert len(rid) < 400
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", rid)
    again = Simulator(secret=b"k").decode(rid)
    assert again == ticket
    assert again.submitted_at == pytest.approx(FakeClock().now().timestamp())
    # the summary is a (possibly truncated) prefix of what was submitted
    for kept, original in ((again.model_id, model_id), (again.title, recipe), (again.prompt, prompt)):
        assert original.startswith(kept.rstrip("…"))
    # and the poster renders as valid XML whatever the text
    ET.fromstring(render_poster(again).encode("utf-8"))
    ET.fromstring(render_thumbnail(again).encode("utf-8"))


def test_typical_arguments_are_kept_readable(clock):
    sim = Simulator(clock=clock)
    t = sim.create("fal-ai/veo3/fast", {"recipe": "Cyberpunk Cat", "prompt": "a neon cat on a roof",
                                        "style": "noir", "duration": 8, "audio": True})
    assert t.title == "Cyberpunk Cat" and t.prompt == "a neon cat on a roof"
    assert t.values == (("style", "noir"), ("duration", "8"), ("audio", "true"))


# --------------------------------------------------------------------------------------------
# assets
# --------------------------------------------------------------------------------------------
SVG = "{http://www.w3.org/2000/svg}"


def test_poster_is_valid_svg_with_recipe_and_values(clock):
    sim = Simulator(duration=0, clock=clock)
    t = sim.create("fal-ai/veo3/fast", {"recipe": "Dance & <Sing>", "prompt": 'a "quoted" prompt',
                                        "mood": "happy", "_sim": {"title": "ignored?"}})
    root = ET.fromstring(render_poster(t).encode("utf-8"))
    assert root.tag == f"{SVG}svg" and root.get("viewBox") == "0 0 1280 720"
    texts = " ".join("".join(el.itertext()) for el in root.iter(f"{SVG}text"))
    assert "ignored?" in texts  # _sim.title wins over the recipe argument
    assert "fal-ai/veo3/fast" in texts and "happy" in texts and "quoted" in texts
    assert t.request_id in root.findtext(f"{SVG}desc")
    assert root.find(f"{SVG}defs/{SVG}linearGradient") is not None
    t2 = sim.create("fal-ai/veo3", {"recipe": "Dance & <Sing>"})
    texts = "".join(ET.fromstring(render_poster(t2).encode()).itertext())
    assert "Dance & <Sing>" in texts


# --------------------------------------------------------------------------------------------
# in-process fault injection
# --------------------------------------------------------------------------------------------
def test_fault_names_are_documented():
    doc = delula.simulator.__doc__
    for name in FAULTS:
        assert f"``{name}``" in doc


def test_in_process_faults(clock):
    provider = SimulatorProvider(Simulator(duration=0, failure_rate=0.0, clock=clock))

    with pytest.raises(ProviderError) as err:
        provider.submit("fal-ai/veo3", {"_sim": {"fault": "submit_5xx"}})
    assert err.value.retryable and err.value.status_code == 503

    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status-5xx", "for_s": 3}})
    with pytest.raises(ProviderError) as err:
        provider.status(sub)
    assert err.value.retryable and err.value.status_code == 503
    clock.advance(3)
    assert provider.status(sub).state == "COMPLETED"

    sub = provider.submit("sim/fault/status_hang/60", {})
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.status(sub)
    assert err.value.retryable and "timed out" in str(err.value)
    assert time.monotonic() - started < 1  # in process a hang never blocks

    sub = provider.submit("sim/fault/status-malformed", {})
    with pytest.raises(ProviderError) as err:
        provider.status(sub)
    assert err.value.retryable and "malformed JSON" in str(err.value)

    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_unknown"}})
    assert provider.status(sub) == JobStatus("UNKNOWN", error='unknown status "WEIRD"')

    sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": "status_missing"}})
    with pytest.raises(ProviderError, match="no 'status' field") as err:
        provider.status(sub)
    assert err.value.retryable

    for fault, text in (("result_malformed", "malformed JSON"), ("result_missing", "no video url"),
                        ("result_5xx", "returned 500")):
        sub = provider.submit("fal-ai/veo3", {"_sim": {"fault": fault}})
        assert provider.status(sub).state == "COMPLETED"
        with pytest.raises(ProviderError, match=text) as err:
            provider.result(sub)
        assert err.value.retryable

    with pytest.raises(ProviderError) as err:
        provider.submit("fal-ai/veo3", {"_sim": {"fault": "meltdown"}})
    assert not err.value.retryable and err.value.status_code == 422 and "unknown simulator fault" in str(err.value)
    with pytest.raises(ProviderError):
        provider.submit("fal-ai/veo3", {"_sim": "nope"})
    with pytest.raises(ProviderError):
        provider.submit("fal-ai/veo3", {"_sim": {"duration": "long"}})


def test_in_process_cancel(clock):
    provider = SimulatorProvider(Simulator(duration=(10.0, 10.0), failure_rate=0.0, clock=clock))
    sub = provider.submit("fal-ai/veo3", {})
    assert provider.cancel(sub) is None           # CANCELLATION_REQUESTED
    clock.advance(10)
    assert provider.cancel(sub) is None           # ALREADY_COMPLETED is not an error
    with pytest.raises(ProviderError):
        provider.cancel(Submission("forged.id", "", "", ""))


# --------------------------------------------------------------------------------------------
# the HTTP API (real server, fake clock shared with the test)
# --------------------------------------------------------------------------------------------
def test_http_lifecycle(server, http_clock):
    resp = submit(server, "fal-ai/veo3/fast", {"prompt": "a dancing robot", "recipe": "Robot Dance",
                                                "style": "retro"})
    assert resp.status_code == 200, resp.text
    sub = resp.json()
    rid = sub["request_id"]
    base = f"{server.url}/sim/fal/fal-ai/veo3/requests/{rid}"  # fal drops the endpoint path
    assert sub["status_url"] == base + "/status"
    assert sub["response_url"] == base and sub["cancel_url"] == base + "/cancel"
    assert sub["queue_position"] == 0

    r = requests.get(sub["status_url"], params={"logs": 1}, headers=KEY, timeout=5)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "IN_QUEUE" and isinstance(body["queue_position"], int)
    assert body["request_id"] == rid and body["response_url"] == base
    assert body["logs"] and body["logs"][0]["message"]

    r = requests.get(sub["response_url"], headers=KEY, timeout=5)
    assert r.status_code == 400 and "in progress" in r.json()["detail"]

    http_clock.advance(5)
    r = requests.get(sub["status_url"], headers=KEY, timeout=5)
    assert r.status_code == 202 and r.json()["status"] == "IN_PROGRESS" and r.json()["logs"] is None

    r = requests.put(sub["cancel_url"], headers=KEY, timeout=5)
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}

    http_clock.advance(5)
    r = requests.get(sub["status_url"], params={"logs": "1"}, headers=KEY, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED" and "error" not in r.json()

    r = requests.get(sub["response_url"], headers=KEY, timeout=5)
    assert r.status_code == 200
    result = r.json()
    video, thumb = result["video"], result["thumbnail"]
    assert video["url"] == f"{server.url}/sim/fal/files/{rid}/video.svg"
    assert video["content_type"] == "image/svg+xml" and video["file_name"].endswith(".svg")

    asset = requests.get(video["url"], timeout=5)  # public, like fal's CDN
    assert asset.status_code == 200 and asset.headers["Content-Type"].startswith("image/svg+xml")
    assert len(asset.content) == video["file_size"]
    root = ET.fromstring(asset.content)
    assert "Robot Dance" in "".join(root.itertext()) and "retro" in "".join(root.itertext())
    t = requests.get(thumb["url"], timeout=5)
    assert t.status_code == 200 and len(t.content) == thumb["file_size"]
    ET.fromstring(t.content)

    r = requests.put(sub["cancel_url"], headers=KEY, timeout=5)
    assert r.status_code == 400 and r.json() == {"status": "ALREADY_COMPLETED"}

    # the full model id as a prefix works too (the id is self-describing)
    r = requests.get(f"{server.url}/sim/fal/fal-ai/veo3/fast/requests/{rid}/status", headers=KEY, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED"


def test_http_failed_job(server, http_clock):
    sub = submit(server, "sim/fault/failed", {"prompt": "x"}).json()
    assert sub["status_url"].startswith(f"{server.url}/sim/fal/sim/fault/requests/")
    http_clock.advance(10)
    r = requests.get(sub["status_url"], headers=KEY, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED"
    assert r.json()["error"] and r.json()["error_type"] == "simulated_failure"
    r = requests.get(sub["response_url"], headers=KEY, timeout=5)
    assert r.status_code == 422 and r.json()["detail"][0]["msg"].startswith("Simulated generation failure")


def test_http_auth_and_errors_are_json(server):
    sub = submit(server, "fal-ai/veo3", {"_sim": {"duration": 0}}).json()
    calls = [("POST", f"{server.url}/sim/fal/fal-ai/veo3"), ("GET", sub["status_url"]),
             ("GET", sub["response_url"]), ("PUT", sub["cancel_url"])]
    for method, url in calls:
        for headers in ({}, {"Authorization": "Key "}, {"Authorization": "Basic abc"},
                        {"Authorization": "Key x"}, {"Authorization": f"Key {SIM_KEY}x"},
                        {"Authorization": f"Key {SIM_KEY} extra"}, {"Authorization": "Key tést"}):
            r = requests.request(method, url, headers=headers, json={}, timeout=5)
            assert r.status_code == 401, (method, url, headers)
            assert r.headers["Content-Type"] == "application/json" and r.json()["detail"]
    assert requests.get(sub["status_url"], headers={"Authorization": f"Bearer {SIM_KEY}"}, timeout=5).status_code == 200

    forged = sub["request_id"][:-3] + "abc"
    for method, suffix in (("GET", "/status"), ("GET", ""), ("PUT", "/cancel")):
        r = requests.request(method, f"{server.url}/sim/fal/fal-ai/veo3/requests/{forged}{suffix}",
                             headers=KEY, timeout=5)
        assert r.status_code == 404 and "not found" in r.json()["detail"]
    r = requests.get(f"{server.url}/sim/fal/files/{forged}/video.svg", timeout=5)
    assert r.status_code == 404 and r.json()["detail"]
    r = requests.get(f"{server.url}/sim/fal/files/{sub['request_id']}/other.txt", timeout=5)
    assert r.status_code == 404

    for method, path in (("GET", "/sim/fal/nothing/here"), ("DELETE", "/sim/fal/x/requests/y"),
                         ("POST", "/sim/fal"), ("PATCH", "/sim/fal/a"), ("GET", "/not-the-simulator")):
        r = requests.request(method, server.url + path, headers=KEY, timeout=5)
        assert r.status_code in (404, 405) and r.json()["detail"], (method, path, r.text)

    r = requests.post(f"{server.url}/sim/fal/fal-ai/veo3", data="{not json", headers=KEY, timeout=5)
    assert r.status_code == 400 and r.json()["detail"]
    r = requests.post(f"{server.url}/sim/fal/fal-ai/veo3", json=[1, 2], headers=KEY, timeout=5)
    assert r.status_code == 422 and r.json()["detail"]
    r = submit(server, "fal-ai/veo3", {"_sim": {"fault": "nope"}})
    assert r.status_code == 422 and "unknown simulator fault" in r.json()["detail"]
    assert requests.get(f"{server.url}/sim/fal/", timeout=5).json()["faults"] == sorted(FAULTS)


def test_http_malformed_and_unknown_answers(server, http_clock):
    sub = submit(server, "sim/fault/status_malformed").json()
    r = requests.get(sub["status_url"], headers=KEY, timeout=5)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    sub = submit(server, "sim/fault/status_unknown").json()
    assert requests.get(sub["status_url"], headers=KEY, timeout=5).json()["status"] == "WEIRD"
    sub = submit(server, "fal-ai/veo3", {"_sim": {"fault": "status_429", "retry_after": 7}}).json()
    r = requests.get(sub["status_url"], headers=KEY, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    http_clock.advance(2)
    assert requests.get(sub["status_url"], headers=KEY, timeout=5).status_code == 202


def test_blueprint_mounts_on_an_existing_app():
    app = Flask("host-app")

    @app.get("/api/ping")
    def ping():
        return {"pong": True}

    sim = Simulator(duration=0, failure_rate=0.0)
    app.register_blueprint(create_blueprint(lambda: sim, key=SIM_KEY), url_prefix="/sim/fal")
    client = app.test_client()
    assert client.get("/api/ping").get_json() == {"pong": True}
    sub = client.post("/sim/fal/fal-ai/veo3", json={"prompt": "p"}, headers=KEY).get_json()
    assert sub["status_url"].startswith("http://localhost/sim/fal/fal-ai/veo3/requests/")
    path = sub["response_url"].removeprefix("http://localhost")
    video = client.get(path, headers=KEY).get_json()["video"]
    assert client.get(video["url"].removeprefix("http://localhost")).status_code == 200

    other = Flask("other")  # a Simulator instance is accepted in place of a factory
    other.register_blueprint(create_blueprint(sim, key=SIM_KEY), url_prefix="/sim/fal")
    assert other.test_client().get("/sim/fal/").status_code == 200


def test_serve_runs_the_simulator_standalone():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"from delula.simulator import serve, Simulator; serve('127.0.0.1', {port}, Simulator(0, 0.0), key={SIM_KEY!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = submit(type("S", (), {"url": f"http://127.0.0.1:{port}"}), "fal-ai/veo3", {"prompt": "p"})
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.05)
        assert r.status_code == 200
        assert requests.get(r.json()["status_url"], headers=KEY, timeout=5).json()["status"] == "COMPLETED"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# the official fal-client package, unchanged, against the simulator
# --------------------------------------------------------------------------------------------
def _make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a 127.0.0.1 server certificate signed by it."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)

    def build(subject, issuer, public_key, signing_key, *, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                             x509.DNSName("localhost")]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "delula test CA")])
    ca_cert = build(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                 key.public_key(), ca_key, ca=False)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


FAL_CLIENT_SCRIPT = textwrap.dedent("""
    import json, fal_client
    out = {}
    h = fal_client.submit("fal-ai/veo3/fast", {"prompt": "a cat", "recipe": "fal-client cat"})
    out["request_id"] = h.request_id
    out["status_url"] = h.status_url
    st = h.status(with_logs=True)
    out["status"] = type(st).__name__
    out["logs"] = len(st.logs or [])
    out["result"] = h.get()
    st2 = fal_client.status("fal-ai/veo3/fast", h.request_id, with_logs=False)  # URL built by fal-client
    out["status2"] = type(st2).__name__
    out["result2"] = fal_client.result("fal-ai/veo3/fast", h.request_id)
    slow = fal_client.submit("fal-ai/veo3/fast", {"prompt": "slow", "_sim": {"duration": 3600}})
    q = slow.status()
    out["slow_status"] = [type(q).__name__, getattr(q, "position", None)]
    slow.cancel()
    fal_client.cancel("fal-ai/veo3/fast", slow.request_id)
    out["cancelled"] = True
    bad = fal_client.submit("sim/fault/failed", {"prompt": "x"})
    st3 = bad.status()
    out["failed_status"] = [type(st3).__name__, st3.error]
    try:
        bad.get()
    except fal_client.FalClientHTTPError as exc:
        out["failed_result"] = [exc.status_code, str(exc)]
    print(json.dumps(out))
""")


def test_official_fal_client_against_the_simulator(tmp_path):
    """fal-client builds its queue URL as ``https://$FAL_QUEUE_RUN_HOST/`` (read at import), so
    it is pointed at the simulator with ``FAL_QUEUE_RUN_HOST=127.0.0.1:PORT/sim/fal`` and needs
    TLS: the simulator is served over HTTPS with a throw-away CA given via ``SSL_CERT_FILE``."""
    pytest.importorskip("fal_client")
    ca, cert, key = _make_tls_files(tmp_path)
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = ServerThread(create_app(Simulator(duration=0, failure_rate=0.0), key="sim-key"), ssl_context=context)
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and not k.startswith("FAL_")}
    env.update(FAL_KEY="sim-key", FAL_QUEUE_RUN_HOST=f"127.0.0.1:{srv.port}/sim/fal",
               SSL_CERT_FILE=str(ca), NO_PROXY="127.0.0.1,localhost")
    env.pop("SSL_CERT_DIR", None)
    try:
        proc = subprocess.run([sys.executable, "-c", FAL_CLIENT_SCRIPT], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status_url"] == f"https://127.0.0.1:{srv.port}/sim/fal/fal-ai/veo3/requests/{out['request_id']}/status"
    assert out["status"] == "Completed" and out["logs"] >= 1
    for key_ in ("result", "result2"):
        video = out[key_]["video"]
        assert video["content_type"] == "image/svg+xml"
        assert video["url"] == f"https://127.0.0.1:{srv.port}/sim/fal/files/{out['request_id']}/video.svg"
    assert out["status2"] == "Completed"
    assert out["slow_status"] == ["Queued", 2]
    assert out["cancelled"] is True
    assert out["failed_status"][0] == "Completed" and "Simulated generation failure" in out["failed_status"][1]
    assert out["failed_result"][0] == 422


def test_http_odd_bodies_never_crash(server):
    r = requests.post(f"{server.url}/sim/fal/fal-ai/veo3", data='{"prompt": "\\ud800 lone", "recipe": "\\udfff"}',
                      headers={**KEY, "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    poster = requests.get(f"{server.url}/sim/fal/files/{rid}/video.svg", timeout=5)
    assert "? lone" in "".join(ET.fromstring(poster.content).itertext())
    deep = "[" * 100000 + "]" * 100000
    r = requests.post(f"{server.url}/sim/fal/fal-ai/veo3", data=deep, headers=KEY, timeout=5)
    assert r.status_code == 400 and r.json()["detail"]
    r = requests.post(f"{server.url}/sim/fal/fal-ai/veo3", data="", headers=KEY, timeout=5)
    assert r.status_code == 200  # no body = no arguments
