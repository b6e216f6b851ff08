"""One variant's figures: the analytic pipeline of `compile()` for a target, without code generation.

The model is captured once (`Evaluator.from_model`); each variant then runs the passes
`compile()` runs (`codesign.compiler.COMPILE_PIPELINE`: canonicalize ... fuse, tile,
place), with the placement solved in CP-SAT's deterministic time so a rerun gives the same
plan, and, for models whose MoE experts overflow the tier they run from, the expert
schedule `compile()` attaches. The figures are read where the report reads them: the cost
model's predicted time and bytes per tier, the placement plan, the fusion ledger (which
decoder layers stream through SRAM as one kernel), the expert scheduler's simulated result.

A row holds no wall-clock time, so it is byte-identical across runs, processes and machines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from codesign.explore.reuse import PassCache, run_passes
from codesign.ir.graph import Graph, InputKind
from codesign.passes.manager import Decision
from codesign.passes.registry import Pass, format_pipeline, parse_pipeline
from codesign.targets.schema import Target

__all__ = ["Evaluator", "analysis_passes", "DEFAULT_TIME_LIMIT"]

DEFAULT_TIME_LIMIT = 2.0
"""CP-SAT time per solve (deterministic time, about seconds): placement and each expert window."""


def analysis_passes(time_limit: float = DEFAULT_TIME_LIMIT) -> tuple[Pass, ...]:
    """compile()'s pipeline, with every solver bounded by `time_limit` and deterministic."""
    from codesign.compiler import COMPILE_PIPELINE
    passes = []
    for p in parse_pipeline(COMPILE_PIPELINE):
        if hasattr(p, "time_limit"):
            p = replace(p, time_limit=time_limit, **({"deterministic": True} if hasattr(p, "deterministic") else {}))
        passes.append(p)
    return tuple(passes)


def _tokens(graph: Graph) -> int | None:
    """Tokens per run when the model reads token ids (an integer input [batch, sequence])."""
    for i in graph.inputs:
        if i.kind is InputKind.input and i.type.dtype.is_int and i.type.rank == 2:
            return i.type.numel
    return None


