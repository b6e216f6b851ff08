"""Repeated structure: the indexed blocks of a graph (a decoder layer) and their structural hashes.

A frontier model is a few distinct layers repeated tens of times on different weights. Two
blocks are the *same computation* when their nodes match one for one modulo value names and
weight identity: the same op, attributes, result type, fusion group plan, region bodies and
module path relative to the block, and operands that refer to the same thing — a value of
the block itself (by position), a value of the block before it (by position: the carried
hidden state), a weight at the same path relative to the block, or one shared outside
value (rotary tables, the mask) by name. `signature` is that description as a hashable
tuple, so repeated layers are found with a dict, once, and any pass or the capture can do
one layer's work and apply it to every copy.

A block is a maximal contiguous run of nodes whose `loc` (torch module path) has the same
first indexed prefix (`model.layers.7`), as `codesign.fusion.policy` reads layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from codesign.ir.graph import Graph, Input, Node
from codesign.ir.plan import GroupPlan
from codesign.ir.types import TensorType

_INDEXED = re.compile(r"^(.*?)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class Block:
    """Nodes `start:stop` of a graph, all from module `container.index` (or its submodules)."""

    container: str
    index: int
    start: int
    stop: int

    @property
    def path(self) -> str:
        return f"{self.container}.{self.index}"

    def __len__(self) -> int:
        return self.stop - self.start


def block_of(loc: str | None) -> tuple[str, int] | None:
    """(container, index) of the first indexed prefix of a module path, if any."""
    m = _INDEXED.match(loc or "")
    return (m.group(1), int(m.group(2))) if m else None


def blocks(graph: Graph) -> list[Block]:
    """The graph's maximal runs of consecutive nodes from one indexed module, in graph order."""
    found: list[Block] = []
    current: tuple[str, int] | None = None
    start = 0
    for i, node in enumerate(graph.nodes):
        here = block_of(node.loc)
        if here != current:
            if current is not None:
                found.append(Block(current[0], current[1], start, i))
            current, start = here, i
    if current is not None:
        found.append(Block(current[0], current[1], start, len(graph.nodes)))
    return found


def relative(text: str | None, path: str) -> str | None:
    """`text` with the module path `path` (a whole dotted prefix or segment run) written as `*`."""
    if text is None:
        return None
    if text == path:
        return "*"
    if text.startswith(path + "."):
        return "*" + text[len(path):]
    return text.replace("." + path + ".", ".*.")


def signature(graph: Graph, block: Block, previous: Block | None = None,
              inputs: dict[str, Input] | None = None) -> tuple:
    """The structure of `block` modulo value names and weight identity (see the module
    docstring); two blocks with equal signatures are the same computation on their own
    weights. `previous`: the block whose values count as the carried state."""
    inputs = inputs if inputs is not None else {i.name: i for i in graph.inputs}
    nodes = graph.nodes
    local = {nodes[i].name: i - block.start for i in range(block.start, block.stop)}
    prev = ({nodes[i].name: i - previous.start for i in range(previous.start, previous.stop)}
            if previous is not None else {})
    groups = graph.group_map()
    path = block.path
    plans: dict[int, GroupPlan] = {}  # group id -> its plan modulo names, once per block
    rows = []
    for i in range(block.start, block.stop):
        node = nodes[i]
        refs = []
        for o in node.operands:
            if o in local:
                refs.append(("local", local[o]))
            elif o in prev:
                refs.append(("prev", prev[o]))
            elif o in inputs and inputs[o].kind.is_state and relative(o, path) != o:
                inp = inputs[o]
                refs.append(("state", inp.kind.value, inp.type, relative(o, path), relative(inp.source, path)))
            else:
                refs.append(("outer", o))
        group = None
        if node.group is not None:
            group = plans.get(node.group)
            if group is None:
                group = plans[node.group] = _plan_modulo_names(groups[node.group].plan, local)
        rows.append((node.op, tuple(sorted(node.attrs.items())), node.type, tuple(refs),
                     tuple(_region_text(r) for r in node.regions), relative(node.loc, path),
                     node.group is not None, group))
    return tuple(rows)


