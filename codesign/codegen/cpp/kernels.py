"""Kernel bodies: one C++ function per `Kernel`, loop nests read off the structured IR.

`KernelEmitter` walks a kernel's nodes in SSA order. Materialized elementwise nodes of
one shape share one loop nest (flat and `omp parallel for simd` when every access is
contiguous; else a nest with collapsed parallel outer loops and a simd inner loop, tiled
by the group's `tile_*` plan when it has one); their elementwise producers are inlined
by `exprs.Scope`. Every other op has an emitter for its `Template` in `EMITTERS`: reductions
(from the structure's `Combiner`), convolution
and pooling straight from the structure's domain and maps, softmax and the norms as
two-pass row kernels, linear / matmul through the runtime's packed GEMM, attention as a
flash-style loop over key blocks with an online softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Mapping, Sequence

from codesign.codegen import CodegenError, group_tile
from codesign.codegen.checks import Site
from codesign.codegen.epilogue import LayoutEpilogue
from codesign.codegen.cpp import scalar as S
from codesign.codegen.cpp.conv import ConvLowering, conv_lowering, conv_pointer_operands, emit_blocked_conv, stored_epilogues
from codesign.codegen.cpp.exprs import Access, Body, Scope, decompose, is_expression_op, linear_offset, render
from codesign.codegen.lowering import avg_pool_divisors, node_structure, reads_row_major
from codesign.ir.affine import AffineMap, Dim, bound, monotone_in
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel
from codesign.ir.ops.registry import IterKind, OpKind, Structure, Template, Trait, get_op
from codesign.ir.scalar import Prim, highest, lowest
from codesign.ir.types import DType, TensorType

PARALLEL_MIN = 1 << 18  # elements below which a loop nest runs on one thread (each parallel region
# costs a fork and a barrier, and much more when the cores are shared with other processes)
GEMM_PARALLEL_MIN = 1 << 21  # multiply-adds below which a GEMM runs its tiles on one thread
GEMM_DTYPES = (DType.f32, DType.bf16, DType.f16)


def pointer_operands(node: Node) -> Sequence[int]:
    """Positions of `node`'s operands read through a raw pointer (so they must be materialized):
    the op's `pointer_operands`, and every operand of an op with a region (moe hands them to
    the region's program), and a conv's weight where it runs as a GEMM or the depthwise kernel."""
    if node.regions:
        return range(len(node.operands))
    op = get_op(node.op)
    return conv_pointer_operands(node) if op.template is Template.conv else op.pointer_operands


def node_line(node: Node, names: Mapping[str, str]) -> str:
    """`%r0 = op(%a0, ...) {attrs} : type`, with kernel-local names (so layers dedupe)."""
    from codesign.ir.printer import format_attrs
    ops = ", ".join(f"%{names.get(o, o)}" for o in node.operands)
    return f"%{names.get(node.name, node.name)} = {node.op}({ops}){format_attrs(node.attrs)} : {node.type}"


class KernelEmitter:
    """Generates the C++ function for one kernel, given which values are materialized."""

    def __init__(self, graph: Graph, kernel: Kernel, materialized: set[str], aliases: Mapping[str, str],
                 types: Mapping[str, TensorType], nodes: Mapping[str, Node], constants: Mapping[str, object],
                 regions: Mapping[str, "RegionEntry"] | None = None, check_indices: bool = True):
        self.graph, self.kernel = graph, kernel
        self.regions = regions or {}
        self.check_indices = check_indices  # compare gathered coordinates with their extents
        self.sites: list[Site] = []  # this function's run-time checks, by site number
        self.prechecks: list[str] = []  # index checks run before the loops (`exprs.precheck`)
        self.prechecked: set[int] = set()
        self.materialized, self.aliases = materialized, aliases
        self.types, self.nodes, self.constants = types, nodes, constants
        self.members = {n.name for n in kernel.nodes}
        self._counter = 0
        self._structures: dict[str, Structure] = {}
        self.statics: list[str] = []
        # parameters: values read from memory, then values written
        self.reads: list[str] = []
        self.writes: list[str] = []
        for n in kernel.nodes:
            for o in n.operands:
                if o not in self.members and o in materialized and o not in self.reads:
                    self.reads.append(o)
        for n in kernel.nodes:
            if n.name in materialized and n.name not in aliases:
                self.writes.append(n.name)
        self.emitted: set[str] = set()  # materialized values whose code is already out
        self.epilogues = stored_epilogues(kernel, types)  # convs stored through their layout readers
        self.params: dict[str, str] = {}
        for i, name in enumerate(self.reads):
            self.params[name] = f"a{i}"
        for i, name in enumerate(self.writes):
            self.params[name] = f"r{i}"

    # -- queries used by the expression generator ------------------------------------------
    def buffer(self, name: str) -> str | None:
        return self.params.get(name)

    def ptr(self, name: str) -> str:
        """The parameter holding `name`'s memory (a reshape aliases its source's buffer)."""
        while name not in self.params and name in self.aliases:
            name = self.aliases[name]
        try:
            return self.params[name]
        except KeyError:
            raise CodegenError(f"%{name} has no buffer in kernel {self.kernel.key}") from None

    def node(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def type(self, name: str) -> TensorType:
        return self.types[name]

    def dtype(self, name: str) -> DType:
        return self.types[name].dtype

    def constant(self, name: str) -> object | None:
        return self.constants.get(name)

    def structure(self, node: Node) -> Structure:
        if node.name not in self._structures:
            self._structures[node.name] = node_structure(node, self.types)
        return self._structures[node.name]

    def add_site(self, site: Site) -> int:
        """Number a run-time check of this function (`codesign.codegen.checks`); checks that
        would report the same thing share a number (a body rendered twice: flat, then nested)."""
        if site not in self.sites:
            self.sites.append(site)
        return self.sites.index(site)

    def computed_here(self, name: str) -> bool:
        """Is `name`'s value (through views and inlined nodes) written by this kernel itself?"""
        stack, seen = [name], set()
        while stack:
            o = stack.pop()
            if o in seen:
                continue
            seen.add(o)
            if o in self.aliases:
                stack.append(self.aliases[o])
            elif o in self.members:
                if o in self.materialized:
                    return True
                stack.extend(self.nodes[o].operands)
        return False

    def fresh(self, hint: str = "v") -> str:
        self._counter += 1
        return f"{hint}{self._counter}"

    @property
    def local_names(self) -> dict[str, str]:
        return dict(self.params)

    # -- the function ---------------------------------------------------------------------
    def signature(self, fname: str) -> str:
        params = [f"const {S.storage(self.dtype(n))}* __restrict {self.params[n]}" for n in self.reads]
        params += [f"{S.storage(self.dtype(n))}* __restrict {self.params[n]}" for n in self.writes]
        return f"static void {fname}({', '.join(params) or 'void'})"

    def body(self) -> list[str]:
        lines: list[str] = []
        pending: list[Node] = []

        def flush() -> None:
            if pending:
                lines.extend(self.elementwise(list(pending)))
                self.emitted.update(p.name for p in pending)
                pending.clear()
        for node in self.kernel.nodes:
            epilogue = self.epilogues.get(node.name)
            if epilogue is not None:  # computed at the points of the layout chain reading it
                flush()
                lines.append(f"  // {node_line(node, self.local_names)}, stored through "
                             + ", ".join(f"%{self.nodes[c].op}" for c in epilogue.chain))
                lines.extend(emit_conv(self, node, epilogue))
                self.emitted.update((node.name, epilogue.result))
                continue
            if node.name not in self.materialized or node.name in self.aliases or node.name in self.emitted:
                continue
            if is_expression_op(node.op):
                if pending and (pending[0].type.shape != node.type.shape
                                or any(self.depends(node, p.name) for p in pending)):
                    flush()
                pending.append(node)
                continue
            flush()
            emitter = EMITTERS.get(get_op(node.op).template)
            if emitter is None:
                raise CodegenError(f"%{node.name} = {node.op}(...): not supported by the C++ backend yet")
            lines.append(f"  // {node_line(node, self.local_names)}")
            lines.extend(emitter(self, node))
            self.emitted.add(node.name)
        flush()
        return self.prechecks + lines

    def depends(self, node: Node, name: str) -> bool:
        """Does `node` read `name`, directly or through nodes inlined into it?"""
        stack, seen = list(node.operands), set()
        while stack:
            o = stack.pop()
            if o == name:
                return True
            if o in seen or o not in self.members or o in self.materialized:
                continue
            seen.add(o)
            stack.extend(self.nodes[o].operands)
        return False

    # -- elementwise loop nests -----------------------------------------------------------
    def elementwise(self, roots: list[Node]) -> list[str]:
        shape = roots[0].type.shape
        out = [f"  // {node_line(r, self.local_names)}" for r in roots]
        tile = group_tile(self.kernel.group, len(shape))
        tiled = tile is not None and any(t < n for t, n in zip(tile, shape))
        flat = None if tiled else self._elementwise_flat(roots, shape)
        return out + (flat if flat is not None else self._elementwise_nest(roots, shape))

    def _store_roots(self, scope: Scope, roots: list[Node], access: Access) -> None:
        for r in roots:
            value = scope.memo.get((r.name, access.key()))
            if value is None:
                value = scope.local(S.ctype(r.type.dtype), scope._compute(r, access, False))
                scope.memo[(r.name, access.key())] = value
            scope.emit(f"{self.params[r.name]}[{access.flat()}] = {S.store(r.type.dtype, value)};")

    def _elementwise_flat(self, roots: list[Node], shape: tuple[int, ...]) -> list[str] | None:
        numel = prod(shape)
        scope = Scope(self, "    ")
        self._store_roots(scope, roots, Access(shape, linear="i"))
        if scope.delinearized and len(shape) > 1:
            return None
        par = f" if({numel} > {PARALLEL_MIN})" if numel > 1 else ""
        pragma = f"  #pragma omp parallel for simd{par} schedule(static)" if numel > 1 else "  // one element"
        return [pragma, f"  for (int64_t i = 0; i < {numel}; ++i) {{", *scope.lines, "  }"]

    def _elementwise_nest(self, roots: list[Node], shape: tuple[int, ...]) -> list[str]:
        rank = len(shape)
        tile = group_tile(self.kernel.group, rank)
        idx = [f"i{d}" for d in range(rank)]
        lines: list[str] = []
        depth = 1
        if tile is not None and any(t < s for t, s in zip(tile, shape)):
            outer = [f"o{d}" for d in range(rank)]
            lines.append(f"  // tiled by the group's plan: {list(tile)}")
            lines.append(f"  #pragma omp parallel for collapse({rank}) if({prod(shape)} > {PARALLEL_MIN})")
            for d in range(rank):
                lines.append("  " * depth + f"for (int64_t {outer[d]} = 0; {outer[d]} < {shape[d]}; {outer[d]} += {tile[d]})")
                depth += 1
            for d in range(rank):
                if d == rank - 1:
                    lines.append("  " * depth + "#pragma omp simd")
                lines.append("  " * depth + f"for (int64_t {idx[d]} = {outer[d]}; {idx[d]} < std::min<int64_t>({outer[d]} + {tile[d]}, {shape[d]}); ++{idx[d]})")
                depth += 1
        else:
            if rank > 1:
                lines.append(f"  #pragma omp parallel for collapse({rank - 1}) if({prod(shape)} > {PARALLEL_MIN})")
            for d in range(rank):
                if d == rank - 1:
                    lines.append("  " * depth + "#pragma omp simd")
                lines.append("  " * depth + f"for (int64_t {idx[d]} = 0; {idx[d]} < {shape[d]}; ++{idx[d]})")
                depth += 1
        scope = Scope(self, "  " * (depth + 1))
        self._store_roots(scope, roots, Access(shape, index=tuple(idx)))
        lines.append("  " * depth + "{")
        lines.extend(scope.lines)
        lines.append("  " * depth + "}")
        return lines


