"""Brute force: every mapping of a small problem, priced by the evaluator, the best kept.

Sections (every contiguous split), weights resident or streamed, compute and memory units
per stage: all combinations, each kept only if the checker finds nothing wrong. It exists
to prove the CP-SAT model right on kernels small enough to enumerate (tests compare them).
"""

from __future__ import annotations

from itertools import product

from codesign.mapping.check import violations
from codesign.mapping.pipeline import evaluate
from codesign.mapping.problem import Mapping, MappingError, Problem

LIMIT = 2_000_000
"""Most mappings brute force will enumerate."""


def brute_force(problem: Problem) -> tuple[Mapping, int]:
    """The fastest feasible mapping and its time (ps); ties go to the first enumerated."""
    n, r = len(problem.stages), problem.resources
    splits = list(product((0, 1), repeat=max(n - 1, 0)))
    unit_options = [range(1, problem.unit_ceiling(s) + 1) for s in range(n)]
    memory_options = [range(1, r.memory_units + 1)] * n
    size = len(splits) * 2 ** n
    for options in (*unit_options, *memory_options):
        size *= len(options)
    if size > LIMIT:
        raise MappingError(f"kernel {problem.kernel}: {size} mappings to enumerate, more than {LIMIT}")
    best: tuple[Mapping, int] | None = None
    for split in splits:
        sections = [0]
        for step in split:
            sections.append(sections[-1] + step)
        for resident in product((False, True), repeat=n):
            for units in product(*unit_options):
                for memory in product(*memory_options):
                    mapping = Mapping(problem.tiles, tuple(units), tuple(memory), tuple(sections), resident)
                    if violations(problem, mapping):
                        continue
                    ps = evaluate(problem, mapping).ps
                    if best is None or ps < best[1]:
                        best = (mapping, ps)
    if best is None:
        raise MappingError(f"kernel {problem.kernel}: no feasible mapping")
    return best
