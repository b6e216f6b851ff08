"""Affine index expressions and maps, as in MLIR's `affine_map`.

Every structured op describes how it reads each operand as a map from its iteration
domain to the operand's indices. Layout ops (reshape, pixel shuffle, upsample-nearest,
slices) are such maps too, which is why `floordiv` and `mod` by constants are allowed:
a reshape is a linearise / delinearise, an upsample a floordiv by the scale.
Expressions fold constants as they are built, so equal maps print equally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union


class AffineExpr:
    """Base of the expression tree; use the operators to build, `evaluate` to run."""

    def __add__(self, other: "ExprLike") -> "AffineExpr":
        return _add(self, as_expr(other))

    def __radd__(self, other: "ExprLike") -> "AffineExpr":
        return _add(as_expr(other), self)

    def __sub__(self, other: "ExprLike") -> "AffineExpr":
        return _add(self, _mul(as_expr(other), -1))

    def __mul__(self, other: int) -> "AffineExpr":
        return _mul(self, int(other))

    __rmul__ = __mul__

    def __floordiv__(self, other: int) -> "AffineExpr":
        return _floordiv(self, int(other))

    def __mod__(self, other: int) -> "AffineExpr":
        return _mod(self, int(other))

    def evaluate(self, dims: Sequence[int]) -> int:
        raise NotImplementedError

    def dims_used(self) -> frozenset[int]:
        raise NotImplementedError


@dataclass(frozen=True)
class Dim(AffineExpr):
    index: int

    def evaluate(self, dims: Sequence[int]) -> int:
        return dims[self.index]

    def dims_used(self) -> frozenset[int]:
        return frozenset({self.index})

    def __str__(self) -> str:
        return f"d{self.index}"


@dataclass(frozen=True)
class Const(AffineExpr):
    value: int

    def evaluate(self, dims: Sequence[int]) -> int:
        return self.value

    def dims_used(self) -> frozenset[int]:
        return frozenset()

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Add(AffineExpr):
    lhs: AffineExpr
    rhs: AffineExpr

    def evaluate(self, dims: Sequence[int]) -> int:
        return self.lhs.evaluate(dims) + self.rhs.evaluate(dims)

    def dims_used(self) -> frozenset[int]:
        return self.lhs.dims_used() | self.rhs.dims_used()

    def __str__(self) -> str:
        if isinstance(self.rhs, Const) and self.rhs.value < 0:
            return f"{self.lhs} - {-self.rhs.value}"
        return f"{self.lhs} + {_paren(self.rhs)}" if isinstance(self.rhs, Add) else f"{self.lhs} + {self.rhs}"


@dataclass(frozen=True)
class Mul(AffineExpr):
    expr: AffineExpr
    factor: int

    def evaluate(self, dims: Sequence[int]) -> int:
        return self.expr.evaluate(dims) * self.factor

    def dims_used(self) -> frozenset[int]:
        return self.expr.dims_used()

    def __str__(self) -> str:
        return f"{_paren(self.expr)} * {self.factor}"


@dataclass(frozen=True)
class FloorDiv(AffineExpr):
    expr: AffineExpr
    divisor: int

    def evaluate(self, dims: Sequence[int]) -> int:
        return self.expr.evaluate(dims) // self.divisor

    def dims_used(self) -> frozenset[int]:
        return self.expr.dims_used()

    def __str__(self) -> str:
        return f"{_paren(self.expr)} floordiv {self.divisor}"


@dataclass(frozen=True)
class Mod(AffineExpr):
    expr: AffineExpr
    divisor: int

    def evaluate(self, dims: Sequence[int]) -> int:
        return self.expr.evaluate(dims) % self.divisor

    def dims_used(self) -> frozenset[int]:
        return self.expr.dims_used()

    def __str__(self) -> str:
        return f"{_paren(self.expr)} mod {self.divisor}"


ExprLike = Union[AffineExpr, int]


def as_expr(value: ExprLike) -> AffineExpr:
    return value if isinstance(value, AffineExpr) else Const(int(value))


def _paren(expr: AffineExpr) -> str:
    return str(expr) if isinstance(expr, (Dim, Const)) else f"({expr})"


def _add(lhs: AffineExpr, rhs: AffineExpr) -> AffineExpr:
    if isinstance(lhs, Const) and isinstance(rhs, Const):
        return Const(lhs.value + rhs.value)
    if isinstance(rhs, Const) and rhs.value == 0:
        return lhs
    if isinstance(lhs, Const) and lhs.value == 0:
        return rhs
    if isinstance(lhs, Const):  # keep constants on the right: d0 + 3, never 3 + d0
        return _add(rhs, lhs)
    if isinstance(lhs, Add) and isinstance(lhs.rhs, Const) and isinstance(rhs, Const):
        return _add(lhs.lhs, Const(lhs.rhs.value + rhs.value))
    return Add(lhs, rhs)


def _mul(expr: AffineExpr, factor: int) -> AffineExpr:
    if factor == 1:
        return expr
    if factor == 0:
        return Const(0)
    if isinstance(expr, Const):
        return Const(expr.value * factor)
    if isinstance(expr, Mul):
        return _mul(expr.expr, expr.factor * factor)
    return Mul(expr, factor)


def _floordiv(expr: AffineExpr, divisor: int) -> AffineExpr:
    if divisor <= 0:
        raise ValueError(f"floordiv needs a positive constant divisor, got {divisor}")
    if divisor == 1:
        return expr
    if isinstance(expr, Const):
        return Const(expr.value // divisor)
    return FloorDiv(expr, divisor)


def _mod(expr: AffineExpr, divisor: int) -> AffineExpr:
    if divisor <= 0:
        raise ValueError(f"mod needs a positive constant divisor, got {divisor}")
    if divisor == 1:
        return Const(0)
    if isinstance(expr, Const):
        return Const(expr.value % divisor)
    return Mod(expr, divisor)


@dataclass(frozen=True)
class AffineMap:
    """`(d0, ..., d{n-1}) -> (e0, ..., e{m-1})`: iteration point to operand index."""

    num_dims: int
    results: tuple[AffineExpr, ...]

    @staticmethod
    def identity(rank: int) -> "AffineMap":
        return AffineMap(rank, tuple(Dim(i) for i in range(rank)))

    @staticmethod
    def of(num_dims: int, results: Sequence[ExprLike]) -> "AffineMap":
        return AffineMap(num_dims, tuple(as_expr(r) for r in results))

    @property
    def is_projected_permutation(self) -> bool:
        """True when each result is a distinct bare dim or zero: cheap to fuse and tile."""
        seen: set[int] = set()
        for r in self.results:
            if isinstance(r, Const) and r.value == 0:
                continue
            if not isinstance(r, Dim) or r.index in seen:
                return False
            seen.add(r.index)
        return True

    def evaluate(self, point: Sequence[int]) -> tuple[int, ...]:
        return tuple(r.evaluate(point) for r in self.results)

    def dims_used(self) -> frozenset[int]:
        used: frozenset[int] = frozenset()
        for r in self.results:
            used |= r.dims_used()
        return used

    def __str__(self) -> str:
        dims = ", ".join(f"d{i}" for i in range(self.num_dims))
        return f"({dims}) -> ({', '.join(str(r) for r in self.results)})"


def monotone_in(expr: AffineExpr, dim: int) -> bool:
    """Whether `expr` is provably monotone in loop dim `dim` (conservatively): `dim` occurs at
    most once, under sums, constant multiples and floor divisions, and no mod is anywhere in
    it. A condition `expr >= c` or `expr < c` then holds on one interval of `dim`."""
    def walk(e: AffineExpr) -> tuple[int, bool]:  # (occurrences of dim, a mod seen)
        if isinstance(e, Dim):
            return int(e.index == dim), False
        if isinstance(e, Const):
            return 0, False
        if isinstance(e, Add):
            (a, m), (b, n) = walk(e.lhs), walk(e.rhs)
            return a + b, m or n
        count, mod = walk(e.expr)
        return count, mod or isinstance(e, Mod)
    count, mod = walk(expr)
    return count <= 1 and not mod


def bound(expr: AffineExpr, extents: Sequence[int]) -> tuple[int, int]:
    """Inclusive [min, max] of `expr` over the box 0 <= d_i < extents[i]."""
    if isinstance(expr, Dim):
        return 0, extents[expr.index] - 1
    if isinstance(expr, Const):
        return expr.value, expr.value
    if isinstance(expr, Add):
        (a, b), (c, d) = bound(expr.lhs, extents), bound(expr.rhs, extents)
        return a + c, b + d
    if isinstance(expr, Mul):
        lo, hi = bound(expr.expr, extents)
        vals = (lo * expr.factor, hi * expr.factor)
        return min(vals), max(vals)
    if isinstance(expr, FloorDiv):
        lo, hi = bound(expr.expr, extents)
        return lo // expr.divisor, hi // expr.divisor
    if isinstance(expr, Mod):
        lo, hi = bound(expr.expr, extents)
        if lo >= 0 and hi < expr.divisor:
            return lo, hi
        return 0, expr.divisor - 1
    raise TypeError(f"unknown affine expression {expr!r}")
