"""Fusion decided once per distinct layer: a model shortened to a few of its repeated layers.

The fusion pass's decisions inside one decoder layer depend on that layer and its neighbours,
not on how many layers come before or after it. So a graph whose layers repeat
(`ir.repeats.repetitions`) is fused as a shortened graph — the part before the layers, the
first `KEEP` layers, the part after them reading the last kept layer — and the decisions are
applied to the full graph: the first layers' as they are, the steady-state layer's
(`TEMPLATE`) to every layer up to the last but one, the last kept layer's to the last one.
Groups and ledger records move as names do: a value of layer k at position t becomes the
value of layer k + d at position t, a module path `layers.k` becomes `layers.k+d`.

Whether the shortened graph reached its steady state is checked, not assumed: the layer
before the template, moved one layer on, must make the template's decisions exactly (same
groups, same ledger records). Where it does not — a decision that reaches across layers,
such as a refused cycle whose path walks every layer before it — or where a group reaches
past the next layer (a group may join a layer's end to the next layer's start, as a GPU
fuses a residual add into the next norm: it belongs to the earlier layer), `expand` returns
None and the pass fuses the whole graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from codesign.ir.graph import Graph
from codesign.ir.repeats import Repetition, blocks as blocks_of, repetitions

KEEP = 5  # layers the shortened graph keeps: 0, 1 (after the first), 2 and 3 (steady), 4 (last)
TEMPLATE = 3  # the steady-state layer whose decisions every middle layer takes
_VALUE = re.compile(r"%[A-Za-z0-9_][A-Za-z0-9_.$]*")


@dataclass(frozen=True)
class Record:
    """One ledger record of the fusion pass, before it is written: what `Ledger.record` takes."""

    subject: str
    choice: str
    reason: str
    data: Mapping[str, object]


@dataclass(frozen=True)
class Decisions:
    """What fusing a graph decided: the groups (member names in graph order, each with whether
    it streams as a layer kernel) and the ledger records, in the order the pass writes them."""

    groups: tuple[tuple[tuple[str, ...], bool], ...]
    edges: tuple[Record, ...]  # one per candidate edge, ordered by (consumer, producer)
    layers: tuple[Record, ...]  # the layer-streaming step's, in block order


@dataclass(frozen=True)
class Shortened:
    """A graph cut to `KEEP` layers of its longest repetition, and how its names map back."""

    full: Graph
    graph: Graph
    repetition: Repetition
    position: Mapping[str, tuple[int, int]]  # full graph: a layer's node -> (layer, offset)

    @property
    def count(self) -> int:
        return self.repetition.count

    def shift(self, text: str, delta: int) -> str:
        """`text` with every name of layer k (values, and module paths `container.k`) moved
        to layer k + `delta`."""
        if delta == 0:
            return text
        blocks, nodes = self.repetition.blocks, self.full.nodes
        container = re.escape(self.repetition.container)

        low, high = blocks[0].index, blocks[-1].index  # module indices of the repeated layers

        def path(m: re.Match) -> str:
            k = int(m.group(2))
            return f"{m.group(1)}{k + delta}" if low <= k <= high and low <= k + delta <= high else m.group(0)
        paths = re.compile(rf"({container}\.)(\d+)(?!\d)")

        def value(m: re.Match) -> str:
            token = m.group(0)
            where = self.position.get(token[1:])
            if where is not None and 0 <= where[0] + delta < len(blocks):
                return "%" + nodes[blocks[where[0] + delta].start + where[1]].name
            return paths.sub(path, token)
        out, last = [], 0
        for m in _VALUE.finditer(text):
            out.append(paths.sub(path, text[last:m.start()]))
            out.append(value(m))
            last = m.end()
        out.append(paths.sub(path, text[last:]))
        return "".join(out)

    def expand(self, decided: Decisions) -> Decisions | None:
        """The shortened graph's decisions applied to the full graph, or None when its
        steady state is not shown (see the module docstring)."""
        order = {n.name: i for i, n in enumerate(self.full.nodes)}
        first = self.repetition.blocks[0].start
        position = self.position

        def seg(name: str) -> int:
            where = position.get(name)
            return where[0] if where is not None else (-1 if order[name] < first else KEEP)
        by_segment: dict[int, list[tuple[tuple[str, ...], bool]]] = {}
        for members, layer in decided.groups:
            segments = {seg(n) for n in members}
            low, high = min(segments), max(segments)
            if low <= TEMPLATE and high > (TEMPLATE + 1 if low == TEMPLATE else TEMPLATE):
                return None  # a group across more layers than one boundary of a copied layer
            by_segment.setdefault(low, []).append((members, layer))
        edges: dict[int, list[Record]] = {}
        for r in decided.edges:
            edges.setdefault(seg(_consumer(r.subject)), []).append(r)
        layers: dict[int, list[Record]] = {}
        starts = {b.path: b.start for b in blocks_of(self.full)}
        for r in decided.layers:
            path = r.subject.removeprefix("layer ")
            if path not in starts:
                return None
            layers.setdefault(seg(self.full.nodes[starts[path]].name), []).append(r)
        before = TEMPLATE - 1
        if [self._moved_group(g, 1) for g in by_segment.get(before, [])] != by_segment.get(TEMPLATE, []) \
                or [self._moved(r, 1) for r in edges.get(before, [])] != edges.get(TEMPLATE, []) \
                or [self._moved(r, 1) for r in layers.get(before, [])] != layers.get(TEMPLATE, []):
            return None
        n = self.count
        plan = [(s, 0) for s in range(-1, TEMPLATE)] + [(TEMPLATE, d) for d in range(n - 1 - TEMPLATE)] \
            + [(KEEP - 1, n - KEEP), (KEEP, n - KEEP)]
        groups = [self._moved_group(g, d) for s, d in plan for g in by_segment.get(s, [])]
        groups.sort(key=lambda g: order[g[0][0]])
        return Decisions(tuple(groups),
                         tuple(self._moved(r, d) for s, d in plan for r in edges.get(s, [])),
                         tuple(self._moved(r, d) for s, d in plan for r in layers.get(s, [])))

    def _moved(self, r: Record, delta: int) -> Record:
        if delta == 0:
            return r
        return Record(self.shift(r.subject, delta), r.choice, self.shift(r.reason, delta), r.data)

    def _moved_group(self, group: tuple[tuple[str, ...], bool], delta: int) -> tuple[tuple[str, ...], bool]:
        if delta == 0:
            return group
        blocks, nodes = self.repetition.blocks, self.full.nodes
        members = tuple(nodes[blocks[self.position[m][0] + delta].start + self.position[m][1]].name
                        if m in self.position else m for m in group[0])
        return members, group[1]


def _consumer(subject: str) -> str:
    """The consumer of an edge record's subject `%producer -> %consumer`."""
    return subject.rsplit(" -> %", 1)[1]


