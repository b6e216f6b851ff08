"""Plan a graph's placement: greedy baseline, ILP warm-started from it, offsets, diagnosis.

    plan = place(graph, target)                  # a PlacementPlan
    graph = apply_tiers(graph, plan, target)     # TensorTypes printed f32[4]@hbm
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from codesign.ir.graph import Graph
from codesign.placement.greedy import GreedyOverflow, greedy
from codesign.placement.ilp import exhaustive, solve
from codesign.placement.offsets import Buffer, assign_offsets, peak_live
from codesign.placement.plan import PlacementPlan, StepTime, TensorPlacement, TierUse
from codesign.placement.problem import Evaluation, Problem, build_problem, contribution, evaluate
from codesign.placement.repeated import ties
from codesign.targets.units import format_bytes

METHODS = ("ilp", "greedy", "exhaustive")


class PlacementError(ValueError):
    """No placement fits the target; the message says where, by how much, and what would fit."""

    def __init__(self, message: str, tier: str, step: int, excess: float):
        super().__init__(message)
        self.tier, self.step, self.excess = tier, step, excess


def diagnose(problem: Problem, evaluation: Evaluation, assignment: Mapping[str, Mapping[str, int]],
             target=None, top: int = 5) -> PlacementError:
    """A clear error for an overflowing plan: the tier, the excess, the group, the largest
    tensors live there, and what would fit."""
    worst = max(evaluation.overflows, key=lambda o: (problem.rank(o.tier), o.excess))
    step = problem.steps[worst.step]
    live = [t for t in problem.tensors if t.start <= worst.step <= t.end]
    live.sort(key=lambda t: (-t.nbytes, t.name))
    where = ", ".join(f"%{t.name} ({t.kind}, {format_bytes(t.nbytes)} in "
                      f"{'+'.join(k for k, c in assignment[t.name].items() if c)})" for t in live[:top])
    per = " per socket" if problem.sockets > 1 else ""
    lines = [f"placement of @{problem.name} does not fit target {problem.target or '?'!r}: tier "
             f"{worst.tier!r} overflows by {format_bytes(int(math.ceil(worst.excess)))}{per} "
             f"({format_bytes(int(worst.used))} live, capacity {format_bytes(worst.capacity)}) "
             f"at step {worst.step} ({step.key} {step.name})",
             f"  largest tensors live there: {where}"]
    need = worst.capacity + int(math.ceil(worst.excess))
    fixes = [f"a {worst.tier} of at least {format_bytes(need)}{per} (now {format_bytes(worst.capacity)})"]
    if target is not None:
        sockets = _sockets_needed(problem, target)
        if sockets is not None:
            fixes.insert(0, f"{sockets} sockets (tensor-parallel weights; now {problem.sockets})")
    lines.append("  what would fit: " + " or ".join(fixes))
    return PlacementError("\n".join(lines), worst.tier, worst.step, worst.excess)


def _sockets_needed(problem: Problem, target, limit: int = 64) -> int | None:
    """Fewest sockets whose tiers together hold the sharded state plus the live activations."""
    shard = sum(t.nbytes * problem.sockets for t in problem.tensors if t.state and t.kind in ("weights", "experts"))
    other = max((sum(t.nbytes for t in problem.tensors if not t.state and t.start <= p <= t.end)
                 for p in range(len(problem.steps))), default=0)
    rest = sum(t.nbytes for t in problem.tensors if t.state and t.kind not in ("weights", "experts"))
    for s in range(problem.sockets + 1, limit + 1):
        room = sum(tier.capacity if tier.scope != "host" else tier.capacity / s for tier in target.memory)
        if shard / s + other + rest <= room:
            return s
    return None


def buffers_of(problem: Problem, assignment: Mapping[str, Mapping[str, int]]) -> list[Buffer]:
    """Every rectangle the plan puts in memory: each resting share and each staging buffer."""
    result = []
    for t in problem.tensors:
        total = problem.chunks(t)
        for tier, c in assignment[t.name].items():
            if not c:
                continue
            occ = contribution(problem, t, tier).occupancy
            for i, (u, a, b, size) in enumerate(occ):
                part = int(math.ceil(size * c / total))
                name = t.name if i == 0 else f"{t.name}~stage{a}"
                if len([x for x in assignment[t.name].values() if x]) > 1:
                    name += f"~{tier}"
                result.append(Buffer(name, u, t.kind if i == 0 else "staging", a, b, part))
    return result


def finish(problem: Problem, assignment, *, method: str, status: str, greedy_time: float | None,
           bound: float | None, gap: float | None, seconds: float, exact_limit: int = 24,
           align: int = 64) -> PlacementPlan:
    """Evaluate an assignment exactly, lay out its buffers, and package the plan."""
    ev = evaluate(problem, assignment)
    tensors = []
    for t in problem.tensors:
        total = problem.chunks(t)
        shares = tuple((tier, c / total) for tier in problem.tier_names
                       for c in [assignment[t.name].get(tier, 0)] if c)
        tensors.append(TensorPlacement(t.name, t.kind, t.nbytes, t.start, t.end, shares))
    steps = tuple(StepTime(s.key, s.name, tt, b, s.compute, s.comm)
                  for s, tt, b in zip(problem.steps, ev.step_times, ev.bound))
    laid: list[Buffer] = []
    uses = []
    all_buffers = buffers_of(problem, assignment)
    for tier in problem.tiers:
        mine = [b for b in all_buffers if b.tier == tier.name]
        layout, how = assign_offsets(mine, exact_limit, align=align) if mine else ([], "empty")
        laid += layout
        usage = ev.usage[tier.name]
        peak_step = max(range(len(usage)), key=lambda p: usage[p]) if usage else 0
        uses.append(TierUse(tier.name, tier.capacity, peak_live(layout) if layout else 0, peak_step,
                            max((b.top for b in layout), default=0), how))
    time_ = ev.time
    if bound is not None:
        bound = min(bound, time_)  # the model's rates are rounded up; never report a bound above the plan
    return PlacementPlan(problem.name, problem.target, problem.sockets, problem.split, method, status, time_,
                         greedy_time, bound, gap, seconds, tuple(tensors), steps, tuple(laid), tuple(uses),
                         tuple(sorted(ev.moved.items())))


def place_problem(problem: Problem, *, method: str = "ilp", time_limit: float = 20.0, gap: float = 0.0,
                  workers: int = 2, deterministic: bool = False, exact_limit: int = 24, progress: bool = False,
                  target=None, tie: Mapping[str, str] | None = None) -> PlacementPlan:
    """Place a `Problem` (built from a graph, or synthetic). `tie`: tensors the ILP rests
    where another does (`placement.repeated.ties`: a repeated layer's copies). `gap`: the
    relative gap at which CP-SAT may stop (0: search until optimal or the time limit).

    When the live bytes fit but the address layout does not (fragmentation), place again
    with those tiers shrunk (by twice the overshoot, at least 1%, 2%, 4% ...), up to
    `LAYOUT_RETRIES` times; the plan reports the tiers' real capacities."""
    capacity = {t.name: t.capacity for t in problem.tiers}
    seconds = 0.0  # all attempts count
    for attempt in range(LAYOUT_RETRIES + 1):
        plan = _place_once(problem, method=method, time_limit=time_limit, gap=gap, workers=workers,
                           deterministic=deterministic, exact_limit=exact_limit, progress=progress, target=target,
                           tie=tie)
        seconds += plan.solve_seconds
        over = {u.tier: u.peak_address - capacity[u.tier] for u in plan.tiers if u.peak_address > capacity[u.tier]}
        if not over:
            return replace(plan, solve_seconds=seconds,
                           tiers=tuple(replace(u, capacity=capacity[u.tier]) for u in plan.tiers))
        # shrink by twice the overshoot and at least 1%, 2%, 4%, ... of the tier, so that
        # the next plan moves enough bytes out for best-fit's layout to fit
        problem = replace(problem, tiers=tuple(
            replace(t, capacity=min(t.capacity, capacity[t.name] - max(2 * over[t.name],
                                                                      capacity[t.name] * (2 ** attempt) // 100)))
            if t.name in over else t for t in problem.tiers))
    worst = max(over, key=over.get)
    raise PlacementError(f"tier {worst}: buffer offsets need {over[worst]} bytes more than its capacity "
                         f"after {LAYOUT_RETRIES} re-placements (fragmentation); give it more capacity "
                         f"or split tensors further (split=)", worst, -1, over[worst])


def _place_once(problem: Problem, *, method: str, time_limit: float, gap: float, workers: int, deterministic: bool,
                exact_limit: int, progress: bool, target, tie: Mapping[str, str] | None = None) -> PlacementPlan:
    if method not in METHODS:
        raise ValueError(f"placement method {method!r} is not one of {', '.join(METHODS)}")
    import time as _time
    started = _time.perf_counter()
    try:
        base = greedy(problem)
        greedy_time = evaluate(problem, base).time
    except GreedyOverflow as exc:
        base, greedy_time, failure = None, None, exc
    if method == "greedy" or (method == "ilp" and not any(len(t.tiers) > 1 for t in problem.tensors)):
        if base is None:
            raise diagnose(problem, failure.evaluation, failure.assignment, target)
        return finish(problem, base, method="greedy", status="heuristic", greedy_time=greedy_time, bound=None,
                      gap=None, seconds=_time.perf_counter() - started, exact_limit=exact_limit)
    if method == "exhaustive":
        best, best_time = exhaustive(problem)
        if best is None:
            raise diagnose(problem, failure.evaluation, failure.assignment, target) if base is None else \
                RuntimeError("exhaustive search found nothing though greedy fits")
        return finish(problem, best, method="exhaustive", status="optimal", greedy_time=greedy_time,
                      bound=best_time, gap=0.0, seconds=_time.perf_counter() - started, exact_limit=exact_limit)
    with _Progress(progress, problem, time_limit) as watch:
        solved = solve(problem, base, time_limit=time_limit, gap=gap, workers=workers, deterministic=deterministic,
                       on_solution=watch.update, tie=tie)
    if solved.assignment is None:
        if base is None:
            raise diagnose(problem, failure.evaluation, failure.assignment, target)
        chosen, how, status = base, "greedy", f"greedy (cp-sat {solved.status})"
    else:
        ilp_time = evaluate(problem, solved.assignment).time
        if base is not None and greedy_time < ilp_time:  # rounding in the model's rates
            chosen, how, status = base, "greedy", f"{solved.status}; greedy hint kept"
        else:
            chosen, how, status = solved.assignment, "cp-sat", solved.status
    return finish(problem, chosen, method=how, status=status, greedy_time=greedy_time,
                  bound=solved.bound if math.isfinite(solved.bound) else None, gap=solved.gap,
                  seconds=_time.perf_counter() - started, exact_limit=exact_limit)


LAYOUT_RETRIES = 5  # re-placements with a tier shrunk by its layout's overshoot


def place(graph: Graph, target, *, method: str = "ilp", split: int = 4, reserve: float = 0.5,
          stage: float = 1 / 16, time_limit: float = 20.0, gap: float = 1e-3, workers: int = 2,
          deterministic: bool = False, exact_limit: int = 24,
          progress: bool = False, cost_model=None, repeat: bool = True) -> PlacementPlan:
    """Place every tensor of a (tiled) graph in the target's tiers; see `codesign.placement`.
    `repeat`: the middle layers of a repetition rest as one steady-state layer does
    (`placement.repeated`); False searches every layer's tiers apart. `gap`: CP-SAT stops once
    its plan is proven within this fraction of the optimum (the plan reports the gap)."""
    from codesign.targets import Target, load_target
    target = target if isinstance(target, Target) else load_target(target)
    problem = build_problem(graph, target, cost_model=cost_model, split=split, reserve=reserve, stage=stage)
    return place_problem(problem, method=method, time_limit=time_limit, gap=gap, workers=workers,
                         deterministic=deterministic, exact_limit=exact_limit, progress=progress, target=target,
                         tie=ties(graph, problem) if repeat else None)


def apply_tiers(graph: Graph, plan: PlacementPlan, target) -> Graph:
    """The graph with every TensorType's tier set: placed tensors get their (majority) tier;
    values that never leave their kernel live in the fast tier."""
    placed = plan.tiers_by_tensor()
    fast = target.memory[0].name

    def typed(name, t):
        return replace(t, tier=placed.get(name, fast))

    inputs = tuple(replace(i, type=typed(i.name, i.type)) for i in graph.inputs)
    nodes = tuple(n.with_(type=typed(n.name, n.type)) for n in graph.nodes)
    return replace(graph, inputs=inputs, nodes=nodes)


class _Progress:
    """A rich status line while CP-SAT searches (objective, bound, elapsed)."""

    def __init__(self, enabled: bool, problem: Problem, limit: float):
        self.enabled, self.problem, self.limit = enabled, problem, limit
        self._progress = self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self._progress = Progress(TextColumn("[bold]placing[/] {task.description}"), BarColumn(),
                                      TimeElapsedColumn(), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(
                f"@{self.problem.name}: {len(self.problem.tensors)} tensors, {len(self.problem.steps)} steps",
                total=self.limit)
        return self

    def update(self, objective: float, bound: float, wall: float) -> None:
        if self._progress is not None:
            gap = (objective - bound) / objective if objective else 0.0
            self._progress.update(self._task, completed=min(wall, self.limit),
                                  description=f"@{self.problem.name}: {objective * 1e3:.4g} ms "
                                              f"(bound {bound * 1e3:.4g} ms, gap {gap:.2%})")

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False
