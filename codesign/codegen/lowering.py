"""What every backend reads off a node's structure in the same way.

A node's structure (`OpDef.structure`: domain, maps, scalar body) follows from its operand
types and attributes (`node_structure`). A *row-major view* is an elementwise node whose body
copies its one operand through the reshape map: it reads the operand's elements in the order
they lie in memory, so a backend aliases that buffer (C++) or views it (Triton) instead of
copying. `avg_pool_divisors` is torch's divisor per output position of an average pool,
asked of the reference itself, for the backends that divide after summing a window.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from codesign.ir.affine import AffineMap
from codesign.ir.graph import Node
from codesign.ir.ops.layout import reshape_map
from codesign.ir.ops.registry import Structure, Template, get_op, node_structure  # noqa: F401  (re-exported)
from codesign.ir.scalar import is_plain_load
from codesign.ir.types import TensorType


@lru_cache(maxsize=None)
def _row_major(src: tuple[int, ...], dst: tuple[int, ...]) -> AffineMap:
    return reshape_map(src, dst)


def reads_row_major(amap: AffineMap | None, src: Sequence[int], dst: Sequence[int]) -> bool:
    """Does `amap` read an operand of shape `src` at the same row-major position (a reshape)?"""
    return amap is not None and prod(src) == prod(dst) and amap == _row_major(tuple(src), tuple(dst))


def copies_row_major(st: Structure, src: Sequence[int], dst: Sequence[int]) -> bool:
    """Is the body its one operand (of shape `src`) read at the same row-major position?"""
    return is_plain_load(st.expr) and len(st.operand_maps) == 1 and reads_row_major(st.operand_maps[0], src, dst)


def is_view(node: Node, types: Mapping[str, TensorType]) -> bool:
    """`node` is its one operand's elements in row-major order: it may alias that buffer."""
    if get_op(node.op).template is not Template.elementwise or len(node.operands) != 1:
        return False
    return copies_row_major(node_structure(node, types), types[node.operands[0]].shape, node.type.shape)


def avg_pool_divisors(spatial: Sequence[int], attrs: Mapping[str, object]) -> np.ndarray:
    """torch's divisor per output position of `avg_pool` (it depends on the window, padding,
    ceil_mode and count_include_pad only): window sums of ones over window means of ones."""
    ones = torch.ones(1, 1, *spatial, dtype=torch.float64)
    args = (attrs["kernel"], attrs["stride"], attrs["padding"], attrs["ceil_mode"])
    sums = F.avg_pool2d(ones, *args, count_include_pad=False, divisor_override=1)
    means = F.avg_pool2d(ones, *args, count_include_pad=attrs["count_include_pad"])
    return (sums / means)[0, 0].numpy()


__all__ = ["avg_pool_divisors", "copies_row_major", "is_view", "node_structure", "reads_row_major"]
