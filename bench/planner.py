"""The instant hit rate and the pool's cost: every built-in demand trace × every backlog policy,
beside the clairvoyant oracle, on the demand simulator (no database).

    python bench/planner.py                      # the README's table: seeds 1-3, 7 + 7 days
    python bench/planner.py --seeds 1 --days 1 --warmup-days 1

    python bench/planner.py --traces choices --no-tight   # the choice hit rates: joint vs per-field

Per trace and seed it runs ``delula.planner.run`` (cap 3, jobs of 5-40 s, 5 % failures, every
miss falls back to a user job) and prints one JSON document on stdout: every run, a summary per
trace and policy (the worst seed's hit rate, the mean of the rest), the issue's targets checked
for ``forecast``, and the tight-capacity case (``--tight-concurrency`` slots, a launch that adds
half again to total demand) reported beside the oracle. A progress bar goes to stderr. Runs go
to ``--jobs`` processes; each simulation is single-threaded and deterministic for its seed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from delula import planner  # noqa: E402
from delula.planner import traces  # noqa: E402
from delula.policies import POLICIES  # noqa: E402

KEYS = ("attempts", "hits", "hitRate", "generations", "work", "expired", "meanStock", "stockItemHours")
CHOICE_KEYS = ("choiceAttempts", "choiceHits", "choiceHitRate")   # with choices; the baseline: marginal*


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", default=",".join(t for t in traces.NAMES if t not in traces.WITH_CHOICES),
                   help=f"comma-separated built-in traces (default all but {', '.join(traces.WITH_CHOICES)})")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--days", type=float, default=7.0, help="scored days")
    p.add_argument("--warmup-days", type=float, default=7.0)
    p.add_argument("--concurrency", type=int, default=3)
    p.add_argument("--tight-concurrency", type=int, default=2)
    p.add_argument("--no-tight", action="store_true", help="leave out the tight-capacity case")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def one(trace: str, seed: int, days: float, warmup: float, concurrency: int) -> dict:
    started = time.perf_counter()
    if trace == "launch+50%":
        tr = traces.launch(days + warmup, seed, added=0.5)
    else:
        tr = traces.make(trace, days + warmup, seed)
    out = planner.run(tr, "all", days=days, warmup_days=warmup, seed=seed, concurrency=concurrency,
                      lead_time=(5.0, 40.0), failure_rate=0.05)
    policies = {name: {k: r[k] for k in (*KEYS, *CHOICE_KEYS) if k in r} for name, r in out["policies"].items()}
    for name, r in out["policies"].items():
        if "marginal" in r:
            policies[name]["marginalChoiceHitRate"] = r["marginal"]["choiceHitRate"]
            policies[name]["marginalHitRate"] = r["marginal"]["hitRate"]
    for r in policies.values():
        r["stockMinutesOfDemand"] = r["meanStock"] / (r["attempts"] / (days * 1440)) if r["attempts"] else 0.0
    return {"trace": trace, "seed": seed, "concurrency": concurrency, "policies": policies,
            "oracle": out["oracle"], "seconds": round(time.perf_counter() - started, 1)}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for run in runs:
        t = out.setdefault(run["trace"], {})
        for name, r in [*run["policies"].items(), ("oracle", run["oracle"])]:
            s = t.setdefault(name, {"hitRate": [], "generations": [], "work": [], "expired": [],
                                    "stockMinutesOfDemand": [], "choiceHitRate": [], "marginalChoiceHitRate": [],
                                    "marginalHitRate": []})
            for k in s:
                if k in r:
                    s[k].append(r[k])
    for t in out.values():
        for name, s in t.items():
            t[name] = {**({"hitRateMin": min(s["hitRate"]), "hitRateMean": sum(s["hitRate"]) / len(s["hitRate"])}),
                       **{f"{k}Mean": sum(v) / len(v) for k, v in s.items() if v and k != "hitRate"}}
    return out


def check(runs: list[dict]) -> dict:
    """The issue's targets for ``forecast``, per run; ``True`` where met."""
    floors = {"steady": 0.99, "diurnal": 0.995, "launch": 0.98, "burst": 0.97}
    lead = {"diurnal": 0.10, "launch": 0.10, "burst": 0.01}
    checks: dict[str, bool] = {}
    for run in runs:
        if run["trace"] not in floors:
            continue
        f, o = run["policies"]["forecast"], run["oracle"]
        key = f"{run['trace']}/seed{run['seed']}"
        checks[f"{key}: hit rate >= {floors[run['trace']]}"] = f["hitRate"] >= floors[run["trace"]]
        if o["hitRate"] < 1:
            checks[f"{key}: >= 0.98 of the oracle"] = f["hitRate"] >= 0.98 * o["hitRate"]
        for other in ("static", "reactive"):
            theirs = run["policies"][other]
            if run["trace"] in lead:
                checks[f"{key}: {lead[run['trace']]:.0%} above {other}"] = \
                    f["hitRate"] - theirs["hitRate"] >= lead[run["trace"]]
                checks[f"{key}: work <= 1.02 x {other}'s"] = f["work"] <= 1.02 * theirs["work"]
        checks[f"{key}: work <= 1.10 x the oracle's generations"] = f["work"] <= 1.10 * o["generations"]
        checks[f"{key}: expired <= 0.5 % of generations"] = f["expired"] <= 0.005 * max(1, f["generations"])
        checks[f"{key}: mean stock <= 60 min of mean demand"] = f["stockMinutesOfDemand"] <= 60
    return checks


def main(argv=None) -> None:
    from tqdm import tqdm

    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    work = [(t, s, args.concurrency) for t in args.traces.split(",") if t for s in seeds]
    if not args.no_tight:
        work += [("launch+50%", s, args.tight_concurrency) for s in seeds]
    started = time.perf_counter()
    runs = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool, \
            tqdm(total=len(work), desc="planner", unit="run", file=sys.stderr) as bar:
        futures = [pool.submit(one, t, s, args.days, args.warmup_days, c) for t, s, c in work]
        for f in as_completed(futures):
            runs.append(f.result())
            bar.update(1)
    runs.sort(key=lambda r: (r["concurrency"] != args.concurrency, r["trace"], r["seed"]))
    main_runs = [r for r in runs if r["concurrency"] == args.concurrency]
    tight = [r for r in runs if r["concurrency"] != args.concurrency]
    checks = check(main_runs)
    print(json.dumps({
        "config": {"days": args.days, "warmupDays": args.warmup_days, "concurrency": args.concurrency,
                   "leadTimeS": [5, 40], "failureRate": 0.05, "seeds": seeds, "policies": list(POLICIES)},
        "summary": summarise(main_runs),
        "targets": {"met": all(checks.values()), "missed": [k for k, v in checks.items() if not v],
                    "checked": len(checks)},
        "tightCapacity": {"concurrency": args.tight_concurrency, "trace": "launch+50%",
                          "summary": summarise(tight).get("launch+50%", {})} if tight else None,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "secondsPerRunMax": max((r["seconds"] for r in runs), default=0.0),
    }, indent=2))


if __name__ == "__main__":
    main()
