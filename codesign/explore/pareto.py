"""Objectives, constraints and Pareto fronts over sweep rows.

An objective or a constraint names a row column (`time_s`, `energy_j`, `cost_usd`,
`tokens_per_s`...), a short alias (`time`, `energy`, `cost`, `area`, `tokens`), or a
varied target field (`sram.capacity`: a smaller SRAM is a cheaper chip). Constraints are
`NAME<=VALUE` or `NAME>=VALUE`, with the field's units for a target field
(`sram.capacity<=512MiB`). The front is computed from the rows themselves, so it is the
same for a sweep and for a search's trials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from codesign.explore.fields import FieldPath, FieldPathError, resolve
from codesign.targets.schema import Target

__all__ = ["Objective", "Constraint", "parse_objectives", "parse_constraint", "pareto_front", "ALIASES"]

ALIASES: dict[str, tuple[str, str]] = {
    "time": ("time_s", "min"), "energy": ("energy_j", "min"), "cost": ("cost_usd", "min"),
    "area": ("area_mm2", "min"), "tokens": ("tokens_per_s", "max"), "throughput": ("tokens_per_s", "max"),
    "stall": ("experts_stall_s", "min"),
}
_MAXIMISED = {"tokens_per_s", "fusion_speedup", "layers_streamed", "experts_hit_rate"}


@dataclass(frozen=True)
class Objective:
    """A column to minimise or maximise (a target field's column is its path as given)."""

    name: str  # as the user wrote it
    column: str
    sense: str  # "min" | "max"
    field: FieldPath | None = None

    def value(self, row: dict[str, Any]) -> float | None:
        v = row.get(self.column)
        return None if v is None else float(v)

    def loss(self, row: dict[str, Any]) -> float | None:
        """The value to minimise."""
        v = self.value(row)
        return None if v is None else (v if self.sense == "min" else -v)


def _column(name: str, base: Target, columns: Sequence[str]) -> tuple[str, str, FieldPath | None]:
    name = name.strip()
    if name in ALIASES:
        return ALIASES[name][0], ALIASES[name][1], None
    if name in columns:
        return name, "max" if name in _MAXIMISED else "min", None
    try:
        field = resolve(name, base)
    except FieldPathError as exc:
        import difflib
        close = difflib.get_close_matches(name, list(ALIASES) + list(columns), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise FieldPathError(f"{name!r} is neither a result nor a target field: {hint}results are "
                             f"{', '.join(sorted(ALIASES))} or a row column ({', '.join(columns[:6])}, ...); "
                             f"as a field: {exc}") from None
    return name, "min", field


def parse_objectives(text: str, base: Target, columns: Sequence[str]) -> tuple[Objective, ...]:
    """`time,sram.capacity,cost` (a `-` or `max:` before a name maximises it)."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise FieldPathError(f"--objectives {text!r}: an empty name; write e.g. time,sram.capacity,cost")
        sense = None
        if item.startswith(("max:", "min:")):
            sense, item = item[:3], item[4:]
        column, default, field = _column(item, base, columns)
        out.append(Objective(item, column, sense or default, field))
    if len({o.column for o in out}) != len(out):
        raise FieldPathError(f"--objectives {text!r}: an objective is named twice")
    return tuple(out)


@dataclass(frozen=True)
class Constraint:
    """`column <= bound` or `column >= bound` (SI units)."""

    text: str
    column: str
    op: str
    bound: float
    field: FieldPath | None = None

    def excess(self, row: dict[str, Any]) -> float:
        """How far the row is outside (<= 0: satisfied; a missing figure is infinitely outside)."""
        v = row.get(self.column)
        if v is None:
            return float("inf")
        return float(v) - self.bound if self.op == "<=" else self.bound - float(v)

    def holds(self, row: dict[str, Any]) -> bool:
        return self.excess(row) <= 0


def parse_constraint(text: str, base: Target, columns: Sequence[str]) -> Constraint:
    m = re.fullmatch(r"\s*([^<>=]+?)\s*(<=|>=)\s*(.+?)\s*", text)
    if m is None:
        raise FieldPathError(f"--constraint {text!r}: write NAME<=VALUE or NAME>=VALUE, e.g. area<=600 "
                             "or sram.capacity<=512MiB")
    name, op, value = m.groups()
    column, _, field = _column(name, base, columns)
    if field is not None:
        bound = float(field.parse(value))
    else:
        try:
            bound = float(value)
        except ValueError:
            raise FieldPathError(f"--constraint {text!r}: {value!r} is not a number (results are in SI units: "
                                 "seconds, joules, mm2, US$)") from None
    return Constraint(text, column, op, bound, field)


def pareto_front(rows: Sequence[dict[str, Any]], objectives: Sequence[Objective],
                 constraints: Sequence[Constraint] = ()) -> list[dict[str, Any]]:
    """The rows no other feasible row dominates (no worse in every objective, better in one),
    in their order; rows missing an objective, invalid or outside a constraint are left out.
    Equal points are all kept."""
    feasible = []
    for row in rows:
        losses = [o.loss(row) for o in objectives]
        if row.get("valid", True) and None not in losses and all(c.holds(row) for c in constraints):
            feasible.append((row, losses))
    front = []
    for row, mine in feasible:
        dominated = any(all(t <= m for t, m in zip(theirs, mine)) and any(t < m for t, m in zip(theirs, mine))
                        for _, theirs in feasible)
        if not dominated:
            front.append(row)
    return front
