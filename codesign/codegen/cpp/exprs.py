"""Values at a point: the expression generator that inlines a kernel's elementwise nodes.

A value is either *materialized* (it has a buffer: read it) or *inlined* (an elementwise
node of the same kernel, or a constant source op: compute it from its operands, through
its indexing maps). `Scope.value(name, access)` returns a C++ expression for the value at
`access`, emitting `const` locals for each node computed unconditionally, so a fused chain
becomes straight-line code in one loop body and its intermediates never touch memory.
An `Access` is a point in a value's index space, kept as a linear offset while every map
on the way is the identity or a reshape (so contiguous chains stay one flat, vectorisable
loop), and as a multi-index otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Sequence

from codesign.codegen import CodegenError
from codesign.codegen.cpp import scalar as S
from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul, bound
from codesign.ir.graph import Node
from codesign.ir.ops.layout import strides
from codesign.ir.ops.registry import OpKind, get_op
from codesign.ir.types import DType

if TYPE_CHECKING:
    from codesign.codegen.cpp.kernels import KernelEmitter

EXPRESSION_KINDS = (OpKind.pointwise, OpKind.layout, OpKind.source, OpKind.gather)
"""Op kinds whose value at one point is an expression of their operands at other points."""


def is_expression_op(op: str) -> bool:
    return get_op(op).kind in EXPRESSION_KINDS


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
    """The multi-index of row-major position `row` in `shape`, as C++ expressions."""
    out, outer = [], True
    for n, st in zip(shape, strides(shape)):
        if n == 1:
            out.append("0")
            continue
        q = f"({row} / {st})" if st != 1 else f"({row})"
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
        key = (name, access.key())
        if key in self.memo:
            return self.memo[key]
        if node.op == "full":
            return S.literal(node.type.dtype, node.attrs["value"])
        expr = self._compute(node, access, guarded)
        if guarded:
            return f"({expr})"
        var = self.local(S.ctype(node.type.dtype), expr)
        self.memo[key] = var
        return var

    def _compute(self, node: Node, access: Access, guarded: bool) -> str:
        k = self.kernel
        op = get_op(node.op)
        st = k.structure(node)
        operand_types = [k.type(o) for o in node.operands]
        attrs = op.attr_values(node.attrs)
        if node.op == "full":
            return S.literal(node.type.dtype, attrs["value"])
        if node.op == "iota":
            idx = access.multi(self)[0] if node.type.rank else "0"
            work = DType.f64 if not node.type.dtype.is_float else node.type.dtype
            if not node.type.dtype.is_float and isinstance(attrs["start"], int) and isinstance(attrs["step"], int):
                work = DType.i64
            value = f"({S.literal(work, attrs['start'])} + {S.literal(work, attrs['step'])} * ({S.ctype(work)})({idx}))"
            return S.convert(value, work, node.type.dtype)
        if node.op == "reshape":
            src = operand_types[0].shape
            if access.index is not None and src and access.shape and src[-1] == access.shape[-1]:
                # same rows, regrouped: keep the column index (so broadcasts along rows stay simple)
                row = linear_offset(access.index[:-1], access.shape[:-1])
                index = tuple(decompose(f"({row})", src[:-1])) + (access.index[-1],)
                return self.value(node.operands[0], Access(src, linear=access.flat(), index=index), guarded)
            return self.value(node.operands[0], Access(src, linear=access.flat()), guarded)
        if node.op == "concat":
            idx = access.multi(self)
            dim = attrs["dim"]
            offset, pieces = 0, []
            for o, t, amap in zip(node.operands, operand_types, st.operand_maps):
                v = self.value(o, access.through(amap, t.shape, self), True)
                offset += t.shape[dim]
                pieces.append((offset, v))
            expr = pieces[-1][1]
            for end, v in reversed(pieces[:-1]):
                expr = f"({idx[dim]} < {end} ? {v} : {expr})"
            return expr
        if node.op == "pad":
            inner = access.through(st.operand_maps[0], operand_types[0].shape, self)
            conds = []
            for e, expr, size in zip(st.operand_maps[0].results, inner.index, operand_types[0].shape):
                lo, hi = bound(e, access.shape)
                if lo < 0:
                    conds.append(f"{expr} >= 0")
                if hi >= size:
                    conds.append(f"{expr} < {size}")
            v = self.value(node.operands[0], inner, guarded or bool(conds))
            if not conds:
                return v
            return f"(({' && '.join(conds)}) ? {v} : {S.literal(node.type.dtype, attrs['value'])})"
        if op.kind is OpKind.gather:
            return self._gather(node, access, guarded, st, operand_types, attrs)
        if op.kind is OpKind.layout:
            return self.value(node.operands[0], access.through(st.operand_maps[0], operand_types[0].shape, self), guarded)
        # pointwise
        args = [self.value(o, access.through(m, t.shape, self), guarded)
                for o, m, t in zip(node.operands, st.operand_maps, operand_types)]
        dtypes = [t.dtype for t in operand_types]
        if node.op == "where":
            dtypes = dtypes[1:] + dtypes[:1]
        if node.op == "batch_norm":
            dtypes = [node.type.dtype]
        if node.op in ("tril", "triu"):
            access.multi(self)
        constants = [k.constant(o) for o in node.operands]
        call = S.ScalarCall(args, dtypes, node.type.dtype, attrs, access.index or (), constants)
        try:
            return S.POINTWISE[node.op](call)
        except KeyError:
            raise CodegenError(f"%{node.name} = {node.op}(...): no C++ scalar body") from None

    def _gather(self, node: Node, access: Access, guarded: bool, st, operand_types, attrs) -> str:
        k = self.kernel
        table, *index_names = node.operands
        xt = operand_types[0]
        buf = k.buffer(table)
        if buf is None:
            raise CodegenError(f"%{node.name}: the gathered table %{table} must be materialized")
        idx = access.multi(self)
        picked = []
        for o, m, t in zip(index_names, st.operand_maps[1:], operand_types[1:]):
            v = self.value(o, access.through(m, t.shape, self), guarded)
            picked.append(f"(int64_t)({v})")
        rank = node.type.rank
        if node.op == "embedding":
            at = [picked[0], idx[rank - 1]]
        elif node.op == "index_select":
            at = list(idx)
            at[attrs["dim"]] = picked[0]
        else:
            dim = attrs["dim"]
            block = rank - (xt.rank - len(picked))
            wrapped = [f"cs_imod<int64_t>({p}, {xt.shape[dim + i]})" for i, p in enumerate(picked)]
            at = list(idx[:dim]) + wrapped + list(idx[dim + block:])
        return S.load(xt.dtype, f"{buf}[{linear_offset(at, xt.shape)}]")
