"""Buffer offsets within each tier: no two live buffers overlap in (time × address).

MEMO's formulation (arXiv 2407.12117 §4.2): minimise the peak address ``M`` with
``A_i + S_i ≤ M`` and, for buffers whose lifetimes overlap, ``A_i + S_i ≤ A_j`` or
``A_j + S_j ≤ A_i``. Here the disjunctions are CP-SAT's NoOverlap2D over (time, address)
rectangles, solved exactly for small tiers and warm-started from best-fit; larger tiers
keep the best-fit layout (greedy by size, each buffer in the tightest gap that its
lifetime allows, as TFLite's arena planner does).

Fragmentation is the peak address over the largest sum of bytes live at one point
(1.0 = none).
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from typing import Sequence



@dataclass(frozen=True)
class Buffer:
    """One rectangle: `size` bytes of `tier` over points [start, end], at `offset`."""

    name: str
    tier: str
    kind: str
    start: int
    end: int
    size: int
    offset: int = -1

    @property
    def top(self) -> int:
        return self.offset + self.size

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.start <= other.end and other.start <= self.end


def align_up(n: int, align: int) -> int:
    return -(-n // align) * align


def peak_live(buffers: Sequence[Buffer]) -> int:
    """The largest sum of sizes live at one point (the lower bound on any layout's peak)."""
    events: dict[int, int] = {}
    for b in buffers:
        events[b.start] = events.get(b.start, 0) + b.size
        events[b.end + 1] = events.get(b.end + 1, 0) - b.size
    live = peak = 0
    for p in sorted(events):
        live += events[p]
        peak = max(peak, live)
    return peak


def best_fit(buffers: Sequence[Buffer]) -> list[Buffer]:
    """Greedy by size (then by lifetime, name): each buffer in the smallest gap that fits."""
    order = sorted(buffers, key=lambda b: (-b.size, -(b.end - b.start), b.name))
    placed: list[Buffer] = []
    spans: list[tuple[int, int, int, int]] = []  # (offset, top, start, end) of the placed, kept sorted
    for b in order:
        best, best_gap, cursor = None, None, 0
        for lo, hi, start, end in spans:
            if start > b.end or b.start > end:
                continue  # not live at the same time
            gap = lo - cursor
            if gap >= b.size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        offset = cursor if best is None else best
        placed.append(Buffer(b.name, b.tier, b.kind, b.start, b.end, b.size, offset))
        insort(spans, (offset, offset + b.size, b.start, b.end))
    return sorted(placed, key=lambda p: (p.offset, p.start, p.name))


def exact(buffers: Sequence[Buffer], time_limit: float = 5.0, align: int = 1) -> tuple[list[Buffer], bool]:
    """Minimum-peak offsets by CP-SAT NoOverlap2D, hinted with best-fit; (layout, proven optimal)."""
    start = best_fit(buffers)
    if len(buffers) <= 1:
        return start, True
    unit = max(align, 1)
    sizes = {b.name: -(-b.size // unit) for b in buffers}
    horizon = sum(sizes.values())
    from ortools.sat.python import cp_model  # imported when a solve runs (start-up)
    m = cp_model.CpModel()
    peak = m.NewIntVar(max(sizes.values()), horizon, "peak")
    xs, ys, offs = [], [], {}
    for b in buffers:
        s = sizes[b.name]
        off = m.NewIntVar(0, horizon - s, f"off[{b.name}]")
        offs[b.name] = off
        xs.append(m.NewFixedSizeIntervalVar(b.start, b.end - b.start + 1, f"t[{b.name}]"))
        ys.append(m.NewFixedSizeIntervalVar(off, s, f"a[{b.name}]"))
        m.Add(off + s <= peak)
    m.AddNoOverlap2D(xs, ys)
    hint = {b.name: b.offset for b in start}
    for b in buffers:
        m.AddHint(offs[b.name], -(-hint[b.name] // unit))
    m.Minimize(peak)
    solver = cp_model.CpSolver()
    solver.parameters.max_deterministic_time = time_limit  # deterministic: reruns give one layout
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return start, False
    layout = [Buffer(b.name, b.tier, b.kind, b.start, b.end, b.size, solver.Value(offs[b.name]) * unit)
              for b in buffers]
    if max(b.top for b in layout) > max(b.top for b in start):
        return start, False
    return sorted(layout, key=lambda p: (p.offset, p.start, p.name)), status == cp_model.OPTIMAL


def assign_offsets(buffers: Sequence[Buffer], exact_limit: int = 24, time_limit: float = 5.0,
                   align: int = 64) -> tuple[list[Buffer], str]:
    """Offsets for one tier's buffers (sizes rounded up to `align`); returns (layout, method)."""
    sized = [Buffer(b.name, b.tier, b.kind, b.start, b.end, align_up(max(b.size, 1), align)) for b in buffers]
    if 1 < len(sized) <= exact_limit:
        layout, optimal = exact(sized, time_limit, align)
        return layout, "exact" if optimal else "cp-sat (time limit)"
    return best_fit(sized), "best-fit"


def overlapping(buffers: Sequence[Buffer]) -> list[tuple[str, str]]:
    """Pairs of buffers that overlap in both time and address (empty for a valid layout)."""
    bad = []
    items = sorted(buffers, key=lambda b: b.offset)
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if b.offset >= a.top:
                break
            if a.overlaps_in_time(b):
                bad.append((a.name, b.name))
    return bad
