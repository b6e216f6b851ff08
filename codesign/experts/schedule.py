"""The scheduler API: baselines, then the ILP over rolling windows, all scored by one simulator.

``schedule(problem)`` returns a :class:`Schedule`: the chosen plan, its simulated result,
every baseline's result on the same problem, and per window the ILP's bound and gap.
``schedule_graph(graph, target)`` does the same for a compiled graph's ``moe`` nodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

from .baselines import BASELINES
from .plan import Load, Plan
from .prefetch import aggressive_min
from .problem import Problem
from .simulate import SimResult, simulate

if TYPE_CHECKING:
    from .ilp import IlpOptions

__all__ = ["Schedule", "WindowReport", "schedule", "earliest_releases", "HORIZON_WINDOWS"]

HORIZON_WINDOWS = 8
"""Windows after the current one that `schedule` judges its candidates over by default."""


@dataclass(frozen=True)
class WindowReport:
    """One rolling-horizon window: slots ``start:stop``, the ILP's solve, what was kept.

    The ILP solves the window on its own (makespan of these slots from the state the
    previous window left), warm started from ``hint_policy``; ``total`` is its plan replayed
    and ``gap`` its distance to the window's proven ``bound``. The rollout then keeps either
    that plan or ``kept_policy``'s (the best over the whole trace), whose window time is
    ``kept_total``: a plan may give up time in this window for the state it leaves.
    """

    start: int
    stop: int
    hint_policy: str
    hint_total: int
    total: int  # the ILP's window plan replayed by the simulator (ns)
    bound: int  # proven lower bound for the window (ns): max(CP-SAT's, bounds.proven_bounds)
    status: str
    seconds: float  # the ILP's solve (model, bounds, search)
    ilp_kept: bool = True  # False: the rollout kept ``kept_policy``'s window instead
    kept_policy: str = "ilp"
    kept_total: int = 0  # the kept window's replayed time (ns)
    wall_seconds: float = 0.0  # the whole window: warm starts, solve and rollout

    @property
    def gap(self) -> float:
        return max(0.0, (self.total - self.bound) / self.total) if self.total else 0.0

    @property
    def kept_gap(self) -> float:
        return max(0.0, (self.kept_total - self.bound) / self.kept_total) if self.kept_total else 0.0


@dataclass(frozen=True)
class Schedule:
    """The chosen plan and how it compares with every baseline on the same simulator."""

    problem: Problem
    plan: Plan
    result: SimResult
    baselines: dict[str, tuple[Plan, SimResult]]
    windows: tuple[WindowReport, ...]

    @property
    def best_baseline(self) -> tuple[Plan, SimResult]:
        return min(self.baselines.values(), key=lambda pr: pr[1].total)

    @property
    def gap(self) -> float:
        """Largest per-window gap between the ILP's window plan and its proven lower bound."""
        return max((w.gap for w in self.windows), default=0.0)

    def summary(self) -> dict:
        return {"plan": self.result.summary(),
                "baselines": {name: r.summary() for name, (_, r) in self.baselines.items()},
                "windows": [{"start": w.start, "stop": w.stop, "hint": w.hint_policy, "hint_total_s": w.hint_total / 1e9,
                             "total_s": w.total / 1e9, "bound_s": w.bound / 1e9, "gap": w.gap, "status": w.status,
                             "seconds": w.seconds, "wall_seconds": w.wall_seconds, "ilp_window_kept": w.ilp_kept,
                             "kept": w.kept_policy, "kept_total_s": w.kept_total / 1e9, "kept_gap": w.kept_gap}
                            for w in self.windows],
                "max_gap": self.gap}


def earliest_releases(problem: Problem, plan: Plan) -> Plan:
    """The same decisions with every load released as soon as its expert was dropped.

    The simulator is monotone, so this is never slower; it is the form the ILP's plans take.
    """
    return replace(plan, loads=tuple(Load(ld.expert, ld.slot, 0) for ld in plan.loads))


def _window_plans(sub: Problem, names: Sequence[str], warm_start: bool) -> list[Plan]:
    """Each baseline, and the MIN-preserving heuristic, run on the window alone."""
    plans = [earliest_releases(sub, BASELINES[name](sub)) for name in names]
    plans += [aggressive_min(sub)] if warm_start else []
    return [replace(plan, policy=f"{plan.policy} (window)") for plan in plans]


