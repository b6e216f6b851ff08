"""The op set of the graph IR; importing this package registers every op."""

from codesign.ir.ops import (contraction, gather, layout, moe, normalization,  # noqa: F401
                             pointwise, reduction, source, window)
from codesign.ir.ops.registry import (OPS, AttrSpec, Call, IterDim, IterKind, OpDef, OpKind,
                                      ShapeError, Structure, Template, Trait, UnknownOpError, get_op,
                                      node_structure)

__all__ = ["OPS", "AttrSpec", "Call", "IterDim", "IterKind", "OpDef", "OpKind", "ShapeError",
           "Structure", "Template", "Trait", "UnknownOpError", "get_op", "node_structure"]
