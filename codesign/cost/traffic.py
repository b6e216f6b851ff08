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

from codesign.ir.graph import Node
from codesign.ir.types import TensorType
from codesign.targets import Target


def gemm_view(node: Node, types: Mapping[str, TensorType]) -> tuple[int, int, int] | None:
    """(m, n, k) of a contraction seen as one GEMM (implicit GEMM for conv)."""
    ops = [types[o] for o in node.operands]
    if node.op == "matmul":
        a, b = ops
        return prod(node.type.shape[:-1]), b.shape[-1], a.shape[-1]
    if node.op == "linear":
        return prod(node.type.shape[:-1]), ops[1].shape[0], ops[0].shape[-1]
    if node.op == "conv":
        w = ops[1]
        return node.type.shape[0] * prod(node.type.shape[2:]), w.shape[0], prod(w.shape[1:])
    return None


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
    if node.op == "matmul" and types[node.operands[1]].rank > 2:
        return types[node.operands[0]].shape[-2]
    return m


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
        if node.op == "attention":
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
