"""Three-tier placement and buffer planning (SRAM / HBM / DDR) with an ILP.

Decides where every tensor crossing a kernel boundary rests over time — the fast tier,
the home tier or a slower one — and at which address, jointly for all tiers:

* :mod:`.liveness` — lifetimes over the kernel order (weights, activations, KV, experts);
* :mod:`.problem` — the problem as linear occupancy / load tables and the exact evaluator
  (the cost model's roofline with per-tensor tiers, DMA staging, tensor-parallel sockets);
* :mod:`.greedy` — the SN40L spill rule (the baseline and the ILP's warm start);
* :mod:`.ilp` — the CP-SAT model (and brute force, for tests);
* :mod:`.repeated` — a repetition's middle layers tied to one steady-state layer's tiers;
* :mod:`.offsets` — buffer offsets per tier (best-fit; exact NoOverlap2D for small tiers);
* :mod:`.planner` — `place()`, `apply_tiers()`, infeasibility diagnosis;
* :mod:`.plan`, :mod:`.report` — the plan as data, the tables and the memory plot.
"""

from codesign.placement.greedy import GreedyOverflow, greedy
from codesign.placement.ilp import Solved, exhaustive, solve
from codesign.placement.liveness import KINDS, Live, liveness
from codesign.placement.offsets import Buffer, assign_offsets, best_fit, overlapping, peak_live
from codesign.placement.plan import PlacementPlan, StepTime, TensorPlacement, TierUse
from codesign.placement.planner import (METHODS, PlacementError, apply_tiers, buffers_of, diagnose, place,
                                        place_problem)
from codesign.placement.problem import (Evaluation, Problem, Step, Tensor, TierSpec, build_problem,
                                        contribution, evaluate, whole)
from codesign.placement.report import memory_plot, render

__all__ = ["KINDS", "METHODS", "Buffer", "Evaluation", "GreedyOverflow", "Live", "PlacementError",
           "PlacementPlan", "Problem", "Solved", "Step", "StepTime", "Tensor", "TensorPlacement", "TierSpec",
           "TierUse", "apply_tiers", "assign_offsets", "best_fit", "buffers_of", "build_problem", "contribution",
           "diagnose", "evaluate", "exhaustive", "greedy", "liveness", "memory_plot", "overlapping", "peak_live",
           "place", "place_problem", "render", "solve", "whole"]
