"""Layout epilogues: a convolution stored straight through the layout ops that read it.

When, inside one kernel, a conv's result is read only by a chain of layout ops (a pixel
shuffle and slices, as the `subpixel-conv` rewrite leaves them) whose last value the kernel
writes, the conv need not write its result and copy it again: the kernel iterates over the
chain's result and computes each element at the conv coordinates the chain's maps give.
The pixel shuffle becomes the conv's store addressing, and conv outputs the chain drops
(the slices' margins) are never stored. A backend that iterates over the chain's result
reads the conv at `to_anchor`; one that computes the conv a tile at a time (the C++ GEMM
tiles) stores each element at `from_anchor`, the chain's inverse. A backend asks `layout_epilogues(kernel, types)`;
the analysis is backend-neutral (the maps are the ops' own structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from codesign.codegen.inverse_maps import Inverse, compose_inverses, invert, substitute
from codesign.codegen.lowering import is_view, node_structure
from codesign.ir.affine import AffineMap
from codesign.ir.kernels import Kernel
from codesign.ir.ops.registry import OpKind, Template, get_op
from codesign.ir.scalar import is_plain_load
from codesign.ir.types import TensorType


@dataclass(frozen=True)
class LayoutEpilogue:
    """`anchor`'s result seen through `chain` (layout nodes, first reader first); `to_anchor`
    maps an index of the chain's last value (`result`) to the anchor's result index, and
    `from_anchor` (None where a link's map has no inverse `invert` finds) the other way: where
    an element of the anchor's result lands, if anywhere (`codegen.inverse_maps`)."""

    anchor: str
    chain: tuple[str, ...]
    to_anchor: AffineMap
    from_anchor: Inverse | None
    leaves_kernel: bool  # the chain's result is a kernel output (else the kernel's pointwise ops read it)

    @property
    def result(self) -> str:
        return self.chain[-1]


def compose(outer: AffineMap, inner: AffineMap) -> AffineMap:
    """The map `inner ∘ outer`: an index of `outer`'s domain read through both."""
    return AffineMap(outer.num_dims, tuple(substitute(e, outer.results) for e in inner.results))


def layout_epilogues(kernel: Kernel, types: Mapping[str, TensorType]) -> dict[str, LayoutEpilogue]:
    """Every conv of `kernel` whose result only a chain of plain layout reads consumes, by
    anchor name. A link of the chain is a one-operand layout op whose body is its operand
    read through one affine map (no gated reads: a pad is not one); every value but the
    last is read by the next link alone and never leaves the kernel. The last is a kernel
    output, or is read by other nodes of the kernel (`leaves_kernel` False: a backend decides
    whether it computes those where it stores the chain); a chain of reshapes alone is no
    layout epilogue (the conv's own buffer holds it, viewed)."""
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
        inverses: list[Inverse | None] = []
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
            inverses.append(invert(st.operand_maps[0], link.type.shape, types[link.operands[0]].shape))
            chain.append(link.name)
            current = link.name
        if chain and (current in leaves or not all(is_view(nodes[c], types) for c in chain)):
            from_anchor = None if None in inverses else compose_inverses(inverses, anchor.type.shape)
            found[anchor.name] = LayoutEpilogue(anchor.name, tuple(chain), to_anchor, from_anchor, current in leaves)
    return found
