"""The primitive-to-text table of the Triton backend (Inductor's `TritonOverrides`).

`PRIMS[prim](c)` returns the Triton expression of one scalar primitive
(`codesign.ir.scalar.Prim`) applied to operand texts; every elementwise op is rendered
from its body (`Structure.expr`) through this table, so an op's semantics live only in its
module under `codesign/ir/ops`. Arithmetic happens in the compute type (f32 for f16 /
bf16, so a fused chain rounds once, at the store, unless the body casts). Only core `tl`
ops that Triton 3.6 has and the interpreter runs are used (no libdevice), so tanh and pow
are spelled with exp / log; `%` is C's truncated remainder for floats (frem) and ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from codesign.codegen.triton.indexing import receiver
from codesign.ir.scalar import Prim, compute_dtype
from codesign.ir.types import DType

TL_DTYPE = {DType.f64: "tl.float64", DType.f32: "tl.float32", DType.f16: "tl.float16",
            DType.bf16: "tl.bfloat16", DType.i64: "tl.int64", DType.i32: "tl.int32",
            DType.i16: "tl.int16", DType.i8: "tl.int8", DType.u8: "tl.uint8", DType.i1: "tl.int1"}


class Unsupported(Exception):
    """This op (or this use of it) has no Triton text; the caller falls back."""


work_dtype = compute_dtype  # the type a tile is computed in: f32 for the half types


def literal(value: float | int | bool, dtype: DType) -> str:
    """A Python literal Triton folds into the expression's type."""
    if dtype is DType.i1:
        return "1" if value else "0"
    if dtype.is_float:
        value = float(value)
        if math.isnan(value):  # the sign of a NaN is observable (signbit, copysign): keep it
            return '-float("nan")' if math.copysign(1.0, value) < 0 else 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(value)
    return str(int(value))


def cast_text(text: str, src: DType, dst: DType) -> str:
    """Convert a tile from `src` to `dst` as `Tensor.to` does; halves round through f32."""
    if src is dst:
        return text
    if dst is DType.i1:
        return f"({text} != 0)"
    if dst in (DType.f16, DType.bf16):
        if src is DType.f64:  # via f32, as torch's (c10's half types take a float); Triton's
            text = f"{receiver(text)}.to(tl.float32)"  # interpreter mis-converts f64 to bf16
        return f"{receiver(text)}.to({TL_DTYPE[dst]}).to(tl.float32)"
    if dst.is_float and work_dtype(src) is dst:
        return text
    return f"{receiver(text)}.to({TL_DTYPE[work_dtype(dst)]})"


def bare(text: str) -> str:
    """`text` without one pair of enclosing parentheses (a call argument, a condition)."""
    if text.startswith("(") and text.endswith(")"):
        depth = 0
        for ch in text[1:-1]:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                return text
        return text[1:-1] if depth == 0 else text
    return text


@dataclass(frozen=True)
class Operands:
    """One primitive's operands as the renderer hands them over."""

    texts: Sequence[str]  # in their compute types
    dtypes: Sequence[DType]  # the operands' body types
    dtype: DType  # the result's body type
    consts: Sequence[object]  # an operand's Python value when it is a literal, else None
    bind: Callable[[str], str]  # binds a text to a variable (an operand used more than once)
    flag: Callable[[str], None] | None = None  # records a run-time check failing where the text holds

    @property
    def is_float(self) -> bool:
        return self.dtypes[0].is_float


def _tanh(c: Operands) -> str:
    """tanh from exp, stable for large |x| (no libdevice: the interpreter lacks it)."""
    x = c.bind(c.texts[0])
    t = c.bind(f"tl.exp(-2.0 * tl.abs({x}))")
    return f"tl.where({x} < 0, -1.0, 1.0) * ((1.0 - {t}) / (1.0 + {t}))"


def _int_division(c: Operands, remainder: bool) -> str:
    """Integer `//` (truncated) or `%` (the dividend's sign) that never divides by 0 or
    overflows: a zero divisor gives 0 and is flagged (`c.flag`: the caller raises eager's
    ZeroDivisionError after the launch), INT_MIN // -1 wraps to INT_MIN, x % -1 is 0."""
    op = "%" if remainder else "//"
    divisor = c.consts[1] if len(c.consts) > 1 else None
    if divisor is not None and int(divisor) not in (0, -1):
        return f"({c.texts[0]} {op} {c.texts[1]})"
    if divisor is not None and int(divisor) == 0:
        raise Unsupported("integer division by a literal zero (its torch reference raises)")
    a = c.bind(c.texts[0])
    if divisor is not None:  # -1
        return f"({a} * 0)" if remainder else f"(-{a})"
    b = c.bind(c.texts[1])
    if c.flag is not None:
        c.flag(f"{b} == 0")
    special = c.bind(f"({b} == 0)" if c.dtypes[0] is DType.u8 else f"(({b} == 0) | ({b} == -1))")
    safe = f"tl.where({special}, 1, {b})"
    if remainder:
        return f"tl.where({special}, 0, {a} % {safe})"
    return f"tl.where({special}, tl.where({b} == 0, 0, -{a}), {a} // {safe})"