def _cut(plan: Plan, slots: int) -> Plan:
    """The part of a plan that concerns its first ``slots`` slots."""
    return Plan(tuple(ld for ld in plan.loads if ld.slot < slots),
                frozenset((e, u) for e, u in plan.drops if u < slots), plan.policy)


def _split(piece, b: int):
    """A global plan piece cut into the slots before ``b`` and from ``b`` on."""
    loads, drops = piece
    head = (tuple(ld for ld in loads if ld.slot < b), {(e, u) for e, u in drops if u < b})
    tail = (tuple(ld for ld in loads if ld.slot >= b), {(e, u) for e, u in drops if u >= b})
    return head, tail


def _localize(piece, a: int, policy: str) -> Plan:
    """A global plan piece of the window starting at ``a`` in the window's slot numbers."""
    loads, drops = piece
    return Plan(tuple(Load(ld.expert, ld.slot - a, max(0, ld.release - a)) for ld in loads),
                frozenset((e, u - a if u >= a else -1) for e, u in drops), policy)


def _shift(plan: Plan, offset: int, last_use: dict[int, int]) -> tuple[tuple[Load, ...], set[tuple[int, int]]]:
    """A window plan in global slot numbers; drops "at the start" become drops after the
    expert's last use in an earlier window (or -1 if it has none)."""
    loads = tuple(Load(ld.expert, ld.slot + offset, ld.release + offset) for ld in plan.loads)
    drops = {(e, u + offset) if u >= 0 else (e, last_use.get(e, -1)) for e, u in plan.drops}
    return loads, drops


