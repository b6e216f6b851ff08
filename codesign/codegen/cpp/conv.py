"""Convolution in the C++ backend: a GEMM on blocks of im2col columns, or a direct kernel.

A conv `y[n, f, *o] = Σ_{c, *q} w[f, c, *q] · x[n, g·Cg + c, *(o·s + q·d − p)]` is, per
image and group, the product of the weights viewed as a matrix `[Fg, Cg·∏k]` with the
im2col matrix `[Cg·∏k, ∏o]`. Which lowering runs (`conv_lowering`):

- `gemm`: the im2col matrix is built a block of columns at a time, in per-thread scratch
  sized to stay in L2 (`cs_conv_blocks`), and multiplied by the runtime's `cs_gemm_tile`
  (BLAS sgemm when built with it, else the packed hand GEMM), so the buffer is bounded
  whatever the image size. The column block's padding is zeroed by spans
  (`cs_conv_span`), the interior copied by branch-free loops; an input that is an inlined
  elementwise chain (a prologue) is evaluated while the block is built.
- `pointwise` (a 1x1 kernel, stride 1, no padding): the input already is the matrix; the
  GEMM reads it in place when it has a buffer.
- `depthwise` (one input channel per output channel): a GEMM with K = ∏k would be all
  overhead, so each (image, channel) plane is copied into a zero-padded scratch plane and
  convolved tap by tap with vector loops along the last spatial dim.
- `loops`: direct loops read off the structure (the fallback the tests compare against).

A bf16 / f16 conv is widened before lowering (`f32_convs`): its input, weight and bias cast
to f32, the conv in f32 — one of the blocked lowerings above —, the result cast back, the
same rounding points as eager's (products summed in f32, the sum rounded once). The weight's
cast is a kernel of its own each call (so an in-place update of it is seen); the input's
cast is evaluated as the column blocks are built, the output's on each tile.

A conv read only through a chain of layout ops (the sub-pixel conv's pixel shuffle and
slices: `codegen.epilogue`) has no buffer: the loops compute it at the chain's points;
the GEMM lowerings compute each tile into per-thread scratch and store every element at
the chain's inverse map (`codegen.inverse_maps`), where the shuffle puts it, skipping the
ones the slices drop. A depthwise conv, or a chain with no inverse, keeps its buffer.

The kernel's pointwise consumers (bias, eval batch norm, activation, residual add: the
`epilogue_roots` the GEMM template also fuses) run on each output tile right after it is
computed, while it is in cache.
"""

from __future__ import annotations

from enum import Enum
from math import prod
from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.codegen.cpp.exprs import Access, Scope, decompose, linear_offset, render
from codesign.codegen.epilogue import LayoutEpilogue, layout_epilogues
from codesign.codegen.lowering import node_structure, reads_row_major
from codesign.ir.affine import AffineMap, Const, Dim
from codesign.ir.builder import GraphBuilder
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel
from codesign.ir.ops.registry import OpKind, Template, get_op
from codesign.ir.types import DType, TensorType

CONV = get_op("conv")

if TYPE_CHECKING:
    from codesign.codegen.cpp.kernels import KernelEmitter

BLOCKED_PARALLEL_MIN = 1 << 21  # multiply-adds below which a conv runs on one thread
DEPTHWISE_PARALLEL_MIN = 1 << 18


class ConvLowering(Enum):
    loops = "loops"
    gemm = "gemm"
    pointwise = "pointwise"
    depthwise = "depthwise"


def conv_lowering(node: Node, types: Mapping[str, TensorType]) -> ConvLowering:
    """How the C++ backend computes conv `node` (see the module docstring)."""
    if any(types[o].dtype is not DType.f32 for o in (*node.operands, node.name)):
        return ConvLowering.loops
    w, attrs = types[node.operands[1]], get_op(node.op).attr_values(node.attrs)
    if attrs["groups"] > 1 and w.shape[1] == 1:
        return ConvLowering.depthwise
    if all(k == 1 for k in w.shape[2:]) and all(s == 1 for s in attrs["stride"]) \
            and all(p == 0 for p in attrs["padding"]):
        return ConvLowering.pointwise
    return ConvLowering.gemm


WIDENED = (DType.bf16, DType.f16)


