"""Triton backend: one `@triton.jit` kernel per fusion group, and a generated host wrapper.

Layers, as Inductor keeps them apart: `overrides` (op → Triton text), `indexing` (affine
maps → address arithmetic), `kernels` (templates: pointwise, row reduction, matmul with
prologue / epilogue, flash attention), `wrapper` (kernel choice, externs, host code) and
`module` (`TritonModule`: disk cache, import, call).

    mod = TritonModule(graph, state, target)      # CUDA tensors → GPU
    y = mod(x)                                     # CPU tensors → TRITON_INTERPRET=1
    print(mod.source); print(mod.report())
"""

from dataclasses import dataclass
from typing import ClassVar

from codesign.codegen.registry import Backend, register_backend
from codesign.codegen.triton.fuse import fuse_all_pointwise, fuse_simple
from codesign.codegen.triton.module import TritonModule, cache_dir, cache_key
from codesign.codegen.triton.wrapper import Program, generate, wrapper_source


@register_backend
@dataclass(frozen=True)
class TritonBackend(Backend):
    """`TritonModule`: picked for CUDA tensors; pinned (`backend="triton"`) it also runs CPU
    tensors under TRITON_INTERPRET=1. Imports triton only when built. Option `cache`."""

    name: ClassVar[str] = "triton"
    summary: ClassVar[str] = "one @triton.jit kernel per fusion group and a generated host wrapper"
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    default_for: ClassVar[tuple[str, ...]] = ("cuda",)
    requires: ClassVar[tuple[str, ...]] = ("triton",)
    source_suffix: ClassVar[str] = "py"
    options: ClassVar[tuple[str, ...]] = ("cache",)

    def failures(self):
        from codesign.codegen.triton.kernels import Unfusable
        from codesign.codegen.triton.overrides import Unsupported
        return (Unfusable, Unsupported)

    def build(self, graph, state, target, options) -> TritonModule:
        return TritonModule(graph, state, target, cache=bool(options.get("cache", True)))


__all__ = ["Program", "TritonBackend", "TritonModule", "cache_dir", "cache_key", "fuse_all_pointwise",
           "fuse_simple", "generate", "wrapper_source"]
