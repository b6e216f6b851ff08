"""Time-driven prefetching: one event loop, two ways to pick victims.

Cao, Felten, Karlin and Li (SIGMETRICS 1995) showed that when fetches are slow the order
and timing of prefetches matter as much as what is evicted. Their *aggressive* policy
keeps the link busy: whenever it is free, fetch the next missing expert in request order,
evicting experts whose next use comes after it, farthest first. Deciding in time, not
slot by slot, is the point: a victim must have finished its use at the instant the fetch
starts, so the loop simulates compute and link together (:class:`PrefetchWalk`).

Aggressive makes more loads than Belady's MIN (a few percent on link-bound traces, far
more when locality is high and it prefetches far ahead): it evicts early, and the expert MIN would evict at the target's slot is often one still in use.
:func:`min_preserving` keeps the timing but, where its victim is not MIN's, compares the
two futures — evict the free candidate now, or wait until MIN's victim is free — by MIN's
load count from each (:func:`.belady.extra_misses`) and waits when the load saved is
worth more link time than the wait. Used as a warm start for the ILP (:mod:`.schedule`);
every plan is scored by the one simulator.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

from .belady import UseSequence, extra_misses
from .plan import Load, Plan
from .problem import Problem, next_use

__all__ = ["PrefetchWalk", "ChooseVictims", "furthest_first", "min_preserving", "aggressive_min"]

# choose(walk, target slot, target expert, time, free candidates farthest-first) -> victims, or None to wait
ChooseVictims = Callable[["PrefetchWalk", int, int, int, list[int]], "list[int] | None"]


class PrefetchWalk:
    """Compute and link advanced together; the victim choice is a parameter.

    Events: the link becomes free, or slot ``i`` can start. At a link-free instant the
    target is the first use, in request order, whose expert is neither resident nor in
    flight; the free candidates are resident experts whose last use has ended and whose
    next use comes after the target's slot. A slot starts when its experts have arrived
    and the link has nothing it may fetch before then.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.uses = problem.uses()
        self.before = [0] * (problem.num_slots + 1)  # compute before each slot
        for v, c in enumerate(problem.compute):
            self.before[v + 1] = self.before[v] + c
        self.resident = set(problem.initial)
        self.used = sum(problem.size(e) for e in self.resident)
        self.arrive = {e: 0 for e in self.resident}
        self.last_use = {e: -1 for e in self.resident}
        self.i = 0  # next slot to start; slots before it have started
        self.slot_end = 0  # when slot i - 1 ends
        self.link = 0  # when the link is free
        self.loads: list[Load] = []
        self.drops: set[tuple[int, int]] = set()

    def next_use(self, e: int, v: int) -> float:
        """The first use of ``e`` after slot ``v`` (inf: none)."""
        return next_use(self.uses, e, v)

    def free_at(self, e: int, before_slot: int) -> int:
        """When ``e``'s last use before ``before_slot`` ends, compute running without stalls."""
        us = self.uses.get(e, [])
        k = bisect.bisect_left(us, before_slot)
        u = us[k - 1] if k else -1
        if u < self.i:
            return self.slot_end if u == self.i - 1 else 0
        return self.slot_end + self.before[u + 1] - self.before[self.i]

    def _issue(self, target: tuple[int, int], t: int, choose: ChooseVictims) -> bool:
        p, (v, e) = self.problem, target
        need = self.used + p.size(e) - p.capacity
        victims: list[int] = []
        if need > 0:
            finished = self.i if t >= self.slot_end else self.i - 1  # slots before it have ended
            candidates = sorted((x for x in self.resident
                                 if self.last_use[x] < finished and self.next_use(x, self.i - 1) > v),
                                key=lambda x: (-self.next_use(x, self.i - 1), x))
            chosen = choose(self, v, e, t, candidates)
            if chosen is None or sum(p.size(x) for x in chosen) < need:
                return False
            victims = chosen
        for x in victims:
            self.resident.discard(x)
            self.used -= p.size(x)
            self.drops.add((x, self.last_use[x]))
        release = self.i if t >= self.slot_end else max(0, self.i - 1)
        self.loads.append(Load(e, v, min(release, v)))
        self.resident.add(e)
        self.used += p.size(e)
        self.last_use.setdefault(e, -1)
        self.arrive[e] = self.link = t + p.transfer[e]
        return True

    def run(self, choose: ChooseVictims, policy: str) -> Plan:
        p = self.problem
        order = [(v, e) for v, ids in enumerate(p.requests) for e in ids]
        k = 0
        while self.i < p.num_slots:
            i = self.i
            while k < len(order) and order[k][1] in self.resident:
                k += 1
            ready = all(x in self.resident for x in p.requests[i])
            start = max([self.slot_end] + [self.arrive[x] for x in p.requests[i]]) if ready else math.inf
            if k < len(order) and self.link <= start:
                link, end = self.link, self.slot_end
                if self._issue(order[k], link, choose) or (link < end <= start and self._issue(order[k], end, choose)):
                    continue
                if not ready:  # the slot's own expert: space frees when the previous slot ends
                    if not self._issue(order[k], max(link, end), furthest_first):
                        raise RuntimeError(f"{policy}: slot {p.label(i)} cannot fit its experts")
                    continue
            for x in p.requests[i]:
                self.last_use[x] = i
            self.slot_end = start + p.compute[i]
            self.link = max(self.link, start)  # nothing could be fetched before this slot started
            self.i += 1
        return Plan(tuple(self.loads), frozenset(self.drops), policy)


