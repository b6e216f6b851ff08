"""Ops that reduce and then rescale every element: softmax and the norms.

They stay named (rather than split into reduce + pointwise) because fusion and code
generation treat them as one online two-pass kernel, as FlashAttention treats softmax.
Their domain is the operand's shape with the normalised dims as reduction loops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineMap, Dim
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, IterKind, OpDef, OpKind,
                                      ShapeError, Structure, Template, Trait, register)
from codesign.ir.scalar import Expr, Load, Prim, apply, lit
from codesign.ir.types import TensorType
from codesign.lazy import LazyModule, torch_fn

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")

EPS = AttrSpec((float,), default=1e-5)


def _norm_structure(x: TensorType, reduced: Sequence[int], param_maps: Sequence[AffineMap],
                    body: str) -> Structure:
    domain = tuple(IterDim(s, IterKind.reduction if i in reduced else IterKind.parallel)
                   for i, s in enumerate(x.shape))
    ident = AffineMap.identity(x.rank)
    return Structure(domain, (ident, *param_maps), ident, body)


def _require_float(x: TensorType, op: str) -> None:
    if not x.dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point operand, got {x.dtype.value}")


# -- softmax / log_softmax ----------------------------------------------------------------
def _softmax_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    (x,) = operands
    _require_float(x, "softmax")
    if not 0 <= attrs["dim"] < x.rank:
        raise ShapeError(f"softmax dim {attrs['dim']} out of range for rank {x.rank}")
    return x


for _name, _fn, _traits in (("softmax", torch_fn("softmax"), {Trait.anchor}),
                             ("log_softmax", torch_fn("log_softmax"), {Trait.anchor, Trait.log_result})):
    register(OpDef(
        name=_name, kind=OpKind.normalization, template=Template.softmax, traits=frozenset(_traits), min_operands=1, max_operands=1,
        infer=_softmax_infer,
        run=lambda call, fn=_fn: fn(call.args[0], call.attrs["dim"]),
        structure=lambda ops, res, at, n=_name: _norm_structure(ops[0], (at["dim"],), (), n),
        flops=lambda ops, res, attrs: 5 * res.numel,
        attrs={"dim": AttrSpec((int,), required=True)}))


# -- layer_norm / rms_norm: normalise the trailing `normalized_rank` dims -------------------
def _trailing_norm_infer(op: str):
    def infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
        x, *params = operands
        _require_float(x, op)
        k = attrs["normalized_rank"]
        if not 1 <= k <= x.rank:
            raise ShapeError(f"{op}: normalized_rank {k} out of range for rank {x.rank}")
        for p in params:
            if p.shape != x.shape[x.rank - k:]:
                raise ShapeError(f"{op}: weight/bias shape {list(p.shape)} must equal the "
                                 f"normalised shape {list(x.shape[x.rank - k:])}")
        return x
    return infer


def _trailing_structure(op: str):
    def structure(ops: Sequence[TensorType], res: TensorType, attrs: Mapping[str, object]) -> Structure:
        x, k = ops[0], attrs["normalized_rank"]
        reduced = range(x.rank - k, x.rank)
        pmap = AffineMap(x.rank, tuple(Dim(i) for i in reduced))
        return _norm_structure(x, tuple(reduced), [pmap] * (len(ops) - 1), op)
    return structure


def _layer_norm(call: Call) -> torch.Tensor:
    x, *params = call.args
    k = call.attrs["normalized_rank"]
    weight = params[0] if len(params) > 0 else None
    bias = params[1] if len(params) > 1 else None
    return F.layer_norm(x, x.shape[x.dim() - k:], weight, bias, call.attrs["eps"])


def _rms_norm(call: Call) -> torch.Tensor:
    x, *params = call.args
    k = call.attrs["normalized_rank"]
    dims = tuple(range(x.dim() - k, x.dim()))
    y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + call.attrs["eps"])
    return y * params[0] if params else y


register(OpDef(
    name="layer_norm", kind=OpKind.normalization, template=Template.norm,
    traits=frozenset({Trait.anchor, Trait.centered}), min_operands=1, max_operands=3,
    infer=_trailing_norm_infer("layer_norm"), run=_layer_norm,
    structure=_trailing_structure("layer_norm"), flops=lambda ops, res, at: 8 * res.numel,
    attrs={"normalized_rank": AttrSpec((int,), required=True), "eps": EPS},
    doc="operands: x, optional weight, optional bias"))
register(OpDef(
    name="rms_norm", kind=OpKind.normalization, template=Template.norm, traits=frozenset({Trait.anchor}), min_operands=1, max_operands=2,
    infer=_trailing_norm_infer("rms_norm"), run=_rms_norm,
    structure=_trailing_structure("rms_norm"), flops=lambda ops, res, at: 5 * res.numel,
    attrs={"normalized_rank": AttrSpec((int,), required=True), "eps": EPS},
    doc="operands: x, optional weight"))


# -- group_norm: x[N, C, *], normalise each group of C/G channels with the spatial dims ----
def _group_norm_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, *params = operands
    _require_float(x, "group_norm")
    if x.rank < 2 or x.shape[1] % attrs["groups"]:
        raise ShapeError(f"group_norm: {attrs['groups']} groups do not divide the channels of {list(x.shape)}")
    for p in params:
        if p.shape != (x.shape[1],):
            raise ShapeError(f"group_norm: weight/bias shape {list(p.shape)} must be [{x.shape[1]}]")
    return x


def _group_norm_structure(ops: Sequence[TensorType], res: TensorType, attrs: Mapping[str, object]) -> Structure:
    x = ops[0]
    reduced = tuple(range(2, x.rank)) + (1,)  # channels within a group reduce too
    return _norm_structure(x, reduced, [AffineMap(x.rank, (Dim(1),))] * (len(ops) - 1), "group_norm")


register(OpDef(
    name="group_norm", kind=OpKind.normalization, template=Template.group_norm,
    traits=frozenset({Trait.anchor, Trait.centered}), min_operands=1, max_operands=3,
    infer=_group_norm_infer,
    run=lambda call: F.group_norm(call.args[0], call.attrs["groups"],
                                  call.args[1] if len(call.args) > 1 else None,
                                  call.args[2] if len(call.args) > 2 else None, call.attrs["eps"]),
    structure=_group_norm_structure, flops=lambda ops, res, at: 8 * res.numel,
    attrs={"groups": AttrSpec((int,), required=True), "eps": EPS},
    doc="operands: x[N, C, ...], optional weight[C], optional bias[C]"))


# -- batch_norm (inference): per-channel affine from running statistics ----------------------
def _batch_norm_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, *stats = operands
    _require_float(x, "batch_norm")
    for p in stats:
        if x.rank < 2 or p.shape != (x.shape[1],):
            raise ShapeError(f"batch_norm: statistics shape {list(p.shape)} must be [channels] of {list(x.shape)}")
    return x


def _batch_norm(call: Call) -> torch.Tensor:
    x, mean, var, *affine = call.args
    return F.batch_norm(x, mean, var, affine[0] if affine else None,
                        affine[1] if len(affine) > 1 else None, False, 0.0, call.attrs["eps"])


def _batch_norm_body(ops, res, attrs) -> Expr:
    """(x - mean) / sqrt(var + eps) [* weight] [+ bias], per channel."""
    x, mean, var, *affine = (Load(i, t.dtype) for i, t in enumerate(ops))
    d = x.dtype
    y = apply(Prim.div, apply(Prim.sub, x, mean),
              apply(Prim.sqrt, apply(Prim.add, var, lit(attrs.get("eps", 1e-5), d))))
    if affine:
        y = apply(Prim.mul, y, affine[0])
    if len(affine) > 1:
        y = apply(Prim.add, y, affine[1])
    return y


register(OpDef(
    name="batch_norm", kind=OpKind.pointwise, min_operands=3, max_operands=5,
    infer=_batch_norm_infer, run=_batch_norm,
    structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape),
        (AffineMap.identity(res.rank),) + (AffineMap(res.rank, (Dim(1),)),) * (len(ops) - 1),
        AffineMap.identity(res.rank), "batch_norm", _batch_norm_body(ops, res, at)),
    flops=lambda ops, res, at: 4 * res.numel, template=Template.elementwise,
    attrs={"eps": EPS},
    doc="inference batch norm; operands: x, running_mean, running_var, optional weight, bias"))
