"""``python -m delula``: the same operations as the dashboard and the API, from a terminal.

Exit status: 0 success, 1 a refused operation (e.g. no backlog), 2 bad usage (including a value
no command could take, e.g. a negative amount or invalid JSON). The global options
(``--database-url``) may come before or after the command.

Account changes made here are audited with no actor (the CLI has no user) and ``via: cli``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable

from . import logs
from .config import ConfigError, Settings


class Refused(Exception):
    """The operation was refused; printed as JSON ``{"message"}`` with exit status 1."""


class BadUsage(Exception):
    """A value the command cannot use; printed to stderr with exit status 2, like argparse's."""


def _print(data, as_json: bool = True) -> None:
    if as_json or not isinstance(data, str):
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        print(data)


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    widths = [max([len(title), *(len(str(r.get(key, ""))) for r in rows)]) for key, title in columns]
    lines = ["  ".join(title.ljust(w) for (_, title), w in zip(columns, widths))]
    for r in rows:
        lines.append("  ".join(str(r.get(key, "")).ljust(w) for (key, _), w in zip(columns, widths)))
    return "\n".join(lines)


def format_status(data: dict) -> str:
    """Human text of ``queue_status.status`` for ``queue status``."""
    counts = data["counts"]
    above = data.get("countsAbove") or {}
    lines = ["jobs:      " + "  ".join(f"{k} {v}{'+' if k in above else ''}" for k, v in counts.items())
             + "  (finished: last 24 h)",
             f"slots:     {data['slots']['inUse']} of {data['slots']['max']} in use"]
    oldest = data["oldestPending"]
    lines.append("oldest:    " + ("no pending job" if oldest is None else
                                  f"#{oldest['id']} (recipe {oldest['recipeId']}), "
                                  f"pending for {_age(oldest['ageSeconds'])}"))
    claimable = data["claimable"]
    by_recipe = ", ".join(f"recipe {rid}: {n}" for rid, n in claimable["byRecipe"].items())
    lines.append(f"claimable: {claimable['total']}" + (f" ({by_recipe})" if by_recipe else ""))
    paused = data["paused"]
    held = (["queue submissions"] if paused["queue"] else []) + (["backlog (all recipes)"] if paused["backlog"] else []) \
        + [f"backlog of recipe {rid}" for rid in paused["recipes"]]
    lines.append("paused:    " + (", ".join(held) if held else "nothing"))
    provider = data["breaker"]
    lines.append(f"breaker:   {provider['state'].replace('_', '-')} ({provider['failures']} of "
                 f"{provider['threshold']} provider errors in a row)")
    if data["nextPolls"]:
        lines.append("next polls:")
        for p in data["nextPolls"]:
            when = "due now" if p["inSeconds"] <= 0 else f"in {_age(p['inSeconds'])}"
            lines.append(f"  #{p['id']:<6} {p['recipe'][:30]:<30} {when:<12} poll {p['pollCount'] + 1}, "
                         f"attempt {p['attempts']}")
    else:
        lines.append("next polls: none")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _runtime(args):
    from .runtime import Runtime

    overrides = {"database_url": args.database_url} if args.database_url else {}
    return Runtime.from_settings(Settings.from_env(**overrides))


# --- commands -------------------------------------------------------------------------------

def cmd_db_upgrade(rt, args):
    from . import storage

    storage.upgrade(rt.store)
    _print({"revision": storage.current_revision(rt.store)})


def cmd_demo_seed(rt, args):
    from . import demo

    created = demo.seed(rt)
    if created["adminPassword"]:
        print(f"ops user 'admin' created with password: {created['adminPassword']}", file=sys.stderr)
    _print({"recipes": created["recipes"], "users": created["users"]})


def cmd_users_create(rt, args):
    from . import auth

    user, token = auth.create_user(rt, args.name, role=args.role, credits=args.credits, password=args.password,
                                   is_test=args.test)
    _print({**auth.user_json(user), "token": token})


def cmd_users_grant(rt, args):
    from . import auth

    balance = auth.grant(rt, args.name, args.amount)
    _print({"username": args.name, "granted": args.amount, "credits": balance})


def cmd_users_revoke_token(rt, args):
    from . import auth

    n = auth.revoke_tokens(rt, args.name)
    _print({"username": args.name, "revoked": n})


