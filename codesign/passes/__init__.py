"""Passes and the pass manager; importing this package registers every built-in pass."""

from codesign.passes import canonicalize, dce, fuse, group_norm, layout, map, partition, place, subpixel, tile  # noqa: F401  (registers the passes)
from codesign.passes.canonicalize import PATTERNS, Canonicalize, Pattern, Rewriter, apply_patterns
from codesign.passes.dce import DeadCodeElimination, eliminate_dead_nodes
from codesign.passes.manager import (DEFAULT_PIPELINE, Decision, Instrumentation, Ledger,
                                     PassContext, PassError, PassManager, PassTiming, PassVerifyError,
                                     add_instrumentation_args, dump_name, instrumentation_from_args,
                                     parse_dump_name, phase_of_dump, render_timings, run_pipeline)
from codesign.passes.registry import (PASSES, OptionSpec, Pass, PipelineError, UnknownPassError,
                                      format_pipeline, get_pass, parse_pipeline, register_pass)

__all__ = ["DEFAULT_PIPELINE", "PASSES", "PATTERNS", "Canonicalize", "DeadCodeElimination",
           "Decision", "Instrumentation", "Ledger", "OptionSpec", "Pass", "PassContext",
           "PassError", "PassManager", "PassTiming", "PassVerifyError", "Pattern", "PipelineError", "Rewriter",
           "UnknownPassError", "add_instrumentation_args", "apply_patterns", "dump_name",
           "eliminate_dead_nodes", "format_pipeline", "get_pass", "instrumentation_from_args",
           "parse_dump_name", "parse_pipeline", "phase_of_dump", "register_pass",
           "render_timings", "run_pipeline"]
