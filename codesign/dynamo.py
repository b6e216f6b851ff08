"""`torch.compile(model, backend="codesign")`: every graph Dynamo captures runs through codesign.

    compiled = torch.compile(model, backend="codesign", options={"target": "cpu-host"})

Dynamo traces the model's Python, breaks the graph where it must (a `print`, data-dependent
control flow, an unsupported call) and hands each piece, an FX `GraphModule`, to this
backend; the code between pieces runs eagerly, as with any backend. Guards and
recompilation are Dynamo's: it recompiles when its guards fail (another dtype, a new
module attribute, grad mode), and after the first shape change it marks that dimension
dynamic and hands over a graph whose sizes are symbols (`SymInt` inputs).

codesign compiles static shapes only, so dynamic dimensions are **recompiled per shape**:
`CodesignGraph` compiles the piece for the concrete shapes (and integer arguments) of each
call, through `codesign.compile` of a module that calls the piece with those integers bound,
and keeps the last `max_shapes` variants (least recently used dropped). Parameters reach
the piece as graph inputs (Dynamo lifts them), so they are read live on every call.

A piece codesign cannot compile (an op it has no converter for, a non-tensor output, a
training-mode batch norm) runs eagerly with one warning naming why, unless
`options={"fallback": "error"}`. A call that autograd must record (grad enabled and an
input that requires grad) runs eagerly too, with one warning: generated code computes no
gradients; call the model under `torch.no_grad()` or `torch.inference_mode()`.

Registered through the `torch_dynamo_backends` entry point in `pyproject.toml` (`pip install
-e .` makes the name known to torch); `torch.compile(model, backend=codesign_backend)` works
without the installation.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

LOG = logging.getLogger(__name__)

COMPILE_OPTIONS = ("target", "pipeline", "backend", "backend_options", "check_indices", "options")
"""Options passed on to `codesign.compile` as they are."""

OWN_OPTIONS = ("max_shapes", "fallback")
"""Options of this backend: variants kept per graph, and what a graph codesign refuses does."""

FALLBACKS = ("eager", "error")


class DynamoFallbackWarning(UserWarning):
    """A graph (or a call) that Dynamo handed to codesign runs eagerly instead."""


@dataclass(frozen=True)
class DynamoOptions:
    """`torch.compile(..., options=...)` for the codesign backend, checked."""

    compile: Mapping[str, Any] = field(default_factory=dict)  # `codesign.compile` keyword arguments
    max_shapes: int = 8
    fallback: str = "eager"

    @staticmethod
    def parse(options: Mapping[str, Any] | None) -> "DynamoOptions":
        options = dict(options or {})
        unknown = sorted(set(options) - set(COMPILE_OPTIONS) - set(OWN_OPTIONS))
        if unknown:
            raise ValueError(f"torch.compile(backend=\"codesign\"): unknown option(s) {', '.join(map(repr, unknown))} "
                             f"(options: {', '.join(COMPILE_OPTIONS + OWN_OPTIONS)})")
        max_shapes = options.pop("max_shapes", 8)
        fallback = options.pop("fallback", "eager")
        if not isinstance(max_shapes, int) or max_shapes < 1:
            raise ValueError(f"torch.compile(backend=\"codesign\"): max_shapes={max_shapes!r} must be an int >= 1")
        if fallback not in FALLBACKS:
            raise ValueError(f"torch.compile(backend=\"codesign\"): fallback={fallback!r} is not one of "
                             f"{', '.join(FALLBACKS)}")
        return DynamoOptions(options, max_shapes, fallback)


class _Bound(torch.nn.Module):
    """A Dynamo graph with its non-tensor arguments (symbolic sizes, scalars) bound to the
    values of one call, so that only tensors remain as inputs and every shape is static."""

    def __init__(self, gm: torch.fx.GraphModule, args: Sequence[object]):
        super().__init__()
        self.gm = gm
        self.constants = {i: a for i, a in enumerate(args) if not isinstance(a, torch.Tensor)}
        self.arity = len(args)

    def forward(self, *tensors: torch.Tensor):
        given = iter(tensors)
        return self.gm(*[self.constants[i] if i in self.constants else next(given) for i in range(self.arity)])


def _key(args: Sequence[object]) -> tuple:
    """What one compiled variant is specialised for: each tensor's shape, dtype and device,
    and every other argument's value."""
    return tuple((tuple(a.shape), a.dtype, a.device.type) if isinstance(a, torch.Tensor) else (type(a), a)
                 for a in args)


