"""Pictures of a mapping: the chip's floor plan coloured by stage, and a pipeline trace.

The floor plan lays each section's stages out as the pricing assumes: units handed out in
stage order along a snake through the mesh's columns, so a stage is a strip and tiles
cross strip boundaries in order. The trace (Chrome / Perfetto JSON, `ui.perfetto.dev`)
replays the pipeline tile by tile: tile i enters stage s when stage s-1 has passed it on
and stage s has finished tile i-1 — a flow shop whose makespan is exactly the evaluator's
sum(t_s) + (tiles - 1) x max(t_s) — with the reload tier's loads on a track of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from codesign.mapping.pipeline import PipelineCost
from codesign.mapping.problem import Problem
from codesign.targets import Target


def snake(dims: tuple[int, int]) -> list[tuple[int, int]]:
    """Mesh positions column by column, down one column and up the next."""
    x_dims, y_dims = dims
    return [(x, y if x % 2 == 0 else y_dims - 1 - y) for x in range(x_dims) for y in range(y_dims)]


def floor_plan(target: Target, mapped: Sequence[tuple[str, Problem, PipelineCost]], path: str | Path,
               section: int = 0) -> Path:
    """One panel per mapped kernel (its `section`): every unit at its mesh position, coloured
    by the stage it runs; idle units grey; memory units drawn smaller than compute units."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    sp = target.spatial
    cells = sp.cells()
    order = {pos: i for i, pos in enumerate(snake(sp.network.dims))}
    panels = sorted(mapped, key=lambda m: -len(m[2].stages))[:6]  # the longest pipelines first
    cols = min(3, max(len(panels), 1))
    rows = (len(panels) + cols - 1) // cols or 1
    x_dims, y_dims = sp.network.dims
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows * y_dims / max(x_dims, 1) + 1.2),
                             dpi=110, squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (key, problem, cost) in zip(axes.flat, panels):
        members = [st for st in cost.stages if st.section == min(section, len(cost.sections) - 1)]
        owners: dict[str, list[str]] = {"compute": [], "memory": []}
        for st in members:
            owners["compute"] += [st.name] * st.units
            owners["memory"] += [st.name] * st.memory
        colour = {st.name: cmap(i % 20) for i, st in enumerate(cost.stages)}
        ranked = {"compute": [], "memory": []}
        for kind, _, x, y in cells:
            ranked[kind].append((order[(x, y)], x, y))
        for kind, spots in ranked.items():
            spots.sort()
            shrink = 0.0 if kind == "compute" else 0.2
            if sp.network.switches == sp.compute.count:  # a compute and a memory unit a switch
                shrink = 0.0 if kind == "compute" else 0.5
            for i, (_, x, y) in enumerate(spots):
                owner = owners[kind][i] if i < len(owners[kind]) else None
                face = colour[owner] if owner else (0.88, 0.88, 0.88)
                ax.add_patch(Rectangle((x + shrink / 2, y + shrink / 2), 1 - shrink, 1 - shrink,
                                       facecolor=face, edgecolor="white", linewidth=0.3))
        ax.set_xlim(0, x_dims)
        ax.set_ylim(0, y_dims)
        ax.set_aspect("equal")
        ax.set_title(f"{key}: {len(cost.stages)} stages, {len(cost.sections)} section(s)", fontsize=8)
        handles = [Rectangle((0, 0), 1, 1, facecolor=colour[st.name]) for st in members[:12]]
        ax.legend(handles, [f"{st.name} ({st.units}c/{st.memory}m)" for st in members[:12]], fontsize=5,
                  loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)
    fig.suptitle(f"floor plan of {target.name}: {sp.compute.count} {sp.compute.name}s (large), "
                 f"{sp.memory.count} {sp.memory.name}s (small), coloured by stage", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def schedule(cost: PipelineCost, overlap: bool = True) -> list[tuple[int, int, int, int]]:
    """(section, stage, tile, start ps) of every stage run, durations from `cost`; sections
    one after another, each after the previous one and a switch; without `overlap` (no DMA)
    a section's tiles start once its loads are done."""
    runs = []
    offset = 0
    per_switch = cost.switch_ps // max(len(cost.sections) - 1, 1)
    for sec in cost.sections:
        done: dict[tuple[int, int], int] = {}
        start = offset if overlap else offset + sec.load_ps
        for tile in range(cost.tiles):
            for j, s in enumerate(sec.stages):
                ready = max(done.get((j - 1, tile), start), done.get((j, tile - 1), start))
                runs.append((sec.index, s, tile, ready))
                done[(j, tile)] = ready + cost.stages[s].ps
        offset += sec.ps + per_switch
    return runs


def makespan(cost: PipelineCost, section: int) -> int:
    """End of the last tile in `section`, from its first start (the flow shop alone)."""
    runs = [(s, start) for sec, s, _, start in schedule(cost) if sec == section]
    first = min(start for _, start in runs)
    return max(start + cost.stages[s].ps for s, start in runs) - first


def trace(mapped: Sequence[tuple[str, Problem, PipelineCost]], path: str | Path) -> Path:
    """Chrome trace events: one process per kernel, one thread per stage, one slice per
    tile (microseconds); a `loads` thread with each section's reload-tier traffic."""
    events: list[dict] = []
    for pid, (key, problem, cost) in enumerate(mapped, start=1):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": key}})
        for i, st in enumerate(cost.stages):
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": i + 1,
                           "args": {"name": f"{i}: {st.name} ({st.units}c/{st.memory}m)"}})
        loads = len(cost.stages) + 1
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": loads,
                       "args": {"name": f"loads from {problem.resources.reload_tier}"}})
        for sec, s, tile, start in schedule(cost, problem.resources.overlap_loads):
            st = cost.stages[s]
            events.append({"ph": "X", "name": f"tile {tile}", "cat": st.cause, "pid": pid, "tid": s + 1,
                           "ts": start / 1e6, "dur": st.ps / 1e6,
                           "args": {"section": sec, "compute_ps": st.compute_ps, "memory_ps": st.memory_ps,
                                    "network_ps": st.network_ps}})
        offset = 0
        for sec in cost.sections:
            events.append({"ph": "X", "name": f"section {sec.index} loads", "cat": "load", "pid": pid,
                           "tid": loads, "ts": offset / 1e6, "dur": sec.load_ps / 1e6})
            offset += sec.ps + cost.switch_ps // max(len(cost.sections) - 1, 1)
    path = Path(path)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}, indent=1, sort_keys=True) + "\n")
    return path
