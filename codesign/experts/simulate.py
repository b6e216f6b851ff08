"""The discrete-event simulator: replays a :class:`Plan` and measures it.

Two resources: the compute engine runs slots in order; the link runs loads in the plan's
order. Each event happens as early as its predecessors allow (as-soon-as-possible replay):

* slot ``i`` starts when slot ``i-1`` has ended and every load for slot ``i`` has ended;
* a load starts when the link is free, its release slot has arrived, its expert's previous
  drop has happened, and the fast tier has room for it (space is reserved from the start
  of the transfer; a drop frees space when the slot it follows ends);
* without DMA (``problem.overlap`` false) compute and transfers also exclude each other.

Because every rule is "start at the max of earlier events", the replay is the earliest
timing of the plan's decisions; any schedule that obeys them (the ILP's included) is no
faster. Times are integer nanoseconds.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .plan import Plan, PlanError, check_plan
from .problem import NS, Problem

__all__ = ["SimResult", "simulate", "chrome_trace", "write_chrome_trace"]


@dataclass(frozen=True)
class SimResult:
    """What a plan costs. Times in ns; ``*_s`` properties give seconds."""

    policy: str
    total: int
    compute: int
    slot_start: tuple[int, ...]
    load_start: tuple[int, ...]
    load_end: tuple[int, ...]
    bytes_moved: int
    uses: int
    hits: int
    peak_bytes: int
    capacity: int
    residency: tuple[tuple[int, int, int], ...]  # (expert, from, to) spans in the fast tier

    @property
    def stall(self) -> int:
        return self.total - self.compute

    @property
    def hit_rate(self) -> float:
        return self.hits / self.uses if self.uses else 1.0

    @property
    def total_s(self) -> float:
        return self.total / NS

    @property
    def stall_s(self) -> float:
        return self.stall / NS

    def summary(self) -> dict:
        return {"policy": self.policy, "total_s": self.total_s, "compute_s": self.compute / NS,
                "stall_s": self.stall_s, "bytes_moved": self.bytes_moved, "loads": len(self.load_start),
                "hit_rate": self.hit_rate, "peak_bytes": self.peak_bytes, "capacity": self.capacity}


def simulate(problem: Problem, plan: Plan) -> SimResult:
    """Replay ``plan`` on ``problem``; raises :class:`PlanError` if it is invalid or deadlocks."""
    after = check_plan(problem, plan)
    n, loads = problem.num_slots, plan.loads
    comp, xfer, cap = problem.compute, problem.transfer, problem.capacity
    loads_of: list[list[int]] = [[] for _ in range(n)]
    for k, ld in enumerate(loads):
        loads_of[ld.slot].append(k)
    drops_at: dict[int, list[int]] = {}
    for e, u in sorted(plan.drops):
        drops_at.setdefault(u, []).append(e)

    slot_start = [0] * n
    lstart, lend = [0] * len(loads), [0] * len(loads)
    since = {e: 0 for e in problem.initial}  # expert -> time it started occupying
    spans: list[tuple[int, int, int]] = []
    occupied = sum(problem.size(e) for e in problem.initial)
    for e in drops_at.get(-1, ()):
        occupied -= problem.size(e)
        spans.append((e, 0, 0))
        del since[e]
    pending: deque[tuple[int, int, int]] = deque()  # (time, bytes, expert) drops not yet applied
    peak = occupied
    i = j = 0
    link_free = prev_end = 0

    def arrival(r: int) -> int:
        return 0 if r == 0 else slot_start[r - 1] + comp[r - 1]

    def apply_drops(until: int) -> None:
        nonlocal occupied
        while pending and pending[0][0] <= until:
            t, b, e = pending.popleft()
            occupied -= b
            spans.append((e, since.pop(e), t))

    while i < n or j < len(loads):
        s_time = None
        if i < n and all(k < j for k in loads_of[i]):
            s_time = max([prev_end] + [lend[k] for k in loads_of[i]])
            if not problem.overlap:
                s_time = max(s_time, link_free)
        l_time = None
        if j < len(loads) and i >= loads[j].release and i > after[j]:
            ld = loads[j]
            base = max(link_free, arrival(ld.release), arrival(after[j] + 1) if after[j] >= 0 else 0)
            if not problem.overlap:
                base = max(base, prev_end)
            need = occupied + problem.size(ld.expert) - cap
            if need <= 0:
                l_time = base
            else:
                for t, b, _ in pending:
                    need -= b
                    if need <= 0:
                        l_time = max(base, t)
                        break
        if s_time is None and l_time is None:
            what = f"load {j} (expert {loads[j].expert} for slot {problem.label(loads[j].slot)})" if j < len(loads) else "-"
            raise PlanError(f"the plan deadlocks at slot {problem.label(i) if i < n else '-'}, {what}: "
                            "a load waits for space or a release that only later slots provide")
        if l_time is not None and (s_time is None or l_time < s_time):
            apply_drops(l_time)
            e = loads[j].expert
            occupied += problem.size(e)
            peak = max(peak, occupied)
            since[e] = l_time
            lstart[j], lend[j] = l_time, l_time + xfer[e]
            link_free = lend[j]
            j += 1
        else:
            slot_start[i] = s_time
            prev_end = s_time + comp[i]
            for e in drops_at.get(i, ()):
                pending.append((prev_end, problem.size(e), e))
            i += 1
    total = max([prev_end] + lend)
    apply_drops(total)
    spans.extend((e, t, total) for e, t in since.items())
    loaded = {(ld.expert, ld.slot) for ld in loads}
    uses = sum(len(ids) for ids in problem.requests)
    hits = uses - len(loaded)
    return SimResult(plan.policy, total, sum(comp), tuple(slot_start), tuple(lstart), tuple(lend),
                     sum(problem.size(ld.expert) for ld in loads), uses, hits, peak, cap, tuple(sorted(spans)))


def chrome_trace(problem: Problem, plan: Plan, result: SimResult) -> dict:
    """The timeline as Chrome / Perfetto trace JSON (open in ui.perfetto.dev)."""
    us = 1e-3  # trace timestamps are microseconds
    events: list[dict] = [
        {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "compute"}},
        {"ph": "M", "pid": 1, "tid": 2, "name": "thread_name", "args": {"name": "link (slow -> fast tier)"}},
        {"ph": "M", "pid": 1, "tid": 3, "name": "thread_name", "args": {"name": "stall"}},
    ]
    prev_end = 0
    for i, start in enumerate(result.slot_start):
        if start > prev_end:
            events.append({"ph": "X", "pid": 1, "tid": 3, "name": "stall", "ts": prev_end * us,
                           "dur": (start - prev_end) * us})
        names = [problem.experts[e].name for e in problem.requests[i]]
        events.append({"ph": "X", "pid": 1, "tid": 1, "name": f"slot {problem.label(i)}", "ts": start * us,
                       "dur": problem.compute[i] * us, "args": {"experts": names}})
        prev_end = start + problem.compute[i]
    for ld, s, e in zip(plan.loads, result.load_start, result.load_end):
        events.append({"ph": "X", "pid": 1, "tid": 2, "name": f"load {problem.experts[ld.expert].name}",
                       "ts": s * us, "dur": (e - s) * us,
                       "args": {"for_slot": problem.label(ld.slot), "bytes": problem.size(ld.expert)}})
    deltas: dict[int, int] = {}
    for e, a, b in result.residency:
        deltas[a] = deltas.get(a, 0) + problem.size(e)
        deltas[b] = deltas.get(b, 0) - problem.size(e)
    level = 0
    for t in sorted(deltas):
        level += deltas[t]
        events.append({"ph": "C", "pid": 1, "name": "fast tier bytes", "ts": t * us, "args": {"bytes": level}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"policy": plan.policy, **result.summary()}}


def write_chrome_trace(path: str | Path, problem: Problem, plan: Plan, result: SimResult) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chrome_trace(problem, plan, result)))
    return path
