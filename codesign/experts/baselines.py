"""Baseline policies, each a function ``Problem -> Plan`` replayed by the same simulator.

* ``copy-every-request``: every use copies its expert in and drops it after (Samba-CoE).
* ``lru`` / ``lfu``: fetch on demand; evict the least recently / least frequently used.
* ``belady-prefetch``: evict the expert needed farthest in the future (Belady's MIN) and
  issue each load one slot early, overlapping the previous slot's compute.
* ``lookahead-m``: knows the next ``m`` slots (the SCH policy of arXiv 2505.16056); issues
  each load ``m`` slots early and evicts first what those slots do not need, then the
  least recently used. Default ``m``: enough slots of compute to hide one transfer.
* ``aggressive``: integrated prefetching and caching (Cao, Felten, Karlin, Li, SIGMETRICS
  1995): whenever the link is free, fetch the next missing expert in request order,
  evicting the experts whose next use is farthest, provided that use comes after the one
  being fetched (so the victim is not needed before the expert that replaces it). Unlike
  ``belady-prefetch`` it decides in time, not slot by slot: it prefetches as deep as space
  allows and never evicts an expert whose use is still running.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from .plan import Load, Plan
from .prefetch import PrefetchWalk, furthest_first
from .problem import Problem, next_use

if TYPE_CHECKING:
    from .simulate import SimResult

__all__ = ["BASELINES", "copy_every_request", "lru", "lfu", "belady_prefetch", "lookahead", "default_lookahead",
           "aggressive", "run_baselines"]

# victim(candidates, slot, state) -> expert to evict
Victim = Callable[[list[int], int, "_State"], int]


class _State:
    """What an online cache knows at slot v: last use and use count per expert."""

    def __init__(self, problem: Problem) -> None:
        self.last_use: dict[int, int] = {e: -1 for e in problem.initial}
        self.count: dict[int, int] = {}
        self.uses = problem.uses()

    def next_use(self, e: int, v: int) -> float:
        return next_use(self.uses, e, v)


def _walk(problem: Problem, policy: str, victim: Victim, lead: int, protect_previous: bool) -> Plan:
    """Shared cache walk: in slot order, load what is missing, evicting by ``victim``.

    ``lead``: loads may be issued that many slots early. An evicted expert is dropped when
    its last use ends, so the space is free as early as the decision allows.
    """
    state = _State(problem)
    resident = set(problem.initial)
    used = sum(problem.size(e) for e in resident)
    loads: list[Load] = []
    drops: set[tuple[int, int]] = set()
    for v, ids in enumerate(problem.requests):
        protected = set(ids) | (set(problem.requests[v - 1]) if protect_previous and v else set())
        for e in ids:
            if e in resident:
                continue
            while used + problem.size(e) > problem.capacity:
                candidates = sorted(resident - protected) or sorted(resident - set(ids))
                out = victim(candidates, v, state)
                resident.discard(out)
                used -= problem.size(out)
                drops.add((out, state.last_use[out]))
            loads.append(Load(e, v, max(0, v - lead)))
            resident.add(e)
            used += problem.size(e)
        for e in ids:
            state.last_use[e] = v
            state.count[e] = state.count.get(e, 0) + 1
    return Plan(tuple(loads), frozenset(drops), policy)


def copy_every_request(problem: Problem) -> Plan:
    """Copy each requested expert in for its slot and drop it when the slot ends."""
    loads = tuple(Load(e, v, v) for v, ids in enumerate(problem.requests) for e in ids)
    drops = {(e, v) for v, ids in enumerate(problem.requests) for e in ids}
    drops |= {(e, -1) for e in problem.initial}
    return Plan(loads, frozenset(drops), "copy-every-request")


def lru(problem: Problem) -> Plan:
    return _walk(problem, "lru", lambda c, v, s: min(c, key=lambda e: (s.last_use[e], e)), 0, False)


def lfu(problem: Problem) -> Plan:
    return _walk(problem, "lfu", lambda c, v, s: min(c, key=lambda e: (s.count.get(e, 0), s.last_use[e], e)), 0, False)


def belady_prefetch(problem: Problem) -> Plan:
    return _walk(problem, "belady-prefetch", lambda c, v, s: max(c, key=lambda e: (s.next_use(e, v), e)), 1, True)


def default_lookahead(problem: Problem) -> int:
    """Slots of average compute that one average transfer takes (at least 1)."""
    mean_compute = sum(problem.compute) / max(1, problem.num_slots)
    mean_transfer = sum(problem.transfer) / max(1, len(problem.transfer))
    return max(1, math.ceil(mean_transfer / max(1.0, mean_compute)))


def lookahead(problem: Problem, m: int | None = None) -> Plan:
    m = default_lookahead(problem) if m is None else m

    def victim(c: list[int], v: int, s: _State) -> int:
        return min(c, key=lambda e: (s.next_use(e, v) <= v + m, s.last_use[e], e))

    plan = _walk(problem, f"lookahead-{m}", victim, m, True)
    return plan


def aggressive(problem: Problem) -> Plan:
    """Cao et al.'s aggressive prefetching (see :mod:`.prefetch`)."""
    return PrefetchWalk(problem).run(furthest_first, "aggressive")


BASELINES: dict[str, Callable[[Problem], Plan]] = {
    "copy-every-request": copy_every_request,
    "lru": lru,
    "lfu": lfu,
    "belady-prefetch": belady_prefetch,
    "lookahead": lookahead,
    "aggressive": aggressive,
}


def run_baselines(problem: Problem, names: list[str] | None = None) -> dict[str, tuple[Plan, "SimResult"]]:
    """Every (or the named) baseline's plan and its simulated result, by plan name."""
    from .simulate import simulate
    out = {}
    for name in names or list(BASELINES):
        plan = BASELINES[name](problem)
        out[plan.policy] = (plan, simulate(problem, plan))
    return out
