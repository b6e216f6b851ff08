"""Reports: a rich table comparing policies, and a PNG of fast-tier residency over time."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rich.table import Table

from codesign.targets.units import format_bytes

from .problem import Problem
from .simulate import SimResult

__all__ = ["results_table", "plot_residency"]


def results_table(results: Iterable[SimResult], title: str = "expert schedules (same simulator)") -> Table:
    rows = sorted(results, key=lambda r: r.total)
    best = rows[0].total if rows else 1
    table = Table(title=title)
    for column in ("policy", "total", "stall", "loads", "moved", "hit rate", "vs best"):
        table.add_column(column, justify="left" if column == "policy" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r.policy, f"{r.total_s * 1e3:.2f} ms", f"{r.stall_s * 1e3:.2f} ms", str(len(r.load_start)),
                      format_bytes(r.bytes_moved), f"{100 * r.hit_rate:.1f}%", f"{r.total / best:.3f}x")
    return table


def plot_residency(path: str | Path, problem: Problem, result: SimResult, max_experts: int = 256) -> Path:
    """Each expert's spans in the fast tier (rows), and the bytes in use (bottom panel)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = sorted({e for e, _, _ in result.residency})[:max_experts]
    row = {e: k for k, e in enumerate(shown)}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 1))
    for e, a, b in result.residency:
        if e in row and b > a:
            top.broken_barh([(a / 1e6, (b - a) / 1e6)], (row[e] - 0.4, 0.8), color="tab:blue")
    top.set_ylabel("expert (resident spans)")
    top.set_title(f"{result.policy}: total {result.total_s * 1e3:.1f} ms, stall {result.stall_s * 1e3:.1f} ms, "
                  f"hit rate {100 * result.hit_rate:.1f}%")
    step = max(1, len(shown) // 16)
    top.set_yticks(range(0, len(shown), step), [problem.experts[e].name for e in shown[::step]], fontsize=7)
    deltas: dict[int, int] = {}
    for e, a, b in result.residency:
        deltas[a] = deltas.get(a, 0) + problem.size(e)
        deltas[b] = deltas.get(b, 0) - problem.size(e)
    xs, ys, level = [0.0], [0.0], 0
    for t in sorted(deltas):
        level += deltas[t]
        xs.append(t / 1e6)
        ys.append(level / 1e9)
    bottom.step(xs, ys, where="post", color="tab:blue", label="in fast tier")
    bottom.axhline(problem.capacity / 1e9, color="tab:red", linestyle="--", label="capacity")
    bottom.set_ylabel("GB")
    bottom.set_xlabel("time (ms)")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
