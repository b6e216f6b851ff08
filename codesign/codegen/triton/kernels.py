"""Kernel bodies: one `@triton.jit` function per kernel (fusion group or lone node).

Every value a kernel needs is produced *at an index* (`indexing.Index`) by `value()`:
a value the kernel reads from memory becomes a `tl.load` at that index; a node of the
group is computed there by rendering its scalar body (`Body`: `Structure.expr` through
`overrides.PRIMS`), its operands read through its structure's maps — so broadcasting,
permutes, reshapes, slices, concats, pads, upsampling and gathers are index arithmetic
inside the consumer's loads, never a copy. A template is picked by `OpDef.template`;
templates differ only in the tile they iterate over and in what they accumulate:

- `pointwise`: a flat 1-d tile over each output (layout ops, sources, gathers included);
- `row`: reductions (from their `Combiner`) and the norms, one program per block of rows,
  looping over the reduced dims once per statistic (two-pass mean / variance, max / sum-exp), then once
  more to write the element-wise outputs (the epilogue);
- `matmul`: matmul / linear tiles with `tl.dot` (fp32 accumulation), operands computed by
  any prologue nodes of the group, the epilogue applied to the accumulator before the store;
- `attention`: FlashAttention-2 forward with an online softmax (causal, masks, GQA).

A group these templates cannot express raises `Unfusable`: the `partition{backend=triton}` pass
probes every group with them and splits those beforehand; the wrapper refuses one it is given.
Every template takes the target's tier order (`tiers`, fastest first): the matmul reads the
group plan's tile for its fastest tier.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Callable, Mapping, Sequence

from codesign.codegen import group_tile
from codesign.codegen.lowering import copies_row_major, node_structure
from codesign.codegen.triton import safety
from codesign.codegen.triton.indexing import Factor, Index, and_masks, expr_text, paren, receiver
from codesign.codegen.triton.overrides import PRIMS, TL_DTYPE, Operands, Unsupported, bare, literal, work_dtype
from codesign.ir.affine import Dim
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel
from codesign.ir.ops import get_op
from codesign.ir.ops.registry import IterKind, OpKind, Structure, Template, Trait
from codesign.ir.scalar import (Acc, Affine, Apply, Combiner, Expr, Lit, Load, Loop, Prim, conjuncts, evaluate,
                                is_plain_load, walk)
from codesign.ir.types import DType

ROW_TEMPLATES = (Template.reduce, Template.variance, Template.softmax, Template.norm)
TEMPLATES = (Template.elementwise, Template.gemm, Template.attention) + ROW_TEMPLATES
"""What this backend has kernel templates for; any other op runs as an extern torch call."""


def template_of(node: Node) -> Template | None:
    """The template `node` runs in here, or None: an extern."""
    op = get_op(node.op)
    return op.template if op.template in TEMPLATES and not node.regions else None


def is_anchor(node: Node) -> bool:
    """A heavy op one kernel forms around (a contraction, attention, a reduction or norm)."""
    return get_op(node.op).has(Trait.anchor) and template_of(node) is not None


class Unfusable(Exception):
    """The group does not fit one template (`partition{backend=triton}` splits such a group)."""


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def ident(name: str) -> str:
    """A Python identifier for an IR value name."""
    text = re.sub(r"\W", "_", name)
    return text if text[:1].isalpha() else f"v_{text}"


@dataclass
class Value:
    """A tile in the kernel: its text (a variable or a literal) and element type."""

    text: str
    dtype: DType
    const: object = None  # the Python value when this is a literal (`full`)


@dataclass
class KernelCode:
    """One generated kernel and how the wrapper launches it."""

    name: str
    kind: str
    source: str
    args: list[str]  # IR value names, in pointer-argument order (inputs then outputs)
    outputs: list[str]
    grid: str  # Python text of the launch grid
    constexprs: dict[str, int]
    num_warps: int = 4
    num_stages: int = 2
    nodes: tuple[str, ...] = ()
    note: str = ""
    sites: tuple = ()  # run-time check sites (`safety`): the kernel then takes `err_ptr` last
    launches: tuple["Launch", ...] = ()  # other launches of the same source, measured at the first (`choice`)


@dataclass(frozen=True)
class Launch:
    """One way to launch a kernel whose source does not depend on its block sizes: the grid,
    the constexprs and the warps and pipeline stages (a GEMM's candidate tiles)."""

    grid: tuple[int, ...]
    constexprs: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int

    def options(self) -> dict[str, int]:
        return {**dict(self.constexprs), "num_warps": self.num_warps, "num_stages": self.num_stages}

    @property
    def uses_descriptors(self) -> bool:
        """Whether it loads through tensor descriptors (`USE_TMA`: 16-byte aligned bases only)."""
        return bool(dict(self.constexprs).get("USE_TMA"))

    def label(self) -> str:
        c = dict(self.constexprs)
        return "x".join(str(c[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in c) + \
            f" w{self.num_warps} s{self.num_stages}" + (" tma" if self.uses_descriptors else "")

    def to_json(self) -> dict:
        """As the module's meta and the choice cache store it."""
        return {"grid": list(self.grid), "constexprs": dict(self.constexprs), "num_warps": self.num_warps,
                "num_stages": self.num_stages}

    @classmethod
    def from_json(cls, data: Mapping) -> "Launch":
        return cls(tuple(int(g) for g in data["grid"]), tuple((str(k), int(v)) for k, v in data["constexprs"].items()),
                   int(data["num_warps"]), int(data["num_stages"]))


class KernelWriter:
    """Builds the body of one kernel: loads, inlined group nodes, template hooks, stores."""

    def __init__(self, graph: Graph, kernel: Kernel, name: str):
        self.graph, self.kernel, self.name = graph, kernel, name
        self.types = graph.types()
        self.nodes: dict[str, Node] = {n.name: n for n in kernel.nodes}
        self.graph_nodes = graph.node_map()
        self.args: list[str] = []
        self.lines: list[str] = []
        self.depth = 1
        self.scopes: list[dict] = [{}]
        self.counter = 0
        self.hooks: dict[str, Callable[[Index], Value]] = {}
        self.structures: dict[str, Structure] = {}
        self.int64 = any(self.types[v].numel >= 2 ** 31 - 1
                         for v in {*kernel.inputs, *kernel.outputs} if v in self.types)

    # -- text helpers ---------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def fresh(self, prefix: str = "t") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def assign(self, text: str, prefix: str = "t") -> str:
        if re.fullmatch(r"[A-Za-z_]\w*", text):
            return text
        var = self.fresh(prefix)
        self.emit(f"{var} = {text}")
        return var

    def ptr(self, name: str) -> str:
        if name not in self.args:
            self.args.append(name)
        return f"{ident(name)}_ptr"

    def push(self) -> None:
        self.scopes.append({})

    def pop(self) -> None:
        self.scopes.pop()

    def structure(self, node: Node) -> Structure:
        if node.name not in self.structures:
            self.structures[node.name] = node_structure(node, self.types)
        return self.structures[node.name]

    # -- values ---------------------------------------------------------------------------
    def value(self, name: str, index: Index) -> Value:
        key = (name, index.key)
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        if name in self.hooks:
            v = self.hooks[name](index)
        elif name in self.nodes or literal_source(self.graph_nodes.get(name)) is not None:
            v = self.compute(self.graph_nodes[name], index)  # constants are inlined anywhere
        else:
            v = self.load(name, index)
        self.scopes[-1][key] = v
        return v

    def load(self, name: str, index: Index) -> Value:
        t = self.types[name]
        if t.numel == 0:
            raise Unsupported(f"%{name} is empty")
        address = index.linear()
        mask = index.mask_for(address) if address != "0" else None
        text = f"tl.load({self.ptr(name)} + {address}" + (f", mask={mask}, other=0)" if mask else ")")
        if t.dtype in (DType.f16, DType.bf16):
            text += ".to(tl.float32)"
        return Value(self.assign(text, "ld"), t.dtype)

    def store(self, name: str, index: Index, v: Value) -> None:
        t = self.types[name]
        text = v.text
        if v.const is not None:
            text = f"tl.full({index.tile}, {literal(v.const, t.dtype)}, {TL_DTYPE[t.dtype]})"
        elif t.dtype in (DType.f16, DType.bf16) or work_dtype(v.dtype) != t.dtype:
            text = f"{receiver(text)}.to({TL_DTYPE[t.dtype]})"
        address = index.linear()
        mask, full = index.mask_for(address), index.mask_text()
        if address == "0" or mask != full:
            # lanes the address does not tell apart (a single element; a dim of size 1) may
            # hold other values (a GEMM tile's padding rows): the pointer takes the tile's
            # shape so the whole mask applies, and only valid lanes store
            address = f"tl.zeros({index.tile}, tl.int32)" if address == "0" else \
                f"{paren(address)} + tl.zeros({index.tile}, tl.int32)"
            mask = full
        self.emit(f"tl.store({self.ptr(name)} + {address}, {text}" + (f", mask={mask})" if mask else ")"))

    def operand_index(self, node: Node, i: int, index: Index, st: Structure) -> Index:
        """Where operand i is read for `node`'s point `index`: through its map, or — for a
        layout op whose map is a row-major reshape — the same lanes reshaped (free)."""
        o = node.operands[i]
        amap, shape = st.operand_maps[i], self.types[o].shape
        if amap is None:
            raise Unsupported(f"indirect operand {i} of {node.op} read through its map")
        if copies_row_major(st, shape, index.shape) and shape != index.shape:
            return index.reshaped(shape)
        return index.through(amap, shape)

    def operand(self, node: Node, i: int, index: Index, st: Structure) -> Value:
        return self.value(node.operands[i], self.operand_index(node, i, index, st))

    def compute(self, node: Node, index: Index) -> Value:
        st = self.structure(node)
        if st.expr is None:
            raise Unsupported(f"no Triton body for {node.op} inside a {type(self).__name__} kernel")
        return Body(self, node, st, index).value(st.expr, root=True)


def layout_move(st: Structure, src: Sequence[int], dst: Sequence[int]) -> Callable[[Index], Index] | None:
    """For a body reading its one operand through a reshape or a permutation of the dims: the
    result's index from the operand's (pushing a computed tile forward); else None."""
    if copies_row_major(st, src, dst):
        return lambda idx: idx.reshaped(dst)
    res = st.operand_maps[0].results if is_plain_load(st.expr) and len(st.operand_maps) == 1 else ()
    if sorted(e.index if isinstance(e, Dim) else -1 for e in res) != list(range(len(dst))):
        return None
    perm = sorted(range(len(dst)), key=lambda i: res[i].index)  # result dim j is operand dim perm[j]
    return lambda idx: Index.of_dims(dst, [idx.dims()[p] for p in perm], idx.mask, idx.tile)


def literal_source(node: Node | None) -> object:
    """The value of a source op whose body is a literal (`full`), inlined by its readers; else None."""
    op = get_op(node.op) if node is not None else None
    expr = op.structure([], node.type, op.attr_values(node.attrs)).expr if op and op.kind is OpKind.source else None
    return expr.value if isinstance(expr, Lit) else None


def use_counts(e: Expr) -> Counter:
    """How many parents each subexpression has (gating predicates not counted: they become
    load masks, rendered inline)."""
    return Counter(k for x in walk(e) for k in (x.args if isinstance(x, Apply) else x.index or ()
                                                  if isinstance(x, Load) else ()))


def _neutral(e: Apply, args: Sequence[Value]) -> Value | None:
    """x + 0 (integers: a float -0.0 + 0 is +0.0) and x * 1: the other operand."""
    unit = {Prim.add: 0, Prim.mul: 1}.get(e.prim) if e.dtype is not DType.i1 else None
    if unit is None or (unit == 0 and e.dtype.is_float):
        return None
    for a, b in ((args[0], args[1]), (args[1], args[0])):
        if a.const is not None and a.const == unit and b.const is None:
            return b
    return None


class Body:
    """One node's scalar body rendered at an index: plain loads through the operand maps,
    gated loads masked, indexed loads at their coordinates, loop indices and affine index
    arithmetic from the index's dims; each shared subexpression bound to one variable."""

    def __init__(self, w: KernelWriter, node: Node | None, st: Structure | None, index: Index,
                 acc: Value | None = None):
        self.w, self.node, self.st, self.index, self.acc = w, node, st, index, acc
        self.memo: dict[Expr, Value] = {}
        self.uses = use_counts(st.expr) if st is not None and st.expr is not None else {}

    def value(self, e: Expr, root: bool = False) -> Value:
        if e in self.memo:
            return self.memo[e]
        v = self.render(e)
        if v.const is None and (root or (self.uses.get(e, 0) > 1 and isinstance(e, Apply))):
            v = Value(self.w.assign(v.text), v.dtype, v.const)
        self.memo[e] = v
        return v

    def render(self, e: Expr, inline: bool = False) -> Value:
        if isinstance(e, Lit):
            return Value(literal(e.value, work_dtype(e.dtype)), e.dtype, const=e.value)
        if isinstance(e, Loop):
            return Value(self.index.dim(e.dim), e.dtype)
        if isinstance(e, Affine):
            return Value(expr_text(e.expr, self.index.dims()), e.dtype)
        if isinstance(e, Acc):
            return self.acc
        if isinstance(e, Load):
            return self.load(e)
        sub = (lambda a: self.render(a, True)) if inline else self.value
        args = [sub(a) for a in e.args]
        if all(a.const is not None for a in args):  # fold: a body of literals is a literal
            out = evaluate(Apply(e.prim, tuple(Lit(a.const, x.dtype) for a, x in zip(args, e.args)), e.dtype),
                           [], (), lambda *_: None).item()
            return Value(literal(out, work_dtype(e.dtype)), e.dtype, const=out)
        keep = _neutral(e, args)
        if keep is not None:
            return keep
        bind = (lambda t: t) if inline else self.w.assign
        text = PRIMS[e.prim](Operands([a.text for a in args], [a.dtype for a in e.args], e.dtype,
                                      [a.const for a in args], bind,
                                      safety.division_flag(self.w, self, self.index.mask_text())))
        return Value(text, e.dtype)

    def load(self, e: Load) -> Value:
        node, st, w = self.node, self.st, self.w
        conds = [bare(self.render(c, inline=True).text) for c in conjuncts(e.valid)] if e.valid is not None else []
        name = node.operands[e.operand]
        if e.index is None:
            at = self.w.operand_index(node, e.operand, self.index, st)
        else:
            coords = [self.value(c) for c in e.index]
            texts = [w.assign(c.text) if isinstance(x, Apply) else c.text for c, x in zip(coords, e.index)]
            reads = and_masks(self.index.mask + tuple(conds))
            texts = [safety.checked_coordinate(w, self, e, i, t, reads) for i, t in enumerate(texts)]
            at = Index.of_dims(w.types[name].shape, texts, self.index.mask, self.index.tile)
        return w.value(name, at.with_mask(*conds) if conds else at)


# -- template helpers -------------------------------------------------------------------------
def finish(w: KernelWriter, kind: str, grid: str, consts: dict[str, int], warps: int, stages: int) -> KernelCode:
    """The kernel's source and launch; pointer arguments: inputs (in first-use order), then outputs."""
    w.args = [a for a in w.args if a not in w.kernel.outputs] + list(w.kernel.outputs)
    sites = tuple(getattr(w, "sites", ()))
    params = [f"{ident(a)}_ptr" for a in w.args] + ["err_ptr"] * bool(sites) + [f"{c}: tl.constexpr" for c in consts]
    src = f"@triton.jit\ndef {w.name}({', '.join(params)}):\n" + "\n".join(w.lines) + "\n"
    return KernelCode(w.name, kind, src, list(w.args), list(w.kernel.outputs), grid, consts, warps, stages,
                      tuple(n.name for n in w.kernel.nodes), sites=sites)


def pid_text(w: KernelWriter, axis: int = 0) -> str:
    return f"tl.program_id({axis}).to(tl.int64)" if w.int64 else f"tl.program_id({axis})"


# -- pointwise --------------------------------------------------------------------------------
def pointwise_kernel(graph: Graph, kernel: Kernel, name: str, tiers: Sequence[str] = (),
                     xblock: int = 1024) -> KernelCode:
    """A flat 1-d tile over each output; everything else is inlined into its loads."""
    w = KernelWriter(graph, kernel, name)
    types = w.types
    sizes = [types[o].numel for o in kernel.outputs]
    total = max(sizes)
    xblock = min(xblock, next_pow2(total))
    w.emit(f"xindex = {pid_text(w)} * XBLOCK + tl.arange(0, XBLOCK)")
    for out in kernel.outputs:
        t = types[out]
        cond = (f"xindex < {t.numel}",) if t.numel % xblock or t.numel != total else ()
        index = Index.flat(t.shape, "xindex", cond, "[XBLOCK]")
        w.store(out, index, w.value(out, index))
    return finish(w, "pointwise", f"(triton.cdiv({total}, {xblock}),)", {"XBLOCK": xblock},
                  4 if xblock <= 1024 else 8, 1)


# -- row reductions and norms -------------------------------------------------------------------
@dataclass
class RowPlan:
    domain: tuple[int, ...]
    reduced: tuple[int, ...]
    kept: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        self.kept = tuple(i for i in range(len(self.domain)) if i not in self.reduced)

    @property
    def rows(self) -> int:
        return prod(self.domain[i] for i in self.kept)

    @property
    def r(self) -> int:
        return prod(self.domain[i] for i in self.reduced)


class RowWriter(KernelWriter):
    def __init__(self, graph: Graph, kernel: Kernel, name: str, plan: RowPlan):
        super().__init__(graph, kernel, name)
        self.plan = plan

    def conds(self) -> tuple[str, ...]:
        p = self.plan
        xblock, rblock = self.blocks
        return tuple(c for c, need in ((f"xindex < {p.rows}", p.rows % xblock),
                                       (f"rindex < {p.r}", p.r % rblock)) if need)

    def elem_index(self) -> Index:
        p = self.plan
        conds = self.conds()
        tile = "[XBLOCK, RBLOCK]"
        nk = len(p.kept)
        if p.kept == tuple(range(nk)):
            factors = tuple(f for f in (Factor("xindex", 0, nk) if nk else None,
                                        Factor("rindex", nk, len(p.domain))) if f)
            return Index(p.domain, factors, conds, tile)
        dims = [""] * len(p.domain)
        for group, var in ((p.kept, "xindex"), (p.reduced, "rindex")):
            sub = Index.flat(tuple(p.domain[i] for i in group), var, (), tile)
            for k, i in enumerate(group):
                dims[i] = sub.dim(k)
        return Index.of_dims(p.domain, dims, conds, tile)

    def row_index(self, shape: Sequence[int]) -> Index:
        """Index of a row-level value (kept dims, reduced dims absent or of size 1)."""
        p = self.plan
        conds = tuple(c for c in self.conds() if "xindex" in c)
        tile = "[XBLOCK, 1]"
        if p.kept == tuple(range(len(p.kept))):
            return Index.flat(shape, "xindex", conds, tile)
        kept_dims = [self.elem_index().dim(i) for i in p.kept]
        dims, k = [], 0
        full = len(shape) == len(p.domain)
        for i, s in enumerate(shape):
            if full and i in p.reduced:
                dims.append("0")
            else:
                dims.append(kept_dims[k])
                k += 1
        return Index.of_dims(shape, dims, conds, tile)

    def check_row(self, node: Node, index: Index) -> None:
        """A statistic is one value per row: it may only be read at the current row."""
        elem = self.elem_index().dims()
        want = [elem[i] for i in self.plan.kept]
        got = index.dims()
        if len(got) == len(self.plan.domain):
            got = [got[i] for i in self.plan.kept]
        if got != want:
            raise Unfusable(f"%{node.name} is read at another row than its own")


def _row_plan(graph: Graph, kernel: Kernel) -> tuple[RowPlan, list[Node]]:
    types = graph.types()
    anchors = [n for n in kernel.nodes if template_of(n) in ROW_TEMPLATES]
    if not anchors:
        raise Unfusable("no reduction")
    plan = None
    for n in anchors:
        st = node_structure(n, types)
        reduced = tuple(i for i, d in enumerate(st.domain) if d.kind is IterKind.reduction)
        this = RowPlan(types[n.operands[0]].shape, reduced)
        if plan is None:
            plan = this
        elif (this.domain, this.reduced) != (plan.domain, plan.reduced):
            raise Unfusable("reductions over different domains")
    return plan, anchors


_LAST = "tl.sum(tl.where(rbase == RBLOCK - 1, tl.cumprod({acc}, 1), 0), 1)[:, None]"
# combiner → (label, elementwise combine, final reduction over the block); logical ones run on 0 / 1
COMBINE = {Prim.add: ("sum", "{acc} + {v}", "tl.sum({acc}, 1)[:, None]"),
           Prim.mul: ("prod", "{acc} * {v}", _LAST),
           Prim.maximum: ("max", "tl.maximum({acc}, {v})", "tl.max({acc}, 1)[:, None]"),
           Prim.minimum: ("min", "tl.minimum({acc}, {v})", "tl.min({acc}, 1)[:, None]"),
           Prim.logical_or: ("any", "tl.maximum({acc}, {v})", "tl.max({acc}, 1)[:, None] != 0"),
           Prim.logical_and: ("all", "tl.minimum({acc}, {v})", "tl.min({acc}, 1)[:, None] != 0")}
_SUM = Combiner(Prim.add, 0)
_MAX = Combiner(Prim.maximum, float("-inf"))


def row_kernel(graph: Graph, kernel: Kernel, name: str, tiers: Sequence[str] = ()) -> KernelCode:
    plan, anchors = _row_plan(graph, kernel)
    w = RowWriter(graph, kernel, name, plan)
    types = w.types
    rows, r = plan.rows, plan.r
    if r == 0 or rows == 0:
        raise Unsupported("empty reduction")
    rblock = min(next_pow2(r), 1024)
    xblock = max(1, min(next_pow2(rows), max(1, 4096 // rblock), 64))
    w.blocks = (xblock, rblock)
    levels = {}
    for out in kernel.outputs:
        t = types[out]
        if t.numel == prod(plan.domain) and plan.r > 1:
            levels[out] = "elem"  # the rows' elements, possibly reshaped
        elif t.numel == rows:
            levels[out] = "row"
        else:
            raise Unfusable(f"output %{out} {list(t.shape)} is neither a row nor an element of the rows")
    w.emit(f"xindex = ({pid_text(w)} * XBLOCK + tl.arange(0, XBLOCK))[:, None]")
    w.emit("rbase = tl.arange(0, RBLOCK)[None, :]")

    def loop(body: Callable[[Index], None]) -> None:
        w.emit(f"for roffset in range(0, {r}, RBLOCK):")
        w.depth += 1
        w.push()
        w.emit("rindex = roffset + rbase")
        body(w.elem_index())
        w.pop()
        w.depth -= 1

    def reduce_stage(label: str | None, combiner: Combiner, dtype: DType, elem: Callable[[Index], str],
                     propagate_nan: bool = False) -> str:
        """One pass over the rows combining `elem` with `combiner`; the row values' variable.
        `propagate_nan`: a float max / min is NaN where the row holds one, as torch.amax is
        (`tl.max` drops NaNs; softmax's max need not care: a NaN row is NaN either way)."""
        if combiner.op not in COMBINE:
            raise Unsupported(f"no Triton reduction for a {combiner.op.value} combiner")
        name, combine, final = COMBINE[combiner.op]
        label, logical = label or name, combiner.op in (Prim.logical_or, Prim.logical_and)
        acc_dtype = DType.f32 if logical else combiner.accumulator(dtype)
        if propagate_nan and acc_dtype.is_float and combiner.op in (Prim.maximum, Prim.minimum):
            combine = combine.replace("{v})", "{v}, propagate_nan=tl.PropagateNan.ALL)")
            final = f'tl.where(tl.max(({{acc}} != {{acc}}).to(tl.int32), 1)[:, None] != 0, float("nan"), {final})'
        init = literal(combiner.identity, acc_dtype)
        acc = w.fresh(f"acc_{label}_")
        w.emit(f"{acc} = tl.full([XBLOCK, RBLOCK], {init}, {TL_DTYPE[acc_dtype]})")

        def body(index: Index) -> None:
            v, mask = elem(index), index.mask_text()
            v = f"tl.where({v} != 0, 1.0, 0.0)" if logical else v
            w.emit(f"{acc} = {combine.format(acc=acc, v=f'tl.where({mask}, {v}, {init})' if mask else v)}")
        loop(body)
        out = w.fresh(f"{label}_")
        w.emit(f"{out} = {final.format(acc=acc)}")
        return out

    for node in anchors:
        op, st, x_dtype, stats = get_op(node.op), w.structure(node), types[node.operands[0]].dtype, {}

        def x(index: Index, node=node, st=st) -> str:  # the reduced body (a norm: its operand)
            return (Body(w, node, st, index).value(st.expr) if st.expr else w.value(node.operands[0], index)).text
        if op.template is Template.reduce:
            if st.combiner is None:
                raise Unsupported(f"{node.op} has no combiner")
            stats["acc"] = reduce_stage(None, st.combiner, x_dtype, x, propagate_nan=True)
            if st.combiner.finalize is not None:  # e.g. mean: the sum over the count
                acc = Value(stats["acc"], st.combiner.accumulator(x_dtype))
                stats["acc"] = w.assign(Body(w, None, None, w.row_index(node.type.shape), acc)
                                        .render(st.combiner.finalize).text, "fin_")
        if op.template is Template.variance or op.has(Trait.centered):
            stats["mean"] = mean = w.assign(f"{reduce_stage('sum', _SUM, x_dtype, x)} / {r}", "mean_")
            stats["m2"] = m2 = reduce_stage("m2", _SUM, x_dtype, lambda i: f"(({x(i)} - {mean}) * ({x(i)} - {mean}))")
        if op.template is Template.variance:
            dof = r - op.attr_values(node.attrs)["correction"]
            stats["acc"] = f"{m2} / {dof}" if dof > 0 else f"{m2} * float('inf')"
        if op.template is Template.norm:
            eps = float(op.attr_values(node.attrs)["eps"])
            if op.has(Trait.centered):
                stats["rstd"] = w.assign(f"tl.rsqrt({stats['m2']} / {r} + {eps!r})", "rstd_")
            else:
                ms = w.assign(f"{reduce_stage('ss', _SUM, x_dtype, lambda i: f'({x(i)} * {x(i)})')} / {r}", "ms_")
                stats["rstd"] = w.assign(f"tl.rsqrt({ms} + {eps!r})", "rstd_")
        if op.template is Template.softmax:
            stats["max"] = mx = reduce_stage("max", _MAX, x_dtype, x)
            stats["sum"] = reduce_stage("sumexp", _SUM, x_dtype, lambda i: f"tl.exp({x(i)} - {mx})")
        w.hooks[node.name] = _row_hook(w, node, stats)
    for out in kernel.outputs:
        if levels[out] == "row":
            index = w.row_index(types[out].shape)
            w.store(out, index, w.value(out, index))
    elems = [o for o in kernel.outputs if levels[o] == "elem"]
    if elems:
        def store_elems(index: Index) -> None:
            for o in elems:
                at = index if types[o].shape == plan.domain else index.reshaped(types[o].shape)
                w.store(o, at, w.value(o, at))
        loop(store_elems)
    return finish(w, "reduction", f"(triton.cdiv({rows}, {xblock}),)", {"XBLOCK": xblock, "RBLOCK": rblock},
                  8 if xblock * rblock >= 2048 else 4, 1)


def _row_hook(w: RowWriter, node: Node, stats: dict[str, str]) -> Callable[[Index], Value]:
    op, dtype = get_op(node.op), node.type.dtype

    def hook(index: Index) -> Value:
        if op.template in (Template.reduce, Template.variance):
            w.check_row(node, index)
            text = stats["acc"] if dtype.is_float or dtype is DType.i1 else f"({stats['acc']}).to({TL_DTYPE[dtype]})"
            return Value(w.assign(text), dtype)
        if index.dims() != w.elem_index().dims():
            raise Unfusable(f"%{node.name} is read at another point than its own")
        st = w.structure(node)
        x = w.value(node.operands[0], index).text
        if op.template is Template.softmax:
            text = (f"{x} - {stats['max']} - tl.log({stats['sum']})" if op.has(Trait.log_result)
                    else f"tl.exp({x} - {stats['max']}) / {stats['sum']}")
        elif op.has(Trait.centered):
            text = f"({x} - {stats['mean']}) * {stats['rstd']}"
        else:
            text = f"{x} * {stats['rstd']}"
        for i in range(1, len(node.operands)):  # weight, then bias
            p = w.operand(node, i, index, st).text
            text = f"({text}) * {p}" if i == 1 else f"({text}) + {p}"
        return Value(w.assign(text), dtype)
    return hook


def store_outputs(w: KernelWriter, kernel: Kernel, anchor: Node, out_index: Index) -> None:
    """Store every output of an anchored group from the anchor's output tile.

    An output of the anchor's element count is computed at the tile reshaped to its shape
    (a reshape of the accumulator is free); a permute / reshape chain ending in an output
    is pushed forward instead: the value is computed at the tile, the address permuted."""
    def move(name: str) -> Callable[[Index], Index] | None:
        node = w.nodes.get(name)
        if node is None or len(node.operands) != 1:
            return None
        return layout_move(w.structure(node), w.types[node.operands[0]].shape, node.type.shape)

    def forward(name: str):
        step = move(name)
        if step is not None:
            base = forward(w.nodes[name].operands[0])
            return base and (base[0], step(base[1]))
        return (name, out_index) if w.types[name].shape == anchor.type.shape else None

    for out in kernel.outputs:
        t = w.types[out]
        if t.numel != anchor.type.numel:
            raise Unfusable(f"output %{out} of a {anchor.op} group is not of the result's size")
        found = forward(out) if move(out) is not None else None
        if found is not None:
            src, idx = found
            w.store(out, idx, w.value(src, out_index))
        else:
            idx = out_index.reshaped(t.shape)
            w.store(out, idx, w.value(out, idx))


def anchor_hook(anchor: Node, out_index: Index) -> Callable[[Index], Value]:
    def hook(index: Index) -> Value:
        if index.dims() != out_index.dims():
            raise Unfusable(f"the result of %{anchor.name} is read at another tile than its own")
        return Value("acc", anchor.type.dtype)
    return hook


# -- matmul / linear with prologue and epilogue ------------------------------------------------
@dataclass
class DotPlan:
    """The loops of a contraction's domain: batch dims, the dims flattened into m, n, k."""

    batch: tuple[int, ...]
    m: tuple[int, ...]
    n: int
    k: int


def _dot_plan(node: Node, st: Structure) -> DotPlan:
    """A right operand read transposed (a [n, k] weight, as `linear`'s) has no batch dims:
    every leading dim is a row of m; else the dims before m are batch dims."""
    rank = node.type.rank
    if st.operand_maps[1].results[-1] == Dim(rank):
        return DotPlan((), tuple(range(rank - 1)), rank - 1, rank)
    nb = rank - 2
    return DotPlan(tuple(range(nb)), (nb,), nb + 1, nb + 2)


def _pow2_clamp(n: int, lo: int, hi: int) -> int:
    p = 1 << (max(1, int(n)).bit_length() - 1)  # floor to a power of two
    return max(lo, min(hi, p))


def _anchor(kernel: Kernel, template: Template) -> Node:
    named = kernel.group.attrs.get("anchor") if kernel.group is not None else None
    found = [n for n in kernel.nodes if template_of(n) is template]
    for n in found:
        if n.name == named:
            return n
    if len(found) != 1:
        raise Unfusable(f"{len(found)} {template.value} nodes in one kernel")
    return found[0]


def _dot_operand(w: KernelWriter, name: str, index: Index, dot_dtype: DType) -> str:
    """A dot operand tile: a raw load when it is read from memory, else computed (zero
    outside the tile's valid lanes, so padding never reaches the accumulator)."""
    t = w.types[name]
    if name not in w.nodes and name not in w.hooks and t.dtype is dot_dtype:
        address = index.linear()
        mask = index.mask_for(address)
        return w.assign(f"tl.load({w.ptr(name)} + {address}" + (f", mask={mask}, other=0.0)" if mask else ")"), "ld")
    v = w.value(name, index)
    text = v.text
    mask = index.mask_text()
    if mask and name in w.nodes:
        text = f"tl.where({mask}, {text}, 0.0)"
    return w.assign(f"{paren(text)}.to({TL_DTYPE[dot_dtype]})", "op")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_dtype(dtype: DType) -> DType:
    """The element type of `tl.dot` operands: the graph's, except bf16 under the CPU
    interpreter (its bf16 dot is wrong in Triton 3.9: the operands go in as f32 there)."""
    return DType.f32 if dtype is DType.bf16 and interpreting() else dtype


def _precision(dtype: DType) -> str:
    return ', input_precision="ieee"' if dtype in (DType.f32, DType.f64) else ""


def matmul_kernel(graph: Graph, kernel: Kernel, name: str, tiers: Sequence[str] = ()) -> KernelCode:
    anchor = _anchor(kernel, Template.gemm)
    w = KernelWriter(graph, kernel, name)
    st = w.structure(anchor)
    plan = _dot_plan(anchor, st)
    sizes = st.loop_sizes
    M, N, K = prod(sizes[i] for i in plan.m), sizes[plan.n], sizes[plan.k]
    B = prod(sizes[i] for i in plan.batch)
    dtype = anchor.type.dtype
    if dtype not in (DType.f32, DType.f16, DType.bf16) or 0 in (M, N, K, B):
        raise Unsupported(f"matmul in {dtype.value} or with an empty dim")
    half = dtype in (DType.f16, DType.bf16)
    tile = group_tile(kernel.group, len(sizes), tiers)  # the plan's tile for the fastest tier
    if tile is not None:
        bm, bn, bk = prod(tile[i] for i in plan.m), tile[plan.n], tile[plan.k]
    else:
        bm, bn, bk = (128, 128, 64) if half else (64, 64, 32)
    bm, bn, bk = _gemm_block(bm, M, 256), _gemm_block(bn, N, 256), _gemm_block(bk, K, 128)
    group_m = 8
    w.emit("pid = tl.program_id(0)")
    w.emit("bidx = tl.program_id(1)")
    w.emit(f"num_m = ({M} + BLOCK_M - 1) // BLOCK_M")  # constexpr: one source serves every tile
    w.emit(f"in_group = {group_m} * (({N} + BLOCK_N - 1) // BLOCK_N)")
    w.emit("first_m = (pid // in_group) * " + str(group_m))
    w.emit(f"group_size = tl.minimum(num_m - first_m, {group_m})")
    w.emit("pid_m = first_m + (pid % in_group) % group_size")
    w.emit("pid_n = (pid % in_group) // group_size")
    w.emit("offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]")
    w.emit("offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]")
    m_cond = (f"offs_m < {M}",) if M % bm else ()
    n_cond = (f"offs_n < {N}",) if N % bn else ()
    k_cond, kt_cond = ((f"offs_k < {K}",), (f"offs_kt < {K}",)) if K % bk else ((), ())

    def domain(k_var: str, conds: tuple[str, ...], tile_text: str) -> Index:
        factors = []
        if plan.batch:
            factors.append(Factor("bidx", plan.batch[0], plan.batch[-1] + 1))
        if plan.m:  # a linear of a 1-d input has no m dim: its one row is offs_m == 0
            factors.append(Factor("offs_m", plan.m[0], plan.m[-1] + 1))
        factors.append(Factor("offs_n", plan.n, plan.n + 1))
        factors.append(Factor(k_var, plan.k, plan.k + 1))
        return Index(tuple(sizes), tuple(factors), conds, tile_text)

    dom_a = domain("offs_k", m_cond + k_cond, "[BLOCK_M, BLOCK_K]")
    dom_b = domain("offs_kt", kt_cond + n_cond, "[BLOCK_K, BLOCK_N]")
    dom_out = domain("0", m_cond + n_cond, "[BLOCK_M, BLOCK_N]")
    out_index = dom_out.through(st.result_map, anchor.type.shape)
    a_name, b_name = anchor.operands[0], anchor.operands[1]
    a_index = dom_a.through(st.operand_maps[0], w.types[a_name].shape)
    b_index = dom_b.through(st.operand_maps[1], w.types[b_name].shape)
    tma = _tma_views(w, anchor, st, plan, dtype)
    if tma:  # descriptors made once per program, used where USE_TMA (a candidate launch) is set
        w.emit("if USE_TMA:")
        for name, view in tma.items():
            w.emit(f"    {view.desc} = tl.make_tensor_descriptor({w.ptr(name)}, shape={list(view.shape)}, "
                   f"strides=[{view.shape[1]}, 1], block_shape={view.block})")
    w.emit("acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)")
    w.emit(f"for k0 in range(0, {K}, BLOCK_K):")
    w.depth += 1
    w.push()
    w.emit("offs_k = (k0 + tl.arange(0, BLOCK_K))[None, :]")
    w.emit("offs_kt = (k0 + tl.arange(0, BLOCK_K))[:, None]")
    a = _tile_operand(w, a_name, a_index, dot_dtype(dtype), tma.get(a_name))
    b = _tile_operand(w, b_name, b_index, dot_dtype(dtype), tma.get(b_name))
    w.emit(f"acc += tl.dot({a}, {b}{_precision(dot_dtype(dtype))})")
    w.pop()
    w.depth -= 1
    if len(anchor.operands) == 3:
        bias = w.operand(anchor, 2, dom_out, st).text
        w.emit(f"acc = acc + {bias}")

    w.hooks[anchor.name] = anchor_hook(anchor, out_index)
    store_outputs(w, kernel, anchor, out_index)
    launches = _gemm_launches((M, N, K, B), (bm, bn, bk), half, bool(tma))
    code = finish(w, "matmul", repr(launches[0].grid), dict(launches[0].constexprs), launches[0].num_warps,
                  launches[0].num_stages)
    return dataclasses.replace(code, launches=tuple(launches[1:]))


@dataclass(frozen=True)
class TmaView:
    """A GEMM operand read as a 2-D tensor descriptor (Hopper's bulk tensor copies): its
    row-major [rows, cols] view, the block one load brings, where the block starts, and
    whether the block is the transpose of the dot's operand (a linear's [N, K] weight)."""

    desc: str
    shape: tuple[int, int]
    block: str
    at: str
    transposed: bool


def _tma_views(w: KernelWriter, anchor: Node, st: Structure, plan: DotPlan, dtype: DType) -> dict[str, TmaView]:
    """The dot operands a descriptor can load: half precision, read from memory as they are
    (no computed prologue), each axis one loop of the domain in order (no broadcast, no
    batch), rows of whole 16-byte multiples (the copy engine's alignment)."""
    if dtype not in (DType.f16, DType.bf16) or plan.batch or not plan.m or interpreting() and dtype is DType.bf16:
        return {}
    sizes = st.loop_sizes
    m = prod(sizes[i] for i in plan.m)
    wanted = {0: (tuple(plan.m) + (plan.k,), (m, sizes[plan.k]), "[BLOCK_M, BLOCK_K]", "[pid_m * BLOCK_M, k0]",
                  False),
              1: ((plan.n, plan.k), (sizes[plan.n], sizes[plan.k]), "[BLOCK_N, BLOCK_K]", "[pid_n * BLOCK_N, k0]",
                  True) if st.operand_maps[1].results[-1] == Dim(plan.k)
              else ((plan.k, plan.n), (sizes[plan.k], sizes[plan.n]), "[BLOCK_K, BLOCK_N]", "[k0, pid_n * BLOCK_N]",
                    False)}
    views = {}
    for i, (dims, shape, block, at, transposed) in wanted.items():
        name = anchor.operands[i]
        t = w.types[name]
        if name in w.nodes or name in w.hooks or t.dtype is not dtype:
            continue
        if tuple(st.operand_maps[i].results) != tuple(Dim(d) for d in dims) \
                or tuple(t.shape) != tuple(sizes[d] for d in dims) or (shape[1] * dtype.itemsize) % 16:
            continue
        views[name] = TmaView(f"desc{i}", shape, block, at, transposed)
    return views


def _tile_operand(w: KernelWriter, name: str, index: Index, dtype: DType, view: TmaView | None) -> str:
    """A dot operand tile: through its descriptor where USE_TMA is set and it has one (the
    copy engine fills the block's out-of-range part with zeros), else `_dot_operand`."""
    if view is None:
        return _dot_operand(w, name, index, dtype)
    var = w.fresh("ld")
    w.emit("if USE_TMA:")
    w.emit(f"    {var} = {view.desc}.load({view.at})" + (".T" if view.transposed else ""))
    w.emit("else:")
    w.depth += 1
    w.emit(f"{var} = {_dot_operand(w, name, index, dtype)}")
    w.depth -= 1
    return var


GEMM_TILES = ((128, 256, 64), (128, 128, 64))
"""Other tiles a half-precision GEMM kernel is measured with at its first launch (`choice`).
On an H200 (torch 2.11, Triton 3.6) a 128x256x64 tile with 8 warps and 3 stages ran fastest
of ten on seven decoder GEMM shapes (0.78-0.90x cuBLAS), and with a norm computed into the
A operand it lost 10% where 128x128 lost 50%; the tile pass's wave count prefers 128x128 on
some of them. Which is faster with a given epilogue is measured, not guessed."""


def _gemm_block(block: int, dim: int, most: int) -> int:
    return _pow2_clamp(min(block, next_pow2(dim)), 16, most)


def _gemm_launch(dims: tuple[int, int, int, int], tile: tuple[int, int, int], tma: bool | None = None) -> Launch:
    (M, N, _, B), (bm, bn, bk) = dims, tile
    flag = () if tma is None else (("USE_TMA", int(tma)),)
    return Launch((-(-M // bm) * -(-N // bn), B), (("BLOCK_M", bm), ("BLOCK_N", bn), ("BLOCK_K", bk)) + flag,
                  8 if bm * bn >= 128 * 128 else 4, 3)


def _gemm_launches(dims: tuple[int, int, int, int], tile: tuple[int, int, int], half: bool,
                   tma: bool = False) -> list[Launch]:
    """The plan's launch first, then the other `GEMM_TILES` the source serves unchanged: a
    dim the plan's block divides was generated without a bounds mask, so a candidate must
    divide it too. A kernel with descriptors (`tma`) takes `USE_TMA` (0 at the plan's
    launch) and is also measured at its widest tile with them."""
    M, N, K, _ = dims
    flag = False if tma else None
    launches = [_gemm_launch(dims, tile, flag)]
    if not half:
        return launches
    for bm, bn, bk in GEMM_TILES:
        cand = (_gemm_block(bm, M, 256), _gemm_block(bn, N, 256), _gemm_block(bk, K, 128))
        if any(d % t0 == 0 and d % t for d, t0, t in zip((M, N, K), tile, cand)):
            continue
        launch = _gemm_launch(dims, cand, flag)
        if launch not in launches:
            launches.append(launch)
    if tma:
        blocks = [tuple(dict(u.constexprs)[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")) for u in launches]
        launches.append(_gemm_launch(dims, max(blocks, key=lambda t: (t[1], t[0])), True))
    return launches


# -- flash attention ------------------------------------------------------------------------------
def attention_kernel(graph: Graph, kernel: Kernel, name: str, tiers: Sequence[str] = ()) -> KernelCode:
    anchor = _anchor(kernel, Template.attention)
    w = KernelWriter(graph, kernel, name)
    st = w.structure(anchor)
    q_t, k_t = w.types[anchor.operands[0]], w.types[anchor.operands[1]]
    nb = q_t.rank - 2
    sizes = st.loop_sizes
    lq, e, lk, d = sizes[nb], sizes[nb + 1], sizes[nb + 2], sizes[nb + 3]
    B = prod(sizes[:nb])
    dtype = anchor.type.dtype
    if dtype not in (DType.f32, DType.f16, DType.bf16) or 0 in (lq, lk, d, e, B):
        raise Unsupported(f"attention in {dtype.value} or with an empty dim")
    half = dtype is not DType.f32
    bd, be = max(16, next_pow2(d)), max(16, next_pow2(e))
    bm = _pow2_clamp(min(128 if half else 64, next_pow2(lq)), 16, 128)
    bn = _pow2_clamp(min(64 if half else 32, next_pow2(lk)), 16, 128)
    causal = bool(anchor.attrs.get("causal", False))
    scale = float(anchor.attrs["scale"]) * 1.4426950408889634  # exp2 domain
    off = lk - lq
    w.emit("pid_m = tl.program_id(0)")
    w.emit("bidx = tl.program_id(1)")
    w.emit("offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]")
    w.emit("offs_d = tl.arange(0, BLOCK_D)[None, :]")
    w.emit("offs_dt = tl.arange(0, BLOCK_D)[:, None]")
    w.emit("offs_e = tl.arange(0, BLOCK_E)[None, :]")
    m_cond = (f"offs_m < {lq}",) if lq % bm else ()
    d_cond = (f"offs_d < {d}",) if bd != d else ()
    dt_cond = (f"offs_dt < {d}",) if bd != d else ()
    e_cond = (f"offs_e < {e}",) if be != e else ()

    def domain(i: str, ee: str, j: str, dd: str, conds: tuple[str, ...], tile_text: str) -> Index:
        factors = [Factor("bidx", 0, nb)] if nb else []
        factors += [Factor(i, nb, nb + 1), Factor(ee, nb + 1, nb + 2), Factor(j, nb + 2, nb + 3),
                    Factor(dd, nb + 3, nb + 4)]
        return Index(tuple(sizes), tuple(factors), conds, tile_text)

    q_name, k_name, v_name = anchor.operands[:3]
    q_index = domain("offs_m", "0", "0", "offs_d", m_cond + d_cond, "[BLOCK_M, BLOCK_D]")
    ddt = dot_dtype(dtype)
    q = _dot_operand(w, q_name, q_index.through(st.operand_maps[0], q_t.shape), ddt)
    out_dom = domain("offs_m", "offs_e", "0", "0", m_cond + e_cond, "[BLOCK_M, BLOCK_E]")
    out_index = out_dom.through(st.result_map, anchor.type.shape)
    w.emit('m_i = tl.full([BLOCK_M, 1], -float("inf"), tl.float32)')
    w.emit("l_i = tl.zeros([BLOCK_M, 1], tl.float32)")
    w.emit("acc = tl.zeros([BLOCK_M, BLOCK_E], tl.float32)")
    if causal:
        w.emit(f"hi = tl.minimum({lk}, tl.maximum(0, (pid_m + 1) * BLOCK_M + {off}))")
        w.emit(f"full_hi = tl.minimum(hi, tl.maximum(0, pid_m * BLOCK_M + {off + 1})) // BLOCK_N * BLOCK_N")
    else:
        w.emit(f"hi = {lk}")
        w.emit(f"full_hi = {lk // bn * bn}")
    mask_op = anchor.operands[3] if len(anchor.operands) == 4 else None

    def body(masked: bool) -> None:
        w.push()
        w.emit("offs_j = (start_n + tl.arange(0, BLOCK_N))[None, :]")
        w.emit("offs_jt = (start_n + tl.arange(0, BLOCK_N))[:, None]")
        j_cond = (f"offs_j < {lk}",) if masked else ()
        jt_cond = (f"offs_jt < {lk}",) if masked else ()
        k_index = domain("0", "0", "offs_j", "offs_dt", j_cond + dt_cond, "[BLOCK_D, BLOCK_N]")
        v_index = domain("0", "offs_e", "offs_jt", "0", jt_cond + e_cond, "[BLOCK_N, BLOCK_E]")
        k = _dot_operand(w, k_name, k_index.through(st.operand_maps[1], k_t.shape), ddt)
        w.emit(f"s = tl.dot({q}, {k}{_precision(ddt)}) * {scale!r}")
        valid = list(j_cond)
        if masked and causal:
            valid.append(f"offs_j <= offs_m + {off}")
        if valid:
            w.emit(f'''s = tl.where({and_masks(valid)}, s, -float("inf"))''')
        if mask_op is not None:
            s_index = domain("offs_m", "0", "offs_j", "0", m_cond + j_cond, "[BLOCK_M, BLOCK_N]")
            mv = w.value(mask_op, s_index.through(st.operand_maps[3], w.types[mask_op].shape)).text
            if w.types[mask_op].dtype is DType.i1:
                w.emit(f'''s = tl.where({mv}, s, -float("inf"))''')
            else:
                w.emit(f"s = s + {mv} * 1.4426950408889634")
        w.emit("m_new = tl.maximum(m_i, tl.max(s, 1)[:, None])")
        if masked or mask_op is not None:
            w.emit('m_new = tl.where(m_new == -float("inf"), 0.0, m_new)')
        w.emit("p = tl.exp2(s - m_new)")
        w.emit("alpha = tl.exp2(m_i - m_new)")
        w.emit("l_i = l_i * alpha + tl.sum(p, 1)[:, None]")
        v = _dot_operand(w, v_name, v_index.through(st.operand_maps[2], w.types[v_name].shape), ddt)
        w.emit(f"acc = acc * alpha + tl.dot(p.to({TL_DTYPE[ddt]}), {v}{_precision(ddt)})")
        w.emit("m_i = m_new")
        w.pop()

    w.emit("for start_n in range(0, full_hi, BLOCK_N):")
    w.depth += 1
    body(False)
    w.depth -= 1
    w.emit("for start_n in range(full_hi, hi, BLOCK_N):")
    w.depth += 1
    body(True)
    w.depth -= 1
    w.emit("acc = tl.where(l_i > 0, acc / l_i, 0.0)  # every key masked: 0, as SDPA gives")

    w.hooks[anchor.name] = anchor_hook(anchor, out_index)
    store_outputs(w, kernel, anchor, out_index)
    return finish(w, "attention", f"(triton.cdiv({lq}, {bm}), {B})",
                  {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd, "BLOCK_E": be}, 8 if half and bm >= 128 else 4, 3)
