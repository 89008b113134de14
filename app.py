"""Delula backlog — the Dash operations dashboard, the JSON API and the scheduler in one process.

    python app.py [--host H] [--port P] [--database-url URL] [--no-scheduler]

``server = app.server`` is the WSGI app for ``gunicorn app:server`` (start web workers with
``DELULA_SCHEDULER=off`` and run ``python -m delula worker`` for the scheduler).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import timedelta
from pathlib import Path

import dash
from flask import Flask, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from delula import api, auth, demo, logs, scheduler, simulator, storage
from delula.config import ConfigError, Settings
from delula.provider_factory import make_simulator
from delula.runtime import Runtime

HERE = Path(__file__).parent
BOOT_RETRY_S = 2.0
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",                              # no page of ours inside another site's frame
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",                    # a file is what its Content-Type says
    "Referrer-Policy": "same-origin",                       # our URLs stay with us
}
log = logging.getLogger("delula.app")


def boot(rt: Runtime) -> None:
    """Migrate to head and, on an empty database, seed the demo data and the admin user."""
    storage.upgrade(rt.store)
    auth.ensure_system_user(rt)
    if demo.is_empty(rt):
        created = demo.seed(rt)
        if created["adminPassword"]:
            print(f"\n  Delula: ops user 'admin' created with password: {created['adminPassword']}\n",
                  file=sys.stderr, flush=True)


def create_app(rt: Runtime | None = None, *, start_scheduler: bool | None = None) -> dash.Dash:
    """Build the Dash app on ``rt`` (default: from the environment) with the API mounted, and the
    simulator's HTTP API with the simulator provider."""
    rt = rt or Runtime.from_settings(Settings.from_env())
    boot(rt)
    _forget_page_callbacks()
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        title="Delula backlog",
        suppress_callback_exceptions=True,
        serve_locally=True,
        external_stylesheets=[],
        update_title=None,
    )
    server = app.server
    server.extensions["delula"] = rt
    server.secret_key = auth.secret_key(rt)
    # The session's lifetime is absolute (``pages.access`` checks the sign-in time it holds): the
    # cookie is re-signed only when the session changes, never by the dashboard's refreshes.
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                         SESSION_COOKIE_NAME="delula_session", SESSION_COOKIE_SECURE=rt.settings.cookie_secure,
                         PERMANENT_SESSION_LIFETIME=timedelta(hours=rt.settings.session_hours),
                         SESSION_REFRESH_EACH_REQUEST=False, MAX_CONTENT_LENGTH=64 * 1024)
    if rt.settings.trusted_proxies:
        # the client's address (and scheme) as the trusted proxies in front saw it, e.g. for the
        # sign-in throttle; with none, X-Forwarded-* headers are anybody's and are ignored
        hops = rt.settings.trusted_proxies
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=hops, x_proto=hops)
    server.after_request(_security_headers)
    server.before_request(lambda: _watch(rt))
    api.init_app(server, rt)
    _mount_simulator(server, rt)
    from pages import layout as page_layout

    page_layout.init_app(app, rt)
    _warm(app)
    if start_scheduler is None:
        start_scheduler = rt.settings.scheduler
    if start_scheduler:
        scheduler.start_in_process(rt)
    _watch(rt)
    return app


def _watch(rt: Runtime) -> None:
    """The no-leader watchdog of every web process, scheduler or not: started with the app, and
    by the first request of a process forked after that (``gunicorn --preload``: threads do not
    cross a fork), which finds none of its own (``scheduler.watch_in_process`` is keyed by
    process id). A look-up once started; it returns nothing, so a request goes on."""
    scheduler.watch_in_process(rt)


def create_app_when_the_database_answers(rt: Runtime | None = None) -> dash.Dash:
    """:func:`create_app`, waiting for the database if it is down at start-up. A gunicorn worker
    (re)started during a database outage must not fail to boot: gunicorn stops the whole server
    when a worker fails to boot, so the outage would outlive the database's."""
    rt = rt or Runtime.from_settings(Settings.from_env())
    while True:
        try:
            return create_app(rt)
        except storage.DatabaseUnavailable as e:
            log.warning("database unavailable at start-up (%s); trying again in %g s", e, BOOT_RETRY_S)
            time.sleep(BOOT_RETRY_S)


def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _warm(app: dash.Dash) -> None:
    """Finish Dash's one-time server set-up before the app takes traffic.

    Dash completes it on the first request, flagging it done before the callback map is filled, so
    simultaneous first callbacks on a fresh gunicorn worker can find no callback and answer 500
    (plotly/dash#3971). One request through the test client, here, in the process that serves
    (each gunicorn worker imports ``app:server`` itself), runs it while nobody else is waiting.
    """
    with app.server.test_client() as client:
        client.get("/_dash-dependencies")
    if not app.callback_map:
        raise RuntimeError("Dash set-up did not register the pages' callbacks")


def _forget_page_callbacks() -> None:
    """Dash executes every page module again for each app it builds, registering the pages'
    callbacks anew in its global lists; callbacks left there by an earlier import (another app in
    the same process, a test importing a page) belong to no app and would be served twice."""
    from dash import _callback

    _callback.GLOBAL_CALLBACK_LIST.clear()
    _callback.GLOBAL_CALLBACK_MAP.clear()
    _callback.GLOBAL_INLINE_SCRIPTS.clear()


def _mount_simulator(server: Flask, rt: Runtime) -> None:
    """The simulator's fal-compatible API at ``/sim/fal``, only with ``DELULA_PROVIDER=simulator``
    and behind the deployment's simulator key. Elsewhere every URL under it is a JSON 404 like the
    API's unknown URLs (Dash's catch-all page route would answer them with its index page)."""
    if rt.settings.provider == "simulator":
        blueprint = simulator.create_blueprint(lambda: _simulator(rt), key=rt.simulator_key)
        server.register_blueprint(blueprint, url_prefix=simulator.MOUNT)
        return

    def simulator_closed(rest: str = ""):
        return jsonify(message="Not found"), 404

    for rule in (simulator.MOUNT, simulator.MOUNT + "/", simulator.MOUNT + "/<path:rest>"):
        server.add_url_rule(rule, "simulator_closed", simulator_closed,
                            methods=["GET", "POST", "PUT", "PATCH", "DELETE"])


def _simulator(rt: Runtime) -> simulator.Simulator:
    """The in-process provider's simulator, so that the API reads the ids it mints; a simulator
    of the same key when tests give the runtime another provider."""
    return getattr(rt.provider, "simulator", None) or make_simulator(rt.settings, clock=rt.clock,
                                                                     key=rt.simulator_key)


def _parse(argv):
    p = argparse.ArgumentParser(description="Delula backlog dashboard, API and scheduler")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--database-url")
    p.add_argument("--no-scheduler", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    logs.configure()
    args = _parse(sys.argv[1:])
    try:
        settings = Settings.from_env(**({"database_url": args.database_url} if args.database_url else {}))
        if args.no_scheduler:
            settings = settings.replace(scheduler=False)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        sys.exit(2)
    app = create_app_when_the_database_answers(Runtime.from_settings(settings))
    # No reloader: it would start a second process and, with it, a second scheduler.
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False)
else:
    # Imported by gunicorn (`gunicorn app:server`) or tests: build from the environment lazily
    # only when `server` is asked for, so importing `create_app` stays side-effect free.
    def __getattr__(name):
        if name in ("app", "server"):
            global app, server
            app = create_app_when_the_database_answers()
            server = app.server
            return app if name == "app" else server
        raise AttributeError(name)
