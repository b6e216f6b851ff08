"""The host wrapper: which values get memory, where they live, and the `run` entry point.

A value gets a buffer only when it must: it is produced by an op that is not elementwise,
it leaves its kernel, or a consumer reads it through a raw pointer (GEMM, attention, the
table of a gather). A row-major view of a buffer (a reshape) is an alias of it (no copy). Graph inputs
(runtime inputs and weights, in `graph.inputs` order) and outputs are the caller's
buffers; everything else lives in one arena, at offsets packed from kernel-granular
liveness (best fit, largest first), so buffers whose lifetimes do not overlap share
memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from codesign.codegen import CodegenError
from codesign.codegen.checks import Site
from codesign.codegen.cpp import scalar as S
from codesign.codegen.cpp.exprs import is_expression_op
from codesign.codegen.lowering import is_view, node_structure
from codesign.codegen.cpp.conv import f32_convs, stored_epilogues
from codesign.codegen.cpp import profiling
from codesign.codegen.cpp.kernels import KernelEmitter, RegionEntry, pointer_operands
from codesign.codegen.cpp.regions import row_block
from codesign.codegen.cpp.runtime import PRELUDE
from codesign.ir.graph import Graph
from codesign.ir.kernels import Kernel, kernels as graph_kernels
from codesign.ir.ops.registry import OpKind, get_op
from codesign.ir.scalar import Lit
from codesign.ir.printer import format_node
from codesign.ir.types import TensorType

ALIGN = 64
MOE_ROW_BLOCK = 32  # tokens per call of a row-wise expert body (routed rows only)


@dataclass(frozen=True)
class Storage:
    kind: str  # "input" | "output" | "arena"
    index: int  # input / output position, or arena byte offset


@dataclass
class BufferPlan:
    """Where every materialized value lives; `aliases` map a view (reshape) to the value it views."""

    materialized: set[str]
    aliases: dict[str, str]
    storage: dict[str, Storage]
    arena_bytes: int
    copies: list[tuple[int, str]]  # (output position, value) copied into the output at the end
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def root(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name


def plan_buffers(graph: Graph, kernels: list[Kernel]) -> BufferPlan:
    types = graph.types()
    owner = {n.name: i for i, k in enumerate(kernels) for n in k.nodes}
    nodes = graph.node_map()
    outputs = set(graph.outputs)
    materialized: set[str] = set()
    for kernel in kernels:
        for n in kernel.nodes:
            if get_op(n.op).kind is OpKind.source:
                if n.name in outputs:
                    materialized.add(n.name)
            elif not is_expression_op(n.op) or n.name in kernel.outputs:
                materialized.add(n.name)
            for pos in pointer_operands(n):
                if pos < len(n.operands) and n.operands[pos] in nodes:
                    materialized.add(n.operands[pos])
    for kernel in kernels:  # a conv stored through its layout readers has no buffer of its own
        materialized -= set(stored_epilogues(kernel, types))
    inputs = {i.name: pos for pos, i in enumerate(graph.inputs)}
    materialized |= set(inputs)
    aliases: dict[str, str] = {}
    for n in graph.nodes:
        if n.name in materialized and is_view(n, types):
            src = n.operands[0]
            if src in inputs or src in materialized:
                aliases[n.name] = src
    plan = BufferPlan(materialized, aliases, {}, 0, [])
    for name, pos in inputs.items():
        plan.storage[name] = Storage("input", pos)
    seen_outputs: set[str] = set()
    for j, name in enumerate(graph.outputs):
        if name in inputs or name in aliases or name in seen_outputs or name not in materialized:
            plan.copies.append((j, name))
        else:
            plan.storage[name] = Storage("output", j)
        seen_outputs.add(name)
    # liveness at kernel granularity, on alias roots
    life: dict[str, list[int]] = {}
    for name in materialized:
        if name in aliases or name in plan.storage:
            continue
        life[name] = [owner[name], owner[name]]
    for i, kernel in enumerate(kernels):
        members = {n.name for n in kernel.nodes}
        for n in kernel.nodes:
            for o in n.operands:
                if o in materialized or o in inputs:
                    r = plan.root(o)
                    if r in life and (o not in members or o in aliases):
                        life[r][1] = max(life[r][1], i)
    for _, name in plan.copies:
        r = plan.root(name)
        if r in life:
            life[r][1] = len(kernels)
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    for name in sorted(life, key=lambda n: (-types[n].nbytes, owner[n], n)):
        size = -(-max(types[name].nbytes, 1) // ALIGN) * ALIGN
        start, end = life[name]
        busy = sorted((o, o + s) for o, s, a, b in placed if a <= end and start <= b)
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((offset, size, start, end))
        plan.storage[name] = Storage("arena", offset)
        plan.arena_bytes = max(plan.arena_bytes, offset + size)
        plan.lifetimes[name] = (start, end)
    return plan


@dataclass(frozen=True)
class CppSource:
    """One translation unit and its header, with the plan that shaped them."""

    name: str
    source: str
    header: str
    plan: BufferPlan
    kernel_functions: tuple[str, ...]  # distinct C++ kernel functions
    kernel_count: int  # kernels in the graph (calls in run)
    checks: tuple[tuple[Site, ...], ...] = ()  # per checked kernel call: its run-time check sites
    check_indices: bool = True  # gathered coordinates compared with their extents
    timers: tuple[profiling.Timer, ...] = ()  # a profiling build's timed kernel calls, in slot order

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def _pointer(plan: BufferPlan, name: str, t: TensorType, const: bool) -> str:
    st = plan.storage[plan.root(name)]
    ctype = S.storage(t.dtype)
    q = "const " if const else ""
    if st.kind == "input":
        return f"({q}{ctype}*)inputs[{st.index}]"
    if st.kind == "output":
        return f"({ctype}*)outputs[{st.index}]"
    return f"({ctype}*)(arena + {st.index})"


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


@dataclass
class _Lowered:
    """One graph's kernels (function texts) and the calls that run them, in order."""

    plan: BufferPlan
    bodies: list[str]
    calls: list[str]
    functions: dict[str, str]  # text -> name
    kernel_count: int


