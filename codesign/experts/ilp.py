"""The expert-switching ILP (OR-Tools CP-SAT): loads, evictions and prefetch timing.

Decisions, for every expert ``e`` and each of its uses ``v`` (previous use ``u``):

* ``keep[e, v]`` — ``e`` stays in the fast tier from the end of ``u`` to ``v``; otherwise it
  is dropped when ``u`` ends and re-loaded by an optional transfer ``[t, t + d_e)`` on the
  link that starts after ``u`` ends and finishes before ``v`` starts (a prefetch as early
  as the model likes: it only costs space). First uses of non-resident experts must load.
* ``keep_end[e]`` — ``e`` stays after its last use (seeds the next rolling window).

Timing: slot ``i`` starts at ``s[i] >= s[i-1] + c[i-1]``; loads never overlap on the link
(NoOverlap); with no DMA, loads and compute share one NoOverlap. Capacity: every span an
expert occupies (from transfer start, or from the end of its previous use when kept, to
the end of its use) is an interval of demand ``bytes(e)`` in one Cumulative of the
capacity. Objective: the makespan. Redundant cuts tighten the LP bound: the per-slot
capacity of kept spans, ``s[v] >= s[u] + c[u] + d_e (1 - keep)``, and a prefix link bound
(all loads for slots <= v fit on the link before ``s[v]``, and slots v.. run after), and
the combinatorial bounds of :mod:`.bounds`: the link has moved at least ``d_min x M(v)``
(Belady's minimum number of loads for slots <= v) before slot ``v``, every slot start is
at least its proven lower bound (Belady's, raised by the busy-link bound), and the makespan
at least :func:`.bounds.proven_bounds`'s. CP-SAT gets the time limit less the time spent
building the model and these bounds.
The reported bound is the larger of CP-SAT's and that combinatorial one.

The solution is turned into a :class:`Plan` (loads ordered by start time, released when
the previous use ends, drops after the last kept use) and replayed by the simulator,
which is never slower than the ILP's own timing; the warm start (``AddHint``) is the best
baseline's simulated schedule, so the ILP's total is never above that baseline's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ortools.sat.python import cp_model

from .bounds import _unit_capacity, belady_prefix_loads, proven_bounds
from .plan import Load, Plan
from .problem import Problem
from .simulate import SimResult, simulate

__all__ = ["IlpResult", "IlpOptions", "solve_window", "resident_after"]


@dataclass(frozen=True)
class IlpOptions:
    """Solver settings: wall-clock limit per window, workers, the gap at which to stop."""

    time_limit: float = 10.0
    workers: int = 2
    relative_gap: float = 0.001
    seed: int = 0
    log: bool = False  # CP-SAT's own search log on stdout
    # one worker and ``time_limit`` in CP-SAT's deterministic time (work units, about
    # seconds), nothing taken off for wall time spent: reruns give the same plan
    deterministic: bool = False


@dataclass(frozen=True)
class IlpResult:
    """One window's solve: the plan, its objective and bound (ns), status, seconds spent."""

    plan: Plan
    objective: int
    bound: int
    status: str
    seconds: float
    hint_total: int | None = None
    progress: tuple[tuple[float, int, int], ...] = field(default=())  # (seconds, objective, bound)

    @property
    def gap(self) -> float:
        return (self.objective - self.bound) / self.objective if self.objective else 0.0


class _Progress(cp_model.CpSolverSolutionCallback):
    def __init__(self, report: Callable[[float, int, int], None] | None) -> None:
        super().__init__()
        self.start = time.perf_counter()
        self.report = report
        self.points: list[tuple[float, int, int]] = []

    def on_solution_callback(self) -> None:
        point = (time.perf_counter() - self.start, int(self.ObjectiveValue()), int(self.BestObjectiveBound()))
        self.points.append(point)
        if self.report is not None:
            self.report(*point)