# -- helpers for loop nests over a structure's domain --------------------------------------------
def _loops(vars_: Sequence[str], sizes: Sequence[int], indent: int) -> tuple[list[str], int]:
    lines = []
    for v, n in zip(vars_, sizes):
        lines.append("  " * indent + f"for (int64_t {v} = 0; {v} < {n}; ++{v})")
        indent += 1
    return lines, indent


def _parallel_pragma(count: int, work: int) -> str:
    if count == 0:
        return ""
    collapse = f" collapse({count})" if count > 1 else ""
    return f"#pragma omp parallel for{collapse} if({work} > {PARALLEL_MIN})"


def _guards(amap: AffineMap, index: Sequence[str], shape: Sequence[int], extents: Sequence[int]) -> list[str]:
    conds = []
    for e, expr, size in zip(amap.results, index, shape):
        lo, hi = bound(e, extents)
        if lo < 0:
            conds.append(f"{expr} >= 0")
        if hi >= size:
            conds.append(f"{expr} < {size}")
    return conds


def _structured_reduction(k: KernelEmitter, node: Node, *, init: Callable[[Scope, list[str]], str],
                          combine: Callable[[str, list[str]], str], acc_type: str,
                          finalize: Callable[[str, list[str]], str] = lambda acc, idx: acc,
                          simd_plus: bool = False, reads_upto: int | None = None,
                          points: LayoutEpilogue | None = None) -> list[str]:
    """Parallel loops outer, reduction loops inner, one accumulator per output point; with
    `points`, the parallel loops run over the epilogue's result and the node's coordinates
    are its maps' (each element stored once, where the layout chain puts it)."""
    st = k.structure(node)
    sizes = st.loop_sizes
    vars_ = [f"i{d}" for d in range(len(sizes))]
    par = [d for d, it in enumerate(st.domain) if it.kind is IterKind.parallel]
    red = [d for d, it in enumerate(st.domain) if it.kind is IterKind.reduction]
    lines = []
    out_shape = k.type(points.result).shape if points is not None else ()
    out_vars = [f"o{d}" for d in range(len(out_shape))]
    pragma = _parallel_pragma(len(par) if points is None else len(out_shape), st.points)
    if pragma:
        lines.append("  " + pragma)
    if points is None:
        loop_lines, depth = _loops([vars_[d] for d in par], [sizes[d] for d in par], 1)
    else:
        loop_lines, depth = _loops(out_vars, out_shape, 1)
    lines += loop_lines
    lines.append("  " * depth + "{")
    outer = Scope(k, "  " * (depth + 1))
    if points is not None:
        for r, e in zip(st.result_map.results, points.to_anchor.results):
            outer.emit(f"const int64_t {vars_[r.index]} = {render(e, out_vars, out_shape)};")
    acc = k.fresh("acc")
    outer.emit(f"{acc_type} {acc} = {init(outer, vars_)};")
    lines += outer.lines
    inner = Scope(k, "")
    reads, guards = [], []
    for o, m in list(zip(node.operands, st.operand_maps))[:reads_upto]:
        t = k.type(o)
        index = tuple(render(r, vars_, sizes) for r in m.results)
        g = _guards(m, index, t.shape, sizes)
        guards += g
        reads.append((o, Access(t.shape, index=index), bool(g)))
    guarded = bool(guards)
    values = [inner.value(o, a, guarded) for o, a, _ in reads]
    red_lines, d2 = _loops([vars_[d] for d in red], [sizes[d] for d in red], depth + 1)
    if simd_plus and red and not guarded:
        red_lines.insert(len(red_lines) - 1, "  " * (d2 - 1) + f"#pragma omp simd reduction(+:{acc})")
    lines += red_lines
    lines.append("  " * d2 + "{")
    for line in inner.lines:
        lines.append("  " * (d2 + 1) + line)
    update = f"{acc} = {combine(acc, values)};"
    lines.append("  " * (d2 + 1) + (f"if ({' && '.join(guards)}) {update}" if guards else update))
    lines.append("  " * d2 + "}")
    if points is None:
        target, off = k.params[node.name], linear_offset(
            tuple(render(r, vars_, sizes) for r in st.result_map.results), node.type.shape)
    else:
        target, off = k.params[points.result], linear_offset(out_vars, out_shape)
    lines.append("  " * (depth + 1) + f"{target}[{off}] = {S.store(node.type.dtype, finalize(acc, vars_))};")
    lines.append("  " * depth + "}")
    return lines


