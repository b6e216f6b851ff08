"""Scalar bodies: what an op computes at one point of its iteration domain, as data.

Every elementwise-at-a-point op (pointwise, layout, source, gather, batch_norm) carries a
body: a small expression tree over a closed set of primitives (`Prim`), operand loads
(`Load`: through the structure's affine map, with an optional validity predicate, or at an
explicit — possibly data-dependent — index), loop indices, affine index arithmetic and
literals. Reductions carry a `Combiner` (operator, identity, finalize). Backends implement
the primitives once (a renderer per backend, as Inductor's `ops` handler or tinygrad's
`code_for_op`) and derive every elementwise op from its body, so an op's semantics live in
one place: its module under `codesign/ir/ops`.

Types: every node names its element type (`dtype`). Arithmetic happens in the *compute*
type (f32 for f16 / bf16, see `compute_dtype`); a `cast` to a half type rounds. Comparisons
yield i1. `evaluate` runs a body on whole index grids with torch: the interpreter's view of
the body, checked against each op's reference in `tests/test_ir_scalar.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, Union

from codesign.ir.affine import AffineExpr
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")  # `evaluate` only: bodies are built and read without torch


class Prim(str, Enum):
    """The closed set of scalar primitives every backend implements."""

    # arithmetic (same-type operands; integer div truncates, fmod takes the dividend's sign)
    add = "add"
    sub = "sub"
    mul = "mul"
    div = "div"
    fmod = "fmod"
    neg = "neg"
    abs = "abs"
    maximum = "maximum"  # NaN-propagating for floats, as torch.maximum
    minimum = "minimum"
    floor = "floor"
    trunc = "trunc"
    pow = "pow"
    # transcendental (float only)
    exp = "exp"
    log = "log"
    sqrt = "sqrt"
    rsqrt = "rsqrt"
    tanh = "tanh"
    erf = "erf"
    sin = "sin"
    cos = "cos"
    sigmoid = "sigmoid"
    # comparisons (result i1; `ne` is unordered: NaN != NaN)
    eq = "eq"
    ne = "ne"
    lt = "lt"
    le = "le"
    gt = "gt"
    ge = "ge"
    # logic on i1
    logical_and = "and"
    logical_or = "or"
    logical_not = "not"
    # control and conversion
    select = "select"  # (cond: i1, a, b)
    cast = "cast"  # to the node's dtype, as Tensor.to (floats round, float -> int truncates)


COMPARISONS = frozenset({Prim.eq, Prim.ne, Prim.lt, Prim.le, Prim.gt, Prim.ge})
FLOAT_ONLY = frozenset({Prim.exp, Prim.log, Prim.sqrt, Prim.rsqrt, Prim.tanh, Prim.erf, Prim.sin,
                        Prim.cos, Prim.sigmoid})
ARITY = {**{p: 1 for p in (Prim.neg, Prim.abs, Prim.floor, Prim.trunc, Prim.logical_not, Prim.cast,
                           *FLOAT_ONLY)},
         Prim.select: 3}


def arity(prim: Prim) -> int:
    return ARITY.get(prim, 2)


def compute_dtype(dtype: DType) -> DType:
    """The type arithmetic on `dtype` happens in: f32 for the half types."""
    return DType.f32 if dtype in (DType.f16, DType.bf16) else dtype


# -- expressions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Lit:
    """A constant of `dtype`."""

    value: float | int | bool
    dtype: DType


@dataclass(frozen=True)
class Loop:
    """The index of iteration-domain dim `dim` (i64)."""

    dim: int
    dtype: DType = DType.i64


@dataclass(frozen=True)
class Affine:
    """An affine expression of the loop indices (i64), e.g. a padded operand's coordinate."""

    expr: AffineExpr
    dtype: DType = DType.i64


@dataclass(frozen=True)
class Load:
    """Operand `operand`'s element.

    With `index=None` the point is read through the structure's operand map; otherwise
    `index` gives the operand's coordinates (one i64 expression per dim, possibly data
    dependent: a gather). Where `valid` is false nothing is read and the value is 0 (the
    surrounding `select` supplies the real value), so pad and concat are gated reads.
    """

    operand: int
    dtype: DType
    index: tuple["Expr", ...] | None = None
    valid: Union["Expr", None] = None


@dataclass(frozen=True)
class Acc:
    """The accumulated value, inside a reduction's `finalize`."""

    dtype: DType


@dataclass(frozen=True)
class Apply:
    """A primitive applied to operand expressions."""

    prim: Prim
    args: tuple["Expr", ...]
    dtype: DType


Expr = Union[Lit, Loop, Affine, Load, Acc, Apply]


