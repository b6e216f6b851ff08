"""`TritonModule`: a graph compiled to Triton kernels plus a generated host wrapper.

The generated source is cached on disk under `~/.cache/codesign/triton` (or
`$CODESIGN_CACHE_DIR/triton`), keyed by the sha256 of the IR text, the target name, the
Triton, torch and codesign versions and this backend's own source, so a second compile of
the same graph skips generation and only imports the module. The cache is
`codesign.codegen.cache` (shared with the C++ backend): an entry is imported only after its
files match the sha256 its manifest records (else it is regenerated, with a warning); a
wrapper that does not import is a `CodegenError` naming it. Every kernel is launched through
a `GuardedKernel` (`fallback`): a kernel that fails at launch (`OutOfResources`, ...) runs
its nodes through torch from then on, with a warning naming it, and the others stay Triton.
On CUDA the program is captured as a CUDA graph per input signature and replayed
(`graphs`; option `cuda_graphs=False` launches kernel by kernel). GEMM and attention
kernels are measured against their library form at their first launch on CUDA and the
faster kept (`choice`; option `choose=False` keeps the generated kernels).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping

import torch

from codesign.codegen import CodegenError
from codesign.codegen.cache import Cache, CacheWarning
from codesign.codegen.checks import check_buffer
from codesign.codegen.triton.fallback import guard_kernels, run_node
from codesign.codegen.triton.graphs import CudaGraphs
from codesign.codegen.triton.wrapper import Program, canonical_source, generate, nhwc_weights, wrapper_source
from codesign.ir.graph import Graph
from codesign.ir.printer import print_graph

_PACKAGE = Path(__file__).resolve().parent


CACHE = Cache("triton")

INSTALL = ("install the GPU extra (pip install 'codesign[gpu]') to run the Triton backend, "
           "or use backend=\"cpp\" for CPU tensors")
"""What to do when triton is missing: the backend's `install` hint and `import_triton`'s error."""


def import_triton():
    """`import triton`, or one `CodegenError` saying what to do when it is not installed
    (rather than a bare ModuleNotFoundError from deep inside the backend)."""
    try:
        import triton
    except ImportError as exc:
        raise CodegenError(f"triton is not installed: {INSTALL}") from exc
    return triton


def cache_dir() -> Path:
    """Where Triton entries live: `$CODESIGN_CACHE_DIR/triton` or `~/.cache/codesign/triton`
    (checked: a folder others can write is refused for a private temporary one, with a warning)."""
    return CACHE.directory()


def _backend_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(_PACKAGE.glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(graph: Graph, target_name: str, check_indices: bool = True) -> str:
    triton = import_triton()

    from codesign import __version__
    from codesign.codegen.triton.kernels import interpreting
    parts = [print_graph(graph), target_name, triton.__version__, torch.__version__, __version__,
             _backend_digest(), f"interpret={interpreting()}", f"check_indices={bool(check_indices)}"]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # triton's @jit looks its globals up through the module
    spec.loader.exec_module(module)
    return module


def _extern(graph: Graph, node) -> Callable[..., torch.Tensor]:
    """A node run by its torch reference (`fallback.run_node`) on the weights in `call.state`."""
    def call(*args: torch.Tensor) -> torch.Tensor:
        return run_node(node, args, call.state).contiguous()
    call.state = {}
    return call


class TritonModule:
    """`graph` compiled for `target` with the Triton backend; call it with torch tensors.

    Tensors on CUDA run the kernels on the GPU; CPU tensors run them under
    `TRITON_INTERPRET=1` (set before triton is imported). `state` holds the graph's
    parameters and buffers by input name; they are moved to the inputs' device once.
    """

    def __init__(self, graph: Graph, state: Mapping[str, torch.Tensor] | None = None,
                 target: object = None, *, cache: bool = True, check_indices: bool = True,
                 cuda_graphs: bool = True, choose: bool = True):
        start = time.perf_counter()
        self.graph = graph
        self.state = dict(state or {})
        self.target_name = getattr(target, "name", None) or (str(target) if target else "gpu")
        self.check_indices = check_indices  # gathered indices checked at run time (`safety`)
        self.key = cache_key(graph, self.target_name, check_indices)
        from codesign.codegen.triton.kernels import interpreting
        self.interpreted = interpreting()  # the kernels were defined under TRITON_INTERPRET=1
        stem = f"{''.join(c if c.isalnum() else '_' for c in graph.name)[:40]}_{self.key[:20]}"
        names = (f"{stem}.py", f"{stem}.json")
        tiers = tuple(getattr(target, "tier_names", ()) or ())
        directory = cache_dir()
        entry = CACHE.lookup(self.key, names, directory) if cache else None
        self.cache_hit = entry is not None
        self._device_state: dict[str, dict[str, torch.Tensor]] = {}
        self._current_state: dict[str, torch.Tensor] = {}
        for attempt in range(2):
            if entry is None:
                program = generate(graph, tiers, check_indices)
                source, meta = wrapper_source(program), _meta(program)

                def produce(folder: Path) -> None:
                    (folder / names[0]).write_text(source)
                    (folder / names[1]).write_text(json.dumps(meta, indent=1))
                entry = CACHE.build(self.key, names, produce, replace=not cache or attempt > 0,
                                    directory=directory)
            self.path = entry.file(names[0])
            try:
                self.source = self.path.read_text()
                self.meta = json.loads(entry.file(names[1]).read_text())
                self.module = _import(self.path, f"codesign_triton_{stem}")
                why_no_graphs = _why_no_graphs(self.meta, cuda_graphs)
                self.guards = guard_kernels(self.module, graph, self.meta["kernels"], lambda: self._current_state,
                                            choose=choose, directory=directory, graphed=why_no_graphs is None)
                break
            except Exception as exc:  # noqa: BLE001 - the generated wrapper does not load
                if not entry.cached:
                    raise CodegenError(f"the generated Triton wrapper {self.path} for @{graph.name} does not "
                                       f"load: {type(exc).__name__}: {exc}") from exc
                warnings.warn(f"the cached Triton wrapper {self.path} does not load ({type(exc).__name__}: "
                              f"{exc}); regenerating it", CacheWarning, stacklevel=2)
                self.cache_hit, entry = False, None
        if "make_tensor_descriptor" in self.source:
            _allocate_descriptors_with_torch()
        self.nhwc_weights = nhwc_weights(graph)  # stored channels-last for cuDNN, once per binding
        nodes = graph.node_map()
        self.externs = {e["node"]: _extern(graph, nodes[e["node"]]) for e in self.meta["externs"]}
        self.graphs = CudaGraphs(f"@{graph.name}", why_not=why_no_graphs,
                                 interpreted=self.interpreted)
        self.compile_seconds = time.perf_counter() - start

    def bind_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take the weights again (they changed): the next call moves them to its device
        (no copy for weights already there, contiguous)."""
        self.state = dict(state)
        self._device_state.clear()
        self.graphs.clear()  # they read the old weights' memory

    def _state_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._device_state:
            self._device_state[key] = {
                k: v.detach().to(device).contiguous(memory_format=torch.channels_last if k in self.nhwc_weights
                                                    else torch.contiguous_format)
                for k, v in self.state.items()}
            for fn in self.externs.values():
                fn.state = self._device_state[key]
        return self._device_state[key]

    def __call__(self, *inputs: torch.Tensor):
        if inputs:
            device = inputs[0].device
        elif self.state:
            device = next(iter(self.state.values())).device
        else:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type != "cuda" and not self.interpreted:
            raise CodegenError(
                f"@{self.graph.name}: the Triton backend runs CUDA tensors, and these are on {device.type} with "
                "TRITON_INTERPRET unset (Triton finds no GPU driver for them); move the model and inputs to a "
                "CUDA device, or set TRITON_INTERPRET=1 before triton is first imported to run the kernels in "
                "Triton's CPU interpreter (slow: for tests), or use backend=\"cpp\" for CPU tensors")
        state = self._current_state = self._state_on(device)
        inputs = [x.contiguous() for x in inputs]
        with torch.no_grad():
            replayed = self.graphs.run(lambda xs: self.module.launch(xs, state, self.externs), inputs) \
                if self.graphs.usable(inputs) else None
            if replayed is None:
                outs = self.module.run(inputs, state, self.externs)
            else:
                outs, err = replayed
                if err is not None:
                    check_buffer(err, self.module.CHECKS)
        return outs[0] if len(outs) == 1 else tuple(outs)

    @property
    def kernel_count(self) -> int:
        return len(self.meta["kernels"])

    def report(self) -> str:
        """Kernels (name, kind, what they fuse), externs with their reasons, and notes."""
        lines = [f"Triton backend: @{self.graph.name} for {self.target_name} "
                 f"({self.kernel_count} kernels, {len(self.meta['externs'])} externs, "
                 f"{self.meta['views']} views){' [cache hit]' if self.cache_hit else ''}",
                 f"  source: {self.path}"]
        for k in self.meta["kernels"]:
            lines.append(f"  kernel {k['name']:<36} {k['kind']:<10} {len(k['nodes'])} nodes: "
                         + ", ".join("%" + n for n in k["nodes"][:6]) + (" ..." if len(k["nodes"]) > 6 else ""))
        for e in self.meta["externs"]:
            lines.append(f"  extern %{e['node']} ({e['op']}): {e['reason']}")
        for n in self.meta["notes"]:
            lines.append(f"  note: {n}")
        for name, guard in self.guards.items():
            if guard.choice is not None:
                lines.append("  measured " + guard.choice.line(name))
        lines.append("  CUDA graphs: " + ("captured per input signature, replayed" if self.graphs.why_not is None
                                          else f"off ({self.graphs.why_not})"))
        return "\n".join(lines)


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    return torch.empty(size, device=device, dtype=torch.int8)


