"""The JSON API for tests: a bare app with only the API, bearer headers, the answers of a refused
claim, a real HTTP server in a thread, and clients claiming over HTTP in parallel."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import flask
import requests
from werkzeug.serving import make_server

from delula import api

MAX_BODY = 64 * 1024
NO_BACKLOG = {"message": "No instant generation available", "fallbackToModal": True}
RACE = {"message": "No instant generation available (race condition)", "fallbackToModal": True}


def make_app(rt) -> flask.Flask:
    """A bare Flask app with only the API mounted (what ``app.create_app`` does for it)."""
    app = flask.Flask("delula-api-test")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    api.init_app(app, rt)
    return app


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def serve(app):
    """Serve ``app`` on 127.0.0.1 on a free port in a background thread; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def claim_concurrently(base: str, recipe_id: int, todo: list, headers_of, threads: int = 64):
    """``threads`` clients, each with its own keep-alive session and started together, send one
    instant claim per item of ``todo`` (popped from the end), with ``headers_of(item)``. Returns
    ``([(item, status, body, ms)], seconds)``; a broken connection is status -1."""
    lock = threading.Lock()
    results: list[tuple[object, int, dict, float]] = []
    start = threading.Barrier(threads)

    def client():
        with requests.Session() as http:
            start.wait()
            while True:
                with lock:
                    if not todo:
                        return
                    item = todo.pop()
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{base}/api/generate/instant", json={"recipeId": recipe_id},
                                  headers=headers_of(item), timeout=120)
                    status, body = r.status_code, _body(r)
                except requests.RequestException as e:
                    status, body = -1, {"error": str(e)}
                with lock:
                    results.append((item, status, body, (time.perf_counter() - t0) * 1000))

    t0 = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(600)
    return results, time.perf_counter() - t0


def _body(r) -> dict:
    try:
        return r.json()
    except ValueError:
        return {"raw": r.text[:200]}


def start_claiming(base: str, recipe_id: int, token: str, results: list, stop: threading.Event,
                   clients: int = 4) -> list[threading.Thread]:
    """``clients`` threads claiming over HTTP every 20 ms until ``stop``; each answer (or -1 for
    a broken connection) goes to ``results`` as ``(status, body)``."""
    def client():
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{base}/api/generate/instant", json={"recipeId": recipe_id},
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
                    results.append((r.status_code, r.json()))
                except (requests.RequestException, ValueError) as e:
                    results.append((-1, {"error": str(e)}))
                time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def percentile(values, p):
    """The ``p``-th percentile (0–100) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round((len(ordered) - 1) * p / 100)))]
