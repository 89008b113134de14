"""The simulator closed by default (issue 13): ``/sim/fal`` is served only with
``DELULA_PROVIDER=simulator``, only to the holder of the simulator key, and its hang fault is
short; everything over real HTTP, the production case through gunicorn.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from delula.simulator import Simulator, SimulatorProvider
from delula.simulator.engine import MAX_HANG_S
from delula.storage import accounts
from tests.support.api import serve
from tests.support.db import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
BURST = 16


def key(value: str) -> dict:
    return {"Authorization": f"Key {value}"}


def parallel(calls) -> list:
    """Run the zero-argument ``calls`` at the same moment; their results in order."""
    start = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, call):
        start.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


# --------------------------------------------------------------------------------------------
# production: DELULA_PROVIDER=fal, gunicorn with few threads
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_the_hang_attack_finds_no_simulator_on_a_production_server(pg_url, tmp_path):
    """The attack of issue 13 against ``gunicorn -w 1 --threads 4`` configured with the fal
    provider: the hang fault is asked for, then 16 status requests go out at once. Every one is
    refused with the API's JSON 404, and the dashboard's sign-in page answers within 1 s meanwhile
    (before, the 16 requests each held a thread for 120 s)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DELULA_DATABASE_URL": pg_url, "DELULA_SCHEDULER": "off", "PYTHONPATH": str(ROOT),
           "DELULA_PROVIDER": "fal", "FAL_KEY": "x", "DELULA_FAL_QUEUE_URL": "http://127.0.0.1:9/queue"}
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:server", "-w", "1", "--threads", "4",
                               "-b", f"127.0.0.1:{port}", "--timeout", "120", "--no-control-socket"],
                              cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return None

        wait_for(up, timeout=90, what="gunicorn")
        assert requests.get(f"{base}/login", timeout=30).status_code == 200   # warm

        r = requests.post(f"{base}/sim/fal/sim/fault/status_hang/120", json={}, headers=key("x"), timeout=10)
        assert (r.status_code, r.headers["Content-Type"]) == (404, "application/json")
        assert r.json() == {"message": "Not found"}
        ticket = Simulator(duration=0).create("sim/fault/status_hang/120", {})   # an id minted elsewhere
        status_url = f"{base}/sim/fal/sim/fault/requests/{ticket.request_id}/status"

        def attack():
            return requests.get(status_url, headers=key("x"), timeout=150)

        def sign_in_page():
            time.sleep(0.2)   # the burst is in flight
            started = time.monotonic()
            r = requests.get(f"{base}/login", timeout=150)
            return r.status_code, time.monotonic() - started

        *answers, (login_status, login_s) = parallel([attack] * BURST + [sign_in_page])
        for r in answers:
            assert r.status_code == 404 and r.json() == {"message": "Not found"}, r.text[:300]
        assert login_status == 200 and login_s < 1.0, login_s
        for method in ("GET", "PUT", "DELETE"):
            for path in ("/sim/fal", "/sim/fal/", "/sim/fal/fal-ai/veo3/requests/x",
                         f"/sim/fal/files/{ticket.request_id}/video.svg"):
                r = requests.request(method, base + path, headers=key("x"), timeout=10)
                assert r.status_code == 404 and r.json() == {"message": "Not found"}, (method, path, r.text[:200])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# DELULA_PROVIDER=simulator: the key, kept in the database when not configured
# --------------------------------------------------------------------------------------------
def test_the_mounted_simulator_answers_only_its_key_and_hangs_briefly(db_url, make_runtime):
    import app as app_module

    rt = make_runtime(db_url)
    dash_app = app_module.create_app(rt, start_scheduler=False)
    with rt.store.begin() as s:
        kept = accounts.get_setting(s, "simulator_key")
    assert kept and rt.simulator_key == kept and len(kept) >= 32   # generated once, kept
    assert make_runtime(db_url).simulator_key == kept                # every process reads the same

    with serve(dash_app.server) as base:
        submit = f"{base}/sim/fal/fal-ai/veo3"
        for headers in ({}, key("x"), key(kept + "x"), {"Authorization": f"Basic {kept}"}):
            r = requests.post(submit, json={"prompt": "p"}, headers=headers, timeout=10)
            assert r.status_code == 401 and r.json()["detail"], headers
        r = requests.post(submit, json={"prompt": "p"}, headers=key(kept), timeout=10)
        assert r.status_code == 200, r.text
        sub = r.json()
        assert requests.get(sub["status_url"], headers=key("x"), timeout=10).status_code == 401
        assert requests.get(sub["status_url"], headers=key(kept), timeout=10).json()["status"] == "COMPLETED"
        assert requests.get(f"{base}/sim/fal/files/{sub['request_id']}/video.svg", timeout=10).status_code == 200

        r = requests.post(f"{base}/sim/fal/sim/fault/status_hang/120", json={}, headers=key(kept), timeout=10)
        hang_url = r.json()["status_url"]
        started = time.monotonic()
        assert requests.get(hang_url, headers=key(kept), timeout=150).status_code == 200
        assert MAX_HANG_S - 0.5 < time.monotonic() - started < MAX_HANG_S + 3

    # an id minted by this deployment's provider is read after a restart, by another process
    minted = rt.provider.submit("fal-ai/veo3", {"prompt": "across a restart"})
    again = make_runtime(db_url)
    assert again.provider.simulator is not rt.provider.simulator
    assert again.provider.status(minted).state == "COMPLETED"
    assert isinstance(again.provider, SimulatorProvider)


def test_a_configured_simulator_key_is_the_only_one(sqlite_url, make_runtime):
    import app as app_module

    rt = make_runtime(sqlite_url, simulator_key="chosen-key")
    with serve(app_module.create_app(rt, start_scheduler=False).server) as base:
        for value, status in (("chosen-key", 200), ("x", 401)):
            r = requests.post(f"{base}/sim/fal/fal-ai/veo3", json={}, headers=key(value), timeout=10)
            assert r.status_code == status, (value, r.text)
    with rt.store.begin() as s:
        assert accounts.get_setting(s, "simulator_key") is None   # nothing generated, nothing kept


def test_the_standalone_simulator_takes_its_key_and_says_from_where(tmp_path):
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("DELULA_", "FAL_"))}
    bare.update(PYTHONPATH=str(ROOT), DELULA_SIMULATOR_DURATION="0")
    env = {**bare, "DELULA_SIMULATOR_KEY": "env-key"}
    cases = [(["--key", "flag-key"], env, "flag-key", "key from --key"),
             ([], env, "env-key", "key from DELULA_SIMULATOR_KEY"),
             ([], bare, None, "key drawn for this run (set DELULA_SIMULATOR_KEY to keep one): ")]
    for extra, environ, expected, said in cases:
        port = free_port()
        log = tmp_path / f"sim-{port}.log"
        proc = subprocess.Popen([sys.executable, "-m", "delula", "simulator", "--port", str(port), *extra],
                                cwd=tmp_path, env=environ, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        try:
            def submitted(headers) -> int | None:
                try:
                    return requests.post(f"http://127.0.0.1:{port}/sim/fal/fal-ai/veo3", json={},
                                         headers=headers, timeout=5).status_code
                except requests.ConnectionError:
                    return None

            assert wait_for(lambda: submitted(key("wrong")), timeout=60, what="the simulator") == 401
            assert said in log.read_text()
            expected = expected or log.read_text().split(said)[1].split()[0]
            assert submitted(key(expected)) == 200
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    bad = subprocess.run([sys.executable, "-m", "delula", "simulator", "--key", "two words"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--key" in bad.stderr
