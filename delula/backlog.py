"""The backlog service (BacklogRetainMinimumService): keep finished generations ready to claim.

Per active recipe:

- ``completed`` — claimable items (finished, owned by ``system_backlog``);
- ``inFlight`` — backlog jobs pending or processing. They count towards the target, so a slow
  provider never makes a pass order the same items twice;
- ``target`` — what the policy in force (``DELULA_BACKLOG_POLICY``, a pure function of
  ``delula.policies``, the same the demand simulator calls) makes of the recipe's state: its
  minimum (its override, else ``DELULA_MIN_BACKLOG``), the counts above, its instant attempts per
  minute over the last hour (hits and misses: demand is attempts) and its lead time;
- ``deficit = max(0, target − completed − inFlight)``;
- ``paused`` — its backlog generation is paused (``delula.pauses``): the pass orders nothing.

A new job's form data follows demand (``delula.choices.draw_forms``): the combinations users
asked the recipe for over the last ``DELULA_CHOICE_WINDOW_H`` hours — their own generations and
the choices of instant attempts, misses included — kept together, except a
``DELULA_EXPLORATION`` share drawn from the schema alone; text is always the author's.

A pass (:func:`maintain`) creates ``deficit`` pending backlog generations per recipe with a fixed
handful of statements whatever the number of recipes, and passes are serialised (an advisory
transaction lock on PostgreSQL, the write lock on SQLite) with the counting done after the lock,
so two passes at once never overshoot.

:func:`job_rows` is what a backlog job is (owner, form data, metadata, priority), for the pass
and for the demo's prefill alike.
"""
from __future__ import annotations

import gc
import logging
import random
from contextlib import contextmanager
from datetime import timedelta

from . import audit as _audit
from . import choices, forecast, forms, pauses, policies
from .config import BACKLOG_POLICIES
from .generations import BACKLOG_PRIORITY
from .storage import SYSTEM_BACKLOG_USER_ID, JobSource, JobStatus, catalog, jobs, stats
from .storage import demand as store_demand
from .storage import settings as _settings

log = logging.getLogger(__name__)

DEMAND_WINDOW = timedelta(hours=1)     # demand: instant attempts (hits and misses) per minute over this window
LEAD_TIME_WINDOW = timedelta(days=1)   # lead time: median over backlog jobs completed in this window
DEFAULT_LEAD_TIME_MIN = policies.DEFAULT_LEAD_TIME_MIN   # when no backlog job completed in the window
FAILED_RETENTION = timedelta(days=1)   # failed and rejected backlog jobs older than this are deleted ...
FAILED_KEEP = 10                       # ... except the newest this many per recipe (of each)
LOGGED_RECIPES = 20                    # a pass's log line names the recipes with the most new jobs, this many
CHOICE_ROWS = 5000                     # per source, the newest observations a pass reads for its refills


def job_rows(recipe, count: int, usage: dict, rng: random.Random, *, observed=(),
             exploration: float = 0.0) -> list[dict]:
    """``count`` new backlog jobs of ``recipe``, as rows for ``storage.jobs.add_generations`` (or
    ``add_generation`` one by one): owned by the system user, uncharged, queued after user jobs,
    each with form data drawn by ``choices.draw_forms`` from ``observed`` (the recipe's recent
    choices, as ``storage.catalog.recent_choices`` reads them), its usage statistics ``usage``
    and an ``exploration`` share. Raises :class:`forms.FormError` or :class:`forms.SchemaError`
    when no valid form fits the schema."""
    drawn = choices.draw_forms(recipe.variables, [(c, 1) for c in observed], count,
                               exploration=exploration, rng=rng, usage=usage)
    return [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, form_data=form,
                 meta={"source": JobSource.BACKLOG, "isInstant": False, "recipeName": recipe.name},
                 priority=BACKLOG_PRIORITY)
            for form in drawn]


def recent_choices(s, rt, recipe_ids) -> dict[int, list[dict]]:
    """The recipes' choices asked for within ``DELULA_CHOICE_WINDOW_H`` (one statement)."""
    since = rt.now() - timedelta(hours=rt.settings.choice_window_h)
    return catalog.recent_choices(s, recipe_ids, since, CHOICE_ROWS)