ROW_ACCUMULATORS_MAX = 4096
"""Widest output row a window reduction keeps its accumulators for on the stack."""


def _window_rows(k: KernelEmitter, node: Node, *, init: Callable[[Scope, list[str]], str],
                 combine: Callable[[str, list[str]], str], acc_type: str,
                 finalize: Callable[[str, list[str]], str]) -> list[str] | None:
    """A window reduction (pooling) one output row at a time: parallel loops over every
    output dim but the last, then per window offset a loop along the row that updates one
    accumulator per output point. The same combines in the same order per point as
    `_structured_reduction` (bit-identical results), but the row loop is innermost: it
    vectorises, and what depends only on the outer coordinates (a fused batch norm's
    per-channel scale) is computed once per row, not once per window element. None where
    the node is not such a reduction (its last output dim not the domain's last parallel
    dim, or a row wider than `ROW_ACCUMULATORS_MAX`), and for integer pools: GCC 12 at -O3 with
    AVX-512 miscompiles the row loop over a padded int64 product (local_response_norm on int64,
    found by the OpInfo samples; the float form and the point-by-point form are right)."""
    if not node.type.dtype.is_float or not all(k.type(o).dtype.is_float for o in node.operands):
        return None
    st = k.structure(node)
    sizes = st.loop_sizes
    vars_ = [f"i{d}" for d in range(len(sizes))]
    par = [d for d, it in enumerate(st.domain) if it.kind is IterKind.parallel]
    red = [d for d, it in enumerate(st.domain) if it.kind is IterKind.reduction]
    results = st.result_map.results
    if len(par) < 2 or not red or not results or getattr(results[-1], "index", None) != par[-1] \
            or sizes[par[-1]] > ROW_ACCUMULATORS_MAX:
        return None
    if not all(monotone_in(e, par[-1]) for m in st.operand_maps for e in m.results):
        return None  # the window's valid part of a row might not be one interval
    row, width = vars_[par[-1]], sizes[par[-1]]
    lines = []
    pragma = _parallel_pragma(len(par) - 1, st.points)
    if pragma:
        lines.append("  " + pragma)
    loop_lines, depth = _loops([vars_[d] for d in par[:-1]], [sizes[d] for d in par[:-1]], 1)
    lines += loop_lines
    lines.append("  " * depth + "{")
    outer = Scope(k, "  " * (depth + 1))
    acc = k.fresh("acc")
    outer.emit(f"{acc_type} {acc}[{width}];")
    outer.emit(f"for (int64_t {row} = 0; {row} < {width}; ++{row}) {acc}[{row}] = {init(outer, vars_)};")
    lines += outer.lines
    inner = Scope(k, "")
    reads, guards = [], []
    for o, m in zip(node.operands, st.operand_maps):
        t = k.type(o)
        index = tuple(render(r, vars_, sizes) for r in m.results)
        guards += _guards(m, index, t.shape, sizes)
        reads.append((o, Access(t.shape, index=index)))
    values = [inner.value(o, a, bool(guards)) for o, a in reads]
    red_lines, d2 = _loops([vars_[d] for d in red], [sizes[d] for d in red], depth + 1)
    lines += red_lines
    lines.append("  " * d2 + "{")
    ind = "  " * (d2 + 1)
    lo, hi = "0", str(width)
    if guards:  # each guard is monotone in the row coordinate: the valid points are one interval
        inside, lo, hi = k.fresh("inside"), k.fresh("lo"), k.fresh("hi")
        lines += [ind + f"auto {inside} = [&](int64_t {row}) {{ return {' && '.join(guards)}; }};",
                  ind + f"int64_t {lo} = 0, {hi} = {width};",
                  ind + f"while ({lo} < {hi} && !{inside}({lo})) ++{lo};",
                  ind + f"while ({hi} > {lo} && !{inside}({hi} - 1)) --{hi};"]
    lines.append(ind + f"for (int64_t {row} = {lo}; {row} < {hi}; ++{row}) {{")
    lines += [ind + "  " + line for line in inner.lines]
    lines.append(ind + f"  {acc}[{row}] = {combine(f'{acc}[{row}]', values)};")
    lines.append(ind + "}")
    lines.append("  " * d2 + "}")
    off = linear_offset(tuple(render(r, vars_, sizes) for r in results), node.type.shape)
    ind = "  " * (depth + 1)
    lines.append(ind + f"for (int64_t {row} = 0; {row} < {width}; ++{row}) "
                 f"{k.params[node.name]}[{off}] = {S.store(node.type.dtype, finalize(f'{acc}[{row}]', vars_))};")
    lines.append("  " * depth + "}")
    return lines


def _acc_type(dtype: DType, wide: bool) -> str:
    if dtype.is_float:
        return "double" if wide else S.ctype(dtype)
    return "bool" if dtype is DType.i1 else ("int64_t" if wide else S.ctype(dtype))


def emit_reduce(k: KernelEmitter, node: Node) -> list[str]:
    """A reduction from its combiner: identity, operator, finalize (the mean's division)."""
    c, src, out = k.structure(node).combiner, k.dtype(node.operands[0]), node.type.dtype
    if c is None:
        raise CodegenError(f"%{node.name} = {node.op}(...): a reduction with no combiner")
    acc = c.accumulator(src)

    def finalize(name: str, idx: list[str]) -> str:
        if c.finalize is None:
            return S.convert(name, acc, out)
        value = Body(Scope(k, ""), c.finalize, acc=name).render(c.finalize, guarded=True)
        return S.convert(value, c.finalize.dtype, out)
    return _structured_reduction(k, node, init=lambda s, v: S.literal(acc, c.identity),
                                 combine=lambda a, v: S.prim(c.op, [a, S.convert(v[0], src, acc)], acc, acc),
                                 acc_type=S.ctype(acc), finalize=finalize, simd_plus=c.op is Prim.add)


