"""Values at a point: the expression generator that inlines a kernel's elementwise nodes.

A value is either *materialized* (it has a buffer: read it) or *inlined* (an elementwise
node of the same kernel, or a constant source op: render its scalar body, `Structure.expr`,
reading its operands through its indexing maps). `Scope.value(name, access)` returns a C++ expression for the value at
`access`, emitting `const` locals for each node computed unconditionally, so a fused chain
becomes straight-line code in one loop body and its intermediates never touch memory.
An `Access` is a point in a value's index space, kept as a linear offset while every map
on the way is the identity or a reshape (so contiguous chains stay one flat, vectorisable
loop), and as a multi-index otherwise. A body's shared subexpressions become one local;
a gated read (`Load.valid`: pad, concat) is rendered inside its branch, never hoisted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from math import prod
from typing import TYPE_CHECKING, Sequence

from codesign.codegen import CodegenError
from codesign.codegen.checks import DIVISION, INDEX, Site, data_dependent, is_int_division, reported
from codesign.codegen.cpp import scalar as S
from codesign.codegen.lowering import reads_row_major
from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul, bound
from codesign.ir.graph import Node
from codesign.ir.ops.layout import strides
from codesign.ir.ops.registry import Structure, Template, get_op
from codesign.ir.scalar import Acc, Affine, Apply, Expr, Lit, Load, Loop, Prim, children, conjuncts, walk

if TYPE_CHECKING:
    from codesign.codegen.cpp.kernels import KernelEmitter


def is_expression_op(op: str) -> bool:
    """Is `op`'s value at a point a scalar body of its operands (inlined into its readers)?"""
    return get_op(op).template is Template.elementwise


def render(expr: AffineExpr, dims: Sequence[str], extents: Sequence[int]) -> str:
    """An affine expression in C++, its dims replaced by `dims` (each in [0, extent))."""
    if isinstance(expr, Dim):
        return dims[expr.index]
    if isinstance(expr, Const):
        return str(expr.value)
    if isinstance(expr, Add):
        rhs = expr.rhs
        if isinstance(rhs, Const) and rhs.value < 0:
            return f"({render(expr.lhs, dims, extents)} - {-rhs.value})"
        return f"({render(expr.lhs, dims, extents)} + {render(rhs, dims, extents)})"
    if isinstance(expr, Mul):
        return f"({render(expr.expr, dims, extents)} * {expr.factor})"
    if isinstance(expr, (FloorDiv, Mod)):
        inner = render(expr.expr, dims, extents)
        k = expr.divisor
        if bound(expr.expr, extents)[0] >= 0:
            return f"({inner} / {k})" if isinstance(expr, FloorDiv) else f"({inner} % {k})"
        fn = "cs_floordiv" if isinstance(expr, FloorDiv) else "cs_imod"
        return f"{fn}<int64_t>({inner}, {k})"
    raise CodegenError(f"unknown affine expression {expr!r}")


def decompose(row: str, shape: Sequence[int]) -> list[str]:
    """The multi-index of row-major position `row` (any C++ expression) in `shape`."""
    out, outer = [], True
    for n, st in zip(shape, strides(shape)):
        if n == 1:
            out.append("0")
            continue
        q = f"(({row}) / {st})" if st != 1 else f"({row})"  # `row` may be a sum: divide all of it
        out.append(q if outer else f"({q} % {n})")
        outer = False
    return out


def linear_offset(index: Sequence[str], shape: Sequence[int]) -> str:
    terms = [f"{i} * {s}" if s != 1 else i for i, s, n in zip(index, strides(shape), shape) if n != 1]
    return " + ".join(terms) if terms else "0"


@dataclass
class Access:
    """A point of a value of `shape`: a linear offset, a multi-index, or both."""

    shape: tuple[int, ...]
    linear: str | None = None
    index: tuple[str, ...] | None = None

    def key(self) -> str:
        return self.linear if self.linear is not None else ",".join(self.index or ())

    def flat(self) -> str:
        if self.linear is not None:
            return self.linear
        return linear_offset(self.index or (), self.shape)

    def multi(self, scope: "Scope") -> tuple[str, ...]:
        if self.index is None:
            scope.delinearized = True
            self.index = tuple("0" if n == 1 else (f"(({self.linear}) / {st} % {n})" if st * n != prod(self.shape)
                                                   else f"(({self.linear}) / {st})")
                               for n, st in zip(self.shape, strides(self.shape)))
        return self.index

    def through(self, amap: AffineMap, shape: Sequence[int], scope: "Scope") -> "Access":
        """The operand point this point reads through `amap` (operand of `shape`)."""
        shape = tuple(shape)
        if shape == self.shape and amap.results == AffineMap.identity(len(shape)).results:
            return self
        idx = self.multi(scope)
        return Access(shape, index=tuple(render(r, idx, self.shape) for r in amap.results))