def cmd_audit(rt, args):
    from . import audit

    try:
        rows = audit.query(rt, since=args.since, actor=args.actor, action=args.action, limit=args.limit)
    except audit.QueryError as e:
        raise BadUsage(str(e)) from None
    if args.json:
        _print({"events": rows})
    else:
        print(_table([{**r, "at": r["at"], "actor": r["actor"] or "(system)",
                       "target": r["targetUser"] or "", "job": r["targetJobId"] or "",
                       "recipe": r["targetRecipeId"] or "", "details": json.dumps(r["details"], sort_keys=True)}
                      for r in rows],
                     [("at", "AT"), ("actor", "ACTOR"), ("action", "ACTION"), ("target", "TARGET USER"),
                      ("job", "JOB"), ("recipe", "RECIPE"), ("details", "DETAILS")]))


def cmd_users_set_password(rt, args):
    from . import auth

    password = _read_password(args.password_stdin)
    auth.set_password(rt, args.name, password)
    _print({"username": args.name, "passwordChanged": True})


def _read_password(from_stdin: bool) -> str:
    """One line of stdin, or asked twice at the terminal (not echoed)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    password = getpass.getpass("New password: ")
    if getpass.getpass("New password, again: ") != password:
        raise Refused("the two passwords differ")
    return password


def cmd_users_set_role(rt, args):
    from . import auth

    user = auth.set_role(rt, args.name, args.role)
    _print(auth.user_json(user))


def cmd_users_issue_token(rt, args):
    from . import auth

    token = auth.issue_token(rt, args.name)
    _print({"username": args.name, "token": token})


def cmd_users_deactivate(rt, args):
    from . import auth

    revoked = auth.deactivate(rt, args.name)
    _print({"username": args.name, "active": False, "tokensRevoked": revoked})


def cmd_recipes_create(rt, args):
    from . import recipes

    try:
        recipe = recipes.create_recipe(rt, name=args.name, credit_cost=args.credit_cost,
                                       variables=args.variables or [],
                                       model_id=args.model_id, min_backlog=args.min_backlog,
                                       is_active=not args.inactive, description=args.description or "")
    except recipes.RecipeError as e:
        raise Refused(str(e)) from None
    _print(recipes.recipe_json(recipe))


def cmd_recipes_update(rt, args):
    from . import recipes

    changes = {k: v for k, v in (("name", args.name), ("credit_cost", args.credit_cost),
                                 ("is_active", args.active), ("min_backlog", args.min_backlog)) if v is not None}
    if args.variables is not None:
        try:
            changes["variables"] = json.loads(args.variables)
        except ValueError as e:
            raise BadUsage(f"--variables is not valid JSON: {e}") from None
    try:
        recipe = recipes.update_recipe(rt, args.id, **changes)
    except recipes.UnknownRecipe as e:
        raise Refused(str(e)) from None
    except recipes.RecipeError as e:
        raise BadUsage(str(e)) from None
    _print(recipes.recipe_json(recipe))


def cmd_backlog_status(rt, args):
    from . import backlog

    rows = backlog.status(rt)
    if args.json:
        _print({"recipes": rows})
    else:
        in_force = backlog.policy_in_force(rt)
        print(f"policy in force: {in_force['policy']}, service level {in_force['serviceLevel']:g} "
              f"(from {in_force['source']}); a recipe's own policy shows in its row")
        shown = [{**r, "forecastPerMin": "-" if r["forecastPerMin"] is None else r["forecastPerMin"]} for r in rows]
        print(_table(shown, [("recipeId", "ID"), ("name", "RECIPE"), ("completed", "READY"),
                             ("inFlight", "IN FLIGHT"), ("claimRatePerMin", "ATTEMPTS/MIN"),
                             ("forecastPerMin", "FORECAST/MIN"), ("target", "TARGET"), ("deficit", "DEFICIT"),
                             ("policy", "POLICY")]))


def cmd_backlog_maintain(rt, args):
    from . import backlog

    _print(backlog.maintain(rt))


def cmd_backlog_prefill(rt, args):
    from tqdm import tqdm

    from . import demo

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="backlog prefill", unit="job", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        summary = demo.prefill(rt, recipe_id=args.recipe, count=args.count, timeout=args.timeout,
                               on_progress=progress)
    finally:
        if bar is not None:
            bar.close()
    _print(summary)
    if summary.get("timedOut") or summary.get("failed"):
        raise SystemExit(1)


def cmd_pause(rt, args):
    """``backlog pause|resume [--recipe ID]``, ``queue pause|resume``: audited with ``via: cli``."""
    from . import pauses

    change = pauses.pause if args.pausing else pauses.resume
    try:
        answer = change(rt, args.group, getattr(args, "recipe", None), actor_id=None, via="cli")
    except pauses.PauseError as e:
        raise Refused(str(e)) from None
    if args.json:
        _print(answer)
    elif answer["changed"]:
        print(f"{answer['what']}: {'paused' if args.pausing else 'resumed'}")
    else:
        print(f"{answer['what']}: already {'paused' if args.pausing else 'running'}")


def cmd_queue_status(rt, args):
    from . import queue_status

    data = queue_status.status(rt)
    if args.json:
        _print(data)
    else:
        print(format_status(data))


def cmd_queue_tick(rt, args):
    from . import queue

    _print(queue.tick(rt))


def cmd_instant(rt, args):
    from . import auth, claims, forms

    user = auth.get_user(rt, username=args.user)
    if user is None or user.role == "system":
        raise Refused(f"no user named {args.user!r}")
    variables = claims.recipe_variables(rt, args.recipe_id) or []
    try:
        choices = dict(forms.choice_from_text(variables, text) for text in args.choice) if args.choice else None
    except forms.FormError as e:
        raise BadUsage(f"--choice: {e.errors['choice']}") from None
    ask = claims.Ask(choices=choices, match=claims.Match.PREFER if args.prefer else claims.Match.EXACT,
                     count=args.count, all=args.all)
    result = claims.instant_claim(rt, recipe_id=args.recipe_id, user_id=user.id, ask=ask)
    _print(claims.response(result)[1])
    if not result.ok:
        raise SystemExit(1)


def cmd_worker(rt, args):
    if args.worker is None:
        raise Refused("this entry point has no scheduler: run `python -m delula worker`")
    args.worker(rt)


def cmd_simulate(rt, args):
    """The demand simulator: every chosen policy and the oracle on one trace."""
    from tqdm import tqdm

    from . import planner, storage

    settings = rt.settings
    if args.from_db:
        storage.upgrade(rt.store)
        trace = planner.traces.recorded(rt, args.days + args.warmup_days, seed=args.seed)
    else:
        try:
            trace = planner.traces.make(args.trace, args.days + args.warmup_days, args.seed)
        except (ValueError, OSError) as e:
            raise BadUsage(str(e)) from None
    options = dict(concurrency=args.concurrency or settings.max_concurrent_jobs, lead_time=args.lead_time,
                   failure_rate=args.failure_rate, fallback_rate=args.fallback_rate,
                   service_level=args.service_level or settings.service_level,
                   max_age_h=args.max_age_h or settings.max_item_age_h,
                   maintenance_interval_s=settings.maintenance_interval_s,
                   minimum=settings.min_backlog, max_backlog=settings.max_backlog,
                   exploration=settings.exploration if args.exploration is None else args.exploration,
                   choice_window_h=settings.choice_window_h)
    with tqdm(total=1000, desc=f"simulate {trace.name}", unit="‰", file=sys.stderr,
              mininterval=0.5) as bar:
        def progress(fraction: float) -> None:
            bar.update(int(fraction * 1000) - bar.n)

        out = planner.run(trace, args.policy, days=args.days, warmup_days=args.warmup_days,
                          seed=args.seed, progress=progress, **options)
    if args.json:
        for result in out["policies"].values():
            result.pop("series", None)
        out.pop("demandSeries", None)
        _print(out)
        return
    rows = [{"policy": name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()},
             **({"marginalChoiceHitRate": round(r["marginal"]["choiceHitRate"], 4)} if "marginal" in r else {})}
            for name, r in out["policies"].items()]
    rows.append({"policy": "oracle", "hitRate": round(out["oracle"]["hitRate"], 4),
                 "generations": out["oracle"]["generations"]})
    print(f"trace {out['trace']}: {args.days:g} scored day(s) after {args.warmup_days:g} warm-up day(s), "
          f"{options['concurrency']} slot(s)")
    columns = [("policy", "POLICY"), ("attempts", "ATTEMPTS"), ("hitRate", "HIT RATE"),
               ("generations", "GENERATIONS"), ("work", "WORK"), ("expired", "EXPIRED"), ("meanStock", "MEAN STOCK")]
    if trace.has_choices:   # matched ÷ attempts with choices: the joint sampler, and the per-field baseline
        columns += [("choiceAttempts", "WITH CHOICES"), ("choiceHitRate", "CHOICE HIT RATE"),
                    ("marginalChoiceHitRate", "MARGINAL")]
    print(_table(rows, columns))


def cmd_simulator(rt, args):
    """The simulator alone, behind ``--key``, else ``DELULA_SIMULATOR_KEY``, else a key drawn for
    this run (its request ids die with it); says which on stderr."""
    import secrets

    from . import simulator
    from .provider_factory import make_simulator

    if args.key:
        key, origin = args.key, "from --key"
    elif rt.settings.simulator_key:
        key, origin = rt.settings.simulator_key, "from DELULA_SIMULATOR_KEY"
    else:
        key = secrets.token_urlsafe(24)
        origin = f"drawn for this run (set DELULA_SIMULATOR_KEY to keep one): {key}"
    print(f"simulator at http://{args.host}:{args.port}/sim/fal; key {origin}", file=sys.stderr, flush=True)
    simulator.serve(args.host, args.port, make_simulator(rt.settings, key=key), key=key)


# --- parser ---------------------------------------------------------------------------------

def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--database-url", default=default,
                        help="SQLAlchemy URL (default: DELULA_DATABASE_URL or sqlite:///delula.db)")


class _CommandParser(argparse.ArgumentParser):
    """The parser of a command (and of its group): it takes the global options too, so they may
    follow the command. Their default is to be absent, so a value given before the command stays."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _add_global_options(self, argparse.SUPPRESS)