def emit_contraction_loops(k: KernelEmitter, node: Node, points: LayoutEpilogue | None = None) -> list[str]:
    """matmul / linear / conv as direct loops from the structure (bias initialises the sum);
    `points`: at the points of its layout epilogue (`codegen.epilogue`)."""
    st = k.structure(node)
    dtype = node.type.dtype
    acc_t = S.ctype(dtype) if dtype.is_float else _acc_type(dtype, True)

    def init(scope: Scope, vars_: list[str]) -> str:
        if len(node.operands) < 3:
            return "0"
        bias = node.operands[2]
        index = tuple(render(r, vars_, st.loop_sizes) for r in st.operand_maps[2].results)
        return scope.value(bias, Access(k.type(bias).shape, index=index))

    def combine(acc: str, values: list[str]) -> str:
        return f"{acc} + ({acc_t})({values[0]}) * ({acc_t})({values[1]})"
    return _structured_reduction(k, node, init=init, combine=combine, acc_type=acc_t, simd_plus=True,
                                 reads_upto=2, points=points)


def emit_conv(k: KernelEmitter, node: Node, store: LayoutEpilogue | None = None) -> list[str]:
    """conv: im2col blocks + GEMM, 1x1 as a GEMM, depthwise as its own kernel, each with the
    kernel's pointwise consumers on every output tile (`conv.py`); other dtypes as loops;
    `store`: stored through its layout readers."""
    lowering = conv_lowering(node, k.types)
    if lowering is ConvLowering.loops:
        return emit_contraction_loops(k, node, store)
    if store is not None:
        return emit_blocked_conv(k, node, lowering, [], store)
    roots = epilogue_roots(k, node)
    k.emitted.update(r.name for r in roots)
    return emit_blocked_conv(k, node, lowering, roots)


def emit_pool(k: KernelEmitter, node: Node) -> list[str]:
    dtype = node.type.dtype
    t = S.ctype(dtype)
    op = get_op(node.op)
    if op.has(Trait.maximizing):
        spec = dict(init=lambda s, v: S.literal(dtype, lowest(dtype)),
                    combine=lambda a, v: f"cs_max<{t}>({v[0]}, {a})", acc_type=t, finalize=lambda a, v: a)
    else:
        table = avg_pool_divisors(k.type(node.operands[0]).shape[2:], op.attr_values(node.attrs))
        name = k.fresh("divisor")
        values = ", ".join(repr(float(x)) + "f" for x in table.flatten())
        k.statics.append(f"  static const float {name}[{table.size}] = {{{values}}};")
        ow = table.shape[1]
        spec = dict(init=lambda s, v: "0", combine=lambda a, v: f"{a} + {v[0]}", acc_type=_acc_type(dtype, False),
                    finalize=lambda a, v: f"({a} / {name}[{v[2]} * {ow} + {v[3]}])")
    return _window_rows(k, node, **spec) or _structured_reduction(k, node, **spec)


# -- rows: a parallel loop over every dim but one (or a trailing block), then passes ---------------
def _row_loops(shape: Sequence[int], dims: Sequence[int]) -> tuple[list[str], int, list[str]]:
    """Loops over the dims not in `dims`; returns lines, depth, and per-dim index names."""
    outer = [d for d in range(len(shape)) if d not in dims]
    vars_ = [f"i{d}" for d in range(len(shape))]
    lines = []
    pragma = _parallel_pragma(len(outer), prod(shape))
    if pragma:
        lines.append("  " + pragma)
    loop_lines, depth = _loops([vars_[d] for d in outer], [shape[d] for d in outer], 1)
    return lines + loop_lines, depth, vars_


def _row_pass(k: KernelEmitter, name: str, access: Access, ind: str, var: str, n: int, pragma: str,
              statement: Callable[[str, Scope], str]) -> list[str]:
    """One loop of `var` over a row of `n`: `name` at `access` (its producers inlined), then
    `statement(value, scope)` (which may read more values into the loop's scope)."""
    s = Scope(k, ind + "  ")
    v = s.value(name, access)
    last = statement(v, s)
    return [ind + pragma, ind + f"for (int64_t {var} = 0; {var} < {n}; ++{var}) {{", *s.lines, ind + "  " + last,
            ind + "}"]


def emit_softmax(k: KernelEmitter, node: Node) -> list[str]:
    x = node.operands[0]
    shape, dim = node.type.shape, node.attrs["dim"]
    dtype = node.type.dtype
    t = S.ctype(dtype)
    n = shape[dim]
    lines, depth, vars_ = _row_loops(shape, [dim])
    ind = "  " * (depth + 1)
    lines.append("  " * depth + "{")
    access = Access(shape, index=tuple("j" if d == dim else vars_[d] for d in range(len(shape))))
    out = f"{k.params[node.name]}[{access.flat()}]"

    def row_pass(pragma: str, statement: Callable[[str, Scope], str]) -> list[str]:
        return _row_pass(k, x, Access(shape, index=access.index), ind, "j", n, pragma, statement)
    lines += [ind + f"{t} peak = -INFINITY;",
              *row_pass("#pragma omp simd reduction(max:peak)", lambda v, s: f"peak = std::max(peak, {v});")]
    log = get_op(node.op).has(Trait.log_result)
    store_exp = "" if log else f"{out} = {S.store(dtype, 'e')}; "
    lines += [ind + f"{t} total = 0;", *row_pass("#pragma omp simd reduction(+:total)",
                                                lambda v, s: f"const {t} e = cs_exp({v} - peak); {store_exp}total += e;")]
    if log:
        lines += [ind + f"const {t} shift = peak + std::log(total);",
                  *row_pass("#pragma omp simd", lambda v, s: f"{out} = {S.store(dtype, f'{v} - shift')};")]
    else:
        lines += [ind + f"const {t} inv = 1 / total;", ind + "#pragma omp simd",
                  ind + f"for (int64_t j = 0; j < {n}; ++j) {out} = {S.store(dtype, S.load(dtype, out) + ' * inv')};"]
    lines.append("  " * depth + "}")
    return lines


def emit_norm(k: KernelEmitter, node: Node) -> list[str]:
    """layer_norm / rms_norm / group_norm: each normalised block is contiguous; two passes."""
    x, *params = node.operands
    shape, dtype = node.type.shape, node.type.dtype
    t = S.ctype(dtype)
    op = get_op(node.op)
    if op.template is Template.group_norm:
        groups = node.attrs["groups"]
        rows, block = shape[0] * groups, prod(shape[1:]) // groups
        spatial = prod(shape[2:])
        per_group = shape[1] // groups
        param_index = f"((g % {groups}) * {per_group} + r / {spatial})"
    else:
        nr = node.attrs["normalized_rank"]
        block = prod(shape[len(shape) - nr:])
        rows = prod(shape) // block
        param_index = "r"
    eps = S.literal(dtype, op.attr_values(node.attrs)["eps"])
    ind = "    "
    lines = [f"  #pragma omp parallel for if({prod(shape)} > {PARALLEL_MIN})",
             f"  for (int64_t g = 0; g < {rows}; ++g) {{"]
    access = Access(shape, linear=f"g * {block} + r")

    def row_pass(pragma: str, statement: Callable[[str, Scope], str]) -> list[str]:
        return _row_pass(k, x, Access(shape, linear=access.linear), ind, "r", block, pragma, statement)
    if op.has(Trait.centered):
        lines += [ind + f"{t} sum = 0;", *row_pass("#pragma omp simd reduction(+:sum)", lambda v, s: f"sum += {v};"),
                  ind + f"const {t} mean = sum / {block};", ind + f"{t} sq = 0;",
                  *row_pass("#pragma omp simd reduction(+:sq)", lambda v, s: f"const {t} dev = {v} - mean; sq += dev * dev;")]
    else:
        lines += [ind + f"const {t} mean = 0;", ind + f"{t} sq = 0;",
                  *row_pass("#pragma omp simd reduction(+:sq)", lambda v, s: f"sq += {v} * {v};")]
    lines.append(ind + f"const {t} rstd = 1 / std::sqrt(sq / {block} + {eps});")

    def store(v: str, s: Scope) -> str:
        y = f"({v} - mean) * rstd"
        for p in params:  # weight, then bias: read from memory, or computed in the loop
            pbuf = k.params.get(p)
            pv = S.load(k.dtype(p), f"{pbuf}[{param_index}]") if pbuf else s.value(p, Access(k.type(p).shape,
                                                                                               linear=param_index))
            y = f"({y}) * {pv}" if p == params[0] else f"({y}) + {pv}"
        return f"{k.params[node.name]}[{access.flat()}] = {S.store(dtype, y)};"
    return lines + row_pass("#pragma omp simd", store) + ["  }"]


