"""The placement report: tiers' peak use, bytes moved, ILP vs greedy; a memory-over-time PNG."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

from codesign.placement.plan import PlacementPlan
from codesign.targets.units import format_bytes, format_time

KIND_COLORS = {"weights": "tab:blue", "activations": "tab:orange", "kv_cache": "tab:green",
               "experts": "tab:purple", "staging": "tab:gray"}


def placement_tables(plan: PlacementPlan) -> list[Table]:
    per = " per socket" if plan.sockets > 1 else ""
    tiers = Table(title=f"placement on {plan.target}{per}")
    for col in ("tier", "capacity", "peak live", "at step", "peak address", "fragmentation", "offsets",
                "tensors (split)"):
        tiers.add_column(col, justify="left" if col in ("tier", "offsets") else "right")
    for use in plan.tiers:
        held = [t for t in plan.tensors if any(s[0] == use.tier for s in t.shares)]
        split = sum(1 for t in held if t.split)
        step = plan.steps[use.peak_step].key if plan.steps else ""
        tiers.add_row(use.tier, format_bytes(use.capacity), format_bytes(use.peak_live), step,
                      format_bytes(use.peak_address), f"{use.fragmentation:.3f}",
                      use.offsets + (" (layout exceeds capacity)" if use.peak_address > use.capacity else ""),
                      f"{len(held)} ({split})" if split else str(len(held)))
    summary = Table(title="placement: predicted time per run", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row(f"chosen ({plan.method}, {plan.status})", format_time(plan.time))
    summary.add_row("greedy (SN40L rule)", format_time(plan.greedy_time) if plan.greedy_time is not None
                    else "does not fit")
    if plan.speedup:
        summary.add_row("greedy / chosen", f"{plan.speedup:.4f}x")
    if plan.bound is not None:
        summary.add_row("ILP lower bound", format_time(plan.bound))
    if plan.gap is not None:
        summary.add_row("gap", f"{plan.gap:.3%}")
    for route, moved in plan.moved:
        summary.add_row(f"moved {route} (DMA){per}", format_bytes(int(moved)))
    bound = {}
    for s in plan.steps:
        bound[s.bound] = bound.get(s.bound, 0) + 1
    summary.add_row("steps bound by", ", ".join(f"{k} {v}" for k, v in sorted(bound.items())))
    return [tiers, summary]


def render(plan: PlacementPlan, width: int = 110) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, markup=False, highlight=False, color_system=None, soft_wrap=False)
    for table in placement_tables(plan):
        console.print(table)
    return buf.getvalue()


def memory_plot(plan: PlacementPlan, path: str | Path) -> Path:
    """One panel per tier: bytes in use at each step, stacked by kind, with the capacity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    n = max(len(plan.steps), 1)
    tiers = [u for u in plan.tiers]
    fig, axes = plt.subplots(len(tiers), 1, figsize=(10, 2.4 * len(tiers)), sharex=True, squeeze=False)
    xs = np.arange(n)
    for ax, use in zip(axes[:, 0], tiers):
        stacks = {}
        for b in plan.buffers:
            if b.tier != use.tier:
                continue
            row = stacks.setdefault(b.kind, np.zeros(n))
            row[b.start:b.end + 1] += b.size
        kinds = [k for k in KIND_COLORS if k in stacks]
        if kinds:
            ax.stackplot(xs, *[stacks[k] / 2**30 for k in kinds], labels=kinds,
                         colors=[KIND_COLORS[k] for k in kinds], step="post")
        top = max((sum(stacks[k][p] for k in kinds) for p in range(n)), default=0)
        if use.capacity <= 2 * max(top, 1):
            ax.axhline(use.capacity / 2**30, color="red", linestyle="--", linewidth=1, label="capacity")
        ax.set_ylabel(f"{use.tier} (GiB)")
        if kinds:
            ax.legend(loc="upper right", fontsize=7, ncol=6)
        ax.set_title(f"{use.tier}: peak {format_bytes(use.peak_live)} of {format_bytes(use.capacity)}",
                     fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("step (kernel in execution order)")
    per = ", per socket" if plan.sockets > 1 else ""
    fig.suptitle(f"@{plan.graph} on {plan.target}: memory over time ({plan.method}{per})", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
