"""The mapping as a CP-SAT model: units, memory units, weights and sections at once.

For a problem at a fixed tile count (the heuristic's), with stages s and up to K sections:

* sec_s in 0..K-1 (K: the heuristic's sections + 2, at most one a stage), sec_0 = 0,
  sec_{s+1} - sec_s in {0, 1} (sections are runs of stages);
  b_{s,k} = [sec_s = k];
* c_s in 1..max_units_s compute units, m_s memory units, r_s: weights resident;
  m_s >= the stage's floor (capacity and banks, resident or streamed);
* per section k: sum of c_s over its stages <= compute units, same for memory units;
* t_s >= ceil(compute_s / c_s), t_s >= ceil(memory_s / m_s) (division constraints),
  t_s >= the tiles of every edge crossing the boundary after s inside one section;
* z_k >= t_s for s in k; pipe_k = sum_{s in k} t_s + (tiles - 1) z_k + hop fill;
  load_k = sum_{s in k} io_s + weights_s x (1 if r_s else tiles);
  T_k >= max(pipe_k, load_k) with DMA, else >= pipe_k + load_k;
* minimise sum_k T_k + reconfiguration x (sections - 1) + spills of edges across sections.

Every term is the evaluator's (`pipeline.evaluate`) integer, so the objective is the
mapping's predicted time to the picosecond. Warm-started (`AddHint`) from the heuristic,
whose time H also bounds the domains: a mapping no slower has every stage at most H / tiles
a tile (a section's pipeline is at least tiles x each of its stages), so each stage gets at
least its work over that many compute and memory units, and at most H / reconfiguration + 1
sections. One thread with CP-SAT's subsolvers interleaved and a fixed seed (deterministic
with `deterministic`: a deterministic-time limit), and the gap to CP-SAT's bound reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


from codesign.mapping.pipeline import evaluate
from codesign.mapping.problem import Mapping, Problem


@dataclass(frozen=True)
class Solution:
    mapping: Mapping
    ps: int  # the objective (= evaluate(problem, mapping).ps)
    bound_ps: int
    status: str
    seconds: float

    @property
    def gap(self) -> float:
        return (self.ps - self.bound_ps) / self.ps if self.ps else 0.0


def solve(problem: Problem, hint: Mapping | None = None, time_limit: float = 1.0,
          deterministic: bool = True, max_sections: int | None = None) -> Solution:
    """The best mapping CP-SAT finds within `time_limit`; never worse than a feasible hint."""
    start = time.perf_counter()
    r, stages, tiles = problem.resources, problem.stages, problem.tiles
    n = len(stages)
    hinted = hint.section_count if hint is not None else 1
    K = max(1, min(n, max_sections if max_sections is not None else hinted + 2))
    hint_ps = evaluate(problem, hint).ps if hint is not None and hint.section_count <= K else None
    if hint_ps is not None and r.reconfigure_ps > 0:
        K = min(K, hint_ps // r.reconfigure_ps + 1)  # more switches alone cost more than the hint
    from ortools.sat.python import cp_model  # imported when a solve runs (start-up)
    model = cp_model.CpModel()
    sec = [model.NewIntVar(0, K - 1, f"sec{s}") for s in range(n)]
    model.Add(sec[0] == 0)
    for s in range(1, n):
        model.Add(sec[s] - sec[s - 1] >= 0)
        model.Add(sec[s] - sec[s - 1] <= 1)
    b = [[model.NewBoolVar(f"b{s}_{k}") for k in range(K)] for s in range(n)]
    for s in range(n):
        model.AddExactlyOne(b[s])
        model.Add(sec[s] == sum(k * b[s][k] for k in range(K)))
    used = [sum(b[n - 1][j] for j in range(k, K)) for k in range(K)]  # 0/1 expressions
    unit_cap = [problem.unit_ceiling(s) for s in range(n)]
    floor_stream = [problem.memory_floor(s, False) for s in range(n)]
    floor_keep = [problem.memory_floor(s, True) for s in range(n)]
    # a mapping no slower than the hint has every stage at most hint / tiles per tile (a
    # section's pipeline is at least tiles x each of its stages), so each stage needs at
    # least its work over that many units: the domains the search explores shrink to
    # what can still beat the hint
    period = max(1, hint_ps // tiles) if hint_ps is not None else None
    c_low = [_at_least(st.compute_ps, period, unit_cap[s]) for s, st in enumerate(stages)]
    m_low = [max(min(floor_stream[s], r.memory_units), _at_least(st.memory_ps, period, r.memory_units))
             for s, st in enumerate(stages)]
    c = [model.NewIntVar(c_low[s], unit_cap[s], f"c{s}") for s in range(n)]
    m = [model.NewIntVar(m_low[s], r.memory_units, f"m{s}") for s in range(n)]
    keep = [model.NewBoolVar(f"r{s}") for s in range(n)]
    for s in range(n):
        if floor_keep[s] > r.memory_units:
            model.Add(keep[s] == 0)
        else:
            model.Add(m[s] >= floor_keep[s]).OnlyEnforceIf(keep[s])
    for k in range(K):
        cc, mm = [], []
        for s in range(n):
            x = model.NewIntVar(0, unit_cap[s], f"cc{s}_{k}")
            y = model.NewIntVar(0, r.memory_units, f"mm{s}_{k}")
            model.Add(x == c[s]).OnlyEnforceIf(b[s][k])
            model.Add(x == 0).OnlyEnforceIf(b[s][k].Not())
            model.Add(y == m[s]).OnlyEnforceIf(b[s][k])
            model.Add(y == 0).OnlyEnforceIf(b[s][k].Not())
            cc.append(x)
            mm.append(y)
        model.Add(sum(cc) <= r.compute_units)
        model.Add(sum(mm) <= r.memory_units)
    same = []
    for i, e in enumerate(problem.edges):
        v = model.NewBoolVar(f"same{i}")
        model.Add(sec[e.dst] == sec[e.src]).OnlyEnforceIf(v)
        model.Add(sec[e.dst] >= sec[e.src] + 1).OnlyEnforceIf(v.Not())
        same.append(v)
    net_total = sum(e.ps for e in problem.edges)
    top = max([st.compute_ps for st in stages] + [st.memory_ps for st in stages] + [net_total, 1])
    if period is not None:
        top = min(top, period)
    t = []
    for s, st in enumerate(stages):
        ts = model.NewIntVar(0, top, f"t{s}")
        tc = model.NewIntVar(0, min(st.compute_ps, top), f"tc{s}")
        model.AddDivisionEquality(tc, st.compute_ps + c[s] - 1, c[s])
        tm = model.NewIntVar(0, min(st.memory_ps, top), f"tm{s}")
        model.AddDivisionEquality(tm, st.memory_ps + m[s] - 1, m[s])
        model.Add(ts >= tc)
        model.Add(ts >= tm)
        crossing = problem.crossing(s)
        if crossing:
            model.Add(ts >= sum(problem.edges[e].ps * same[e] for e in crossing))
        t.append(ts)
    loads_max = sum(st.io_ps + st.weight_ps * tiles for st in stages)
    pipe_max = (n + tiles) * top + r.hop_fill_ps
    section_time = []
    for k in range(K):
        z = model.NewIntVar(0, top, f"z{k}")
        tt = []
        load_terms = []
        for s, st in enumerate(stages):
            model.Add(z >= t[s]).OnlyEnforceIf(b[s][k])
            x = model.NewIntVar(0, top, f"tt{s}_{k}")
            model.Add(x == t[s]).OnlyEnforceIf(b[s][k])
            model.Add(x == 0).OnlyEnforceIf(b[s][k].Not())
            tt.append(x)
            both = model.NewBoolVar(f"a{s}_{k}")  # in section k with resident weights
            model.AddBoolAnd([b[s][k], keep[s]]).OnlyEnforceIf(both)
            model.AddBoolOr([b[s][k].Not(), keep[s].Not()]).OnlyEnforceIf(both.Not())
            load_terms.append((st.io_ps + st.weight_ps * tiles) * b[s][k] - st.weight_ps * (tiles - 1) * both)
        pipe = model.NewIntVar(0, pipe_max, f"pipe{k}")
        model.Add(pipe == sum(tt) + (tiles - 1) * z + r.hop_fill_ps * used[k])
        load = model.NewIntVar(0, loads_max, f"load{k}")
        model.Add(load == sum(load_terms))
        total = model.NewIntVar(0, pipe_max + loads_max, f"T{k}")
        if r.overlap_loads:
            model.AddMaxEquality(total, [pipe, load])
        else:
            model.Add(total == pipe + load)
        section_time.append(total)
    switches = r.reconfigure_ps * (sec[n - 1])
    spills = sum(e.spill_ps * (1 - same[i]) for i, e in enumerate(problem.edges))
    # ties (streaming weights is often free while the pipeline binds) go to resident weights:
    # the time, scaled, plus one for every streamed stage; the time is the quotient
    scale = n + 1
    model.Minimize(scale * (sum(section_time) + switches + spills) + sum(1 - k for k in keep))
    if hint is not None:
        for s in range(n):
            model.AddHint(sec[s], hint.sections[s])
            model.AddHint(c[s], hint.units[s])
            model.AddHint(m[s], hint.memory[s])
            model.AddHint(keep[s], int(hint.resident[s]))
            for k in range(K):
                model.AddHint(b[s][k], int(hint.sections[s] == k))
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = 1
    p.random_seed = 0
    # CP-SAT's subsolvers (LNS, feasibility jump, ...) take turns in the one thread: still
    # deterministic, and LNS leaves the plateaus where the plain search improves the fill
    # term a few picoseconds a solution (900 solutions, 5.8 s for one 70B layer; ~1 s this way)
    p.interleave_search = True
    if deterministic:
        p.max_deterministic_time = time_limit
    p.max_time_in_seconds = time_limit if not deterministic else max(time_limit * 20, 10.0)
    status = solver.Solve(model)
    seconds = time.perf_counter() - start
    name = solver.StatusName(status)
    if hint is not None and hint_ps is None:
        hint_ps = evaluate(problem, hint).ps
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if hint is None:
            from codesign.mapping.problem import MappingError
            raise MappingError(f"kernel {problem.kernel}: CP-SAT found no mapping ({name})")
        return Solution(hint, hint_ps, 0, name, seconds)  # no bound proven: the gap is 100%
    mapping = Mapping(tiles, tuple(solver.Value(x) for x in c), tuple(solver.Value(x) for x in m),
                      tuple(solver.Value(x) for x in sec), tuple(bool(solver.Value(x)) for x in keep))
    ps = int(round(solver.ObjectiveValue())) // scale
    bound = int(solver.BestObjectiveBound()) // scale
    if hint_ps is not None and hint_ps < ps:  # cannot happen with a feasible hint; be safe
        return Solution(hint, hint_ps, min(bound, hint_ps), name, seconds)
    return Solution(mapping, ps, min(bound, ps), name, seconds)


def _at_least(work_ps: int, period_ps: int | None, ceiling: int) -> int:
    """The fewest units that do `work_ps` within `period_ps` a tile (1 without a period),
    at most `ceiling` (a hint that needs more is not feasible: then the domain is not cut)."""
    if period_ps is None or work_ps <= period_ps:
        return 1
    return min(ceiling, -(-work_ps // period_ps))
