"""The quality gate: the pure checks (every reason, at its boundaries), what the providers report,
and on PostgreSQL the queue ending a backlog job ``rejected`` with its reason -- never claimable,
even by claims running meanwhile, counted on the overview's failures chart, shown on the queue
page -- while a passing one enters the pool and a user's own job is never gated."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from delula import auth, backlog, claims, counters, generations, overview, queue, quality, recipes
from delula.clock import ManualClock
from delula.config import Settings
from delula.providers import FalProvider, JobResult
from delula.providers.base import interpret_result
from delula.simulator import Simulator, SimulatorProvider
from delula.storage import SYSTEM_BACKLOG_USER_ID, JobStatus, jobs
from delula.storage.models import Generation

MB = 1 << 20
FAL_LIKE = ("https://queue.fal.run/", "https://fal.media/", "https://*.fal.media/")
LIMITS = quality.Limits(locations=FAL_LIKE, max_mb=200, duration_s=(4.0, 11.0), min_quality=0.5,
                        duration_from="the recipe's duration field")
GOOD = JobResult("https://v3.fal.media/files/abc/out.mp4", "video/mp4", None, file_size=5 * MB, duration_s=8.0,
                 quality_score=0.9)


# --- the pure checks ------------------------------------------------------------------------------

def test_a_good_result_passes():
    assert quality.rejection(GOOD, LIMITS) is None


@pytest.mark.parametrize("url, ok", [
    ("https://v3.fal.media/files/abc/out.mp4", True),
    ("https://fal.media/files/abc/out.mp4", True),
    ("https://FAL.media:443/files/out.mp4", True),              # host case and the default port
    ("https://queue.fal.run/some/path", True),
    ("https://fal.media.evil.example/out.mp4", False),
    ("https://evilfal.media/out.mp4", False),
    ("http://v3.fal.media/files/out.mp4", False),               # another scheme
    ("https://v3.fal.media:8443/files/out.mp4", False),         # another port
    ("https://fal.media@evil.example/out.mp4", False),          # the host is evil.example
    ("https://user@fal.media/out.mp4", False),                  # credentials in an asset URL: refused
    ("https://fal.media/files/../../out.mp4", False),
    ("/sim/fal/files/x/video.svg", False),                      # relative: not at an absolute location
    ("https://fal.media:99999/x", False),                       # an unreadable port
    ("", False),
])
def test_the_url_must_be_on_the_providers_host(url, ok):
    assert quality.at_location(url, FAL_LIKE) is ok
    reason = quality.rejection(replace(GOOD, video_url=url), LIMITS)
    assert (reason is None) is ok
    if not ok:
        assert "is not on the provider's host" in reason


@pytest.mark.parametrize("url, ok", [
    ("/sim/fal/files/abc/video.svg", True), ("/sim/fal/files", False), ("/sim/fal/filesX/a.svg", False),
    ("/sim/fal/other/a.svg", False), ("//evil.example/sim/fal/files/a.svg", False),
    ("https://evil.example/sim/fal/files/a.svg", False), ("/sim/fal/files/../../a.svg", False),
])
def test_a_path_location_takes_relative_urls_under_it(url, ok):
    assert quality.at_location(url, ("/sim/fal/files/",)) is ok
    assert quality.at_location(url, ("/sim/fal/files",)) is ok       # the trailing slash is implied


@pytest.mark.parametrize("media, ok", [
    ("video/mp4", True), ("video/webm", True), ("Video/MP4; codecs=avc1", True), ("image/svg+xml", True),
    ("image/png", False), ("text/html", False), ("application/octet-stream", False), ("video/", False),
    ("videos/mp4", False), ("", False),
])
def test_the_media_type_is_a_video_or_the_simulators_image(media, ok):
    reason = quality.rejection(replace(GOOD, content_type=media), LIMITS)
    assert (reason is None) is ok
    if not ok:
        assert reason.endswith("not a video") and (media.split(";")[0].lower() or "no media type") in reason


@pytest.mark.parametrize("size, reason", [
    (None, "the provider reported no file size"),
    (0, "the asset is an empty file (0 bytes)"),
    (1, None),
    (200 * MB, None),                                            # at the bound
    (200 * MB + 1, "the asset is 200.0 MB, above the bound of 200 MB (DELULA_MAX_ASSET_MB)"),
    (10 ** 12, "the asset is 953,674.3 MB, above the bound of 200 MB (DELULA_MAX_ASSET_MB)"),
])
def test_the_file_size_is_reported_above_zero_and_at_most_the_bound(size, reason):
    assert quality.rejection(replace(GOOD, file_size=size), LIMITS) == reason


@pytest.mark.parametrize("seconds, ok", [(None, True), (4.0, True), (11.0, True), (7.5, True),
                                         (3.99, False), (11.01, False), (0.0, False), (3600.0, False)])
def test_a_reported_duration_is_within_the_bounds(seconds, ok):
    reason = quality.rejection(replace(GOOD, duration_s=seconds), LIMITS)
    assert reason == (None if ok else f"the video lasts {seconds:g} s, outside 4–11 s (the recipe's duration field)")


@pytest.mark.parametrize("score, minimum, ok", [
    (0.5, 0.5, True), (0.4999, 0.5, False), (0.0, 0.5, False), (1.0, 1.0, True), (0.0, 0.0, True),
    (None, 0.5, True),                    # not scored: nothing to check
    (0.01, None, True),                   # DELULA_MIN_QUALITY off: any score passes
])
def test_a_quality_score_is_checked_when_given_and_a_minimum_is_set(score, minimum, ok):
    reason = quality.rejection(replace(GOOD, quality_score=score), replace(LIMITS, min_quality=minimum))
    assert reason == (None if ok else f"its quality score {score:g} is below DELULA_MIN_QUALITY ({minimum:g})")


def test_the_first_failing_check_is_the_reason():
    awful = JobResult("https://elsewhere.example/x.html", "text/html", None, file_size=0, duration_s=0.0,
                      quality_score=0.0)
    assert "not on the provider's host" in quality.rejection(awful, LIMITS)
    assert "not a video" in quality.rejection(replace(awful, video_url=GOOD.video_url), LIMITS)
    assert "empty file" in quality.rejection(replace(awful, video_url=GOOD.video_url, content_type="video/mp4"),
                                             LIMITS)
    assert "lasts 0 s" in quality.rejection(replace(awful, video_url=GOOD.video_url, content_type="video/mp4",
                                                    file_size=1), LIMITS)


def test_a_recipes_duration_field_bounds_the_video():
    default = (1.0, 300.0)
    slider = [{"id": "duration", "type": "slider", "min": 5, "max": 10, "step": 5}]
    choices = [{"id": "mood", "type": "radio", "options": [{"value": "calm"}]},
               {"id": "duration", "type": "dropdown", "options": [{"value": "5"}, {"value": "8s"}, {"value": 10},
                                                                  {"value": "long"}, {"value": True}]}]
    assert quality.duration_bounds(slider, default) == (4.0, 11.0)
    assert quality.duration_bounds(choices, default) == (4.0, 11.0)
    assert quality.duration_bounds([{"id": "duration", "type": "dropdown", "options": [{"value": "0.5s"}]}],
                                   default) == (0.0, 1.5)                 # never below zero
    assert quality.duration_bounds([], default) == default
    assert quality.duration_bounds(None, default) == default
    assert quality.duration_bounds([], None) is None
    assert quality.duration_bounds([{"id": "length", "type": "slider", "min": 1, "max": 2}], default) == default
    assert quality.duration_bounds([{"id": "duration", "type": "text"}], default) == default
    assert quality.duration_bounds([{"id": "duration", "type": "dropdown", "options": [{"value": "long"}]}],
                                   default) == default


def test_limits_come_from_the_settings_and_the_recipe():
    settings = Settings.from_env({"DELULA_MAX_ASSET_MB": "1.5", "DELULA_VIDEO_DURATION_S": "2-20",
                                  "DELULA_MIN_QUALITY": "0.7"})
    assert quality.limits(settings, [], ["/x/"]) == quality.Limits(("/x/",), 1.5, (2.0, 20.0), 0.7,
                                                                   "DELULA_VIDEO_DURATION_S")
    slider = [{"id": "duration", "type": "slider", "min": 5, "max": 10}]
    own = quality.limits(Settings.from_env({}), slider, ())
    assert (own.duration_s, own.duration_from) == ((4.0, 11.0), "the recipe's duration field")
    assert quality.limits(Settings.from_env({}), [], ()).min_quality is None    # off by default


# --- what the providers report ----------------------------------------------------------------------

def test_a_fal_result_reports_its_files_facts():
    body = {"video": {"url": "https://v3.fal.media/files/x.mp4", "content_type": "video/mp4", "file_size": 123,
                      "duration": 8.04}, "quality_score": 0.8}
    assert interpret_result("fal.ai", 200, json.dumps(body)) == JobResult(
        "https://v3.fal.media/files/x.mp4", "video/mp4", None, file_size=123, duration_s=8.04, quality_score=0.8)
    for bad in ("123", -1, True, 1.5, None):                     # not a whole number of bytes: not reported
        body["video"]["file_size"] = bad
        assert interpret_result("fal.ai", 200, json.dumps(body)).file_size is None
    body["video"]["duration"], body["quality_score"] = -2, "high"
    result = interpret_result("fal.ai", 200, json.dumps(body))
    assert result.duration_s is None and result.quality_score is None
    bare = interpret_result("fal.ai", 200, json.dumps({"video": {"url": "https://fal.media/x.mp4"}}))
    assert (bare.content_type, bare.file_size, bare.duration_s, bare.quality_score) == ("video/mp4", None, None, None)


def test_the_providers_name_their_asset_locations():
    fal = FalProvider("k", "https://queue.fal.run", media_hosts=("fal.media", "storage.googleapis.com"))
    assert fal.asset_locations == ("https://queue.fal.run/", "https://fal.media/", "https://*.fal.media/",
                                   "https://storage.googleapis.com/", "https://*.storage.googleapis.com/")
    against_the_simulator = FalProvider("k", "http://127.0.0.1:8050/sim/fal")
    assert against_the_simulator.asset_locations[0] == "http://127.0.0.1:8050/"
    assert quality.at_location("http://127.0.0.1:8050/sim/fal/files/a/video.svg", against_the_simulator.asset_locations)
    sim = SimulatorProvider(Simulator(duration=0, failure_rate=0))
    assert sim.asset_locations == ("/sim/fal/files/",)


def test_the_simulator_scores_each_job_once_and_for_all():
    """Drawn at submit time and carried by the request id: the same score on every read, in any
    process holding the secret; a share ``low_quality_rate`` below 0.5."""
    clock = ManualClock()
    sim = Simulator(duration=0, failure_rate=0, clock=clock, secret=b"s", low_quality_rate=0.3)
    provider = SimulatorProvider(sim)
    elsewhere = SimulatorProvider(Simulator(duration=0, failure_rate=0, clock=clock, secret=b"s",
                                            low_quality_rate=0.0))
    subs = [provider.submit("fal-ai/veo3", {"prompt": str(i)}) for i in range(600)]
    scores = [provider.result(sub).quality_score for sub in subs]
    assert scores[:50] == [elsewhere.result(sub).quality_score for sub in subs[:50]]   # the id decides, not the config
    assert all(0 <= q <= 1 for q in scores)
    low = [q for q in scores if q < 0.5]
    assert all(q <= 0.49 for q in low) and 0.24 < len(low) / len(scores) < 0.36
    assert min(q for q in scores if q >= 0.5) >= 0.5
    forced = provider.result(provider.submit("fal-ai/veo3", {"_sim": {"quality": 0.12}}))
    assert forced.quality_score == 0.12
    with pytest.raises(Exception, match="quality"):
        provider.submit("fal-ai/veo3", {"_sim": {"quality": 1.5}})
    none_low = SimulatorProvider(Simulator(duration=0, failure_rate=0, low_quality_rate=0.0))
    assert all(none_low.result(none_low.submit("m/x", {})).quality_score >= 0.5 for _ in range(100))
    with pytest.raises(ValueError):
        Simulator(low_quality_rate=1.2)


def test_the_simulators_result_faults_shape_what_it_reports():
    provider = SimulatorProvider(Simulator(duration=0, failure_rate=0))
    good = provider.result(provider.submit("fal-ai/veo3", {}))
    assert good.file_size > 0 and good.content_type == "image/svg+xml" and good.duration_s is None
    assert quality.at_location(good.video_url, provider.asset_locations)

    def result(model):
        return provider.result(provider.submit(model, {}))

    assert result("sim/fault/result_empty").file_size == 0
    assert result("sim/fault/result_unsized").file_size is None
    assert result("sim/fault/result_oversize").file_size == 10 ** 12
    assert result("sim/fault/result_not_video").content_type == "text/html"
    offsite = result("sim/fault/result_offsite").video_url
    assert offsite.startswith("https://offsite.invalid/") and not quality.at_location(offsite, provider.asset_locations)
    assert result("sim/fault/result_duration").duration_s == 3600
    assert result("sim/fault/result_duration/30").duration_s == 30


# --- the queue on PostgreSQL --------------------------------------------------------------------------

def _runtime(make_runtime, pg_url, clock=None, **settings):
    settings = {"poll_schedule": (1.0,), "max_concurrent_jobs": 20, **settings}
    rt = make_runtime(pg_url, clock=clock or ManualClock(), pool_size=20, **settings)
    auth.ensure_system_user(rt)
    return rt


def _recipe(rt, name: str, model_id: str = "fal-ai/veo3/fast", variables=None, cost: int = 1):
    return recipes.create_recipe(rt, name=name, credit_cost=cost, model_id=model_id, variables=variables or [])


def _backlog_job(rt, recipe_id: int, form_data: dict | None = None) -> int:
    with rt.store.begin() as s:
        return jobs.add_generation(s, user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe_id, form_data=form_data or {},
                                   meta={"source": "backlog"}, priority=generations.BACKLOG_PRIORITY,
                                   credits_charged=0, now=rt.now()).id


def _gen(rt, gid: int) -> Generation:
    with rt.store.begin() as s:
        return jobs.get_generation(s, gid)


def _run(rt, ids, *, advance=None) -> dict:
    """Tick the queue until every job of ``ids`` has finished; the summed tick summaries."""
    total = dict.fromkeys(queue.SUMMARY_KEYS, 0)
    for _ in range(200):
        for key, n in queue.tick(rt).items():
            total[key] += n
        if all(_gen(rt, gid).status in JobStatus.FINISHED for gid in ids):
            return total
        (advance or rt.clock.advance)(1.0)
    raise AssertionError({gid: _gen(rt, gid).status for gid in ids})


CHECKS = [  # (what, recipe model id, recipe variables, job form data, settings, the reason)
    ("host", "sim/fault/result_offsite", [], {}, {},
     "the asset URL https://offsite.invalid/… is not on the provider's host"),
    ("media type", "sim/fault/result_not_video", [], {}, {}, "the asset is text/html, not a video"),
    ("no size", "sim/fault/result_unsized", [], {}, {}, "the provider reported no file size"),
    ("empty", "sim/fault/result_empty", [], {}, {}, "the asset is an empty file (0 bytes)"),
    ("too big", "sim/fault/result_oversize", [], {}, {},
     "the asset is 953,674.3 MB, above the bound of 200 MB (DELULA_MAX_ASSET_MB)"),
    ("too big for a bound set", "fal-ai/veo3", [], {}, {"max_asset_mb": 0.001},
     "above the bound of 0.001 MB (DELULA_MAX_ASSET_MB)"),
    ("the recipe's duration", "sim/fault/result_duration/30",
     [{"id": "duration", "label": "Length", "type": "slider", "min": 5, "max": 10, "step": 5}], {"duration": 5}, {},
     "the video lasts 30 s, outside 4–11 s (the recipe's duration field)"),
    ("the default duration", "sim/fault/result_duration", [], {}, {},
     "the video lasts 3600 s, outside 1–300 s (DELULA_VIDEO_DURATION_S)"),
    ("quality", "fal-ai/veo3", [], {"_sim": {"quality": 0.2}}, {"min_quality": 0.5},
     "its quality score 0.2 is below DELULA_MIN_QUALITY (0.5)"),
]


@pytest.mark.postgres
@pytest.mark.parametrize("what, model_id, variables, form_data, settings, reason", CHECKS, ids=[c[0] for c in CHECKS])
def test_a_result_failing_a_check_ends_rejected_with_its_reason(pg_url, make_runtime, what, model_id, variables,
                                                                form_data, settings, reason):
    rt = _runtime(make_runtime, pg_url, **settings)
    recipe = _recipe(rt, f"Gate {what}", model_id, variables)
    gid = _backlog_job(rt, recipe.id, form_data)
    summary = _run(rt, [gid])
    gen = _gen(rt, gid)
    assert (gen.status, gen.user_id) == ("rejected", SYSTEM_BACKLOG_USER_ID)
    assert reason in gen.error, gen.error
    assert gen.asset_url is None and gen.completed_at is None and gen.next_poll_at is None
    assert gen.meta["resultUrl"] and "contentType" in gen.meta                # what the provider said, for ops
    assert (summary["rejected"], summary["completed"], summary["failed"]) == (1, 0, 0)
    assert recipes.available_count(rt, recipe.id) == 0
    user, _ = auth.create_user(rt, "claimer", credits=100)
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).outcome is claims.Outcome.NO_BACKLOG
    finished = {(labels["result"], labels["source"]): n
                for labels, n in counters.totals(rt).get("jobs_finished", [])}
    assert finished == {("rejected", "backlog"): 1}
    assert backlog.status(rt)[0]["completed"] == 0         # not ready: the next pass refills the recipe


@pytest.mark.postgres
def test_a_passing_result_enters_the_pool_with_its_facts(pg_url, make_runtime):
    rt = _runtime(make_runtime, pg_url, min_quality=0.5)
    recipe = _recipe(rt, "Gate passes", variables=[{"id": "duration", "label": "Length", "type": "slider",
                                                    "min": 5, "max": 10, "step": 5}])
    gid = _backlog_job(rt, recipe.id, {"duration": 5, "_sim": {"quality": 0.5}})   # at the threshold
    assert _run(rt, [gid])["completed"] == 1
    gen = _gen(rt, gid)
    assert (gen.status, gen.error) == ("completed", None)
    assert gen.asset_url.startswith("/sim/fal/files/") and gen.asset_url.endswith("/video.svg")
    assert gen.meta["contentType"] == "image/svg+xml" and gen.meta["fileSize"] > 0 and gen.meta["qualityScore"] == 0.5
    assert "resultUrl" not in gen.meta
    user, _ = auth.create_user(rt, "claimer", credits=100)
    claimed = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    assert claimed.ok and claimed.generation["id"] == gid


@pytest.mark.postgres
def test_min_quality_is_off_by_default_so_a_low_score_passes(pg_url, make_runtime):
    rt = _runtime(make_runtime, pg_url)
    assert rt.settings.min_quality is None
    recipe = _recipe(rt, "Low but allowed")
    gid = _backlog_job(rt, recipe.id, {"_sim": {"quality": 0.01}})
    _run(rt, [gid])
    gen = _gen(rt, gid)
    assert (gen.status, gen.meta["qualityScore"]) == ("completed", 0.01)
    assert recipes.available_count(rt, recipe.id) == 1


@pytest.mark.postgres
def test_a_users_own_job_is_never_gated(pg_url, make_runtime):
    rt = _runtime(make_runtime, pg_url, min_quality=0.9)
    recipe = _recipe(rt, "Mine as it is", "sim/fault/result_offsite")
    user, _ = auth.create_user(rt, "owner", credits=10)
    made = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id, form_data={})
    gid = made.generation["id"]
    _run(rt, [gid])
    gen = _gen(rt, gid)
    assert (gen.status, gen.user_id, gen.refunded) == ("completed", user.id, False)
    assert gen.asset_url.startswith("https://offsite.invalid/")


@pytest.mark.postgres
def test_the_gate_holds_when_the_job_is_completed_at_its_timeout(pg_url, make_runtime):
    """A job past ``DELULA_JOB_TIMEOUT_S`` whose result is ready is completed by the timeout's
    last look, through the same gate."""
    clock = ManualClock()
    rt = _runtime(make_runtime, pg_url, clock=clock, job_timeout_s=5, poll_schedule=(600.0,))
    recipe = _recipe(rt, "Late and empty", "sim/fault/result_empty")
    gid = _backlog_job(rt, recipe.id)
    queue.tick(rt)                     # submitted; its first poll is ten minutes away
    clock.advance(6)
    summary = queue.tick(rt)
    assert (summary["rejected"], summary["timedOut"]) == (1, 0)
    assert _gen(rt, gid).status == "rejected"


@pytest.mark.postgres
def test_rejected_items_are_never_claimed_by_claims_running_meanwhile(pg_url, make_runtime):
    """Four connections claim from one recipe without pause while the queue finishes 60 backlog
    jobs, every other one scored below ``DELULA_MIN_QUALITY``. No claim ever hands out a rejected
    job; every passing one is claimed exactly once; the rejected ones stay the system's."""
    from delula.clock import SystemClock

    rt = _runtime(make_runtime, pg_url, clock=SystemClock(), min_quality=0.5, poll_schedule=(0.01,))
    recipe = _recipe(rt, "Contested")
    good = [_backlog_job(rt, recipe.id, {"_sim": {"quality": 0.8}}) for _ in range(30)]
    bad = [_backlog_job(rt, recipe.id, {"_sim": {"quality": 0.3}}) for _ in range(30)]
    users = [auth.create_user(rt, f"racer{i}", credits=1000)[0] for i in range(4)]
    stop, claimed, errors = threading.Event(), [], []
    lock = threading.Lock()

    def claimer(user_id):
        try:
            while not stop.is_set():
                result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user_id)
                if result.ok:
                    with lock:
                        claimed.append(result.generation["id"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=claimer, args=(u.id,)) for u in users]
    for t in threads:
        t.start()
    try:
        _run(rt, good + bad, advance=lambda _s: time.sleep(0.02))
        during = len(claimed)        # claimed while jobs were still completing and being rejected
        deadline = time.monotonic() + 30
        while len(claimed) < len(good) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == [] and during > 0
    assert sorted(claimed) == sorted(good)                   # each once, and nothing else
    with rt.store.begin() as s:
        rows = {g.id: (g.status, g.user_id) for g in s.query(Generation).filter(Generation.id.in_(bad))}
    assert set(rows.values()) == {("rejected", SYSTEM_BACKLOG_USER_ID)}
    assert recipes.available_count(rt, recipe.id) == 0