def solve_window(problem: Problem, hint: tuple[Plan, SimResult] | None = None, options: IlpOptions = IlpOptions(),
                 report: Callable[[float, int, int], None] | None = None) -> IlpResult:
    """Solve ``problem`` (one window) exactly up to the time limit; see the module doc.

    ``hint``: the warm start (a plan and its simulated result); default: the best baseline.
    ``seconds`` in the result: the whole call (model, bounds and search).
    """
    entered = time.perf_counter()
    if hint is None:  # warm start from the best baseline, releases made earliest
        from .baselines import BASELINES
        plans = [replace(f(problem), loads=tuple(Load(ld.expert, ld.slot, 0) for ld in f(problem).loads))
                 for f in BASELINES.values()]
        hint = min(((p, simulate(problem, p)) for p in plans), key=lambda pr: pr[1].total)
    n, comp, xfer, size = problem.num_slots, problem.compute, problem.transfer, problem.size
    horizon = hint[1].total if hint else sum(comp) + sum(xfer[e] for ids in problem.requests for e in ids)
    m = cp_model.CpModel()
    s = [m.NewIntVar(0, horizon, f"s{i}") for i in range(n)]
    makespan = m.NewIntVar(0, horizon, "makespan")
    for i in range(n - 1):
        m.Add(s[i + 1] >= s[i] + comp[i])
    if n:
        m.Add(makespan >= s[-1] + comp[-1])

    uses = problem.uses()
    initial = set(problem.initial)

    occupancy, demands, link = [], [], []
    keep: dict[tuple[int, int], cp_model.IntVar] = {}  # (e, v) -> kept since previous use
    load: dict[tuple[int, int], tuple[cp_model.IntVar, cp_model.IntVar]] = {}  # (e, v) -> (present, start)
    keep_end: dict[int, tuple[cp_model.IntVar, int]] = {}
    loads_by_slot: list[list[tuple[int, cp_model.IntVar]]] = [[] for _ in range(n)]
    kept_spans: list[tuple[int, int, int, cp_model.IntVar]] = []  # (e, u, v, keep) for slot cuts
    end_spans: dict[int, cp_model.IntVar] = {}
    occ_vars: dict[tuple[int, int], tuple[cp_model.IntVar, cp_model.IntVar]] = {}
    for e in sorted(set(uses) | initial):
        prev = -1
        for v in uses.get(e, []):
            u_end = 0 if prev < 0 else s[prev] + comp[prev]
            can_keep = prev >= 0 or e in initial
            k = m.NewBoolVar(f"keep_{e}_{v}") if can_keep else m.NewConstant(0)
            if can_keep:
                keep[e, v] = k
            present = k.Not() if can_keep else m.NewConstant(1)
            t = m.NewIntVar(0, horizon, f"t_{e}_{v}")
            load[e, v] = (present, t)
            link.append(m.NewOptionalFixedSizeIntervalVar(t, xfer[e], present, f"load_{e}_{v}"))
            m.Add(t + xfer[e] <= s[v]).OnlyEnforceIf(present)
            m.Add(t >= u_end).OnlyEnforceIf(present)
            m.Add(s[v] >= u_end + xfer[e] * (1 - k) if can_keep else s[v] >= u_end + xfer[e])
            loads_by_slot[v].append((xfer[e], present))
            o = m.NewIntVar(0, horizon, f"o_{e}_{v}")
            m.Add(o == t).OnlyEnforceIf(present)
            if can_keep:
                m.Add(o == u_end).OnlyEnforceIf(k)
                kept_spans.append((e, prev, v, k))
            span = m.NewIntVar(0, horizon, f"os_{e}_{v}")
            occ_vars[e, v] = (o, span)
            occupancy.append(m.NewIntervalVar(o, span, s[v] + comp[v], f"occ_{e}_{v}"))
            demands.append(size(e))
            prev = v
        k_end = m.NewBoolVar(f"keep_end_{e}")
        keep_end[e] = (k_end, prev)
        start = 0 if prev < 0 else s[prev] + comp[prev]
        span = m.NewIntVar(0, horizon, f"ke_{e}")
        end_spans[e] = span
        occupancy.append(m.NewOptionalIntervalVar(start, span, makespan, k_end, f"occ_end_{e}"))
        demands.append(size(e))
        if prev < 0:
            kept_spans.append((e, -1, n, k_end))
        else:
            kept_spans.append((e, prev, n, k_end))
    m.AddCumulative(occupancy, demands, problem.capacity)
    if problem.overlap:
        m.AddNoOverlap(link)
    else:
        m.AddNoOverlap(link + [m.NewFixedSizeIntervalVar(s[i], comp[i], f"c{i}") for i in range(n)])

    # cut: in every slot, its own experts plus the spans kept across it fit
    across: list[list[tuple[int, cp_model.IntVar]]] = [[] for _ in range(n)]
    for e, u, v, k in kept_spans:
        for i in range(u + 1, v):
            across[i].append((size(e), k))
    for i, ids in enumerate(problem.requests):
        room = problem.capacity - sum(size(e) for e in ids)
        if across[i] and sum(b for b, _ in across[i]) > room:
            m.Add(sum(b * k for b, k in across[i]) <= room)
    # cut: the link moves every load for slots <= v before slot v starts
    moved = m.NewConstant(0)
    moved_vars: list[tuple[int, cp_model.IntVar]] = []
    for v in range(n):
        if loads_by_slot[v]:
            total = m.NewIntVar(0, horizon, f"moved{v}")
            moved_vars.append((v, total))
            m.Add(total == moved + sum(d * p for d, p in loads_by_slot[v]))
            moved = total
            m.Add(s[v] >= moved + (0 if problem.overlap else sum(comp[:v])))
            m.Add(makespan >= moved + sum(comp[v:]))  # ... and then slots v.. still run
    # a closed-form bound: the compulsory first loads, then the compute still to come
    forced = [0] * n
    for e, vs in uses.items():
        if e not in initial:
            forced[vs[0]] += xfer[e]
    static_bound, moved_forced = sum(comp), 0
    for v in range(n):
        moved_forced += forced[v]
        static_bound = max(static_bound, moved_forced + sum(comp[v:]))
    # combinatorial cuts (bounds.py, proven): Belady's minimum loads per prefix, slot start bounds
    unit_cap, d_min = _unit_capacity(problem)
    min_loads = belady_prefix_loads(problem.requests, unit_cap, problem.initial) if n else []
    for v, var in moved_vars:
        if min_loads[v]:
            m.Add(var >= d_min * min_loads[v])
    proven = proven_bounds(problem)
    for v, lb in enumerate(proven.starts):
        if lb:
            m.Add(s[v] >= lb)
    static_bound = max(static_bound, proven.makespan)
    m.Add(makespan >= static_bound)
    # makespan first; among equal makespans keep more experts for the next window (1 ns each)
    m.Minimize(makespan - sum(k for k, _ in keep_end.values()))

    if hint is not None:
        _add_hint(m, problem, hint, s, makespan, keep, load, keep_end, occ_vars, end_spans)
        loaded_by = [0] * n
        for ld in hint[0].loads:
            loaded_by[ld.slot] += xfer[ld.expert]
        running, at = 0, 0
        for v, var in moved_vars:
            running += sum(loaded_by[at:v + 1])
            at = v + 1
            m.AddHint(var, running)

    solver = cp_model.CpSolver()
    if options.deterministic:
        solver.parameters.max_deterministic_time = options.time_limit
        solver.parameters.num_workers = 1
    else:
        solver.parameters.max_time_in_seconds = max(0.1, options.time_limit - (time.perf_counter() - entered))
        solver.parameters.num_workers = options.workers
    solver.parameters.relative_gap_limit = options.relative_gap
    solver.parameters.random_seed = options.seed
    solver.parameters.cp_model_presolve = False  # its fix-point loop crawls along the slot chain
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.log_search_progress = options.log
    callback = _Progress(report)
    status = solver.Solve(m, callback)
    seconds = time.perf_counter() - entered
    name = solver.StatusName(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if hint is None:
            raise RuntimeError(f"CP-SAT found no schedule ({name}) within {options.time_limit} s")
        bound = max(static_bound, int(solver.BestObjectiveBound())) if status != cp_model.MODEL_INVALID else 0
        return IlpResult(hint[0], hint[1].total, bound, name, seconds, hint[1].total, tuple(callback.points))

    starts = []
    for (e, v), (present, t) in load.items():
        if solver.Value(present):
            prev = _previous_use(uses.get(e, []), v)
            starts.append((solver.Value(t), v, e, prev + 1 if prev >= 0 else 0))
    loads = tuple(Load(e, v, r) for _, v, e, r in sorted(starts))
    drops = set()
    for e in sorted(set(uses) | initial):
        prev = -1
        for v in uses.get(e, []):
            if (e, v) in load and solver.Value(load[e, v][0]) and (prev >= 0 or e in initial):
                drops.add((e, prev))
            prev = v
        k_end, last = keep_end[e]
        if not solver.Value(k_end):
            drops.add((e, last))
    plan = Plan(loads, frozenset(drops), "ilp")
    return IlpResult(plan, solver.Value(makespan), max(static_bound, int(solver.BestObjectiveBound())), name, seconds,
                     hint[1].total if hint else None, tuple(callback.points))


def _previous_use(uses: list[int], v: int) -> int:
    k = uses.index(v)
    return uses[k - 1] if k else -1


def _add_hint(m: cp_model.CpModel, problem: Problem, hint: tuple[Plan, SimResult], s, makespan, keep, load,
              keep_end, occ_vars, end_spans) -> None:
    """Warm start: the hint plan's decisions and its simulated times, for every variable."""
    plan, result = hint
    for i, var in enumerate(s):
        m.AddHint(var, result.slot_start[i])
    m.AddHint(makespan, result.total)
    started = {(ld.expert, ld.slot): result.load_start[k] for k, ld in enumerate(plan.loads)}
    for (e, v), k in keep.items():
        m.AddHint(k, 0 if (e, v) in started else 1)
    end = {i: result.slot_start[i] + problem.compute[i] for i in range(problem.num_slots)}
    for (e, v), (present, t) in load.items():
        m.AddHint(t, started.get((e, v), 0))
        o, span = occ_vars[e, v]
        prev = _previous_use([w for w, (x, _) in [(v, (e, 0))]] and sorted(w for (x, w) in occ_vars if x == e), v)
        begin = started[e, v] if (e, v) in started else (end[prev] if prev >= 0 else 0)
        m.AddHint(o, begin)
        m.AddHint(span, end[v] - begin)
    dropped = plan.drops
    for e, (k_end, last) in keep_end.items():
        m.AddHint(k_end, 0 if (e, last) in dropped else 1)
        m.AddHint(end_spans[e], result.total - (end[last] if last >= 0 else 0))


def resident_after(problem: Problem, plan: Plan) -> set[int]:
    """Experts in the fast tier when the plan's last slot ends."""
    resident = set(problem.initial) - {e for e, u in plan.drops if u == -1}
    drops_at: dict[int, set[int]] = {}
    for e, u in plan.drops:
        drops_at.setdefault(u, set()).add(e)
    for v in range(problem.num_slots):
        resident |= {ld.expert for ld in plan.loads if ld.slot == v}
        resident -= drops_at.get(v, set())
    return resident
