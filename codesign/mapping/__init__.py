"""The dataflow mapper: each fused kernel as a pipeline of stages over a spatial chip's units.

`problem` (stages, edges and units in integers), `pipeline` (the one evaluator: fill +
(tiles - 1) x slowest + drain, network, loads, sections), `heuristic` (proportional to work:
the baseline and the warm start), `cpsat` (the exact model), `brute` (enumeration for small
kernels), `check` (the independent checker), `plan` (mappings in the group plan), `pictures`
(floor plan and trace). The `map` pass (`codesign.passes.map`) drives them.
"""

from codesign.mapping.check import check, violations
from codesign.mapping.pipeline import PipelineCost, evaluate
from codesign.mapping.problem import KernelProfile, Mapping, MappingError, Problem, profile_kernel

__all__ = ["KernelProfile", "Mapping", "MappingError", "PipelineCost", "Problem", "check", "evaluate",
           "profile_kernel", "violations"]
