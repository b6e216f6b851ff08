"""The host side: one generated Python module per graph, with its kernels and a `run`.

`generate(graph)` picks a template for every kernel of `codesign.ir.kernels(graph)`
(attention, matmul, row reduction, pointwise), splits a group that no template can
express into smaller kernels, and falls back to an *extern* — a plain torch call in the
wrapper — for ops without a Triton body (conv, moe, pooling, ...); the report names every
extern and why. `run(inputs, state, externs)` allocates each intermediate with
`torch.empty` on the inputs' device, launches the kernels in dependency order, frees a
buffer after its last use, and returns the graph's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from codesign.codegen.triton.kernels import (ROW_TEMPLATES, KernelCode, Unfusable, attention_kernel, ident,
                                             is_anchor, is_view, matmul_kernel, pointwise_kernel, row_kernel,
                                             template_of)
from codesign.codegen.triton.overrides import Unsupported
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel, kernels
from codesign.ir.ops import get_op
from codesign.ir.ops.registry import OpKind, Template, Trait

# why an op without a Triton template runs as an extern (a torch call), for the report
EXTERN_REASONS = {
    Template.conv: "convolution runs as an extern call to torch.nn.functional.conv{n}d (cuDNN)",
    Template.moe: "moe runs as an extern call to the torch reference (routing is data-dependent)",
}


def extern_reason(node: Node) -> str:
    t = get_op(node.op).template
    return EXTERN_REASONS.get(t, f"{node.op} runs as an extern torch call (no Triton {t.value} template)").replace(
        "{n}", str(max(1, node.type.rank - 2)))


@dataclass
class Extern:
    """A node run by torch in the wrapper."""

    node: Node
    reason: str


@dataclass
class View:
    """A lone reshape: a view of its operand's buffer, no kernel."""

    node: Node


@dataclass
class Program:
    graph: Graph
    units: list = field(default_factory=list)  # KernelCode | Extern | View, in order
    notes: list[str] = field(default_factory=list)

    @property
    def kernels(self) -> list[KernelCode]:
        return [u for u in self.units if isinstance(u, KernelCode)]

    @property
    def externs(self) -> list[Extern]:
        return [u for u in self.units if isinstance(u, Extern)]


def _template(kernel: Kernel):
    templates = {template_of(n) for n in kernel.nodes}
    if Template.attention in templates:
        return attention_kernel
    if Template.gemm in templates:
        return matmul_kernel
    if templates & set(ROW_TEMPLATES):
        return row_kernel
    return pointwise_kernel


def _lone(graph: Graph, node: Node, users: dict) -> Kernel:
    outputs = (node.name,) if users.get(node.name) or node.name in graph.outputs else ()
    return Kernel(f"%{node.name}", None, (node,), tuple(dict.fromkeys(node.operands)), outputs)


def kernel_name(kernel: Kernel) -> str:
    """What the kernel fuses, anchor first: `linear_gelu`, `add_layer_norm`, `attention`."""
    ops: list[str] = []
    for n in sorted(kernel.nodes, key=lambda n: not is_anchor(n)):
        if n.op not in ops and (not get_op(n.op).has(Trait.quiet) or len(kernel.nodes) == 1):
            ops.append(n.op)
    if not ops:
        ops = [kernel.nodes[0].op]
    return "_".join(ops[:4]) + ("_etc" if len(ops) > 4 else "")


class Namer:
    def __init__(self):
        self.used: dict[str, int] = {}

    def __call__(self, base: str) -> str:
        base = ident(base)
        n = self.used.get(base, 0)
        self.used[base] = n + 1
        return f"{base}_kernel" if n == 0 else f"{base}_kernel_{n}"


def generate(graph: Graph) -> Program:
    """Kernels, views and externs for `graph`, in an order that respects dependences."""
    program = Program(graph)
    namer = Namer()

    def lower(kernel: Kernel) -> None:
        if not kernel.outputs:
            return
        nodes = kernel.nodes
        extern = [n for n in nodes if template_of(n) is None]
        if extern and len(nodes) == 1:
            program.units.append(Extern(nodes[0], extern_reason(nodes[0])))
            return
        if len(nodes) == 1 and is_view(nodes[0], graph.types()):
            program.units.append(View(nodes[0]))
            return
        try:
            if extern:
                raise Unfusable(f"{extern[0].op} has no Triton template")
            program.units.append(_template(kernel)(graph, kernel, namer(kernel_name(kernel))))
        except (Unfusable, Unsupported) as why:
            if len(nodes) == 1:
                program.units.append(Extern(nodes[0], f"{nodes[0].op}: {why}"))
                return
            program.notes.append(f"kernel {kernel.key} ({kernel_name(kernel)}) was split: {why}")
            for sub in _regroup_kernel(graph, kernel):
                lower(sub)

    for k in kernels(refine_groups(graph, program.notes)):
        lower(k)
    drop_unread_units(program)
    return program


