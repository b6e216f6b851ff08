"""Export graphs to MLIR (linalg on tensors) and run them with IREE on the CPU.

Importing this package does not import iree (the CLI starts fast and registering the
`iree` backend is free): the names below load their module on first use.
"""

from dataclasses import dataclass
from importlib import import_module
from typing import ClassVar

from codesign.codegen.registry import Backend, register_backend

_LAZY = {"MlirExportError": "mlir_builder", "MlirModule": "mlir", "mlir_text": "mlir", "to_mlir": "mlir",
         "compile_and_run": "iree_run", "compile_module": "iree_run", "IreeProgram": "iree_run"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"codesign.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@register_backend
@dataclass(frozen=True)
class IreeBackend(Backend):
    """The graph exported to MLIR (`to_mlir`), compiled once by IREE for the host CPU and run
    by its runtime (`IreeProgram`); nodes without a lowering are refused up front."""

    name: ClassVar[str] = "iree"
    summary: ClassVar[str] = "MLIR (linalg on tensors) compiled by IREE (llvm-cpu) and run on the CPU"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    requires: ClassVar[tuple[str, ...]] = ("iree.compiler", "iree.runtime")
    source_suffix: ClassVar[str] = "mlir"

    def supports(self, graph):
        missing = super().supports(graph)
        if missing:
            return missing
        from codesign.export.mlir_lowerings import LOWERINGS
        reasons = [f"%{n.name} = {n.op}(...): op {n.op!r} has no MLIR lowering"
                   for n in graph.nodes if n.op not in LOWERINGS]
        return reasons or None

    def failures(self):
        from codesign.export.mlir_builder import MlirExportError
        return (MlirExportError,)

    def build(self, graph, state, target, options):
        from codesign.export.iree_run import IreeProgram
        return IreeProgram(graph, state)


__all__ = ["IreeBackend", "IreeProgram", "MlirExportError", "MlirModule", "compile_and_run", "compile_module",
           "mlir_text", "to_mlir"]
