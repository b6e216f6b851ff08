"""Data-dependent reads: embedding lookup, index_select, advanced indexing and gather.

The table operand's map is `None` (indirect): which row is read depends on the index
values. Everything else about them (the index operand, the result) is affine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineMap, Dim
from codesign.ir.ops.registry import (AttrSpec, IterDim, OpDef, OpKind, ShapeError,
                                      Structure, Template, register)
from codesign.ir.scalar import Expr, Load, Loop, Prim, apply, cast, lit, select
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")


def _picked(ops: Sequence[TensorType], i: int) -> Expr:
    """Index operand i, as an i64 coordinate."""
    return cast(Load(i, ops[i].dtype), DType.i64)


def _wrapped(p: Expr, size: int) -> Expr:
    """A negative index counts from the end, as torch's advanced indexing does."""
    return select(apply(Prim.lt, p, lit(0, DType.i64)), apply(Prim.add, p, lit(size, DType.i64)), p)


def _embedding_body(ops, res: TensorType, attrs) -> Expr:
    return Load(0, ops[0].dtype, index=(_picked(ops, 1), Loop(res.rank - 1)))


def _index_select_body(ops, res: TensorType, attrs) -> Expr:
    index = [Loop(d) for d in range(res.rank)]
    index[attrs["dim"]] = _picked(ops, 1)
    return Load(0, ops[0].dtype, index=tuple(index))


def _index_body(ops, res: TensorType, attrs) -> Expr:
    x, *indices = ops
    dim = attrs["dim"]
    block = res.rank - (x.rank - len(indices))
    picked = [_wrapped(_picked(ops, i + 1), x.shape[dim + i]) for i in range(len(indices))]
    index = [Loop(d) for d in range(dim)] + picked + [Loop(d) for d in range(dim + block, res.rank)]
    return Load(0, x.dtype, index=tuple(index))


def _gather_body(ops, res: TensorType, attrs) -> Expr:
    index = [Loop(d) for d in range(res.rank)]
    index[attrs["dim"]] = _picked(ops, 1)
    return Load(0, ops[0].dtype, index=tuple(index))


def _require_int(t: TensorType, op: str) -> None:
    if not t.dtype.is_int:
        raise ShapeError(f"{op} needs integer indices, got {t.dtype.value}")


def _embedding_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    table, idx = operands
    _require_int(idx, "embedding")
    if table.rank != 2:
        raise ShapeError(f"embedding table must be [rows, dim], got {list(table.shape)}")
    return TensorType(idx.shape + (table.shape[1],), table.dtype)


register(OpDef(
    name="embedding", kind=OpKind.gather, min_operands=2, max_operands=2,
    infer=_embedding_infer, run=lambda call: F.embedding(call.args[1], call.args[0]),
    structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape),
        (None, AffineMap(res.rank, tuple(Dim(i) for i in range(res.rank - 1)))),
        AffineMap.identity(res.rank), "gather", _embedding_body(ops, res, at)),
    flops=lambda ops, res, at: 0, doc="operands: table[rows, dim], indices[...] → [..., dim]",
    template=Template.elementwise, pointer_operands=(0,)))


def _index_select_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, idx = operands
    _require_int(idx, "index_select")
    dim = attrs["dim"]
    if idx.rank != 1 or not 0 <= dim < x.rank:
        raise ShapeError(f"index_select needs 1-d indices and a dim in range, got {list(idx.shape)}, dim={dim}")
    return TensorType(x.shape[:dim] + idx.shape + x.shape[dim + 1:], x.dtype)


register(OpDef(
    name="index_select", kind=OpKind.gather, min_operands=2, max_operands=2,
    infer=_index_select_infer,
    run=lambda call: torch.index_select(call.args[0], call.attrs["dim"], call.args[1]),
    structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape),
        (None, AffineMap(res.rank, (Dim(at["dim"]),))), AffineMap.identity(res.rank), "gather",
        _index_select_body(ops, res, at)),
    flops=lambda ops, res, at: 0, attrs={"dim": AttrSpec((int,), required=True)},
    doc="x.index_select(dim, indices)", template=Template.elementwise, pointer_operands=(0,)))


