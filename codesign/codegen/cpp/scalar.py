"""The C++ op-to-text table: element types, conversions, literals and scalar bodies.

Every value inside a loop nest is a C++ scalar in its *compute* type (float for f32, bf16
and f16; double for f64; the integer itself otherwise); it is converted from its storage
type when loaded and back when stored. `POINTWISE[op](call)` returns the C++ expression of
one pointwise op applied to already-computed operand expressions, as
`mlir_scalar.POINTWISE` does for MLIR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from codesign.codegen import CodegenError, compute_dtype
from codesign.ir.types import DType

STORAGE = {DType.f64: "double", DType.f32: "float", DType.f16: "f16_t", DType.bf16: "bf16_t",
           DType.i64: "int64_t", DType.i32: "int32_t", DType.i16: "int16_t", DType.i8: "int8_t",
           DType.u8: "uint8_t", DType.i1: "bool"}
"""C++ type a tensor element is stored as."""


def storage(dtype: DType) -> str:
    return STORAGE[dtype]


def ctype(dtype: DType) -> str:
    """C++ type arithmetic on an element happens in."""
    return STORAGE[compute_dtype(dtype)]


def load(dtype: DType, expr: str) -> str:
    """A stored element (`expr` reads it) as its compute type."""
    if dtype is DType.bf16:
        return f"cs_bf16_to_f32({expr})"
    if dtype is DType.f16:
        return f"cs_f16_to_f32({expr})"
    return expr


def store(dtype: DType, expr: str) -> str:
    """A compute-type value converted for storing as `dtype`."""
    if dtype is DType.bf16:
        return f"cs_f32_to_bf16({expr})"
    if dtype is DType.f16:
        return f"cs_f32_to_f16({expr})"
    return expr


def literal(dtype: DType, value: float | int | bool | None) -> str:
    """A C++ constant of `dtype`'s compute type."""
    if dtype is DType.i1:
        return "true" if value else "false"
    if not dtype.is_float:
        value = int(value)
        if dtype is DType.i64:
            return f"INT64_C({value})" if value >= -(1 << 62) else "INT64_MIN"
        return f"({ctype(dtype)})({value})"
    value = float(value)
    suffix = "" if compute_dtype(dtype) is DType.f64 else "f"
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    text = repr(value)
    if "e" not in text and "." not in text:
        text += ".0"
    return f"{text}{suffix}" if value >= 0 else f"({text}{suffix})"


def convert(value: str, src: DType, dst: DType) -> str:
    """`Tensor.to(dst)` of one compute-type value: floats round, float→int truncates."""
    if src is dst:
        return value
    if dst is DType.i1:
        return f"({value} != 0)"
    out = f"({ctype(dst)})({value})"
    if dst is DType.bf16:
        return f"cs_round_bf16({out})"
    if dst is DType.f16:
        return f"cs_round_f16({out})"
    return out


def lowest(dtype: DType) -> str:
    """The identity of max in the compute type."""
    if dtype.is_float:
        return "(-INFINITY)"
    return "false" if dtype is DType.i1 else f"std::numeric_limits<{ctype(dtype)}>::lowest()"


def highest(dtype: DType) -> str:
    if dtype.is_float:
        return "INFINITY"
    return "true" if dtype is DType.i1 else f"std::numeric_limits<{ctype(dtype)}>::max()"


@dataclass(frozen=True)
class ScalarCall:
    """One pointwise op at one point: operand expressions, types, attributes, loop indices."""

    args: Sequence[str]
    operand_dtypes: Sequence[DType]
    result: DType
    attrs: Mapping[str, object]
    index: Sequence[str]  # the point's index expressions, for ops that read it (tril)
    constants: Sequence[object | None] = ()  # operand values known at compile time (full)

    @property
    def dtype(self) -> DType:
        return self.operand_dtypes[0]

    @property
    def t(self) -> str:
        return ctype(self.dtype)

    def const(self, value: float | int | bool) -> str:
        return literal(self.dtype, value)


def _math(fn: str, double_fn: str | None = None) -> Callable[[ScalarCall], str]:
    def emit(c: ScalarCall) -> str:
        if not c.dtype.is_float:
            return f"({c.t})std::{fn}((double)({c.args[0]}))"
        return f"std::{fn}({c.args[0]})"
    return emit


def _exp(c: ScalarCall) -> str:
    return f"cs_exp({c.args[0]})"


def _neg(c: ScalarCall) -> str:
    return f"(!{c.args[0]})" if c.dtype is DType.i1 else f"(-{c.args[0]})"


def _abs(c: ScalarCall) -> str:
    x = c.args[0]
    return f"std::fabs({x})" if c.dtype.is_float else f"({x} < 0 ? -{x} : {x})"


def _relu(c: ScalarCall) -> str:
    x = c.args[0]
    return f"({x} < {c.const(0)} ? {c.const(0)} : {x})"


def _gelu(c: ScalarCall) -> str:
    x = c.args[0]
    if c.attrs.get("approximate", "none") == "tanh":
        k = c.const(math.sqrt(2.0 / math.pi))
        return (f"({c.const(0.5)} * {x} * ({c.const(1.0)} + cs_tanh({k} * ({x} + "
                f"{c.const(0.044715)} * {x} * {x} * {x}))))")
    if c.attrs.get("approximate", "none") != "none":
        raise CodegenError(f"gelu approximate={c.attrs['approximate']!r} has no C++ lowering")
    return f"({c.const(0.5)} * {x} * ({c.const(1.0)} + std::erf({x} * {c.const(math.sqrt(0.5))})))"