def f32_convs(graph: Graph) -> Graph:
    """`graph` with every bf16 / f16 conv computed in f32 (see the module docstring): the
    direct loops they ran in took ResNet-50 in bf16 to 0.04x eager on a 2-core CPU. The
    identity on a graph without one."""
    types = graph.types()
    wide = {n.name for n in graph.nodes if get_op(n.op) is CONV and n.type.dtype in WIDENED and not n.regions
            and all(types[o].dtype is n.type.dtype for o in n.operands)}
    if not wide:
        return graph
    b = GraphBuilder(graph.name, list(graph.inputs), [], dict(types))
    for node in graph.nodes:
        if node.name not in wide:
            b.nodes.append(node)
            continue
        b.loc = node.loc
        x, w, *bias = node.operands
        cast = {"dtype": DType.f32.value}
        ws = b.add("cast", [w], cast, hint=f"{w}_f32")  # alone: a buffer the GEMM reads
        bs = [b.add("cast", [bias[0]], cast, hint=f"{bias[0]}_f32")] if bias else []
        start = len(b.nodes)
        xs = b.add("cast", [x], cast, hint=f"{node.name}.in_f32")
        y = b.add(CONV.name, [xs, ws, *bs], dict(node.attrs), hint=f"{node.name}.f32")
        b.nodes.append(Node(node.name, "cast", (y,), node.type, {"dtype": node.type.dtype.value}, loc=node.loc))
        b.nodes[start:] = [n.with_(group=node.group) for n in b.nodes[start:]]
    return Graph(graph.name, graph.inputs, tuple(b.nodes), graph.outputs, graph.groups)


def is_blocked_conv(node: Node, types: Mapping[str, TensorType]) -> bool:
    return get_op(node.op).template is Template.conv and conv_lowering(node, types) is not ConvLowering.loops


def conv_pointer_operands(node: Node) -> tuple[int, ...]:
    """The weight of an f32 conv is read through a pointer (the GEMM's A, the taps)."""
    return (1,) if node.type.dtype is DType.f32 else ()


def stored_epilogues(kernel: Kernel, types: Mapping[str, TensorType]) -> dict[str, LayoutEpilogue]:
    """The convs of `kernel` stored through their layout readers (so with no buffer of their
    own), by name: the loops' where the chain's result is a kernel output; the GEMM tiles'
    where the chain inverts and its result is an output or feeds a `pointwise_tail`."""
    nodes = {n.name: n for n in kernel.nodes}
    found = {}
    for a, e in layout_epilogues(kernel, types).items():
        lowering = conv_lowering(nodes[a], types)
        if lowering is ConvLowering.loops:
            ok = e.leaves_kernel
        else:
            ok = (lowering is not ConvLowering.depthwise and e.from_anchor is not None and bool(e.from_anchor.results)
                  and (e.leaves_kernel or pointwise_tail(kernel, types, e) is not None))
        if ok:
            found[a] = e
    return found


def pointwise_tail(kernel: Kernel, types: Mapping[str, TensorType], e: LayoutEpilogue) -> tuple[str, ...] | None:
    """The kernel outputs computed from the chain's result, when every node that reads it
    (directly or through others) is elementwise at the same point — its operands from the
    chain read through the identity or a reshape, its others values computed before the conv
    — so each is computed where a conv element is stored; None otherwise."""
    order = [n.name for n in kernel.nodes]
    members, before = set(order), set(order[:order.index(e.anchor)])
    numel = types[e.result].numel
    tail = {e.result}
    for n in kernel.nodes[order.index(e.result) + 1:]:
        if not tail & set(n.operands):
            continue
        if get_op(n.op).template is not Template.elementwise or get_op(n.op).kind is OpKind.source \
                or n.type.numel != numel:
            return None
        st = node_structure(n, types)
        for o, m in zip(n.operands, st.operand_maps):
            shape = types[o].shape
            if o in tail:
                same = shape == n.type.shape and m is not None and m.results == AffineMap.identity(len(shape)).results
                if not (same or reads_row_major(m, shape, n.type.shape)):
                    return None
            elif o in members and o not in before:
                return None
        tail.add(n.name)
    roots = tuple(n for n in order if n in tail and n in kernel.outputs and n != e.result)
    return roots or None


