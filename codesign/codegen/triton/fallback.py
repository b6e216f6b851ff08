"""Per-kernel fallback: a generated kernel that fails at launch runs through torch instead.

Triton compiles a kernel at its first launch, so some failures only show there: a kernel
asking for more shared memory than the card has (`OutOfResources`), a compiler crash on
one template, a driver refusing the launch. `TritonModule` wraps every kernel of the
imported wrapper in a `GuardedKernel` (the generated `run` looks kernels up as module
globals, so the wrapper's text is unchanged): the real launch runs as long as it succeeds;
the first time it raises, a `KernelFallbackWarning` names the kernel, the nodes it fuses
and the error, and from then on that kernel's nodes run through their reference semantics
(each op's torch definition, as the interpreter and the externs run them), writing the
kernel's output buffers. The rest of the model keeps its Triton kernels.

One failure is first retried smaller: a kernel out of shared memory (`OutOfResources`)
launched with software pipelining (`num_stages > 1`) keeps one stage's buffers instead of
several; when that launch succeeds it is kept (a `KernelRetileWarning` says so) and the
kernel stays Triton.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import torch

from codesign.codegen import CodegenError
from codesign.ir.graph import Graph
from codesign.ir.ops import Call, OpKind, get_op


class KernelFallbackWarning(UserWarning):
    """A generated kernel failed at launch; its nodes run through the reference semantics."""


class KernelRetileWarning(UserWarning):
    """A generated kernel did not fit the card's resources and runs with fewer pipeline stages."""