def emit_var(k: KernelEmitter, node: Node) -> list[str]:
    """var: per output point, the mean then Σ (x - mean)² / (N - correction), in double."""
    x = node.operands[0]
    xt = k.type(x)
    dims = list(node.attrs["dims"])
    count = prod(xt.shape[d] for d in dims)
    dof = count - get_op(node.op).attr_values(node.attrs)["correction"]
    st = k.structure(node)
    lines, depth, vars_ = _row_loops(xt.shape, dims)
    ind = "  " * (depth + 1)
    lines.append("  " * depth + "{")
    red_vars = [vars_[d] for d in dims]
    for pass_ in range(2):
        s = Scope(k, "")
        v = s.value(x, Access(xt.shape, index=tuple(vars_)))
        loops, d2 = _loops(red_vars, [xt.shape[d] for d in dims], depth + 1)
        lines += [ind + ("double sum = 0;" if pass_ == 0 else "double sq = 0;"), *loops, "  " * d2 + "{",
                  *["  " * (d2 + 1) + line for line in s.lines],
                  "  " * (d2 + 1) + (f"sum += {v};" if pass_ == 0 else f"{{ const double dev = {v} - mean; sq += dev * dev; }}"),
                  "  " * d2 + "}"]
        if pass_ == 0:
            lines.append(ind + f"const double mean = sum / {count};")
    out_index = tuple(render(r, vars_, xt.shape) for r in st.result_map.results)
    value = f"sq / {dof}" if dof > 0 else "sq * INFINITY"  # torch: sq / 0 (0 / 0: nan)
    lines.append(ind + f"{k.params[node.name]}[{linear_offset(out_index, node.type.shape)}] = "
                 f"{S.store(node.type.dtype, S.convert(value, DType.f64, node.type.dtype))};")
    lines.append("  " * depth + "}")
    return lines


def emit_argminmax(k: KernelEmitter, node: Node) -> list[str]:
    x = node.operands[0]
    xt = k.type(x)
    dim = node.attrs["dim"]
    is_max = get_op(node.op).has(Trait.maximizing)
    st = k.structure(node)
    lines, depth, vars_ = _row_loops(xt.shape, [dim])
    ind = "  " * (depth + 1)
    t = S.ctype(xt.dtype)
    s = Scope(k, ind + "  ")
    v = s.value(x, Access(xt.shape, index=tuple(vars_)))
    better = f"(b == b) && ({v} {'>' if is_max else '<'} b || {v} != {v})" if xt.dtype.is_float \
        else f"{v} {'>' if is_max else '<'} b"
    out_index = tuple(render(r, vars_, xt.shape) for r in st.result_map.results)
    lines += ["  " * depth + "{", ind + f"{t} b = {S.literal(xt.dtype, lowest(xt.dtype) if is_max else highest(xt.dtype))}; int64_t at = 0;",
              ind + f"for (int64_t {vars_[dim]} = 0; {vars_[dim]} < {xt.shape[dim]}; ++{vars_[dim]}) {{", *s.lines,
              ind + f"  if ({vars_[dim]} == 0 || {better}) {{ b = {v}; at = {vars_[dim]}; }}", ind + "}",
              ind + f"{k.params[node.name]}[{linear_offset(out_index, node.type.shape)}] = at;", "  " * depth + "}"]
    return lines


def emit_cumsum(k: KernelEmitter, node: Node) -> list[str]:
    x = node.operands[0]
    shape, dim, dtype = node.type.shape, node.attrs["dim"], node.type.dtype
    lines, depth, vars_ = _row_loops(shape, [dim])
    ind = "  " * (depth + 1)
    s = Scope(k, ind + "  ")
    v = s.value(x, Access(shape, index=tuple(vars_)))
    acc_t = _acc_type(dtype, True)
    lines += ["  " * depth + "{", ind + f"{acc_t} acc = 0;",
              ind + f"for (int64_t {vars_[dim]} = 0; {vars_[dim]} < {shape[dim]}; ++{vars_[dim]}) {{", *s.lines,
              ind + f"  acc += {v};",
              ind + f"  {k.params[node.name]}[{linear_offset(vars_, shape)}] = {S.store(dtype, S.convert('acc', DType.f64 if dtype.is_float else DType.i64, dtype))};",
              ind + "}", "  " * depth + "}"]
    return lines


# -- GEMM ------------------------------------------------------------------------------------------
GEMM_COMMENT = ("tiles by cs_gemm_tile: BLAS sgemm when built with CODESIGN_BLAS (OpenBLAS from "
                "scipy-openblas32), else the packed hand GEMM; OpenMP over tiles")


def epilogue_roots(k: KernelEmitter, gemm: Node) -> list[Node]:
    """The kernel's elementwise results that read the GEMM's output only at their own point.

    A root qualifies when it comes after the GEMM, has as many elements, and every path from
    it to the GEMM goes through pointwise operands read without broadcast (or reshapes), so
    its value at linear position p needs the GEMM's output at p alone; the other values it
    reads are kernel inputs, values computed before the GEMM, or earlier roots. Each tile
    then computes these roots right after its GEMM, while the tile is in cache.
    """
    if k.kernel.group is None:
        return []
    members = [n.name for n in k.kernel.nodes]
    after = members[members.index(gemm.name) + 1:]
    later = set(after)
    chosen: list[Node] = []
    chosen_names: set[str] = set()

    def pointwise_read(node: Node, memo: dict[str, bool]) -> bool:
        """Does `node` depend on the GEMM? Raises ValueError where it does, but not pointwise."""
        result = False
        if not node.operands:
            return False
        st = k.structure(node)
        identity = AffineMap.identity(node.type.rank).results
        for o, m in zip(node.operands, st.operand_maps):
            if not reaches(o, memo):
                continue
            result = True
            if reads_row_major(m, k.type(o).shape, node.type.shape):
                continue  # a reshape: the same linear position
            if get_op(node.op).kind is not OpKind.pointwise or k.type(o).shape != node.type.shape \
                    or m.results != identity:
                raise ValueError(node.name)
        return result

    def reaches(name: str, memo: dict[str, bool]) -> bool:
        if name == gemm.name or name in chosen_names:
            return True
        if name in memo:
            return memo[name]
        if k.buffer(name) is not None:
            if name in later:
                raise ValueError(name)  # a value of this kernel computed after the GEMM
            memo[name] = False
            return False
        node = k.node(name)
        if node is None or not is_expression_op(node.op):
            raise ValueError(name)
        memo[name] = pointwise_read(node, memo)
        return memo[name]

    for name in after:
        node = k.node(name)
        if name not in k.materialized or name in k.aliases or name not in k.params \
                or not is_expression_op(node.op) or get_op(node.op).kind is OpKind.source \
                or node.type.numel != gemm.type.numel:
            continue
        try:
            ok = pointwise_read(node, {})
        except ValueError:
            ok = False
        if ok:
            chosen.append(node)
            chosen_names.add(name)
    return chosen


