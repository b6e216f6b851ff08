"""C++ text for element types, conversions, literals and the scalar primitives.

Every value inside a loop nest is a C++ scalar in its *compute* type (float for f32, bf16
and f16; double for f64; the integer itself otherwise); it is converted from its storage
type when loaded and back when stored. `prim` gives each scalar primitive
(`codesign.ir.scalar.Prim`) as C++ text, once; `exprs` renders every elementwise op's body
(`Structure.expr`) with it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from codesign.codegen import CodegenError, compute_dtype
from codesign.ir.scalar import Prim
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
    if math.isnan(value):  # the sign of a NaN is observable (signbit, copysign): keep it
        return "(-NAN)" if math.copysign(1.0, value) < 0 else "NAN"
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


def _unary_math(fn: str) -> Callable[[str, DType], str]:
    return lambda x, t: f"std::{fn}({x})" if t.is_float else f"({ctype(t)})std::{fn}((double)({x}))"


def _erf(x: str, t: DType) -> str:
    return f"cs_erf({x})" if t.is_float else f"({ctype(t)})std::erf((double)({x}))"


def _minmax(fn: str, cmp: str) -> Callable[[str, str, DType], str]:
    return lambda a, b, t: f"cs_{fn}<{ctype(t)}>({a}, {b})" if t.is_float else f"({a} {cmp} {b} ? {a} : {b})"


UNARY: dict[Prim, Callable[[str, DType], str]] = {
    Prim.neg: lambda x, t: f"(!{x})" if t is DType.i1 else f"(-{x})",
    Prim.abs: lambda x, t: f"std::fabs({x})" if t.is_float else f"({x} < 0 ? -{x} : {x})",
    Prim.floor: lambda x, t: f"std::floor({x})" if t.is_float else x,
    Prim.trunc: lambda x, t: f"std::trunc({x})" if t.is_float else x,
    Prim.exp: lambda x, t: f"cs_exp({x})", Prim.tanh: lambda x, t: f"cs_tanh({x})", Prim.erf: _erf,
    Prim.sigmoid: lambda x, t: f"cs_sigmoid<{ctype(t)}>({x})",
    Prim.rsqrt: lambda x, t: f"({literal(t, 1.0)} / std::sqrt({x}))",
    **{p: _unary_math(p.value) for p in (Prim.log, Prim.sqrt, Prim.sin, Prim.cos)},
    Prim.logical_not: lambda x, t: f"(!{x})",
}
"""Unary primitive -> C++ text, given the operand's text and (compute) element type."""

_SYMBOL = {Prim.add: "+", Prim.sub: "-", Prim.mul: "*", Prim.div: "/", Prim.eq: "==", Prim.ne: "!=",
           Prim.lt: "<", Prim.le: "<=", Prim.gt: ">", Prim.ge: ">=", Prim.logical_and: "&&",
           Prim.logical_or: "||"}
BINARY: dict[Prim, Callable[[str, str, DType], str]] = {
    **{p: (lambda a, b, t, s=s: f"({a} {s} {b})") for p, s in _SYMBOL.items()},  # integer / truncates
    Prim.fmod: lambda a, b, t: f"std::fmod({a}, {b})" if t.is_float else f"({a} % {b})",  # truncated
    Prim.pow: lambda a, b, t: f"std::pow({a}, {b})" if t.is_float else f"cs_ipow<{ctype(t)}>({a}, {b})",
    Prim.maximum: _minmax("max", ">"), Prim.minimum: _minmax("min", "<"),  # NaN-propagating
}
"""Binary primitive -> C++ text, given the operands' texts and their (compute) element type."""


def prim(p: Prim, args: Sequence[str], operand: DType, result: DType,
         constants: Sequence[object | None] = (), site: int = -1) -> str:
    """Primitive `p` of `args` (compute-type texts of element type `operand`) as C++;
    `constants` are the arguments' values where known at compile time (pow specialises).

    Integer `div` / `fmod` never trap: unless the divisor is a constant other than 0 and -1
    they go through the runtime's `cs_idiv` / `cs_irem`, which record a zero divisor as
    check `site` (`codesign.codegen.checks`) and wrap INT_MIN / -1."""
    if p in (Prim.div, Prim.fmod) and not operand.is_float and operand is not DType.i1:
        divisor = constants[1] if len(constants) > 1 else None
        if divisor is None or int(divisor) in (0, -1):
            fn = "cs_idiv" if p is Prim.div else "cs_irem"
            return f"{fn}<{ctype(operand)}>({args[0]}, {args[1]}, {site})"
    if p is Prim.cast:
        return convert(args[0], operand, result)
    if p is Prim.select:
        return f"({args[0]} ? {args[1]} : {args[2]})"
    if p is Prim.pow and len(constants) > 1 and constants[1] is not None:
        exponent = float(constants[1])
        if exponent in (1.0, 2.0, 3.0, 4.0):
            return "(" + " * ".join([args[0]] * int(exponent)) + ")"
        if exponent == 0.5 and operand.is_float:
            return f"std::sqrt({args[0]})"
    try:
        return UNARY[p](args[0], operand) if len(args) == 1 else BINARY[p](args[0], args[1], operand)
    except KeyError:
        raise CodegenError(f"primitive {p.value} has no C++ text") from None
