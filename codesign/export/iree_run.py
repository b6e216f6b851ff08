"""Compile an exported module with IREE for the host CPU and run it on torch tensors.

This is the check that the export means what the graph means: `compile_and_run` and
`codesign.ir.run_graph` take the same arguments and must return the same values.
bf16 crosses the boundary as its uint16 bit pattern (numpy has no bf16; ml_dtypes gives
the bit pattern a dtype IREE's runtime recognises).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from codesign.export.mlir import MlirExportError, MlirModule, to_mlir
from codesign.ir.graph import Graph, Input

# f64 stays f64 (IREE demotes it to f32 by default, changing the signature).
TARGET_ARGS = ["--iree-llvmcpu-target-cpu=host", "--iree-input-demote-f64-to-f32=false"]


def compile_module(module: MlirModule) -> bytes:
    """The IREE VM flatbuffer for the host CPU (llvm-cpu backend)."""
    import iree.compiler

    return iree.compiler.compile_str(module.text, target_backends=["llvm-cpu"], extra_args=TARGET_ARGS)


def compile_and_run(graph: Graph, inputs: Sequence[torch.Tensor],
                    state: Mapping[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Values of `graph.outputs`, computed by IREE; same arguments as `run_graph`."""
    outputs = IreeProgram(graph, state)(*inputs)
    return list(outputs) if isinstance(outputs, tuple) else [outputs]


def _arguments(graph: Graph, inputs: Sequence[torch.Tensor],
               state: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Runtime inputs positionally and state by name, in the function's argument order."""
    runtime = graph.runtime_inputs
    if len(inputs) != len(runtime):
        raise ValueError(f"graph @{graph.name} takes {len(runtime)} inputs "
                         f"({', '.join('%' + i.name for i in runtime)}), got {len(inputs)}")
    given = dict(zip((i.name for i in runtime), inputs))
    arguments = []
    for inp in graph.inputs:
        value = given[inp.name] if not inp.kind.is_state else _state_value(inp, state)
        if tuple(value.shape) != inp.type.shape or value.dtype != inp.type.dtype.torch:
            raise ValueError(f"%{inp.name} expects {inp.type}, got {list(value.shape)} {value.dtype}")
        arguments.append(value)
    return arguments


def _state_value(inp: Input, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if inp.name not in state:
        raise ValueError(f"no value for {inp.kind.value} %{inp.name} (source {inp.source})")
    return state[inp.name]


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(np.uint16).view(ml_dtypes.bfloat16)
    return tensor.numpy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


class IreeProgram:
    """`graph` exported, compiled by IREE once and loaded; call it with the runtime inputs
    (the `iree` backend's program). `source` is the exported MLIR."""

    def __init__(self, graph: Graph, state: Mapping[str, torch.Tensor] | None = None):
        import iree.runtime as ireert

        module = to_mlir(graph)
        self.graph, self.state, self.source = graph, dict(state or {}), module.text
        self._context = ireert.SystemContext(config=ireert.Config("local-task"))
        self._context.add_vm_module(ireert.VmModule.copy_buffer(self._context.instance, compile_module(module)))
        self._function = self._context.modules.module[module.func_name]

    def bind_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take the weights again (they changed); they are converted on every call."""
        self.state = dict(state)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        arguments = _arguments(self.graph, inputs, self.state)
        results = self._function(*(to_numpy(a) for a in arguments))
        if len(self.graph.outputs) == 1:
            return from_numpy(np.asarray(results))
        return tuple(from_numpy(np.asarray(r)) for r in results)


__all__ = ["IreeProgram", "MlirExportError", "compile_and_run", "compile_module", "from_numpy", "to_numpy"]
