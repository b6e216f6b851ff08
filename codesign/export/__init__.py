"""Export graphs to MLIR (linalg on tensors) and run them with IREE on the CPU."""

from codesign.export.iree_run import compile_and_run, compile_module
from codesign.export.mlir import MlirModule, mlir_text, to_mlir
from codesign.export.mlir_builder import MlirExportError

__all__ = ["MlirExportError", "MlirModule", "compile_and_run", "compile_module", "mlir_text", "to_mlir"]