def _clamp(c: ScalarCall) -> str:
    x = c.args[0]
    if c.attrs.get("min") is not None:
        x = f"cs_max<{c.t}>({x}, {c.const(c.attrs['min'])})"
    if c.attrs.get("max") is not None:
        x = f"cs_min<{c.t}>({x}, {c.const(c.attrs['max'])})"
    return x


def _triangle(lower: bool) -> Callable[[ScalarCall], str]:
    def emit(c: ScalarCall) -> str:
        row, col = c.index[-2], c.index[-1]
        cmp = "<=" if lower else ">="
        return f"(({col}) - ({row}) {cmp} {int(c.attrs.get('diagonal', 0))} ? {c.args[0]} : {c.const(0)})"
    return emit


def _binary(symbol: str) -> Callable[[ScalarCall], str]:
    def emit(c: ScalarCall) -> str:
        a, b = c.args
        if c.dtype is DType.i1 and symbol in "+*":
            return f"({a} {'||' if symbol == '+' else '&&'} {b})"
        return f"({a} {symbol} {b})"
    return emit


def _div(c: ScalarCall) -> str:
    a, b = c.args
    mode = c.attrs.get("rounding_mode", "none")
    if not c.dtype.is_float:
        return f"cs_floordiv<{c.t}>({a}, {b})" if mode == "floor" else f"({a} / {b})"
    return {"none": f"({a} / {b})", "floor": f"std::floor({a} / {b})", "trunc": f"std::trunc({a} / {b})"}[mode]


def _remainder(c: ScalarCall) -> str:
    a, b = c.args
    return f"cs_fmod<{c.t}>({a}, {b})" if c.dtype.is_float else f"cs_imod<{c.t}>({a}, {b})"


def _pow(c: ScalarCall) -> str:
    a, b = c.args
    exponent = c.constants[1] if len(c.constants) > 1 else None
    if exponent is not None and float(exponent) in (1.0, 2.0, 3.0, 4.0):
        return "(" + " * ".join([a] * int(exponent)) + ")"
    if exponent is not None and float(exponent) == 0.5 and c.dtype.is_float:
        return f"std::sqrt({a})"
    return f"std::pow({a}, {b})" if c.dtype.is_float else f"cs_ipow<{c.t}>({a}, {b})"


def _minmax(fn: str) -> Callable[[ScalarCall], str]:
    def emit(c: ScalarCall) -> str:
        a, b = c.args
        if c.dtype.is_float:
            return f"cs_{fn}<{c.t}>({a}, {b})"
        cmp = ">" if fn == "max" else "<"
        return f"({a} {cmp} {b} ? {a} : {b})"
    return emit


def _compare(symbol: str) -> Callable[[ScalarCall], str]:
    return lambda c: f"({c.args[0]} {symbol} {c.args[1]})"


def _truthy(c: ScalarCall, x: str) -> str:
    return x if c.dtype is DType.i1 else f"({x} != 0)"


def _batch_norm(c: ScalarCall) -> str:
    x, mean, var, *affine = c.args
    y = f"(({x} - {mean}) / std::sqrt({var} + {c.const(c.attrs.get('eps', 1e-5))}))"
    if affine:
        y = f"({y} * {affine[0]})"
    if len(affine) > 1:
        y = f"({y} + {affine[1]})"
    return y


POINTWISE: dict[str, Callable[[ScalarCall], str]] = {
    "neg": _neg, "abs": _abs, "exp": _exp, "log": _math("log"), "sqrt": _math("sqrt"),
    "rsqrt": lambda c: f"({c.const(1.0)} / std::sqrt({c.args[0]}))",
    "reciprocal": lambda c: f"({c.const(1.0)} / {c.args[0]})",
    "tanh": lambda c: f"cs_tanh({c.args[0]})", "sigmoid": lambda c: f"cs_sigmoid<{c.t}>({c.args[0]})",
    "erf": _math("erf"), "sin": _math("sin"), "cos": _math("cos"),
    "floor": lambda c: f"std::floor({c.args[0]})" if c.dtype.is_float else c.args[0],
    "relu": _relu, "silu": lambda c: f"({c.args[0]} * cs_sigmoid<{c.t}>({c.args[0]}))", "gelu": _gelu,
    "logical_not": lambda c: f"(!{_truthy(c, c.args[0])})", "clamp": _clamp,
    "tril": _triangle(lower=True), "triu": _triangle(lower=False),
    "cast": lambda c: convert(c.args[0], c.dtype, c.result),
    "add": _binary("+"), "sub": _binary("-"), "mul": _binary("*"), "div": _div,
    "remainder": _remainder, "pow": _pow, "maximum": _minmax("max"), "minimum": _minmax("min"),
    "eq": _compare("=="), "ne": _compare("!="), "lt": _compare("<"), "le": _compare("<="),
    "gt": _compare(">"), "ge": _compare(">="),
    "logical_and": lambda c: f"({_truthy(c, c.args[0])} && {_truthy(c, c.args[1])})",
    "logical_or": lambda c: f"({_truthy(c, c.args[0])} || {_truthy(c, c.args[1])})",
    "where": lambda c: f"({c.args[0]} ? {c.args[1]} : {c.args[2]})",
    "batch_norm": _batch_norm,
}
"""Pointwise op name → C++ scalar expression emitter."""
