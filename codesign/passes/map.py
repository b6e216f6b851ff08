"""The map pass: every fused kernel as a pipeline over a spatial chip's units (issue 19).

Runs after `fuse` and `tile`, before `place`, on targets with a `spatial` section (a no-op
elsewhere, so `compile()` always lists it). For each group it builds the kernel's stages
(`codesign.mapping.problem`), picks the tile count and a baseline by the
proportional-to-work heuristic, improves it with CP-SAT (warm-started from the baseline,
one worker, fixed seed, time-limited; the gap reported), checks the result with the
independent checker, and writes it into the group's plan (`map_*` keys), so a dump after
`map` can be edited and resumed. A group that already carries a mapping (a resumed, edited
plan) is checked and kept. Equal kernels (the decoder layers of one model) are solved once.
The ledger has, per kernel, the heuristic's and CP-SAT's predicted times, the gap, the
solver's status and the bottleneck (no wall-clock times: the ledger is byte-identical run to run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from codesign.ir.graph import Graph, Group
from codesign.ir.kernels import kernels
from codesign.mapping.check import violations
from codesign.mapping.cpsat import solve
from codesign.mapping.heuristic import best_tiles
from codesign.mapping.pipeline import evaluate
from codesign.mapping.plan import mapped_problem, with_mapping
from codesign.mapping.problem import MappingError, profile_kernel
from codesign.passes.manager import PassContext, PassError
from codesign.passes.registry import Pass, PipelineError, register_pass

SOLVERS = ("cp-sat", "heuristic")


@register_pass
@dataclass(frozen=True)
class Map(Pass):
    """Map each kernel onto a spatial target's units as a pipeline of stages."""

    name: ClassVar[str] = "map"
    summary: ClassVar[str] = ("dataflow mapping on spatial targets: compute and memory units per stage, "
                              "weights resident or streamed, sections (CP-SAT warm-started by the "
                              "proportional heuristic; gap in the ledger); no-op elsewhere")
    solver: str = "cp-sat"
    time_limit: float = 1.0
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {self.solver!r}")
        if not 0.0 < self.time_limit <= 3600.0:
            raise ValueError(f"time_limit must be more than 0 and at most 3600 seconds, got {self.time_limit}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        target = ctx.target
        if target is None:
            raise PipelineError("the map pass needs a target (pass --target, or compile(..., target=...))")
        if target.spatial is None:
            return graph
        types = graph.types()
        groups = dict(graph.group_map())
        solved: dict = {}
        for kernel in kernels(graph):
            if kernel.group is None:
                continue
            subject = f"{kernel.key} {kernel.name}"
            try:
                if kernel.group.plan.is_mapped:
                    problem, mapping = mapped_problem(graph, kernel, target, types)
                    cost = evaluate(problem, mapping)
                    ctx.ledger.record(self.name, subject, "kept", f"the plan's mapping: {cost.why(problem)}",
                                      rule="map", time=cost.seconds, bound=cost.bound(problem.resources.reload_tier))
                    continue
                profile = profile_kernel(graph, kernel, target, types)
                key = profile.signature()
                if key not in solved:
                    solved[key] = self._solve(profile)
            except MappingError as exc:
                if kernel.group.plan.is_mapped:
                    raise PassError(str(exc)) from None
                ctx.ledger.record(self.name, subject, "unmapped", f"{exc}; priced as a roofline", rule="map")
                continue
            first, mapping, data = solved[key]
            problem = profile.problem(first.tiles)  # this kernel's own stage names
            found = violations(problem, mapping)
            if found:  # the checker disagrees with a solver: a bug, never a silent over-allocation
                raise PassError(f"{subject}: the {data['solver']} mapping over-allocates: "
                                + "; ".join(found))
            groups[kernel.group.id] = Group(kernel.group.id, with_mapping(kernel.group.plan, problem, mapping))
            cost = evaluate(problem, mapping)
            gap = f", gap {data['gap']:.2%}" if data["gap"] is not None else ""
            ctx.ledger.record(
                self.name, subject, f"{len(problem.stages)} stages, {mapping.section_count} section"
                f"{'s' if mapping.section_count > 1 else ''}, {mapping.tiles} tiles",
                f"{data['solver']} {cost.seconds * 1e6:.4g} us vs heuristic {data['heuristic_s'] * 1e6:.4g} us"
                f"{gap}; bottleneck {cost.why(problem)}",
                rule="map", time=cost.seconds, bound=cost.bound(problem.resources.reload_tier),
                stages=[s.name for s in problem.stages], units=list(mapping.units), **data)
        return Graph(graph.name, graph.inputs, graph.nodes, graph.outputs,
                     tuple(sorted(groups.values(), key=lambda g: g.id)))

    def _solve(self, profile):
        problem, baseline, base_cost = best_tiles(profile)
        # predicted times only: wall-clock solve times would make the ledger differ run to run
        # (benchmarks/dataflow_mapping.py times the solvers)
        data = dict(solver=self.solver, heuristic_s=base_cost.seconds, cpsat_s=None, gap=None, status=None,
                    tiles=problem.tiles)
        if self.solver == "heuristic":
            return problem, baseline, data
        solution = solve(problem, baseline, self.time_limit, self.deterministic)
        data.update(cpsat_s=solution.ps / 1e12, gap=round(solution.gap, 6), status=solution.status)
        return problem, solution.mapping, data