def _rows(s, rt) -> tuple[list, list[dict], list[policies.Order]]:
    """Active recipes, their status rows and the policy's orders; a fixed handful of queries
    whatever the number of recipes (the forecast's hourly history is read once an hour)."""
    settings, now = rt.settings, rt.now()
    recipes = catalog.active_recipe_rows(s)
    counts = stats.backlog_counts(s)
    attempts = stats.attempts_since(s, now - DEMAND_WINDOW)
    lead_per_recipe, lead_overall = stats.backlog_lead_times(s, now - LEAD_TIME_WINDOW)
    in_force = _policy_in_force(s, rt)
    paused = pauses.read(s)
    own = {r.id: r.backlog_policy for r in recipes if r.backlog_policy}
    window_min = DEMAND_WINDOW.total_seconds() / 60
    rates = [attempts.get(r.id, 0) / window_min for r in recipes]
    planned = in_force["policy"] == "forecast" or "forecast" in own.values()
    forecasts = _forecasts(s, rt, recipes, rates) if planned else [()] * len(recipes)
    run_time = stats.mean_run_minutes(s, now - LEAD_TIME_WINDOW)
    ctx = policies.PassContext(
        max_backlog=settings.max_backlog, service_level=in_force["serviceLevel"],
        concurrency=settings.max_concurrent_jobs, interval_min=settings.maintenance_interval_s / 60,
        run_time_min=run_time or policies.PassContext.run_time_min)
    states = []
    for r, rate, fc in zip(recipes, rates, forecasts):
        c = counts.get(r.id, _NONE)
        minimum = _minimum(r, settings)
        lead = lead_per_recipe.get(r.id, lead_overall if lead_overall is not None else DEFAULT_LEAD_TIME_MIN)
        states.append(policies.RecipeState(minimum=minimum, completed=c["completed"], in_flight=c["inFlight"],
                                           rate_per_min=rate, lead_time_min=lead, forecast=fc,
                                           policy=own.get(r.id)))
    orders = policies.plan(in_force["policy"], states, ctx)
    rows = [{
        "recipeId": r.id, "name": r.name,
        "completed": st.completed, "inFlight": st.in_flight,
        "target": o.target, "deficit": policies.deficit(st, o.target), "policy": o.policy,
        "minimum": st.minimum, "claimRatePerMin": round(st.rate_per_min, 3),
        "forecastPerMin": round(st.forecast[0], 3) if st.forecast else None,
        "leadTimeMin": round(st.lead_time_min, 2), "belowMinimum": st.completed < st.minimum,
        "paused": paused.backlog_paused_for(r.id),
    } for r, st, o in zip(recipes, states, orders)]
    return recipes, rows, orders


_NONE = {"completed": 0, "inFlight": 0}


def _minimum(recipe, settings) -> int:
    """The recipe's minimum: its own, else ``DELULA_MIN_BACKLOG``."""
    return recipe.min_backlog if recipe.min_backlog is not None else settings.min_backlog


def _forecasts(s, rt, recipes, rates) -> list[tuple[float, ...]]:
    """Each recipe's forecast attempts/min per bucket for the next day (``delula.forecast``),
    from the complete hours of the last four weeks of recorded demand, learnt once an hour."""
    now = rt.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    ids = tuple(r.id for r in recipes)
    profiles = rt.cache("forecast-profiles", ttl=2 * 3600, maxsize=8, keep=True)  # of complete hours
    key = (hour, ids)
    profile = profiles.get(key)
    if profile is None:
        start = hour - timedelta(hours=forecast.HISTORY_HOURS)
        counts = forecast.hourly_matrix(store_demand.hourly(s, start, hour), ids, start, forecast.HISTORY_HOURS)
        profile = forecast.profile(counts, start.weekday() * 24 + start.hour)
        profiles[key] = profile
    return forecast.ahead(profile, rates, (now - hour).total_seconds() / 60)


def status(rt) -> list[dict]:
    """Per active recipe: completed, inFlight, target, deficit, minimum, claim rate and lead time."""
    with rt.store.begin() as s:
        return _rows(s, rt)[1]