def drop_unread_units(program: Program) -> None:
    """Remove kernels whose results nobody reads: a scalar constant's kernel once every
    consumer inlined the value as a literal (`KernelWriter.value` does), and what that frees."""
    outputs = set(program.graph.outputs)
    while True:
        read = {v for u in program.units for v in
                ([a for a in u.args if a not in u.outputs] if isinstance(u, KernelCode) else u.node.operands)}
        dead = [u for u in program.units if isinstance(u, KernelCode)
                and not any(o in read or o in outputs for o in u.outputs)]
        if not dead:
            return
        program.units = [u for u in program.units if not any(u is d for d in dead)]


def _regroup_kernel(graph: Graph, kernel: Kernel) -> list[Kernel]:
    """A failed group's nodes regrouped one anchor per kernel (`fuse_simple`), or lone
    nodes when that gives the same group back."""
    from codesign.codegen.triton.fuse import fuse_simple
    members = {n.name for n in kernel.nodes}
    users = graph.users()
    lone = [_lone(graph, n, users) for n in kernel.nodes]
    if kernel.group is None:
        return lone
    nodes = [n.with_(group=None) if n.name in members else n.with_(group=None) for n in graph.nodes]
    sub = fuse_simple(Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs))
    mine = {n.name: n.group for n in sub.nodes if n.name in members}
    parts: dict[object, list[Node]] = {}
    for n in kernel.nodes:
        parts.setdefault(mine[n.name] if mine[n.name] is not None else ("lone", n.name), []).append(n)
    if any(len(p) == len(kernel.nodes) for p in parts.values()):
        return lone
    order = [k for k in kernels(sub) if any(n.name in members for n in k.nodes)]
    out = []
    for k in order:
        part = [n for n in k.nodes if n.name in members]
        if not part:
            continue
        inside = {n.name for n in part}
        inputs = tuple(dict.fromkeys(o for n in part for o in n.operands if o not in inside))
        outputs = tuple(n.name for n in part if n.name in graph.outputs
                        or any(u.name not in inside for u in users.get(n.name, [])))
        group = sub.group_map().get(part[0].group) if len(part) > 1 else None
        out.append(Kernel(k.key + "'", group if len(part) > 1 else None, tuple(part), inputs, outputs))
    return out


def refine_groups(graph: Graph, notes: list[str]) -> Graph:
    """Groups with several heavy anchors (a whole decoder layer, as a dataflow target
    fuses it) are more than one Triton kernel: dissolve them and regroup their nodes
    around one anchor each (`fuse_simple`)."""
    from codesign.codegen.triton.fuse import fuse_simple
    heavy: dict[int, int] = {}
    for n in graph.nodes:
        if n.group is not None and is_anchor(n):
            heavy[n.group] = heavy.get(n.group, 0) + 1
    big = {g for g, count in heavy.items() if count > 1}
    if big:
        notes.append(f"groups {sorted(big)} hold several anchors each; regrouped one anchor per kernel")
        nodes = [n.with_(group=None) if n.group in big else n for n in graph.nodes]
        dissolved = Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs,
                          tuple(g for g in graph.groups if g.id not in big))
        graph = fuse_simple(dissolved, keep_groups=True)
    return sink_layout_ops(graph)


def sink_layout_ops(graph: Graph) -> Graph:
    """Move a group's trailing layout ops (slice, reshape, permute of its result) into the one
    group that reads them. A layout op is an index map: in the consumer it folds into the
    loads for free, while in the producer it would be an extra output of another shape
    (the q/k/v split after a fused QKV projection) that the matmul template cannot store."""
    users = graph.users()
    group_of = {n.name: n.group for n in graph.nodes}
    outputs = set(graph.outputs)
    changed = True
    while changed:
        changed = False
        for n in reversed(graph.nodes):
            g = group_of[n.name]
            if g is None or n.name in outputs or get_op(n.op).kind is not OpKind.layout:
                continue
            readers = {group_of[u.name] for u in users.get(n.name, [])}
            if len(readers) == 1 and None not in readers and readers != {g}:
                group_of[n.name] = readers.pop()
                changed = True
    if all(group_of[n.name] == n.group for n in graph.nodes):
        return graph
    nodes = tuple(n.with_(group=group_of[n.name]) for n in graph.nodes)
    return Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.groups)


