"""What a sweep says, in a few sentences: sensitivity, where returns stop, thresholds.

* **Sensitivity** of a figure (predicted time by default) to each varied field: the figure's
  median over the other fields at each of that field's values (its *marginal*), and the
  ratio of the marginal's worst to best value (its *span*). The field of the largest span is
  the one the model is most sensitive to.
* **Where returns stop** along a field: the first value after which going to the end of the
  range improves the marginal by less than `STOP` (5%).
* **Thresholds** read from the pipeline's own decisions: the smallest fast-tier capacity at
  which every decoder layer streams through it as one kernel (the fuse pass's ledger), and
  the first value of a field at which expert switching stops dominating (the expert
  scheduler's stall under half of its simulated time).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from codesign.explore.space import Axis, Space

__all__ = ["Marginal", "marginals", "returns_stop", "layer_fit", "experts_threshold", "summarize_sweep", "STOP"]

STOP = 0.05
"""Improvement (relative) below which a further step of a field no longer pays."""


@dataclass(frozen=True)
class Marginal:
    """A figure's median over the other fields, at each value of one field (in order)."""

    axis: Axis
    values: tuple[Any, ...]
    figure: tuple[float, ...]

    @property
    def span(self) -> float:
        lo, hi = min(self.figure), max(self.figure)
        return hi / lo if lo > 0 else float("inf")


