"""The C++ backend: the whole graph as one standalone C++17 translation unit.

Layers, each apart (as Inductor keeps them): `scalar` is the op-to-text table (element
types, conversions, one expression per pointwise op); `exprs` inlines a kernel's
elementwise nodes into the loop body that needs them; `kernels` writes one function per
`Kernel` (loop nests from the structured IR, specialised emitters for GEMM, attention,
softmax and the norms); `wrapper` plans the buffers (inputs, outputs, one arena packed by
liveness) and writes the `extern "C" run(inputs, outputs)` entry; `build` compiles with
the system compiler (cached on disk) and `module` loads it with ctypes (`CppModule`) or
writes a CMake project (`export_cpp`). GEMMs run as output tiles in an OpenMP loop, each
tile one sgemm of OpenBLAS from the scipy-openblas32 wheel when installed (linked by
`build`, `CppModule.blas` names it) or the runtime prelude's packed hand GEMM otherwise,
followed by the group's fused epilogue while the tile is in cache.
"""

from dataclasses import dataclass
from typing import ClassVar

from codesign.codegen import CodegenError
from codesign.codegen.cpp.build import cache_dir
from codesign.codegen.cpp.module import CppModule, export_cpp
from codesign.codegen.cpp.wrapper import CppSource, generate
from codesign.codegen.registry import Backend, register_backend


@register_backend
@dataclass(frozen=True)
class CppBackend(Backend):
    """`CppModule` on CPU tensors; the generator refuses a graph with a `CodegenError` naming
    the node. Option `blas`: True / False / None (link scipy-openblas32 when installed);
    `check_indices` (default True): gathered indices are checked (an out-of-range one raises
    `IndexError`); False leaves them unchecked (`codesign.codegen.checks`); `profile` (default
    False): per-kernel timers built in (`CppModule.kernel_seconds`, `codesign.codegen.cpp.profiling`).

    No `partition_rules`: every convex group is one C++ function (its loops inlined, GEMM,
    attention and the norms emitted in place, a streamed layer's anchors one after the
    other), so `partition{backend=cpp}` is the identity."""

    name: ClassVar[str] = "cpp"
    summary: ClassVar[str] = "one C++17 translation unit, built with the system compiler, loaded with ctypes"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    default_for: ClassVar[tuple[str, ...]] = ("cpu",)
    source_suffix: ClassVar[str] = "cpp"
    options: ClassVar[tuple[str, ...]] = ("blas", "check_indices", "profile")

    def build(self, graph, state, target, options) -> CppModule:
        return CppModule(graph, state, target=target.name, blas=options.get("blas"),
                         check_indices=bool(options.get("check_indices", True)),
                         profile=bool(options.get("profile", False)))


__all__ = ["CodegenError", "CppBackend", "CppModule", "CppSource", "cache_dir", "export_cpp", "generate"]
