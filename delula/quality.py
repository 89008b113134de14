"""The quality gate: whether a finished backlog job's result may enter the pool (pure).

A backlog job whose provider says COMPLETED enters the pool only if its result passes every
check below; otherwise it becomes ``rejected`` with the first failing check's reason as its
``error`` (``queue``, in the transaction that would have completed it), is never claimable and
counts on the overview's failures chart. In order:

1. **host** — the asset's URL is at one of the provider's asset locations
   (``Provider.asset_locations``, matched by :func:`at_location`);
2. **media type** — a video (``video/*``), or the simulator's image (``image/svg+xml``: it
   renders its "video" as an SVG poster) (:data:`ACCEPTED_MEDIA`);
3. **file size** — reported, above zero and at most ``DELULA_MAX_ASSET_MB`` (MiB);
4. **duration** — when the provider reports the video's length, within the recipe's bounds
   (:func:`duration_bounds`: its ``duration`` field's values, else ``DELULA_VIDEO_DURATION_S``);
5. **quality score** — when the provider scores its result (the simulator does, fal does not)
   and ``DELULA_MIN_QUALITY`` is set (it is off by default), at least that.

Only backlog jobs are gated. A user's own job is the user's own result, asked for and paid for
by them: it completes whatever it looks like, and the user sees it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ACCEPTED_MEDIA", "DURATION_FIELD", "DURATION_SLACK_S", "Limits", "at_location", "duration_bounds",
           "limits", "rejection"]

#: media types a pool item may have: any video, and the simulator's poster
ACCEPTED_MEDIA = ("video/*", "image/svg+xml")
#: the recipe field whose values bound a video's length
DURATION_FIELD = "duration"
#: seconds a reported length may stray outside the recipe field's values (a "5 s" model gives 5.04 s)
DURATION_SLACK_S = 1.0
MIB = 1 << 20
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """What a result is checked against (:func:`limits` builds it from the settings)."""

    locations: tuple[str, ...]               # the provider's asset locations
    max_mb: float                            # the largest file accepted, in MiB
    duration_s: tuple[float, float]          # the shortest and longest video accepted ...
    min_quality: float | None = None         # the lowest quality score accepted; None: not checked
    duration_from: str = "DELULA_VIDEO_DURATION_S"   # ... and where those bounds come from


def limits(settings, variables, locations) -> Limits:
    """The limits of one recipe (its ``variables``) under ``settings`` (``DELULA_MAX_ASSET_MB``,
    ``DELULA_VIDEO_DURATION_S``, ``DELULA_MIN_QUALITY``), for a provider's ``locations``."""
    own = duration_bounds(variables, None)
    return Limits(locations=tuple(locations), max_mb=settings.max_asset_mb,
                  duration_s=own or settings.video_duration_s, min_quality=settings.min_quality,
                  duration_from="the recipe's duration field" if own else "DELULA_VIDEO_DURATION_S")


def rejection(result, limits: Limits) -> str | None:
    """``None`` when ``result`` may enter the pool, else why not (one sentence).

    ``result`` has what a :class:`delula.providers.JobResult` carries: ``video_url``,
    ``content_type``, ``file_size`` (bytes or None), ``duration_s`` and ``quality_score`` (None
    when not reported). The checks run in the order of the module's list; the first failing one
    is the reason.
    """
    if not at_location(result.video_url, limits.locations):
        return f"the asset URL {_shown_url(result.video_url)} is not on the provider's host"
    media = (result.content_type or "").split(";", 1)[0].strip().lower()
    if not _accepted(media):
        return f"the asset is {media or 'of no media type'}, not a video"
    size = result.file_size
    if size is None:
        return "the provider reported no file size"
    if size <= 0:
        return "the asset is an empty file (0 bytes)"
    if size > limits.max_mb * MIB:
        return f"the asset is {size / MIB:,.1f} MB, above the bound of {limits.max_mb:g} MB (DELULA_MAX_ASSET_MB)"
    low, high = limits.duration_s
    if result.duration_s is not None and not low <= result.duration_s <= high:
        return f"the video lasts {result.duration_s:g} s, outside {low:g}–{high:g} s ({limits.duration_from})"
    if (limits.min_quality is not None and result.quality_score is not None
            and not result.quality_score >= limits.min_quality):
        return f"its quality score {result.quality_score:g} is below DELULA_MIN_QUALITY ({limits.min_quality:g})"
    return None


def _accepted(media: str) -> bool:
    return any(media == kind or (kind.endswith("/*") and media.startswith(kind[:-1]) and len(media) > len(kind) - 1)
               for kind in ACCEPTED_MEDIA)


def _shown_url(url: str) -> str:
    """Where a URL points, shortly: its scheme and host, or a relative URL's start."""
    url = str(url or "")
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.netloc:
        return f"{parts.scheme}://{parts.netloc[:80]}/…" if parts.scheme else f"//{parts.netloc[:80]}/…"
    return repr(url if len(url) <= 60 else url[:59] + "…")


def at_location(url: str, locations) -> bool:
    """Whether ``url`` is at one of ``locations``.

    A location is a URL prefix: ``https://fal.media/`` (that host: the same scheme, host and
    port, the default port filled in, any path under the location's), ``https://*.fal.media/``
    (any subdomain of it), or a path alone, ``/sim/fal/files/`` (a relative URL under that path:
    the in-process simulator's assets, served by this app). A URL with a ``..`` segment is at no
    location.
    """
    try:
        parts = urlsplit(str(url or ""))
        port = parts.port
    except ValueError:
        return False
    if not parts.path or ".." in parts.path.split("/"):
        return False
    for location in locations:
        where = urlsplit(location)
        prefix = where.path if where.path.endswith("/") else where.path + "/"
        if not parts.path.startswith(prefix):
            continue
        if not where.scheme and not where.netloc:          # a path alone: relative URLs only
            if not parts.scheme and not parts.netloc:
                return True
            continue
        scheme = where.scheme.lower()
        if parts.scheme.lower() != scheme or parts.username is not None:
            continue
        if (port or _DEFAULT_PORTS.get(scheme)) != (where.port or _DEFAULT_PORTS.get(scheme)):
            continue
        host, wanted = (parts.hostname or ""), (where.hostname or "")
        if wanted.startswith("*."):
            if host.endswith(wanted[1:]) and len(host) > len(wanted) - 1:
                return True
        elif host and host == wanted:
            return True
    return False


def duration_bounds(variables, default: tuple[float, float] | None) -> tuple[float, float] | None:
    """The seconds a recipe's video may last: the values of its ``duration`` field (a slider's
    ``min`` to ``max``; a choice's options, numbers or texts like ``"5"`` and ``"8s"``) widened by
    :data:`DURATION_SLACK_S` each way, or ``default`` (``DELULA_VIDEO_DURATION_S``) when the
    recipe has no such field, or none whose values read as seconds."""
    field = next((f for f in variables or [] if isinstance(f, dict) and f.get("id") == DURATION_FIELD), None)
    if field is None:
        return default
    if field.get("type") == "slider":
        values = [_seconds(field.get("min")), _seconds(field.get("max"))]
    else:
        values = [_seconds(o.get("value")) for o in field.get("options") or [] if isinstance(o, dict)]
    values = [v for v in values if v is not None]
    if not values:
        return default
    return max(0.0, min(values) - DURATION_SLACK_S), max(values) + DURATION_SLACK_S


def _seconds(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str) and (match := _SECONDS.fullmatch(value)):
        return float(match.group(1))
    return None