def _valid(rows: Sequence[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("valid") and r.get(column) is not None]


def marginals(space: Space, rows: Sequence[dict[str, Any]], column: str = "time_s") -> list[Marginal]:
    out = []
    for axis in space.axes:
        values, figure = [], []
        for v in axis.values:
            at = [float(r[column]) for r in _valid(rows, column) if r.get(axis.name) == v]
            if at:
                values.append(v)
                figure.append(statistics.median(at))
        if values:
            out.append(Marginal(axis, tuple(values), tuple(figure)))
    return out


def returns_stop(m: Marginal, maximise: bool = False) -> Any | None:
    """The first value of the field past which the rest of its range gains less than STOP;
    None when the figure does not move."""
    fig = [-f for f in m.figure] if maximise else list(m.figure)
    best = min(fig)
    if len(fig) < 2 or m.span <= 1 + 1e-12:
        return None
    for value, f in zip(m.values, fig):
        gain = (f - best) / abs(f) if f else 0.0
        if gain < STOP:
            return value
    return m.values[-1]


def _capacity_axis(space: Space) -> Axis | None:
    for axis in space.axes:
        if axis.field.location == ("memory", 0, "capacity"):
            return axis
    return None


def layer_fit(space: Space, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest fast-tier capacity at which every row streams all its decoder layers, and
    the stage buffers a layer needs; None without a capacity axis or layers."""
    axis = _capacity_axis(space)
    if axis is None:
        return None
    valid = [r for r in rows if r.get("valid") and r.get("layers")]
    if not valid:
        return None
    for v in sorted(axis.values):
        at = [r for r in valid if r.get(axis.name) == v]
        if at and all(r["layers_streamed"] == r["layers"] for r in at):
            sizes = [r["layer_working_set"] for r in at if r.get("layer_working_set")]
            return {"axis": axis.name, "capacity": v, "layers": at[0]["layers"],
                    "layer_working_set": max(sizes) if sizes else None,
                    "below": max((u for u in axis.values if u < v), default=None)}
    return {"axis": axis.name, "capacity": None, "layers": valid[0]["layers"],
            "layer_working_set": max((r["layer_working_set"] or 0) for r in valid)}


def experts_threshold(space: Space, rows: Sequence[dict[str, Any]], share: float = 0.5) -> dict[str, Any] | None:
    """Along each field, the first value from which the median expert stall share stays under `share`."""
    rows = _valid(rows, "experts_stall_share")
    if not rows:
        return None
    best = None
    for axis in space.axes:
        marginal = [(v, statistics.median([r["experts_stall_share"] for r in rows if r.get(axis.name) == v]))
                    for v in axis.values if any(r.get(axis.name) == v for r in rows)]
        if len(marginal) < 2 or marginal[0][1] == marginal[-1][1]:
            continue
        for i, (v, s) in enumerate(marginal):
            if all(s2 < share for _, s2 in marginal[i:]):
                found = {"axis": axis.name, "value": v, "stall_share": s, "first_share": marginal[0][1],
                         "marginal": marginal}
                break
        else:
            found = {"axis": axis.name, "value": None, "stall_share": marginal[-1][1],
                     "first_share": marginal[0][1], "marginal": marginal}
        if best is None or abs(found["first_share"] - found["stall_share"]) > abs(best["first_share"] - best["stall_share"]):
            best = found
    return best


def summarize_sweep(space: Space, rows: Sequence[dict[str, Any]], column: str = "time_s") -> dict[str, Any]:
    """The findings as data (for the JSON) and as sentences (`lines`)."""
    lines: list[str] = []
    ms = marginals(space, rows, column)
    valid = sum(1 for r in rows if r.get("valid"))
    lines.append(f"{len(rows)} variants, {valid} valid targets"
                 + (f", {len(rows) - valid} refused by the schema" if valid < len(rows) else ""))
    findings: dict[str, Any] = {"figure": column, "sensitivity": [], "returns_stop": {}}
    for m in sorted(ms, key=lambda m: -m.span):
        f = m.axis.field
        stop = returns_stop(m, maximise=column == "tokens_per_s")
        findings["sensitivity"].append({"axis": m.axis.name, "span": m.span, "values": list(m.values),
                                        "figure": list(m.figure)})
        findings["returns_stop"][m.axis.name] = stop
        where = (f"; little effect (under {STOP:.0%} over the range)" if m.span < 1 + STOP else
                 f"; returns stop at {f.format(stop)} (the rest of the range gains < {STOP:.0%})"
                 if stop is not None and stop != m.values[-1] else
                 ("; still improving at the end of the range" if stop is not None else "; no effect"))
        lines.append(f"{m.axis.name}: {column} varies {m.span:.4g}x over {f.format(m.values[0])} .. "
                     f"{f.format(m.values[-1])}{where}")
    if ms:
        top = max(ms, key=lambda m: m.span)
        findings["most_sensitive"] = top.axis.name if top.span >= 1 + STOP else None
        lines.insert(1, f"most sensitive to {top.axis.name} ({column} varies {top.span:.3g}x over its range)"
                     if top.span >= 1 + STOP else f"no field moves {column} by {STOP:.0%} over its range")
    fit = layer_fit(space, rows)
    if fit is not None:
        findings["layer_fit"] = fit
        field = _capacity_axis(space).field  # type: ignore[union-attr]
        if fit["capacity"] is not None:
            need = f" (stage buffers {field.format(fit['layer_working_set'])})" if fit["layer_working_set"] else ""
            lines.append(f"a whole decoder layer fits on chip from {fit['axis']} = {field.format(fit['capacity'])}"
                         f"{need}: all {fit['layers']} layers then stream as one kernel each")
        else:
            lines.append(f"no {fit['axis']} in the range holds a whole decoder layer (needs "
                         f"{field.format(fit['layer_working_set'])})")
    experts = experts_threshold(space, rows)
    if experts is not None:
        findings["experts"] = {k: v for k, v in experts.items() if k != "marginal"}
        axis = next(a for a in space.axes if a.name == experts["axis"])
        if experts["value"] is not None:
            lines.append(f"expert switching stops dominating at {experts['axis']} = {axis.field.format(experts['value'])}"
                         f" (stall {experts['stall_share']:.0%} of the expert scheduler's simulated time, from "
                         f"{experts['first_share']:.0%} at {axis.field.format(axis.values[0])})")
        else:
            lines.append(f"expert switching dominates over the whole range of {experts['axis']} "
                         f"(stall {experts['stall_share']:.0%} at its end)")
    findings["lines"] = lines
    return findings
