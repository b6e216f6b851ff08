"""`TritonModule`: a graph compiled to Triton kernels plus a generated host wrapper.

The generated source is cached on disk under `~/.cache/codesign/triton` (or
`$CODESIGN_CACHE_DIR/triton`), keyed by the sha256 of the IR text, the target name, the
Triton, torch and codesign versions and this backend's own source, so a second compile of
the same graph skips generation and only imports the module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from codesign.codegen.triton.wrapper import Program, generate, wrapper_source
from codesign.ir.graph import Graph
from codesign.ir.interpreter import run_graph
from codesign.ir.ops import Call, get_op
from codesign.ir.printer import print_graph

_PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    root = os.environ.get("CODESIGN_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "codesign"
    return base / "triton"


def _backend_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(_PACKAGE.glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(graph: Graph, target_name: str) -> str:
    import triton

    from codesign import __version__
    from codesign.codegen.triton.kernels import interpreting
    parts = [print_graph(graph), target_name, triton.__version__, torch.__version__, __version__,
             _backend_digest(), f"interpret={interpreting()}"]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # triton's @jit looks its globals up through the module
    spec.loader.exec_module(module)
    return module


def _extern(graph: Graph, node) -> Callable[..., torch.Tensor]:
    """A node run by its torch reference (the op's definition), regions by the interpreter."""
    op = get_op(node.op)
    attrs = op.attr_values(node.attrs)

    def call(*args: torch.Tensor, state=None) -> torch.Tensor:
        regions = [lambda *a, g=region: run_graph(g, a, call.state)[0] for region in node.regions]
        out = op.run(Call(list(args), attrs, node.type, regions))
        return out.to(node.type.dtype.torch).contiguous()
    call.state = {}
    return call


class TritonModule:
    """`graph` compiled for `target` with the Triton backend; call it with torch tensors.

    Tensors on CUDA run the kernels on the GPU; CPU tensors run them under
    `TRITON_INTERPRET=1` (set before triton is imported). `state` holds the graph's
    parameters and buffers by input name; they are moved to the inputs' device once.
    """

    def __init__(self, graph: Graph, state: Mapping[str, torch.Tensor] | None = None,
                 target: object = None, *, cache: bool = True):
        start = time.perf_counter()
        self.graph = graph
        self.state = dict(state or {})
        self.target_name = getattr(target, "name", None) or (str(target) if target else "gpu")
        self.key = cache_key(graph, self.target_name)
        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{''.join(c if c.isalnum() else '_' for c in graph.name)[:40]}_{self.key[:20]}"
        self.path = directory / f"{stem}.py"
        meta_path = directory / f"{stem}.json"
        self.cache_hit = cache and self.path.exists() and meta_path.exists()
        if self.cache_hit:
            self.source = self.path.read_text()
            self.meta = json.loads(meta_path.read_text())
        else:
            program = generate(graph)
            self.source = wrapper_source(program)
            self.meta = _meta(program)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(self.source)
            os.replace(tmp, self.path)
            tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.meta, indent=1))
            os.replace(tmp, meta_path)
        self.module = _import(self.path, f"codesign_triton_{stem}")
        nodes = graph.node_map()
        self.externs = {e["node"]: _extern(graph, nodes[e["node"]]) for e in self.meta["externs"]}
        self._device_state: dict[str, dict[str, torch.Tensor]] = {}
        self.compile_seconds = time.perf_counter() - start

    def _state_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._device_state:
            self._device_state[key] = {k: v.detach().to(device).contiguous() for k, v in self.state.items()}
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
        state = self._state_on(device)
        with torch.no_grad():
            outs = self.module.run([x.contiguous() for x in inputs], state, self.externs)
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
        return "\n".join(lines)


def _meta(program: Program) -> dict:
    from codesign.codegen.triton.wrapper import View
    return {
        "kernels": [{"name": k.name, "kind": k.kind, "nodes": list(k.nodes), "grid": k.grid,
                     "constexprs": k.constexprs} for k in program.kernels],
        "externs": [{"node": e.node.name, "op": e.node.op, "reason": e.reason} for e in program.externs],
        "views": sum(isinstance(u, View) for u in program.units),
        "notes": list(program.notes),
    }
