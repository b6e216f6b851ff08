"""Kernel reports: the cost model's view of a graph as a table, totals, and a roofline plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from codesign.cost.model import CostModel, GraphCost, peak_flops
from codesign.ir.graph import Graph
from codesign.ir.kernels import Kernel, kernels
from codesign.ir.ops import OpKind, get_op, node_structure
from codesign.ir.scalar import Load, walk
from codesign.ir.types import DType
from codesign.targets import Target
from codesign.targets.units import format_bytes, format_time


@dataclass(frozen=True)
class FusionSummary:
    """Predicted time of the graph unfused (one kernel per op) and as compiled."""

    unfused: GraphCost
    fused: GraphCost

    @property
    def speedup(self) -> float:
        return self.unfused.time / self.fused.time if self.fused.time else float("inf")

    def as_dict(self) -> dict:
        return {"unfused_time_s": self.unfused.time, "fused_time_s": self.fused.time,
                "speedup": self.speedup, "unfused_kernels": self.unfused.launches,
                "fused_kernels": self.fused.launches, "unfused_home_bytes": self.unfused.home_bytes,
                "fused_home_bytes": self.fused.home_bytes}


def is_eager_view(node, types) -> bool:
    """Whether eager PyTorch runs `node` as a view (no kernel): a layout op of one operand
    that reads it through its map alone — a reshape, permute, expand, slice — unlike pad or
    concat, whose reads are gated."""
    op = get_op(node.op)
    if op.kind is not OpKind.layout or len(node.operands) != 1:
        return False
    expr = node_structure(node, types).expr
    return expr is None or not any(isinstance(e, Load) and e.valid is not None for e in walk(expr))


def eager_kernels(graph: Graph) -> list[Kernel]:
    """The kernels eager PyTorch launches for `graph` as captured: one per op, views none
    (attention is one kernel, as eager's SDPA runs it)."""
    types = graph.types()
    return [k for k in kernels(graph) if not (len(k.nodes) == 1 and is_eager_view(k.nodes[0], types))]


def cost_model_label(target: Target) -> str:
    """What the predicted times rest on, for every report: measured, cited or ideal."""
    cal = target.calibration
    if cal is None:
        return "ideal (datasheet peaks, no calibration): predicted times are lower bounds"
    where = f" on {cal.device}" if cal.device else ""
    when = f", {cal.date}" if cal.date else ""
    fit = (f"; fit median |pred/meas - 1| {cal.fit.median_abs_error:.2f} over {cal.fit.kernels} kernels"
           if cal.fit else "")
    cited = f" ({'; '.join(cal.citations)})" if cal.source == "cited" and cal.citations else ""
    return f"calibrated, {cal.source}{where}{when}{cited}{fit}"


def summarize(unfused: Graph, fused: Graph, target: Target, rereads=None) -> FusionSummary:
    """Compiled vs what eager would launch (`eager_kernels` of the graph as captured)."""
    return FusionSummary(CostModel(target).graph_cost(unfused, eager_kernels(unfused)),
                         CostModel(target, rereads=rereads or {}).graph_cost(fused))


def kernel_table(cost: GraphCost, target: Target, kinds: dict[str, str], limit: int = 40) -> Table:
    """One row per kernel (the slowest `limit` when there are more), in program order."""
    home = CostModel(target).home
    fast = target.memory[0].name
    rows = list(cost.kernels)
    hidden = 0
    if len(rows) > limit:
        keep = {id(k) for k in sorted(rows, key=lambda k: -k.time)[:limit]}
        hidden = len(rows) - limit
        rows = [k for k in rows if id(k) in keep]
    title = f"kernels ({len(cost.kernels)}" + (f"; the {limit} slowest shown" if hidden else "") + ")"
    table = Table(title=title)
    for col in ("kernel", "kind", "ops", "FLOPs", f"{home} bytes", f"{fast} bytes", "FLOP/B", "bound", "time"):
        table.add_column(col, justify="left" if col in ("kernel", "kind", "bound") else "right")
    for k in rows:
        table.add_row(f"{k.key} {k.name}"[:40], kinds.get(k.key, "single"), str(k.nodes),
                      f"{k.total_flops:.3g}", format_bytes(k.bytes.get(home, 0)),
                      format_bytes(k.bytes.get(fast, 0)), f"{k.intensity:.3g}", k.bound, format_time(k.time))
    return table


def roofline_plot(cost: GraphCost, target: Target, path: str | Path, dtype: DType = DType.bf16) -> Path:
    """Each kernel at (FLOP per home-tier byte, predicted FLOP/s) under the target's roofs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    home = CostModel(target).home
    bandwidth = target.total_bandwidth(home)
    peak = peak_flops(target, dtype, tensor_op=True) * target.sockets
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    xs = [max(k.intensity, 1e-3) for k in cost.kernels if k.total_flops]
    lo, hi = min(xs + [1e-2]) / 2, max(xs + [1e4]) * 2
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.loglog(grid, [min(peak, x * bandwidth) for x in grid], color="black", lw=1.5,
              label=f"roof: {peak / 1e12:.0f} TFLOP/s, {home} {bandwidth / 1e12:.2f} TB/s")
    bounds = sorted({k.bound for k in cost.kernels if k.total_flops})
    for bound, marker in zip(bounds, ("o", "s", "^", "D", "v")):
        pts = [(max(k.intensity, 1e-3), k.total_flops / k.time) for k in cost.kernels
               if k.total_flops and k.bound == bound]
        ax.scatter(*zip(*pts), marker=marker, s=18, label=f"{bound}-bound kernels")
    ax.set_xlabel(f"arithmetic intensity (FLOP per {home} byte)")
    ax.set_ylabel("predicted FLOP/s")
    ax.set_title(f"roofline on {target.name}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def mapped_kernels(cost: GraphCost) -> list:
    """The kernels a dataflow mapping prices (their `pipeline` is set), in program order."""
    return [k for k in cost.kernels if k.pipeline is not None]


def pipeline_tables(cost: GraphCost, target: Target, limit: int = 40, detail: int = 4) -> list[Table]:
    """Mapped kernels: a summary row each (the bottleneck and why, pipeline time beside the
    roofline's), then the stages of each distinct pipeline (up to `detail` of them)."""
    mapped = mapped_kernels(cost)
    if not mapped:
        return []
    sp = target.spatial
    summary = Table(title=f"dataflow pipelines on {target.name} ({len(mapped)} mapped kernels"
                          + (f"; the first {limit} shown" if len(mapped) > limit else "") + ")")
    for col in ("kernel", "stages", "tiles", "sections", "bound", "bottleneck (why)", "pipeline", "roofline"):
        summary.add_column(col, justify="left" if col in ("kernel", "bound", "bottleneck (why)") else "right")
    seen: dict[tuple, str] = {}
    tables = [summary]
    for k in mapped[:limit]:
        p = k.pipeline
        summary.add_row(f"{k.key} {k.name}"[:32], str(len(p.stages)), str(p.tiles), str(len(p.sections)), k.bound,
                        p.why(k.problem), format_time(k.time), format_time(k.roofline_time))
        shape = tuple((s.units, s.memory, s.ps, s.section) for s in p.stages)
        if shape in seen or len(seen) >= detail:
            continue
        seen[shape] = k.key
        stages = Table(title=f"{k.key}: stages ({p.tiles} tiles; time per tile)")
        for col in ("#", "stage", "ops", "section", f"{sp.compute.name}s", f"{sp.memory.name}s", "weights",
                    "compute", "memory", "network", "stage", "cause"):
            stages.add_column(col, justify="left" if col in ("stage", "cause", "weights") else "right")
        worst = p.bottleneck
        for i, (s, problem_stage) in enumerate(zip(p.stages, k.problem.stages)):
            mark = " *" if s is worst else ""
            stages.add_row(str(i), s.name + mark, str(len(problem_stage.ops)), str(s.section), str(s.units),
                           str(s.memory), "-" if not problem_stage.weight_bytes else format_bytes(problem_stage.weight_bytes),
                           format_time(s.compute_ps / 1e12), format_time(s.memory_ps / 1e12),
                           format_time(s.network_ps / 1e12), format_time(s.ps / 1e12), s.cause)
        tables.append(stages)
    return tables