@dataclass
class Evaluator:
    """Figures of a captured graph on any variant of a target; reuses pass results across
    variants (`codesign.explore.reuse`) unless `reuse` is off."""

    graph: Graph
    time_limit: float = DEFAULT_TIME_LIMIT
    reuse: bool = True
    options: Mapping[str, object] = field(default_factory=dict)
    cache: PassCache = field(default_factory=PassCache)
    evaluations: int = 0  # variants evaluated by this evaluator (resumption is tested against it)

    def __post_init__(self) -> None:
        if not 0.0 < self.time_limit <= 86400.0:
            raise ValueError(f"time_limit must be more than 0 and at most 86400 seconds, got {self.time_limit}")
        self.passes = analysis_passes(self.time_limit)
        self.tokens = _tokens(self.graph)

    @classmethod
    def from_model(cls, model: Any, inputs: Sequence[Any] | Any = (), **kwargs: Any) -> "Evaluator":
        """Capture `model` once (a module with example inputs, or a `CapturedModel`)."""
        from codesign.frontend.capture import CapturedModel, capture
        captured = model if isinstance(model, CapturedModel) else capture(model, inputs)
        return cls(captured.graph, **kwargs)

    @property
    def pipeline(self) -> str:
        return format_pipeline(self.passes)

    def fingerprint(self) -> str:
        """What a stored row depends on besides its target: the graph, the pipeline, the code."""
        from codesign import __version__
        from codesign.ir.printer import print_graph
        text = "\n".join([__version__, self.pipeline, repr(self.time_limit), print_graph(self.graph)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def evaluate(self, target: Target) -> dict[str, Any]:
        """The figures of one variant (plain JSON data; None where a figure does not apply)."""
        self.evaluations += 1
        graph, decisions = run_passes(self.graph, self.passes, target, self.options,
                                      self.cache if self.reuse else None)
        return figures(self.graph, graph, decisions, target, self.tokens, self.time_limit)


def figures(captured: Graph, graph: Graph, decisions: Sequence[Decision], target: Target, tokens: int | None,
            time_limit: float) -> dict[str, Any]:
    """Predicted time, throughput, traffic per tier, energy, area and cost, placement, layer
    streaming and expert switching of a compiled graph, as one flat row."""
    from codesign.cost.report import summarize
    from codesign.ir.plan import chip_rereads
    from codesign.passes.place import placement_of

    fusion = summarize(captured, graph, target, chip_rereads(graph))
    fused = fusion.fused
    row: dict[str, Any] = {
        "time_s": fused.time,
        "tokens_per_s": tokens / fused.time if tokens and fused.time else None,
        "eager_time_s": fusion.unfused.time,
        "fusion_speedup": fusion.speedup,
        "kernels": fused.launches,
        "flops": fused.flops,
    }
    for tier in target.memory:
        row[f"bytes_{tier.name}"] = sum(k.bytes.get(tier.name, 0) for k in fused.kernels)
    row["energy_j"] = energy(fused, target)
    row["area_mm2"] = target.area_mm2()
    row["cost_usd"] = target.cost_usd()
    plan = placement_of(decisions)
    row.update({"placement_time_s": plan.time if plan else None, "placement_status": plan.status if plan else None,
                "placement_gap": plan.gap if plan else None, "greedy_time_s": plan.greedy_time if plan else None})
    gaps = [d.data["gap"] for d in decisions if d.pass_name == "map" and d.data.get("gap") is not None]
    row["mapping_gap"] = max(gaps) if gaps else None  # the worst CP-SAT gap of the dataflow mapping
    row.update(_layers(decisions))
    row.update(_experts(graph, target, time_limit))
    return row


def _energy_per_flop(target: Target, dtype: str) -> float | None:
    """A dtype's energy per FLOP, with the fallbacks the cost model's peak uses: fp16 and bf16
    stand in for each other; a 32-bit op on the 16-bit datapath costs twice the 16-bit figure."""
    table = target.compute.energy_per_flop or {}
    if dtype in table:
        return table[dtype]
    other = {"bf16": "fp16", "fp16": "bf16"}.get(dtype)
    if other in table:
        return table[other]
    half = table.get("bf16", table.get("fp16"))
    return 2 * half if half is not None and dtype in ("fp32", "tf32", "f32") else None


def energy(cost: Any, target: Target) -> float | None:
    """Joules per run: FLOPs x energy per FLOP + bytes at each tier x its energy per byte; None
    unless the target gives a figure for every dtype computed and every tier touched."""
    total = 0.0
    for kernel in cost.kernels:
        for dtype, flops in kernel.flops.items():
            per = _energy_per_flop(target, str(dtype))
            if per is None:
                return None
            total += flops * per
        for tier, nbytes in kernel.bytes.items():
            if nbytes:
                per = target.tier(tier).energy_per_byte
                if per is None:
                    return None
                total += nbytes * per
    return total


def _layers(decisions: Sequence[Decision]) -> dict[str, Any]:
    """Decoder layers (repeated blocks) and how many stream through the fast tier as one
    kernel, from the fuse pass's own ledger; the largest stage-buffer set a layer needs."""
    layers = [d for d in decisions if d.pass_name == "fuse" and d.subject.startswith("layer ")]
    sizes = [int(d.data["working_set"]) for d in layers if "working_set" in d.data]
    return {"layers": len(layers), "layers_streamed": sum(d.choice == "fused" for d in layers),
            "layer_working_set": max(sizes) if sizes else None}


def _experts(graph: Graph, target: Target, time_limit: float) -> dict[str, Any]:
    """The expert schedule compile() attaches (`compiler._schedule_experts`: non-expert weights
    reserved, a 64-step mid-locality trace), with the sweep's time limit; None figures when the
    model has no MoE, zeros of stall when every expert fits."""
    from codesign.ir.ops import Template, get_op
    empty = {"experts_fit": None, "experts_time_s": None, "experts_stall_s": None, "experts_stall_share": None,
             "experts_hit_rate": None, "experts_bytes_moved": None, "experts_gap": None,
             "experts_best_baseline": None, "experts_best_baseline_s": None, "experts_error": None}
    if not any(get_op(n.op).template is Template.moe for n in graph.nodes):
        return empty
    from codesign.analysis import graph_stats
    from codesign.experts import InfeasibleError, schedule_graph
    from codesign.experts.ilp import IlpOptions
    stats = graph_stats(graph)
    reserve = stats.param_bytes + stats.buffer_bytes - stats.expert_bytes
    try:
        sched = schedule_graph(graph, target, reserve=reserve, steps=64,
                               options=IlpOptions(time_limit=time_limit, deterministic=True))
    except InfeasibleError as exc:  # a step's experts do not fit at all: no schedule exists
        return {**empty, "experts_fit": False, "experts_error": str(exc)}
    if sched is None:
        return {**empty, "experts_fit": True, "experts_stall_s": 0.0, "experts_stall_share": 0.0,
                "experts_hit_rate": 1.0, "experts_bytes_moved": 0}
    result = sched.result
    name, (_, best) = min(sched.baselines.items(), key=lambda kv: (kv[1][1].total, kv[0]))
    return {"experts_fit": False, "experts_time_s": result.total_s, "experts_stall_s": result.stall_s,
            "experts_stall_share": result.stall / result.total if result.total else 0.0,
            "experts_hit_rate": result.hit_rate, "experts_bytes_moved": result.bytes_moved,
            "experts_gap": sched.gap, "experts_best_baseline": name, "experts_best_baseline_s": best.total_s}