def emit_gemm(k: KernelEmitter, node: Node) -> list[str]:
    """linear / matmul as output tiles (`cs_gemm_tile`), each followed by the fused epilogue.

    OpenMP runs the tiles (BLAS single-threaded inside); bf16 / f16: A staged in f32, each
    tile computed in f32 and rounded into the output before the epilogue reads it.
    """
    dtype = node.type.dtype
    if dtype not in GEMM_DTYPES or any(k.dtype(o) is not dtype for o in node.operands):
        return emit_contraction_loops(k, node)
    kind = {DType.f32: 0, DType.bf16: 1, DType.f16: 2}[dtype]
    a, b = node.operands[:2]
    at, bt = k.type(a), k.type(b)
    K_ = at.shape[-1]
    lines: list[str] = []
    A, B, C = k.ptr(a), k.ptr(b), k.params[node.name]
    bias = k.ptr(node.operands[2]) if len(node.operands) == 3 else None
    half = dtype is not DType.f32
    st = k.structure(node)
    nd = len(st.domain)
    if st.operand_maps[1].results == (Dim(nd - 2), Dim(nd - 1)):  # b read as [n, k]: linear's weight
        M, N = prod(at.shape[:-1]), bt.shape[0]
        sbk, sbn = 1, K_
        batch_shape: tuple[int, ...] = ()
        oa = ob = oc = "0"
    else:
        M, N = at.shape[-2], bt.shape[-1]
        sbk, sbn = N, 1
        batch_shape = node.type.shape[:-2]
        bv = [f"b{d}" for d in range(len(batch_shape))]
        dims = bv + ["0", "0", "0"]
        sizes = list(st.loop_sizes)
        a_idx = [render(r, dims, sizes) for r in st.operand_maps[0].results[:-2]] + ["0", "0"]
        b_idx = [render(r, dims, sizes) for r in st.operand_maps[1].results[:-2]] + ["0", "0"]
        oa, ob = linear_offset(a_idx, at.shape), linear_offset(b_idx, bt.shape)
        oc = linear_offset(bv + ["0", "0"], node.type.shape)
    nbatch = len(batch_shape)
    bv = [f"b{d}" for d in range(nbatch)]
    roots = epilogue_roots(k, node)
    k.emitted.update(r.name for r in roots)
    lines.append(f"  // GEMM {M}x{N}x{K_}" + (f", batch {list(batch_shape)}" if batch_shape else "")
                 + f": {GEMM_COMMENT}")
    if roots:
        lines.append("  // fused epilogue on each tile, in cache: " + ", ".join(f"%{k.local_names.get(r.name, r.name)}"
                                                                            for r in roots))
    if half:
        lines.append(f"  float* af = (float*)cs_alloc(sizeof(float) * {at.numel});")
        lines.append(f"  #pragma omp parallel for simd if({at.numel} > {PARALLEL_MIN})")
        lines.append(f"  for (int64_t i = 0; i < {at.numel}; ++i) af[i] = {S.load(dtype, f'{A}[i]')};")
        if bias:
            n_bias = k.type(node.operands[2]).numel
            lines.append(f"  float* biasf = (float*)cs_alloc(sizeof(float) * {n_bias});")
            lines.append(f"  for (int64_t i = 0; i < {n_bias}; ++i) biasf[i] = {S.load(dtype, f'{bias}[i]')};")
            bias = "biasf"
        A = "af"
    total_batch = prod(batch_shape)
    lines += ["  {", "    long MB, NB;", f"    cs_gemm_blocks({total_batch}, {M}, {N}, &MB, &NB);",
              f"    const long mtn = ({M} + MB - 1) / MB, ntn = ({N} + NB - 1) / NB;",
              f"    #pragma omp parallel if({total_batch * M * N * K_} > {GEMM_PARALLEL_MIN})", "    {",
              f"      float* pack = cs_gemm_pack<{kind}>(NB);"]
    if half:
        lines.append("      float* ct = (float*)cs_alloc(sizeof(float) * MB * NB);")
    lines.append(f"      #pragma omp for collapse({nbatch + 2}) schedule(dynamic, 1)")
    loop_lines, depth = _loops(bv, batch_shape, 3)
    lines += loop_lines
    lines.append("  " * depth + "for (long mt = 0; mt < mtn; ++mt)")
    lines.append("  " * (depth + 1) + "for (long nt = 0; nt < ntn; ++nt) {")
    ind = "  " * (depth + 2)
    cw, ldc = ("ct", "NB") if half else (f"{C} + {oc} + m0 * {N} + n0", str(N))
    lines += [ind + f"const long m0 = mt * MB, mw = std::min<long>(MB, {M} - m0), n0 = nt * NB, nw = std::min<long>(NB, {N} - n0);",
              ind + f"cs_gemm_tile<{kind}>(mw, nw, {K_}, {A} + {oa} + m0 * {K_}, {K_}, {B} + {ob} + n0 * {sbn}, {sbk}, {sbn}, "
                    f"{cw}, {ldc}, {f'{bias} + n0' if bias else 'nullptr'}, pack);"]
    if half:
        lines += [ind + "for (long i = 0; i < mw; ++i)",
                  ind + f"  for (long j = 0; j < nw; ++j) {C}[{oc} + (m0 + i) * {N} + n0 + j] = {S.store(dtype, 'ct[i * NB + j]')};"]
    if roots:
        lin = f"{oc} + ei * {N} + ej" if oc != "0" else f"ei * {N} + ej"
        row = (f"({linear_offset(bv, batch_shape)}) * {M} + ei" if nbatch else "ei")
        scope = Scope(k, ind + "    ")
        for r in roots:
            shape = r.type.shape
            index = None
            if shape and shape[-1] == N:
                index = tuple(decompose(row, shape[:-1])) + ("ej",)
            access = Access(shape, linear=lin, index=index)
            k._store_roots(scope, [r], access)
        lines += [ind + "for (int64_t ei = m0; ei < m0 + mw; ++ei) {", ind + "  #pragma omp simd",
                  ind + "  for (int64_t ej = n0; ej < n0 + nw; ++ej) {", *scope.lines, ind + "  }", ind + "}"]
    lines.append("  " * (depth + 1) + "}")
    lines.append("      std::free(pack);" + (" std::free(ct);" if half else ""))
    lines += ["    }", "  }"]
    if half:
        lines.append("  std::free(af);" + (" std::free(biasf);" if bias else ""))
    return lines