@pytest.mark.postgres
def test_rejections_are_counted_on_the_overview_error_chart(pg_url, make_runtime):
    """The last hour (raw tables) and, once rolled up, the last day and week (``stat_counts``)
    count rejected backlog items as their own series of the failures chart and in the error rate."""
    from datetime import datetime, timezone

    from tests.test_pages_recipes import build_app, page, text

    clock = ManualClock(datetime(2026, 3, 10, 9, 10, tzinfo=timezone.utc))
    rt = _runtime(make_runtime, pg_url, clock=clock)
    build_app(rt)                                            # the pages load with an app
    failures_figure, kpi_tiles = page("overview").failures_figure, page("overview").kpi_tiles
    empty, fine = _recipe(rt, "Empty", "sim/fault/result_empty"), _recipe(rt, "Fine")
    rejected = [_backlog_job(rt, empty.id) for _ in range(3)]
    completed = [_backlog_job(rt, fine.id) for _ in range(2)]
    _run(rt, rejected + completed)

    def check(snap, n_rejected=3):
        assert sum(snap["failures"]["rejected"]) == n_rejected
        assert sum(snap["failures"]["backlog"]) == sum(snap["failures"]["user"]) == 0   # not failures
        k = snap["kpis"]
        assert (k["rejectedInRange"], k["failedInRange"], k["completedInRange"]) == (n_rejected, 0, 2)
        assert k["errorRate"] == pytest.approx(n_rejected / (n_rejected + 2))

    rt.invalidate()
    hour = overview.snapshot(rt, "1h")
    check(hour)
    assert sum(overview.snapshot(rt, "1h", empty.id)["failures"]["rejected"]) == 3
    assert sum(overview.snapshot(rt, "1h", fine.id)["failures"]["rejected"]) == 0
    figure = failures_figure(hour)
    drawn = {trace["name"]: sum(trace["y"]) for trace in figure["data"]}
    assert drawn["rejected backlog items"] == 3 and drawn["failed backlog jobs"] == 0
    assert "0 of 5 jobs failed, 3 rejected, last hour" in text(kpi_tiles(hour))
    check(overview.snapshot(rt, "24h"))                      # raw: nothing rolled up yet

    clock.advance(2 * 3600)                                  # the hour closes, the roll-up takes it
    while overview.roll_up(rt)["hoursRolled"]:
        pass
    rt.invalidate()
    for key in ("24h", "7d"):
        check(overview.snapshot(rt, key))


