"""Layout ops: each is an index map from the result to its operand, and no arithmetic.

Fused into a neighbour, a layout op costs only address arithmetic (as a transpose folds
into an access pattern on the SN40L). A reshape is linearise-then-delinearise, a pixel
shuffle and an upsample-nearest are floordiv / mod maps, a slice is `start + step·d`.
"""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineExpr, AffineMap, Const, Dim, bound
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, OpDef, OpKind, ShapeError,
                                      Structure, Template, Trait, no_flops, register)
from codesign.ir.scalar import Affine, BodyFn, Expr, Load, Loop, Prim, all_of, apply, lit, select
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")


def _read_operand(ops: Sequence[TensorType], res: TensorType, attrs, maps) -> Expr:
    """A pure layout op reads its one operand through its map."""
    return Load(0, ops[0].dtype)


def _layout(name: str, infer, run, index_maps, attrs: Mapping[str, AttrSpec], doc: str,
            min_operands: int = 1, max_operands: int | None = 1, body=_read_operand,
            traits: frozenset[Trait] = frozenset()) -> OpDef:
    """Register a layout op from its `index_maps(operands, result, attrs)` and its body
    `body(operands, result, attrs, maps)` (default: read the operand through its map)."""
    def structure(ops, res, at) -> Structure:
        maps = tuple(index_maps(ops, res, at))
        return Structure(tuple(IterDim(s) for s in res.shape), maps, AffineMap.identity(res.rank), name,
                         body(ops, res, at, maps))

    return register(OpDef(
        name=name, kind=OpKind.layout, min_operands=min_operands, max_operands=max_operands,
        infer=infer, run=run, structure=structure, flops=no_flops, attrs=attrs, doc=doc,
        template=Template.elementwise, traits=traits))


def strides(shape: Sequence[int]) -> list[int]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


# -- reshape -------------------------------------------------------------------------------
def _reshape_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    shape = tuple(attrs["shape"])
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ShapeError(f"reshape to {list(shape)}: sizes must be non-negative ints")
    if prod(shape) != operands[0].numel:
        raise ShapeError(f"reshape of {list(operands[0].shape)} ({operands[0].numel} elements) "
                         f"to {list(shape)} ({prod(shape)} elements)")
    return operands[0].with_shape(shape)


def reshape_map(src: Sequence[int], dst: Sequence[int]) -> AffineMap:
    """Map from an index of shape `dst` to the same element's index in `src`."""
    linear: AffineExpr = Const(0)
    for d, stride in enumerate(strides(dst)):
        if dst[d] != 1:
            linear = linear + Dim(d) * stride
    results = []
    for size, stride in zip(src, strides(src)):
        if size == 1:
            results.append(Const(0))
            continue
        e = linear // stride
        results.append(e if stride * size == prod(src) else e % size)
    return AffineMap(len(dst), tuple(results))


_QUIET = frozenset({Trait.quiet})  # addressing only: never worth a kernel of its own

RESHAPE = _layout("reshape", _reshape_infer, lambda call: call.args[0].reshape(call.type.shape),
                  lambda ops, res, at: [reshape_map(ops[0].shape, res.shape)],
                  {"shape": AttrSpec((tuple,), required=True)}, "same elements, row-major, new shape",
                  traits=_QUIET)


# -- permute -------------------------------------------------------------------------------
def _permute_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    perm, x = tuple(attrs["perm"]), operands[0]
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"permute: {list(perm)} is not a permutation of {x.rank} dims")
    return x.with_shape(tuple(x.shape[p] for p in perm))


def _permute_maps(ops, res, attrs) -> list[AffineMap]:
    perm = attrs["perm"]
    inverse = [perm.index(i) for i in range(len(perm))]
    return [AffineMap(res.rank, tuple(Dim(inverse[i]) for i in range(len(perm))))]


PERMUTE = _layout("permute", _permute_infer, lambda call: call.args[0].permute(call.attrs["perm"]),
                  _permute_maps, {"perm": AttrSpec((tuple,), required=True)},
                  "result dim i = operand dim perm[i]", traits=_QUIET)


# -- expand (broadcast_to) -------------------------------------------------------------------
def _expand_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, shape = operands[0], tuple(attrs["shape"])
    offset = len(shape) - x.rank
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ShapeError(f"expand to {list(shape)}: sizes must be non-negative ints")
    if offset < 0 or any(s not in (1, shape[offset + i]) for i, s in enumerate(x.shape)):
        raise ShapeError(f"expand: {list(x.shape)} cannot broadcast to {list(shape)}")
    return x.with_shape(shape)


def _expand_maps(ops, res, attrs) -> list[AffineMap]:
    from codesign.ir.ops.pointwise import broadcast_map
    return [broadcast_map(ops[0].shape, res.shape)]


