"""Pointwise ops: one scalar body applied at every point, with numpy broadcasting.

Operands of an arithmetic op share one element type (capture inserts `cast`s where torch
would promote); comparisons yield `i1`. A broadcast operand reads through a map that drops
or pins to 0 the dims it lacks, so broadcasting costs nothing but index arithmetic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from codesign.ir import scalar as S
from codesign.ir.affine import AffineMap, Const, Dim
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, OpDef, OpKind, ShapeError,
                                      Structure, Template, Trait, elementwise_flops, register)
from codesign.ir.scalar import BodyFn, Expr, Load, Loop, Prim, apply, cast, lit, select
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule, torch_fn

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        sizes = {s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ShapeError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast_map(operand: Sequence[int], result: Sequence[int]) -> AffineMap:
    """Map from the result's index space to a (right-aligned) broadcast operand."""
    offset = len(result) - len(operand)
    exprs = [Const(0) if size == 1 and result[offset + i] != 1 else Dim(offset + i)
             for i, size in enumerate(operand)]
    return AffineMap(len(result), tuple(exprs))


def pointwise_structure(operands: Sequence[TensorType], result: TensorType,
                        attrs: Mapping[str, object], body: str,
                        expr: BodyFn | None = None) -> Structure:
    """Identity domain over the result, broadcast maps, and the scalar body `expr` builds."""
    scalar = expr(operands, result, attrs) if expr is not None else None
    return Structure(tuple(IterDim(s) for s in result.shape),
                     tuple(broadcast_map(t.shape, result.shape) for t in operands),
                     AffineMap.identity(result.rank), body, scalar)


def same_dtype(operands: Sequence[TensorType], op: str) -> DType:
    """The one element type all operands share (ops never promote; capture inserts casts)."""
    dtypes = {t.dtype for t in operands}
    if len(dtypes) != 1:
        raise ShapeError(f"{op} needs operands of one element type, got "
                         f"{', '.join(sorted(d.value for d in dtypes))}; insert a cast")
    return dtypes.pop()


def _define(name: str, arity: int, run: Callable[..., torch.Tensor], body: BodyFn, *,
            result_dtype: DType | None = None, float_only: bool = False, flops: int = 1,
            attrs: Mapping[str, AttrSpec] | None = None, traits: frozenset[Trait] = frozenset(),
            identity: float | int | None = None, into: bool = False, doc: str = "") -> OpDef:
    """`into`: `run` is a torch function taking `out=` (the op gets `run_into`)."""
    def infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
        dtype = same_dtype(operands, name) if arity > 1 else operands[0].dtype
        if float_only and not dtype.is_float:
            raise ShapeError(f"{name} needs a floating-point operand, got {dtype.value}")
        shape = broadcast_shapes(*(t.shape for t in operands))
        return TensorType(shape, result_dtype or dtype)

    def run_call(call: Call) -> torch.Tensor:
        out = run(*call.args, **dict(call.attrs))
        return out.to(call.type.dtype.torch).expand(call.type.shape)

    def run_into(call: Call, out: torch.Tensor) -> None:
        run(*call.args, **dict(call.attrs), out=out)

    return register(OpDef(
        name=name, kind=OpKind.pointwise, min_operands=arity, max_operands=arity,
        infer=infer, run=run_call, run_into=run_into if into else None,
        structure=lambda ops, res, at: pointwise_structure(ops, res, at, name, body),
        flops=elementwise_flops(flops), attrs=attrs or {}, doc=doc,
        template=Template.elementwise, traits=traits, identity=identity))


# -- bodies ---------------------------------------------------------------------------------
def _unary(prim: Prim) -> BodyFn:
    return lambda ops, result, attrs: apply(prim, Load(0, ops[0].dtype))


def _binary(prim: Prim) -> BodyFn:
    return lambda ops, result, attrs: apply(prim, Load(0, ops[0].dtype), Load(1, ops[1].dtype))


def _args(ops: Sequence[TensorType]) -> tuple[Load, ...]:
    """Each operand read through its (broadcast) map."""
    return tuple(Load(i, t.dtype) for i, t in enumerate(ops))


def _zero_like(x: Expr) -> Expr:
    return lit(0, x.dtype)


def _neg(ops, result, attrs) -> Expr:
    (x,) = _args(ops)
    return apply(Prim.logical_not, x) if x.dtype is DType.i1 else apply(Prim.neg, x)


def _floor(ops, result, attrs) -> Expr:
    (x,) = _args(ops)
    return apply(Prim.floor, x) if x.dtype.is_float else x


