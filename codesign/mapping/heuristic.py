"""The baseline mapping: sections packed greedily, units shared out in proportion to work.

Stages join the current section, in order, while its memory units hold their buffers with
resident weights; a stage whose weights would fit a section of their own starts one, and a
stage whose weights fit nowhere streams them from the reload tier every tile. Inside a
section each stage gets its floor (one compute unit; the memory units its buffers need),
and the rest are shared out in proportion to compute and memory-unit work, by largest
remainder. The tile count is the one, of `KernelProfile.tile_counts`, that prices best.
CP-SAT starts from this and the reports show it as the baseline.
"""

from __future__ import annotations

from codesign.mapping.pipeline import PipelineCost, evaluate
from codesign.mapping.problem import KernelProfile, Mapping, MappingError, Problem


def share(work: list[int], floor: list[int], ceiling: list[int], total: int) -> list[int]:
    """Integers with floor <= x <= ceiling, sum at most `total`, the part above the floors
    in proportion to `work` (largest remainder; ties to the earlier stage)."""
    out = list(floor)
    spare = total - sum(floor)
    if spare <= 0:
        return out
    weight = sum(w for w, lo, hi in zip(work, floor, ceiling) if hi > lo)
    if weight <= 0:
        return out
    exact = [spare * w / weight if hi > lo else 0.0 for w, lo, hi in zip(work, floor, ceiling)]
    for i, x in enumerate(exact):
        out[i] = min(ceiling[i], floor[i] + int(x))
    left = total - sum(out)
    order = sorted(range(len(work)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    while left > 0:
        moved = False
        for i in order:
            if left > 0 and out[i] < ceiling[i]:
                out[i] += 1
                left -= 1
                moved = True
        if not moved:
            break
    return out


def sections(problem: Problem) -> tuple[list[int], list[bool]]:
    """Section of every stage and whether its weights stay resident (see the docstring)."""
    r = problem.resources
    where: list[int] = []
    resident: list[bool] = []
    k, used_m, used_c = 0, 0, 0
    for i in range(len(problem.stages)):
        keep, stream = problem.memory_floor(i, True), problem.memory_floor(i, False)
        if stream > r.memory_units:
            raise MappingError(f"kernel {problem.kernel}: stage {problem.stages[i].name} needs {stream} "
                               f"{r.memory_name}s even with streamed weights; the chip has {r.memory_units}")
        fits = used_c + 1 <= r.compute_units
        if fits and used_m + keep <= r.memory_units:
            choice = (k, True, keep)
        elif keep <= r.memory_units and used_c:
            k, used_m, used_c = k + 1, 0, 0
            choice = (k, True, keep)
        elif fits and used_m + stream <= r.memory_units:
            choice = (k, False, stream)
        else:
            k, used_m, used_c = k + 1, 0, 0
            choice = (k, keep <= r.memory_units, keep if keep <= r.memory_units else stream)
        where.append(choice[0])
        resident.append(choice[1])
        used_m += choice[2]
        used_c += 1
    return where, resident


def heuristic_mapping(problem: Problem) -> Mapping:
    """The proportional-to-work mapping of `problem` at its tile count."""
    r = problem.resources
    where, resident = sections(problem)
    units = [0] * len(problem.stages)
    memory = [0] * len(problem.stages)
    for k in range(max(where) + 1 if where else 0):
        members = [i for i, s in enumerate(where) if s == k]
        c = share([problem.stages[i].compute_ps for i in members], [1] * len(members),
                  [problem.unit_ceiling(i) for i in members], r.compute_units)
        m = share([problem.stages[i].memory_ps for i in members],
                  [problem.memory_floor(i, resident[i]) for i in members], [r.memory_units] * len(members),
                  r.memory_units)
        for j, i in enumerate(members):
            units[i], memory[i] = c[j], m[j]
    return Mapping(problem.tiles, tuple(units), tuple(memory), tuple(where), tuple(resident))


def best_tiles(profile: KernelProfile) -> tuple[Problem, Mapping, PipelineCost]:
    """The heuristic at every tile count worth trying; the fastest (ties: fewer tiles)."""
    best = None
    for tiles in profile.tile_counts():
        problem = profile.problem(tiles)
        mapping = heuristic_mapping(problem)
        cost = evaluate(problem, mapping)
        if best is None or cost.ps < best[2].ps:
            best = (problem, mapping, cost)
    assert best is not None
    return best
