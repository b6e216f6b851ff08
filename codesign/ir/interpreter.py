"""Reference interpreter: runs the IR with torch, one op at a time.

It is the numerics oracle for every pass and backend: a pass is correct when the graph it
returns interprets to the same values as the graph it was given. Weights are passed by
input name (`state`); runtime inputs positionally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.graph import Graph
from codesign.ir.ops import Call, get_op
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


class InterpreterError(RuntimeError):
    pass


def run_graph(graph: Graph, inputs: Sequence[torch.Tensor],
              state: Mapping[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Values of `graph.outputs` for the runtime `inputs` and the `state` tensors."""
    state = state or {}
    runtime = graph.runtime_inputs
    if len(inputs) != len(runtime):
        raise InterpreterError(f"graph @{graph.name} takes {len(runtime)} inputs "
                               f"({', '.join('%' + i.name for i in runtime)}), got {len(inputs)}")
    env: dict[str, torch.Tensor] = {}
    for inp, value in zip(runtime, inputs):
        if tuple(value.shape) != inp.type.shape:
            raise InterpreterError(f"input %{inp.name} expects shape {list(inp.type.shape)}, "
                                   f"got {list(value.shape)}")
        env[inp.name] = value
    for inp in graph.state_inputs:
        if inp.name not in state:
            raise InterpreterError(f"no value for {inp.kind.value} %{inp.name} (source {inp.source})")
        env[inp.name] = state[inp.name]
    for node in graph.nodes:
        op = get_op(node.op)
        regions = [lambda *args, g=region: run_graph(g, args, state)[0] for region in node.regions]
        call = Call([env[o] for o in node.operands], op.attr_values(node.attrs), node.type, regions)
        try:
            value = op.run(call)
        except Exception as exc:  # noqa: BLE001 - re-raised with the node named
            raise InterpreterError(f"%{node.name} = {node.op}(...) failed: {exc}") from exc
        if tuple(value.shape) != node.type.shape:
            raise InterpreterError(f"%{node.name} = {node.op}(...) produced shape {list(value.shape)}, "
                                   f"declared {list(node.type.shape)}")
        env[node.name] = value.to(node.type.dtype.torch)
    return [env[o] for o in graph.outputs]