@dataclass(frozen=True)
class Combiner:
    """A reduction's combine operator, its identity and the finalize applied to the result."""

    op: Prim
    identity: float | int | bool
    finalize: Expr | None = None  # over `Acc`; None: the accumulator itself

    def accumulator(self, dtype: DType) -> DType:
        """Accumulation type: i1 for a logical combiner (any, all) whatever the input, else
        f32 for float types below f64 and i64 for integers and i1."""
        if self.op in (Prim.logical_or, Prim.logical_and):
            return DType.i1
        if dtype is DType.i1:
            return DType.i64
        if dtype.is_float:
            return DType.f64 if dtype is DType.f64 else DType.f32
        return DType.i64


# -- building bodies -----------------------------------------------------------------------
def apply(prim: Prim, *args: Expr, dtype: DType | None = None) -> Apply:
    """`prim(args)`, typed: comparisons give i1, select the branches' type, else the first's."""
    if dtype is None:
        if prim in COMPARISONS:
            dtype = DType.i1
        elif prim is Prim.select:
            dtype = args[1].dtype
        else:
            dtype = args[0].dtype
    return Apply(prim, tuple(args), dtype)


def lit(value: float | int | bool, dtype: DType) -> Lit:
    return Lit(value, dtype)


def cast(x: Expr, dtype: DType) -> Expr:
    return x if x.dtype is dtype else Apply(Prim.cast, (x,), dtype)


def select(cond: Expr, a: Expr, b: Expr) -> Apply:
    return Apply(Prim.select, (cond, a, b), a.dtype)


def truthy(x: Expr) -> Expr:
    """`x != 0` as i1 (i1 itself unchanged)."""
    return x if x.dtype is DType.i1 else apply(Prim.ne, x, lit(0, x.dtype))


def all_of(conds: Sequence[Expr]) -> Expr | None:
    out: Expr | None = None
    for c in conds:
        out = c if out is None else apply(Prim.logical_and, out, c)
    return out


def conjuncts(e: Expr) -> list[Expr]:
    """The terms of a chain of `and`s (a gated load's conditions), in order."""
    if isinstance(e, Apply) and e.prim is Prim.logical_and:
        return [c for a in e.args for c in conjuncts(a)]
    return [e]


def lowest(dtype: DType) -> float | int | bool:
    """The identity of max in `dtype`: -inf, the type's smallest integer, or false."""
    if dtype.is_float:
        return -math.inf
    return False if dtype is DType.i1 else dtype.int_range[0]


def highest(dtype: DType) -> float | int | bool:
    """The identity of min in `dtype`: inf, the type's largest integer, or true."""
    if dtype.is_float:
        return math.inf
    return True if dtype is DType.i1 else dtype.int_range[1]


def loads(node_dtypes: Sequence[DType]) -> tuple[Load, ...]:
    """One plain load per operand (read through its structure map)."""
    return tuple(Load(i, d) for i, d in enumerate(node_dtypes))


BodyFn = Callable[[Sequence[TensorType], TensorType, Mapping[str, object]], Expr]
"""(operand types, result type, attributes) -> the body."""


# -- walking -------------------------------------------------------------------------------
def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Apply):
        return e.args
    if isinstance(e, Load):
        return (*(e.index or ()), *((e.valid,) if e.valid is not None else ()))
    return ()


def walk(e: Expr):
    """Every node of `e`, operands before users (each shared node once)."""
    seen: set[int] = set()
    order: list[Expr] = []

    def visit(x: Expr) -> None:
        if id(x) in seen:
            return
        seen.add(id(x))
        for c in children(x):
            visit(c)
        order.append(x)
    visit(e)
    return order


def prims_used(e: Expr) -> frozenset[Prim]:
    return frozenset(x.prim for x in walk(e) if isinstance(x, Apply))


def is_plain_load(e: Expr | None, operand: int = 0) -> bool:
    """The body only reads operand `operand` through its map (a layout op)."""
    return isinstance(e, Load) and e.operand == operand and e.index is None and e.valid is None


# -- printing ------------------------------------------------------------------------------
def format_expr(e: Expr) -> str:
    """A compact, deterministic text of a body (for docs, errors and tests)."""
    if isinstance(e, Lit):
        return f"{e.value!r}:{e.dtype.value}"
    if isinstance(e, Loop):
        return f"d{e.dim}"
    if isinstance(e, Affine):
        return f"[{e.expr}]"
    if isinstance(e, Acc):
        return "acc"
    if isinstance(e, Load):
        text = f"load{e.operand}"
        if e.index is not None:
            text += "[" + ", ".join(format_expr(i) for i in e.index) + "]"
        if e.valid is not None:
            text += " if " + format_expr(e.valid)
        return f"({text})" if e.valid is not None else text
    if e.prim is Prim.cast:
        return f"cast<{e.dtype.value}>({format_expr(e.args[0])})"
    return f"{e.prim.value}({', '.join(format_expr(a) for a in e.args)})"