def maintain(rt, *, rng: random.Random | None = None) -> dict:
    """One pass: expire pool items older than ``DELULA_MAX_ITEM_AGE_H`` (kept, status
    ``expired``), then create the missing backlog jobs of every active recipe, clean up old
    failures and rejections.

    Returns ``{"created": {recipe_id: n}, "createdTotal", "cleanedUp", "expired", "recipes":
    [status rows after the pass]}``.
    """
    rng = rng or random.Random()
    now = rt.now()
    created: dict[int, int] = {}
    with _collector_paused(), rt.store.begin() as s:
        jobs.lock_backlog_pass(s)  # count only after any concurrent pass has committed
        expired = jobs.expire_stale(s, now=now, max_age_h=rt.settings.max_item_age_h)  # before counting
        recipes, rows, orders = _rows(s, rt)
        wanted = {row["recipeId"]: o.jobs for row, o in zip(rows, orders) if o.jobs > 0 and not row["paused"]}
        usage = catalog.usage_statistics(s, wanted) if wanted else {}
        observed = recent_choices(s, rt, wanted) if wanted else {}
        new = []
        for recipe in recipes:
            if recipe.id not in wanted:
                continue
            try:
                new += job_rows(recipe, wanted[recipe.id], usage.get(recipe.id, {}), rng,
                                observed=observed.get(recipe.id, ()), exploration=rt.settings.exploration)
            except (forms.FormError, forms.SchemaError) as e:
                log.error("backlog: recipe %s (%s) has a schema no valid form fits, skipped: %s",
                          recipe.id, recipe.name, e)
                continue
            created[recipe.id] = wanted[recipe.id]
        jobs.add_generations(s, new, now)
        cleaned = jobs.delete_failed_backlog(s, older_than=now - FAILED_RETENTION, keep=FAILED_KEEP)
    for row in rows:
        n = created.get(row["recipeId"], 0)
        row["inFlight"] += n
        row["deficit"] -= n
    if created or cleaned or expired:
        rt.invalidate()
    total = sum(created.values())
    if total:
        shown = sorted(created.items(), key=lambda kv: (-kv[1], kv[0]))[:LOGGED_RECIPES]
        more = f" and {len(created) - len(shown)} more recipe(s)" if len(created) > len(shown) else ""
        log.info("backlog: created %d job(s): %s%s", total, ", ".join(f"recipe {rid} +{n}" for rid, n in shown), more)
    if expired:
        log.info("backlog: %d pool item(s) older than %g h expired", expired, rt.settings.max_item_age_h)
    return {"created": created, "createdTotal": total, "cleanedUp": cleaned, "expired": expired, "recipes": rows}


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the block, back on after if it was on. A pass
    over thousands of recipes allocates a few hundred thousand small dicts and lists, none of
    them in a cycle, and the collector walked the whole heap several times over meanwhile
    (0.5 s of a 10,000-recipe pass); refcounting frees them all the same."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def record_sample(rt) -> dict:
    """Write one ``queue_samples`` row (queue and backlog totals) and return it."""
    with rt.store.begin() as s:
        live = stats.status_counts(s)
        counts = stats.backlog_counts(s)   # the pool's levels only: no policy is asked
        levels = [(counts.get(r.id, _NONE), _minimum(r, rt.settings))
                  for r in catalog.active_recipe_rows(s)]
        sample = dict(pending=live[JobStatus.PENDING], processing=live[JobStatus.PROCESSING],
                      backlog=sum(c["completed"] for c, _ in levels),
                      backlog_in_flight=sum(c["inFlight"] for c, _ in levels),
                      recipes_below_minimum=sum(1 for c, m in levels if c["completed"] < m))
        stats.add_queue_sample(s, now=rt.now(), **sample)
    return sample


class BacklogRetainMinimumService:
    """The seed design's service object, delegating to the module's functions."""

    def __init__(self, rt):
        self.rt = rt

    def check_backlog_status(self) -> list[dict]:
        return status(self.rt)

    def generate_missing_backlog_videos(self) -> dict:
        return maintain(self.rt)

    def run(self) -> dict:
        return maintain(self.rt)


# The policy in force
#
# An operator applies a policy and a service level (``apply_policy``) to every recipe — the one
# ``backlog_settings`` row — or a policy to some recipes (their own ``backlog_policy``); until
# anyone does, ``DELULA_BACKLOG_POLICY`` and ``DELULA_SERVICE_LEVEL`` are in force. Every change
# is audited as ``set_policy`` in its own transaction.



