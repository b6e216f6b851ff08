"""Capture a PyTorch model into the codesign graph IR.

torch.export (non-strict) gives an ATen graph with parameters lifted to inputs; we
decompose it to core ATen while keeping the composites we model as named ops (linear,
SDPA, the norms, GELU/SiLU, softmax, upsample), then convert node by node. Models on the
`meta` device capture too — shapes are all planning needs. Should export refuse a model, fx
tracing with fake tensors (make_fx) is tried instead.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind as ExportInputKind

from codesign.frontend import aten
from codesign.frontend.attention import recognize_attention
from codesign.frontend.builder import GraphBuilder, sanitize
from codesign.frontend.moe import moe_leaf_modules
from codesign.ir.graph import Graph, Input, InputKind
from codesign.ir.types import TensorType
from codesign.ir.verifier import verify


@dataclass(frozen=True)
class CapturedModel:
    """A graph plus the tensors of its state inputs (weights, buffers), keyed by input name."""

    graph: Graph
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)
    method: str = "export"  # how it was captured: "export" or "make_fx"

    @property
    def is_meta(self) -> bool:
        return any(t.device.type == "meta" for t in self.state.values())

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        from codesign.ir.interpreter import run_graph
        return run_graph(self.graph, inputs, self.state)


@dataclass(frozen=True)
class UnsupportedOp:
    op: str
    module: str
    source: str
    reason: str = ""

    def __str__(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{self.op} in {self.module or '<top>'} at {self.source or '<unknown>'}{why}"


class CaptureError(Exception):
    """The model could not be brought into the IR; the message says why and where."""


class UnsupportedOpsError(CaptureError):
    def __init__(self, unsupported: Sequence[UnsupportedOp]):
        self.unsupported = list(unsupported)
        ops = sorted({u.op for u in unsupported})
        lines = "\n".join(f"  - {u}" for u in unsupported)
        super().__init__(f"{len(ops)} unsupported ATen op(s) ({', '.join(ops)}), "
                         f"{len(unsupported)} use(s):\n{lines}\n"
                         "Add a converter in codesign/frontend/aten.py, or rewrite the model code.")


# Composite ops we keep whole: each maps to one named IR op.
_KEEP = ("scaled_dot_product_attention.default", "linear.default", "layer_norm.default",
         "group_norm.default", "gelu.default", "silu.default", "softmax.int", "log_softmax.int",
         "upsample_nearest2d.vec", "upsample_nearest2d.default", "rms_norm.default", "matmul.default",
         "pixel_shuffle.default", "pixel_unshuffle.default", "adaptive_avg_pool2d.default",
         "conv2d.default", "conv1d.default", "conv3d.default")


def decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    for name in (*_KEEP, *sorted(aten.KEPT_WHOLE)):
        packet, overload = name.split(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None:
            table.pop(op, None)
    return table


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L\['self'\]\.?", "", str(path))


def _source_line(node: torch.fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    for path, line in reversed(frames):
        if "/torch/" not in path:
            return f"{path}:{line}"
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else ""


def _op_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._overloadpacket.__name__}.{target._overloadname}" \
            if target.namespace == "aten" else f"{target.namespace}.{target._overloadpacket.__name__}"
    return getattr(target, "__name__", str(target))


def _input_kinds(ep: ExportedProgram) -> dict[str, tuple[InputKind, str | None]]:
    kinds = {}
    for spec in ep.graph_signature.input_specs:
        name = spec.arg.name if hasattr(spec.arg, "name") else None
        if spec.kind is ExportInputKind.PARAMETER:
            kinds[name] = (InputKind.param, spec.target)
        elif spec.kind is ExportInputKind.BUFFER:
            kinds[name] = (InputKind.buffer, spec.target)
        elif spec.kind in (ExportInputKind.CONSTANT_TENSOR, ExportInputKind.CUSTOM_OBJ):
            kinds[name] = (InputKind.const, spec.target)
        else:
            kinds[name] = (InputKind.input, None)
    return kinds


def _state_tensor(ep: ExportedProgram, target: str) -> torch.Tensor:
    if target in ep.state_dict:
        return ep.state_dict[target]
    return ep.constants[target]


def convert_fx(gm: torch.fx.GraphModule, name: str,
               input_kinds: Mapping[str, tuple[InputKind, str | None]],
               state_lookup) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Convert an ATen-level fx graph to IR; `state_lookup(target)` returns state tensors."""
    b = GraphBuilder(name)
    env: dict[torch.fx.Node, Any] = {}
    state: dict[str, torch.Tensor] = {}
    unsupported: list[UnsupportedOp] = []
    outputs: list[str] = []

    def lookup(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            value = env.get(a)
            if isinstance(value, _Missing):
                raise _Skip()
            return value
        if isinstance(a, (list, tuple)):
            return type(a)(lookup(x) for x in a)
        if isinstance(a, dict):
            return {k: lookup(v) for k, v in a.items()}
        return a

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            if not isinstance(val, torch.Tensor):
                raise CaptureError(f"input {node.name} is not a tensor ({type(val).__name__}); "
                                   "pass tensors only as example inputs")
            kind, source = input_kinds.get(node.name, (InputKind.input, None))
            display = source if source else node.name
            ir_name = b.add_input(Input(sanitize(display), aten.result_type(val), kind, source))
            env[node] = aten.Val(ir_name)
            if kind.is_state:
                state[ir_name] = state_lookup(source)
            continue
        if node.op == "get_attr":
            tensor = getattr(gm, node.target)
            ir_name = b.add_input(Input(sanitize(node.target), TensorType.of(tensor), InputKind.const, node.target))
            env[node] = aten.Val(ir_name)
            state[ir_name] = tensor
            continue
        if node.op == "output":
            for out in node.args[0]:
                value = env.get(out) if isinstance(out, torch.fx.Node) else None
                if value is None or isinstance(value, _Missing):
                    if not unsupported:
                        raise CaptureError(f"model output {out} is not a tensor; return tensors only")
                    continue
                outputs.append(value)
            continue
        if node.op != "call_function":
            raise CaptureError(f"unexpected fx node kind {node.op} ({node.name})")
        if node.target is aten.GETITEM:
            source, index = node.args
            value = env.get(source)
            if isinstance(value, _Missing):
                env[node] = value
            elif isinstance(value, tuple) and value[index] is not None:
                env[node] = value[index]
            else:
                env[node] = _Missing()
                unsupported.append(UnsupportedOp(f"{_op_name(source.target)}[{index}]", _module_path(node),
                                                 _source_line(node), "this output is not supported"))
            continue
        op_name = _op_name(node.target)
        packet = op_name.split(".")[1] if op_name.startswith("aten.") else op_name
        if packet in aten.DROPPED:
            continue
        converter = aten.CONVERTERS.get(packet) if op_name.startswith("aten.") or "." not in op_name \
            else aten.CONVERTERS.get(op_name)
        if converter is None:
            env[node] = _Missing()
            unsupported.append(UnsupportedOp(op_name, _module_path(node), _source_line(node)))
            continue
        dynamic = _dynamic_shape(node)
        if dynamic:
            env[node] = _Missing()
            unsupported.append(UnsupportedOp(op_name, _module_path(node), _source_line(node), dynamic))
            continue
        b.loc = _module_path(node) or None
        try:
            args, kwargs = lookup(node.args), lookup(node.kwargs)
            env[node] = converter(aten.Ctx(b, node, node.name), *args, **kwargs)
        except _Skip:
            env[node] = _Missing()
        except (aten.ConversionError, ValueError, KeyError, TypeError) as exc:
            env[node] = _Missing()
            unsupported.append(UnsupportedOp(op_name, _module_path(node), _source_line(node), str(exc)))
    if unsupported:
        raise UnsupportedOpsError(unsupported)
    return b.finish(outputs), state


def _dynamic_shape(node: torch.fx.Node) -> str:
    """Why a node's result has no static shape ("" when it has one)."""
    val = node.meta.get("val")
    if isinstance(val, torch.SymInt):
        return "computes a size at run time (data-dependent); codesign needs static shapes"
    if isinstance(val, torch.Tensor) and not all(isinstance(s, int) for s in val.shape):
        return (f"has a data-dependent shape {list(val.shape)}; codesign needs static shapes "
                "(e.g. replace boolean-mask indexing with torch.where)")
    return ""


class _Missing:
    """Marks the value of an fx node that could not be converted (reported once, at its op)."""


class _Skip(Exception):
    pass


def _name_of(model: torch.nn.Module) -> str:
    return sanitize(type(model).__name__)


def _export(model: torch.nn.Module, inputs: tuple) -> ExportedProgram:
    ep = torch.export.export(model, inputs, strict=False)
    return ep.run_decompositions(decomposition_table())


def _make_fx(model: torch.nn.Module, inputs: tuple) -> tuple[torch.fx.GraphModule, dict, dict]:
    """Trace with fake tensors, weights passed in as inputs (so they become graph inputs)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    state = {**params, **buffers}

    def forward(state_args, *args):
        return torch.func.functional_call(model, state_args, args)

    gm = make_fx(forward, decomposition_table=decomposition_table(), tracing_mode="fake",
                 record_stack_traces=True)(state, *inputs)
    gm.graph.eliminate_dead_code()  # unused outputs of tuple ops (batch-norm statistics, ...)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    kinds = {}
    for node, key in zip(placeholders, state):
        kinds[node.name] = (InputKind.param if key in params else InputKind.buffer, key)
    return gm, kinds, state


def capture(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor, *,
            name: str | None = None, method: str = "auto", attention: bool = True) -> CapturedModel:
    """Bring `model` (called on `example_inputs`) into the IR; the graph is verified.

    `method`: "export" (torch.export, non-strict), "make_fx" (fx tracing with fake tensors),
    or "auto" (export, falling back to make_fx when export refuses the model).
    """
    if method not in ("auto", "export", "make_fx"):
        raise ValueError(f"capture method {method!r} is not one of auto, export, make_fx")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    inputs = tuple(example_inputs)
    name = name or _name_of(model)
    was_training = model.training
    model.eval()  # capture the inference graph; the user's mode is restored below
    try:
        return _capture(model, inputs, name, method, attention)
    finally:
        model.train(was_training)


def _capture(model: torch.nn.Module, inputs: tuple, name: str, method: str, attention: bool) -> CapturedModel:
    export_error: Exception | None = None
    with moe_leaf_modules(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if method in ("auto", "export"):
            try:
                ep = _export(model, inputs)
            except Exception as exc:  # noqa: BLE001 - reported below, with the fallback's error
                if method == "export":
                    raise CaptureError(f"torch.export failed: {_first_line(exc)}") from exc
                export_error = exc
            else:
                graph, state = convert_fx(ep.graph_module, name, _input_kinds(ep),
                                          lambda t: _state_tensor(ep, t))
                return CapturedModel(_finish(graph, attention), state, "export")
        try:
            gm, kinds, fx_state = _make_fx(model, inputs)
        except Exception as fx_error:  # noqa: BLE001
            before = f"torch.export failed: {_first_line(export_error)}\n" if export_error else ""
            raise CaptureError(f"{before}fx tracing (make_fx) failed: {_first_line(fx_error)}") from fx_error
        graph, state = convert_fx(gm, name, kinds, fx_state.__getitem__)
        return CapturedModel(_finish(graph, attention), state, "make_fx")


def _finish(graph: Graph, attention: bool) -> Graph:
    if attention:
        graph = recognize_attention(graph)
    return verify(graph)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