@pytest.mark.postgres
def test_ops_see_the_rejection_on_the_queue_page(pg_url, make_runtime):
    """``/queue?status=rejected`` lists the item with the gate's reason as its error; its count
    tile and the asset viewer say what happened."""
    from tests.test_pages_recipes import build_app, by_id, page, signed_in, text

    rt = _runtime(make_runtime, pg_url)
    dash_app = build_app(rt)
    recipe = _recipe(rt, "Shown to ops", "sim/fault/result_not_video")
    gid = _backlog_job(rt, recipe.id)
    _run(rt, [gid])
    qp = page("queue")
    assert qp.parse_filters("rejected")["statuses"] == ["rejected"]
    with signed_in(dash_app):
        rows, _options, tiles, _footnote = qp.refresh(1, ["rejected"], "all", "all", None, {})
        others = qp.refresh(1, ["failed", "completed"], "all", "all", None, {})[0]
        tree = qp.layout(status="rejected")
        viewer = page("generation").layout(generation_id=str(gid))
    assert [(r["id"], r["status"], r["error"], r["actions"]) for r in rows] == [
        (gid, "rejected", "the asset is text/html, not a video", [])]
    assert gid not in [r["id"] for r in others]
    assert text(by_id(tiles, "queue-count-rejected")[0]).startswith("1")
    assert "quality gate" in text(by_id(tiles, "queue-counts")[0])
    assert by_id(tree, "queue-filter-status")[0].value == ["rejected"]
    assert "quality gate rejected" in text(by_id(viewer, "generation-media-empty")[0])