def _lower(graph: Graph, prefix: str = "", check_indices: bool = True,
           checks: list[tuple[Site, ...]] | None = None, timers: list[profiling.Timer] | None = None) -> _Lowered:
    """Kernel functions and calls for `graph`; a node with a region (moe) first gets its
    region lowered the same way, as a program `<prefix>m<i>_run(inputs, outputs, arena)`.

    A kernel with run-time checks (`codesign.codegen.checks`) is followed by a test of the
    error flag that returns its code; `checks` collects each such call's sites (call ids
    are positions in it, shared with the region programs). With `timers` (a profiling build,
    top level only) each kernel call is followed by its timer (`profiling`), recorded there."""
    checks = [] if checks is None else checks
    ks = graph_kernels(graph)
    plan = plan_buffers(graph, ks)
    types, nodes = graph.types(), graph.node_map()
    constants = {n.name: st.expr.value for n in graph.nodes if not n.operands and is_expression_op(n.op)
                 and isinstance((st := node_structure(n, types)).expr, Lit)}
    functions: dict[str, str] = {}  # text -> name
    bodies: list[str] = []
    calls: list[str] = []
    regions: dict[str, RegionEntry] = {}
    for i, n in enumerate(node for node in graph.nodes if node.regions):
        if len(n.regions) != 1:
            raise CodegenError(f"%{n.name} = {n.op}(...): the C++ backend runs ops with one region only")
        inner = f"{prefix}m{i}_"
        region = n.regions[0]
        tokens = region.inputs[0].type.shape[0] if region.inputs and region.inputs[0].type.shape else 0
        blocked = row_block(region, MOE_ROW_BLOCK) if tokens > MOE_ROW_BLOCK else None
        body = blocked or region
        sub = _lower(body, inner, check_indices, checks)
        rows = MOE_ROW_BLOCK if blocked else tokens
        bodies += sub.bodies
        bodies.append(f"// region of %{n.name} ({n.op}): @{region.name} as its own program for {rows} rows "
                      f"a call, arena {sub.plan.arena_bytes} bytes\n"
                      f"static int {inner}run(const void** inputs, void** outputs, char* arena) {{\n"
                      "  (void)arena;\n" + "\n".join(sub.calls) + "\n  return 0;\n}")
        regions[n.name] = RegionEntry(f"{inner}run", sub.plan.arena_bytes, rows)
    for i, kernel in enumerate(ks):
        em = KernelEmitter(graph, kernel, plan.materialized, plan.aliases, types, nodes, constants, regions,
                           check_indices=check_indices)
        header = [f"  // {line.strip()}" for n in kernel.nodes for line in format_node(n, "")[:1]]
        if not em.writes:
            calls.append(f"  // kernel {i} ({kernel.key}): nothing to compute (views and constants)")
            calls += [h.replace("  //", "  //   ") for h in header]
            continue
        body = em.body()
        names = ", ".join(f"{p} = %{n}" for n, p in em.params.items())
        sig = em.signature("KERNEL")
        text = "\n".join([sig + " {", *em.statics, *body, "}"])
        fname = functions.get(text)
        if fname is None:
            fname = f"{prefix}k{i}_{_identifier(kernel.name)}"
            functions[text] = fname
            what = "group " + str(kernel.group.id) + " " + str(dict(kernel.group.attrs)) if kernel.group else "one node"
            bodies.append(f"// kernel {i} ({kernel.key}, {what}); first use: {names}\n"
                          + text.replace("KERNEL", fname, 1))
        args = [_pointer(plan, n, types[n], True) for n in em.reads]
        args += [_pointer(plan, n, types[n], False) for n in em.writes]
        calls.append(f"  // kernel {i} ({kernel.key}):")
        calls += header
        calls.append(f"  {fname}({', '.join(args)});")
        if timers is not None:
            calls.append(profiling.tick(len(timers)))
            timers.append(profiling.Timer(fname, kernel.key, tuple(n.name for n in kernel.nodes)))
        if em.sites or any(n.regions for n in kernel.nodes):
            calls.append(f"  if (__builtin_expect(cs_err_code != 0, 0)) return cs_failed({len(checks)});"
                         f"  // {len(em.sites)} run-time checks")
            checks.append(tuple(em.sites))
    for j, name in plan.copies:
        t = types[name]
        if name in nodes and get_op(nodes[name].op).kind is OpKind.source and name not in plan.storage and plan.root(name) == name:
            raise CodegenError(f"%{name}: constant graph outputs are not supported by the C++ backend")
        calls.append(f"  std::memcpy(outputs[{j}], {_pointer(plan, name, t, True)}, {t.nbytes});  // output {j} = %{name}")
    return _Lowered(plan, bodies, calls, functions, len(ks))


