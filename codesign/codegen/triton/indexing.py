"""Index arithmetic for generated Triton code: affine maps become address text.

An `Index` says where a tile of a value is read or written: the value's shape and, for
runs of consecutive dims, one flattened index text each (a `Factor`). A pointwise kernel
over a contiguous buffer has one factor, `xindex`, covering every dim; a row kernel has
`xindex` for the kept dims and `rindex` for the reduced ones; a matmul has `offs_m`,
`offs_n`, `offs_k`. A dim's own index is derived (`// inner % size`) only when a map
needs it, so an identity map or a reshape of a contiguous value costs no arithmetic, and
a permute, a broadcast or an upsample costs exactly its map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from math import prod
from typing import Sequence

from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul


@dataclass(frozen=True)
class Factor:
    """Dims [start, stop) of a shape, flattened row-major into the index text `var`."""

    var: str
    start: int
    stop: int


def paren(text: str) -> str:
    simple = text.replace("_", "").replace(".", "").isalnum() or (text.startswith("(") and text.endswith(")")
                                                                  and _balanced(text[1:-1]))
    return text if simple else f"({text})"


def receiver(text: str) -> str:
    """`text` as the receiver of a method call (`.to(...)`): as `paren` gives it, and a number
    in parentheses too (`0.to(...)` does not parse)."""
    return f"({text})" if text[:1].isdigit() or text[:1] == "." else paren(text)


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def expr_text(expr: AffineExpr, dims: Sequence[str]) -> str:
    """Triton text of an affine expression, given the text of every domain dim."""
    if isinstance(expr, Dim):
        return dims[expr.index]
    if isinstance(expr, Const):
        return str(expr.value)
    if isinstance(expr, Add):
        lhs, rhs = expr_text(expr.lhs, dims), expr_text(expr.rhs, dims)
        if lhs == "0":
            return rhs
        if rhs == "0":
            return lhs
        if isinstance(expr.rhs, Const) and expr.rhs.value < 0:
            return f"({lhs} - {-expr.rhs.value})"
        return f"({lhs} + {rhs})"
    if isinstance(expr, Mul):
        inner = expr_text(expr.expr, dims)
        return "0" if inner == "0" else f"({paren(inner)} * {expr.factor})"
    if isinstance(expr, FloorDiv):
        inner = expr_text(expr.expr, dims)
        return "0" if inner == "0" else f"({paren(inner)} // {expr.divisor})"
    if isinstance(expr, Mod):
        inner = expr_text(expr.expr, dims)
        return "0" if inner == "0" else f"({paren(inner)} % {expr.divisor})"
    raise TypeError(f"unknown affine expression {expr!r}")


# the base index variables of every kernel template; a mask condition applies to a load
# only when the load's address mentions all the variables the condition does
BASE_VARS = ("xindex", "rindex", "offs_m", "offs_n", "offs_k", "offs_kt", "offs_d", "offs_dt",
             "offs_e", "offs_j", "offs_jt")
_VAR = re.compile(r"\b(" + "|".join(BASE_VARS) + r")\b")


def base_vars(text: str) -> set[str]:
    return set(_VAR.findall(text))


def and_masks(conds: Sequence[str]) -> str | None:
    parts = list(dict.fromkeys(c for c in conds if c))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else " & ".join(paren(m) for m in parts)


@dataclass(frozen=True)
class Index:
    """Where a tile of a value of `shape` lives: factors covering its dims, and a mask."""

    shape: tuple[int, ...]
    factors: tuple[Factor, ...]
    mask: tuple[str, ...] = ()  # conditions, all true where the tile's lanes are valid
    tile: str = "[XBLOCK]"  # the tile's shape as Triton text, for constants

    @staticmethod
    def flat(shape: Sequence[int], var: str, mask: tuple[str, ...], tile: str) -> "Index":
        shape = tuple(shape)
        factors = (Factor(var, 0, len(shape)),) if shape else ()
        return Index(shape, factors, mask, tile)

    @staticmethod
    def of_dims(shape: Sequence[int], dims: Sequence[str], mask: tuple[str, ...], tile: str) -> "Index":
        return Index(tuple(shape), tuple(Factor(d, i, i + 1) for i, d in enumerate(dims)), mask, tile)

    @property
    def key(self) -> tuple:
        return (self.shape, self.factors, self.mask)

    def factor_at(self, dim: int) -> Factor:
        for f in self.factors:
            if f.start <= dim < f.stop:
                return f
        raise IndexError(dim)

    def dim(self, i: int) -> str:
        """The text of dim i's own index."""
        if self.shape[i] == 1:
            return "0"
        f = self.factor_at(i)
        if f.stop - f.start == 1 or f.var == "0":
            return f.var
        inner = prod(self.shape[i + 1:f.stop])
        text = f.var if inner == 1 else f"({paren(f.var)} // {inner})"
        if i != f.start and prod(self.shape[f.start:i]) > 1:
            text = f"({paren(text)} % {self.shape[i]})"
        return text

    def dims(self) -> list[str]:
        return [self.dim(i) for i in range(len(self.shape))]

    def linear(self) -> str:
        """Row-major offset into a contiguous buffer of this shape."""
        terms = []
        for f in self.factors:
            if f.var == "0" or prod(self.shape[f.start:f.stop]) == 1:
                continue
            stride = prod(self.shape[f.stop:])
            terms.append(f.var if stride == 1 else f"{paren(f.var)} * {stride}")
        return " + ".join(terms) if terms else "0"

    def with_mask(self, *conds: str) -> "Index":
        return replace(self, mask=tuple(dict.fromkeys(self.mask + tuple(c for c in conds if c))))

    def mask_text(self) -> str | None:
        return and_masks(self.mask)

    def mask_for(self, address: str) -> str | None:
        """The conditions that apply to an access at `address` (whose variables they use),
        so that the mask broadcasts to the pointer's shape, as Triton 3.6's load needs."""
        have = base_vars(address)
        return and_masks([c for c in self.mask if base_vars(c) <= have])

    def reshaped(self, shape: Sequence[int]) -> "Index":
        """The same elements seen with another row-major shape (a reshape is free)."""
        shape = tuple(shape)
        factors, j = [], 0
        for f in self.factors:
            size = prod(self.shape[f.start:f.stop])
            start, acc = j, 1
            while j < len(shape) and (acc < size or (shape[j] == 1 and acc == size and size == 1)):
                acc *= shape[j]
                j += 1
            if acc != size:
                return Index.flat(shape, self.linear(), self.mask, self.tile)
            if j > start:
                factors.append(Factor(f.var, start, j))
        while j < len(shape) and shape[j] == 1:
            j += 1
        if j != len(shape):
            return Index.flat(shape, self.linear(), self.mask, self.tile)
        fixed = _cover(shape, factors)
        return Index(shape, fixed, self.mask, self.tile)

    def through(self, amap: AffineMap, shape: Sequence[int]) -> "Index":
        """The index of an operand of `shape` read through `amap` from this index."""
        shape = tuple(shape)
        if tuple(shape) == self.shape and amap == AffineMap.identity(len(shape)):
            return self
        res = amap.results
        texts = None
        factors: list[Factor] = []
        j = 0
        while j < len(res):
            e = res[j]
            if isinstance(e, Dim):
                f = self.factor_at(e.index)
                if f.stop - f.start > 1:
                    k, d = j, e.index
                    while k < len(res) and d < f.stop:
                        if isinstance(res[k], Dim) and res[k].index == d and shape[k] == self.shape[d]:
                            k, d = k + 1, d + 1
                        elif self.shape[d] == 1:
                            d += 1
                        elif shape[k] == 1:
                            k += 1
                        else:
                            break
                    if k > j + 1 or (k > j and d - e.index > 1):
                        var = f.var
                        if d < f.stop and prod(self.shape[d:f.stop]) > 1:
                            var = f"({paren(var)} // {prod(self.shape[d:f.stop])})"
                        if e.index > f.start and prod(self.shape[f.start:e.index]) > 1:
                            var = f"({paren(var)} % {prod(self.shape[e.index:d])})"
                        factors.append(Factor(var, j, k))
                        j = k
                        continue
            if texts is None:
                texts = self.dims()
            factors.append(Factor(expr_text(e, texts) if shape[j] != 1 else "0", j, j + 1))
            j += 1
        return Index(shape, tuple(factors), self.mask, self.tile)


def _cover(shape: tuple[int, ...], factors: list[Factor]) -> tuple[Factor, ...]:
    """Fill the gaps (size-1 dims) between factors with constant-zero factors."""
    out, j = [], 0
    for f in factors:
        for d in range(j, f.start):
            out.append(Factor("0", d, d + 1))
        out.append(f)
        j = f.stop
    for d in range(j, len(shape)):
        out.append(Factor("0", d, d + 1))
    return tuple(out)