def _out_of_resources(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfResources"


class GuardedKernel:
    """`kernel[grid](*buffers, **constexprs)` as the wrapper launches it, falling back to the
    reference semantics of the kernel's nodes once a launch raises (`failure` then holds it).

    `args` are the IR values of the pointer arguments, in order; `outputs` those it writes.
    `state()` gives the weights on the current device (for a value no argument carries)."""

    def __init__(self, kernel, name: str, graph: Graph, nodes: Sequence[str], args: Sequence[str],
                 outputs: Sequence[str], state: Callable[[], Mapping[str, torch.Tensor]] = dict, *,
                 digest: str | None = None, directory=None, launches: Sequence = (), graphed: bool = False):
        self.kernel = kernel
        self.digest = digest  # set: measure this kernel against its library form (`choice`)
        self.directory = directory  # the cache folder choices are recorded in
        self.launches = tuple(launches)  # other launches of the same source to measure (`kernels.Launch`)
        self.graphed = graphed  # the module runs as a CUDA graph: forms are timed as graphs
        self.choice = None  # `choice.Choice` once measured (or read from the cache)
        self.name = name
        self.graph = graph
        self.nodes = tuple(nodes)
        self.args = tuple(args)
        self.outputs = tuple(outputs)
        self.state = state
        self.failure: BaseException | None = None
        self.overrides: dict[str, int] = {}  # launch options changed after a resource failure

    def __getitem__(self, grid):
        if self.failure is not None:
            return self.reference

        def launch(*args, **kwargs):
            if self.digest is not None and self.choice is None and _measurable(args):
                self._choose(grid, args, kwargs)
            if self.choice is not None and self.choice.implementation == "library":
                return self.reference(*args, **kwargs)
            try:
                if self.choice is not None and self.choice.launch is not None \
                        and (not self.choice.launch.uses_descriptors or _aligned(args)):
                    return self.kernel[self.choice.launch.grid](*args, **self.choice.launch.options())
                return self.kernel[grid](*args, **{**kwargs, **self.overrides})
            except Exception as exc:  # noqa: BLE001 - any launch failure: this kernel falls back
                if _out_of_resources(exc) and kwargs.get("num_stages", 1) > 1 and not self.overrides:
                    try:
                        result = self.kernel[grid](*args, **{**kwargs, "num_stages": 1})
                    except Exception:  # noqa: BLE001 - still does not fit: fall back below
                        pass
                    else:
                        self.overrides = {"num_stages": 1}
                        warnings.warn(f"Triton kernel {self.name} did not fit the card's resources with "
                                      f"num_stages={kwargs['num_stages']} ({exc}); it runs with num_stages=1",
                                      KernelRetileWarning, stacklevel=3)
                        return result
                self.failure = exc
                nodes = ", ".join("%" + n for n in self.nodes[:6]) + (", ..." if len(self.nodes) > 6 else "")
                warnings.warn(f"Triton kernel {self.name} ({nodes}) failed at launch "
                              f"({type(exc).__name__}: {exc}); running its nodes through the reference "
                              "semantics (torch) instead, for this kernel only", KernelFallbackWarning,
                              stacklevel=3)
                return self.reference(*args, **kwargs)
        return launch

    def _choose(self, grid, args, kwargs) -> None:
        """Measure the generated kernel against its library form (or read the recorded
        choice); a generated kernel that fails here is left to the launch path above."""
        from codesign.codegen.triton import choice as choices
        options = {**kwargs, **self.overrides}
        key = choices.choice_key(self.digest, grid, args, options, self.launches, self.graphed)
        found = choices.load(key, self.directory)
        if found is None:
            generated = {None: lambda: self.kernel[grid](*args, **options)}
            for launch in () if self.overrides else self.launches:
                if launch.uses_descriptors and not _aligned(args):
                    continue
                generated[launch] = lambda launch=launch: self.kernel[launch.grid](*args, **launch.options())
            try:
                found = choices.measure(generated, lambda: self.reference(*args), self.graphed)
            except Exception:  # noqa: BLE001 - the launch path reports and falls back
                self.digest = None
                return
            choices.store(key, found, self.directory)
        self.choice = found

    def __getattr__(self, name):  # the kernel's own attributes (fn, src, ...)
        if name == "kernel":
            raise AttributeError(name)
        return getattr(self.kernel, name)

    def reference(self, *args, **_constexprs) -> None:
        """Compute the kernel's outputs with torch and write them into its output buffers."""
        given = dict(zip(self.args, args))
        buffers = {o: given.pop(o) for o in self.outputs}
        if not buffers:
            return
        device = next(iter(buffers.values())).device
        env: dict[str, torch.Tensor] = dict(given)
        nodes = self.graph.node_map()
        inputs = {i.name for i in self.graph.inputs}

        def value(name: str) -> torch.Tensor:
            if name in env:
                return env[name]
            node = nodes.get(name)
            if node is None:
                state = self.state()
                if name in inputs and name in state:
                    return state[name]
                raise CodegenError(f"kernel {self.name}: no value for %{name} in its reference fallback")
            out = run_node(node, [value(o) for o in node.operands], self.state()).to(device)
            env[name] = out
            return out

        for name, buffer in buffers.items():
            if not _written_into(nodes.get(name), buffer, value, env):
                buffer.copy_(value(name).reshape(buffer.shape))


def _written_into(node, buffer: torch.Tensor, value: Callable[[str], torch.Tensor], env: Mapping) -> bool:
    """Run the node producing `buffer` straight into it where its op can (`OpDef.run_into`:
    the library form of a GEMM kernel writes the kernel's buffer, no copy after it); False
    where it cannot — no such op, another dtype or shape, an empty buffer or one that is not
    one dense block, or one sharing memory with an operand."""
    if (node is None or node.name in env or not buffer.is_contiguous() or buffer.numel() != node.type.numel
            or buffer.numel() == 0):
        return False
    op = get_op(node.op)
    if op.run_into is None or op.regions or buffer.dtype != node.type.dtype.torch:
        return False
    operands = [value(o) for o in node.operands]
    if op is LINEAR and _misaligned(operands):
        return False  # `run_node` pads it: cuBLAS's aligned kernels
    out = buffer.view(node.type.shape)
    storage = out.untyped_storage().data_ptr()
    if any(a.dtype != out.dtype or a.untyped_storage().data_ptr() == storage for a in operands):
        return False
    if op.kind is OpKind.pointwise and torch.broadcast_shapes(*(a.shape for a in operands)) != out.shape:
        return False
    op.run_into(Call(operands, op.attr_values(node.attrs), node.type), out)
    env[node.name] = out  # a later output of the kernel that reads it does not run it again
    return True


def run_node(node, operands: Sequence[torch.Tensor], state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """`node` computed by its op's torch definition (a region by the interpreter, reading the
    weights `state`), in the node's dtype: how externs and fallen-back kernels run."""
    from codesign.ir.interpreter import run_graph
    op = get_op(node.op)
    if op is LINEAR and _misaligned(operands):
        return _aligned_linear(operands).to(node.type.dtype.torch)
    regions = [lambda *a, g=region: run_graph(g, a, state)[0] for region in node.regions]
    return op.run(Call(list(operands), op.attr_values(node.attrs), node.type, regions)).to(node.type.dtype.torch)


LINEAR = get_op("linear")
ALIGN_BYTES = 16
"""cuBLAS's fast GEMM kernels need leading dims that are multiples of 16 bytes."""


def _misaligned(operands: Sequence[torch.Tensor]) -> bool:
    """A CUDA linear whose output rows (N, the weight's rows) are not 16-byte multiples: with
    a 50257-word vocabulary (GPT-2's LM head, bf16) cuBLAS on an H200 took 6.7 ms in an
    sm75 fallback kernel, where torch.compile, which pads, took 0.9 ms."""
    x, w = operands[0], operands[1]
    return (x.is_cuda and w.dim() == 2 and x.dtype == w.dtype
            and (w.shape[0] * w.element_size()) % ALIGN_BYTES != 0)


def _aligned_linear(operands: Sequence[torch.Tensor]) -> torch.Tensor:
    """The linear with the weight (and bias) padded by zero rows to an aligned N, the padded
    columns dropped after: the same values. The padding is copied on every call (inside a
    CUDA graph too), so an in-place update of the weight is seen."""
    x, w, *bias = operands
    n = w.shape[0]
    step = ALIGN_BYTES // w.element_size()
    pad = -n % step
    wide = torch.nn.functional.pad(w, (0, 0, 0, pad))
    b = torch.nn.functional.pad(bias[0], (0, pad)) if bias else None
    return torch.nn.functional.linear(x, wide, b)[..., :n]


def _aligned(args) -> bool:
    """Every buffer starts on a 16-byte boundary, as a tensor descriptor's base must (the
    copy engine faults otherwise, and a fault poisons the CUDA context): a view at an odd
    offset runs the pointer-load launch instead."""
    return all(a.data_ptr() % ALIGN_BYTES == 0 for a in args if isinstance(a, torch.Tensor))


def _measurable(args) -> bool:
    """A launch whose forms can be timed: CUDA buffers, real kernels, no graph being captured."""
    from codesign.codegen.triton.kernels import interpreting
    return (not interpreting() and any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
            and not torch.cuda.is_current_stream_capturing())


def guard_kernels(module, graph: Graph, kernels: Sequence[Mapping], state: Callable[[], Mapping], *,
                  choose: bool = False, directory=None, graphed: bool = False) -> dict:
    """Replace each kernel global of the imported wrapper `module` (by `kernels`' meta: name,
    nodes, args, outputs, launches) with a `GuardedKernel`; returns them by name. `choose`:
    kernels of the kinds `choice.TUNED_KINDS` without run-time checks are measured at each
    of their launches and against their library form at their first launch on CUDA (choices
    recorded under `directory`; `graphed`: timed as CUDA graphs, as the module runs)."""
    from codesign.codegen.triton.choice import TUNED_KINDS
    from codesign.codegen.triton.kernels import Launch
    guards = {}
    for k in kernels:
        tuned = choose and k.get("kind") in TUNED_KINDS and not k.get("checked") and k.get("digest")
        launches = [Launch.from_json(u) for u in k.get("launches", ())]
        guards[k["name"]] = GuardedKernel(getattr(module, k["name"]), k["name"], graph, k["nodes"], k["args"],
                                          k["outputs"], state, digest=k["digest"] if tuned else None,
                                          directory=directory, launches=launches, graphed=graphed)
        setattr(module, k["name"], guards[k["name"]])
    return guards


__all__ = ["GuardedKernel", "KernelFallbackWarning", "KernelRetileWarning", "guard_kernels", "run_node"]