class PolicyError(ValueError):
    """A policy, service level or recipe that cannot be applied; the message says which."""


def policy_in_force(rt) -> dict:
    """``{"policy", "serviceLevel", "source"}``: the applied row (``source`` ``"database"``), else
    the environment's settings (``"settings"``)."""
    with rt.store.begin() as s:
        return _policy_in_force(s, rt)


def _policy_in_force(s, rt) -> dict:
    row = _settings.backlog(s)
    if row is not None:
        return {"policy": row.policy, "serviceLevel": row.service_level, "source": "database"}
    return {"policy": rt.settings.backlog_policy, "serviceLevel": rt.settings.service_level, "source": "settings"}


def recipe_policies(rt) -> dict[int, str]:
    """``{recipe id: its own policy}`` of the recipes that have one."""
    with rt.store.begin() as s:
        return {rid: p for rid, p in _settings.recipe_policies(s).items() if p is not None}


def _checked_policy(policy) -> str:
    if not isinstance(policy, str) or policy not in BACKLOG_POLICIES:
        raise PolicyError(f"policy must be one of {', '.join(BACKLOG_POLICIES)}, got {policy!r}")
    return policy


def _checked_service_level(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise PolicyError(f"service level must be a number between 0 and 1 (exclusive), e.g. 0.98; got {value!r}")
    return float(value)


def _checked_recipe_ids(recipe_ids) -> list[int]:
    if isinstance(recipe_ids, (str, bytes)) or not hasattr(recipe_ids, "__iter__"):
        raise PolicyError("recipes must be a list of recipe ids")
    ids = list(recipe_ids)
    if not ids or any(not isinstance(r, int) or isinstance(r, bool) for r in ids):
        raise PolicyError("recipes must be a non-empty list of recipe ids")
    return sorted(set(ids))


def apply_policy(rt, actor, policy: str | None, service_level: float | None = None,
                 recipe_ids=None) -> dict:
    """Apply ``policy`` and ``service_level`` to every recipe (the ``backlog_settings`` row), or,
    with ``recipe_ids``, ``policy`` as those recipes' own (``None`` clears it; the service level
    is global, so it must be left ``None`` then). ``actor``: the user id (or a user) applying it,
    named in the ``set_policy`` audit event written in the same transaction.

    Raises :class:`PolicyError`, changing nothing, for a policy not in
    ``config.BACKLOG_POLICIES``, a service level outside (0, 1), or an unknown recipe. Returns
    ``{"scope": "global", "policy", "serviceLevel"}`` or ``{"scope": "recipes", "policy",
    "recipeIds"}``.
    """
    actor_id = getattr(actor, "id", actor)
    now = rt.now()
    if recipe_ids is None:
        policy = _checked_policy(policy)
        level = _checked_service_level(service_level)
        with rt.store.begin() as s:
            row = _settings.backlog(s, lock=True)
            before = ({"policy": row.policy, "serviceLevel": row.service_level} if row is not None else
                      {"policy": rt.settings.backlog_policy, "serviceLevel": rt.settings.service_level,
                       "source": "settings"})
            _settings.put_backlog(s, policy=policy, service_level=level, now=now, user_id=actor_id)
            _audit.record(s, now=now, actor_id=actor_id, action="set_policy", scope="global", before=before,
                          after={"policy": policy, "serviceLevel": level})
        rt.invalidate()
        return {"scope": "global", "policy": policy, "serviceLevel": level}
    ids = _checked_recipe_ids(recipe_ids)
    if policy is not None:
        _checked_policy(policy)
    if service_level is not None:
        raise PolicyError("the service level applies to every recipe: apply it without recipes "
                          "(a recipe's own setting is its policy only)")
    with rt.store.begin() as s:
        before = _settings.recipe_policies(s, ids)
        missing = [r for r in ids if r not in before]
        if missing:
            raise PolicyError(f"no recipe {', '.join(str(r) for r in missing)}")
        _settings.set_recipe_policies(s, ids, policy)
        for rid in ids:
            _audit.record(s, now=now, actor_id=actor_id, action="set_policy", target_recipe_id=rid,
                          scope="recipe", before=before[rid], after=policy)
    rt.invalidate()
    return {"scope": "recipes", "policy": policy, "recipeIds": ids}