def test_housekeeping_keeps_a_few_rejections_per_recipe(rt):
    """The backlog pass deletes rejected backlog jobs older than a day as it deletes failed
    ones, keeping the newest few of each recipe (and each status) for diagnosis."""
    recipe = _recipe(rt, "Pruned", cost=0)
    now = rt.now()
    with rt.store.begin() as s:
        jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, status=status,
                                      form_data={}, meta={"source": "backlog"}, priority=10,
                                      created_at=now - timedelta(days=2, minutes=i), error="x")
                                 for status in ("rejected", "failed") for i in range(backlog.FAILED_KEEP + 3)], now)
    assert jobs_left(rt, recipe.id) == {"rejected": backlog.FAILED_KEEP + 3, "failed": backlog.FAILED_KEEP + 3}
    assert backlog.maintain(rt)["cleanedUp"] == 6
    assert jobs_left(rt, recipe.id) == {"rejected": backlog.FAILED_KEEP, "failed": backlog.FAILED_KEEP}


def jobs_left(rt, recipe_id: int) -> dict:
    with rt.store.begin() as s:
        out: dict = {}
        for g in s.query(Generation).filter(Generation.recipe_id == recipe_id,
                                            Generation.status.in_(("rejected", "failed"))):
            out[g.status] = out.get(g.status, 0) + 1
        return out
