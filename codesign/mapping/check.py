"""The independent checker: a mapping never over-allocates units, capacity, banks or links.

It re-derives every limit from the problem, apart from the solvers that produced the
mapping: the `map` pass runs it after every solve (and on a hand-edited plan), and the
tests run it on every mapping they make. A violation is a sentence naming the stage.
"""

from __future__ import annotations

from codesign.mapping.pipeline import evaluate
from codesign.mapping.problem import Mapping, Problem


def violations(problem: Problem, mapping: Mapping) -> list[str]:
    """Every way `mapping` breaks the chip's limits (empty: it is feasible)."""
    r, n = problem.resources, len(problem.stages)
    out: list[str] = []
    fields = {"units": mapping.units, "memory": mapping.memory, "sections": mapping.sections,
              "resident": mapping.resident}
    for name, values in fields.items():
        if len(values) != n:
            return [f"map_{name} has {len(values)} entries for {n} stages"]
    if mapping.tiles != problem.tiles:
        out.append(f"the mapping streams {mapping.tiles} tiles, the problem {problem.tiles}")
    if n and mapping.sections[0] != 0:
        out.append(f"the first stage is in section {mapping.sections[0]}; sections count from 0")
    for i in range(1, n):
        step = mapping.sections[i] - mapping.sections[i - 1]
        if step not in (0, 1):
            out.append(f"stage {problem.stages[i].name} is in section {mapping.sections[i]} after section "
                       f"{mapping.sections[i - 1]}: sections are contiguous runs of stages in order")
    for i, s in enumerate(problem.stages):
        c, m = mapping.units[i], mapping.memory[i]
        if c < 1:
            out.append(f"stage {s.name} has {c} {r.compute_name}s (at least 1)")
        if c > max(s.max_units, 1):
            out.append(f"stage {s.name} has {c} {r.compute_name}s but a tile keeps only {s.max_units} busy")
        weights = s.weight_bytes if mapping.resident[i] else min(s.weight_bytes, r.memory_capacity)
        need = s.buffer_bytes + weights
        if m * r.memory_capacity < need:
            out.append(f"stage {s.name} needs {need} B of buffers"
                       f"{' with resident weights' if mapping.resident[i] else ''} but its {m} "
                       f"{r.memory_name}s hold {m * r.memory_capacity} B")
        if m * r.banks < s.buffers:
            out.append(f"stage {s.name} uses {s.buffers} buffers at once but its {m} {r.memory_name}s "
                       f"have {m * r.banks} banks")
    if out:
        return out
    for k in range(mapping.section_count):
        members = [i for i in range(n) if mapping.sections[i] == k]
        used_c = sum(mapping.units[i] for i in members)
        used_m = sum(mapping.memory[i] for i in members)
        if used_c > r.compute_units:
            out.append(f"section {k} uses {used_c} {r.compute_name}s of {r.compute_units}")
        if used_m > r.memory_units:
            out.append(f"section {k} uses {used_m} {r.memory_name}s of {r.memory_units}")
    if out:
        return out
    # links: per period of its section, no strip boundary carries more than its links move
    cost = evaluate(problem, mapping)
    period = {sec.index: sec.period_ps for sec in cost.sections}
    for b in range(n - 1):
        k = mapping.sections[b]
        if mapping.sections[b + 1] != k:
            continue
        carried = sum(problem.edges[e].tile_bytes for e in problem.crossing(b)
                      if mapping.sections[problem.edges[e].src] == mapping.sections[problem.edges[e].dst])
        capacity = r.boundary_bandwidth * period[k] / 1e12
        if carried > capacity * (1 + 1e-9) + 1:
            out.append(f"the boundary after stage {problem.stages[b].name} carries {carried} B a tile but its "
                       f"links move {capacity:.0f} B in the section's period of {period[k]} ps")
    return out


def check(problem: Problem, mapping: Mapping) -> None:
    """Raise `MappingError` listing every violation."""
    from codesign.mapping.problem import MappingError
    found = violations(problem, mapping)
    if found:
        raise MappingError(f"kernel {problem.kernel}: the mapping over-allocates the chip: " + "; ".join(found))