def _allocate_descriptors_with_torch() -> None:
    """Tensor descriptors made inside a kernel (`tl.make_tensor_descriptor`, the GEMM's
    `USE_TMA` launches) need global scratch memory at each launch; Triton asks the
    process's allocator for it, here torch's caching allocator (inside a CUDA graph's
    capture too, from the graph's pool)."""
    import triton
    triton.set_allocator(_scratch)


def _routes_on_host(op: str) -> bool:
    """An extern whose torch reference routes on the host (data-dependent sizes, so it
    synchronises): such a program is not capturable."""
    from codesign.ir.ops import get_op
    from codesign.ir.ops.registry import Template
    return get_op(op).template is Template.moe


def _why_no_graphs(meta: Mapping, enabled: bool) -> str | None:
    """Why this program is not run as a CUDA graph, or None: the option is off, or an extern
    synchronises with the host."""
    if not enabled:
        return "cuda_graphs=False"
    routed = [e for e in meta["externs"] if _routes_on_host(e["op"])]
    if routed:
        return f"%{routed[0]['node']} ({routed[0]['op']}) routes on the host"
    return None


def _meta(program: Program) -> dict:
    from codesign.codegen.triton.wrapper import View
    return {
        "kernels": [{"name": k.name, "kind": k.kind, "nodes": list(k.nodes), "grid": k.grid,
                     "constexprs": k.constexprs, "args": list(k.args), "outputs": list(k.outputs),
                     "checked": bool(k.sites),
                     "launches": [u.to_json() for u in k.launches],
                     "digest": hashlib.sha256(canonical_source(k).encode()).hexdigest()}
                    for k in program.kernels],
        "externs": [{"node": e.node.name, "op": e.node.op, "reason": e.reason} for e in program.externs],
        "views": sum(isinstance(u, View) for u in program.units),
        "notes": list(program.notes),
    }
