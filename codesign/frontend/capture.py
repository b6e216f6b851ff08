"""Capture a PyTorch model into the codesign graph IR.

torch.export (non-strict) gives an ATen graph with parameters lifted to inputs; we
decompose it to core ATen while keeping the composites we model as named ops (linear,
SDPA, the norms, GELU/SiLU, softmax, upsample), then convert node by node. Models on the
`meta` device capture too — shapes are all planning needs. Should export refuse a model, fx
tracing with fake tensors (make_fx) is tried instead.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch._decomp import get_decompositions
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind as ExportInputKind
from torch.export.graph_signature import OutputKind as ExportOutputKind

from codesign.frontend import aten
from codesign.frontend.attention import recognize_attention
from codesign.ir.builder import GraphBuilder, sanitize
from codesign.frontend.repeat import PREFIX, check_state, expand, repeated_layers, truncated
from codesign.frontend.moe import MoeBlockError, check_moe_blocks, moe_leaf_modules
from codesign.frontend.signature import Arg, Signature, WriteBack
from codesign.frontend.state import LiveState
from codesign.ir.graph import Graph, Input, InputKind
from codesign.ir.types import TensorType
from codesign.ir.verifier import verify


@dataclass(frozen=True)
class CapturedModel:
    """A graph plus the tensors of its state inputs (weights, buffers), keyed by input name;
    captured from a module, `state` is a `LiveState` that reads them from the module on each access."""

    graph: Graph
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)
    method: str = "export"  # how it was captured: "export" or "make_fx"
    signature: Signature | None = None  # None: the graph's own (`Signature.plain`)

    @property
    def is_meta(self) -> bool:
        return any(t.device.type == "meta" for t in self.state.values())

    @property
    def calling(self) -> Signature:
        """How a call maps onto the graph: inputs checked, buffers threaded, updates written back."""
        return self.signature if self.signature is not None else Signature.plain(self.graph)

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """The model's outputs for `inputs` by the reference interpreter; in-place updates of
        buffers and inputs are written back, as eager does."""
        from codesign.ir.interpreter import run_graph
        with torch.no_grad():
            return list(self.calling.call(lambda *args: run_graph(self.graph, args, self.state), inputs))


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
        first = ".".join(ops[0].split(".")[:2])  # aten.i0.default -> aten.i0
        super().__init__(f"{len(ops)} unsupported ATen op(s) ({', '.join(ops)}), "
                         f"{len(unsupported)} use(s):\n{lines}\n"
                         f"Teach codesign an op from your own code: codesign.frontend.register_converter(\"{first}\", "
                         "fn) (see its docstring), or rewrite the model code.")


# Composite ops we keep whole: each maps to one named IR op.
_KEEP = ("scaled_dot_product_attention.default", "linear.default", "layer_norm.default",
         "group_norm.default", "gelu.default", "silu.default", "softmax.int", "log_softmax.int",
         "upsample_nearest2d.vec", "upsample_nearest2d.default", "rms_norm.default", "matmul.default",
         "pixel_shuffle.default", "pixel_unshuffle.default", "adaptive_avg_pool2d.default",
         "conv2d.default", "conv1d.default", "conv3d.default")


# Core ATen ops that the default table keeps but no IR op models: torch's own decompositions
# (source coordinates from `arange`, `index` gathers, lerps) lower them to ops that convert.
_DECOMPOSE = ("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d")


def decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    table.update(get_decompositions([getattr(torch.ops.aten, name) for name in _DECOMPOSE]))
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


_LIBRARY_DIRS = tuple(str(p) + os.sep for p in (Path(torch.__file__).resolve().parent, Path(__file__).resolve().parents[1]))
"""Frames in these packages are torch's or codesign's, never the user's line."""


def _source_line(node: torch.fx.Node) -> str:
    """`file:line` of the innermost frame of the user's code that led to `node`: the line
    of their model, not `torch/nn/modules/...` (frames inside torch's and codesign's own
    packages are skipped, by where the package is installed, not by a name in the path)."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    for path, line in reversed(frames):
        if not os.path.realpath(path).startswith(_LIBRARY_DIRS):
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
               state_lookup, placeholders: dict[str, str] | None = None) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Convert an ATen-level fx graph to IR; `state_lookup(target)` returns state tensors;
    `placeholders`, when given, is filled with the IR input name of each fx placeholder."""
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
            if placeholders is not None:
                placeholders[node.name] = ir_name
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
            elif isinstance(value, tuple) and index < len(value) and value[index] is not None:
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
            why = ("an in-place update, which this capture cannot write back: capture with torch.export "
                   "(method=\"export\"), which does" if packet.endswith("_") and not packet.startswith("_") else "")
            unsupported.append(UnsupportedOp(op_name, _module_path(node), _source_line(node), why))
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


