"""The op-to-text table of the Triton backend (Inductor's `TritonOverrides`).

`POINTWISE[op](c)` returns the Triton expression computing one tile of a pointwise op
from its operands' texts. Arithmetic happens in the compute type (f32 for f32 / f16 /
bf16, so a fused chain rounds once, at the store); the semantics are those of the
reference in `codesign/ir/ops/pointwise.py`. Only core `tl` ops that Triton 3.6 has are
used (no libdevice: the interpreter lacks it), so tanh and pow are spelled with exp/log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from codesign.ir.types import DType

TL_DTYPE = {DType.f64: "tl.float64", DType.f32: "tl.float32", DType.f16: "tl.float16",
            DType.bf16: "tl.bfloat16", DType.i64: "tl.int64", DType.i32: "tl.int32",
            DType.i16: "tl.int16", DType.i8: "tl.int8", DType.u8: "tl.uint8", DType.i1: "tl.int1"}


class Unsupported(Exception):
    """This op (or this use of it) has no Triton text; the caller falls back."""


def work_dtype(dtype: DType) -> DType:
    """The type a tile is computed in: f32 for the half types, else the type itself."""
    return DType.f32 if dtype in (DType.f16, DType.bf16) else dtype


def literal(value: float | int | bool, dtype: DType) -> str:
    """A Python literal Triton folds into the expression's type."""
    if dtype is DType.i1:
        return "1" if value else "0"
    if dtype.is_float:
        value = float(value)
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(value)
    return str(int(value))


@dataclass(frozen=True)
class ScalarCall:
    """One tile's worth of a pointwise node: operand texts (in their compute types)."""

    args: Sequence[str]
    dtypes: Sequence[DType]  # operand element types (storage)
    result: DType
    attrs: Mapping[str, object]
    consts: Sequence[object]  # the Python value of an operand that is a `full`, else None
    dims: Callable[[], list[str]]  # the domain's dim texts, for tril / triu

    @property
    def dtype(self) -> DType:
        return work_dtype(self.dtypes[0])

    def lit(self, value) -> str:
        return literal(value, self.dtype)


def cast_text(text: str, src: DType, dst: DType) -> str:
    """Convert a tile from `src` to `dst` as `Tensor.to` does; halves round through f32."""
    if src is dst:
        return text
    if dst is DType.i1:
        return f"({text} != 0)"
    if dst in (DType.f16, DType.bf16):
        return f"{paren_(text)}.to({TL_DTYPE[dst]}).to(tl.float32)"
    if dst.is_float and work_dtype(src) is dst:
        return text
    return f"{paren_(text)}.to({TL_DTYPE[work_dtype(dst)]})"


def paren_(text: str) -> str:
    return text if text.replace("_", "").isalnum() else f"({text})"


def _tanh(x: str) -> str:
    """tanh from exp, stable for large |x| (no libdevice: the interpreter lacks it)."""
    t = f"tl.exp(-2.0 * tl.abs({x}))"
    return f"tl.where({x} < 0, -1.0, 1.0) * ((1.0 - {t}) / (1.0 + {t}))"


def _gelu(c: ScalarCall) -> str:
    (x,) = c.args
    if c.attrs.get("approximate", "none") == "tanh":
        inner = f"0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})"
        return f"0.5 * {x} * (1.0 + {_tanh(inner)})"
    if c.attrs.get("approximate", "none") != "none":
        raise Unsupported(f"gelu approximate={c.attrs['approximate']!r}")
    return f"0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))"


def _clamp(c: ScalarCall) -> str:
    (x,) = c.args
    if c.attrs.get("min") is not None:
        x = f"tl.maximum({x}, {c.lit(c.attrs['min'])})"
    if c.attrs.get("max") is not None:
        x = f"tl.minimum({x}, {c.lit(c.attrs['max'])})"
    return x


def _triangle(lower: bool) -> Callable[[ScalarCall], str]:
    def emit(c: ScalarCall) -> str:
        dims = c.dims()
        row, col = dims[-2], dims[-1]
        op = "<=" if lower else ">="
        return f"tl.where(({col} - {row}) {op} {c.attrs.get('diagonal', 0)}, {c.args[0]}, {c.lit(0)})"
    return emit


def _div(c: ScalarCall) -> str:
    a, b = c.args
    mode = c.attrs.get("rounding_mode", "none")
    if c.dtype.is_float:
        q = f"({a} / {b})"
        return {"none": q, "floor": f"tl.floor{q}", "trunc": f"tl.where({q} < 0, -tl.floor(-{q}), tl.floor({q}))"}[mode]
    if mode == "floor":
        return (f"tl.where((({a} % {b}) != 0) & (({a} < 0) != ({b} < 0)), "
                f"({a} // {b}) - 1, {a} // {b})")
    return f"({a} // {b})"  # Triton's integer // truncates, as torch's int division does