def furthest_first(walk: PrefetchWalk, v: int, e: int, t: int, candidates: list[int]) -> list[int]:
    """Cao et al.'s choice: the free candidates whose next use is farthest, until ``e`` fits."""
    p = walk.problem
    need, out = walk.used + p.size(e) - p.capacity, []
    for x in candidates:
        if need <= 0:
            break
        out.append(x)
        need -= p.size(x)
    return out


def min_preserving(seq: UseSequence) -> ChooseVictims:
    """Victims that keep MIN's load count where waiting is cheaper (see the module doc).

    Where the farthest free candidate ``x`` is not MIN's victim ``y`` at the target's slot
    (``y`` is still to be used before it), the two futures — evict ``x`` now, or wait for
    ``y``'s use to end and evict ``y`` — differ in one expert, and :func:`.belady.extra_misses`
    tells how many more loads MIN makes from the first. Wait when that load costs more link
    time than the wait. (Waiting also delays every later transfer on the link, so a wait
    is never taken as free, not even for a prefetch far ahead; that keeps time first and
    bytes second: at high locality this still moves far more than MIN.)
    """
    def choose(walk: PrefetchWalk, v: int, e: int, t: int, candidates: list[int]) -> list[int] | None:
        p = walk.problem
        greedy = furthest_first(walk, v, e, t, candidates)
        if len(greedy) != 1 or len({p.size(x) for x in walk.resident | {e}}) != 1:
            return greedy  # the comparison assumes one victim of one size
        x, wanted = greedy[0], set(p.requests[v]) | {e}
        y = max((z for z in walk.resident if z not in wanted), key=lambda z: (walk.next_use(z, v), z), default=None)
        if y is None or walk.next_use(x, walk.i - 1) >= walk.next_use(y, v):
            return greedy  # the farthest free candidate is as good as MIN's victim
        wait, d = max(0, walk.free_at(y, v) - t), p.transfer[e]
        if wait >= d:
            return greedy
        uses = walk.uses.get(y, [])
        k = bisect.bisect_left(uses, v)
        after = max(walk.i, uses[k - 1] + 1 if k else 0)  # both futures agree until y's last use before v
        common = (walk.resident - {x, y}) | {e}
        extra = extra_misses(seq, seq.slot_start[after], common, y, x)  # evict x now, minus wait for y
        return None if extra * d > wait else greedy
    return choose


def aggressive_min(problem: Problem) -> Plan:
    """Aggressive timing with MIN-preserving victims (codesign's warm-start heuristic)."""
    return PrefetchWalk(problem).run(min_preserving(UseSequence(problem.requests)), "aggressive-min")