def entry_names(prefix: str | None = None) -> dict[str, str]:
    """The `extern "C"` symbols of a translation unit. Without `prefix` they are the ones the
    in-process loader calls (`run`, `codesign_error`, ...: one library a `dlopen`); with one
    (an export's model name) every symbol and macro starts with it (`mlp_run`,
    `MLP_NUM_INPUTS`), so two exported models link into one program without colliding."""
    def sym(suffix: str) -> str:
        return f"{prefix}_{suffix}" if prefix else ("run" if suffix == "run" else f"codesign_{suffix}")
    names = {k: sym(k) for k in ("run", "run_arena", "error", "gemm", "use_blas", "arena_bytes", "num_inputs",
                                    "num_outputs")}
    macro = (prefix or "codesign").upper()
    names.update(NUM_INPUTS=f"{macro}_NUM_INPUTS", NUM_OUTPUTS=f"{macro}_NUM_OUTPUTS")
    return names


def generate(graph: Graph, check_indices: bool = True, prefix: str | None = None,
             profile: bool = False) -> CppSource:
    """The whole graph as one standalone C++17 translation unit with an `extern "C"` entry.

    `check_indices=False` leaves out the comparison of gathered coordinates with their
    extents (`codesign.codegen.checks`): faster, and an out-of-range index is then unchecked
    (it reads outside the table). Integer division is checked either way. `prefix` names
    the entry points after a model (`entry_names`); every other function is `static`.
    `profile=True` adds per-kernel timers (`codesign.codegen.cpp.profiling`) and nothing else."""
    e = entry_names(prefix)
    graph = f32_convs(graph)
    for n in graph.walk():
        if n.type.dtype.value not in {d.value for d in S.STORAGE}:
            raise CodegenError(f"%{n.name}: element type {n.type.dtype.value} has no C++ type")
    checks: list[tuple[Site, ...]] = []
    timers: list[profiling.Timer] | None = [] if profile else None
    lowered = _lower(graph, "", check_indices, checks, timers)
    plan, bodies, calls, functions, ks = (lowered.plan, lowered.bodies, lowered.calls, lowered.functions,
                                          lowered.kernel_count)
    types = graph.types()
    sig_lines = [f"//   input {i}: %{inp.name}: {inp.type} {inp.kind.value}" for i, inp in enumerate(graph.inputs)]
    sig_lines += [f"//   output {j}: %{o}: {types[o]}" for j, o in enumerate(graph.outputs)]
    from codesign import __version__
    intro = [f"// Generated by codesign {__version__}: graph @{graph.name}, {ks} kernels, "
             f"{len(functions)} distinct kernel functions, arena {plan.arena_bytes} bytes.",
             "// Standalone C++17; build: g++ -O3 -march=native -fopenmp -shared -fPIC [-DCODESIGN_BLAS -lscipy_openblas].",
             "// GEMM: OpenBLAS (scipy-openblas32) sgemm per output tile when built with -DCODESIGN_BLAS, else a packed",
             "// hand GEMM; either way OpenMP runs the tiles and each tile's fused epilogue (BLAS kept single-threaded).",
             f"// Entry: {e['run']}(inputs, outputs) with inputs in graph order (runtime inputs and weights); it returns 0,",
             f"// or 1 (an index out of range) / 2 (integer division by zero): {e['error']}() says where."
             + ("" if check_indices else " Indices are NOT checked (check_indices=False)."),
             *sig_lines]
    timed = len(timers) if timers is not None else 0
    wrapper = [
        *(profiling.storage(timed) if profile else []),
        'extern "C" {',
        *(profiling.entries(timed, prefix) if profile else []),
        f"int64_t {e['arena_bytes']}(void) {{ return {plan.arena_bytes}; }}",
        f"int {e['num_inputs']}(void) {{ return {len(graph.inputs)}; }}",
        f"int {e['num_outputs']}(void) {{ return {len(graph.outputs)}; }}",
        f"const char* {e['gemm']}(void) {{ return cs_gemm_backend(); }}  // which GEMM fp32 tiles run on",
        f"void {e['use_blas']}(int on) {{ cs_gemm_use_blas(on); }}  // 0: the hand GEMM even where BLAS is linked",
        f"int {e['error']}(int64_t* info) {{  // [kernel call, check site, offending value] of the last run",
        "  info[0] = cs_err_call; info[1] = cs_err_site; info[2] = cs_err_value;",
        "  return cs_err_code;",
        "}",
        f"int {e['run_arena']}(const void** inputs, void** outputs, void* arena_memory) {{",
        "  char* arena = (char*)arena_memory;",
        "  cs_err_code = 0; cs_err_site = -1; cs_err_call = -1; cs_err_value = 0;",
        "  cs_gemm_init();",
        *(profiling.start() if profile else []),
        "  (void)arena;",
        *calls,
        *(profiling.finish(timed) if profile else []),
        "  return 0;",
        "}",
        f"int {e['run']}(const void** inputs, void** outputs) {{  // not reentrant: one arena for every call",
        "  static void* arena = nullptr;",
        f"  if (!arena) arena = cs_alloc({max(plan.arena_bytes, ALIGN)});",
        f"  return {e['run_arena']}(inputs, outputs, arena);",
        "}",
        '}  // extern "C"',
    ]
    source = "\n".join([*intro, PRELUDE, "// ---- kernels " + "-" * 70, *bodies,
                        "// ---- host wrapper " + "-" * 65, *wrapper, ""])
    header = "\n".join([
        f"// codesign: graph @{graph.name} compiled to C++ (see {graph.name}.cpp).", *sig_lines,
        "#pragma once", "#include <stdint.h>", '#ifdef __cplusplus', 'extern "C" {', "#endif",
        f"#define {e['NUM_INPUTS']} {len(graph.inputs)}", f"#define {e['NUM_OUTPUTS']} {len(graph.outputs)}",
        f"int64_t {e['arena_bytes']}(void);", f"int {e['num_inputs']}(void);", f"int {e['num_outputs']}(void);",
        "/* inputs: every graph input in order (runtime inputs and weights); outputs: caller-allocated. */",
        f"int {e['run_arena']}(const void** inputs, void** outputs, void* arena);",
        f"const char* {e['gemm']}(void);",
        f"void {e['use_blas']}(int on);",
        "/* after a run that returned non-zero: info = [kernel call, check site, offending value]; returns the code */",
        f"int {e['error']}(int64_t* info);",
        f"int {e['run']}(const void** inputs, void** outputs);",
        *(profiling.declarations(prefix) if profile else []),
        "#ifdef __cplusplus", "}", "#endif", ""])
    return CppSource(graph.name, source, header, plan, tuple(functions.values()), ks, tuple(checks),
                     check_indices, tuple(timers or ()))
