"""Backlog policies: how many items a recipe's pool should hold, as pure functions.

A policy reads a :class:`RecipeState` (what the pool holds, what is on its way, the recent
demand and lead time) and returns the recipe's **target**. The live maintenance pass
(``backlog.maintain``) and the demand simulator (``delula.planner``) call the very same
functions, so what the simulator scores is what production runs.

- ``static``: the recipe's minimum only (the seed design's service);
- ``reactive``: ``max(minimum, min(max_backlog, ceil(rate × lead × 1.5)))`` (SPEC §5), where
  ``rate`` is the recipe's instant attempts per minute over the last hour — hits and misses
  alike: demand is attempts, so a recipe that ran dry does not look less wanted.

:func:`deficit` is how many new jobs a target asks for: the target less what is claimable and
what is already on its way.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

SAFETY_FACTOR = 1.5
DEFAULT_LEAD_TIME_MIN = 2.0     # a recipe's lead time before any backlog job of the day completed


@dataclass(frozen=True)
class RecipeState:
    """What a policy knows of one recipe at the time of a pass."""
    minimum: int                    # the recipe's own minimum, else DELULA_MIN_BACKLOG
    completed: int = 0              # claimable items now
    in_flight: int = 0              # backlog jobs pending or processing
    rate_per_min: float = 0.0       # instant attempts per minute over the last hour
    lead_time_min: float = DEFAULT_LEAD_TIME_MIN  # median minutes from a backlog job's creation to its completion


def static(state: RecipeState, max_backlog: int) -> int:
    """The minimum only."""
    return state.minimum


def reactive(state: RecipeState, max_backlog: int) -> int:
    """Enough to cover the attempts expected while a refill is on its way, never below the
    minimum, never above ``max_backlog`` unless the minimum is."""
    demand = max(0.0, state.rate_per_min) * max(0.0, state.lead_time_min) * SAFETY_FACTOR
    # round first: 0.1 × 20 × 1.5 is 3.0000000000000004 in floating point, and means 3
    return max(state.minimum, min(max_backlog, math.ceil(round(demand, 9))))


POLICIES: dict[str, Callable[[RecipeState, int], int]] = {"static": static, "reactive": reactive}


def target(policy: str, state: RecipeState, max_backlog: int) -> int:
    """The target of ``state`` under the policy named ``policy``; ``ValueError`` for an unknown name."""
    try:
        rule = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown backlog policy {policy!r}; one of {', '.join(POLICIES)}") from None
    return rule(state, max_backlog)


def deficit(state: RecipeState, target_items: int) -> int:
    """New jobs to create: the target less the claimable items and those on their way."""
    return max(0, target_items - state.completed - state.in_flight)