EXPAND = _layout("expand", _expand_infer, lambda call: call.args[0].expand(call.type.shape).contiguous(),
                 _expand_maps, {"shape": AttrSpec((tuple,), required=True)}, "broadcast to a shape",
                 traits=_QUIET)


# -- slice ---------------------------------------------------------------------------------
def _slice_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x = operands[0]
    dim, start, end, step = attrs["dim"], attrs["start"], attrs["end"], attrs["step"]
    if not 0 <= dim < x.rank or step < 1 or not 0 <= start <= end <= x.shape[dim]:
        raise ShapeError(f"slice dim={dim} [{start}:{end}:{step}] is out of range for {list(x.shape)} "
                         f"(bounds must be normalised: 0 <= start <= end <= size, step >= 1)")
    size = max(0, -(-(end - start) // step))
    return x.with_shape(x.shape[:dim] + (size,) + x.shape[dim + 1:])


def _slice_run(call: Call) -> torch.Tensor:
    a = call.attrs
    index = [slice(None)] * call.args[0].dim()
    index[a["dim"]] = slice(a["start"], a["end"], a["step"])
    return call.args[0][tuple(index)].contiguous()


SLICE = _layout("slice", _slice_infer, _slice_run,
                lambda ops, res, at: [AffineMap(res.rank, tuple(
                    Dim(i) * at["step"] + at["start"] if i == at["dim"] else Dim(i) for i in range(res.rank)))],
                {"dim": AttrSpec((int,), required=True), "start": AttrSpec((int,), required=True),
                 "end": AttrSpec((int,), required=True), "step": AttrSpec((int,), default=1)},
                "x[..., start:end:step, ...] along dim", traits=_QUIET)


# -- concat --------------------------------------------------------------------------------
def _concat_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    dim, first = attrs["dim"], operands[0]
    if not 0 <= dim < first.rank:
        raise ShapeError(f"concat dim {dim} out of range for rank {first.rank}")
    for t in operands[1:]:
        if t.dtype != first.dtype or t.rank != first.rank or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
            raise ShapeError(f"concat along {dim}: {t} does not match {first}")
    total = sum(t.shape[dim] for t in operands)
    return first.with_shape(first.shape[:dim] + (total,) + first.shape[dim + 1:])


def _concat_maps(ops, res, attrs) -> list[AffineMap]:
    """Operand i is read at d - offset_i on its own slab of the result (piecewise)."""
    maps, offset, dim = [], 0, attrs["dim"]
    for t in ops:
        maps.append(AffineMap(res.rank, tuple(Dim(i) - offset if i == dim else Dim(i) for i in range(res.rank))))
        offset += t.shape[dim]
    return maps


def _concat_body(ops, res, attrs, maps) -> Expr:
    """Piece i where offset_i <= d < offset_i+1: each piece a gated read, chosen by select."""
    dim, d = attrs["dim"], Loop(attrs["dim"])
    ends, end = [], 0
    for t in ops:
        end += t.shape[dim]
        ends.append(end)
    out: Expr = Load(len(ops) - 1, ops[-1].dtype,
                     valid=apply(Prim.ge, d, lit(ends[-2], DType.i64)) if len(ops) > 1 else None)
    for i in reversed(range(len(ops) - 1)):
        conds = [apply(Prim.lt, d, lit(ends[i], DType.i64))]
        if i > 0:
            conds.insert(0, apply(Prim.ge, d, lit(ends[i - 1], DType.i64)))
        out = select(conds[-1], Load(i, ops[i].dtype, valid=all_of(conds)), out)
    return out


CONCAT = _layout("concat", _concat_infer, lambda call: torch.cat(list(call.args), call.attrs["dim"]),
                 _concat_maps, {"dim": AttrSpec((int,), required=True)}, "join along dim (maps are piecewise)",
                 min_operands=1, max_operands=None, body=_concat_body,
                 traits=frozenset({Trait.may_read_outside, Trait.quiet}))


# -- pad (constant) -------------------------------------------------------------------------
def _pad_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, pads = operands[0], tuple(attrs["pads"])
    if len(pads) != 2 * x.rank:
        raise ShapeError(f"pad needs (before, after) per dim: {2 * x.rank} entries, got {len(pads)}")
    shape = tuple(s + pads[2 * i] + pads[2 * i + 1] for i, s in enumerate(x.shape))
    if any(s + min(pads[2 * i], 0) + min(pads[2 * i + 1], 0) < 0 for i, s in enumerate(x.shape)):
        raise ShapeError(f"pad {list(pads)} makes {list(x.shape)} negative")  # torch crops before padding
    return x.with_shape(shape)


def _pad_run(call: Call) -> torch.Tensor:
    pads = call.attrs["pads"]
    torch_pads = []  # torch wants the last dim first
    for i in reversed(range(call.args[0].dim())):
        torch_pads += [pads[2 * i], pads[2 * i + 1]]
    return F.pad(call.args[0], torch_pads, value=call.attrs["value"])


def _pad_body(ops, res, attrs, maps) -> Expr:
    """The operand where its coordinate is in range, else the fill value."""
    (x,), (amap,) = ops, maps
    conds = []
    for e, size in zip(amap.results, x.shape):
        lo, hi = bound(e, res.shape)
        if lo < 0:
            conds.append(apply(Prim.ge, Affine(e), lit(0, DType.i64)))
        if hi >= size:
            conds.append(apply(Prim.lt, Affine(e), lit(size, DType.i64)))
    valid = all_of(conds)
    if valid is None:
        return Load(0, x.dtype)
    return select(valid, Load(0, x.dtype, valid=valid), lit(attrs.get("value", 0.0), x.dtype))


_layout("pad", _pad_infer, _pad_run,
        lambda ops, res, at: [AffineMap(res.rank, tuple(Dim(i) - at["pads"][2 * i] for i in range(res.rank)))],
        {"pads": AttrSpec((tuple,), required=True), "value": AttrSpec((int, float), default=0.0)},
        "constant padding; pads = (before0, after0, before1, after1, ...); negative pads crop",
        body=_pad_body, traits=frozenset({Trait.may_read_outside}))


# -- pixel shuffle / unshuffle (depth-to-space and back), on the trailing C, H, W -------------
def _pixel_shuffle_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, r = operands[0], attrs["factor"]
    if x.rank < 3 or x.shape[-3] % (r * r):
        raise ShapeError(f"pixel_shuffle by {r}: channels of {list(x.shape)} are not a multiple of {r * r}")
    c, h, w = x.shape[-3:]
    return x.with_shape(x.shape[:-3] + (c // (r * r), h * r, w * r))


def _pixel_shuffle_maps(ops, res, attrs) -> list[AffineMap]:
    r, n = attrs["factor"], res.rank
    lead = tuple(Dim(i) for i in range(n - 3))
    c, h, w = Dim(n - 3), Dim(n - 2), Dim(n - 1)
    return [AffineMap(n, lead + (c * (r * r) + (h % r) * r + w % r, h // r, w // r))]


_layout("pixel_shuffle", _pixel_shuffle_infer, lambda call: F.pixel_shuffle(call.args[0], call.attrs["factor"]),
        _pixel_shuffle_maps, {"factor": AttrSpec((int,), required=True)},
        "[..., C·r², H, W] → [..., C, H·r, W·r]")


def _pixel_unshuffle_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, r = operands[0], attrs["factor"]
    if x.rank < 3 or x.shape[-1] % r or x.shape[-2] % r:
        raise ShapeError(f"pixel_unshuffle by {r}: spatial dims of {list(x.shape)} are not multiples of {r}")
    c, h, w = x.shape[-3:]
    return x.with_shape(x.shape[:-3] + (c * r * r, h // r, w // r))


def _pixel_unshuffle_maps(ops, res, attrs) -> list[AffineMap]:
    r, n = attrs["factor"], res.rank
    lead = tuple(Dim(i) for i in range(n - 3))
    c, h, w = Dim(n - 3), Dim(n - 2), Dim(n - 1)
    return [AffineMap(n, lead + (c // (r * r), h * r + (c // r) % r, w * r + c % r))]


_layout("pixel_unshuffle", _pixel_unshuffle_infer,
        lambda call: F.pixel_unshuffle(call.args[0], call.attrs["factor"]),
        _pixel_unshuffle_maps, {"factor": AttrSpec((int,), required=True)},
        "[..., C, H·r, W·r] → [..., C·r², H, W]")


# -- upsample nearest, integer scale per trailing spatial dim ---------------------------------
def _upsample_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, scales = operands[0], tuple(attrs["scales"])
    if not scales or len(scales) > x.rank - 2 or any(not isinstance(s, int) or s < 1 for s in scales):
        raise ShapeError(f"upsample_nearest: scales {list(scales)} must be positive ints, "
                         f"one per spatial dim of {list(x.shape)}")
    k = len(scales)
    return x.with_shape(x.shape[:-k] + tuple(s * f for s, f in zip(x.shape[-k:], scales)))


def _upsample_maps(ops, res, attrs) -> list[AffineMap]:
    scales, n = attrs["scales"], res.rank
    k = len(scales)
    return [AffineMap(n, tuple(Dim(i) for i in range(n - k))
                      + tuple(Dim(n - k + i) // s for i, s in enumerate(scales)))]


def _upsample_run(call: Call) -> torch.Tensor:
    x = call.args[0]
    for i, s in enumerate(call.attrs["scales"]):
        x = x.repeat_interleave(s, dim=x.dim() - len(call.attrs["scales"]) + i)
    return x


_layout("upsample_nearest", _upsample_infer, _upsample_run, _upsample_maps,
        {"scales": AttrSpec((tuple,), required=True)}, "nearest upsampling by integer scales")
