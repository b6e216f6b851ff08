"""Expert switching: which experts to load, keep, evict and prefetch between memory tiers.

Mixture-of-experts and composition-of-experts models hold more expert weights than the
fast tier can. This package models the problem (:mod:`.problem`, :mod:`.trace`), scores any
policy with one discrete-event simulator (:mod:`.simulate`), provides baselines
(:mod:`.baselines`) and a CP-SAT schedule (:mod:`.ilp`), and ties them together in
:func:`schedule` / :func:`schedule_graph`. See docs/experts.md.

The ILP's names load on first use (`codesign.lazy`): CP-SAT (and the pandas it imports) is
loaded by the code that solves, not by `codesign experts simulate` or `codesign --help`.
"""

from typing import TYPE_CHECKING

from codesign.lazy import lazy_attributes

from .baselines import BASELINES, run_baselines
from .plan import Load, Plan, PlanError, check_plan
from .problem import (Expert, ExpertLink, InfeasibleError, Problem, expert_link, problem_for_target,
                      problem_from_trace, roofline_time)
from .schedule import Schedule, WindowReport, earliest_releases, schedule, schedule_graph
from .simulate import SimResult, chrome_trace, simulate, write_chrome_trace
from .trace import LOCALITY_LEVELS, Trace, TraceError, read_trace, trace_from_ids, write_trace, zipf_trace

if TYPE_CHECKING:
    from .ilp import IlpOptions, IlpResult, solve_window

__all__ = ["BASELINES", "Expert", "ExpertLink", "IlpOptions", "IlpResult", "InfeasibleError", "LOCALITY_LEVELS",
           "Load", "Plan", "PlanError", "Problem", "Schedule", "SimResult", "Trace", "TraceError", "WindowReport", "check_plan",
           "chrome_trace", "earliest_releases", "expert_link", "problem_for_target", "problem_from_trace",
           "read_trace", "roofline_time", "run_baselines", "schedule", "schedule_graph", "simulate", "solve_window",
           "trace_from_ids", "write_chrome_trace", "write_trace", "zipf_trace"]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), {
    "IlpOptions": ".ilp", "IlpResult": ".ilp", "solve_window": ".ilp"})