def _ceil(ops, result, attrs) -> Expr:
    """-floor(-x): exact in IEEE arithmetic, signed zeros included."""
    (x,) = _args(ops)
    return apply(Prim.neg, apply(Prim.floor, apply(Prim.neg, x))) if x.dtype.is_float else x


def _sign(ops, result, attrs) -> Expr:
    """(x > 0) - (x < 0), as torch computes it: 0 for NaN and for -0.0."""
    (x,) = _args(ops)
    if x.dtype is DType.i1:
        return x
    zero = _zero_like(x)
    return apply(Prim.sub, cast(apply(Prim.gt, x, zero), x.dtype), cast(apply(Prim.lt, x, zero), x.dtype))


def _relu(ops, result, attrs) -> Expr:
    (x,) = _args(ops)
    return select(apply(Prim.lt, x, _zero_like(x)), _zero_like(x), x)


def _silu(ops, result, attrs) -> Expr:
    (x,) = _args(ops)
    return apply(Prim.mul, x, S.sigmoid(x))


def _gelu(ops, result, attrs) -> Expr:
    (x,) = _args(ops)
    mode = attrs.get("approximate", "none")
    if mode == "tanh":
        return S.tanh_gelu(x)
    if mode != "none":
        raise ShapeError(f"gelu approximate={mode!r}: expected 'none' or 'tanh'")
    return S.erf_gelu(x)


def _hardswish(ops, result, attrs) -> Expr:
    """x · relu6(x + 3) / 6."""
    (x,) = _args(ops)
    d = x.dtype
    relu6 = apply(Prim.minimum, apply(Prim.maximum, apply(Prim.add, x, lit(3.0, d)), lit(0.0, d)), lit(6.0, d))
    return apply(Prim.div, apply(Prim.mul, x, relu6), lit(6.0, d))


def _logaddexp(ops, result, attrs) -> Expr:
    """log(eᵃ + eᵇ) = max(a, b) + log(1 + e^-|a - b|), stable for large |a|, |b|.

    Equal infinities (a = b = ±inf) give a − b = NaN; torch returns the infinity, so the
    body selects `a` there.
    """
    a, b = _args(ops)
    d = a.dtype
    big = apply(Prim.maximum, a, b)
    gap = apply(Prim.neg, apply(Prim.abs, apply(Prim.sub, a, b)))
    out = apply(Prim.add, big, apply(Prim.log, apply(Prim.add, lit(1.0, d), apply(Prim.exp, gap))))
    return select(apply(Prim.eq, a, b), apply(Prim.add, a, apply(Prim.log, lit(2.0, d))), out)


def _clamp(ops, result, attrs) -> Expr:
    (x,) = _args(ops)
    if attrs.get("min") is not None:
        x = apply(Prim.maximum, x, lit(attrs["min"], x.dtype))
    if attrs.get("max") is not None:
        x = apply(Prim.minimum, x, lit(attrs["max"], x.dtype))
    return x


def _triangle(lower: bool) -> BodyFn:
    """tril keeps col - row <= diagonal, triu keeps col - row >= diagonal; zero elsewhere."""
    def body(ops, result, attrs) -> Expr:
        (x,) = _args(ops)
        offset = apply(Prim.sub, Loop(result.rank - 1), Loop(result.rank - 2))
        keep = apply(Prim.le if lower else Prim.ge, offset, lit(int(attrs.get("diagonal", 0)), DType.i64))
        return select(keep, x, _zero_like(x))
    return body


def _logical(prim: Prim) -> BodyFn:
    return lambda ops, result, attrs: apply(prim, *(S.truthy(x) for x in _args(ops)))


def _div(ops, result, attrs) -> Expr:
    """torch.div: true division (integers truncate), or floor / trunc rounding."""
    a, b = _args(ops)
    mode = attrs.get("rounding_mode", "none")
    q = apply(Prim.div, a, b)
    if mode == "none" or (mode == "trunc" and not a.dtype.is_float):
        return q
    if mode == "trunc":
        return apply(Prim.trunc, q)
    if mode != "floor":
        raise ShapeError(f"div rounding_mode={mode!r}: expected 'none', 'floor' or 'trunc'")
    if a.dtype.is_float:
        return _float_floor_div(a, b)
    r = apply(Prim.fmod, a, b)
    zero = lit(0, a.dtype)
    inexact = apply(Prim.logical_and, apply(Prim.ne, r, zero),
                    apply(Prim.ne, apply(Prim.lt, r, zero), apply(Prim.lt, b, zero)))
    return select(inexact, apply(Prim.sub, q, lit(1, a.dtype)), q)