def schedule(problem: Problem, *, window: int = 1000, options: IlpOptions | None = None,  # noqa: C901
             baselines: Sequence[str] | None = None, use_ilp: bool = True,
             progress: Callable[[int, int, float, int, int], None] | None = None, lookahead: int = 0,
             warm_start: bool = True, horizon: int | None = None) -> Schedule:
    """Schedule ``problem``: baselines on the whole trace, then the ILP window by window.

    Each window starts with the experts the previous window left resident. Candidates: each
    baseline run from there on the rest of the trace (releases made earliest), the
    MIN-preserving aggressive heuristic of :mod:`.prefetch` (``warm_start``) and the plan
    carried from the previous window, judged over the whole trace and cut to the window;
    and the same policies run on the window alone. The ILP solves the window on its own
    (its makespan), warm started from whichever candidate is fastest on the window; the
    window's time limit covers the warm starts, the ILP's model and bounds and the rollout
    after the solve (estimated by the warm starts' own continuations), and CP-SAT gets what
    is left (the ILP call gets at least 1 s). Rollout: the ILP's
    window is kept when it, followed by the best baseline from its end state, is no slower
    over the whole trace than the whole-trace-best candidate continued; by induction the
    result is never slower than the best baseline. ``progress`` gets ``(window index,
    windows, seconds, objective, bound)`` on every new incumbent.

    ``lookahead``: the ILP solves each window together with that many following slots and
    keeps only the window's part, so a window's plan does not sacrifice the state it leaves
    (overlapping rolling horizon). Its CP-SAT bound then concerns the longer problem, so the
    window's reported bound is the combinatorial one (:func:`.bounds.lower_bound`).

    ``horizon`` (default ``HORIZON_WINDOWS`` windows): how many slots after a window its
    candidates are judged over. While the rest of the trace fits in it, "the whole trace" is
    exactly that (the simulator replays everything decided so far). Farther from the end,
    a window's candidates are judged over the window and the next ``horizon`` slots alone,
    replayed from the window's start state (the link idle, earlier loads arrived), and
    baselines continue only to the horizon's end: each window then costs time in
    ``window + horizon``, not in the trace, so a long trace schedules in linear time. The
    carried plan is a candidate only where judgments are whole-trace ones, and the final
    plan is replaced by the best baseline's should it be slower over the whole trace (it
    cannot be when every window was judged over the whole trace).
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"schedule: window must be a whole number of slots, at least 1; got {window!r}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0):
        raise ValueError(f"schedule: horizon must be a whole number of slots, 0 or more (None: "
                         f"{HORIZON_WINDOWS} windows); got {horizon!r}")
    names = list(baselines or BASELINES)
    horizon = HORIZON_WINDOWS * window if horizon is None else horizon
    full = {}
    for name in names:
        plan = BASELINES[name](problem)
        full[plan.policy] = (plan, simulate(problem, plan))
    if not use_ilp:
        best_plan, best_result = min(full.values(), key=lambda pr: pr[1].total)
        return Schedule(problem, best_plan, best_result, full, ())
    from .bounds import lower_bound  # the solvers (CP-SAT, a min-cost flow): imported only to solve
    from .ilp import IlpOptions, resident_after, solve_window
    options = IlpOptions() if options is None else options

    loads: list[Load] = []
    drops: set[tuple[int, int]] = set()
    reports = []
    resident = set(problem.initial)
    last_use: dict[int, int] = {}
    count = -(-problem.num_slots // window)

    Piece = tuple[tuple[Load, ...], set[tuple[int, int]]]  # loads and drops, global slot numbers

    a = end = 0  # the window's first slot and the end of the slots its candidates are judged over
    frame = problem  # what candidates are replayed on: the whole trace, or the window and its horizon

    def full_total(*pieces: Piece) -> int:
        if end == problem.num_slots:  # the whole trace, with everything decided before
            plan = Plan(tuple(loads) + sum((p[0] for p in pieces), ()),
                        frozenset(drops.union(*(p[1] for p in pieces))))
            return simulate(problem, plan).total
        # the window and its horizon alone, from the state the earlier windows left
        return simulate(frame, _localize((sum((p[0] for p in pieces), ()), set().union(*(p[1] for p in pieces))),
                                         a, "")).total

    def continuations(start: int, state: set[int], uses_before: dict[int, int], *head: Piece) -> list:
        """(total to the horizon's end, name, global plan of slots start..end) for each
        baseline run from ``start``."""
        rest = problem.window(start, end, state)
        out = []
        for name in names:  # each baseline sees the whole future, as it does on the full trace
            plan = earliest_releases(rest, BASELINES[name](rest))
            piece = _shift(plan, start, uses_before)
            out.append((full_total(*head, piece), plan.policy, piece))
        return out

    def heuristic(a: int, sub: Problem, uses_before: dict[int, int], uses_after: dict[int, int]):
        """(whole-trace total, name, global plan of slots a..): MIN-preserving aggressive
        prefetching over the window ``sub`` (slots ``a..``) and the next one (so its end
        state looks ahead), cut to ``sub``, then the best baseline."""
        b = a + sub.num_slots
        ahead = problem.window(a, min(problem.num_slots, b + window), sub.initial)
        head = _cut(aggressive_min(ahead), sub.num_slots)
        piece = _shift(head, a, uses_before)
        if b >= end:
            return full_total(piece), head.policy, piece
        total, _, cont = min(continuations(b, resident_after(sub, head), uses_after, piece), key=lambda x: x[0])
        return total, head.policy, (piece[0] + cont[0], piece[1] | cont[1])

    carry = None  # the continuation whose total the previous window's choice was judged by
    for w, a in enumerate(range(0, problem.num_slots, window)):
        b = min(problem.num_slots, a + window)
        began = time.perf_counter()
        end = min(problem.num_slots, b + horizon)
        frame = problem if end == problem.num_slots else problem.window(a, end, resident)
        sub = problem.window(a, b, resident)
        uses_after = dict(last_use)
        for v in range(a, b):
            for e in problem.requests[v]:
                uses_after[e] = v
        # warm start: the best of each baseline continued from here, of the MIN-preserving
        # heuristic and of the carried plan
        candidates = continuations(a, resident, last_use) + ([carry] if carry else [])
        rollout = time.perf_counter() - began  # the rollout after the solve costs about as much
        if warm_start:
            candidates.append(heuristic(a, sub, last_use, uses_after))
        hint_full, hint_name, hint_rest = min(candidates, key=lambda x: x[0])
        hint_head, hint_tail = _split(hint_rest, b)
        hint_plan = _localize(hint_head, a, hint_name)
        hint = (hint_plan, simulate(sub, hint_plan))
        far = min(end, b + max(0, lookahead))
        if far > b:  # the ILP solves the window with the slots after it, from the whole-trace hint
            window_hint = hint
        else:  # the ILP solves the window on its own: warm start it from the best plan for the
            # window alone too (a whole-trace-best plan may give up window time for its end state)
            window_hint = min([hint] + [(plan, simulate(sub, plan)) for plan in _window_plans(sub, names, warm_start)],
                              key=lambda pr: pr[1].total)
        report = (lambda t, obj, bound, w=w: progress(w, count, t, obj, bound)) if progress else None
        # the window's time limit covers the warm starts and the rollout too
        spent = time.perf_counter() - began + (rollout if b < problem.num_slots else 0.0)
        spent += 0.05 * options.time_limit  # reading the solution back and replaying it
        limited = options if options.deterministic else replace(options, time_limit=max(1.0, options.time_limit - spent))
        if far > b:  # solve the window with the slots after it, keep the window's part
            long_sub = problem.window(a, far, resident)
            long_head, _ = _split(hint_rest, far)
            long_hint = _localize(long_head, a, hint_name)
            solved = solve_window(long_sub, (long_hint, simulate(long_sub, long_hint)), limited, report)
            ilp = replace(solved, plan=_cut(solved.plan, b - a), bound=lower_bound(sub))
        else:
            ilp = solve_window(sub, window_hint, limited, report)
        window_total = simulate(sub, ilp.plan).total
        # rollout: keep the ILP's window only if, followed by the best baseline from its end
        # state, it is no slower over the whole trace than the warm start (never loses)
        ilp_piece = _shift(ilp.plan, a, last_use)
        if b < end:
            ilp_full, _, cont = min(continuations(b, resident_after(sub, ilp.plan), uses_after, ilp_piece),
                                    key=lambda x: x[0])
        else:
            ilp_full, cont = full_total(ilp_piece), ((), set())
        keep_ilp = ilp_full <= hint_full
        piece, carry = (ilp_piece, (ilp_full, "ilp (carried)", cont)) if keep_ilp else (hint_head, (hint_full, hint_name, hint_tail))
        if end < problem.num_slots:
            carry = None  # judged to this horizon's end only: not comparable with the next window's
        reports.append(WindowReport(a, b, window_hint[0].policy, window_hint[1].total, window_total, ilp.bound,
                                    ilp.status, ilp.seconds, keep_ilp, "ilp" if keep_ilp else hint_name,
                                    window_total if keep_ilp else hint[1].total, time.perf_counter() - began))
        loads.extend(piece[0])
        drops |= piece[1]
        resident = resident_after(sub, ilp.plan if keep_ilp else hint_plan)
        last_use = uses_after
    plan = Plan(tuple(loads), frozenset(drops), "ilp")
    result = simulate(problem, plan)
    best_plan, best_result = min(full.values(), key=lambda pr: pr[1].total)
    if best_result.total < result.total:  # only where windows were judged over a horizon
        plan, result = best_plan, best_result
    return Schedule(problem, plan, result, full, tuple(reports))


def schedule_graph(graph, target, trace=None, *, reserve: int = 0, steps: int = 256, seed: int = 0,
                   **kwargs) -> Schedule | None:
    """The expert schedule for a compiled graph's ``moe`` nodes on ``target``.

    Returns None when the fast tier holds every expert (nothing to schedule). Without a
    recorded ``trace`` a synthetic one (mid locality, ``steps`` steps) stands in.
    """
    from .problem import expert_link, problem_for_target
    from .trace import LOCALITY_LEVELS, zipf_trace
    from codesign.ir.ops.moe import expert_bytes

    types = graph.types()
    from codesign.ir.ops import Template, get_op
    moes = [n for n in graph.walk() if get_op(n.op).template is Template.moe]
    if not moes:
        return None
    sizes, num_experts, top_k = [], int(moes[0].attr("num_experts")), int(moes[0].attr("top_k"))
    for node in moes:
        if int(node.attr("num_experts")) != num_experts:
            raise ValueError("moe layers with different expert counts are not supported yet")
        sizes += [expert_bytes([types[o] for o in node.operands])] * num_experts
    link = expert_link(target, reserve)
    if sum(sizes) <= link.capacity:
        return None
    if trace is None:
        alpha, locality = LOCALITY_LEVELS["mid"]
        trace = zipf_trace(num_experts, steps, num_layers=len(moes), top_k=top_k, alpha=alpha, locality=locality,
                           seed=seed)
    problem = problem_for_target(trace, target, expert_bytes=sizes, reserve=reserve)
    return schedule(problem, **kwargs)