class _Conv:
    """The sizes of one conv, named as in the module docstring."""

    def __init__(self, k: "KernelEmitter", node: Node):
        x, w = node.operands[:2]
        self.x, self.w = x, w
        self.bias = node.operands[2] if len(node.operands) == 3 else None
        xt, wt = k.type(x), k.type(w)
        self.xshape, self.wshape, self.shape = xt.shape, wt.shape, node.type.shape
        self.N, self.C = xt.shape[:2]
        self.F, self.Cg = wt.shape[:2]
        attrs = get_op(node.op).attr_values(node.attrs)
        self.G = int(attrs["groups"])
        self.Fg = self.F // self.G
        self.ksize, self.insp, self.outsp = wt.shape[2:], xt.shape[2:], node.type.shape[2:]
        self.stride, self.pad, self.dil = (tuple(attrs[a]) for a in ("stride", "padding", "dilation"))
        self.nsp = len(self.outsp)
        self.P, self.taps = prod(self.outsp), prod(self.ksize)
        self.K = self.Cg * self.taps
        self.row = self.outsp[-1]  # outputs along the last spatial dim: one vector loop


def _epilogue(k: "KernelEmitter", node: Node, cv: _Conv, roots: Sequence[Node], ind: str, f: str,
              p_lo: str, p_hi: str, bias: bool) -> list[str]:
    """For output channel `f` of image `n`, positions [p_lo, p_hi): the bias added, then every
    epilogue root computed at the point (reading the conv's value just written)."""
    if not roots and not bias:
        return []
    out = k.params[node.name]
    base = f"(n * {cv.F} + {f}) * {cv.P}"
    lines: list[str] = []
    outer = Scope(k, ind)
    bias_value = outer.value(cv.bias, Access(k.type(cv.bias).shape, index=(f,))) if bias else None
    lines += outer.lines
    inner = Scope(k, ind + "  ")
    if bias_value is not None:
        inner.emit(f"{out}[{base} + p] += {bias_value};")
    spatial = tuple(decompose("p", cv.outsp))
    for r in roots:
        index = ("n", f, *spatial) if r.type.shape == cv.shape else None
        k._store_roots(inner, [r], Access(r.type.shape, linear=f"{base} + p", index=index))
    return lines + [ind + "#pragma omp simd", ind + f"for (long p = {p_lo}; p < {p_hi}; ++p) {{", *inner.lines,
                    ind + "}"]


def _im2col(k: "KernelEmitter", cv: _Conv, ind: str) -> list[str]:
    """Columns [p0, p0 + nw) of image n, group g's im2col matrix into `col` ([K][nw])."""
    taps = [f"q{d}" for d in range(cv.nsp)]
    lines = [ind + f"for (long c = 0; c < {cv.Cg}; ++c)"]
    for d, q in enumerate(taps):
        lines.append(ind + "  " * (d + 1) + f"for (long {q} = 0; {q} < {cv.ksize[d]}; ++{q})")
    body = ind + "  " * (cv.nsp + 1)
    tap = linear_offset(["c", *taps], (cv.Cg, *cv.ksize))
    last = cv.nsp - 1
    offset = lambda d: f"{taps[d]} * {cv.dil[d]} - {cv.pad[d]}"  # noqa: E731
    lines += [body + "{",
              body + f"  float* dst = col + ({tap}) * nw - p0;  // dst[p]: column p of this block",
              body + f"  const long ch = g * {cv.Cg} + c;",
              body + "  long lo, hi;",
              body + f"  cs_conv_span({cv.row}, {cv.stride[last]}, {offset(last)}, {cv.insp[last]}, &lo, &hi);",
              body + f"  for (long r = p0 / {cv.row}; r * {cv.row} < p0 + nw; ++r) {{",
              body + f"    const long b = r * {cv.row}, sa = std::max<long>(p0 - b, 0), "
                     f"sb = std::min<long>(p0 + nw - b, {cv.row});"]
    inner = body + "    "
    coords = []
    if cv.nsp > 1:
        outs = decompose("r", cv.outsp[:-1])
        valid = []
        for d, o in enumerate(outs):
            lines.append(inner + f"const long i{d} = {o} * {cv.stride[d]} + {offset(d)};")
            coords.append(f"i{d}")
            valid.append(f"i{d} >= 0 && i{d} < {cv.insp[d]}")
        lines.append(inner + f"if (!({' && '.join(valid)})) {{ for (long j = sa; j < sb; ++j) dst[b + j] = 0.0f; continue; }}")
    scope = Scope(k, inner + "  ")
    value = scope.value(cv.x, Access(cv.xshape, index=("n", "ch", *coords, f"(j * {cv.stride[last]} + {offset(last)})")))
    lines += [inner + "const long l = std::max(sa, lo), h = std::max(std::min(sb, hi), l);",
              inner + "for (long j = sa; j < l; ++j) dst[b + j] = 0.0f;",
              inner + "#pragma omp simd",
              inner + "for (long j = l; j < h; ++j) {", *scope.lines, inner + f"  dst[b + j] = {value};", inner + "}",
              inner + "for (long j = h; j < sb; ++j) dst[b + j] = 0.0f;",
              body + "  }",
              body + "}"]
    return lines


