"""How often a kernel re-reads its operands from the home tier, given its tiling.

An output-stationary matmul tile (tm × tn) streams its A rows once per column tile and its
B columns once per row tile: A is read ⌈n/tn⌉ times, B ⌈m/tm⌉ times. FlashAttention keeps a
row block of Q and streams K and V once per row block. Everything else reads each operand
once.

Which tile sets home-tier traffic? Not one SM's: the tiles resident on all compute units at
once share their operands through the on-chip hierarchy (L2 on a GPU, the PMU mesh on an
SN40L), so the home tier sees the traffic of a tile sized to the *aggregate* fast tier.
(A group's legality, by contrast, is checked against one unit's share: see
`fusion.capacity`.) Tiles come from the tiling pass when it has run, else this default.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Mapping

from codesign.ir.affine import Dim
from codesign.ir.graph import Node
from codesign.ir.ops import IterKind, Template, get_op, node_structure
from codesign.ir.types import TensorType
from codesign.targets import Target


def gemm_loops(node: Node, types: Mapping[str, TensorType]
               ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """A GEMM or conv template's loops seen as one GEMM A·B (implicit GEMM for conv), read
    from its structure (A: operand 0, B: operand 1): `n`, the parallel loops that index B
    but are not a plain index of A (a grouped conv's output channel reaches A only through
    its group); `m`, the other parallel loops; `k`, the reduction loops; `rows`, the m loops
    that do not index B (the rows of A that meet each B: fewer than m when B is batched).
    Returns (sizes, m, n, k, rows), or None for any other op."""
    op = get_op(node.op)
    if op.template not in (Template.gemm, Template.conv):
        return None
    s = node_structure(node, types)
    a, b = s.operand_maps[0], s.operand_maps[1]
    a_plain = {e.index for e in a.results if isinstance(e, Dim)}
    b_used = b.dims_used()
    parallel = [i for i, d in enumerate(s.domain) if d.kind is IterKind.parallel]
    n = tuple(i for i in parallel if i in b_used and i not in a_plain)
    m = tuple(i for i in parallel if i not in n)
    k = tuple(i for i, d in enumerate(s.domain) if d.kind is IterKind.reduction)
    return s.loop_sizes, m, n, k, tuple(i for i in m if i not in b_used)


def gemm_view(node: Node, types: Mapping[str, TensorType]) -> tuple[int, int, int] | None:
    """(m, n, k) of a contraction seen as one GEMM (implicit GEMM for conv): `gemm_loops`."""
    loops = gemm_loops(node, types)
    if loops is None:
        return None
    sizes, m, n, k, _ = loops
    return prod(sizes[i] for i in m), prod(sizes[i] for i in n), prod(sizes[i] for i in k)


def aggregate_tile(target: Target, elem: int = 2) -> tuple[int, int, int]:
    """A square (t, t, t/2) tile whose double-buffered operands and accumulator fill half of
    the aggregate fast tier, aligned to the target's tile multiple."""
    from codesign.fusion.capacity import chip_capacity
    budget = chip_capacity(target) // 2
    align = target.compute.tile_multiple
    # 2 (double buffer) * elem * (t*t/2 + t/2*t) + 4 * t*t = (2*elem + 4) * t*t
    t = int((budget / (2 * elem + 4)) ** 0.5) // align * align
    t = max(align, t)
    return t, t, max(align, t // 2 // align * align)


def per_batch_rows(node: Node, types: Mapping[str, TensorType], m: int) -> int:
    """Rows of A that meet each B: all of them, unless B is batched (a bmm reads batch b's
    B only for batch b's rows)."""
    loops = gemm_loops(node, types)
    if loops is None or loops[4] == loops[1]:
        return m
    return prod(loops[0][i] for i in loops[4])


@dataclass(frozen=True)
class TiledReread:
    """A `Reread` for the cost model: per-operand read counts chosen by the tiling pass
    (`rereads`: node name → one factor per operand), else from the default chip tile."""

    target: Target
    rereads: Mapping[str, tuple[float, ...]]
    default: tuple[int, int, int]

    def __call__(self, node: Node, index: int, types: Mapping[str, TensorType]) -> float:
        known = self.rereads.get(node.name)
        if known is not None:
            return known[index] if index < len(known) else 1.0
        if get_op(node.op).template is Template.attention:
            lq, lk = types[node.operands[0]].shape[-2], types[node.operands[1]].shape[-2]
            br, bc = self.default[0], self.default[1]
            return 1.0 if index in (0, 3) or bc >= lk else float(ceil(lq / br))
        view = gemm_view(node, types)
        if view is None or index > 1:
            return 1.0
        m, n, _ = view
        tm, tn = self.default[:2]
        if index == 0:
            return float(ceil(n / tn))
        return float(ceil(per_batch_rows(node, types, m) / tm))
