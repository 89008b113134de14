"""A bulk retry of many failed jobs (issue 16): its time, its transactions and their statements.

    python bench/bulk.py --database-url postgresql://postgres@127.0.0.1/postgres --jobs 1000

Seeds ``--jobs`` failed jobs among ``--background`` completed ones (the table a retry walks
past), then runs ``queue_actions.bulk`` as ``POST /api/jobs/retry`` would — by filter
(``{"filter": {"status": "failed"}}``, walked by keyset) and by ids — and, for comparison, a bulk
cancel of as many charged pending user jobs (each refunded in its batch's transaction). Every
transaction is recorded: its statements and the rows its UPDATE of ``generations`` changed, so
the output shows the batches stay bounded whatever the number of jobs (statements are those the
driver runs; BEGIN and COMMIT are not among them). ``--runs`` fresh copies of the data; the median
time is printed. JSON on stdout.
"""
from __future__ import annotations

import argparse
import time

import common
from common import log


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=common.DEFAULT_SERVER)
    p.add_argument("--jobs", type=int, default=1000, help="failed jobs to retry (and pending ones to cancel)")
    p.add_argument("--background", type=int, default=100_000, help="completed jobs around them")
    p.add_argument("--batch", type=int, default=None, help="jobs per transaction (default: queue_actions.BATCH_SIZE)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--db-name", default="delula_bench_bulk", help="the benchmark database (dropped and created)")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def seed(url: str, jobs: int, background: int) -> None:
    common.migrate(url)
    common.seed_system_user(url)
    common.seed_users(url, 100, credits=1000)
    common.seed_recipes(url, 20)
    common.seed_generations(url, background, recipes=20, owner="system_backlog", spread="7 days")
    common.seed_generations(url, jobs, recipes=20, owner="system_backlog", status="failed", spread="1 day")
    common.seed_generations(url, jobs, recipes=20, owner="users", users=100, status="pending", spread="1 hour",
                            source="user")
    # the pending user jobs were charged one credit each (the ledger says so too)
    common.execute(url, """UPDATE generations SET credits_charged = 1, priority = 0
                           WHERE status = 'pending' AND user_id <> 'system_backlog'""",
                   """INSERT INTO credit_transactions (user_id, amount, balance_after, kind, generation_id, created_at)
                      SELECT user_id, -1, 0, 'generation', id, created_at FROM generations
                      WHERE status = 'pending' AND user_id <> 'system_backlog'""",
                   """UPDATE users u SET credits = u.credits - c.n
                      FROM (SELECT user_id, count(*) AS n FROM generations
                            WHERE status = 'pending' AND user_id <> 'system_backlog' GROUP BY user_id) c
                      WHERE c.user_id = u.id""",
                   "VACUUM ANALYZE")


class Recorder:
    """Every transaction of an engine: its statements, and the rows its UPDATE of generations changed."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.engine, self.transactions = engine, []
        self._current = {"statements": 0, "changed": 0}
        event.listen(engine, "after_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def stop(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "after_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)

    def _statement(self, conn, cursor, statement, parameters, context, executemany):
        self._current["statements"] += 1
        if statement.lstrip().startswith("WITH picked") and "UPDATE generations" in statement:  # the transition
            self._current["changed"] += max(cursor.rowcount, 0)

    def _commit(self, conn):
        self.transactions.append(self._current)
        self._current = {"statements": 0, "changed": 0}

    def summary(self) -> dict:
        statements = [t["statements"] for t in self.transactions]
        return {"transactions": len(self.transactions),
                "batches": sum(1 for t in self.transactions if t["changed"]),
                "largestBatch": max((t["changed"] for t in self.transactions), default=0),
                "statementsPerTransaction": {"min": min(statements, default=0), "max": max(statements, default=0)},
                "statements": sum(statements)}


def one_run(url: str, batch: int | None) -> dict:
    from delula import queue_actions
    from delula.config import Settings
    from delula.runtime import Runtime

    if batch is not None:
        queue_actions.BATCH_SIZE = batch
    rt = Runtime.from_settings(Settings.from_env(database_url=url, scheduler=False), pool_size=2)
    out = {}
    try:
        with rt.store.begin() as s:  # connect before timing
            s.connection()
        cases = [
            ("retryByFilter", queue_actions.RETRY, {"filter": queue_actions.JobFilter(statuses=("failed",))}),
            ("retryByIds", queue_actions.RETRY, None),   # the same jobs, failed again, by their ids
            ("cancelByFilter", queue_actions.CANCEL,
             {"filter": queue_actions.JobFilter(statuses=("pending",), source="user")}),
        ]
        retried = None
        for name, action, request in cases:
            if request is None:
                common.execute(url, f"""UPDATE generations SET status = 'failed'
                                        WHERE id IN ({','.join(map(str, retried))})""")
                request = {"ids": retried}
            if name == "retryByFilter":
                retried = [int(i) for i in common.scalar(
                    url, "SELECT string_agg(id::text, ',') FROM generations WHERE status = 'failed'").split(",")]
            recorder = Recorder(rt.store.engine)
            t0 = time.perf_counter()
            result = queue_actions.bulk(rt, action, **request)
            seconds = time.perf_counter() - t0
            recorder.stop()
            out[name] = {"seconds": round(seconds, 4), **result, **recorder.summary()}
        out["ledgerMismatches"] = common.scalar(url, """
            SELECT count(*) FROM users u LEFT JOIN (SELECT user_id, sum(amount) AS s FROM credit_transactions
                                                    GROUP BY user_id) t ON t.user_id = u.id
            WHERE u.credits <> coalesce(t.s, 0)""")
        out["refunds"] = common.scalar(url, "SELECT count(*) FROM credit_transactions WHERE kind = 'refund'")
    finally:
        rt.close()
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    from delula import queue_actions

    runs = []
    for i in range(args.runs):
        with common.throwaway_database(args.database_url, args.db_name, keep=args.keep and i == args.runs - 1) as url:
            seed(url, args.jobs, args.background)
            runs.append(one_run(url, args.batch))
            log(f"run {i + 1}: " + ", ".join(f"{k} {v['seconds'] * 1000:.0f} ms ({v['done']} done)"
                                            for k, v in runs[-1].items() if isinstance(v, dict)))
    cases = [k for k, v in runs[-1].items() if isinstance(v, dict)]
    result = {"benchmark": "bulk", "jobs": args.jobs, "background": args.background, "runs": args.runs,
              "batchSize": args.batch or queue_actions.BATCH_SIZE}
    for case in cases:
        last = {k: v for k, v in runs[-1][case].items() if k != "seconds"}
        result[case] = {**last, "medianSeconds": round(common.median([r[case]["seconds"] for r in runs]), 4),
                        "secondsPerRun": [r[case]["seconds"] for r in runs]}
    result["ledgerMismatches"] = max(r["ledgerMismatches"] for r in runs)
    result["refunds"] = runs[-1]["refunds"]
    common.emit(result)
    return result


if __name__ == "__main__":
    main()