def _store_through(k: "KernelEmitter", cv: _Conv, store: LayoutEpilogue, ind: str) -> list[str]:
    """The tile (`tile[i][p - p0]`, bias added) into the layout chain's result: element
    (n, f, *spatial) at the chain's inverse map, where its conditions hold."""
    inverse = store.from_anchor
    anchor = (cv.N, cv.F, *cv.outsp)
    dims = ["n", "f", *decompose("p", cv.outsp)]
    locals_: list[str] = []
    named: dict[object, str] = {}  # result coordinates as locals, named in the conditions too
    for d, e in enumerate(inverse.results):
        text = render(e, dims, anchor)
        if not isinstance(e, (Dim, Const)) and e not in named:
            named[e] = f"o{d}"
            locals_.append(f"const long o{d} = {text};")
    at = lambda e: named.get(e) or render(e, dims, anchor)  # noqa: E731
    conds = [f"{at(c.expr)} >= {c.lo} && {at(c.expr)} <= {c.hi}" if c.lo != c.hi else f"{at(c.expr)} == {c.lo}"
             for c in inverse.conditions]
    index = [at(e) for e in inverse.results]
    shape = k.type(store.result).shape
    flat = linear_offset(index, shape)
    body = Scope(k, ind + "      ")
    body.emit("const float v = tile[i * nw + p - p0]" + (" + b;" if cv.bias is not None else ";"))
    if store.leaves_kernel:
        body.emit(f"{k.params[store.result]}[{flat}] = v;")
    roots = [k.nodes[r] for r in pointwise_tail(k.kernel, k.types, store) or ()]
    body.memo[(store.result, flat)] = body.memo[(store.result, ",".join(index))] = "v"
    for r in roots:  # the kernel's pointwise ops on the chain's result, at this element
        k._store_roots(body, [r], Access(r.type.shape, linear=flat, index=tuple(index) if r.type.shape == shape else None))
    k.emitted.update(r.name for r in roots)
    lines = [ind + "for (long i = 0; i < mw; ++i) {", ind + f"  const long f = g * {cv.Fg} + m0 + i;"]
    if cv.bias is not None:
        scope = Scope(k, ind + "  ")
        b = scope.value(cv.bias, Access(k.type(cv.bias).shape, index=("f",)))
        lines += scope.lines + [ind + f"  const float b = {b};"]
    lines += [ind + "  #pragma omp simd", ind + "  for (long p = p0; p < p0 + nw; ++p) {",
              *(ind + "    " + line for line in locals_),
              ind + "    " + (f"if ({' && '.join(conds)}) {{" if conds else "{"), *body.lines, ind + "    }",
              ind + "  }", ind + "}"]
    return lines