# -- attention -------------------------------------------------------------------------------------
def emit_attention(k: KernelEmitter, node: Node, block_q: int = 32, block_k: int = 64) -> list[str]:
    """Flash-style: per (batch..., query block), stream key blocks with an online softmax.

    Causal attention skips key blocks wholly above the diagonal; grouped-query attention
    reads the kv head through the structure's kv map (head floordiv group).
    """
    q, kk, v = node.operands[:3]
    mask = node.operands[3] if len(node.operands) == 4 else None
    qt, kt, vt = k.type(q), k.type(kk), k.type(v)
    st = k.structure(node)
    dtype = qt.dtype
    T = "double" if dtype is DType.f64 else "float"  # scores, softmax state, accumulator
    nb = qt.rank - 2
    LQ, D, LK, E = qt.shape[-2], qt.shape[-1], kt.shape[-2], vt.shape[-1]
    scale = float(node.attrs["scale"])
    causal = bool(node.attrs.get("causal", False))
    bv = [f"b{d}" for d in range(nb)]
    sizes = list(st.loop_sizes)
    zero4 = bv + ["0", "0", "0", "0"]

    def base(amap: AffineMap, t: TensorType) -> str:
        idx = [render(r, zero4, sizes) for r in amap.results[:nb]] + ["0", "0"]
        return linear_offset(idx, t.shape)
    Q, Kp, V, O = k.ptr(q), k.ptr(kk), k.ptr(v), k.params[node.name]
    ld = lambda t, e: S.load(t.dtype, e)  # noqa: E731
    nqb = -(-LQ // block_q)
    lines = [f"  // flash attention: query blocks of {block_q}, key blocks of {block_k}"
             + (", causal" if causal else "") + (", grouped-query" if kt.shape[:-2] != qt.shape[:-2] else "")]
    lines.append(f"  #pragma omp parallel for collapse({nb + 1}) schedule(dynamic, 1)")
    loop_lines, depth = _loops(bv + ["qb"], list(qt.shape[:nb]) + [nqb], 1)
    lines += loop_lines
    ind = "  " * (depth + 1)
    lines.append("  " * depth + "{")
    lines += [ind + f"const int64_t i0 = qb * {block_q}, iw = std::min<int64_t>({block_q}, {LQ} - i0);",
              ind + f"const {S.storage(dtype)}* qp = {Q} + {base(st.operand_maps[0], qt)};",
              ind + f"const {S.storage(dtype)}* kp = {Kp} + {base(st.operand_maps[1], kt)};",
              ind + f"const {S.storage(dtype)}* vp = {V} + {base(st.operand_maps[2], vt)};",
              ind + f"{S.storage(dtype)}* op = {O} + {linear_offset(bv + ['0', '0'], node.type.shape)};",
              ind + f"{T} m[{block_q}], l[{block_q}], s[{block_q} * {block_k}];",
              ind + f"alignas(64) {T} acc[{block_q} * {E}];",
              ind + f"for (int64_t r = 0; r < {block_q}; ++r) {{ m[r] = -INFINITY; l[r] = 0; }}",
              ind + f"for (int64_t x = 0; x < {block_q * E}; ++x) acc[x] = 0;",
              ind + (f"const int64_t jend = std::min<int64_t>({LK}, i0 + iw + {LK - LQ});" if causal
                     else f"const int64_t jend = {LK};"),
              ind + f"for (int64_t j0 = 0; j0 < jend; j0 += {block_k}) {{",
              ind + f"  const int64_t jw = std::min<int64_t>({block_k}, jend - j0);",
              ind + "  for (int64_t r = 0; r < iw; ++r) {",
              ind + "    for (int64_t c = 0; c < jw; ++c) {",
              ind + f"      {T} dot = 0;",
              ind + "      #pragma omp simd reduction(+:dot)",
              ind + f"      for (int64_t d = 0; d < {D}; ++d) dot += {ld(qt, f'qp[(i0 + r) * {D} + d]')} * {ld(kt, f'kp[(j0 + c) * {D} + d]')};",
              ind + f"      {T} sc = dot * {S.literal(DType.f64 if T == 'double' else DType.f32, scale)};"]
    if causal:
        lines.append(ind + f"      if (j0 + c > i0 + r + {LK - LQ}) sc = -INFINITY;")
    if mask is not None:
        mt = k.type(mask)
        dims = bv + ["(i0 + r)", "0", "(j0 + c)", "0"]
        idx = tuple(render(r, dims, sizes) for r in st.operand_maps[3].results)
        scope = Scope(k, ind + "      ")
        mv = scope.value(mask, Access(mt.shape, index=idx))
        lines += scope.lines
        lines.append(ind + (f"      if (!{mv}) sc = -INFINITY;" if mt.dtype is DType.i1 else f"      sc += {mv};"))
    lines += [ind + f"      s[r * {block_k} + c] = sc;",
              ind + "    }",
              ind + f"    {T} mnew = m[r];",
              ind + f"    for (int64_t c = 0; c < jw; ++c) mnew = std::max(mnew, s[r * {block_k} + c]);",
              ind + "    if (mnew == -INFINITY) continue;  // every key so far is masked",
              ind + f"    const {T} alpha = cs_exp(m[r] - mnew);",
              ind + f"    {T} sum = 0;",
              ind + "    #pragma omp simd reduction(+:sum)",
              ind + f"    for (int64_t c = 0; c < jw; ++c) {{ const {T} p = cs_exp(s[r * {block_k} + c] - mnew); s[r * {block_k} + c] = p; sum += p; }}",
              ind + "    l[r] = l[r] * alpha + sum;",
              ind + "    m[r] = mnew;",
              ind + f"    {T}* ar = acc + r * {E};",
              ind + "    #pragma omp simd",
              ind + f"    for (int64_t e = 0; e < {E}; ++e) ar[e] *= alpha;",
              ind + "    for (int64_t c = 0; c < jw; ++c) {",
              ind + f"      const {T} p = s[r * {block_k} + c];",
              ind + f"      const {S.storage(dtype)}* vr = vp + (j0 + c) * {E};",
              ind + "      #pragma omp simd",
              ind + f"      for (int64_t e = 0; e < {E}; ++e) ar[e] += p * {ld(vt, 'vr[e]')};",
              ind + "    }",
              ind + "  }",
              ind + "}",
              ind + "for (int64_t r = 0; r < iw; ++r) {",
              ind + f"  const {T} inv = l[r] > 0 ? 1 / l[r] : 0;  // every key masked: 0, as SDPA gives",
              ind + f"  for (int64_t e = 0; e < {E}; ++e) op[(i0 + r) * {E} + e] = {S.store(dtype, f'acc[r * {E} + e] * inv')};",
              ind + "}",
              "  " * depth + "}"]
    return lines


@dataclass(frozen=True)
class RegionEntry:
    """A region (an expert's body) compiled as its own program in the same translation unit:
    `entry(inputs, outputs, arena)` with an arena of `arena_bytes`."""

    entry: str
    arena_bytes: int
    rows: int  # tokens the region program takes per call: all T, or a block (`regions.row_block`)


def emit_moe(k: KernelEmitter, node: Node) -> list[str]:
    """Routing (softmax → top-k → renormalise, in float, per token, in parallel), then for each
    expert any token picked: its body (the region, compiled as its own program) on every
    token and, for the tokens routed to it, the weighted rows added to the output — the
    reference's semantics and order. Where the body is row-wise (`regions.row_block`) it
    runs on the routed rows only, packed a block at a time; otherwise on all T rows, as the
    reference does."""
    region = k.regions.get(node.name)
    if region is None:
        raise CodegenError(f"%{node.name} = moe(...): its expert region was not compiled")
    x, router, *stacked = node.operands
    xt = k.type(x)
    hidden, tokens = xt.shape[-1], prod(xt.shape[:-1])
    experts, top_k = int(node.attrs["num_experts"]), int(node.attrs["top_k"])
    normalize = bool(node.attrs.get("normalize", True))
    dt, st = xt.dtype, S.storage(xt.dtype)
    xp, rp, out = k.ptr(x), k.ptr(router), k.ptr(node.name)
    arena, ids, wts = k.fresh("region_arena"), k.fresh("ids"), k.fresh("weights")
    k.statics += [f"  static char* {arena} = (char*)cs_alloc({max(region.arena_bytes, 64)});",
                  f"  static int64_t* {ids} = (int64_t*)cs_alloc({tokens * top_k} * sizeof(int64_t));",
                  f"  static float* {wts} = (float*)cs_alloc({tokens * top_k} * sizeof(float));"]
    rdt = k.dtype(router)
    slices = []
    for w in stacked:
        wt = k.type(w)
        slices.append(f"(const void*)({k.ptr(w)} + e * INT64_C({prod(wt.shape[1:])}))")
    lines = [
        f"  // routing: softmax(x · router^T) over {experts} experts, top-{top_k}"
        + (", renormalised" if normalize else ""),
        "  #pragma omp parallel for schedule(static)",
        f"  for (int64_t t = 0; t < {tokens}; ++t) {{",
        f"    float p[{experts}]; bool taken[{experts}] = {{}}; float peak = -INFINITY, total = 0.0f;",
        f"    for (int64_t e = 0; e < {experts}; ++e) {{",
        "      float acc = 0.0f;",
        f"      for (int64_t h = 0; h < {hidden}; ++h) acc += (float){S.load(dt, f'{xp}[t * {hidden} + h]')} * "
        f"(float){S.load(rdt, f'{rp}[e * {hidden} + h]')};",
        "      p[e] = acc; peak = std::max(peak, acc);",
        "    }",
        f"    for (int64_t e = 0; e < {experts}; ++e) {{ p[e] = std::exp(p[e] - peak); total += p[e]; }}",
        f"    for (int64_t e = 0; e < {experts}; ++e) p[e] /= total;",
        "    float picked = 0.0f;",
        f"    for (int64_t j = 0; j < {top_k}; ++j) {{  // the largest first; ties to the lower id",
        "      int64_t best = -1;",
        f"      for (int64_t e = 0; e < {experts}; ++e) if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;",
        f"      taken[best] = true; {ids}[t * {top_k} + j] = best; {wts}[t * {top_k} + j] = p[best]; picked += p[best];",
        "    }",
        f"    for (int64_t j = 0; j < {top_k}; ++j) {{",
        f"      float w = {wts}[t * {top_k} + j]" + (" / picked;" if normalize else ";"),
        f"      {wts}[t * {top_k} + j] = (float){S.load(dt, S.store(dt, 'w'))};  // weights in x's dtype",
        "    }",
        "  }",
        f"  for (int64_t i = 0; i < {tokens * hidden}; ++i) {out}[i] = {S.store(dt, '0.0f')};",
    ]
    if region.rows < tokens:
        return lines + _moe_blocks(k, region, tokens, hidden, experts, top_k, dt, xp, out, ids, wts, slices, arena)
    ys = k.fresh("expert_out")
    k.statics.append(f"  static {st}* {ys} = ({st}*)cs_alloc({tokens * hidden} * sizeof({st}));")
    lines += [
        f"  for (int64_t e = 0; e < {experts}; ++e) {{",
        "    bool used = false;",
        f"    for (int64_t i = 0; i < {tokens * top_k} && !used; ++i) used = {ids}[i] == e;",
        "    if (!used) continue;",
        f"    const void* region_inputs[] = {{(const void*){xp}, {', '.join(slices)}}};",
        f"    void* region_outputs[] = {{(void*){ys}}};",
        f"    {region.entry}(region_inputs, region_outputs, {arena});",
        "    #pragma omp parallel for schedule(static)",
        f"    for (int64_t t = 0; t < {tokens}; ++t) {{",
        f"      for (int64_t j = 0; j < {top_k}; ++j) {{",
        f"        if ({ids}[t * {top_k} + j] != e) continue;",
        f"        const float w = {wts}[t * {top_k} + j];",
        *_add_weighted_row(dt, out, f"{ys}[t * {hidden} + h]", hidden, "        "),
        "      }",
        "    }",
        "  }",
    ]
    return lines


def _add_weighted_row(dt: DType, out: str, source: str, hidden: int, ind: str) -> list[str]:
    """`out[t, :] += w * source` in the reference's rounding: the product in `dt`, then the sum."""
    product = S.store(dt, f"(float){S.load(dt, source)} * w")
    total = S.store(dt, f"(float){S.load(dt, f'{out}[t * {hidden} + h]')} + y")
    return [ind + f"for (int64_t h = 0; h < {hidden}; ++h) {{",
            ind + f"  const float y = (float){S.load(dt, product)};",
            ind + f"  {out}[t * {hidden} + h] = {total};",
            ind + "}"]


def _moe_blocks(k: KernelEmitter, region: RegionEntry, tokens: int, hidden: int, experts: int, top_k: int,
                dt: DType, xp: str, out: str, ids: str, wts: str, slices: list[str], arena: str) -> list[str]:
    """Per expert: the tokens routed to it, packed `region.rows` at a time (the last block
    zero-padded), through the row-block body, each row added back weighted."""
    st, rows = S.storage(dt), region.rows
    packed, block_out, which, weight = k.fresh("packed"), k.fresh("block_out"), k.fresh("rows"), k.fresh("row_weight")
    k.statics += [f"  static {st}* {packed} = ({st}*)cs_alloc({rows * hidden} * sizeof({st}));",
                  f"  static {st}* {block_out} = ({st}*)cs_alloc({rows * hidden} * sizeof({st}));",
                  f"  static int64_t* {which} = (int64_t*)cs_alloc({tokens} * sizeof(int64_t));",
                  f"  static float* {weight} = (float*)cs_alloc({tokens} * sizeof(float));"]
    return [
        f"  for (int64_t e = 0; e < {experts}; ++e) {{",
        "    int64_t n = 0;",
        f"    for (int64_t t = 0; t < {tokens}; ++t)",
        f"      for (int64_t j = 0; j < {top_k}; ++j)",
        f"        if ({ids}[t * {top_k} + j] == e) {{ {which}[n] = t; {weight}[n] = {wts}[t * {top_k} + j]; ++n; }}",
        f"    for (int64_t b = 0; b < n; b += {rows}) {{",
        f"      const int64_t m = std::min<int64_t>({rows}, n - b);",
        f"      for (int64_t r = 0; r < {rows}; ++r)",
        f"        for (int64_t h = 0; h < {hidden}; ++h)",
        f"          {packed}[r * {hidden} + h] = r < m ? {xp}[{which}[b + r] * {hidden} + h] : {S.store(dt, '0.0f')};",
        f"      const void* region_inputs[] = {{(const void*){packed}, {', '.join(slices)}}};",
        f"      void* region_outputs[] = {{(void*){block_out}}};",
        f"      {region.entry}(region_inputs, region_outputs, {arena});",
        "      for (int64_t r = 0; r < m; ++r) {",
        f"        const int64_t t = {which}[b + r];",
        f"        const float w = {weight}[b + r];",
        *_add_weighted_row(dt, out, f"{block_out}[r * {hidden} + h]", hidden, "        "),
        "      }",
        "    }",
        "  }",
    ]


Emitter = Callable[[KernelEmitter, Node], list[str]]
EMITTERS: dict[Template, Emitter] = {
    Template.reduce: emit_reduce, Template.variance: emit_var, Template.argminmax: emit_argminmax,
    Template.scan: emit_cumsum, Template.softmax: emit_softmax, Template.norm: emit_norm,
    Template.group_norm: emit_norm, Template.gemm: emit_gemm, Template.conv: emit_conv,
    Template.attention: emit_attention, Template.pool: emit_pool, Template.moe: emit_moe,
}
"""Template -> emitter, for the ops that are not elementwise (those are inlined by `exprs`)."""
