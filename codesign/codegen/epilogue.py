"""Layout epilogues: a convolution stored straight through the layout ops that read it.

When, inside one kernel, a conv's result is read only by a chain of layout ops (a pixel
shuffle and slices, as the `subpixel-conv` rewrite leaves them) whose last value the kernel
writes, the conv need not write its result and copy it again: the kernel iterates over the
chain's result and computes each element at the conv coordinates the chain's maps give.
The pixel shuffle becomes the conv's store addressing, and conv outputs the chain drops
(the slices' margins) are never computed. A backend asks `layout_epilogues(kernel, types)`;
the analysis is backend-neutral (the maps are the ops' own structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from codesign.codegen.lowering import node_structure
from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul
from codesign.ir.kernels import Kernel
from codesign.ir.ops.registry import OpKind, Template, get_op
from codesign.ir.scalar import is_plain_load
from codesign.ir.types import TensorType


@dataclass(frozen=True)
class LayoutEpilogue:
    """`anchor`'s result seen through `chain` (layout nodes, first reader first); `to_anchor`
    maps an index of the chain's last value (`result`) to the anchor's result index."""

    anchor: str
    chain: tuple[str, ...]
    to_anchor: AffineMap

    @property
    def result(self) -> str:
        return self.chain[-1]


def substitute(expr: AffineExpr, values: tuple[AffineExpr, ...]) -> AffineExpr:
    """`expr` with each dim d replaced by `values[d]` (composition of index maps)."""
    if isinstance(expr, Dim):
        return values[expr.index]
    if isinstance(expr, Const):
        return expr
    if isinstance(expr, Add):
        return substitute(expr.lhs, values) + substitute(expr.rhs, values)
    if isinstance(expr, Mul):
        return substitute(expr.expr, values) * expr.factor
    if isinstance(expr, FloorDiv):
        return substitute(expr.expr, values) // expr.divisor
    if isinstance(expr, Mod):
        return substitute(expr.expr, values) % expr.divisor
    raise TypeError(f"unknown affine expression {expr!r}")


def compose(outer: AffineMap, inner: AffineMap) -> AffineMap:
    """The map `inner ∘ outer`: an index of `outer`'s domain read through both."""
    return AffineMap(outer.num_dims, tuple(substitute(e, outer.results) for e in inner.results))


def layout_epilogues(kernel: Kernel, types: Mapping[str, TensorType]) -> dict[str, LayoutEpilogue]:
    """Every conv of `kernel` whose result only a chain of plain layout reads consumes, by
    anchor name. A link of the chain is a one-operand layout op whose body is its operand
    read through one affine map (no gated reads: a pad is not one); every value but the
    last is read by the next link alone and never leaves the kernel."""
    readers: dict[str, list[str]] = {}
    for n in kernel.nodes:
        for o in set(n.operands):
            readers.setdefault(o, []).append(n.name)
    nodes = {n.name: n for n in kernel.nodes}
    leaves = set(kernel.outputs)
    found: dict[str, LayoutEpilogue] = {}
    for anchor in kernel.nodes:
        if get_op(anchor.op).template is not Template.conv or anchor.name in leaves:
            continue
        chain: list[str] = []
        to_anchor = AffineMap.identity(anchor.type.rank)
        current = anchor.name
        while current not in leaves:
            users = readers.get(current, [])
            if len(users) != 1:
                break
            link = nodes[users[0]]
            st = node_structure(link, types)
            if (get_op(link.op).kind is not OpKind.layout or len(link.operands) != 1
                    or not is_plain_load(st.expr) or len(st.operand_maps) != 1 or st.operand_maps[0] is None):
                break
            to_anchor = compose(st.operand_maps[0], to_anchor)
            chain.append(link.name)
            current = link.name
        if chain and current in leaves:
            found[anchor.name] = LayoutEpilogue(anchor.name, tuple(chain), to_anchor)
    return found