def emit_blocked_conv(k: "KernelEmitter", node: Node, lowering: ConvLowering, roots: Sequence[Node],
                      store: LayoutEpilogue | None = None) -> list[str]:
    """A conv lowered as GEMM blocks or as the depthwise kernel, its epilogue `roots` fused;
    `store`: each GEMM tile computed into scratch and stored through the layout chain."""
    cv = _Conv(k, node)
    if lowering is ConvLowering.depthwise:
        return _depthwise(k, node, cv, roots)
    direct = lowering is ConvLowering.pointwise and k.buffer(cv.x) is not None
    W = k.ptr(cv.w)
    batch = cv.N * cv.G
    work = cv.N * cv.F * cv.P * cv.K
    how = ("the input read in place as the [K, P] matrix" if direct
           else "im2col column blocks in per-thread scratch")
    lines = [f"  // conv as GEMM: {batch} x [{cv.Fg} x {cv.K}] . [{cv.K} x {cv.P}], {how}; "
             "tiles by cs_gemm_tile (BLAS sgemm when built with CODESIGN_BLAS, else the packed hand GEMM)"]
    if roots:
        lines.append("  // fused epilogue on each tile, in cache: "
                     + ", ".join(f"%{k.local_names.get(r.name, r.name)}" for r in roots))
    if store is not None:
        into = [store.result] if store.leaves_kernel else list(pointwise_tail(k.kernel, k.types, store) or ())
        lines.append(f"  // each tile stored through {', '.join(f'%{k.nodes[c].op}' for c in store.chain)} "
                     f"into {', '.join(f'%{k.local_names.get(r, r)}' for r in into)}: no buffer of its own")
    lines += ["  {", "    long MB, NB;", f"    cs_conv_blocks({batch}, {cv.Fg}, {cv.P}, {cv.K}, &MB, &NB);",
              f"    const long mtn = ({cv.Fg} + MB - 1) / MB, ntn = ({cv.P} + NB - 1) / NB;",
              f"    #pragma omp parallel if({work} > {BLOCKED_PARALLEL_MIN})", "    {",
              "      float* pack = cs_gemm_pack<0>(NB);"]
    scratch = ([f"(size_t){cv.K} * NB"] if not direct else []) + (["(size_t)MB * NB"] if store is not None else [])
    if scratch:
        lines.append(f"      float* col = cs_scratch({' + '.join(scratch)});")
    if store is not None:
        lines.append("      float* tile = col" + (f" + (size_t){cv.K} * NB;" if not direct else ";")
                     + "  // the output tile, [mw][nw]")
    if not direct:
        lines.append("      long held = -1;  // the column block in col")
    lines += ["      #pragma omp for collapse(3) schedule(static)",
              f"      for (long ng = 0; ng < {batch}; ++ng)",
              "        for (long nt = 0; nt < ntn; ++nt)",
              "          for (long mt = 0; mt < mtn; ++mt) {"]
    ind = "            "
    lines += [ind + f"const long n = ng / {cv.G}, g = ng % {cv.G};",
              ind + f"const long p0 = nt * NB, nw = std::min<long>(NB, {cv.P} - p0), "
                    f"m0 = mt * MB, mw = std::min<long>(MB, {cv.Fg} - m0);"]
    if direct:
        b, ldb = f"{k.ptr(cv.x)} + (n * {cv.C} + g * {cv.Cg}) * {cv.P} + p0", str(cv.P)
    else:
        lines += [ind + "if (held != ng * ntn + nt) {", *_im2col(k, cv, ind + "  "), ind + "  held = ng * ntn + nt;",
                  ind + "}"]
        b, ldb = "col", "nw"
    if store is not None:
        lines.append(ind + f"cs_gemm_tile<0>(mw, nw, {cv.K}, {W} + (g * {cv.Fg} + m0) * {cv.K}, {cv.K}, {b}, {ldb}, 1, "
                           "tile, nw, nullptr, pack);")
        lines += _store_through(k, cv, store, ind)
    else:
        out = k.params[node.name]
        lines.append(ind + f"cs_gemm_tile<0>(mw, nw, {cv.K}, {W} + (g * {cv.Fg} + m0) * {cv.K}, {cv.K}, {b}, {ldb}, 1, "
                           f"{out} + (n * {cv.F} + g * {cv.Fg} + m0) * {cv.P} + p0, {cv.P}, nullptr, pack);")
        epi = _epilogue(k, node, cv, roots, ind + "  ", "f", "p0", "p0 + nw", cv.bias is not None)
        if epi:
            lines += [ind + "for (long i = 0; i < mw; ++i) {", ind + f"  const long f = g * {cv.Fg} + m0 + i;", *epi,
                      ind + "}"]
    lines += ["          }", "      std::free(pack);", "    }", "  }"]
    return lines