def _fmod(c: Operands) -> str:
    """frem / srem: the dividend's sign, as torch.fmod; NaN for an infinite dividend (the GPU's
    frem gives it back)."""
    if not c.is_float:
        return _int_division(c, True)
    a = c.bind(c.texts[0])
    return f'tl.where(tl.abs({a}) == float("inf"), float("nan"), {a} % {c.texts[1]})'


def _trunc(c: Operands) -> str:
    if not c.is_float:
        return c.texts[0]
    x = c.bind(c.texts[0])
    return f"tl.where({x} < 0, -tl.floor(-{x}), tl.floor({x}))"


def _pow(c: Operands) -> str:
    e = c.consts[1]
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        e = float(e)
        if e in (1.0, 2.0, 3.0):
            a = c.bind(c.texts[0])
            return a if e == 1.0 else f"({' * '.join([a] * int(e))})"
        if e == 0.5 and c.is_float:
            return f"tl.sqrt({c.texts[0]})"
        if e == -1.0 and c.is_float:
            return f"(1.0 / {c.texts[0]})"
        if e == 0.0:
            return f"({c.texts[0]} * 0 + {literal(1, work_dtype(c.dtypes[0]))})"
    if not c.is_float:
        raise Unsupported("integer pow with a non-constant exponent")
    # |a|^b, negated for a negative base and an odd integer exponent, NaN for a negative base
    # and a fractional one, 1 for a^0 and 1^b (as powf does)
    a, b = (c.bind(t) for t in c.texts)
    mag = c.bind(f"tl.exp2({b} * tl.log2(tl.abs({a})))")
    whole = c.bind(f"(tl.floor({b}) == {b})")
    odd = f"{whole} & ((tl.abs({b}) % 2.0) == 1.0)"
    signed = f'tl.where({whole}, tl.where({odd}, -{mag}, {mag}), float("nan"))'
    return f"tl.where(({b} == 0) | ({a} == 1), 1.0, tl.where({a} < 0, {signed}, {mag}))"


def _extreme(fn: str) -> Callable[[Operands], str]:
    """maximum / minimum; NaN-propagating for floats, as torch's."""
    def emit(c: Operands) -> str:
        nan = ", propagate_nan=tl.PropagateNan.ALL" if c.is_float else ""
        return f"{fn}({bare(c.texts[0])}, {bare(c.texts[1])}{nan})"
    return emit


def _infix(op: str) -> Callable[[Operands], str]:
    return lambda c: f"({c.texts[0]} {op} {c.texts[1]})"


def _call(fn: str, ints_unchanged: bool = False) -> Callable[[Operands], str]:
    """`fn(x)`; a rounding primitive (`ints_unchanged`) is the identity on integers."""
    return lambda c: c.texts[0] if ints_unchanged and not c.is_float else f"{fn}({bare(c.texts[0])})"


PRIMS: dict[Prim, Callable[[Operands], str]] = {
    Prim.add: _infix("+"), Prim.sub: _infix("-"), Prim.mul: _infix("*"),
    Prim.div: lambda c: f"({c.texts[0]} / {c.texts[1]})" if c.is_float else _int_division(c, False),
    Prim.fmod: _fmod,
    Prim.neg: lambda c: f"(-{c.texts[0]})", Prim.abs: _call("tl.abs"),
    Prim.maximum: _extreme("tl.maximum"), Prim.minimum: _extreme("tl.minimum"),
    Prim.floor: _call("tl.floor", True), Prim.trunc: _trunc, Prim.pow: _pow,
    Prim.exp: _call("tl.exp"), Prim.log: _call("tl.log"), Prim.sqrt: _call("tl.sqrt"),
    Prim.rsqrt: _call("tl.rsqrt"), Prim.tanh: _tanh, Prim.erf: _call("tl.erf"),
    Prim.sin: _call("tl.sin"), Prim.cos: _call("tl.cos"), Prim.sigmoid: _call("tl.sigmoid"),
    Prim.eq: _infix("=="), Prim.ne: _infix("!="), Prim.lt: _infix("<"), Prim.le: _infix("<="),
    Prim.gt: _infix(">"), Prim.ge: _infix(">="),
    Prim.logical_and: _infix("&"), Prim.logical_or: _infix("|"),
    Prim.logical_not: lambda c: f"({c.texts[0]} == 0)",
    Prim.select: lambda c: f"tl.where({', '.join(bare(t) for t in c.texts)})",
    Prim.cast: lambda c: cast_text(c.texts[0], c.dtypes[0], c.dtype),
}
"""Scalar primitive → Triton text emitter."""