def shorten(graph: Graph) -> Shortened | None:
    """The graph cut to `KEEP` layers of its longest repetition, the part after the layers
    reading the last kept layer instead of the last layer; None when no repetition is long
    enough to gain, or when something after the layers reads a layer other than the last."""
    found = [r for r in repetitions(graph) if r.count > KEEP]
    if not found:
        return None
    rep = max(found, key=lambda r: (r.count * len(r.blocks[0]), -r.blocks[0].start))
    blocks = rep.blocks
    if any(len(b) != len(blocks[0]) for b in blocks):
        return None
    nodes = graph.nodes
    position = {nodes[i].name: (k, i - b.start) for k, b in enumerate(blocks) for i in range(b.start, b.stop)}
    last, kept = blocks[-1], blocks[KEEP - 1]
    rename = {nodes[i].name: nodes[kept.start + i - last.start].name for i in range(last.start, last.stop)}

    def reads_last_only(names: Sequence[str]) -> bool:
        return all(position.get(o, (len(blocks) - 1,))[0] == len(blocks) - 1 for o in names)
    after = nodes[last.stop:]
    if not all(reads_last_only(n.operands) for n in after) or not reads_last_only(graph.outputs):
        return None
    tail = tuple(n.with_(operands=tuple(rename.get(o, o) for o in n.operands)) for n in after)
    short = Graph(graph.name, graph.inputs, nodes[:kept.stop] + tail,
                  tuple(rename.get(o, o) for o in graph.outputs), graph.groups)
    return Shortened(graph, short, rep, position)
