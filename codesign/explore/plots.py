"""Pictures of a sweep or a search (PNG, matplotlib's Agg backend: no display needed).

* `sensitivity_plot`: one panel per varied field, the figure's marginal (median over the
  other fields) against the field, a marker where returns stop; on a fast-tier capacity axis
  also the decoder layers that stream as one kernel, with the point where all of them fit;
  on any axis that moves it, the expert scheduler's stall share.
* `pareto_plot`: two objectives against each other, every feasible row in grey, the Pareto
  front in colour (by a third objective when there is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codesign.explore.pareto import Objective
from codesign.explore.space import Space
from codesign.explore.summary import STOP, experts_threshold, layer_fit, marginals, returns_stop

__all__ = ["sensitivity_plot", "pareto_plot"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sensitivity_plot(space: Space, rows: Sequence[dict[str, Any]], path: str | Path, column: str = "time_s",
                     title: str = "") -> Path:
    plt = _pyplot()
    ms = marginals(space, rows, column)
    fit = layer_fit(space, rows)
    experts = experts_threshold(space, rows)
    fig, axes = plt.subplots(1, max(1, len(ms)), figsize=(max(5.5, 4.2 * len(ms)), 3.8), squeeze=False)
    for ax, m in zip(axes[0], ms):
        field = m.axis.field
        scale = 1e3 if column.endswith("_s") else 1.0
        ax.plot(m.values, [f * scale for f in m.figure], "o-", color="tab:blue")
        spread = field.numeric and min(m.values) > 0 and max(m.values) / min(m.values) >= 8
        if m.axis.scale == "log" or (m.axis.scale == "list" and spread):
            ax.set_xscale("log", base=2 if field.kind == "bytes" else 10)
        ticks = list(m.values) if len(m.values) <= 8 else list(m.values)[:: max(1, len(m.values) // 6)]
        if field.numeric:
            ax.set_xticks(ticks, [field.format(v).replace(" ", "\n", 1) for v in ticks], fontsize=7)
        ax.set_xlabel(m.axis.name)
        ax.set_ylabel(column.replace("_s", " (ms)") if column.endswith("_s") else column, color="tab:blue")
        stop = returns_stop(m, maximise=column == "tokens_per_s")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        if stop is not None and stop in m.values and stop != m.values[-1] and m.span >= 1 + STOP:
            i = m.values.index(stop)
            ax.plot([stop], [m.figure[i] * scale], "s", color="tab:red", ms=9, fillstyle="none",
                    label=f"returns stop: {field.format(stop)}")
            ax.legend(fontsize=7, loc="upper right")
        if fit is not None and fit["axis"] == m.axis.name:
            twin = ax.twinx()
            streamed = [max((r["layers_streamed"] for r in rows if r.get("valid") and r.get(m.axis.name) == v),
                            default=0) for v in m.values]
            twin.step(m.values, streamed, where="post", color="tab:green")
            twin.set_ylabel("decoder layers streamed as one kernel", color="tab:green", fontsize=8)
            twin.set_ylim(-0.5, fit["layers"] + 0.5)
            if fit["capacity"] is not None:
                ax.axvline(fit["capacity"], color="tab:green", ls="--")
                ax.annotate(f"a whole layer fits\nfrom {field.format(fit['capacity'])}", (fit["capacity"], 0.5),
                            xycoords=("data", "axes fraction"), fontsize=8, color="tab:green",
                            xytext=(4, 0), textcoords="offset points")
        elif experts is not None and experts["axis"] == m.axis.name:
            twin = ax.twinx()
            values, shares = zip(*experts["marginal"])
            twin.plot(values, shares, "^-", color="tab:purple")
            twin.axhline(0.5, color="tab:purple", ls=":", lw=0.8)
            twin.set_ylabel("expert-switching stall share", color="tab:purple", fontsize=8)
            twin.set_ylim(0, 1)
            if experts["value"] is not None:
                ax.axvline(experts["value"], color="tab:purple", ls="--")
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"sensitivity of {column}", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def pareto_plot(rows: Sequence[dict[str, Any]], front: Sequence[dict[str, Any]], objectives: Sequence[Objective],
                path: str | Path, title: str = "") -> Path:
    plt = _pyplot()
    x, y = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    every = [r for r in rows if r.get("valid") and x.value(r) is not None and y.value(r) is not None]
    ax.scatter([x.value(r) for r in every], [y.value(r) for r in every], s=10, color="0.75", label="evaluated")
    pts = sorted(front, key=lambda r: x.value(r))
    color = objectives[2] if len(objectives) > 2 else None
    shade = {"c": [color.value(r) for r in pts], "cmap": "viridis"} if color else {"color": "tab:red"}
    sc = ax.scatter([x.value(r) for r in pts], [y.value(r) for r in pts], s=36, zorder=3, label="Pareto front",
                    **shade)
    if color:
        fig.colorbar(sc, ax=ax, label=color.name)
    for o, axis_set in ((x, ax.set_xlabel), (y, ax.set_ylabel)):
        axis_set(f"{o.name} ({'max' if o.sense == 'max' else 'min'})")
    for o, scale in ((x, ax.set_xscale), (y, ax.set_yscale)):
        values = [o.value(r) for r in every]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            scale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Pareto front", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
