"""The host side: one generated Python module per graph, with its kernels and a `run`.

`generate(graph)` picks a template for every kernel of `codesign.ir.kernels(graph)`
(attention, matmul, row reduction, pointwise) and falls back to an *extern* — a plain torch
call in the wrapper — for a lone op without a Triton body (conv, moe, pooling, ...); the
report names every extern and why. Groups run as the IR says: the backend-specific
regrouping (one heavy anchor per kernel, trailing layout ops sunk into their reader,
groups no template expresses split) is the `partition{backend=triton}` pass
(`codesign/passes/partition.py`, asking `kernel_problem` here), run before code generation;
a group that still cannot run as one kernel is a `CodegenError` naming it. `run(inputs, state, externs)` allocates each intermediate with
`torch.empty` on the inputs' device, launches the kernels in dependency order, frees a
buffer after its last use, and returns the graph's outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from codesign.codegen import CodegenError
from codesign.codegen.lowering import is_view
from codesign.codegen.triton.kernels import (ROW_TEMPLATES, KernelCode, Unfusable, attention_kernel, ident,
                                             is_anchor, matmul_kernel, pointwise_kernel, row_kernel, template_of)
from codesign.codegen.triton.overrides import Unsupported
from codesign.codegen.triton.safety import SLOTS, index_checks
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel, kernels, statistics_of_same_rows
from codesign.ir.ops import get_op
from codesign.ir.ops.registry import Template, Trait

CONV_NHWC = get_op("conv_nhwc")

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


def kernel_problem(graph: Graph, kernel: Kernel, tiers: Sequence[str] = ()) -> str | None:
    """Why a kernel of several nodes cannot run as one Triton kernel, or None: a node without
    a template (an extern), more than one heavy anchor, or a template that cannot express it
    (`Unfusable` / `Unsupported`, found by generating it). The `partition` pass asks this
    (`TritonBackend.partition_rules`) and splits such groups; `generate` refuses them."""
    why = _shape_problem(graph, kernel)
    if why is None:
        try:
            _template(kernel)(graph, kernel, "probe", tiers=tiers)
        except (Unfusable, Unsupported) as exc:
            why = str(exc)
    return why


def _shape_problem(graph: Graph, kernel: Kernel) -> str | None:
    extern = [n for n in kernel.nodes if template_of(n) is None]
    if extern:
        return f"{extern[0].op} has no Triton template"
    anchors = [n for n in kernel.nodes if is_anchor(n)]
    if len(anchors) > 1 and not statistics_of_same_rows(anchors, graph.types()):
        return (f"{len(anchors)} heavy anchors ({', '.join('%' + n.name for n in anchors[:4])}); "
                "a Triton kernel is built around one")
    return None


def generate(graph: Graph, tiers: Sequence[str] = (), check_indices: bool = True) -> Program:
    """Kernels, views and externs for `graph`, in an order that respects dependences: one
    kernel per group, as the IR says (`tiers`: the target's tier order, fastest first).
    `check_indices=False`: gathered coordinates are not checked (`safety`).

    A group that cannot run as one kernel raises `CodegenError` naming it; the
    `partition{backend=triton}` pass splits such groups (and records why) beforehand."""
    with index_checks(check_indices):
        return _generate(graph, tiers)


def _generate(graph: Graph, tiers: Sequence[str]) -> Program:
    program = Program(graph)
    namer = Namer()
    for kernel in kernels(graph):
        if not kernel.outputs:
            continue
        nodes = kernel.nodes
        if len(nodes) == 1:
            node = nodes[0]
            if kernel.group is not None and kernel.group.plan.uses_library:
                program.units.append(Extern(node, f"{node.op} runs in the vendor library (cuBLAS through torch): "
                                                  "the calibrated cost model predicts it faster (partition)"))
            elif template_of(node) is None:
                program.units.append(Extern(node, extern_reason(node)))
            elif is_view(node, graph.types()):
                program.units.append(View(node))
            else:
                try:
                    program.units.append(_template(kernel)(graph, kernel, namer(kernel_name(kernel)), tiers=tiers))
                except (Unfusable, Unsupported) as why:  # one node: its torch reference runs it
                    program.units.append(Extern(node, f"{node.op}: {why}"))
            continue
        why = _shape_problem(graph, kernel)
        if why is None:
            try:
                program.units.append(_template(kernel)(graph, kernel, namer(kernel_name(kernel)), tiers=tiers))
                continue
            except (Unfusable, Unsupported) as exc:
                why = str(exc)
        members = ", ".join("%" + n.name for n in nodes[:6]) + (", ..." if len(nodes) > 6 else "")
        raise CodegenError(f"group {kernel.group.id} ({kernel_name(kernel)}: {members}) cannot run as one "
                           f"Triton kernel: {why}; the partition{{backend=triton}} pass splits it")
    drop_unread_units(program)
    return program


def drop_unread_units(program: Program) -> None:
    """Remove kernels whose results nobody reads: a scalar constant's kernel once every
    consumer inlined the value as a literal (`KernelWriter.value` does), and what that frees.
    Not a regrouping: the constant's node is where the IR puts it, and computed in place by
    each kernel that reads it (the report's notes name it)."""
    outputs = set(program.graph.outputs)
    while True:
        read = {v for u in program.units for v in
                ([a for a in u.args if a not in u.outputs] if isinstance(u, KernelCode) else u.node.operands)}
        dead = [u for u in program.units if isinstance(u, KernelCode)
                and not any(o in read or o in outputs for o in u.outputs)]
        if not dead:
            return
        program.notes += [f"{', '.join('%' + o for o in d.outputs)}: inlined by every reader, no kernel of its own"
                          for d in dead]
        program.units = [u for u in program.units if not any(u is d for d in dead)]


# -- the wrapper's source ------------------------------------------------------------------------
HEADER = '''"""Generated by codesign (Triton backend) for graph @{name}. Do not edit: regenerated
from the IR; cached by a hash of the IR, target and versions."""
import torch
import triton
import triton.language as tl
from codesign.codegen.checks import Site, check_buffer

'''


def _torch_dtype(node_type) -> str:
    return f"torch.{str(node_type.dtype.torch).split('.')[-1]}"


MEMORY_FORMATS = {2: "torch.channels_last", 3: "torch.channels_last_3d"}
"""torch's channels-last memory format for a conv of that many spatial dims."""


def _conv_text(node: Node, args: Sequence[str]) -> str:
    """The torch call of a conv extern. A `conv_nhwc` hands cuDNN its contiguous NHWC input
    as a channels-last view (`permute`, no copy) and its weight channels-last (stored so once
    per weight binding when only convs read it: `nhwc_weights`); cuDNN then returns
    channels-last storage, whose permute back is the contiguous NHWC result (`.contiguous()`
    copies only where a backend did not keep the format)."""
    n = node.type.rank - 2
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else "None"
    nhwc = get_op(node.op) is CONV_NHWC
    if nhwc:
        x = f"{x}.permute{(0, n + 1) + tuple(range(1, n + 1))}"
        w = f"{w}.contiguous(memory_format={MEMORY_FORMATS[n]})" if n in MEMORY_FORMATS else w
    a = node.attrs
    call = (f"torch.nn.functional.conv{n}d({x}, {w}, {bias}, stride={tuple(a['stride'])}, "
            f"padding={tuple(a['padding'])}, dilation={tuple(a['dilation'])}, groups={a.get('groups', 1)})")
    return f"{call}.permute{(0,) + tuple(range(2, n + 2)) + (1,)}.contiguous()" if nhwc else call


def nhwc_weights(graph: Graph) -> frozenset[str]:
    """State inputs read only as the weight of a `conv_nhwc` with a channels-last memory
    format: the module stores them so when it takes the weights, not at every call."""
    readers: dict[str, list[tuple[Node, int]]] = {}
    for node in graph.nodes:
        for i, o in enumerate(node.operands):
            readers.setdefault(o, []).append((node, i))
    return frozenset(
        s.name for s in graph.state_inputs
        if s.name not in graph.outputs and readers.get(s.name)
        and all(get_op(n.op) is CONV_NHWC and i == 1 and n.type.rank - 2 in MEMORY_FORMATS
                for n, i in readers[s.name]))


def canonical_source(kernel: KernelCode) -> str:
    """`kernel`'s source with what differs between layers taken out — its name, its pointer
    parameters (named after IR values) renamed by position, comments dropped — so two kernels
    with equal canonical sources compute the same function of their arguments."""
    head = re.search(r"def (\w+)\((.*?)\):", kernel.source, re.S)
    params = [p.split(":")[0].strip() for p in head.group(2).split(",") if p.strip()] if head else []
    rename = {kernel.name: "KERNEL", **{p: f"arg{i}" for i, p in enumerate(params) if p not in kernel.constexprs}}
    word = re.compile(r"\b(" + "|".join(map(re.escape, sorted(rename, key=len, reverse=True))) + r")\b")
    return word.sub(lambda m: rename[m.group(1)], re.sub(r"#[^\n]*", "", kernel.source))


def shared_kernels(program: Program) -> dict[str, str]:
    """Kernel name -> the name of the first kernel with the same canonical source (itself when
    first): the wrapper defines each distinct kernel once, so Triton compiles a decoder
    layer's kernels once for all layers rather than once per layer."""
    first: dict[str, str] = {}
    return {k.name: first.setdefault(canonical_source(k), k.name) for k in program.kernels}


def wrapper_source(program: Program) -> str:
    """The wrapper module: each distinct kernel once (the others bound to it by name),
    `launch` (every kernel, extern and view; returns the outputs and the check buffer),
    `CHECKS` (what each slot of that buffer reports) and `run` (launch, then the checks)."""
    graph = program.graph
    lines = [HEADER.format(name=graph.name)]
    shared = shared_kernels(program)
    for k in program.kernels:
        lines.append(f"# {k.kind} kernel fusing: {', '.join('%' + n for n in k.nodes)}")
        if shared[k.name] == k.name:
            lines.append(k.source)
        else:
            lines.append(f"{k.name} = {shared[k.name]}  # the same kernel as {shared[k.name]}, on other buffers")
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

    body = ["def launch(inputs, state, externs):",
            '    """Launches the graph\'s kernels: `inputs` positionally, `state` by input name, `externs` by',
            '    node; returns the outputs and the run-time check buffer (None without checks)."""']
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
    checked, offset = [], 0  # run-time checks (`safety`): one int64 buffer, read after the launches
    for k in program.kernels:
        if k.sites:
            checked.append((offset, k))
            offset += SLOTS * len(k.sites)
    if checked:
        body.append(f"    err = torch.zeros({offset}, device=device, dtype=torch.int64)  # run-time check flags")
    at = {id(k): off for off, k in checked}
    for i, u in enumerate(program.units):
        if isinstance(u, KernelCode):
            for o in u.outputs:
                t = types[o]
                body.append(f"    {var(o, 'buf_')} = torch.empty({tuple(t.shape)}, device=device, "
                            f"dtype={_torch_dtype(t)})")
            args = ", ".join([var(a, "buf_") for a in u.args]
                             + ([f"err[{at[id(u)]}:{at[id(u)] + SLOTS * len(u.sites)}]"] if u.sites else []))
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
    body.append(f"    return ({outs},), {'err' if checked else 'None'}")
    table = ", ".join(f"({off}, ({', '.join(repr(s) for s in k.sites)},), {k.name!r})" for off, k in checked)
    body += ["", "", f"CHECKS = [{table}]  # (offset, sites, kernel) per kernel with run-time checks", "", "",
             "def run(inputs, state, externs):",
             '    """Runs the graph and raises eager\'s IndexError / ZeroDivisionError on a failed check."""',
             "    outs, err = launch(inputs, state, externs)",
             "    if err is not None:",
             "        check_buffer(err, CHECKS)",
             "    return outs"]
    return "\n".join(lines) + "\n".join(body) + "\n"