def _index_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    """x[..., i0, i1, ...] with index tensors on consecutive dims starting at `dim`."""
    x, *indices = operands
    dim = attrs["dim"]
    for idx in indices:
        if not (idx.dtype.is_int or idx.dtype.value == "i1"):
            raise ShapeError(f"index needs integer index tensors, got {idx.dtype.value}")
        if idx.dtype.value == "i1":
            raise ShapeError("index with boolean masks is data-dependent in shape; not supported")
    if not indices or dim < 0 or dim + len(indices) > x.rank:
        raise ShapeError(f"index: {len(indices)} index tensors from dim {dim} do not fit {list(x.shape)}")
    from codesign.ir.ops.pointwise import broadcast_shapes
    batch = broadcast_shapes(*(i.shape for i in indices))
    return TensorType(x.shape[:dim] + batch + x.shape[dim + len(indices):], x.dtype)


def _index_run(call) -> torch.Tensor:
    x, *indices = call.args
    key = (slice(None),) * call.attrs["dim"] + tuple(indices)
    return x[key]


def _index_structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
    from codesign.ir.ops.pointwise import broadcast_map
    x, *indices = ops
    dim = attrs["dim"]
    nb = res.rank - (x.rank - len(indices))  # rank of the broadcast index block
    block = res.shape[dim:dim + nb]
    idx_maps = []
    for t in indices:
        inner = broadcast_map(t.shape, block)
        idx_maps.append(AffineMap(res.rank, tuple(Dim(r.index + dim) if isinstance(r, Dim) else r
                                                 for r in inner.results)))
    return Structure(tuple(IterDim(s) for s in res.shape), (None, *idx_maps),
                     AffineMap.identity(res.rank), "gather", _index_body(ops, res, attrs))


register(OpDef(
    name="index", kind=OpKind.gather, min_operands=2, max_operands=None,
    infer=_index_infer, run=_index_run, structure=_index_structure,
    flops=lambda ops, res, at: 0, attrs={"dim": AttrSpec((int,), default=0)},
    template=Template.elementwise, pointer_operands=(0,),
    doc="advanced indexing x[:, ..., i0, i1, ...]: integer index tensors (broadcast together) "
        "on consecutive dims from `dim`"))


def _gather_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    """torch.gather: the result has the index's shape; every other dim indexes x directly."""
    x, idx = operands
    _require_int(idx, "gather")
    dim = attrs["dim"]
    if idx.rank != x.rank or not 0 <= dim < x.rank:
        raise ShapeError(f"gather needs indices of x's rank and a dim in range, got x {list(x.shape)}, "
                         f"indices {list(idx.shape)}, dim={dim}")
    if any(i > n for d, (i, n) in enumerate(zip(idx.shape, x.shape)) if d != dim):
        raise ShapeError(f"gather: indices {list(idx.shape)} larger than x {list(x.shape)} off dim {dim}")
    return TensorType(idx.shape, x.dtype)


register(OpDef(
    name="gather", kind=OpKind.gather, min_operands=2, max_operands=2,
    infer=_gather_infer,
    run=lambda call: torch.gather(call.args[0], call.attrs["dim"], call.args[1]),
    structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape),
        (None, AffineMap.identity(res.rank)), AffineMap.identity(res.rank), "gather",
        _gather_body(ops, res, at)),
    flops=lambda ops, res, at: 0, attrs={"dim": AttrSpec((int,), required=True)},
    doc="torch.gather(x, dim, indices): out[..., i, ...] = x[..., indices[..., i, ...], ...] on dim",
    template=Template.elementwise, pointer_operands=(0,)))
