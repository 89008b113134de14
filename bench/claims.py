"""Instant claims near the database's limit, and no decay on a hot recipe.

    python bench/claims.py --database-url postgresql://postgres@127.0.0.1/postgres --clients 8 --seconds 10
    python bench/claims.py ... --http            # through gunicorn app:server (--workers 2 --threads 4)
    python bench/claims.py ... --http --wrk --server granian   # wrk drives it; granian serves it
    python bench/claims.py ... --hot --seconds 60  # 10 s spread over every recipe, then every client on
                                                   # one recipe (claims/s per 10 s, hotOverSpread), then
                                                   # pgbench calling the claim function likewise
    python bench/claims.py ... --choices         # plain claims, claims with choices, plain again

Seeds a pool (50 recipes x 2,000 items), 300,000 claimed history rows and 10,000 users, then runs
``delula.claims.instant_claim`` from N parallel clients (threads spread over up to two processes,
each with its own connection pool), or POSTs ``/api/generate/instant`` over HTTP (a keep-alive
raw-socket client per thread, cheap enough not to starve the server of the two cores; the
workers', the database backends' and the client processes' CPU per request and the workers' peak
RSS are printed too).
Before and after our run, ``pgbench`` runs the equivalent raw transaction (claim with FOR UPDATE
SKIP LOCKED + credit update + ledger insert) with the same number of clients, twice over: on the
project's own schema and data, and on a lean copy of them (a second database: the three tables
the transaction touches with the same columns and rows, only their primary keys and the pool's
partial index, no foreign key or trigger). ``ratio`` is ours over the mean of the two raw runs on
our schema, ``ratioLean`` ours over the lean ones (the denominator the targets are set against),
``rawOverLean`` what the schema alone costs the database. With ``--choices`` every pool item has one
of 30 combinations of two fields and three runs follow one another: plain claims, claims asking
for a random combination (exact), plain again; ``choicesOverPlain`` is the middle run's rate
over the mean of the other two. Finally the invariants are checked on the whole database: no
generation claimed twice, every claimed item owned by the user charged for it, every user's
credits equal to the sum of their ledger, every claim with choices handed an item that has them. Prints JSON on stdout (progress on stderr).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import common
from common import ROOT, log

RAW_SCRIPT = """\\set u random(1, {users})
\\set r {recipe}
BEGIN;
UPDATE generations SET user_id = 'u' || :u, updated_at = now(),
       metadata = metadata || '{{"isInstant": true}}'::jsonb
 WHERE id = (SELECT id FROM generations
              WHERE recipe_id = :r AND user_id = 'system_backlog' AND status = 'completed'
              ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id AS gid \\gset
UPDATE users SET credits = credits - 1 WHERE id = 'u' || :u AND credits >= 1 RETURNING credits AS bal \\gset
INSERT INTO credit_transactions (user_id, amount, balance_after, kind, generation_id, created_at)
VALUES ('u' || :u, -1, :bal, 'instant_claim', :gid, now());
END;
"""

# --hot: the claim function itself from pgbench's clients (no Python in the way: a higher rate,
# so more dead index entries a second), for the decay of the database side alone
FUNCTION_SCRIPT = """\\set u random(1, {users})
\\set r {recipe}
SELECT o_outcome FROM delula_instant_claim(:r, 'u' || :u, 'u' || :u, '{{"isInstant": true}}'::jsonb, now(), 0, NULL, now() - interval '72 hours', NULL, false, 1, false);
"""


# --choices: the recipes' fields; a claim asks for one of their 6 x 5 combinations, which about one
# pool item in 30 has (DELULA_MAX_BACKLOG's default is 30: a full pool holds about one match)
CHOICE_FIELDS = [
    {"id": "animal", "label": "Animal", "type": "dropdown", "options": [{"value": f"a{i}"} for i in range(6)]},
    {"id": "sport", "label": "Sport", "type": "dropdown", "options": [{"value": f"s{i}"} for i in range(5)]},
    {"id": "speed", "label": "Speed", "type": "slider", "min": 1, "max": 5, "step": 1},
]

# pool items seeded over the recipes per second of the run, when more than --items: pgbench before,
# our clients and pgbench after claim from the one pool in turn (each up to ~5,000 a second on a
# fast 2-core VM), and pgbench aborts its run on a recipe it finds dry
SPREAD_ITEMS_PER_SECOND = 16_000

# items seeded on the hot recipe per second of the run: our clients and then pgbench's claim from it
# (together up to ~6,000 claims a second on a fast 2-core VM); a run that empties it says so
HOT_ITEMS_PER_SECOND = 12_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=common.DEFAULT_SERVER,
                   help="a PostgreSQL server to create the benchmark database on")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--http", action="store_true", help="through the real API served by gunicorn (or --server)")
    p.add_argument("--server", choices=sorted(SERVERS), default="gunicorn",
                   help="the WSGI server for --http")
    p.add_argument("--workers", type=int, default=2, help="with --http: the server's worker processes")
    p.add_argument("--threads", type=int, default=4, help="with --http: request threads per worker")
    p.add_argument("--wrk", action="store_true",
                   help="with --http: wrk drives the load (an outside process), not the script's own clients")
    p.add_argument("--hot", action="store_true", help="every client on recipe 1; claims/s per 10 s window")
    p.add_argument("--recipes", type=int, default=50)
    p.add_argument("--items", type=int, default=2000,
                   help="pool items per recipe (at least; more when the run's claims need them)")
    p.add_argument("--history", type=int, default=300_000, help="claimed generations already in the table")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--no-raw", action="store_true", help="skip the pgbench runs")
    p.add_argument("--choices", action="store_true",
                   help="claims with choices against plain ones, back to back on the same data")
    p.add_argument("--naive", action="store_true",
                   help="a naive schema first: a plain (recipe_id, status, created_at) index instead of the partial "
                        "pool index, and default autovacuum/fillfactor (shows what they are for)")
    p.add_argument("--layers", action="store_true",
                   help="one thread, serially: CPU per claim here and in the database at the domain call, then "
                        "through the whole Flask app as WSGI")
    p.add_argument("--amplification", action="store_true",
                   help="only the claim function, after taking away one index, key or trigger after "
                        "another: server CPU per call and calls/s from pgbench for each")
    p.add_argument("--db-name", default="delula_bench_claims", help="the benchmark database (dropped and created)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark database")
    return p.parse_args(argv)


# --- seeding -----------------------------------------------------------------------------------------

def pool_items(args) -> int:
    """Pool items per recipe: ``--items``, or enough for the run's claims."""
    return max(args.items, -(-SPREAD_ITEMS_PER_SECOND * int(args.seconds) // args.recipes))


def seed(url: str, args) -> None:
    t0 = time.perf_counter()
    common.migrate(url)
    if args.naive:
        common.execute(url, "DROP INDEX ix_generations_pool",
                       "CREATE INDEX ix_naive_pool ON generations (recipe_id, status, created_at, id)")
        common.execute(url, "ALTER TABLE generations RESET (fillfactor, autovacuum_vacuum_scale_factor, "
                            "autovacuum_vacuum_threshold, autovacuum_vacuum_insert_scale_factor, "
                            "autovacuum_vacuum_insert_threshold, autovacuum_vacuum_cost_delay, "
                            "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)")
    common.seed_system_user(url)
    common.seed_users(url, args.users, credits=1_000_000)
    common.seed_recipes(url, args.recipes)
    common.seed_generations(url, args.history, recipes=args.recipes, owner="users", users=args.users,
                            spread="30 days", instant=True)
    common.seed_generations(url, pool_items(args) * args.recipes, recipes=args.recipes, owner="system_backlog",
                            spread="1 day")
    if args.hot:
        common.seed_generations(url, HOT_ITEMS_PER_SECOND * int(args.seconds), recipes=1, owner="system_backlog",
                                spread="1 day")
    if args.choices:  # 30 combinations of two fields, one per item by a hash of its id: about one in 30 matches
        common.execute(url, "UPDATE recipes SET variables = %(v)s::jsonb", params={"v": json.dumps(CHOICE_FIELDS)})
        common.execute(url, """UPDATE generations g SET form_data = jsonb_build_object(
                                   'animal', 'a' || mod(h.v, 6), 'sport', 's' || mod(h.v / 6, 5), 'speed', 3)
                                FROM (SELECT id, mod(abs(hashtext(id::text)), 30) AS v FROM generations
                                      WHERE user_id = 'system_backlog') h
                                WHERE g.id = h.id""")
    if args.http or args.layers:  # an API token per user: tok-<n>
        common.execute(url, f"""INSERT INTO api_tokens (token_hash, user_id, created_at)
                                SELECT encode(sha256(('tok-' || i)::bytea), 'hex'), 'u' || i, now()
                                FROM generate_series(1, {args.users}) i""")
    common.execute(url, "VACUUM ANALYZE")
    log(f"seeded in {time.perf_counter() - t0:.1f} s")


# --- the lean denominator ----------------------------------------------------------------------------

# what the raw claim transaction needs and nothing more: the three tables it touches, with the
# project's columns (so rows are as wide and the data the same), their primary keys and the pool's
# partial index; no other index, no foreign key, no check, no trigger
LEAN_TABLES = ("users", "generations", "credit_transactions")
LEAN_INDEXES = ("""CREATE INDEX lean_pool ON generations (recipe_id, created_at, id)
                   WHERE user_id = 'system_backlog' AND status = 'completed'""",)


def lean_copy(url: str, lean_url: str) -> None:
    """Create the lean schema on ``lean_url`` and copy the three tables' rows from ``url`` into it,
    with the storage parameters (fillfactor, autovacuum) of the project's tables."""
    t0 = time.perf_counter()
    src = common.psycopg.connect(common.libpq_url(url), autocommit=True)
    dst = common.psycopg.connect(common.libpq_url(lean_url), autocommit=True)
    with src, dst:
        for table in LEAN_TABLES:
            columns = src.execute("""SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
                                       FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0
                                        AND NOT a.attisdropped ORDER BY a.attnum""", (table,)).fetchall()
            options = src.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()[0]
            ddl = ", ".join(f'"{name}" {kind}{" NOT NULL" if notnull else ""}' for name, kind, notnull in columns)
            with_ = f" WITH ({', '.join(options)})" if options else ""
            dst.execute(f"CREATE TABLE {table} ({ddl}, PRIMARY KEY (id)){with_}")
            names = ", ".join(f'"{c[0]}"' for c in columns)
            with src.cursor().copy(f"COPY {table} ({names}) TO STDOUT (FORMAT BINARY)") as out, \
                    dst.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as into:
                for block in out:
                    into.write(block)
        # the ledger's ids continue from the copied ones, as the project's serial does
        dst.execute("CREATE SEQUENCE credit_transactions_id_seq OWNED BY credit_transactions.id")
        dst.execute("SELECT setval('credit_transactions_id_seq', (SELECT coalesce(max(id), 0) + 1 "
                    "FROM credit_transactions), false)")
        dst.execute("ALTER TABLE credit_transactions ALTER COLUMN id SET DEFAULT "
                    "nextval('credit_transactions_id_seq')")
        for statement in LEAN_INDEXES:
            dst.execute(statement)
        dst.execute("VACUUM ANALYZE")
    log(f"lean schema copied in {time.perf_counter() - t0:.1f} s")


# --- our claims, in process --------------------------------------------------------------------------

def _runtime(url: str, pool_size: int):
    from delula.config import Settings
    from delula.runtime import Runtime

    settings = Settings.from_env(database_url=url, instant_cooldown_s=0, scheduler=False)
    return Runtime.from_settings(settings, pool_size=pool_size)


def _drive(threads, start_at, deadline, users, recipes, hot, make_attempt) -> list[tuple[float, float, str]]:
    """``threads`` clients from ``start_at`` to ``deadline``; each thread calls the function
    ``make_attempt()`` returned, as ``attempt(recipe_id, user_number) -> outcome``, in a loop.
    Samples are ``(finished at, latency ms, outcome)``."""
    samples: list[tuple[float, float, str]] = []
    lock = threading.Lock()

    def client(seed):
        rnd, attempt, mine = random.Random(seed), make_attempt(), []
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            t0 = time.perf_counter()
            if time.time() >= deadline:
                break
            outcome = attempt(1 if hot else rnd.randint(1, recipes), rnd.randint(1, users))
            mine.append((time.time(), (time.perf_counter() - t0) * 1000.0, outcome))
        with lock:
            samples.extend(mine)

    ts = [threading.Thread(target=client, args=(os.getpid() * 1000 + i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return samples


def _claim_worker(url, threads, start_at, deadline, users, recipes, hot, out, with_choices=False):
    from delula import claims

    rt = _runtime(url, pool_size=threads)
    with rt.store.begin() as s:  # the pool's first connections before the clock starts
        s.connection()
    for r in range(1, recipes + 1):  # the recipes' fields, as a running server keeps them
        claims.recipe_variables(rt, r)

    def make_attempt():
        rnd = random.Random()

        def attempt(recipe_id, u):
            ask = (claims.Ask(choices={"animal": f"a{rnd.randrange(6)}", "sport": f"s{rnd.randrange(5)}"})
                   if with_choices else claims.PLAIN)
            return claims.instant_claim(rt, recipe_id=recipe_id, user_id=f"u{u}", ask=ask).outcome.value
        return attempt

    samples = _drive(threads, start_at, deadline, users, recipes, hot, make_attempt)
    rt.close()
    out.put(samples)


class KeepAliveClient:
    """A minimal HTTP/1.1 client on one persistent socket: the load generator shares the two
    cores with the server and the database, so it must cost little (``requests`` spent about
    as much CPU per request as the server's Flask view). Reads the status line, the headers and
    a ``Content-Length`` body; reconnects when the server closes the connection."""

    def __init__(self, base: str):
        host, _, port = base.removeprefix("http://").partition(":")
        self.address = (host, int(port))
        self.host = base.removeprefix("http://")
        self.sock = None
        self.buffer = b""

    def post_json(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: once more
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(self.address, timeout=30)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.buffer = b""
                self.sock.sendall(request)
                return self._response()
            except (ConnectionError, EOFError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _response(self) -> tuple[int, bytes]:
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        length = int(fields.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def _http_worker(base, threads, start_at, deadline, users, recipes, hot, out):
    def make_attempt():
        http = KeepAliveClient(base)

        def attempt(recipe_id, u):
            status, _ = http.post_json("/api/generate/instant", b'{"recipeId": %d}' % recipe_id,
                                       {"Authorization": f"Bearer tok-{u}"})
            return str(status)
        return attempt

    out.put(_drive(threads, start_at, deadline, users, recipes, hot, make_attempt))


def _choice_worker(*a):
    _claim_worker(*a, with_choices=True)


def run_clients(target, endpoint, args) -> tuple[list, float, float]:
    """N clients as threads over up to two processes (the machine has two cores)."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs_n = max(1, min(2, args.clients))
    per = [args.clients // procs_n + (1 if i < args.clients % procs_n else 0) for i in range(procs_n)]
    start_at = time.time() + 3.0
    deadline = start_at + args.seconds
    procs = [ctx.Process(target=target, args=(endpoint, n, start_at, deadline, args.users, args.recipes,
                                              args.hot, out)) for n in per]
    for p in procs:
        p.start()
    samples = []
    for _ in procs:
        samples.extend(out.get())
    for p in procs:
        p.join()
    return samples, start_at, deadline


class LockWaits:
    """Samples the benchmark database's sessions every 20 ms while it runs: the share of the
    sessions running a statement that wait for a lock another transaction holds (claims queuing
    on a shared row show here whatever the machine's speed)."""

    def __init__(self, url: str):
        self.url, self.samples, self.waiting = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        with common.psycopg.connect(common.libpq_url(self.url), autocommit=True) as conn:
            while not self._stop.wait(0.02):
                active, waiting = conn.execute(
                    """SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock') FROM pg_stat_activity
                        WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'""").fetchone()
                self.samples += active
                self.waiting += waiting

    @property
    def share(self) -> float | None:
        return round(self.waiting / self.samples, 3) if self.samples else None


def summarise(samples, start_at, deadline, ok: str, hot: bool) -> dict:
    done = [s for s in samples if s[2] == ok]
    elapsed = deadline - start_at
    result = {
        "attempts": len(samples),
        "claims": len(done),
        "claimsPerSecond": round(len(done) / elapsed, 1),
        "latencyMs": common.latency_summary([s[1] for s in done]),
        "outcomes": {k: sum(1 for s in samples if s[2] == k) for k in sorted({s[2] for s in samples})},
    }
    if hot:
        windows = []
        t = start_at
        while t < deadline - 1e-6:
            end = min(t + 10.0, deadline)
            windows.append(round(sum(1 for s in done if t <= s[0] < end) / (end - t), 1))
            t = end
        result["claimsPerSecondBy10s"] = windows
        result["lastOverFirst"] = round(windows[-1] / windows[0], 3) if windows and windows[0] else None
    return result


# --- through HTTP --------------------------------------------------------------------------------------

def cpu_seconds(pids) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (on this machine)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have ended (the client processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def database_cpu_seconds(url: str) -> float | None:
    """CPU seconds of the server processes serving the benchmark database (a local server only)."""
    try:
        with common.psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                               "AND pid <> pg_backend_pid()")]
    except common.psycopg.Error:
        return None
    return cpu_seconds(pids) if pids and Path(f"/proc/{pids[0]}").exists() else None


# the WSGI servers compared, each with 2 worker processes of 4 request threads on ``port``
SERVERS = {   # (port, worker processes, threads per worker) -> the command after ``python -m``
    "gunicorn": lambda port, w, t: ["gunicorn", "app:server", "-w", str(w), "--threads", str(t),
                                    "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
    "granian": lambda port, w, t: ["granian", "--interface", "wsgi", "app:server", "--workers", str(w),
                                   "--blocking-threads", str(t), "--host", "127.0.0.1", "--port", str(port),
                                   "--no-ws", "--log-level", "warning"],
}


class WebServer:
    """``app:server`` under one of :data:`SERVERS` on a free port, scheduler off."""

    def __init__(self, url: str, kind: str = "gunicorn", workers: int = 2, threads: int = 4):
        self.port, self.workers = common.free_port(), workers
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DELULA_DATABASE_URL": url, "DELULA_SCHEDULER": "off",
               "DELULA_INSTANT_COOLDOWN_S": "0", "DELULA_ADMIN_PASSWORD": "bench-admin-password",
               "DELULA_SECRET_KEY": "bench-secret"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *SERVERS[kind](self.port, workers, threads)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.peak_rss: dict[int, int] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)

    def __enter__(self):
        common.wait_http(f"{self.base}/healthz", timeout=90)
        time.sleep(max(1.0, 0.5 * self.workers))  # every worker booted (each builds the app before it takes traffic)
        self._sampler.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        return [self.proc.pid, *map(int, children)]

    def _sample_rss(self):
        while not self._stop.is_set():
            for pid in self._pids():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                m = re.search(r"VmRSS:\s+(\d+) kB", status)
                if m:
                    self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), int(m.group(1)) * 1024)
            self._stop.wait(0.25)

    def cpu_seconds(self) -> dict[int, float]:
        """User + system CPU seconds used so far by each worker process."""
        return {pid: cpu_seconds([pid]) for pid in self._pids() if pid != self.proc.pid}

    def memory(self) -> dict:
        workers = {pid: rss for pid, rss in self.peak_rss.items() if pid != self.proc.pid}
        return {"peakWorkerRssMB": round(max(workers.values(), default=0) / 2**20, 1),
                "peakMasterRssMB": round(self.peak_rss.get(self.proc.pid, 0) / 2**20, 1)}


# --- --layers: what each layer of the API path costs a claim ----------------------------------------

LAYER_CALLS = 2000


def _backend_pids(url: str) -> list[int]:
    with common.psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")]


def layers(url: str, args) -> list[dict]:
    """One thread claims ``LAYER_CALLS`` times at each layer, with a pool of one connection: the
    domain call (SQLAlchemy, the one statement, the result into the claim's answer), then the
    whole Flask app called as WSGI (routing, Flask's and Dash's hooks, the body parsed and
    validated, the answer as JSON, the headers). CPU microseconds per claim of this process and
    of the database's server process; the difference between rows is the layer's own cost."""
    import io

    os.environ.update({"DELULA_ADMIN_PASSWORD": "bench-admin-password", "DELULA_SECRET_KEY": "bench-secret"})
    from delula import claims

    import app as web

    rt = _runtime(url, pool_size=1)
    server = web.create_app(rt, start_scheduler=False).server
    rnd = random.Random(3)

    def domain():
        u = rnd.randint(1, args.users)
        _, result = claims.instant_claim_with_token(rt, f"tok-{u}", recipe_id=rnd.randint(1, args.recipes))
        return result.status_code

    def wsgi():
        body = b'{"recipeId": %d}' % rnd.randint(1, args.recipes)
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/generate/instant", "QUERY_STRING": "",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                   "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
                   "wsgi.run_once": False, "wsgi.version": (1, 0), "CONTENT_TYPE": "application/json",
                   "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "127.0.0.1",
                   "HTTP_AUTHORIZATION": f"Bearer tok-{rnd.randint(1, args.users)}"}
        status = []
        b"".join(server(environ, lambda s, h, exc=None: status.append(s)))
        return int(status[0].split()[0])

    rows = []
    for label, call in (("domain: claims.instant_claim_with_token", domain), ("wsgi: the Flask app", wsgi)):
        for _ in range(100):
            assert call() == 200
        db0 = {pid: cpu_seconds([pid]) for pid in _backend_pids(url)}
        ours0, wall0 = time.process_time(), time.perf_counter()
        statuses = Counter(call() for _ in range(LAYER_CALLS))
        wall = time.perf_counter() - wall0
        ours = time.process_time() - ours0
        # the backends serving the calls (one connection, or a new one if the pool replaced it)
        db = sum(cpu_seconds([pid]) - db0.get(pid, 0.0) for pid in _backend_pids(url))
        row = {"layer": label, "cpuUsPerClaim": round(ours * 1e6 / LAYER_CALLS, 1),
               "databaseCpuUsPerClaim": round(db * 1e6 / LAYER_CALLS, 1),
               "wallUsPerClaim": round(wall * 1e6 / LAYER_CALLS, 1), "statuses": dict(statuses)}
        log(f"{label:>45}: {row['cpuUsPerClaim']} µs CPU here, {row['databaseCpuUsPerClaim']} µs in the database")
        rows.append(row)
    return rows


# --- wrk: the load from outside -------------------------------------------------------------------------

# a random user's token and a random recipe per request; every thread counts its answers by status
WRK_SCRIPT = """\
local threads, next_id = {}, 0
function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
  math.randomseed(os.time() * 100 + id)
end
function request()
  return wrk.format("POST", "/api/generate/instant",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer tok-" .. math.random(1, %(users)d)},
    '{"recipeId": ' .. math.random(1, %(recipes)d) .. '}')
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do all[status] = (all[status] or 0) + n end
  end
  for status, n in pairs(all) do io.write(string.format("status %%d %%d\\n", status, n)) end
  for _, p in ipairs({50, 95, 99}) do io.write(string.format("p%%d %%d\\n", p, latency:percentile(p))) end
  io.write(string.format("max %%d\\nseconds %%f\\n", latency.max, summary.duration / 1e6))
end
"""


def run_wrk(base: str, args) -> dict:
    """``wrk`` with ``--clients`` connections over two threads for ``--seconds`` against the claim."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("--wrk needs wrk on PATH (Debian: apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"users": args.users, "recipes": 1 if args.hot else args.recipes})
        path = f.name
    try:
        proc = subprocess.run([binary, "-t", str(min(2, args.clients)), "-c", str(args.clients),
                               "-d", f"{int(args.seconds)}s", "--timeout", "10s", "-s", path, base],
                              capture_output=True, text=True, timeout=args.seconds + 60)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    statuses = {m[0]: int(m[1]) for m in re.findall(r"^status (\d+) (\d+)$", proc.stdout, re.M)}
    figures = {m[0]: float(m[1]) for m in re.findall(r"^(p\d+|max|seconds) ([\d.]+)$", proc.stdout, re.M)}
    seconds = figures["seconds"]
    return {
        "attempts": sum(statuses.values()),
        "claims": statuses.get("200", 0),
        "claimsPerSecond": round(statuses.get("200", 0) / seconds, 1),
        # wrk's latency of every answer (nearly all are claims: the pool and the credits last)
        "latencyMs": {k: round(figures[k] / 1000, 2) for k in ("p50", "p95", "p99", "max")},
        "outcomes": dict(sorted(statuses.items())),
        "loadGenerator": "wrk",
    }


# --- pgbench --------------------------------------------------------------------------------------------

def pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    return str(candidates[-1]) if candidates else None


def run_pgbench(url: str, args, script: str | None = None) -> dict | None:
    """The raw claim transaction (not with --hot), or with --hot the claim function, per 10 s;
    or ``script``."""
    binary = pgbench_binary()
    if binary is None or args.no_raw:
        return None
    if script is None:
        script = (FUNCTION_SCRIPT.format(users=args.users, recipe=1) if args.hot
                  else RAW_SCRIPT.format(users=args.users, recipe=f"random(1, {args.recipes})"))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        cmd = [binary, "-n", "-c", str(args.clients), "-j", str(min(args.clients, 2)), "-T", str(int(args.seconds)),
               "-f", path, "-P", "10" if args.hot else str(max(1, int(args.seconds))),
               common.libpq_url(url)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    finally:
        os.unlink(path)
    text = proc.stdout + proc.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    lat = re.search(r"latency average = ([\d.]+) ms", text)
    if proc.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{text[-2000:]}")
    result = {"claimsPerSecond": round(float(tps.group(1)), 1),
              "latencyAverageMs": float(lat.group(1)) if lat else None}
    progress = [float(x) for x in re.findall(r"progress: [\d.]+ s, ([\d.]+) tps", text)]
    if args.hot and progress:
        result["claimsPerSecondBy10s"] = progress
        result["lastOverFirst"] = round(progress[-1] / progress[0], 3) if progress[0] else None
    return result


# --- --amplification: what each index, key and trigger costs a claim --------------------------------

# taken away one after another (each step keeps the ones before it away); after each, the claim
# function runs from one connection (its server process's CPU per call) and then from pgbench's
# clients (calls/s)
AMPLIFICATION_STEPS = (
    ("as migrated", None),
    ("trigger generations_pool_arrived", "DROP TRIGGER generations_pool_arrived ON generations"),
    ("foreign key generations.user_id", "ALTER TABLE generations DROP CONSTRAINT fk_generations_user_id_users"),
    ("foreign key generations.recipe_id", "ALTER TABLE generations DROP CONSTRAINT fk_generations_recipe_id_recipes"),
    ("foreign key credit_transactions.user_id",
     "ALTER TABLE credit_transactions DROP CONSTRAINT fk_credit_transactions_user_id_users"),
)


def secondary_indexes(url: str, tables: tuple[str, ...]) -> list[str]:
    """The indexes on ``tables`` but their primary keys and the pool's, largest first."""
    with common.psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            """SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                WHERE i.indrelid = ANY (%s::regclass[]) AND NOT i.indisprimary
                  AND c.relname <> 'ix_generations_pool'
                ORDER BY array_position(%s::regclass[], i.indrelid::regclass), pg_relation_size(c.oid) DESC,
                         c.relname""", (list(tables), list(tables)))]


# one connection's claims, timed by its server process's CPU (steadier than a rate on a busy
# machine: what other processes do costs this one little CPU)
SERIAL_CALLS = 2000


def backend_cpu_per_call(url: str, args, calls: int = SERIAL_CALLS) -> float:
    """Microseconds of CPU the server process spends on one claim function call, over ``calls``
    calls from one connection (recipes and users at random, as pgbench's)."""
    rnd = random.Random(7)
    with common.psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        claim = ("SELECT o_outcome FROM delula_instant_claim(%s, %s, %s, '{\"isInstant\": true}'::jsonb, now(), 0, "
                 "NULL, now() - interval '72 hours', NULL, false, 1, false)")
        for _ in range(50):  # plans cached, caches warm
            user = f"u{rnd.randint(1, args.users)}"
            conn.execute(claim, (rnd.randint(1, args.recipes), user, user), prepare=True)
        before = cpu_seconds([pid])
        for _ in range(calls):
            user = f"u{rnd.randint(1, args.users)}"
            conn.execute(claim, (rnd.randint(1, args.recipes), user, user), prepare=True)
        return round((cpu_seconds([pid]) - before) * 1e6 / calls, 1)


def _pool_size(url: str) -> int:
    return common.scalar(url, "SELECT count(*) FROM generations WHERE user_id = 'system_backlog' "
                              "AND status = 'completed'")


def amplification(url: str, args) -> list[dict]:
    steps = [*AMPLIFICATION_STEPS,
             *((f"index {name}", f"DROP INDEX {name}")
               for name in secondary_indexes(url, ("generations", "claim_events", "credit_transactions")))]
    rows = []
    seeded = _pool_size(url)
    for label, statement in steps:
        if statement:
            common.execute(url, statement)
        # the pool as seeded again (each step claims a good part of it; an empty pool answers fast)
        missing = seeded - _pool_size(url)
        if missing > 0:
            common.seed_generations(url, missing, recipes=args.recipes, owner="system_backlog", spread="1 day")
        common.execute(url, "VACUUM ANALYZE generations, users, credit_transactions, claim_events, recipes")
        cpu = backend_cpu_per_call(url, args)
        run = run_pgbench(url, args, script=FUNCTION_SCRIPT.format(users=args.users, recipe=f"random(1, {args.recipes})"))
        row = {"without": label, "callsPerSecond": run["claimsPerSecond"], "serverCpuUsPerCall": cpu,
               "poolLeft": _pool_size(url)}
        log(f"{label:>55}: {row['callsPerSecond']:8.1f} calls/s, {cpu} µs of server CPU a call")
        rows.append(row)
    return rows


# --- invariants ------------------------------------------------------------------------------------------

def invariants(url: str) -> dict:
    q = {
        "claimedTwice": """SELECT count(*) FROM (SELECT generation_id FROM credit_transactions
                           WHERE kind = 'instant_claim' GROUP BY generation_id HAVING count(*) > 1) d""",
        "eventsClaimedTwice": """SELECT count(*) FROM (SELECT generation_id FROM claim_events
                                 WHERE outcome = 'claimed' GROUP BY generation_id HAVING count(*) > 1) d""",
        "ownerIsNotPayer": """SELECT count(*) FROM credit_transactions c JOIN generations g ON g.id = c.generation_id
                              WHERE c.kind = 'instant_claim' AND g.user_id <> c.user_id""",
        "claimedButStillInPool": """SELECT count(*) FROM credit_transactions c JOIN generations g ON g.id = c.generation_id
                                    WHERE c.kind = 'instant_claim' AND g.user_id = 'system_backlog'""",
        "ledgerMismatches": """SELECT count(*) FROM users u LEFT JOIN (SELECT user_id, sum(amount) s
                               FROM credit_transactions GROUP BY user_id) l ON l.user_id = u.id
                               WHERE u.credits <> coalesce(l.s, 0)""",
        "negativeBalances": "SELECT count(*) FROM users WHERE credits < 0 AND role <> 'system'",
        # a claim that said it matched handed out an item without the choices (every claim here is exact)
        "choicesNotHonoured": """SELECT count(*) FROM claim_events e JOIN generations g ON g.id = e.generation_id
                                 WHERE e.outcome = 'claimed' AND e.choices IS NOT NULL
                                   AND (e.matched IS NOT TRUE OR NOT g.form_data @> e.choices)""",
    }
    found = {k: common.scalar(url, sql) for k, sql in q.items()}
    found["violations"] = sum(found.values())
    return found


def _p99_over(run: dict, others: tuple[dict, ...]) -> float | None:
    """``run``'s p99 over the worst of ``others``; ``None`` when a run claimed nothing (its pool
    ran dry: seed more ``--items``)."""
    worst = [o["latencyMs"]["p99"] for o in others]
    if run["latencyMs"]["p99"] is None or None in worst:
        return None
    return round(run["latencyMs"]["p99"] / max(worst), 3)


def _mean_rate(*runs) -> float | None:
    rates = [r["claimsPerSecond"] for r in runs if r]
    return round(sum(rates) / len(rates), 1) if rates else None


def main(argv=None) -> dict:
    args = parse_args(argv)
    mode = "http" if args.http else "in-process"
    log(f"claims benchmark: {mode}, {args.clients} clients, {args.seconds:g} s{' (hot recipe)' if args.hot else ''}")
    with common.throwaway_database(args.database_url, args.db_name, keep=args.keep) as url, \
            common.throwaway_database(args.database_url, f"{args.db_name}_lean", keep=args.keep) as lean_url:
        seed(url, args)
        if args.layers:
            result = {"benchmark": "claims", "mode": "layers", "calls": LAYER_CALLS, "cores": os.cpu_count(),
                      "layers": layers(url, args)}
            common.emit(result)
            return result
        if args.amplification:
            result = {"benchmark": "claims", "mode": "amplification", "clients": args.clients,
                      "seconds": args.seconds, "cores": os.cpu_count(), "steps": amplification(url, args)}
            common.emit(result)
            return result
        lean = not args.hot and not args.no_raw and pgbench_binary() is not None
        if lean:
            lean_copy(url, lean_url)
        raw_before = None if args.hot else run_pgbench(url, args)
        lean_before = run_pgbench(lean_url, args) if lean else None
        if raw_before:
            log(f"pgbench (before): {raw_before['claimsPerSecond']} tx/s, "
                f"lean schema {lean_before['claimsPerSecond']} tx/s")
        if args.http:
            with WebServer(url, args.server, args.workers, args.threads) as server:
                cpu_before = server.cpu_seconds()
                clients_before = children_cpu_seconds()
                if args.wrk:
                    ours = run_wrk(server.base, args)
                else:
                    samples, start_at, deadline = run_clients(_http_worker, server.base, args)
                    ours = summarise(samples, start_at, deadline, "200", args.hot)
                client_cpu = children_cpu_seconds() - clients_before  # the client processes, joined
                per_worker = [t - cpu_before.get(pid, 0.0) for pid, t in server.cpu_seconds().items()]
                cpu = sum(per_worker)
                db_cpu = database_cpu_seconds(url)  # the pool's backends: all started for this run
                memory = server.memory()
            requests_n = ours["attempts"]
            ours["server"] = args.server
            ours["workers"], ours["threads"] = args.workers, args.threads
            ours["fiveHundreds"] = sum(n for status, n in ours["outcomes"].items() if status.startswith("5"))
            ours["workerCpuMsPerRequest"] = round(cpu * 1000 / requests_n, 2) if requests_n else None
            # how evenly the keep-alive connections spread over the workers (shares of their CPU)
            ours["workerCpuShares"] = sorted((round(t / cpu, 2) for t in per_worker), reverse=True) if cpu else []
            ours["databaseCpuMsPerRequest"] = round(db_cpu * 1000 / requests_n, 2) if requests_n and db_cpu else None
            ours["clientCpuMsPerRequest"] = round(client_cpu * 1000 / requests_n, 2) if requests_n else None
            ours.update(memory)
        elif args.choices:   # plain, with choices, plain: the ratio is against the mean of the two plain runs
            runs = []
            for worker in (_claim_worker, _choice_worker, _claim_worker):
                samples, start_at, deadline = run_clients(worker, url, args)
                runs.append(summarise(samples, start_at, deadline, "claimed", False))
                log(f"{'choices' if worker is _choice_worker else 'plain'}: {runs[-1]['claimsPerSecond']} claims/s")
            plain = (runs[0]["claimsPerSecond"] + runs[2]["claimsPerSecond"]) / 2
            ours = {**runs[1], "plainBefore": runs[0], "plainAfter": runs[2],
                    "choicesOverPlain": round(runs[1]["claimsPerSecond"] / plain, 3) if plain else None,
                    "p99OverPlain": _p99_over(runs[1], (runs[0], runs[2]))}
        elif args.hot:  # the same clients spread over every recipe first, then all on recipe 1
            spread_args = argparse.Namespace(**{**vars(args), "hot": False, "seconds": min(args.seconds, 10.0)})
            with LockWaits(url) as waits:
                samples, start_at, deadline = run_clients(_claim_worker, url, spread_args)
            spread = summarise(samples, start_at, deadline, "claimed", False)
            spread["lockWaitShare"] = waits.share
            log(f"spread over {args.recipes} recipes: {spread['claimsPerSecond']} claims/s, "
                f"{waits.share} of active sessions waiting for a lock")
            with LockWaits(url) as waits:
                samples, start_at, deadline = run_clients(_claim_worker, url, args)
            ours = summarise(samples, start_at, deadline, "claimed", True)
            ours["lockWaitShare"] = waits.share
            log(f"hot: {waits.share} of active sessions waiting for a lock")
            ours["spread"] = spread
            ours["hotOverSpread"] = (round(ours["claimsPerSecond"] / spread["claimsPerSecond"], 3)
                                     if spread["claimsPerSecond"] else None)
        else:
            samples, start_at, deadline = run_clients(_claim_worker, url, args)
            ours = summarise(samples, start_at, deadline, "claimed", False)
        log(f"ours: {ours['claimsPerSecond']} claims/s, p99 {ours['latencyMs']['p99']} ms")
        raw_after = None if args.hot else run_pgbench(url, args)
        lean_after = run_pgbench(lean_url, args) if lean else None
        function = run_pgbench(url, args) if args.hot else None   # on the same recipe, after ours
        if function:  # an emptied pool answers fast: its windows would not measure claims
            function["hotItemsLeft"] = common.scalar(url, """SELECT count(*) FROM generations
                WHERE recipe_id = 1 AND user_id = 'system_backlog' AND status = 'completed'""")
        raw_mean = _mean_rate(raw_before, raw_after)
        lean_mean = _mean_rate(lean_before, lean_after)
        result = {
            "benchmark": "claims", "mode": mode, "hot": args.hot, "naive": args.naive, "choices": args.choices,
            "clients": args.clients, "seconds": args.seconds, "cores": os.cpu_count(),
            "data": {"recipes": args.recipes, "poolItemsPerRecipe": pool_items(args), "history": args.history,
                     "users": args.users},
            "ours": ours,
            "raw": {"before": raw_before, "after": raw_after, "meanClaimsPerSecond": raw_mean},
            **({"function": function} if args.hot else {}),
            "lean": {"before": lean_before, "after": lean_after, "meanClaimsPerSecond": lean_mean},
            "ratio": round(ours["claimsPerSecond"] / raw_mean, 3) if raw_mean else None,
            "ratioLean": round(ours["claimsPerSecond"] / lean_mean, 3) if lean_mean else None,
            "rawOverLean": round(raw_mean / lean_mean, 3) if raw_mean and lean_mean else None,
            "invariants": invariants(url),
        }
    common.emit(result)
    return result


if __name__ == "__main__":
    main()