def _float_floor_div(a: Expr, b: Expr) -> Expr:
    """Floor division of floats as torch computes it (c10's `div_floor_floating`): the
    quotient of a - fmod(a, b), stepped down when the remainder's sign is wrong and rounded
    to the nearest integer, so an inexact a / b cannot round across an integer; a zero
    quotient keeps the sign of a / b and b = 0 gives the IEEE quotient (±inf or NaN). Half
    types compute it in f32 and round once (as torch on CUDA does; CPU eager rounds every
    step to the half type, so a bf16 / f16 quotient can differ there by one unit)."""
    d = a.dtype
    zero, one = lit(0.0, d), lit(1.0, d)
    mod = apply(Prim.fmod, a, b)
    div = apply(Prim.div, apply(Prim.sub, a, mod), b)
    wrong_sign = apply(Prim.logical_and, apply(Prim.ne, mod, zero),
                       apply(Prim.ne, apply(Prim.lt, b, zero), apply(Prim.lt, mod, zero)))
    div = select(wrong_sign, apply(Prim.sub, div, one), div)
    floor = apply(Prim.floor, div)
    floor = select(apply(Prim.gt, apply(Prim.sub, div, floor), lit(0.5, d)), apply(Prim.add, floor, one), floor)
    q = apply(Prim.div, a, b)
    signed_zero = apply(Prim.mul, zero, q)  # 0 · (a / b): -0 where the quotient is negative
    out = select(apply(Prim.ne, div, zero), floor, signed_zero)
    return select(apply(Prim.eq, b, zero), q, out)


def _remainder(ops, result, attrs) -> Expr:
    """Python-style modulo: the result takes the divisor's sign (fmod, then fixed up)."""
    a, b = _args(ops)
    r = apply(Prim.fmod, a, b)
    zero = lit(0, a.dtype)
    wrong_sign = apply(Prim.logical_and, apply(Prim.ne, r, zero),
                       apply(Prim.ne, apply(Prim.lt, r, zero), apply(Prim.lt, b, zero)))
    return select(wrong_sign, apply(Prim.add, r, b), r)


def _minmax(prim: Prim) -> BodyFn:
    def body(ops, result, attrs) -> Expr:
        a, b = _args(ops)
        if a.dtype is DType.i1:
            return apply(Prim.logical_or if prim is Prim.maximum else Prim.logical_and, a, b)
        return apply(prim, a, b)
    return body


def _bool_arith(prim: Prim, logical: Prim) -> BodyFn:
    """add / mul on i1 are or / and, as torch computes them."""
    def body(ops, result, attrs) -> Expr:
        a, b = _args(ops)
        return apply(logical if a.dtype is DType.i1 else prim, a, b)
    return body


# -- unary -------------------------------------------------------------------------------
_define("neg", 1, torch_fn("neg"), _neg)
_define("abs", 1, torch_fn("abs"), _unary(Prim.abs))
_define("exp", 1, torch_fn("exp"), _unary(Prim.exp), float_only=True)
_define("log", 1, torch_fn("log"), _unary(Prim.log), float_only=True)
_define("sqrt", 1, torch_fn("sqrt"), _unary(Prim.sqrt), float_only=True)
_define("rsqrt", 1, torch_fn("rsqrt"), _unary(Prim.rsqrt), float_only=True)
_define("reciprocal", 1, torch_fn("reciprocal"),
        lambda ops, result, attrs: apply(Prim.div, lit(1.0, ops[0].dtype), Load(0, ops[0].dtype)), float_only=True)
_define("tanh", 1, torch_fn("tanh"), _unary(Prim.tanh), float_only=True)
_define("sigmoid", 1, torch_fn("sigmoid"), _unary(Prim.sigmoid), float_only=True)
_define("erf", 1, torch_fn("erf"), _unary(Prim.erf), float_only=True)
_define("sin", 1, torch_fn("sin"), _unary(Prim.sin), float_only=True)
_define("cos", 1, torch_fn("cos"), _unary(Prim.cos), float_only=True)
_define("floor", 1, torch_fn("floor"), _floor)
_define("ceil", 1, torch_fn("ceil"), _ceil)
_define("sign", 1, torch_fn("sign"), _sign, flops=3)
_define("relu", 1, torch_fn("relu"), _relu)
_define("silu", 1, torch_fn("nn.functional.silu"), _silu, float_only=True, flops=4)
_define("gelu", 1, lambda x, approximate="none": F.gelu(x, approximate=approximate), _gelu,
        float_only=True, flops=8,
        attrs={"approximate": AttrSpec((str,), default="none", doc="'none' (erf) or 'tanh'")})
_define("hardswish", 1, torch_fn("nn.functional.hardswish"), _hardswish, float_only=True, flops=5)
_define("logical_not", 1, torch_fn("logical_not"), lambda ops, result, attrs:
        apply(Prim.logical_not, S.truthy(Load(0, ops[0].dtype))), result_dtype=DType.i1)