def _depthwise(k: "KernelEmitter", node: Node, cv: _Conv, roots: Sequence[Node]) -> list[str]:
    """Per (image, output channel): its input plane zero-padded into scratch, then each
    output row accumulated tap by tap in vector loops (stride along the last dim)."""
    padded = tuple(s + 2 * p for s, p in zip(cv.insp, cv.pad))
    W, out = k.ptr(cv.w), k.params[node.name]
    last = cv.nsp - 1
    lines = [f"  // depthwise conv: per (image, channel), a zero-padded {list(padded)} plane in per-thread scratch, "
             f"taps accumulated along rows of {cv.row}"]
    if roots:
        lines.append("  // fused epilogue on each plane, in cache: "
                     + ", ".join(f"%{k.local_names.get(r.name, r.name)}" for r in roots))
    work = cv.N * cv.F * cv.P * cv.taps
    lines += [f"  #pragma omp parallel if({work} > {DEPTHWISE_PARALLEL_MIN})", "  {",
              f"    float* plane = cs_scratch({prod(padded)});",
              "    #pragma omp for collapse(2) schedule(static)",
              f"    for (long n = 0; n < {cv.N}; ++n)",
              f"      for (long f = 0; f < {cv.F}; ++f) {{"]
    ind = "        "
    lines.append(ind + f"const long ch = f / {cv.Fg};")
    if any(cv.pad):
        lines.append(ind + f"for (long j = 0; j < {prod(padded)}; ++j) plane[j] = 0.0f;")
    # the channel's values into the plane's interior
    ivars = [f"i{d}" for d in range(cv.nsp)]
    depth = ind
    for d in range(cv.nsp - 1):
        lines.append(depth + f"for (long {ivars[d]} = 0; {ivars[d]} < {cv.insp[d]}; ++{ivars[d]})")
        depth += "  "
    scope = Scope(k, depth + "  ")
    value = scope.value(cv.x, Access(cv.xshape, index=("n", "ch", *ivars)))
    dst = linear_offset([f"({v} + {p})" for v, p in zip(ivars, cv.pad)], padded)
    lines += [depth + "#pragma omp simd", depth + f"for (long {ivars[last]} = 0; {ivars[last]} < {cv.insp[last]}; ++{ivars[last]}) {{",
              *scope.lines, depth + f"  plane[{dst}] = {value};", depth + "}"]
    # output rows
    ovars, taps = [f"o{d}" for d in range(cv.nsp - 1)], [f"q{d}" for d in range(cv.nsp)]
    depth = ind
    for d, o in enumerate(ovars):
        lines.append(depth + f"for (long {o} = 0; {o} < {cv.outsp[d]}; ++{o})")
        depth += "  "
    row_at = linear_offset([*ovars, "0"], cv.outsp)
    init = "0.0f"
    if cv.bias is not None:
        bscope = Scope(k, depth + "  ")
        init = bscope.value(cv.bias, Access(k.type(cv.bias).shape, index=("f",)))
    lines += [depth + "{", *(bscope.lines if cv.bias is not None else []),
              depth + f"  float* y = {out} + (n * {cv.F} + f) * {cv.P} + {row_at};",
              depth + "  #pragma omp simd",
              depth + f"  for (long j = 0; j < {cv.row}; ++j) y[j] = {init};"]
    tdepth = depth + "  "
    for d, q in enumerate(taps):
        lines.append(tdepth + f"for (long {q} = 0; {q} < {cv.ksize[d]}; ++{q})")
        tdepth += "  "
    src = " + ".join([f"({ovars[d]} * {cv.stride[d]} + {taps[d]} * {cv.dil[d]}) * {prod(padded[d + 1:])}"
                      for d in range(cv.nsp - 1)] + [f"{taps[last]} * {cv.dil[last]}"])
    lines += [tdepth + "{",
              tdepth + f"  const float wv = {W}[f * {cv.taps} + {linear_offset(taps, cv.ksize)}];",
              tdepth + f"  const float* s = plane + {src};",
              tdepth + "  #pragma omp simd",
              tdepth + f"  for (long j = 0; j < {cv.row}; ++j) y[j] += wv * s[j * {cv.stride[last]}];",
              tdepth + "}",
              depth + "}"]
    lines += _epilogue(k, node, cv, roots, ind, "f", "0", str(cv.P), False)
    lines += ["      }", "  }"]
    return lines
