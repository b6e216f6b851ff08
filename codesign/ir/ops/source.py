"""Ops that read no tensor: constants and index ranges."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from codesign.ir.affine import AffineMap
from codesign.ir.ops.registry import (AttrSpec, IterDim, OpDef, OpKind, Structure,
                                      no_flops, register)
from codesign.ir.types import TensorType


def _source_structure(name: str):
    return lambda ops, res, at: Structure(tuple(IterDim(s) for s in res.shape), (),
                                          AffineMap.identity(res.rank), name)


def _full_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> None:
    """A source op's type is the node's own: there is nothing to infer it from."""
    return None


register(OpDef(
    name="full", kind=OpKind.source, min_operands=0, max_operands=0, infer=_full_infer,
    run=lambda call: torch.full(call.type.shape, call.attrs["value"], dtype=call.type.dtype.torch),
    structure=_source_structure("full"), flops=no_flops,
    attrs={"value": AttrSpec((int, float, bool), required=True)},
    doc="a tensor of the node's type filled with value (a scalar when the type is rank 0)"))

register(OpDef(
    name="iota", kind=OpKind.source, min_operands=0, max_operands=0, infer=_full_infer,
    run=lambda call: (call.attrs["start"] + call.attrs["step"] *
                      torch.arange(call.type.shape[0], dtype=torch.float64)).to(call.type.dtype.torch),
    structure=_source_structure("iota"), flops=no_flops,
    attrs={"start": AttrSpec((int, float), default=0), "step": AttrSpec((int, float), default=1)},
    doc="1-d: start + step·i (torch.arange)"))

SOURCE_OPS = frozenset({"full", "iota"})