# -- the wrapper's source ------------------------------------------------------------------------
HEADER = '''"""Generated by codesign (Triton backend) for graph @{name}. Do not edit: regenerated
from the IR; cached by a hash of the IR, target and versions."""
import torch
import triton
import triton.language as tl

'''


def _torch_dtype(node_type) -> str:
    return f"torch.{str(node_type.dtype.torch).split('.')[-1]}"


def _conv_text(node: Node, args: Sequence[str]) -> str:
    n = node.type.rank - 2
    bias = args[2] if len(args) > 2 else "None"
    a = node.attrs
    return (f"torch.nn.functional.conv{n}d({args[0]}, {args[1]}, {bias}, stride={tuple(a['stride'])}, "
            f"padding={tuple(a['padding'])}, dilation={tuple(a['dilation'])}, groups={a.get('groups', 1)})")


def wrapper_source(program: Program) -> str:
    graph = program.graph
    lines = [HEADER.format(name=graph.name)]
    for k in program.kernels:
        lines.append(f"# {k.kind} kernel fusing: {', '.join('%' + n for n in k.nodes)}")
        lines.append(k.source)
        lines.append("")
    names: dict[str, str] = {}
    taken: set[str] = set()

    def var(value: str, prefix: str) -> str:
        if value not in names:
            base = f"{prefix}{ident(value)}"
            text, n = base, 1
            while text in taken:
                text, n = f"{base}_{n}", n + 1
            taken.add(text)
            names[value] = text
        return names[value]

    body = ["def run(inputs, state, externs):",
            '    """Runs the graph: `inputs` positionally, `state` by input name, `externs` by node."""']
    for i, inp in enumerate(graph.runtime_inputs):
        body.append(f"    {var(inp.name, 'in_')} = inputs[{i}]")
    for inp in graph.state_inputs:
        body.append(f"    {var(inp.name, 'w_')} = state[{inp.name!r}]")
    first = graph.runtime_inputs[0].name if graph.runtime_inputs else (
        graph.state_inputs[0].name if graph.state_inputs else None)
    body.append(f"    device = {var(first, 'in_')}.device" if first else "    device = torch.device('cuda')")
    # last use of every buffer, to free it early
    reads: dict[str, int] = {}
    for i, u in enumerate(program.units):
        used = u.args if isinstance(u, KernelCode) else u.node.operands
        for v in used:
            reads[v] = i
    keep = set(graph.outputs) | {i.name for i in graph.inputs}
    types = graph.types()
    for i, u in enumerate(program.units):
        if isinstance(u, KernelCode):
            for o in u.outputs:
                t = types[o]
                body.append(f"    {var(o, 'buf_')} = torch.empty({tuple(t.shape)}, device=device, "
                            f"dtype={_torch_dtype(t)})")
            args = ", ".join(var(a, "buf_") for a in u.args)
            consts = ", ".join(f"{k}={v}" for k, v in u.constexprs.items())
            body.append(f"    {u.name}[{u.grid}]({args}, {consts}, num_warps={u.num_warps}, "
                        f"num_stages={u.num_stages})")
        elif isinstance(u, View):
            src = u.node.operands[0]
            body.append(f"    {var(u.node.name, 'buf_')} = {var(src, 'buf_')}.view({tuple(u.node.type.shape)})")
        else:
            args = [var(o, "buf_") for o in u.node.operands]
            if get_op(u.node.op).template is Template.conv:
                call = _conv_text(u.node, args)
            else:
                call = f"externs[{u.node.name!r}]({', '.join(args)})"
            body.append(f"    # extern: {u.reason}")
            body.append(f"    {var(u.node.name, 'buf_')} = {call}")
        dead = [v for v, last in reads.items() if last == i and v not in keep and v in names]
        if dead:
            body.append(f"    del {', '.join(names[v] for v in dead)}")
    outs = ", ".join(var(o, "buf_") for o in graph.outputs)
    body.append(f"    return ({outs},)")
    return "\n".join(lines) + "\n".join(body) + "\n"
