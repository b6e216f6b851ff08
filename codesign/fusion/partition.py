"""A partition of a graph's nodes into candidate fusion groups, and its kernel view.

The fusion pass grows groups by merging; this object answers the questions legality,
capacity and cost ask about a *hypothetical* merge without changing anything: which nodes
a merged group would hold, whether merging would close a cycle through another group, and
what kernel it would be.

Everything a question needs is kept per group and updated on `merge` in time proportional
to the smaller side (or to the edges between the two), never to the whole graph: the
members in graph order, the group's owner mapping (the smaller group's nodes move), the
edges between groups with the values they carry (`succ` / `pred`), the values it reads
from outside and the members it writes out (`GroupFacts`). Iteration orders are graph
orders or insertion orders, never a set's, so every answer (a cycle's path included) is
the same under any `PYTHONHASHSEED`.

Whether a merge closes a cycle is asked far more often than the path it would close is
shown, and between an early group and a late one (a value every decoder layer reads) the
path walks every layer between: `closes_cycle` answers the question from each node's
descendants (a bitset, computed once) and each group's members, and walks only when
those leave it open; `would_cycle` finds the path itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from codesign.ir.graph import Graph, Node
# a kernel's heavy ops and anchor are IR facts (codesign.ir.kernels); re-exported here
from codesign.ir.kernels import HEAVY_KINDS, Kernel, anchor_of, is_heavy  # noqa: F401
from codesign.ir.ops import OpKind, get_op


def is_free_constant(node: Node) -> bool:
    return get_op(node.op).kind is OpKind.source and node.type.numel <= 1


@dataclass
class GroupFacts:
    """What a group reads and writes, kept up to date by `Partition.merge`.

    `reads`: outside value -> operand occurrences of members reading it (first-read order);
    `writes`: members read outside the group or returned by the graph; `heavy`: heavy members
    in graph order; `sizes`: for the non-heavy members, (op kind, element count) -> the
    first member (graph order) with them."""

    reads: dict[str, int] = field(default_factory=dict)
    writes: set[str] = field(default_factory=set)
    heavy: list[str] = field(default_factory=list)
    sizes: dict[tuple[OpKind, int], str] = field(default_factory=dict)


@dataclass
class Partition:
    """Groups of node names (by group key) over one graph; mutated only by `merge`."""

    graph: Graph

    def __post_init__(self) -> None:
        self.nodes = self.graph.node_map()
        self.types = self.graph.types()
        self.order = {n.name: i for i, n in enumerate(self.graph.nodes)}
        self.outputs = frozenset(self.graph.outputs)
        self._root: dict[str, str] = {}  # node -> root node of its group (smaller groups move)
        self._key: dict[str, str] = {}  # root -> the group's key (its earliest node)
        self._root_of: dict[str, str] = {}  # key -> root
        self.members: dict[str, list[str]] = {}  # key -> member names in graph order
        self._successors: dict[str, list[str]] = {}  # key -> successors earliest first, until a merge
        self.users: dict[str, list[str]] = {}
        for node in self.graph.nodes:
            for o in node.operands:
                self.users.setdefault(o, []).append(node.name)
        for node in self.graph.nodes:
            if not is_free_constant(node):
                self._root[node.name] = self._key[node.name] = self._root_of[node.name] = node.name
                self.members[node.name] = [node.name]
        # group -> successor group -> value of the first read by the second -> operand count
        self.succ: dict[str, dict[str, dict[str, int]]] = {k: {} for k in self.members}
        self.pred: dict[str, dict[str, dict[str, int]]] = {k: {} for k in self.members}
        self.facts: dict[str, GroupFacts] = {}
        for node in self.graph.nodes:
            key = self.group_of(node.name)
            if key is None:
                continue
            facts = self.facts[key] = GroupFacts()
            for o in node.operands:
                facts.reads[o] = facts.reads.get(o, 0) + 1
                src = self.group_of(o)
                if src is not None:
                    carried = self.succ[src].setdefault(key, {})
                    self.pred[key].setdefault(src, carried)
                    carried[o] = carried.get(o, 0) + 1
            if node.name in self.outputs or self.users.get(node.name):
                facts.writes.add(node.name)
            if is_heavy(node):
                facts.heavy.append(node.name)
            else:
                facts.sizes.setdefault((get_op(node.op).kind, node.type.numel), node.name)
        # node -> bitset (bit i: the i-th node in graph order) of the nodes it reaches; a group's
        # `_bits` are its members, its `_reach` what they reach (both or'ed on a merge)
        bit = {n.name: 1 << i for i, n in enumerate(self.graph.nodes)}
        below: dict[str, int] = {}
        for node in reversed(self.graph.nodes):
            reach = 0
            for u in self.users.get(node.name, ()):
                reach |= bit[u] | below[u]
            below[node.name] = reach
        self._bits = {k: bit[k] for k in self.members}
        self._reach = {k: below[k] for k in self.members}

    # -- queries ---------------------------------------------------------------------------
    def group_of(self, node_name: str) -> str | None:
        root = self._root.get(node_name)
        return None if root is None else self._key[root]

    def group_nodes(self, key: str) -> list[Node]:
        return [self.nodes[n] for n in self.members[key]]

    def first(self, key: str) -> int:
        return self.order[self.members[key][0]]

    def last(self, key: str) -> int:
        return self.order[self.members[key][-1]]

    def successors(self, key: str) -> list[str]:
        """The groups reading a value of group `key`, earliest first (kept until a merge
        changes them: merging keeps the earlier key, so no other group's rank moves)."""
        ranked = self._successors.get(key)
        if ranked is None:
            ranked = self._successors[key] = sorted(self.succ[key], key=self.first)
        return ranked

    def closes_cycle(self, a: str, b: str) -> bool:
        """Whether merging a and b would make a cycle: `would_cycle(a, b) is not None`.

        A path from src through a third group into dst ends at a group p feeding dst; when
        some member of src reaches a member of p node by node, that path exists (the nodes
        between lie in groups other than dst: the groups form no cycle). Only when no such p
        is found is the path sought group by group, as `would_cycle` does, where a path may
        enter a group at one member and leave it from another that the first does not reach."""
        for src, dst in ((a, b), (b, a)):
            reach = self._reach[src]
            if any(p != src and reach & self._bits[p] for p in self.pred[dst]):
                return True
        return self.would_cycle(a, b) is not None

    def would_cycle(self, a: str, b: str) -> list[str] | None:
        """A path between a and b through a third group (merging would make a cycle): the
        first such path a depth-first walk meets, visiting successors earliest first.

        The walk keeps each visited group's parent rather than a path per stack entry, so a
        path thousands of groups long (a value read in every layer) costs its length once."""
        for src, dst in ((a, b), (b, a)):
            if all(p == src for p in self.pred[dst]):
                continue  # dst reads only src: no path through a third group ends in it
            limit = self.last(dst)
            stack = [(s, src) for s in reversed(self.successors(src)) if s != dst]
            parent: dict[str, str] = {}
            while stack:
                g, via = stack.pop()
                if g in parent:
                    continue
                parent[g] = via
                if dst in self.succ[g]:
                    path = [dst, g]
                    while path[-1] != src:
                        path.append(parent[path[-1]])
                    return path[::-1]
                for nxt in reversed(self.successors(g)):
                    if nxt not in parent and self.first(nxt) <= limit:
                        stack.append((nxt, g))
        return None

    def merged_members(self, a: str, b: str) -> list[str]:
        """The members of a and b together, in graph order."""
        ma, mb = self.members[a], self.members[b]
        if self.order[ma[-1]] < self.order[mb[0]]:
            return ma + mb
        if self.order[mb[-1]] < self.order[ma[0]]:
            return mb + ma
        return sorted(ma + mb, key=self.order.__getitem__)

    def kernel_of(self, names: Iterable[str], key: str = "candidate") -> Kernel:
        """The kernel a set of nodes would form (inputs and outputs as `kernels()` computes)."""
        chosen = sorted(set(names), key=self.order.__getitem__)
        inside = set(chosen)
        nodes = tuple(self.nodes[n] for n in chosen)
        inputs = tuple(dict.fromkeys(o for n in nodes for o in n.operands if o not in inside))
        outputs = tuple(n.name for n in nodes if n.name in self.outputs
                        or any(u not in inside for u in self.users.get(n.name, ())))
        return Kernel(key, None, nodes, inputs, outputs)

    def kernel(self, key: str) -> Kernel:
        return self.kernel_of(self.members[key], key)

    # -- change ------------------------------------------------------------------------------
    def merge(self, a: str, b: str) -> str:
        """Merge group b into group a; returns the surviving key (the earlier group)."""
        if self.first(b) < self.first(a):
            a, b = b, a
        crossing = [*self.succ[a].get(b, ()), *self.succ[b].get(a, ())]  # values one reads of the other
        for g in (a, b, *self.pred[a], *self.pred[b]):  # their successor lists change
            self._successors.pop(g, None)
        ra, rb = self._root_of.pop(a), self._root_of.pop(b)
        ma, mb = self.members[a], self.members.pop(b)
        big, small, moved = (ra, rb, mb) if len(ma) >= len(mb) else (rb, ra, ma)
        for n in moved:
            self._root[n] = big
        del self._key[small]
        self._key[big], self._root_of[a] = a, big
        if self.order[ma[-1]] < self.order[mb[0]]:
            ma.extend(mb)
        else:
            self.members[a] = sorted(ma + mb, key=self.order.__getitem__)
        self._merge_edges(a, b)
        self._merge_facts(a, b, crossing)
        self._bits[a] |= self._bits.pop(b)
        self._reach[a] |= self._reach.pop(b)
        return a

    def _merge_edges(self, a: str, b: str) -> None:
        for table, mirror in ((self.succ, self.pred), (self.pred, self.succ)):
            own = table[a]
            own.pop(b, None)
            for g, carried in table.pop(b).items():
                if g == a:
                    continue
                del mirror[g][b]
                mine = own.get(g)
                if mine is None:
                    own[g] = mirror[g][a] = carried
                else:
                    for v, c in carried.items():
                        mine[v] = mine.get(v, 0) + c

    def _merge_facts(self, a: str, b: str, crossing: list[str]) -> None:
        fa, fb = self.facts[a], self.facts.pop(b)
        reads, other = (fa.reads, fb.reads) if len(fa.reads) >= len(fb.reads) else (fb.reads, fa.reads)
        for v, c in other.items():
            reads[v] = reads.get(v, 0) + c
        for v in crossing:
            reads.pop(v, None)
        writes, other_w = (fa.writes, fb.writes) if len(fa.writes) >= len(fb.writes) else (fb.writes, fa.writes)
        writes |= other_w
        for v in crossing:
            if v not in self.outputs and all(self.group_of(u) == a for u in self.users.get(v, ())):
                writes.discard(v)
        sizes = fa.sizes
        for k, n in fb.sizes.items():
            if k not in sizes or self.order[n] < self.order[sizes[k]]:
                sizes[k] = n
        self.facts[a] = GroupFacts(reads, writes, sorted(fa.heavy + fb.heavy, key=self.order.__getitem__), sizes)

    def groups(self) -> list[list[str]]:
        return sorted(self.members.values(), key=lambda ms: self.order[ms[0]])
