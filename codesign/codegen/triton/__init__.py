"""Triton backend: one `@triton.jit` kernel per fusion group, and a generated host wrapper.

Layers, as Inductor keeps them apart: `overrides` (op → Triton text), `indexing` (affine
maps → address arithmetic), `kernels` (templates: pointwise, row reduction, matmul with
prologue / epilogue, flash attention), `wrapper` (kernel choice, externs, host code) and
`module` (`TritonModule`: disk cache, import, call).

    mod = TritonModule(graph, state, target)      # CUDA tensors → GPU
    y = mod(x)                                     # CPU tensors → TRITON_INTERPRET=1
    print(mod.source); print(mod.report())
"""

from codesign.codegen.triton.fuse import fuse_all_pointwise, fuse_simple
from codesign.codegen.triton.module import TritonModule, cache_dir, cache_key
from codesign.codegen.triton.wrapper import Program, generate, wrapper_source

__all__ = ["Program", "TritonModule", "cache_dir", "cache_key", "fuse_all_pointwise", "fuse_simple",
           "generate", "wrapper_source"]
