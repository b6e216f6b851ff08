"""The tiling pass: tiles for every kernel at every memory level, stored on its group.

For each kernel the anchor op (the fused group's main loop nest, or the lone op) is tiled
by `codesign.tiling`: at one compute unit's share of the fast tier (the tiles generated
code uses: one SM's shared memory on a GPU) and at the whole chip's fast tier (which sets
what the home tier sees, as the cost model explains in `cost.traffic`). The fast tier is
the target's first memory tier; a target whose `compute.tile_shape` is `power_of_two`
(GPUs) gets kernel-shaped matmul tiles. The group's plan (`codesign.ir.plan`) records
both, with the achieved traffic over the I/O lower bound, so reports can print
achieved / bound and a dump after `tile` can be edited and resumed. Lone heavy ops get a
group of their own to carry their tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from codesign.cost.traffic import gemm_view, per_batch_rows
from codesign.fusion.capacity import chip_capacity
from codesign.ir.graph import Graph, Group, Node
from codesign.ir.kernels import group_kind, is_heavy, kernel_anchor, kernels
from codesign.ir.ops import Template, get_op
from codesign.ir.ops.contraction import MATMUL
from codesign.ir.plan import GroupPlan, chip_rereads  # noqa: F401  (chip_rereads: re-exported)
from codesign.ir.types import TensorType
from codesign.passes.manager import PassContext
from codesign.passes.registry import Pass, PipelineError, register_pass
from codesign.tiling import choose_attention_tiles, choose_matmul_tiles, choose_tiles
from codesign.tiling.attention import flash_traffic
from codesign.tiling.generic import TileChoice
from codesign.tiling.matmul import choose_gpu_matmul_tiles, matmul_reads


def chip_tile(graph: Graph, node: Node, capacity_bytes: int, align: int,
              types: dict[str, TensorType] | None = None) -> tuple[tuple[int, ...], tuple[float, ...], float] | None:
    """Tiles at the whole chip's fast tier for a contraction or attention, how many times
    each operand is then read from the home tier, and achieved / lower-bound traffic
    (`types`: the graph's, when the caller has them)."""
    types = types if types is not None else graph.types()
    elem = node.type.dtype.itemsize
    words = max(capacity_bytes // elem, 4)
    if get_op(node.op).template is Template.attention:
        q, k, v = (types[o] for o in node.operands[:3])
        heads = 1
        for s in q.shape[:-2]:
            heads *= s
        causal = bool(node.attrs.get("causal"))
        t = choose_attention_tiles(q.shape[-2], q.shape[-1], words, n_k=k.shape[-2], e=v.shape[-1],
                                   batch_heads=heads, causal=causal, align=align)
        nq, nk, d, e = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
        if t.scheme == "flash":
            kv = (flash_traffic(nq, nk, d, e, t.br, t.bc, causal=causal) - nq * (d + e)) / (nk * (d + e))
        else:
            kv = max(1.0, (t.traffic / heads - nq * (d + e)) / (nk * (d + e)))
        reads = (1.0, round(kv, 4), round(kv, 4)) + ((1.0,) if len(node.operands) > 3 else ())
        return (t.br, t.bc), reads, t.ratio
    view = gemm_view(node, types)
    if view is None:
        return None
    m, n, k = view
    rows = per_batch_rows(node, types, m)
    batch = m // rows
    t = choose_matmul_tiles(rows, n, k, words, align=align, batch=batch) if batch > 1 \
        else choose_matmul_tiles(m, n, k, words, align=align)
    reads = tuple(float(r) for r in matmul_reads(rows, n, k, t.tm, t.tn, t.tk, t.order))
    return (t.tm, t.tn, t.tk), reads + (1.0,) * (len(node.operands) - 2), t.ratio


def gpu_tile_choice(graph: Graph, node: Node, structure, capacity: int, level: str,
                    target=None, types: dict[str, TensorType] | None = None) -> TileChoice | None:
    """For a GPU matmul/linear: the kernel-shaped tile (`choose_gpu_matmul_tiles`) laid over
    the anchor's domain loops (leading output dims share BLOCK_M, innermost first)."""
    if get_op(node.op).template is not Template.gemm:
        return None
    types = types if types is not None else graph.types()
    m, n, k = gemm_view(node, types)
    rates = {}
    if target is not None:
        from codesign.cost.model import peak_flops
        rates = dict(units=target.compute.units, peak_flops=peak_flops(target, node.type.dtype, True),
                     fast_bandwidth=target.total_bandwidth(target.memory[0].name))
    t = choose_gpu_matmul_tiles(m, n, k, capacity, node.type.dtype.itemsize, **rates)
    sizes = structure.loop_sizes
    tiles = [1] * len(sizes)
    n_loop, k_loop = len(sizes) - 2, len(sizes) - 1
    m_loops = [len(sizes) - 3] if get_op(node.op) is MATMUL else list(range(len(sizes) - 2))  # bmm: batch tiles 1
    remaining = t.tm
    for loop in reversed(m_loops):
        tiles[loop] = max(1, min(sizes[loop], remaining))
        remaining = max(1, remaining // tiles[loop])
    tiles[n_loop], tiles[k_loop] = t.tn, t.tk
    elem = node.type.dtype.itemsize
    return TileChoice(level, tuple(tiles), t.traffic * elem, t.lower_bound * elem, t.working_set * elem,
                      (), "output-stationary")


@register_pass
@dataclass(frozen=True)
class Tile(Pass):
    """Choose tiles per memory level for every kernel; record achieved / lower bound."""

    name: ClassVar[str] = "tile"
    summary: ClassVar[str] = ("tiles per memory level for each kernel's anchor op (traffic-minimising, "
                              "under capacity and alignment); achieved/bound recorded on the group")
    double_buffer: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        target = ctx.target
        if target is None:
            raise PipelineError("the tile pass needs a target (pass --target, or compile(..., target=...))")
        fast = target.memory[0].name
        unit = target.unit_capacity(fast)
        chip = chip_capacity(target)
        align = target.compute.tile_multiple
        groups = dict(graph.group_map())
        assignment: dict[str, int] = {}
        next_id = max(groups, default=-1) + 1
        types = graph.types()  # once: every kernel reads it
        for kernel in kernels(graph):
            anchor = kernel_anchor(kernel)
            if anchor is None or (kernel.group is None and not is_heavy(anchor)):
                continue
            group = kernel.group
            if group is None:
                kind, anchor_name = group_kind(kernel.nodes, False)
                group = Group(next_id, GroupPlan(kind=kind, anchor=anchor_name or anchor.name))
                next_id += 1
                for n in kernel.nodes:
                    assignment[n.name] = group.id
            plan = group.plan
            op = get_op(anchor.op)
            operands = [types[o] for o in anchor.operands]
            structure = op.structure(operands, anchor.type, op.attr_values(anchor.attrs))  # = structure_of
            subject = f"g{group.id} {kernel.name}"
            if 0 in structure.loop_sizes or any(t.numel == 0 for t in (*operands, anchor.type)):
                # a zero-size tensor: nothing to tile and no traffic; unit tiles keep plans valid
                groups[group.id] = Group(group.id, plan.with_tile(fast, (1,) * len(structure.loop_sizes),
                                                                  ratio=1.0, scheme="empty"))
                ctx.ledger.record(self.name, subject, "zero-size", f"anchor %{anchor.name} has a zero-size "
                                  "operand or result: no traffic, unit tiles", rule="tile")
                continue
            try:
                power_of_two = target.compute.tile_shape == "power_of_two"  # GPU kernel-shaped tiles
                choice = (gpu_tile_choice(graph, anchor, structure, unit, fast, target, types) if power_of_two else None) \
                    or choose_tiles(structure, operands, anchor.type, unit, align,
                                    causal=bool(anchor.attrs.get("causal", False)),
                                    double_buffer=self.double_buffer, level=fast)
            except ValueError as exc:
                ctx.ledger.record(self.name, subject, "untiled", f"no tile of %{anchor.name} fits one unit's "
                                  f"{fast} ({unit} B): {exc}", rule="capacity")
                groups[group.id] = group
                continue
            plan = plan.with_tile(fast, choice.tiles, ratio=round(choice.ratio, 4), scheme=choice.scheme)
            on_chip = chip_tile(graph, anchor, chip, align, types) if chip != unit or get_op(anchor.op).template is Template.attention \
                or gemm_view(anchor, types) else None
            if on_chip is not None:
                tiles, reads, ratio = on_chip
                plan = plan.with_chip(tiles, reads, round(ratio, 4))
            groups[group.id] = Group(group.id, plan)
            ctx.ledger.record(self.name, subject, f"tiles {list(choice.tiles)}",
                              f"anchor %{anchor.name}: {choice.scheme}, achieved/bound {choice.ratio:.2f} at {fast}"
                              + (f"; chip tiles {list(plan.chip_tile)} ({plan.chip_ratio:.2f}x bound)"
                                 if plan.chip_tile is not None else ""),
                              rule="tile", ratio=choice.ratio, working_set=choice.working_set_bytes,
                              capacity=unit, traffic=choice.traffic_bytes, bound=choice.lower_bound_bytes)
        nodes = [n.with_(group=assignment[n.name]) if n.name in assignment else n for n in graph.nodes]
        ordered = sorted(groups.values(), key=lambda g: g.id)
        return Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs, tuple(ordered))
