"""The placement pass: a memory tier for every tensor, buffer offsets, written into the IR.

Runs after `tile`. Solves `codesign.placement` (the SN40L greedy rule, then CP-SAT warm
started from it), writes each value's tier into its TensorType (`bf16[4096]@hbm`; values
that never leave their kernel print `@sram`), and records the plan in the ledger: one
decision per tensor that does not rest in the home tier, and one `plan` decision whose
`plan` datum is the `PlacementPlan` (for `plan.json` and the report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from codesign.cost.model import home_tier
from codesign.ir.graph import Graph
from codesign.passes.manager import PassContext
from codesign.passes.registry import Pass, PipelineError, register_pass
from codesign.placement import METHODS, PlacementPlan, apply_tiers, place
from codesign.targets.units import format_bytes, format_time


@register_pass
@dataclass(frozen=True)
class Place(Pass):
    """Tier placement (fast / home / slow) and buffer offsets; objective = predicted time."""

    name: ClassVar[str] = "place"
    summary: ClassVar[str] = ("a memory tier and offset for every tensor (CP-SAT over capacity at every "
                              "step, DMA staging, tensor-parallel sockets; warm start from the SN40L rule)")
    method: str = "ilp"
    time_limit: float = 20.0
    gap: float = 1e-3  # stop once the plan is proven within this fraction of the best (0: prove it optimal)
    split: int = 4
    reserve: float = 0.5
    stage: float = 0.0625
    workers: int = 2
    deterministic: bool = False
    progress: bool = False
    repeat: bool = True  # a repetition's middle layers rest as one layer does (placement.repeated)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.split < 1:
            raise ValueError("split must be at least 1")
        if not 0.0 <= self.reserve < 1.0:
            raise ValueError("reserve must be in [0, 1)")
        if not 1 <= self.split <= 64:
            raise ValueError(f"split must be in 1..64, got {self.split}")
        if not 0.0 <= self.stage < 1.0:
            raise ValueError(f"stage must be in [0, 1), got {self.stage}")
        if not 0.0 < self.time_limit <= 86400.0:  # also refuses nan
            raise ValueError(f"time_limit must be more than 0 and at most 86400 seconds, got {self.time_limit}")
        if not 0.0 <= self.gap < 1.0:  # also refuses nan
            raise ValueError(f"gap must be in [0, 1), got {self.gap}")
        if not 1 <= self.workers <= 256:
            raise ValueError(f"workers must be in 1..256, got {self.workers}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        target = ctx.target
        if target is None:
            raise PipelineError("the place pass needs a target (pass --target, or compile(..., target=...))")
        plan = place(graph, target, method=self.method, split=self.split, reserve=self.reserve, stage=self.stage,
                     time_limit=self.time_limit, gap=self.gap, workers=self.workers, deterministic=self.deterministic,
                     progress=self.progress, repeat=self.repeat and ctx.options.get("reuse", True))
        home = home_tier(target)
        for t in plan.tensors:
            if t.shares and (t.split or t.tier != home):
                shares = " + ".join(f"{f:.0%} {tier}" for tier, f in t.shares)
                ctx.ledger.record(self.name, f"%{t.name}", shares,
                                  f"{t.kind}, {format_bytes(t.nbytes)}, live steps {t.start}..{t.end}",
                                  rule="placement", kind=t.kind, nbytes=t.nbytes, shares=[list(s) for s in t.shares])
        greedy = format_time(plan.greedy_time) if plan.greedy_time is not None else "does not fit"
        ctx.ledger.record(self.name, f"@{graph.name}", f"{plan.method} ({plan.status})",
                          f"predicted {format_time(plan.time)} vs greedy {greedy}"
                          + (f", gap {plan.gap:.2%}" if plan.gap is not None else ""),
                          rule="plan", plan=plan, time=plan.time, greedy_time=plan.greedy_time, gap=plan.gap)
        return apply_tiers(graph, plan, target)


def placement_of(ledger) -> PlacementPlan | None:
    """The plan the place pass recorded in a ledger (the last one), or None."""
    for d in reversed(tuple(ledger)):
        if d.pass_name == Place.name and isinstance(d.data.get("plan"), PlacementPlan):
            return d.data["plan"]
    return None
