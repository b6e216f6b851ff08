"""Placement as a CP-SAT model, warm-started from the greedy plan.

Variables: ``x[v, t]`` — chunks of tensor ``v`` resting in tier ``t`` (``Σ_t x[v, t] =
K_v``, ``K_v = split`` for weights and experts, 1 otherwise; a Boolean when ``K_v = 1``);
``T_k`` — the time of step ``k`` in integer units of ``τ`` seconds.

* capacity, at every program point ``p`` and tier ``u``:
  ``Σ_{v,t} occ(v, t, u, p) · x[v, t] ≤ K · cap_u`` — only at points where an interval
  starts (occupancy is piecewise constant), with the always-live part (weights) summed once;
* roofline, for every step ``k`` and tier ``u``: ``K · rate_u · (T_k − fixed_k) ≥
  K · base_{k,u} + Σ_{v,t} load(v, t, k, u) · x[v, t]``, ``rate_u = bandwidth_u · τ``
  (bytes per time unit, ≥ 10⁴ by the choice of τ); and ``T_k ≥ fixed_k + compute_k``;
* objective: ``min Σ_k T_k`` — the predicted time of one run.

Occupancy and loads come from :func:`contribution`, so the model and :func:`evaluate` agree
up to rounding (rates to 10⁻⁴, each step's time up to one unit τ); reported times are always re-evaluated exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from codesign.placement.problem import Problem, contribution, evaluate

RATE = 1e4  # the slowest tier moves this many bytes per time unit: rates exact to 1e-4

STATUS_NAMES = {"OPTIMAL": "optimal", "FEASIBLE": "feasible", "INFEASIBLE": "infeasible",
                "MODEL_INVALID": "invalid", "UNKNOWN": "unknown"}
"""CP-SAT's status names as this module reports them (the solver is imported when a solve
runs: OR-Tools, and the pandas it loads, cost a second of start-up to commands that never solve)."""


@dataclass(frozen=True)
class Solved:
    assignment: dict[str, dict[str, int]] | None
    status: str
    objective: float | None  # seconds (model units)
    bound: float  # seconds, a lower bound on the model's optimum
    gap: float | None  # (objective - bound) / objective
    seconds: float
    solutions: int


def _watch(on_solution: Callable[[float, float, float], None] | None, tau: float):
    """A solution callback counting solutions and reporting each (objective, bound, wall time)."""
    from ortools.sat.python import cp_model

    class Watch(cp_model.CpSolverSolutionCallback):
        def __init__(self):
            super().__init__()
            self.count = 0

        def on_solution_callback(self) -> None:
            self.count += 1
            if on_solution is not None:
                on_solution(self.ObjectiveValue() * tau, self.BestObjectiveBound() * tau, self.WallTime())
    return Watch()


def solve(problem: Problem, hint: Mapping[str, Mapping[str, int]] | None = None, *,
          time_limit: float = 20.0, workers: int = 2, deterministic: bool = False,
          on_solution: Callable[[float, float, float], None] | None = None,
          tie: Mapping[str, str] | None = None, gap: float = 0.0) -> Solved:
    """Solve the placement ILP; `hint` (an assignment, usually the greedy one) warm-starts it.

    `gap`: stop once the best plan is proven within this fraction of the optimum (CP-SAT's
    relative gap limit; the status then reads "within gap", not "optimal").

    `deterministic`: one worker and a deterministic-time limit, so reruns give the same plan.
    `tie`: tensor -> tensor whose tiers it takes (`x[copy, t] == x[template, t]`; equal tiers).
    """
    started = time.perf_counter()
    n = len(problem.steps)
    from ortools.sat.python import cp_model
    m = cp_model.CpModel()
    tau = RATE / min(t.bandwidth for t in problem.tiers)  # seconds per time unit
    rate = {t.name: max(1, round(t.bandwidth * tau)) for t in problem.tiers}
    K = problem.split
    x: dict[tuple[str, str], cp_model.IntVar] = {}
    ub: dict[int, int] = {}  # id(var) -> upper bound
    scale: dict[str, int] = {}  # chunks of a tensor in units of 1/K
    for v in problem.tensors:
        kv = problem.chunks(v)
        scale[v.name] = K // kv if K % kv == 0 else 0
        if scale[v.name] == 0:
            raise ValueError(f"split {K} is not a multiple of tensor {v.name}'s chunks {kv}")
        vars_ = []
        for t in v.tiers:
            var = m.NewBoolVar(f"x[{v.name},{t}]") if kv == 1 else m.NewIntVar(0, kv, f"x[{v.name},{t}]")
            x[v.name, t] = var
            ub[id(var)] = kv
            vars_.append(var)
        m.Add(sum(vars_) == kv)
    tiers_of = {v.name: v.tiers for v in problem.tensors}
    for copy, template in (tie or {}).items():  # a repeated layer's tensor rests where its template's does
        for t in tiers_of[copy]:
            m.Add(x[copy, t] == x[template, t])
    # gather contributions, in units of 1/K of a tensor
    always: dict[str, list] = {t: [] for t in problem.tier_names}
    intervals: dict[str, list] = {t: [] for t in problem.tier_names}
    loads: list[dict[str, list]] = [dict() for _ in range(n)]
    for v in problem.tensors:
        for t in v.tiers:
            c = contribution(problem, v, t)
            var, s = x[v.name, t], scale[v.name]
            for u, a, b, size in c.occupancy:
                (always[u] if (a, b) == (0, n - 1) else intervals[u]).append((a, b, size * s, var))
            for k, u, size in c.loads:
                loads[k].setdefault(u, []).append((math.ceil(size * s), var))
    for tier in problem.tiers:
        u = tier.name
        base = [(coef, var) for _, _, coef, var in always[u]]
        points = sorted({a for a, _, _, _ in intervals[u]}) or ([0] if base else [])
        for p in points:
            terms = base + [(coef, var) for a, b, coef, var in intervals[u] if a <= p <= b]
            if terms and sum(c * ub[id(var)] for c, var in terms) > K * tier.capacity:
                m.Add(sum(c * var for c, var in terms) <= K * tier.capacity)
    T = []
    hint_assign = hint
    for k, step in enumerate(problem.steps):
        if step.free and not loads[k]:
            T.append(0)
            continue
        fixed = 0 if step.free else math.ceil((step.launch + step.comm) / tau)
        floor = math.ceil(step.compute / tau)
        for u, b in step.base.items():
            if b:
                floor = max(floor, math.ceil(b / rate[u]))
        var_terms = loads[k]
        hi = floor
        for u, terms in var_terms.items():
            top = K * step.base.get(u, 0) + sum(c * ub[id(var)] for c, var in terms)
            hi = max(hi, math.ceil(top / (K * rate[u])))
        tk = m.NewIntVar(fixed + floor, fixed + hi, f"T[{k}]")
        for u, terms in var_terms.items():
            m.Add(K * rate[u] * (tk - fixed) >= math.ceil(K * step.base.get(u, 0)) + sum(c * var for c, var in terms))
        T.append(tk)
    # Lexicographic: time first; among equally fast plans, keep tensors out of the tiers
    # slower than home (a tensor too small to change the time has no reason to sit in DDR).
    names = problem.tier_names
    slower = set(names[names.index(problem.home) + 1:])
    penalty = [var for (v, t), var in x.items() if t in slower]
    weight = sum(ub[id(var)] for var in penalty) + 1
    m.Minimize(weight * sum(T) + sum(penalty))
    if hint_assign is not None:
        for v in problem.tensors:
            for t in v.tiers:
                m.AddHint(x[v.name, t], int(hint_assign[v.name].get(t, 0)))
        # hint the step times the hinted placement needs, in model units
        for k, step in enumerate(problem.steps):
            if step.free and not loads[k]:
                continue
            fixed = 0 if step.free else math.ceil((step.launch + step.comm) / tau)
            need = math.ceil(step.compute / tau)
            for u, b in step.base.items():
                need = max(need, math.ceil(b / rate[u]) if b else 0)
            for u, terms in loads[k].items():
                total = math.ceil(K * step.base.get(u, 0)) + sum(
                    c * _hinted(hint_assign, var.Name()) for c, var in terms)
                need = max(need, math.ceil(total / (K * rate[u])))
            m.AddHint(T[k], fixed + need)
    solver = cp_model.CpSolver()
    p = solver.parameters
    if deterministic:
        p.num_workers = 1
        p.max_deterministic_time = time_limit
    else:
        p.num_workers = max(1, workers)
        p.max_time_in_seconds = time_limit
    p.random_seed = 0
    p.relative_gap_limit = gap
    watch = _watch(on_solution, tau / weight)
    status = solver.Solve(m, watch)
    name = STATUS_NAMES.get(solver.StatusName(status), str(status))
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Solved(None, name, None, math.floor(solver.BestObjectiveBound() / weight) * tau
                      if status != cp_model.INFEASIBLE else math.inf, None, time.perf_counter() - started,
                      watch.count)
    assignment = {v.name: {t: int(solver.Value(x[v.name, t])) for t in v.tiers
                           if solver.Value(x[v.name, t])} for v in problem.tensors}
    obj = sum(solver.Value(t) for t in T if not isinstance(t, int)) * tau
    bound = min(obj, math.floor(solver.BestObjectiveBound() / weight) * tau)
    proven = (obj - bound) / obj if obj > 0 else 0.0
    if name == "optimal" and gap > 0 and proven > 0:  # CP-SAT calls a plan within the gap limit optimal
        name = "within gap"
    return Solved(assignment, name, obj, bound, max(proven, 0.0), time.perf_counter() - started, watch.count)


def _hinted(hint: Mapping[str, Mapping[str, int]], var_name: str) -> int:
    tensor, tier = var_name[2:-1].rsplit(",", 1)
    return int(hint[tensor].get(tier, 0))


def exhaustive(problem: Problem) -> tuple[dict[str, dict[str, int]] | None, float]:
    """Brute force over every assignment (small problems only): the best feasible one and its
    exact time (None, inf when none fits)."""
    from itertools import product
    options = []
    for v in problem.tensors:
        kv = problem.chunks(v)
        choices = [dict(zip(v.tiers, c)) for c in product(range(kv + 1), repeat=len(v.tiers)) if sum(c) == kv]
        options.append([{t: c for t, c in ch.items() if c} for ch in choices])
    best, best_time = None, math.inf
    for combo in product(*options):
        a = {v.name: ch for v, ch in zip(problem.tensors, combo)}
        ev = evaluate(problem, a)
        if ev.feasible and ev.time < best_time - 1e-15:
            best, best_time = a, ev.time
    return best, best_time
