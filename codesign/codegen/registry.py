"""Backends and their registry: what runs a compiled graph, chosen by name, target and device.

A backend is a frozen dataclass (as a pass is): the class carries its `name`, a one-line
`summary`, the torch `devices` whose tensors it runs (`default_for`: the devices where it
is the one picked when the target's `host_backend` cannot run there), the Python modules
it `requires`, and the suffix of its generated source; `supports(graph)` lists the reasons
it cannot run a graph (None when it can), `build(graph, state, target, options)` returns a
`Program` (call it with the runtime inputs).

One decorator, `@register_backend`, fills the registry; each backend subpackage applies it
in its `__init__` to a class whose methods import the heavy tool (triton, iree) only when
called, so registering costs nothing and the CLI starts fast. Every subpackage of
codesign/codegen (and `EXTRA_MODULES`: the MLIR/IREE export) is imported on the first
lookup (`available_backends`, `get_backend`), so adding a backend is one subpackage and
one registration; the reference interpreter is registered here, since it is what every
other backend falls back to.

`build_program` is the boundary the compiler calls: whatever a backend fails with (its
unmet `supports`, its own exception types listed by `failures()`, an `OSError` from the
toolchain or the disk) leaves it as one `CodegenError`, so the compiler's fallback catches
exactly that. Backends turn their own build- and load-time failures of generated code (a
compiler error, a library that does not dlopen, a wrapper that does not import) into a
`CodegenError` naming the entry; a Triton kernel that fails at its first launch falls back
for that kernel alone (`codesign/codegen/triton/fallback.py`).

A backend whose kernels cannot run every convex group as one (Triton: one template, one
heavy anchor per kernel) says so with `partition_rules`; the `partition{backend=...}` pass
(`codesign/passes/partition.py`) regroups the IR by those rules, ledger and all, before
code generation, and `build` then runs the groups as the IR says.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping, Protocol, Sequence, TypeVar

import torch

from codesign.codegen import CodegenError
from codesign.ir.graph import Graph

if TYPE_CHECKING:
    from codesign.ir.graph import Node
    from codesign.ir.kernels import Kernel
    from codesign.ir.ops.registry import Template
    from codesign.targets import Target

FALLBACK = "interpreter"
"""The backend that runs a graph when the chosen one cannot (the reference semantics)."""

# Packages outside codesign/codegen whose __init__ registers a backend; every subpackage of
# codesign/codegen is imported too (`builtin_modules`), so a new backend needs no entry here.
EXTRA_MODULES = ("codesign.export",)


class UnknownBackendError(ValueError):
    """A backend name nobody registered."""


class Program(Protocol):
    """What `Backend.build` returns: called with the runtime inputs, returns the outputs (one
    tensor or a tuple). `source` (optional) is the generated code `CompiledModule.save` writes.
    `bind_state(state)` (optional) takes the weights again after they changed (the
    compiler calls it when their fingerprint changes); a program without it is rebuilt."""

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]: ...


@dataclass(frozen=True)
class PartitionRules:
    """What a backend tells the `partition` pass about the kernels it can run.

    `templates`: the op templates it has kernels for (a node with another template, or with
    a region, runs alone: a group holding one is split). `anchor(node)`: whether the node is
    a heavy op one kernel is built around (a group with more than one is split).
    `regroup(graph)`: the backend's grouping of the graph's ungrouped nodes, existing groups
    kept (how the nodes of a split group are grouped again, one anchor per kernel).
    `check(graph, kernel)`: why the kernel cannot run as one (a reason), or None.
    `sink_layout`: a group's trailing layout ops (a reshape, slice or permute of its result)
    move into the one group that reads them, where they fold into the loads.
    `inline_literals`: every kernel computes a literal constant it reads in place, so a group
    of literals only is dissolved (no kernel of its own).
    `library`: templates whose lone op the backend can hand to the vendor library instead
    (the pass chooses by the target's calibrated cost model, both times in the ledger).
    `bias_in_readers`: an extern conv runs without its bias, which the generated kernels
    reading its result add as they load it (cuDNN's bias is a separate pass over the output).
    `shared_anchors(anchors, types)`: whether several anchors of one group can still run as
    one kernel (Triton: reductions over one domain, each a statistic of the same rows).
    """

    templates: tuple["Template", ...]
    anchor: Callable[["Node"], bool]
    regroup: Callable[[Graph], Graph]
    check: Callable[[Graph, "Kernel"], str | None]
    sink_layout: bool = True
    inline_literals: bool = True
    bias_in_readers: bool = False
    library: tuple["Template", ...] = ()
    shared_anchors: Callable[[Sequence["Node"], Mapping[str, object]], bool] = lambda anchors, types: False

    def template_of(self, node: "Node") -> "Template | None":
        """The template `node` runs in, or None (it runs alone, as an extern call)."""
        from codesign.ir.ops import get_op
        template = get_op(node.op).template
        return template if template in self.templates and not node.regions else None


@dataclass(frozen=True)
class Backend:
    """Base of every backend: subclass as a frozen dataclass and decorate with `@register_backend`."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    default_for: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    """What to do when a module of `requires` is missing (how to install it, what to use
    instead); appended to the "is not installed" reason so the error says what to do."""
    source_suffix: ClassVar[str | None] = None
    options: ClassVar[tuple[str, ...]] = ()
    """Names of the keys `build` reads from its `options`; others are refused."""
    nhwc_conv: ClassVar[bool] = False
    """Whether `build` runs `conv_nhwc` (the channels-last pass's conv) itself; otherwise the
    compiler gives it the graph with those convs written back as NCHW (`passes.layout.nchw_convs`)."""

    def missing(self) -> list[str]:
        """The required Python modules that are not installed (found without importing them)."""
        absent = []
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a parent package is missing
                found = False
            if not found:
                absent.append(module)
        return absent

    def runs_as_kernel(self, template: "Template") -> bool:
        """Whether this backend generates a kernel of its own for ops of `template`; False:
        they run as extern calls to torch (passes such as `split-group-norm` rewrite them then)."""
        return True

    def supports(self, graph: Graph) -> list[str] | None:
        """Why this backend cannot run `graph` (one reason per problem), or None when it can.
        Cheap and conservative: `build` may still refuse with a `CodegenError`."""
        absent = self.missing()
        hint = f": {self.install}" if self.install else ""
        return [f"{m} is not installed{hint}" for m in absent] or None

    def failures(self) -> tuple[type[BaseException], ...]:
        """This backend's own exception types for "cannot compile this graph"; the registry
        turns them into `CodegenError`. Called only after `build` raised, so it may import."""
        return ()

    def partition_rules(self, target: "Target | None") -> PartitionRules | None:
        """The rules the `partition` pass regroups by before this backend builds a graph;
        None (the default) when any convex group runs as one kernel: the pass is the identity."""
        return None

    def build(self, graph: Graph, state: Mapping[str, torch.Tensor], target: "Target",
              options: Mapping[str, object]) -> Program:
        raise NotImplementedError(f"backend {self.name!r} does not implement build()")


B = TypeVar("B", bound=type[Backend])
_BACKENDS: dict[str, Backend] = {}
_builtins_loaded = False


def register_backend(cls: B) -> B:
    """Class decorator: register one instance of the backend `cls` under `cls.name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"backend class {cls.__name__} needs a `name` (and 'auto' is reserved)")
    known = type(_BACKENDS[name]) if name in _BACKENDS else cls
    if (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):  # a reload may re-register
        raise ValueError(f"backend {name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _BACKENDS[name] = cls()
    return cls


def unregister_backend(name: str) -> None:
    """Remove a registered backend (tests register toy ones); the fallback cannot be removed."""
    _load_builtins()
    if name == FALLBACK or name not in _BACKENDS:
        raise UnknownBackendError(f"cannot unregister backend {name!r}")
    del _BACKENDS[name]


def builtin_modules() -> tuple[str, ...]:
    """The packages imported on the first lookup: each subpackage of codesign/codegen (found
    on disk, not imported to be found), then `EXTRA_MODULES`."""
    import codesign.codegen as package
    found = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)
    return tuple(f"{package.__name__}.{name}" for name in found) + EXTRA_MODULES


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in builtin_modules():
            importlib.import_module(module)


def available_backends() -> tuple[str, ...]:
    """Names of every registered backend, sorted (installed or not: see `Backend.missing`)."""
    _load_builtins()
    return tuple(sorted(_BACKENDS))


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; an unknown name raises with the closest names."""
    _load_builtins()
    backend = _BACKENDS.get(name)
    if backend is None:
        close = difflib.get_close_matches(name, list(_BACKENDS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownBackendError(f"unknown backend {name!r}{hint} "
                                  f"(available: auto, {', '.join(sorted(_BACKENDS))})")
    return backend


def device_of(inputs: Sequence[torch.Tensor], state: Mapping[str, torch.Tensor] | None = None) -> str:
    """The device type the inputs live on: cuda when any is on CUDA, else the first input's
    (the weights' when there are no inputs), cpu when there is nothing to look at."""
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)] or list((state or {}).values())
    if any(t.is_cuda for t in tensors):
        return "cuda"
    return tensors[0].device.type if tensors else "cpu"


def choose_backend(host_backend: str, device: str) -> Backend:
    """The target's `host_backend` when it runs tensors of `device`; otherwise the device
    decides (the backend whose `default_for` names it: CUDA → triton, CPU → cpp), and the
    interpreter runs what no backend claims."""
    host = get_backend(host_backend)
    if device in host.devices:
        return host
    for backend in _BACKENDS.values():
        if device in backend.default_for:
            return backend
    return get_backend(FALLBACK)


def build_program(backend: Backend | str, graph: Graph, state: Mapping[str, torch.Tensor], target: "Target",
                  options: Mapping[str, object] | None = None) -> Program:
    """`backend.build(...)`, after its `supports` check; every way it refuses the graph is
    raised as `CodegenError` (prefixed with nothing: the caller names the backend)."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    options = dict(options or {})
    unknown = sorted(set(options) - set(backend.options))
    if unknown:
        known = ", ".join(backend.options) or "none"
        raise ValueError(f"backend {backend.name!r} has no option(s) {', '.join(unknown)} (options: {known})")
    reasons = backend.supports(graph) or []
    from codesign.ir.ops import get_op
    conv_nhwc = get_op("conv_nhwc")
    if not backend.nhwc_conv and any(get_op(node.op) is conv_nhwc for node in graph.walk()):
        reasons.append(f"backend {backend.name!r} does not run conv_nhwc (the channels-last pass's conv): "
                       "write the convs back with codesign.passes.layout.nchw_convs(graph) first, or "
                       "compile through codesign.compile(), which does")
    if reasons:
        raise CodegenError("; ".join(reasons))
    try:
        return backend.build(graph, state, target, options)
    except CodegenError:
        raise
    except OSError as exc:  # the toolchain or the disk (a compiler that cannot run, a file that cannot be loaded)
        raise CodegenError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        if isinstance(exc, backend.failures()):
            raise CodegenError(str(exc) or type(exc).__name__) from exc
        raise


# -- the reference interpreter: always registered, the fallback of every other backend ------
@dataclass
class InterpreterProgram:
    """`run_graph` over the graph's reference semantics (torch ops), bound to the weights."""

    graph: Graph
    state: Mapping[str, torch.Tensor]

    def bind_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state = state  # read on every call

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        from codesign.ir.interpreter import run_graph
        with torch.no_grad():
            outputs = run_graph(self.graph, inputs, self.state)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


@register_backend
@dataclass(frozen=True)
class InterpreterBackend(Backend):
    name: ClassVar[str] = FALLBACK
    summary: ClassVar[str] = "the reference interpreter (every op's torch semantics, node by node)"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    nhwc_conv: ClassVar[bool] = True  # every op's torch definition, conv_nhwc's included

    def build(self, graph, state, target, options) -> Program:
        return InterpreterProgram(graph, state)


__all__ = ["EXTRA_MODULES", "Backend", "FALLBACK", "InterpreterProgram", "PartitionRules", "Program",
           "UnknownBackendError",
           "available_backends", "build_program", "builtin_modules", "choose_backend", "device_of", "get_backend",
           "register_backend", "unregister_backend"]
