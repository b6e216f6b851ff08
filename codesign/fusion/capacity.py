"""Does a fused group fit the fast tier? Its working set at representative tiles.

A group is a kernel whose live tiles must sit in on-chip memory together: the anchor's
operand tiles (double-buffered, so loads overlap compute), one tile of every extra input and
every intermediate the group keeps on chip. On a GPU the budget is one SM's shared memory;
on a dataflow chip it is the socket's SRAM, and a streamed layer holds a double-buffered
stage buffer for every value flowing through it (its weights stream from HBM in tiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from codesign.fusion.partition import anchor_of
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel
from codesign.ir.ops import OpKind, Template, get_op, node_structure
from codesign.ir.types import TensorType
from codesign.targets import Target

POINTWISE_BLOCK = 1024  # elements per program of a pointwise kernel
STAGE_ROWS = 128  # rows of a dataflow stage buffer
DOUBLE_BUFFER = 2


def fast_capacity(target: Target) -> int:
    """Bytes of the fast tier one kernel instance may use (per SM on a GPU)."""
    tier = target.memory[0]
    return target.unit_capacity(tier.name)


def chip_capacity(target: Target) -> int:
    """Bytes of the fast tier of one whole socket (all SMs' shared memory; an SN40L's SRAM)."""
    tier = target.memory[0]
    return target.total_capacity(tier.name) // max(target.sockets, 1)


def default_contraction_tile(target: Target, elem: int) -> tuple[int, int, int]:
    """A square-ish (tm, tn, tk) whose double-buffered operand tiles use half the budget."""
    budget = fast_capacity(target) // 2
    align = target.compute.tile_multiple
    t = align
    while DOUBLE_BUFFER * elem * (2 * (2 * t) * (t)) <= budget and t < 256:
        t *= 2
    return t, t, max(align, t // 2)


@dataclass(frozen=True)
class WorkingSet:
    bytes: int
    detail: str


def _row(node: Node, types: dict[str, TensorType]) -> int:
    """Elements of one reduction row (the extent of the reduced loops)."""
    structure = node_structure(node, types)
    return prod(d.size for d in structure.domain if d.kind.value == "reduction") or 1


def _stored_values(kernel: Kernel, graph: Graph, nodes: dict[str, Node] | None = None) -> list[str]:
    """Values a kernel keeps in buffers: its inputs and the results of its non-layout ops
    (a layout op is an index map over its operand's buffer; a scalar constant is an
    immediate)."""
    nodes = nodes if nodes is not None else graph.node_map()
    values = []
    for v in dict.fromkeys(kernel.inputs + tuple(n.name for n in kernel.nodes)):
        node = nodes.get(v)
        if node is not None and get_op(node.op).kind in (OpKind.layout, OpKind.source) and v not in kernel.inputs:
            continue
        if node is not None and get_op(node.op).kind is OpKind.source and node.type.numel <= 1:
            continue
        values.append(v)
    return values


def _epilogue_chain(kernel: Kernel, anchor: Node) -> set[str]:
    """Pointwise and layout results computed from the anchor's accumulator, tile by tile.

    They live in registers, computed element by element from the accumulator's tile: a
    layout op is only an index map (no storage), and an elementwise chain keeps about one
    temporary tile live besides the accumulator (GELU's x beside tanh(...)), so an
    epilogue of any length is charged one fp32 tile, not one per op. The tiles it *loads*
    (bias, residual) are kernel inputs and are counted apart."""
    chain: set[str] = {anchor.name}
    for node in kernel.nodes:
        if node.name in chain or get_op(node.op).kind not in (OpKind.pointwise, OpKind.layout):
            continue
        if any(o in chain for o in node.operands):
            chain.add(node.name)
    chain.discard(anchor.name)
    return chain


def working_set(graph: Graph, kernel: Kernel, target: Target, *, layer: bool = False,
                types: dict[str, TensorType] | None = None, nodes: dict[str, Node] | None = None) -> WorkingSet:
    """`types` and `nodes` (the graph's, when the caller has them) save recomputing them."""
    types = types if types is not None else graph.types()
    values = _stored_values(kernel, graph, nodes)
    if layer:
        total = 0
        for v in values:
            t = types[v]
            row_bytes = (t.shape[-1] if t.rank else 1) * t.dtype.itemsize
            total += DOUBLE_BUFFER * min(t.nbytes, STAGE_ROWS * row_bytes)
        return WorkingSet(total, f"{len(values)} double-buffered stage buffers of up to {STAGE_ROWS} rows")
    anchor = anchor_of(kernel.nodes)
    if not values:
        return WorkingSet(0, "layout and constants only: no buffers")
    elem = max(types[v].dtype.itemsize for v in values)
    others = [v for v in values if anchor is None or (v != anchor.name and v not in anchor.operands)]
    if anchor is None:
        return WorkingSet(sum(min(types[v].nbytes, POINTWISE_BLOCK * elem) for v in values),
                          f"{len(values)} blocks of up to {POINTWISE_BLOCK} elements")
    kind = get_op(anchor.op).kind
    if get_op(anchor.op).template is Template.attention:
        d = types[anchor.operands[0]].shape[-1]
        br = bc = 64
        base = elem * (br * d + DOUBLE_BUFFER * 2 * bc * d) + 4 * (br * bc + br * d)
        extra = sum(min(types[v].nbytes, elem * br * d) for v in others)
        return WorkingSet(base + extra, f"attention tiles Br=Bc={br}, d={d}, +{len(others)} epilogue tiles")
    if kind is OpKind.contraction:
        tm, tn, tk = default_contraction_tile(target, elem)
        base = DOUBLE_BUFFER * elem * (tm * tk + tk * tn) + 4 * tm * tn
        chain = _epilogue_chain(kernel, anchor)
        buffered = [v for v in others if v not in chain]
        computes = any(get_op(n.op).kind is OpKind.pointwise for n in kernel.nodes if n.name in chain)
        extra = sum(min(types[v].nbytes, elem * tm * tn) for v in buffered) + (4 * tm * tn if computes else 0)
        return WorkingSet(base + extra, f"tiles {tm}x{tn}x{tk} (double-buffered) + {len(buffered)} operand tiles"
                          + (f" + one live temporary for a {len(chain)}-op epilogue" if computes else ""))
    if kind in (OpKind.reduction, OpKind.normalization):
        row = _row(anchor, types)
        total = sum(min(types[v].nbytes, row * elem) for v in values)
        return WorkingSet(total, f"{len(values)} rows of up to {row} elements kept on chip")
    return WorkingSet(POINTWISE_BLOCK * elem * len(values), f"{len(values)} blocks of {POINTWISE_BLOCK} elements")