def _natural(value: str) -> int:
    """A whole number of at least 0 (a bad one exits 2)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {number}")
    return number


def _slots(value: str) -> int:
    number = _natural(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _number(ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An option's type: a number for which ``ok`` holds (NaN never does), else exit 2 saying ``rule``."""
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if not ok(x):
            raise argparse.ArgumentTypeError(f"must be {rule}: {value}")
        return x
    return parse


_positive_days = _number(lambda x: 0 <= x <= 366, "between 0 and 366 days")
_fraction = _number(lambda x: 0 <= x <= 1, "between 0 and 1")
_service_level = _number(lambda x: 0 < x < 1, "above 0 and below 1")
_hours = _number(lambda x: 0 < x < math.inf, "positive")


def _lead_time(value: str) -> tuple[float, float]:
    """``SECONDS`` or ``MIN-MAX`` seconds."""
    try:
        lo, _, hi = value.partition("-")
        pair = (float(lo), float(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not SECONDS or MIN-MAX: {value!r}") from None
    if not 0 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"need 0 <= MIN <= MAX seconds: {value!r}")
    return pair


def _json_list(value: str) -> list:
    """``--variables``: JSON (a bad one exits 2; what the list holds, the recipe checks)."""
    try:
        return json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None


def _simulator_key(value: str) -> str:
    """``simulator --key``: checked like ``DELULA_SIMULATOR_KEY`` (a bad one exits 2)."""
    try:
        return Settings().replace(simulator_key=value).simulator_key
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m delula", description="Delula backlog operations.")
    _add_global_options(p, None)
    sub = p.add_subparsers(dest="group", required=True, metavar="COMMAND", parser_class=_CommandParser)

    def group(name, help_):
        g = sub.add_parser(name, help=help_)
        return g.add_subparsers(dest="command", required=True, metavar="ACTION")

    db = group("db", "schema migrations")
    db.add_parser("upgrade", help="create/upgrade the schema (idempotent)").set_defaults(func=cmd_db_upgrade)

    demo = group("demo", "demo data")
    demo.add_parser("seed", help="demo recipes, usage stats, test users (idempotent)").set_defaults(
        func=cmd_demo_seed)

    users = group("users", "users, credits and API tokens")
    c = users.add_parser("create", help="create a user and print its API token")
    c.add_argument("name")
    c.add_argument("--role", default="user", choices=["user", "product", "ops"])
    c.add_argument("--credits", type=_natural, default=0)
    c.add_argument("--password")
    c.add_argument("--test", action="store_true", help="a test account: product staff may act for it")
    c.set_defaults(func=cmd_users_create)
    g = users.add_parser("grant", help="add credits (a ledger row)")
    g.add_argument("name")
    g.add_argument("amount", type=_natural)
    g.set_defaults(func=cmd_users_grant)
    r = users.add_parser("revoke-token", help="revoke every API token of the user")
    r.add_argument("name")
    r.set_defaults(func=cmd_users_revoke_token)
    t = users.add_parser("issue-token", help="issue a new API token and print it")
    t.add_argument("name")
    t.set_defaults(func=cmd_users_issue_token)
    sp = users.add_parser("set-password", help="set the password (asked twice); ends the user's sessions")
    sp.add_argument("name")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    sp.set_defaults(func=cmd_users_set_password)
    sr = users.add_parser("set-role", help="change the role; ends the user's sessions")
    sr.add_argument("name")
    sr.add_argument("role", choices=["user", "product", "ops"])
    sr.set_defaults(func=cmd_users_set_role)
    d = users.add_parser("deactivate", help="no more sign-in or API access: tokens revoked, sessions ended")
    d.add_argument("name")
    d.set_defaults(func=cmd_users_deactivate)

    recipes = group("recipes", "recipes")
    rc = recipes.add_parser("create", help="create a recipe, print its JSON")
    rc.add_argument("--name", required=True)
    rc.add_argument("--credit-cost", type=int, required=True)
    rc.add_argument("--variables", type=_json_list, help="JSON list of fields (SPEC §4)")
    rc.add_argument("--model-id", default="fal-ai/veo3/fast")
    rc.add_argument("--min-backlog", type=int)
    rc.add_argument("--description")
    rc.add_argument("--inactive", action="store_true")
    rc.set_defaults(func=cmd_recipes_create)
    ru = recipes.add_parser("update", help="change a recipe (audited), print its JSON")
    ru.add_argument("id", type=int)
    ru.add_argument("--name")
    ru.add_argument("--credit-cost", type=int)
    ru.add_argument("--variables", help="JSON list of fields (SPEC §4)")
    ru.add_argument("--active", action=argparse.BooleanOptionalAction,
                    help="--active offers and refills the recipe, --no-active (or --inactive) stops both")
    ru.add_argument("--inactive", dest="active", action="store_false", help=argparse.SUPPRESS)
    ru.add_argument("--min-backlog", type=int)
    ru.set_defaults(func=cmd_recipes_update, active=None)

    backlog = group("backlog", "the backlog of ready generations")
    bs = backlog.add_parser("status", help="per recipe: completed, in flight, target, deficit")
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(func=cmd_backlog_status)
    backlog.add_parser("maintain", help="one maintenance pass; prints what it created").set_defaults(
        func=cmd_backlog_maintain)
    bp = backlog.add_parser("prefill", help="create and run N backlog jobs per recipe until done")
    bp.add_argument("--recipe", type=int, help="only this recipe id (default: every active recipe)")
    bp.add_argument("--count", type=int, default=3)
    bp.add_argument("--timeout", type=float, default=600.0)
    bp.set_defaults(func=cmd_backlog_prefill)
    for verb, pausing in (("pause", True), ("resume", False)):
        pr = backlog.add_parser(verb, help=f"{verb} backlog generation (every recipe, or --recipe); audited")
        pr.add_argument("--recipe", type=int, help="only this recipe id")
        pr.add_argument("--json", action="store_true")
        pr.set_defaults(func=cmd_pause, pausing=pausing)

    queue = group("queue", "the generation queue")
    qs = queue.add_parser("status", help="counts, oldest pending, slots in use, next polls")
    qs.add_argument("--json", action="store_true")
    qs.set_defaults(func=cmd_queue_status)
    queue.add_parser("tick", help="one queue tick").set_defaults(func=cmd_queue_tick)
    for verb, pausing in (("pause", True), ("resume", False)):
        qp = queue.add_parser(verb, help=f"{verb} submissions to the provider (polls go on); audited")
        qp.add_argument("--json", action="store_true")
        qp.set_defaults(func=cmd_pause, pausing=pausing)

    a = sub.add_parser("audit", help="the audit trail, newest first (a table; JSON with --json)")
    a.add_argument("--since", help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    a.add_argument("--actor", help="username of who acted")
    a.add_argument("--action", help="one action, e.g. top_up")
    a.add_argument("--limit", type=int, default=500)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_audit)

    i = sub.add_parser("instant", help="one instant claim, prints the API's JSON body")
    i.add_argument("recipe_id", type=int)
    i.add_argument("--user", required=True)
    i.add_argument("--choice", action="append", default=[], metavar="FIELD=VALUE",
                   help="only an item with this value (repeat for more fields)")
    i.add_argument("--prefer", action="store_true", help="prefer items with the choices, else take the oldest")
    i.add_argument("--count", type=int, help="take up to this many items (1-10), printed as a list")
    i.add_argument("--all", action="store_true", help="with --count: all of them or none")
    i.set_defaults(func=cmd_instant)

    sub.add_parser("worker", help="run the scheduler (no web server) until stopped").set_defaults(func=cmd_worker)

    from .policies import POLICIES

    sm = sub.add_parser("simulate", help="replay demand against the backlog policies and the oracle")
    src = sm.add_mutually_exclusive_group()
    src.add_argument("--trace", default="diurnal",
                     help="steady|diurnal|burst|launch|choices or a CSV file minute,recipe,attempts[,choices] "
                          "(default diurnal)")
    src.add_argument("--from-db", action="store_true", help="replay the recorded demand of the last days")
    sm.add_argument("--policy", choices=[*POLICIES, "all"], default="all")
    sm.add_argument("--days", type=_positive_days, default=7.0, help="scored days (default 7)")
    sm.add_argument("--warmup-days", type=_positive_days, default=7.0,
                    help="days before the scored ones: the forecast learns, nothing is scored (default 7)")
    sm.add_argument("--concurrency", type=_slots, help="jobs at once (default DELULA_MAX_CONCURRENT_JOBS)")
    sm.add_argument("--lead-time", type=_lead_time, default=(5.0, 40.0),
                    help="a job's run time, SECONDS or MIN-MAX (default 5-40)")
    sm.add_argument("--failure-rate", type=_fraction, default=0.05)
    sm.add_argument("--fallback-rate", type=_fraction, default=1.0,
                    help="share of misses that become a user job (default 1.0)")
    sm.add_argument("--service-level", type=_service_level, help="default DELULA_SERVICE_LEVEL")
    sm.add_argument("--max-age-h", type=_hours, help="default DELULA_MAX_ITEM_AGE_H")
    sm.add_argument("--exploration", type=_fraction,
                    help="share of backlog jobs drawn from the schema alone, on traces with choices "
                         "(default DELULA_EXPLORATION)")
    sm.add_argument("--seed", type=int, default=1)
    sm.add_argument("--json", action="store_true")
    sm.set_defaults(func=cmd_simulate)

    s = sub.add_parser("simulator", help="serve the fal-compatible simulator alone")
    s.add_argument("--port", type=int, default=8060)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--key", type=_simulator_key, help="the key callers must send as 'Authorization: Key ...' "
                                 "(default: DELULA_SIMULATOR_KEY, else one drawn and printed)")
    s.set_defaults(func=cmd_simulator)
    return p


def main(argv: list[str] | None = None, *, worker: Callable[[object], None] | None = None) -> int:
    """Run one command. ``worker`` runs the scheduler until stopped (the ``worker`` command); the
    program's entry point, ``delula/__main__.py``, passes the scheduler's, so this face does not
    import another."""
    logs.configure()
    args = build_parser().parse_args(argv)
    args.worker = worker
    try:
        rt = _runtime(args)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    from . import audit, storage
    from .auth import AuthError

    try:
        if args.func not in (cmd_db_upgrade, cmd_simulator, cmd_simulate):   # simulate: only --from-db
            storage.upgrade(rt.store)
        with audit.request_context():  # one request id per command, carried by its audit rows
            args.func(rt, args)
    except (Refused, AuthError) as e:   # a refusal of the domain's account rules is the command's
        _print({"message": str(e)})
        return 1
    except BadUsage as e:
        print(f"{build_parser().prog}: error: {e}", file=sys.stderr)
        return 2
    except storage.DatabaseUnavailable as e:
        print(f"database unavailable: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        rt.close()
    return 0