def _remainder(c: ScalarCall) -> str:
    a, b = c.args
    if c.dtype.is_float:
        return f"({a} - tl.floor({a} / {b}) * {b})"
    r = f"({a} % {b})"
    return f"tl.where(({r} != 0) & (({r} < 0) != ({b} < 0)), {r} + {b}, {r})"


def _pow(c: ScalarCall) -> str:
    a, b = c.args
    e = c.consts[1]
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        if float(e) == 2.0:
            return f"({a} * {a})"
        if float(e) == 3.0:
            return f"({a} * {a} * {a})"
        if float(e) == 1.0:
            return a
        if float(e) == 0.5 and c.dtype.is_float:
            return f"tl.sqrt({a})"
        if float(e) == -1.0 and c.dtype.is_float:
            return f"(1.0 / {a})"
        if float(e) == 0.0:
            return f"({a} * 0 + {c.lit(1)})"
    if not c.dtype.is_float:
        raise Unsupported("integer pow with a non-constant exponent")
    # |a|^b, negated for a negative base and an odd integer exponent (as powf does)
    mag = f"tl.exp2({b} * tl.log2(tl.abs({a})))"
    odd = f"((tl.floor({b}) == {b}) & ((tl.abs({b}) % 2.0) == 1.0))"
    return f"tl.where(({a} < 0) & {odd}, -{mag}, {mag})"


def _logical(op: str) -> Callable[[ScalarCall], str]:
    def emit(c: ScalarCall) -> str:
        a, b = (x if d is DType.i1 else f"({x} != 0)" for x, d in zip(c.args, c.dtypes))
        return f"({a} {op} {b})"
    return emit


def _batch_norm(c: ScalarCall) -> str:
    x, mean, var, *affine = c.args
    y = f"(({x} - {mean}) / tl.sqrt({var} + {c.lit(c.attrs.get('eps', 1e-5))}))"
    if affine:
        y = f"({y} * {affine[0]})"
    if len(affine) > 1:
        y = f"({y} + {affine[1]})"
    return y


def _unary(fn: str, float_only: bool = True) -> Callable[[ScalarCall], str]:
    return lambda c: f"{fn}({c.args[0]})"


def _binary(op: str) -> Callable[[ScalarCall], str]:
    return lambda c: f"({c.args[0]} {op} {c.args[1]})"


POINTWISE: dict[str, Callable[[ScalarCall], str]] = {
    "neg": lambda c: f"(-{c.args[0]})",
    "abs": _unary("tl.abs"),
    "exp": _unary("tl.exp"), "log": _unary("tl.log"), "sqrt": _unary("tl.sqrt"),
    "rsqrt": _unary("tl.rsqrt"), "sin": _unary("tl.sin"), "cos": _unary("tl.cos"),
    "erf": _unary("tl.erf"), "sigmoid": _unary("tl.sigmoid"), "tanh": lambda c: _tanh(c.args[0]),
    "reciprocal": lambda c: f"(1.0 / {c.args[0]})",
    "floor": lambda c: f"tl.floor({c.args[0]})" if c.dtype.is_float else c.args[0],
    "relu": lambda c: f"tl.where({c.args[0]} < 0, {c.lit(0)}, {c.args[0]})",
    "silu": lambda c: f"({c.args[0]} * tl.sigmoid({c.args[0]}))",
    "gelu": _gelu,
    "logical_not": lambda c: f"({c.args[0]} == 0)",
    "clamp": _clamp,
    "tril": _triangle(lower=True), "triu": _triangle(lower=False),
    "cast": lambda c: cast_text(c.args[0], c.dtypes[0], c.result),
    "add": _binary("+"), "sub": _binary("-"), "mul": _binary("*"), "div": _div,
    "remainder": _remainder, "pow": _pow,
    "maximum": lambda c: f"tl.maximum({c.args[0]}, {c.args[1]})",
    "minimum": lambda c: f"tl.minimum({c.args[0]}, {c.args[1]})",
    "eq": _binary("=="), "ne": _binary("!="), "lt": _binary("<"), "le": _binary("<="),
    "gt": _binary(">"), "ge": _binary(">="),
    "logical_and": _logical("&"), "logical_or": _logical("|"),
    "where": lambda c: f"tl.where({c.args[0]}, {c.args[1]}, {c.args[2]})",
    "batch_norm": _batch_norm,
}
"""Pointwise op name → Triton text emitter."""

