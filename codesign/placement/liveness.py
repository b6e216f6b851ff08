"""Liveness of every tensor over the kernel order (the "group order").

A program point is one kernel of `kernels(graph)`. A tensor is every value that crosses a
kernel boundary: graph inputs, and node results read by another kernel or returned. Values
made and consumed inside one kernel never leave the fast tier (they are the kernel's tiles),
so placement does not see them.

Lifetimes:

* weights, buffers, constants and experts' resting copies belong to the model: they are live
  at every point (the program runs again and again; a weight is resident between calls);
* runtime inputs are live from the first point to their last reader;
* node results are live from their producer to their last reader (the last point for graph
  outputs).

Kinds follow the target schema's `holds`: ``weights``, ``activations``, ``kv_cache``,
``experts``. A moe node's stacked expert weights (operands 2..) are ``experts``; buffers named
like a cache (``cache``, ``past_key``, ``past_value``) and returned key/value projections
are ``kv_cache``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from codesign.ir.graph import Graph, InputKind
from codesign.ir.kernels import Kernel, kernels as graph_kernels
from codesign.ir.ops import Template, get_op

KINDS = ("weights", "activations", "kv_cache", "experts")
_CACHE = re.compile(r"(cache|past_key|past_value|kv_)", re.I)
_KV_PROJ = re.compile(r"(k_proj|v_proj|key_states|value_states)", re.I)


@dataclass(frozen=True)
class Live:
    """One tensor's lifetime: [start, end] over kernel indices, and who touches it."""

    name: str
    kind: str
    nbytes: int
    start: int
    end: int
    producer: int | None  # kernel index that writes it (None for graph inputs)
    readers: tuple[int, ...]  # kernel indices that read it, ascending
    state: bool  # belongs to the model (live at every point)

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def tensor_kind(graph: Graph, name: str, experts: frozenset[str] = frozenset()) -> str:
    """The `holds` kind of a value of `graph`."""
    if name in experts:
        return "experts"
    inputs = {i.name: i for i in graph.inputs}
    if name in inputs:
        inp = inputs[name]
        if inp.kind is InputKind.param:
            return "weights"
        if inp.kind in (InputKind.buffer, InputKind.const):
            return "kv_cache" if _CACHE.search(inp.source or inp.name) else "weights"
        return "kv_cache" if _CACHE.search(inp.name) else "activations"
    node = graph.node_map().get(name)
    if node is not None and name in graph.outputs and _KV_PROJ.search(node.loc or ""):
        return "kv_cache"
    return "activations"


def expert_weights(graph: Graph) -> frozenset[str]:
    """Names of the stacked expert weights of the graph's moe nodes."""
    return frozenset(o for n in graph.nodes if get_op(n.op).template is Template.moe for o in n.operands[2:])


def liveness(graph: Graph, kernel_list: Sequence[Kernel] | None = None) -> list[Live]:
    """Every cross-kernel tensor with its lifetime, in first-appearance order."""
    ks = list(kernel_list) if kernel_list is not None else graph_kernels(graph)
    n = len(ks)
    types = graph.types()
    experts = expert_weights(graph)
    state = {i.name for i in graph.inputs if i.kind.is_state}
    producer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    order: list[str] = []
    for i in graph.inputs:
        order.append(i.name)
    for index, k in enumerate(ks):
        for v in k.inputs:
            readers.setdefault(v, []).append(index)
        for v in k.outputs:
            producer[v] = index
            if v not in order:
                order.append(v)
    result = []
    for name in order:
        reads = sorted(set(readers.get(name, ())))
        made = producer.get(name)
        returned = name in graph.outputs
        if not reads and not returned and name not in state:
            continue  # dead, or never leaves its kernel
        if name in state:
            start, end = 0, n - 1
        else:
            start = made if made is not None else 0
            end = n - 1 if returned else max(reads + [start])
        result.append(Live(name, tensor_kind(graph, name, experts), types[name].nbytes, start, end,
                           made, tuple(reads), name in state))
    return result


def live_at(lives: Sequence[Live], point: int) -> list[Live]:
    """Tensors live at a program point."""
    return [t for t in lives if t.start <= point <= t.end]
