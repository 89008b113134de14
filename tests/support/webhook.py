"""A webhook receiver for the alert tests: an HTTP server in a thread of the test that records
every POST (its JSON body) and answers with the statuses it is given, then 200."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """``with Receiver(statuses=[500]) as hook:`` — ``hook.url`` takes POSTs; the first answers
    are ``statuses`` in order, every later one 200. ``hook.bodies`` are the JSON bodies received,
    ``hook.answered`` the statuses given; ``delay_s`` holds each answer back that long."""

    def __init__(self, statuses: list[int] | None = None, *, delay_s: float = 0.0, path: str = "/hook"):
        self.statuses = list(statuses or [])
        self.delay_s = delay_s
        self.bodies: list[dict] = []
        self.answered: list[int] = []
        self.content_types: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.delay_s)
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.bodies.append(json.loads(body or b"null"))
                    receiver.answered.append(status)
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"nope")

            def log_message(self, *_args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}{path}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def delivered(self, kind: str | None = None) -> list[dict]:
        """The bodies answered 200 (of alerts in state ``kind``: firing, resolved)."""
        with self._lock:
            return [b for b, s in zip(self.bodies, self.answered)
                    if s == 200 and (kind is None or b["alert"]["state"] == kind)]

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