_define("clamp", 1, lambda x, min=None, max=None: torch.clamp(x, min=min, max=max), _clamp, flops=2,
        attrs={"min": AttrSpec((int, float, type(None))), "max": AttrSpec((int, float, type(None)))})


_define("tril", 1, lambda x, diagonal=0: torch.tril(x, diagonal), _triangle(lower=True),
        attrs={"diagonal": AttrSpec((int,), default=0)}, doc="zero above the diagonal")
_define("triu", 1, lambda x, diagonal=0: torch.triu(x, diagonal), _triangle(lower=False),
        attrs={"diagonal": AttrSpec((int,), default=0)}, doc="zero below the diagonal")


def _cast_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    try:
        dtype = DType(attrs["dtype"])
    except ValueError:
        raise ShapeError(f"cast to unknown element type {attrs['dtype']!r}") from None
    return TensorType(operands[0].shape, dtype)


CAST = register(OpDef(
    name="cast", kind=OpKind.pointwise, min_operands=1, max_operands=1, infer=_cast_infer,
    run=lambda call: call.args[0].to(call.type.dtype.torch),
    structure=lambda ops, res, at: pointwise_structure(
        ops, res, at, "cast", lambda ops, result, attrs: cast(Load(0, ops[0].dtype), result.dtype)),
    flops=elementwise_flops(0), attrs={"dtype": AttrSpec((str,), required=True)},
    doc="convert the element type (round to nearest even, as torch does)",
    template=Template.elementwise, traits=frozenset({Trait.quiet})))

# -- binary ------------------------------------------------------------------------------
_COMMUTATIVE = frozenset({Trait.commutative})
_define("add", 2, torch_fn("add"), _bool_arith(Prim.add, Prim.logical_or), traits=_COMMUTATIVE, identity=0, into=True)
_define("sub", 2, torch_fn("sub"), _binary(Prim.sub), into=True)
_define("mul", 2, torch_fn("mul"), _bool_arith(Prim.mul, Prim.logical_and), traits=_COMMUTATIVE, identity=1, into=True)
_define("div", 2, lambda a, b, rounding_mode="none":
        torch.div(a, b, rounding_mode=None if rounding_mode == "none" else rounding_mode), _div,
        attrs={"rounding_mode": AttrSpec((str,), default="none", doc="'none', 'floor' or 'trunc'")})
_define("remainder", 2, torch_fn("remainder"), _remainder)
_define("pow", 2, torch_fn("pow"), _binary(Prim.pow), flops=2)
_define("maximum", 2, torch_fn("maximum"), _minmax(Prim.maximum), traits=_COMMUTATIVE)
_define("minimum", 2, torch_fn("minimum"), _minmax(Prim.minimum), traits=_COMMUTATIVE)
_define("logaddexp", 2, torch_fn("logaddexp"), _logaddexp, float_only=True, flops=6, traits=_COMMUTATIVE)
_define("eq", 2, torch_fn("eq"), _binary(Prim.eq), result_dtype=DType.i1, traits=_COMMUTATIVE)
_define("ne", 2, torch_fn("ne"), _binary(Prim.ne), result_dtype=DType.i1, traits=_COMMUTATIVE)
_define("lt", 2, torch_fn("lt"), _binary(Prim.lt), result_dtype=DType.i1)
_define("le", 2, torch_fn("le"), _binary(Prim.le), result_dtype=DType.i1)
_define("gt", 2, torch_fn("gt"), _binary(Prim.gt), result_dtype=DType.i1)
_define("ge", 2, torch_fn("ge"), _binary(Prim.ge), result_dtype=DType.i1)
_define("logical_and", 2, torch_fn("logical_and"), _logical(Prim.logical_and), result_dtype=DType.i1,
        traits=_COMMUTATIVE)
_define("logical_or", 2, torch_fn("logical_or"), _logical(Prim.logical_or), result_dtype=DType.i1,
        traits=_COMMUTATIVE)


# -- ternary -----------------------------------------------------------------------------
def _where_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    cond, a, b = operands
    if cond.dtype is not DType.i1:
        raise ShapeError(f"where needs an i1 condition, got {cond.dtype.value}")
    dtype = same_dtype((a, b), "where")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), dtype)


register(OpDef(
    name="where", kind=OpKind.pointwise, min_operands=3, max_operands=3, infer=_where_infer,
    run=lambda call: torch.where(*call.args).expand(call.type.shape),
    structure=lambda ops, res, at: pointwise_structure(
        ops, res, at, "where", lambda ops, result, attrs: select(*_args(ops))),
    flops=elementwise_flops(1), doc="select a where cond else b", template=Template.elementwise))
