"""Pooling: a reduction over a sliding window, with the window loops in the domain."""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineMap, Dim
from codesign.ir.ops.contraction import conv_out_size
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, IterKind, OpDef, OpKind,
                                      ShapeError, Structure, register, Template, Trait)
from codesign.ir.types import TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")

POOL_ATTRS = {
    "kernel": AttrSpec((tuple,), required=True),
    "stride": AttrSpec((tuple,), required=True),
    "padding": AttrSpec((tuple,), required=True),
    "dilation": AttrSpec((tuple,), default=(1, 1)),
    "ceil_mode": AttrSpec((bool,), default=False),
    "count_include_pad": AttrSpec((bool,), default=True),
}


def _pool_infer(op: str):
    def infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
        (x,) = operands
        if x.rank != 4:
            raise ShapeError(f"{op} needs an NCHW operand, got {list(x.shape)}")
        for key in ("kernel", "stride", "padding", "dilation"):
            if len(attrs[key]) != 2:
                raise ShapeError(f"{op}: {key} {list(attrs[key])} needs 2 entries")
        kernel, stride, padding, dilation = (tuple(attrs[k]) for k in ("kernel", "stride", "padding", "dilation"))
        if min(kernel + stride + dilation) < 1 or min(padding) < 0 or any(
                p > k // 2 for k, p in zip(kernel, padding)):  # torch's limit on padding
            raise ShapeError(f"{op}: kernel {list(kernel)}, stride {list(stride)}, padding {list(padding)}, "
                             f"dilation {list(dilation)}: sizes must be positive and padding at most "
                             f"half the kernel")
        if op == "avg_pool" and dilation != (1, 1):
            raise ShapeError(f"avg_pool supports dilation 1 only, got {list(dilation)}")
        spatial = tuple(conv_out_size(x.shape[2 + i], attrs["kernel"][i], attrs["stride"][i],
                                      attrs["padding"][i], attrs["dilation"][i], attrs["ceil_mode"])
                        for i in range(2))
        if any(s <= 0 for s in spatial):
            raise ShapeError(f"{op}: output size {list(spatial)} is empty")
        return TensorType(x.shape[:2] + spatial, x.dtype)
    return infer


def _pool_structure(op: str):
    def structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
        kh, kw = attrs["kernel"]
        n = 6
        h, w, r, s = Dim(2), Dim(3), Dim(4), Dim(5)
        x_map = AffineMap(n, (Dim(0), Dim(1),
                              h * attrs["stride"][0] + r * attrs["dilation"][0] - attrs["padding"][0],
                              w * attrs["stride"][1] + s * attrs["dilation"][1] - attrs["padding"][1]))
        domain = tuple(IterDim(d) for d in res.shape) + (IterDim(kh, IterKind.reduction),
                                                         IterDim(kw, IterKind.reduction))
        return Structure(domain, (x_map,), AffineMap(n, (Dim(0), Dim(1), h, w)), op)
    return structure


def _max_pool(call: Call) -> torch.Tensor:
    a = call.attrs
    return F.max_pool2d(call.args[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])


def _avg_pool(call: Call) -> torch.Tensor:
    a = call.attrs
    if tuple(a["dilation"]) != (1, 1):
        raise ShapeError("avg_pool supports dilation 1 only")
    return F.avg_pool2d(call.args[0], a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                        a["count_include_pad"])


for _name, _run, _traits in (("max_pool", _max_pool, {Trait.may_read_outside, Trait.maximizing}),
                             ("avg_pool", _avg_pool, {Trait.may_read_outside})):
    register(OpDef(
        name=_name, kind=OpKind.window, template=Template.pool, traits=frozenset(_traits), min_operands=1, max_operands=1,
        infer=_pool_infer(_name), run=_run, structure=_pool_structure(_name),
        flops=lambda ops, res, at: res.numel * prod(at["kernel"]), attrs=POOL_ATTRS,
        doc="2-d pooling over NCHW"))
