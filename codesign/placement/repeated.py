"""Placement of repeated layers: every middle layer's tensors rest where one layer's do.

A decoder layer repeated 80 times gives the placement ILP 80 copies of the same tensors with
the same lifetimes (shifted in time), the same readers and the same sizes; searching each
copy's tiers apart costs CP-SAT time that grows with the layers while it finds little: a
plan that treats the layers alike is what the search converges to. So the tensors of the
middle layers of a repetition (`ir.repeats.repetitions`) are *tied* to one steady-state
layer's: the solver keeps `x[copy, tier] == x[template, tier]`, and decides the template
layer, the first layers, the last one and the parts before and after them. The plan is
still a full assignment: evaluated, laid out (offsets) and checked on every tensor and step,
as an untied one is.

A tied plan need not equal the untied search's: where capacity leaves room for some layers'
weights but not all, only the untied model can fill it unevenly. Tests compare the predicted
times on models small enough for both searches to finish.

A copy is tied only when it matches its template exactly: kind, size, tiers, and the same
lifetime, writer and reads shifted by one step offset (state tensors: live throughout).
"""

from __future__ import annotations

from typing import Mapping

from codesign.ir.graph import Graph
from codesign.ir.repeats import relative, repetitions
from codesign.placement.problem import Problem, Tensor

TEMPLATE = 2  # the repetition's block whose tensors the middle blocks' follow (0 and 1 are its start)


def ties(graph: Graph, problem: Problem) -> dict[str, str]:
    """Tensor name -> the template tensor it rests like, for the tensors of every
    repetition's blocks after `TEMPLATE` and before its last (in problem order)."""
    tensors = {t.name: t for t in problem.tensors}
    state = {i.name for i in graph.inputs if i.kind.is_state}
    nodes = graph.nodes
    tied: dict[str, str] = {}
    for rep in repetitions(graph):
        if rep.count < TEMPLATE + 3:
            continue
        template = rep.blocks[TEMPLATE]
        own = {t - template.start: nodes[t].name for t in range(template.start, template.stop)}
        weights = _weights(graph, template, state)
        for block in rep.blocks[TEMPLATE + 1:-1]:
            pairs = [(nodes[t].name, own[t - block.start]) for t in range(block.start, block.stop)]
            mine = _weights(graph, block, state)
            pairs += [(name, weights[key]) for key, name in mine.items() if key in weights]
            for copy, original in pairs:
                if copy in tensors and original in tensors and _alike(tensors[copy], tensors[original]):
                    tied[copy] = original
    return {t.name: tied[t.name] for t in problem.tensors if t.name in tied}


def _weights(graph: Graph, block, state: set[str]) -> Mapping[str, str]:
    """The state a block reads that belongs to it, by its path relative to the block."""
    found: dict[str, str] = {}
    for node in graph.nodes[block.start:block.stop]:
        for o in node.operands:
            if o in state and relative(o, block.path) != o:
                found.setdefault(relative(o, block.path), o)
    return found


def _alike(copy: Tensor, original: Tensor) -> bool:
    if (copy.kind, copy.nbytes, copy.tiers, copy.splittable, copy.state) != \
            (original.kind, original.nbytes, original.tiers, original.splittable, original.state):
        return False
    if not copy.reads or len(copy.reads) != len(original.reads):
        return False
    shift = copy.reads[0][0] - original.reads[0][0]
    if any(a - b != shift or r != q for (a, r), (b, q) in zip(copy.reads, original.reads)):
        return False
    if copy.state:
        return (copy.start, copy.end, copy.writer) == (original.start, original.end, original.writer)
    moved = None if original.writer is None else original.writer + shift
    return (copy.start - shift, copy.end - shift, copy.writer) == (original.start, original.end, moved)
