"""Real processes for the fault tests: a worker's environment, spawning and stopping processes,
halting a PostgreSQL cluster under claims."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "cancelled"}   # the statuses a job ends in


def worker_env(url: str, **extra) -> dict:
    """The environment of a process of the app on database ``url``: no backlog minimum,
    maintenance once an hour, fast polls; ``extra`` on top (values made strings)."""
    env = {**os.environ, "DELULA_DATABASE_URL": url, "PYTHONPATH": str(ROOT), "DELULA_MIN_BACKLOG": "0",
           "DELULA_MAINTENANCE_INTERVAL_S": "3600", "DELULA_POLL_SCHEDULE": "0.3"}
    env.pop("DELULA_SCHEDULER", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``python args…`` (this interpreter) in ``log``'s folder, its output appended to ``log``."""
    return subprocess.Popen([sys.executable, *args], cwd=log.parent, env=env,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)


def stop_processes(*procs) -> None:
    """Kill the processes still running (``None`` is skipped) and reap them."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def halt_under_claims(cluster, base: str, results: list, unavailable: int) -> None:
    """Once 20 claims succeeded, halt ``cluster`` and wait for ``unavailable`` 503 answers;
    ``/healthz`` then says the database is down."""
    wait_for(lambda: sum(1 for s, _ in results if s == 200) >= 20, what="claims before the halt")
    cluster.halt()
    down_at = len(results)
    wait_for(lambda: sum(1 for s, _ in results[down_at:] if s == 503) >= unavailable, what="503s while down")
    health = requests.get(f"{base}/healthz", timeout=30)
    assert health.status_code == 503 and health.json()["database"] != "ok"


def answers_http(url: str) -> bool:
    """Does anything answer HTTP at ``url`` (any status)?"""
    import requests

    try:
        requests.get(url, timeout=2)
        return True
    except requests.RequestException:
        return False