TRAIN_MODES = ("refuse", "eval")


def capture(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor, *,
            name: str | None = None, method: str = "auto", attention: bool = True,
            train_mode: str = "refuse", reuse: bool = True) -> CapturedModel:
    """Bring `model` (called on `example_inputs`) into the IR; the graph is verified.

    `method`: "export" (torch.export, non-strict), "make_fx" (fx tracing with fake tensors),
    or "auto" (export, falling back to make_fx when export refuses the model).

    Modules are captured in the mode they are in, so the graph computes what eager does.
    `train_mode`: "refuse" (the default) refuses a model with a module in training mode
    whose training forward differs from its inference forward (BatchNorm, InstanceNorm with
    running statistics, Dropout with p > 0, ...); "eval" captures the model as if
    `model.eval()` had been called (running statistics, no dropout) and restores every
    module's own mode afterwards.

    `reuse`: a model whose longest `ModuleList` holds identical layers is traced with its
    first three and the rest stamped out in the IR (`codesign.frontend.repeat`; the same
    graph, name for name, in a fraction of the time); False traces every layer.
    """
    if method not in ("auto", "export", "make_fx"):
        raise ValueError(f"capture method {method!r} is not one of auto, export, make_fx")
    if train_mode not in TRAIN_MODES:
        raise ValueError(f"train_mode {train_mode!r} is not one of {', '.join(TRAIN_MODES)}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    inputs = tuple(example_inputs)
    name = name or _name_of(model)
    if train_mode == "refuse":
        _refuse_training(model)
        return _capture_reusing(model, inputs, name, method, attention, reuse)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return _capture_reusing(model, inputs, name, method, attention, reuse)
    finally:
        for module, training in modes:  # each module's own mode: a model may mix them
            module.training = training


def training_sensitive(model: torch.nn.Module) -> list[str]:
    """The modules of `model` in training mode whose forward differs from their inference
    forward (`path (Type): why`)."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd
    from torch.nn.modules.instancenorm import _InstanceNorm
    found = []
    for path, m in model.named_modules():
        if not m.training:
            continue
        why = ""
        if isinstance(m, _InstanceNorm):
            why = "updates its running statistics" if m.track_running_stats else ""
        elif isinstance(m, _BatchNorm):
            why = "normalises with batch statistics and updates its running statistics"
        elif isinstance(m, _DropoutNd) and m.p > 0:
            why = f"drops activations at random (p={m.p})"
        elif isinstance(m, (torch.nn.MultiheadAttention, torch.nn.RNNBase)) and m.dropout > 0:
            why = f"drops activations at random (dropout={m.dropout})"
        elif isinstance(m, torch.nn.RReLU):
            why = "draws random slopes"
        elif getattr(m, "jitter_noise", 0):
            why = f"multiplies its input by random jitter (jitter_noise={m.jitter_noise})"
        if why:
            found.append(f"{path or '<top>'} ({type(m).__name__}): {why}")
    return found


def _refuse_training(model: torch.nn.Module) -> None:
    found = training_sensitive(model)
    if found:
        lines = "\n".join(f"  - {f}" for f in found)
        raise CaptureError(f"{type(model).__name__} is in training mode, where {len(found)} module(s) compute "
                           f"something else than in inference:\n{lines}\n"
                           "Call model.eval() before compiling, or pass train_mode=\"eval\" to compile it "
                           "with inference semantics (the model's mode is left as it is).")


def _capture_reusing(model: torch.nn.Module, inputs: tuple, name: str, method: str, attention: bool,
                     reuse: bool) -> CapturedModel:
    """`_capture` of the model with its repeated layers traced once (`codesign.frontend.repeat`)
    where the checks there hold, else of the whole model."""
    layers = repeated_layers(model) if reuse else None
    if layers is not None:
        path, full = layers
        try:
            with truncated(model, path, PREFIX):
                prefix = _capture(model, inputs, name, method, attention)
        except CaptureError:
            prefix = None  # e.g. a forward that indexes past the traced layers: trace them all
        graph = expand(prefix.graph, path, len(full)) if prefix is not None and not prefix.calling.write_backs else None
        if graph is not None and check_state(graph, model):
            state = {i.name: prefix.state[i.name] if i.name in prefix.state else _named_state(model, i.source)
                     for i in graph.state_inputs}
            return replace(prefix, graph=verify(graph), state=LiveState.of(model, graph, state))
    return _capture(model, inputs, name, method, attention)


def _named_state(model: torch.nn.Module, key: str) -> torch.Tensor:
    try:
        return model.get_parameter(key)
    except AttributeError:
        return model.get_buffer(key)


def _capture(model: torch.nn.Module, inputs: tuple, name: str, method: str, attention: bool) -> CapturedModel:
    export_error: Exception | None = None
    try:
        check_moe_blocks(model)
    except MoeBlockError as exc:
        raise CaptureError(str(exc)) from exc
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
                return _from_export(model, ep, name, attention)
        try:
            gm, kinds, fx_state = _make_fx(model, inputs)
        except Exception as fx_error:  # noqa: BLE001
            before = f"torch.export failed: {_first_line(export_error)}\n" if export_error else ""
            raise CaptureError(f"{before}fx tracing (make_fx) failed: {_first_line(fx_error)}") from fx_error
        graph, state = convert_fx(gm, name, kinds, fx_state.__getitem__)
        graph = _finish(graph, attention)
        return CapturedModel(graph, LiveState.of(model, graph, state), "make_fx")


def _from_export(model: torch.nn.Module, ep: ExportedProgram, name: str, attention: bool) -> CapturedModel:
    """The graph of an exported program, with its calling convention: buffers the forward
    updates in place become runtime inputs (fed the module's own tensors on every call) and
    their new values outputs that the call copies back, as do updated inputs."""
    sig = ep.graph_signature
    kinds = _input_kinds(ep)
    user = [s.arg.name for s in sig.input_specs if s.kind is ExportInputKind.USER_INPUT]
    placeholder_of = {s.target: s.arg.name for s in sig.input_specs
                      if s.kind in (ExportInputKind.BUFFER, ExportInputKind.PARAMETER)}
    threaded: dict[str, str] = {}  # placeholder -> state-dict key of each updated buffer / parameter
    updates: list[tuple[str, str] | None] = []  # per output: (kind, target) of an update, or None
    for spec in sig.output_specs:
        if spec.kind is ExportOutputKind.USER_OUTPUT:
            updates.append(None)
        elif spec.kind in (ExportOutputKind.BUFFER_MUTATION, ExportOutputKind.PARAMETER_MUTATION):
            threaded[placeholder_of[spec.target]] = spec.target
            updates.append(("buffer", spec.target))
        elif spec.kind is ExportOutputKind.USER_INPUT_MUTATION:
            updates.append(("input", spec.target))
        else:
            raise CaptureError(f"the exported program has a {spec.kind.name} output ({spec.arg}); "
                               "codesign captures inference graphs only")
    for placeholder in threaded:
        kinds[placeholder] = (InputKind.input, threaded[placeholder])  # named by its key
    ir_name: dict[str, str] = {}
    graph, state = convert_fx(ep.graph_module, name, kinds, lambda t: _state_tensor(ep, t), ir_name)
    graph = _finish(graph, attention)
    fx_name = {ir: fx for fx, ir in ir_name.items()}
    vals = {n.name: n.meta["val"] for n in ep.graph_module.graph.nodes if n.op == "placeholder"}
    runtime = tuple(user.index(fx_name[i.name]) if fx_name[i.name] in user else i.name
                    for i in graph.runtime_inputs)
    outputs = tuple(None if u is None else
                    WriteBack("buffer", u[1], ir_name[placeholder_of[u[1]]]) if u[0] == "buffer" else
                    WriteBack("input", u[1], user.index(u[1])) for u in updates)
    buffers = {ir_name[p]: _module_tensor(model, ep, key) for p, key in threaded.items()}
    keys = {ir_name[p]: key for p, key in threaded.items()}
    signature = Signature(name, tuple(Arg(fx, aten.result_type(vals[fx])) for fx in user), runtime, outputs,
                          LiveState.of(model, graph, buffers, keys))
    return CapturedModel(graph, LiveState.of(model, graph, state), "export", signature)


def _module_tensor(model: torch.nn.Module, ep: ExportedProgram, key: str) -> torch.Tensor:
    """The module's own buffer (or parameter) `key`: what eager updates in place."""
    for getter in (model.get_buffer, model.get_parameter):
        try:
            return getter(key)
        except AttributeError:
            continue
    return _state_tensor(ep, key)


def _finish(graph: Graph, attention: bool) -> Graph:
    if attention:
        graph = recognize_attention(graph)
    return verify(graph)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

