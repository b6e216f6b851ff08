"""Inverse index maps: where an element of an operand lands in a layout op's result.

A layout op reads its operand through an injective map `result index → operand index`
(a pixel shuffle, a slice, a permute, a reshape). A kernel that computes the operand a
tile at a time (a conv as GEMM tiles) and must store each element where the layout chain
puts it needs the map the other way: `operand index → result index`, defined only on the
map's image (a slice drops the margins). `invert` finds it symbolically from the map's
affine expressions, with the conditions under which an operand element has a result:

- a reshape is inverted as the reshape back (row-major position kept);
- any other map must be, result by result, a sum `c + Σ k_j·t_j` of *atoms* `t_j` that
  each use one result dim (`d`, `(s·d + c) floordiv r`, `(s·d + c) mod r`), with
  coefficients that form a mixed radix (`k_j` divides `k_{j+1}`, `k_j·|t_j| ≤ k_{j+1}`):
  each atom is then one digit of the operand coordinate; a dim is recovered from its atom
  (`d` itself, or the pair `floordiv r` and `mod r` of one `s·d + c`), and every other
  atom of that dim is checked against it.

The conditions (ranges, divisibility, agreement) make the inverse exact: an operand index
meets them exactly when some result index reads it, and then the inverse returns that
index. Expressions are simplified with the operand's extents (`simplify`: MLIR's
floordiv / mod rules), so a chain of reshapes and permutes costs a few integer operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import Sequence

from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul, bound
from codesign.ir.ops.layout import reshape_map

Terms = dict[AffineExpr, int]  # atom -> coefficient, in first-seen order (deterministic)


@dataclass(frozen=True)
class InRange:
    """A condition of an inverse: `lo <= expr <= hi`."""

    expr: AffineExpr
    lo: int
    hi: int


@dataclass(frozen=True)
class Inverse:
    """`results[d]` is result dim d of an operand index (dims: the operand's), valid where
    every condition holds; `results` is empty for no valid index."""

    results: tuple[AffineExpr, ...]
    conditions: tuple[InRange, ...]


# -- linear forms and simplification --------------------------------------------------------------
def linear_terms(expr: AffineExpr) -> tuple[int, Terms]:
    """`expr` as `const + Σ coefficient · atom` (atoms: dims, floordivs, mods)."""
    if isinstance(expr, Const):
        return expr.value, {}
    if isinstance(expr, (Dim, FloorDiv, Mod)):
        return 0, {expr: 1}
    if isinstance(expr, Mul):
        c, terms = linear_terms(expr.expr)
        return c * expr.factor, {t: k * expr.factor for t, k in terms.items()}
    if isinstance(expr, Add):
        c1, t1 = linear_terms(expr.lhs)
        c2, t2 = linear_terms(expr.rhs)
        merged = dict(t1)
        for t, k in t2.items():
            merged[t] = merged.get(t, 0) + k
        return c1 + c2, {t: k for t, k in merged.items() if k}
    raise TypeError(f"unknown affine expression {expr!r}")


def from_terms(const: int, terms: Terms) -> AffineExpr:
    out: AffineExpr = Const(0)
    for t, k in terms.items():
        out = out + t * k
    return out + const


def _recombine(const: int, terms: Terms) -> tuple[int, Terms]:
    """`k·r·(L floordiv r) + k·(L mod r)` is `k·L`."""
    changed = True
    while changed:
        changed = False
        for t, k in list(terms.items()):
            if isinstance(t, Mod) and terms.get(FloorDiv(t.expr, t.divisor)) == k * t.divisor:
                del terms[t], terms[FloorDiv(t.expr, t.divisor)]
                c, inner = linear_terms(t.expr)
                const += c * k
                for a, j in inner.items():
                    terms[a] = terms.get(a, 0) + j * k
                terms = {a: j for a, j in terms.items() if j}
                changed = True
                break
    return const, terms


def simplify(expr: AffineExpr, extents: Sequence[int]) -> AffineExpr:
    """`expr` over the box `0 <= d_i < extents[i]`, with `(m·Q + R) floordiv m = Q + R floordiv m`,
    `(m·Q + R) mod m = R mod m`, `R floordiv m = 0` and `R mod m = R` where `0 <= R < m`, nested
    floordivs merged and digit pairs recombined (MLIR's affine simplifications)."""
    if isinstance(expr, (Dim, Const)):
        return expr
    if isinstance(expr, (Add, Mul)):
        const, atoms = linear_terms(expr)
        terms: Terms = {}  # atoms simplified, then like terms merged
        for t, k in atoms.items():
            c, inner = linear_terms(simplify(t, extents))
            const += c * k
            for a, j in inner.items():
                terms[a] = terms.get(a, 0) + j * k
        return from_terms(*_recombine(const, {a: j for a, j in terms.items() if j}))
    inner = simplify(expr.expr, extents)
    m = expr.divisor
    if isinstance(expr, FloorDiv) and isinstance(inner, FloorDiv):
        return simplify(FloorDiv(inner.expr, inner.divisor * m), extents)
    if isinstance(expr, Mod) and isinstance(inner, Mod) and inner.divisor % m == 0:
        return simplify(Mod(inner.expr, m), extents)
    const, terms = linear_terms(inner)
    split = _digit_split(const, terms, m, extents)
    if split is not None:  # (a·X + R) with 0 <= R < a and a | m: a floordiv / mod of X alone
        a, high, low = split
        x = simplify(from_terms(0, {t: k // a for t, k in high.items()}), extents)
        if isinstance(expr, FloorDiv):
            return simplify(FloorDiv(x, m // a), extents) if m > a else x
        return simplify(Mod(x, m // a) * a + low, extents) if m > a else low
    whole = {t: k // m for t, k in terms.items() if k % m == 0}
    rest = from_terms(const % m, {t: k for t, k in terms.items() if k % m})
    lo, hi = bound(rest, extents)
    if isinstance(expr, FloorDiv):
        q = from_terms(const // m, whole)
        return q if 0 <= lo and hi < m else q + FloorDiv(rest, m)
    return rest if 0 <= lo and hi < m else Mod(rest, m)


def _digit_split(const: int, terms: Terms, m: int, extents: Sequence[int]) -> tuple[int, Terms, AffineExpr] | None:
    """`const + Σ k·t` as `a·X + R` with `a` dividing `m` and every `k` of X, `0 <= R < a`
    (R: the terms of smallest coefficients and the constant), the largest such `a`."""
    order = sorted(terms.items(), key=lambda tk: tk[1])
    for i in range(len(order)):
        low, high = from_terms(const, dict(order[:i])), dict(order[i:])
        a = m
        for k in high.values():
            a = gcd(a, k)
        lo, hi = bound(low, extents)
        if a > 1 and 0 <= lo and hi < a:
            return a, high, low
    return None


# -- inverting one map ----------------------------------------------------------------------------
def _dim_of(atom: AffineExpr) -> int | None:
    used = atom.dims_used()
    return next(iter(used)) if len(used) == 1 else None


def _solve(amap: AffineMap, result_shape: Sequence[int]) -> Inverse | None:
    """The digit inverse of a map whose results are mixed-radix sums of one-dim atoms."""
    conditions: list[InRange] = []
    values: dict[AffineExpr, AffineExpr] = {}  # atom -> its value as an operand-index expression
    for a, e in enumerate(amap.results):
        const, terms = linear_terms(e)
        if any(k <= 0 or _dim_of(t) is None for t, k in terms.items()):
            return None
        digits = sorted(terms.items(), key=lambda tk: tk[1])
        ranges = [bound(t, result_shape) for t, _ in digits]
        const += sum(k * lo for (_, k), (lo, _) in zip(digits, ranges))
        u = Dim(a) - const
        if not digits:
            conditions.append(InRange(u, 0, 0))
            continue
        first = digits[0][1]
        if first > 1:
            conditions.append(InRange(u % first, 0, 0))
        for j, ((t, k), (lo, hi)) in enumerate(zip(digits, ranges)):
            if j + 1 < len(digits):
                radix, nxt = digits[j + 1][1] // k, digits[j + 1][1]
                if nxt % k or k * (hi - lo + 1) > nxt:
                    return None  # not a mixed radix: digits would overlap
                digit = (u // k) % radix
                if hi - lo + 1 < radix:
                    conditions.append(InRange(digit, 0, hi - lo))
            else:
                digit = u // k
                conditions.append(InRange(digit, 0, hi - lo))
            if t in values:
                conditions.append(InRange(values[t] - (digit + lo), 0, 0))
            else:
                values[t] = digit + lo
    # each result dim from its atoms: the dim itself, or a floordiv / mod pair of one s·d + c
    results: list[AffineExpr] = []
    for d, size in enumerate(result_shape):
        atoms = [t for t in values if _dim_of(t) == d]
        solved: AffineExpr | None = None
        used: set[AffineExpr] = set()
        if Dim(d) in values:
            solved, used = values[Dim(d)], {Dim(d)}
        else:
            for t in atoms:
                pair = FloorDiv(t.expr, t.divisor) if isinstance(t, Mod) else None
                if pair is None or pair not in values:
                    continue
                c, inner = linear_terms(t.expr)
                if list(inner) != [Dim(d)]:
                    continue
                s = inner[Dim(d)]
                whole = values[pair] * t.divisor + values[t] - c
                if s < 0:
                    continue
                if s > 1:
                    conditions.append(InRange(whole % s, 0, 0))
                solved, used = whole // s, {t, pair}
                break
        if solved is None:
            if size != 1:
                return None  # this dim is not recoverable: the map is not injective in it
            solved = Const(0)
        for t in atoms:  # every other atom of d must agree with the value recovered
            if t not in used:
                conditions.append(InRange(_substitute(t, d, solved) - values[t], 0, 0))
        conditions.append(InRange(solved, 0, size - 1))
        results.append(solved)
    return Inverse(tuple(results), tuple(conditions))


def substitute(expr: AffineExpr, values: Sequence[AffineExpr]) -> AffineExpr:
    """`expr` with each dim d replaced by `values[d]` (composition of index maps)."""
    if isinstance(expr, Dim):
        return values[expr.index]
    if isinstance(expr, Const):
        return expr
    if isinstance(expr, Add):
        return substitute(expr.lhs, values) + substitute(expr.rhs, values)
    if isinstance(expr, Mul):
        return substitute(expr.expr, values) * expr.factor
    if isinstance(expr, FloorDiv):
        return substitute(expr.expr, values) // expr.divisor
    if isinstance(expr, Mod):
        return substitute(expr.expr, values) % expr.divisor
    raise TypeError(f"unknown affine expression {expr!r}")


def _substitute(expr: AffineExpr, dim: int, value: AffineExpr) -> AffineExpr:
    dims = tuple(value if i == dim else Dim(i) for i in range(dim + 1))
    return substitute(expr, dims)


def invert(amap: AffineMap, result_shape: Sequence[int], operand_shape: Sequence[int]) -> Inverse | None:
    """The inverse of layout map `amap` (result index → operand index), or None where it is
    not of a form `_solve` inverts (or not injective)."""
    if amap == reshape_map(operand_shape, result_shape):
        return Inverse(reshape_map(result_shape, operand_shape).results, ())
    return _solve(amap, result_shape)


def compose_inverses(inverses: Sequence[Inverse], anchor_shape: Sequence[int]) -> Inverse:
    """The chain's inverse: each link's inverse applied to the previous one's results, the
    conditions gathered, everything simplified over the anchor's extents (conditions that
    always hold dropped, one that never holds makes the inverse empty)."""
    current: tuple[AffineExpr, ...] = tuple(Dim(i) for i in range(len(anchor_shape)))
    conditions: list[InRange] = []
    for inv in inverses:
        conditions += [InRange(substitute(c.expr, current), c.lo, c.hi) for c in inv.conditions]
        current = tuple(substitute(r, current) for r in inv.results)
    kept: list[InRange] = []
    for c in conditions:
        expr = simplify(c.expr, anchor_shape)
        lo, hi = bound(expr, anchor_shape)
        if c.lo <= lo and hi <= c.hi:
            continue
        if hi < c.lo or lo > c.hi:
            return Inverse((), ())
        if InRange(expr, c.lo, c.hi) not in kept:
            kept.append(InRange(expr, c.lo, c.hi))
    return Inverse(tuple(simplify(r, anchor_shape) for r in current), tuple(kept))