@dataclass
class Scope:
    """One C++ block: the statements emitted so far and the locals already computed."""

    kernel: "KernelEmitter"
    indent: str
    lines: list[str] = field(default_factory=list)
    memo: dict[tuple[str, str], str] = field(default_factory=dict)
    delinearized: bool = False

    def emit(self, line: str) -> None:
        self.lines.append(self.indent + line)

    def local(self, ctype: str, expr: str, hint: str = "v") -> str:
        name = self.kernel.fresh(hint)
        self.emit(f"const {ctype} {name} = {expr};")
        return name

    # -- the generator ------------------------------------------------------------------
    def value(self, name: str, access: Access, guarded: bool = False) -> str:
        """`name` at `access` as a compute-type expression (locals emitted when unguarded)."""
        k = self.kernel
        buf = k.buffer(name)
        if buf is not None:
            return S.load(k.dtype(name), f"{buf}[{access.flat()}]")
        node = k.node(name)
        if node is None or not is_expression_op(node.op):
            raise CodegenError(f"%{name} is neither materialized nor an expression in kernel {k.kernel.key}")
        st = k.structure(node)
        if isinstance(st.expr, Lit):
            return S.literal(node.type.dtype, st.expr.value)
        key = (name, access.key())
        if key in self.memo:
            return self.memo[key]
        expr = self._compute(node, access, guarded)
        if guarded:
            return f"({expr})"
        var = self.local(S.ctype(node.type.dtype), expr)
        self.memo[key] = var
        return var

    def _compute(self, node: Node, access: Access, guarded: bool) -> str:
        """`node`'s scalar body at `access`, as one C++ expression."""
        st = self.kernel.structure(node)
        if st.expr is None:
            raise CodegenError(f"%{node.name} = {node.op}(...): no scalar body")
        return Body(self, st.expr, node, st, access).render(st.expr, guarded)


_NEGATION = {Prim.lt: Prim.ge, Prim.ge: Prim.lt, Prim.le: Prim.gt, Prim.gt: Prim.le}


def _implied(cond: Expr, facts: frozenset) -> bool:
    """Is `cond` known true where `facts` ((condition, truth) pairs of enclosing selects) hold?"""
    if (cond, True) in facts:
        return True
    neg = _NEGATION.get(cond.prim) if isinstance(cond, Apply) else None
    return (neg is not None and not cond.args[0].dtype.is_float  # NaN: not (a < b) is not a >= b
            and (Apply(neg, cond.args, cond.dtype), False) in facts)


class Body:
    """Renders one node's scalar body at one point: `Load`s read operands through the
    structure's maps (or at explicit coordinates), `Loop` / `Affine` are the point's index,
    every `Apply` is the primitive's C++ text (`scalar.prim`). Unguarded, a subexpression
    used more than once becomes one local; a gated load drops the conditions its enclosing
    selects already decide and reads inside the branch only."""

    def __init__(self, scope: Scope, root: Expr, node: Node | None = None, st: Structure | None = None,
                 access: Access | None = None, acc: str | None = None):
        self.scope, self.node, self.st, self.access, self.acc = scope, node, st, access, acc
        self.uses = Counter(id(c) for x in walk(root) for c in children(x))
        self.locals: dict[int, str] = {}
        self._gated: dict[int, bool] = {}

    def gated(self, e: Expr) -> bool:
        """Does `e` contain a gated load (so its text depends on where it is rendered)?"""
        if id(e) not in self._gated:
            self._gated[id(e)] = (isinstance(e, Load) and e.valid is not None) or any(map(self.gated, children(e)))
        return self._gated[id(e)]

    def constant(self, e: Expr) -> object | None:
        if isinstance(e, Lit):
            return e.value
        if isinstance(e, Load) and e.index is None and e.valid is None:
            return self.scope.kernel.constant(self.node.operands[e.operand])
        return None

    def render(self, e: Expr, guarded: bool = False, facts: frozenset = frozenset()) -> str:
        if id(e) in self.locals:
            return self.locals[id(e)]
        text = self._render(e, guarded, facts)
        if not guarded and isinstance(e, Apply) and self.uses[id(e)] > 1 and not self.gated(e):
            text = self.locals[id(e)] = self.scope.local(S.ctype(e.dtype), text)
        return text

    def _render(self, e: Expr, guarded: bool, facts: frozenset) -> str:
        if isinstance(e, Lit):
            return S.literal(e.dtype, e.value)
        if isinstance(e, Acc):
            return self.acc
        if isinstance(e, Loop):
            return self.access.multi(self.scope)[e.dim]
        if isinstance(e, Affine):
            return render(e.expr, self.access.multi(self.scope), self.access.shape)
        if isinstance(e, Load):
            return self._load(e, guarded, facts)
        if e.prim is Prim.select:
            c, a, b = e.args
            cond = self.render(c, guarded, facts)
            known = facts | {(x, True) for x in conjuncts(c)}
            return f"({cond} ? {self.render(a, guarded, known)} : {self.render(b, guarded, facts | {(c, False)})})"
        args = [self.render(a, guarded, facts) for a in e.args]
        constants = [self.constant(a) for a in e.args]
        site = -1
        if is_int_division(e.prim, e.args[0].dtype) and (constants[1] is None or int(constants[1]) in (0, -1)):
            site = self._site(Site(DIVISION, *self._owner()))
        return S.prim(e.prim, args, e.args[0].dtype, e.dtype, constants, site)

    def _owner(self) -> tuple[str, str]:
        return (self.node.name, self.node.op) if self.node is not None else ("?", "?")

    def _site(self, site: Site) -> int:
        return self.scope.kernel.add_site(site)

    def _coordinate(self, e: Load, pos: int, shape: Sequence[int], inside: bool, facts: frozenset) -> str:
        """Coordinate `pos` of an indexed load; a data-dependent one is checked against its
        extent: by a pass over the index operand before the kernel's loops when the
        coordinate is a function of one index element (`precheck`: the loop nest itself stays
        as unchecked code would be), else in place (`cs_index`: out of range reads element 0
        and records the site)."""
        c = e.index[pos]
        text = self.render(c, inside, facts)
        if not self.scope.kernel.check_indices or not data_dependent(c):
            return text
        raw, negative = reported(c)
        name, op = self._owner()
        operand = self.node.operands[e.operand] if self.node is not None else "?"
        site = Site(INDEX, name, op, operand, pos, shape[pos], negative)
        if self.node is not None and precheck(self.scope.kernel, self.node, self.st, c, raw, site):
            return text
        shown = text if raw is c else self.render(raw, inside, facts)
        return f"cs_index({text}, {shape[pos]}, {self._site(site)}, {shown})"

    def _load(self, e: Load, guarded: bool, facts: frozenset) -> str:
        conds = [c for c in conjuncts(e.valid) if not _implied(c, facts)] if e.valid is not None else []
        name = self.node.operands[e.operand]
        shape, scope, access = self.scope.kernel.type(name).shape, self.scope, self.access
        inside = guarded or e.valid is not None
        if e.index is not None:
            at = Access(shape, index=tuple(self._coordinate(e, p, shape, inside, facts) for p in range(len(e.index))))
        elif reads_row_major(amap := self.st.operand_maps[e.operand], shape, access.shape):
            at = Access(shape, linear=access.flat())
            if access.index is not None and shape and access.shape and shape[-1] == access.shape[-1]:
                # same rows, regrouped: keep the column index (so broadcasts along rows stay simple)
                row = linear_offset(access.index[:-1], access.shape[:-1])
                at.index = tuple(decompose(f"({row})", shape[:-1])) + (access.index[-1],)
        else:
            at = access.through(amap, shape, scope)
        read = scope.value(name, at, inside)
        if not conds:
            return read
        test = " && ".join(self.render(c, guarded, facts) for c in conds)
        return f"(({test}) ? {read} : {S.literal(e.dtype, 0)})"


