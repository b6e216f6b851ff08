"""How often a kernel re-reads its operands from the home tier, given its tiling.

An output-stationary matmul tile (tm × tn) streams its A rows once per column tile and its
B columns once per row tile: A is read ⌈n/tn⌉ times, B ⌈m/tm⌉ times. FlashAttention keeps a
row block of Q and streams K and V once per row block. Everything else reads each operand
once. Tiles come from the group's `tile_<fast tier>` attribute when the tiling pass has set
it, else from a default sized to the fast tier.
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


@dataclass(frozen=True)
class TiledReread:
    """A `Reread` for the cost model: re-read factors from (tm, tn) tiles per contraction."""

    target: Target
    tiles: Mapping[str, tuple[int, ...]]  # node name -> tile (tm, tn, tk) or (br, bc)
    default: tuple[int, int, int]

    def __call__(self, node: Node, index: int, types: Mapping[str, TensorType]) -> float:
        if node.op == "attention":
            br = self.tiles.get(node.name, (64, 64))[0]
            lq = types[node.operands[0]].shape[-2]
            return 1.0 if index in (0, 3) else float(ceil(lq / br))
        view = gemm_view(node, types)
        if view is None or index > 1:
            return 1.0
        m, n, _ = view
        tm, tn = self.tiles.get(node.name, self.default)[:2]
        return float(ceil(n / tn)) if index == 0 else float(ceil(m / tm))
