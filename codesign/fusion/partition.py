"""A partition of a graph's nodes into candidate fusion groups, and its kernel view.

The fusion pass grows groups by merging; this object answers the questions legality,
capacity and cost ask about a *hypothetical* merge without changing anything: which nodes
a merged group would hold, whether merging would close a cycle through another group, and
what kernel it would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from codesign.ir.graph import Graph, Node
# a kernel's heavy ops and anchor are IR facts (codesign.ir.kernels); re-exported here
from codesign.ir.kernels import HEAVY_KINDS, Kernel, anchor_of, is_heavy  # noqa: F401
from codesign.ir.ops import OpKind, get_op


def is_free_constant(node: Node) -> bool:
    return get_op(node.op).kind is OpKind.source and node.type.numel <= 1


@dataclass
class Partition:
    """Groups of node names (by group key) over one graph; mutated only by `merge`."""

    graph: Graph

    def __post_init__(self) -> None:
        self.nodes = self.graph.node_map()
        self.types = self.graph.types()
        self.order = {n.name: i for i, n in enumerate(self.graph.nodes)}
        self.owner: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        for node in self.graph.nodes:
            if not is_free_constant(node):
                self.owner[node.name] = node.name
                self.members[node.name] = [node.name]
        self.users: dict[str, list[str]] = {}
        for node in self.graph.nodes:
            for o in node.operands:
                self.users.setdefault(o, []).append(node.name)

    # -- queries ---------------------------------------------------------------------------
    def group_of(self, node_name: str) -> str | None:
        return self.owner.get(node_name)

    def group_nodes(self, key: str) -> list[Node]:
        return [self.nodes[n] for n in self.members[key]]

    def successors(self, key: str) -> set[str]:
        out = set()
        for n in self.members[key]:
            for user in self.users.get(n, ()):
                g = self.owner.get(user)
                if g is not None and g != key:
                    out.add(g)
        return out

    def would_cycle(self, a: str, b: str) -> list[str] | None:
        """A path between a and b through a third group (merging would make a cycle)."""
        for src, dst in ((a, b), (b, a)):
            stack = [(s, [src, s]) for s in self.successors(src) if s != dst]
            seen: set[str] = set()
            while stack:
                g, path = stack.pop()
                if g in seen:
                    continue
                seen.add(g)
                for nxt in self.successors(g):
                    if nxt == dst:
                        return path + [dst]
                    if nxt not in seen and self.order[self.members[nxt][0]] <= self.order[self.members[dst][-1]]:
                        stack.append((nxt, path + [nxt]))
        return None

    def kernel_of(self, names: Iterable[str], key: str = "candidate") -> Kernel:
        """The kernel a set of nodes would form (inputs and outputs as `kernels()` computes)."""
        chosen = sorted(set(names), key=self.order.__getitem__)
        inside = set(chosen)
        nodes = tuple(self.nodes[n] for n in chosen)
        inputs: list[str] = []
        for n in nodes:
            for o in n.operands:
                if o not in inside and o not in inputs:
                    inputs.append(o)
        outputs = tuple(n.name for n in nodes if n.name in self.graph.outputs
                        or any(u not in inside for u in self.users.get(n.name, ())))
        return Kernel(key, None, nodes, tuple(inputs), outputs)

    def kernel(self, key: str) -> Kernel:
        return self.kernel_of(self.members[key], key)

    # -- change ------------------------------------------------------------------------------
    def merge(self, a: str, b: str) -> str:
        """Merge group b into group a; returns the surviving key (the earlier group)."""
        if self.order[self.members[b][0]] < self.order[self.members[a][0]]:
            a, b = b, a
        for n in self.members[b]:
            self.owner[n] = a
        self.members[a] = sorted(self.members[a] + self.members.pop(b), key=self.order.__getitem__)
        return a

    def groups(self) -> list[list[str]]:
        return sorted(self.members.values(), key=lambda ms: self.order[ms[0]])