def _of_one_element(coord: Expr) -> int | None:
    """The operand whose one element `coord` is a function of (plain loads of it and
    literals only: an embedding id, a wrapped index), else None."""
    operands = set()
    for x in walk(coord):
        if isinstance(x, (Loop, Affine, Acc)) or (isinstance(x, Load) and (x.index is not None
                                                                             or x.valid is not None)):
            return None
        if isinstance(x, Load):
            operands.add(x.operand)
    return operands.pop() if len(operands) == 1 else None


def precheck(k: "KernelEmitter", node: Node, st: Structure, coord: Expr, raw: Expr, site) -> bool:
    """Check every element of the index operand `coord` reads against `site`'s extent in a
    pass before the kernel's loops (once per site; eager checks every index too), returning
    early from the kernel on a bad one; False when `coord` is not a function of one element
    of an operand this kernel does not itself compute (then the caller checks in place)."""
    from codesign.codegen.cpp.kernels import PARALLEL_MIN
    o = _of_one_element(coord)
    if o is None or k.computed_here(node.operands[o]):
        return False
    number = k.add_site(site)
    if number in k.prechecked:
        return True
    k.prechecked.add(number)
    shape = k.type(node.operands[o]).shape
    numel = prod(shape)
    maps = tuple(AffineMap.identity(len(shape)) if i == o else m for i, m in enumerate(st.operand_maps))
    scope = Scope(k, "      ")
    body = Body(scope, coord, node, replace(st, operand_maps=maps), Access(tuple(shape), linear="j"))
    value = body.render(coord)
    shown = body.render(raw)
    test = f"(uint64_t)({value}) >= (uint64_t){site.extent}"
    par = f" if({numel} > {PARALLEL_MIN})" if numel > 1 else ""
    k.prechecks += [
        f"  {{  // index check: %{node.name} = {node.op}(...) reads %{site.operand} dim {site.dim} "
        f"(size {site.extent}) at %{node.operands[o]}",
        "    int64_t bad = 0;",
        f"    #pragma omp parallel for simd reduction(+:bad){par}",
        f"    for (int64_t j = 0; j < {numel}; ++j) {{", *scope.lines, f"      bad += {test};", "    }",
        "    if (__builtin_expect(bad != 0, 0)) {  // name the first bad index, and compute nothing",
        f"      for (int64_t j = 0; j < {numel}; ++j) {{", *("  " + line for line in scope.lines),
        f"        if ({test}) {{ cs_fail(1, {number}, {shown}); return; }}", "      }",
        "    }",
        "  }"]
    return True