@dataclass
class CodesignGraph:
    """What the backend returns for one Dynamo graph: called with the graph's arguments, it
    runs the variant compiled for their shapes (compiling it on first use)."""

    gm: torch.fx.GraphModule
    options: DynamoOptions
    name: str
    variants: OrderedDict = field(default_factory=OrderedDict)  # _key -> CompiledModule, or None (eager)
    _warned: set = field(default_factory=set)

    def __post_init__(self) -> None:
        output = next(n for n in self.gm.graph.nodes if n.op == "output")
        self._container = type(output.args[0]) if isinstance(output.args[0], (tuple, list)) else None

    def __call__(self, *args: object):
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            self._warn("autograd", "autograd is recording this call (an input requires grad) and generated code "
                                   "computes no gradients; call the model under torch.no_grad() or "
                                   "torch.inference_mode() to run it through codesign")
            return self.gm(*args)
        variant = self._variant(args)
        if variant is None:
            return self.gm(*args)
        out = variant(*[a for a in args if isinstance(a, torch.Tensor)])
        outs = out if isinstance(out, tuple) else (out,)
        return self._container(outs) if self._container is not None else outs[0]

    def _variant(self, args: Sequence[object]):
        key = _key(args)
        if key in self.variants:
            self.variants.move_to_end(key)
            return self.variants[key]
        variant = self._compile(args)
        self.variants[key] = variant
        while len(self.variants) > self.options.max_shapes:
            self.variants.popitem(last=False)
        return variant

    def _compile(self, args: Sequence[object]):
        """The graph compiled by codesign for these arguments; None (eager) when codesign
        refuses it and the fallback is eager."""
        import codesign
        from codesign.frontend.capture import CaptureError, capture
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        LOG.info("codesign: compiling %s for %s", self.name, [list(t.shape) for t in tensors])
        try:
            captured = capture(_Bound(self.gm, args), tuple(tensors), name=self.name)
        except CaptureError as exc:
            if self.options.fallback == "error":
                raise
            self._warn("capture", f"codesign cannot compile this graph ({exc}); it runs eagerly")
            return None
        return codesign.compile(captured, target=self.options.compile.get("target", "sn40l"),
                                **{k: v for k, v in self.options.compile.items() if k != "target"})

    def _warn(self, what: str, why: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"torch.compile(backend=\"codesign\"): {self.name}: {why}", DynamoFallbackWarning,
                          stacklevel=3)


def _graph_name() -> str:
    """`dynamo_<frame>_<compile>` from Dynamo's compile id (the IR's graph name), as its logs number them."""
    from torch._guards import CompileContext
    cid = CompileContext.current_compile_id()
    return f"dynamo_{cid.frame_id}_{cid.frame_compile_id}" if cid is not None else "dynamo_graph"


def codesign_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[object],
                     options: Mapping[str, Any] | None = None, **ignored: Any) -> Callable[..., Any]:
    """The `torch.compile` backend: `gm` (one graph Dynamo captured) as a `CodesignGraph`.
    `options` are `torch.compile`'s (`target`, `pipeline`, `backend`, `backend_options`,
    `check_indices`, `options` go to `codesign.compile`, whose defaults apply: target sn40l,
    whose host backend is the C++ one; `max_shapes`, `fallback` are ours).
    Nothing is compiled until the graph is called: its shapes may be symbolic here."""
    if ignored.get("mode") not in (None, "default"):
        raise ValueError(f"torch.compile(backend=\"codesign\"): mode={ignored['mode']!r} is not supported; "
                         "pass options={...} instead")
    return CodesignGraph(gm, DynamoOptions.parse(options), _graph_name())