# -- evaluating with torch -----------------------------------------------------------------
_TORCH: dict[Prim, str] = {  # the torch function (by name) that computes each primitive
    Prim.add: "add", Prim.sub: "sub", Prim.mul: "mul", Prim.neg: "neg",
    Prim.abs: "abs", Prim.maximum: "maximum", Prim.minimum: "minimum",
    Prim.floor: "floor", Prim.trunc: "trunc", Prim.fmod: "fmod",
    Prim.exp: "exp", Prim.log: "log", Prim.sqrt: "sqrt", Prim.rsqrt: "rsqrt",
    Prim.tanh: "tanh", Prim.erf: "erf", Prim.sin: "sin", Prim.cos: "cos",
    Prim.sigmoid: "sigmoid",
    Prim.eq: "eq", Prim.ne: "ne", Prim.lt: "lt", Prim.le: "le", Prim.gt: "gt",
    Prim.ge: "ge", Prim.logical_and: "logical_and", Prim.logical_or: "logical_or",
    Prim.logical_not: "logical_not", Prim.select: "where",
}


def torch_function(prim: Prim) -> Callable[..., torch.Tensor]:
    """The torch function that computes `prim` elementwise (`div`, `pow` and `cast` aside)."""
    return getattr(torch, _TORCH[prim])


def _torch_compute(dtype: DType) -> torch.dtype:
    return compute_dtype(dtype).torch


def evaluate(e: Expr, grid: Sequence[torch.Tensor], shape: Sequence[int],
             read: Callable[[int, Sequence[torch.Tensor] | None, torch.Tensor | None], torch.Tensor],
             acc: torch.Tensor | None = None) -> torch.Tensor:
    """`e` at every point of a domain of `shape` (index tensors `grid`), in compute types.

    `read(operand, index, valid)` returns operand `operand` at every point: through its map
    when `index` is None, else at the given coordinate tensors; entries where `valid` is
    false may hold anything (they are never used).
    """
    memo: dict[int, torch.Tensor] = {}
    shape = tuple(shape)

    def full(value, dtype: DType) -> torch.Tensor:
        return torch.full(shape, value, dtype=_torch_compute(dtype))

    def ev(x: Expr) -> torch.Tensor:
        key = id(x)
        if key in memo:
            return memo[key]
        if isinstance(x, Lit):
            out = full(x.value, x.dtype)
        elif isinstance(x, Loop):
            out = grid[x.dim].to(torch.int64).expand(shape)
        elif isinstance(x, Affine):
            v = x.expr.evaluate(list(grid))
            out = v.to(torch.int64).expand(shape) if isinstance(v, torch.Tensor) else full(int(v), DType.i64)
        elif isinstance(x, Acc):
            assert acc is not None, "Acc outside a reduction's finalize"
            out = acc.to(_torch_compute(x.dtype))
        elif isinstance(x, Load):
            valid = ev(x.valid).bool() if x.valid is not None else None
            index = [ev(i) for i in x.index] if x.index is not None else None
            out = read(x.operand, index, valid).to(_torch_compute(x.dtype)).expand(shape)
            if valid is not None:
                out = torch.where(valid, out, torch.zeros((), dtype=out.dtype))
        elif x.prim is Prim.cast:
            (a,) = x.args
            out = ev(a).to(x.dtype.torch).to(_torch_compute(x.dtype))
        elif x.prim is Prim.div:
            a, b = (ev(y) for y in x.args)
            out = torch.div(a, b) if x.dtype.is_float else torch.div(a, b, rounding_mode="trunc")
        elif x.prim is Prim.pow:
            a, b = (ev(y) for y in x.args)
            out = torch.pow(a, b)
        else:
            out = torch_function(x.prim)(*(ev(y) for y in x.args))
        if x.dtype is not DType.i1 and out.dtype is not _torch_compute(x.dtype):
            out = out.to(_torch_compute(x.dtype))
        memo[key] = out
        return out

    return ev(e)


# -- shared bodies ---------------------------------------------------------------------------
def sigmoid(x: Expr) -> Expr:
    return apply(Prim.sigmoid, x)


def tanh(x: Expr) -> Expr:
    return apply(Prim.tanh, x)


def erf_gelu(x: Expr) -> Expr:
    """x·Φ(x) = 0.5·x·(1 + erf(x/√2))."""
    d = x.dtype
    return apply(Prim.mul, apply(Prim.mul, lit(0.5, d), x),
                 apply(Prim.add, lit(1.0, d), apply(Prim.erf, apply(Prim.mul, x, lit(math.sqrt(0.5), d)))))


def tanh_gelu(x: Expr) -> Expr:
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    d = x.dtype
    cube = apply(Prim.mul, apply(Prim.mul, x, x), x)
    inner = apply(Prim.mul, lit(math.sqrt(2.0 / math.pi), d),
                  apply(Prim.add, x, apply(Prim.mul, lit(0.044715, d), cube)))
    return apply(Prim.mul, apply(Prim.mul, lit(0.5, d), x), apply(Prim.add, lit(1.0, d), tanh(inner)))
