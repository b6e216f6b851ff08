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

**Busy link (one frame less while a transfer runs).** Belady's count lets every load
start as early as the link is free; but a transfer reserves its frame from its start, so
while one is in flight at most ``C - 1`` experts are resident. With DMA, call slot ``u``
*idle* when no transfer is in flight at any instant of its compute (the link idles for
all ``c[u]`` of it). Every other slot has an instant at which its own experts and every
expert kept across it are resident beside an in-flight transfer: at most ``C - 1`` of them.
So the resident sets at those instants form a paging schedule whose cache holds ``C - 1``
experts at busy slots and ``C`` at idle ones; it loads an expert only where the real
schedule does, so the real one makes at least as many loads. Time before slot ``v`` is
link-busy or link-idle, and every load for the uses of slots ``<= v`` ends before it:
``s[v] >= d_min x those loads + sum of c[u] over idle u < v``.
Minimising the right-hand side over every choice of idle slots and kept inter-use spans
is a min-cost flow on the slot line (a maximum-weight set of intervals with at most
``C - |R_u|`` of them over slot ``u``: a kept span saves ``d_min``, and one unit interval
on slot ``u`` saves ``c[u]`` by keeping ``u`` busy), solved exactly by OR-Tools.
:func:`busy_link_start` gives that bound on ``s[v]``; :func:`proven_bounds` adds the compute
from ``v`` on, for ``v`` at the last slot and a search of other probes (any probe is a
valid bound; more probes only raise it). Where the link is the bottleneck this is what the
Belady count misses: a prefetch needs a frame that a finished use has freed.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from ortools.graph.python import min_cost_flow

from .problem import Problem

__all__ = ["ProvenBounds", "belady_prefix_loads", "busy_link_start", "lower_bound", "proven_bounds",
           "slot_lower_bounds"]


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


def busy_link_start(problem: Problem, v: int) -> int:
    """A proven lower bound on the start of slot ``v`` (ns): the busy-link bound (module doc).

    0 without DMA (compute and link already exclude each other: every slot is idle).
    """
    capacity, d = _unit_capacity(problem)
    if not problem.overlap or v <= 0 or not capacity:
        return 0
    requests, comp = problem.requests[:v + 1], problem.compute
    initial = set(problem.initial)
    forced = 0  # first uses of experts not resident at the start
    tails: list[int] = []
    heads: list[int] = []
    for e, slots in problem.window(0, v + 1, problem.initial).uses().items():
        forced += e not in initial
        previous = [-1] + slots if e in initial else slots
        for u, w in zip(previous, previous[1:]):
            if u + 1 < w:  # a span over slots u+1 .. w-1: keep it or load again (none between consecutive uses)
                tails.append(u + 1)
                heads.append(w)
    # nodes 0..v: node i is the start of slot i; capacity-many units flow from 0 to v, and a
    # unit not on the line arc of slot u is one interval over u
    scale = math.gcd(d, *comp[:v]) or 1
    supply = np.zeros(v + 1, dtype=np.int64)
    supply[0], supply[v] = capacity, -capacity
    tail_nodes, head_nodes, capacities, costs = [], [], [], []
    for u in range(v):
        own = len(requests[u])
        supply[u] -= own  # at least |R_u| units stay on the line: at most C - |R_u| intervals
        supply[u + 1] += own
        busy = min(1, capacity - own)  # one more unit on the line: slot u busy, saves c[u]
        tail_nodes += [u, u]
        head_nodes += [u + 1, u + 1]
        capacities += [busy, capacity - own - busy]
        costs += [-(comp[u] // scale), 0]
    tail_nodes += tails
    head_nodes += heads
    capacities += [1] * len(tails)
    costs += [-(d // scale)] * len(tails)
    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(np.array(tail_nodes, dtype=np.int64), np.array(head_nodes, dtype=np.int64),
                                              np.array(capacities, dtype=np.int64), np.array(costs, dtype=np.int64))
    flow.set_nodes_supplies(np.arange(v + 1, dtype=np.int64), supply)
    if flow.solve() != flow.OPTIMAL:  # cannot happen: every unit may stay on the line
        raise RuntimeError("busy-link bound: min-cost flow found no optimum")
    flows = flow.flows(np.arange(len(tail_nodes), dtype=np.int64))
    kept = int(flows[2 * v:].sum())
    idle = sum(comp[u] for u in range(v) if not flows[2 * u])
    return d * (forced + len(tails) - kept) + idle


@dataclass(frozen=True)
class ProvenBounds:
    """Proven lower bounds (ns) on the makespan and on every slot's start."""

    makespan: int
    starts: tuple[int, ...]


def proven_bounds(problem: Problem, segments: int = 0, probes: int = 16) -> ProvenBounds:
    """The bounds of the module doc: ``makespan >= max_v start[v] + compute from v on``.

    ``start`` is the Belady bound of :func:`slot_lower_bounds`, raised at up to ``probes``
    slots (0: off) by the busy-link bound of :func:`busy_link_start`.
    """
    n, comp = problem.num_slots, problem.compute
    if not n:
        return ProvenBounds(0, ())
    starts = slot_lower_bounds(problem, segments)
    after = [0] * (n + 1)  # compute from v on
    for v in range(n - 1, -1, -1):
        after[v] = after[v + 1] + comp[v]
    if probes and problem.overlap:
        for v, bound in _probe_busy_link(problem, after, probes).items():
            starts[v] = max(starts[v], bound - after[v])
        for v in range(1, n):  # keep the chain consistent
            starts[v] = max(starts[v], starts[v - 1] + comp[v - 1])
    return ProvenBounds(max(starts[v] + after[v] for v in range(n)), tuple(starts))


def lower_bound(problem: Problem, segments: int = 0, probes: int = 16) -> int:
    """A proven lower bound on the makespan (ns); see :func:`proven_bounds`."""
    return proven_bounds(problem, segments, probes).makespan


def _probe_busy_link(problem: Problem, after: list[int], probes: int) -> dict[int, int]:
    """``v -> busy_link_start(v) + compute from v on`` at up to ``probes`` slots: the last
    slot, an even grid, then halving steps around the best so far."""
    n, seen = problem.num_slots, {}

    def probe(v: int) -> None:
        if 0 < v < n and v not in seen and len(seen) < probes:
            seen[v] = busy_link_start(problem, v) + after[v]  # a bound on the makespan

    probe(n - 1)
    grid = max(1, probes // 3)
    for k in range(1, grid):
        probe(k * n // grid)
    step = max(1, n // (2 * grid))
    while len(seen) < probes and seen:
        best = max(seen, key=lambda v: (seen[v], v))
        before = len(seen)
        probe(best - step)
        probe(best + step)
        if step == 1 and len(seen) == before:
            break
        step = max(1, step // 2)
    return seen
