"""Combinatorial lower bounds on a window's total time (proven; used as CP-SAT cuts and for the gap).

**Minimum number of loads (Belady).** Relax the problem: (a) every expert has the size of
the smallest one, so at most ``C = capacity // min size`` experts fit at once (any feasible
set of real sizes also fits: ``count x min size <= sum of sizes <= capacity``); (b) a
slot's experts are requested one after another instead of at once (a schedule that holds
a slot's experts together also serves them one by one); (c) time is ignored. What remains
is classical paging with ``C`` pages, starting with ``initial`` resident, and its minimum
number of fetches over *every* algorithm, prefetching ones included, is the number of
misses of Belady's MIN (evict the page whose next request is farthest; a prefetch can
always be delayed to the request without more fetches). Every load the real schedule
makes is a fetch of the relaxation, so it makes at least as many loads. Belady's run on
the whole sequence is also a MIN run on each prefix (a page not requested again within the
prefix has a next request beyond it, so the farthest page is one of those whenever one is
cached), so one pass gives ``M(v)``: the minimum loads for the uses of slots ``0..v``.

**Makespan.** Every load for a use in slots ``<= v`` ends before slot ``v`` starts, loads
never overlap on the link and each takes ``>= d_min`` (the shortest transfer), so
``s[v] >= d_min * M(v)`` (without DMA, the link and compute exclude each other:
``s[v] >= d_min * M(v) + compute before v``). Slots ``v..`` still run after ``s[v]``:
``makespan >= s[v] + compute from v on``. With ``v`` ranging over the slots, and the plain
``makespan >= total compute``, this is :func:`lower_bound`.

**Segments.** For ``w < v``: at the end of slot ``w`` at most ``C`` experts are resident or in
flight; the uses of slots ``w+1..v`` then need at least ``MIN_empty(w+1..v) - C`` further
loads (from an empty cache MIN pays at most ``C`` more than from any initial set of ``C``:
load the initial pages lazily on first request), all started after slot ``w`` ends and
finished before ``s[v]``. So ``s[v] >= s[w] + c[w] + d_min * (MIN_empty(w+1..v) - C)``;
:func:`lower_bound` applies it for ``w`` on a grid (``segments``) of window starts.
"""

from __future__ import annotations

import heapq
import math
from typing import Iterable, Sequence

from .problem import Problem

__all__ = ["belady_prefix_loads", "lower_bound", "slot_lower_bounds"]


def _unit_capacity(problem: Problem) -> tuple[int, int]:
    """(C, d_min): how many experts of the smallest size fit, and the shortest transfer."""
    present = {e for ids in problem.requests for e in ids} | set(problem.initial)
    if not present:
        return 0, 0
    smallest = min(problem.size(e) for e in present)
    return problem.capacity // smallest, min(problem.transfer[e] for e in present)


def belady_prefix_loads(requests: Sequence[Sequence[int]], capacity: int, initial: Iterable[int] = ()) -> list[int]:
    """``M[v]``: Belady's MIN fetch count for the uses of slots ``0..v`` (see the module doc).

    ``capacity`` counts experts (unit sizes). Slot order, and within a slot the order given.
    """
    seq = [(v, e) for v, ids in enumerate(requests) for e in ids]
    nxt = [math.inf] * len(seq)
    last: dict[int, int] = {}
    for k in range(len(seq) - 1, -1, -1):
        e = seq[k][1]
        nxt[k] = last.get(e, math.inf)
        last[e] = k
    cache: dict[int, float] = {}  # expert -> position of its next request
    heap: list[tuple[float, int]] = []  # (-next request, expert), lazy
    for e in initial:
        if len(cache) < capacity:
            cache[e] = last.get(e, math.inf)
            heapq.heappush(heap, (-cache[e], e))
    out, misses, k = [], 0, 0
    for v, ids in enumerate(requests):
        for _ in ids:
            e = seq[k][1]
            if e not in cache:
                misses += 1
                if len(cache) >= capacity:
                    while True:
                        key, x = heapq.heappop(heap)
                        if x in cache and cache[x] == -key:
                            del cache[x]
                            break
            cache[e] = nxt[k]
            heapq.heappush(heap, (-nxt[k], e))
            k += 1
        out.append(misses)
    return out


def slot_lower_bounds(problem: Problem, segments: int = 0) -> list[int]:
    """A proven lower bound on the start time of every slot (ns); see the module doc.

    ``segments``: also apply the segment bound from every ``segments``-th slot (0: off).
    """
    n, comp = problem.num_slots, problem.compute
    capacity, d = _unit_capacity(problem)
    if not n:
        return []
    m = belady_prefix_loads(problem.requests, capacity, problem.initial)
    before = [0] * (n + 1)
    for i in range(n):
        before[i + 1] = before[i] + comp[i]
    lb = [0] * n
    for v in range(n):
        link = d * m[v]
        lb[v] = max(lb[v - 1] + comp[v - 1] if v else 0, link + (0 if problem.overlap else before[v]))
    if segments and problem.overlap:
        for w in range(0, n - 1, segments):
            seg = belady_prefix_loads(problem.requests[w + 1:], capacity, ())
            base = lb[w] + comp[w]
            for j, v in enumerate(range(w + 1, n)):
                extra = seg[j] - capacity
                if extra > 0:
                    lb[v] = max(lb[v], base + d * extra)
            for v in range(w + 1, n):  # keep the chain consistent
                lb[v] = max(lb[v], lb[v - 1] + comp[v - 1])
    return lb


def lower_bound(problem: Problem, segments: int = 0) -> int:
    """A proven lower bound on the makespan (ns): ``max_v lb_start[v] + compute from v on``."""
    n, comp = problem.num_slots, problem.compute
    if not n:
        return 0
    lb = slot_lower_bounds(problem, segments)
    best, tail = 0, 0
    for v in range(n - 1, -1, -1):
        tail += comp[v]
        best = max(best, lb[v] + tail)
    return best

