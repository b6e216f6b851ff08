"""Triton backend: one `@triton.jit` kernel per fusion group, and a generated host wrapper.

Layers, as Inductor keeps them apart: `overrides` (op → Triton text), `indexing` (affine
maps → address arithmetic), `kernels` (templates: pointwise, row reduction, matmul with
prologue / epilogue, flash attention), `wrapper` (kernel choice, externs, host code) and
`module` (`TritonModule`: disk cache, import, call). The module runs the groups as the IR
says; `partition{backend=triton}` (the compiler runs it first) makes them runnable.

    mod = TritonModule(graph, state, target)      # CUDA tensors → GPU
    y = mod(x)                                     # CPU tensors → TRITON_INTERPRET=1
    print(mod.source); print(mod.report())
"""

from dataclasses import dataclass
from typing import ClassVar

from codesign.codegen.registry import Backend, PartitionRules, register_backend
from codesign.codegen.triton.fuse import fuse_all_pointwise, fuse_simple
from codesign.codegen.triton.module import INSTALL, TritonModule, cache_dir, cache_key
from codesign.codegen.triton.wrapper import Program, generate, wrapper_source


@register_backend
@dataclass(frozen=True)
class TritonBackend(Backend):
    """`TritonModule`: picked for CUDA tensors; pinned (`backend="triton"`) it also runs CPU
    tensors under TRITON_INTERPRET=1. Imports triton only when built. Options `cache`, and
    `check_indices` (default True; False leaves gathered indices unchecked: `safety`), and
    `cuda_graphs` (default True: on CUDA the program is captured once per input signature
    and replayed, `graphs`), `choose` (default True: GEMM and attention kernels measured
    against their library form at their first CUDA launch, the faster kept: `choice`)."""

    name: ClassVar[str] = "triton"
    summary: ClassVar[str] = "one @triton.jit kernel per fusion group and a generated host wrapper"
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    default_for: ClassVar[tuple[str, ...]] = ("cuda",)
    requires: ClassVar[tuple[str, ...]] = ("triton",)
    install: ClassVar[str] = INSTALL
    source_suffix: ClassVar[str] = "py"
    options: ClassVar[tuple[str, ...]] = ("cache", "check_indices", "cuda_graphs", "choose")
    nhwc_conv: ClassVar[bool] = True  # an extern cuDNN call on channels-last tensors (`wrapper`)

    def runs_as_kernel(self, template) -> bool:
        from codesign.codegen.triton.kernels import TEMPLATES
        return template in TEMPLATES

    def failures(self):
        from codesign.codegen.triton.kernels import Unfusable
        from codesign.codegen.triton.overrides import Unsupported
        return (Unfusable, Unsupported)

    def partition_rules(self, target) -> PartitionRules:
        """One template and one heavy anchor per kernel (`kernel_problem` probes a group with
        the templates), split groups regrouped by `fuse_simple`, trailing layout ops sunk."""
        from codesign.codegen.triton.kernels import TEMPLATES, is_anchor
        from codesign.codegen.triton.wrapper import kernel_problem
        from codesign.ir.kernels import statistics_of_same_rows
        from codesign.ir.ops import Template
        tiers = tuple(target.tier_names) if target is not None else ()
        return PartitionRules(templates=TEMPLATES, anchor=is_anchor,
                              regroup=lambda graph: fuse_simple(graph, keep_groups=True),
                              check=lambda graph, kernel: kernel_problem(graph, kernel, tiers),
                              library=(Template.gemm,),  # torch.matmul / F.linear: cuBLAS
                              shared_anchors=statistics_of_same_rows, bias_in_readers=True)

    def build(self, graph, state, target, options) -> TritonModule:
        return TritonModule(graph, state, target, cache=bool(options.get("cache", True)),
                            check_indices=bool(options.get("check_indices", True)),
                            cuda_graphs=bool(options.get("cuda_graphs", True)),
                            choose=bool(options.get("choose", True)))


__all__ = ["Program", "TritonBackend", "TritonModule", "cache_dir", "cache_key", "fuse_all_pointwise",
           "fuse_simple", "generate", "wrapper_source"]