def _plan_modulo_names(plan: GroupPlan, local: Mapping[str, int]) -> GroupPlan:
    """A group plan with the node names it holds (its anchor, the mapping's stages) written
    as positions in the block, so that two layers' equal plans compare equal."""
    def position(name: str | None) -> str | None:
        return f"#{local[name]}" if name in local else name  # "#" starts no value name
    stages = tuple(position(n) for n in plan.map_stages) if plan.map_stages is not None else None
    return replace(plan, anchor=position(plan.anchor), map_stages=stages)


def _region_text(region: Graph) -> str:
    from codesign.ir.printer import print_graph
    return print_graph(region)


@dataclass(frozen=True)
class Repetition:
    """Consecutive blocks of one container that compute the same thing (`blocks[0]` may
    read different outside values than the rest, which read their predecessor)."""

    container: str
    blocks: tuple[Block, ...]

    @property
    def count(self) -> int:
        return len(self.blocks)


def repetitions(graph: Graph, min_count: int = 2) -> list[Repetition]:
    """Runs of at least `min_count` adjacent blocks of one container, indexed 0, 1, 2, ... in
    order, each block after the first equal in `signature` to the one before it (reading its
    predecessor as the carried state) and the first equal to the second but for what it
    reads from outside."""
    inputs = {i.name: i for i in graph.inputs}
    found: list[Repetition] = []
    run: list[Block] = []
    sig_prev: tuple | None = None

    def close() -> None:
        if len(run) >= min_count:
            found.append(Repetition(run[0].container, tuple(run)))

    for block in blocks(graph):
        if run and block.container == run[-1].container and block.index == run[-1].index + 1 \
                and block.start == run[-1].stop:
            sig = signature(graph, block, run[-1], inputs)
            if len(run) == 1:
                first = signature(graph, run[0], None, inputs)
                same = _shape_of(first) == _shape_of(sig)
            else:
                same = sig == sig_prev
            if same:
                run.append(block)
                sig_prev = sig
                continue
        close()
        run, sig_prev = [block], None
    close()
    return found


def _shape_of(sig: tuple) -> tuple:
    """A signature with every outside reference blurred: what a first block shares with the rest."""
    return tuple(row[:3] + (tuple("outside" if r[0] in ("prev", "outer") else r for r in row[3]),) + row[4:]
                 for row in sig)


def distinct_blocks(graph: Graph) -> dict[tuple, list[Block]]:
    """Blocks grouped by their signature (with predecessor-relative reads): how many distinct
    layers the graph has, and where each occurs."""
    inputs = {i.name: i for i in graph.inputs}
    table: dict[tuple, list[Block]] = {}
    previous: Block | None = None
    for block in blocks(graph):
        before = previous if previous is not None and previous.stop == block.start else None
        table.setdefault(signature(graph, block, before, inputs), []).append(block)
        previous = block
    return table


def nodes_of(graph: Graph, block: Block) -> Iterable[Node]:
    return graph.nodes[block.start:block.stop]


def kernel_signature(kernel, types: Mapping[str, TensorType], producers: Mapping[str, Node]) -> tuple:
    """A kernel's structure modulo value names: per node its op, attributes, result type
    (tier included), regions (by identity) and operands as a member's position or an input's;
    per input its type and the op of the node producing it (None: a graph input); the members
    it writes out. Everything a kernel's roofline cost or working set reads of it, so two
    kernels of equal signature (one in each decoder layer) cost the same. `types`, `producers`:
    the graph's value types and nodes by name."""
    local = {n.name: i for i, n in enumerate(kernel.nodes)}
    outside = {v: i for i, v in enumerate(kernel.inputs)}
    rows = tuple((n.op, tuple(sorted(n.attrs.items())), n.type, tuple(map(id, n.regions)),
                  tuple(("n", local[o]) if o in local else ("i", outside[o]) for o in n.operands))
                 for n in kernel.nodes)
    reads = tuple((types[v], producers[v].op if v in producers else None) for v in kernel.inputs)
    return rows, reads, tuple(local[o] for o in kernel.outputs)
