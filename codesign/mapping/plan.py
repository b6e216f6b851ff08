"""Mappings as group-plan data: written into a group's plan by `map`, read back by the cost
model, the report and the pictures — and by a resumed pipeline after a hand edit."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping as Map

from codesign.ir.graph import Graph
from codesign.ir.kernels import Kernel
from codesign.ir.plan import GroupPlan
from codesign.ir.types import TensorType
from codesign.mapping.check import check
from codesign.mapping.pipeline import PipelineCost, evaluate
from codesign.mapping.problem import Mapping, Problem, check_names, profile_kernel, stage_names
from codesign.targets import Target


def with_mapping(plan: GroupPlan, problem: Problem, mapping: Mapping) -> GroupPlan:
    """`plan` carrying `mapping` (its `map_*` keys)."""
    return replace(plan, map_tiles=mapping.tiles, map_stages=stage_names(problem), map_units=mapping.units,
                   map_memory=mapping.memory, map_sections=mapping.sections,
                   map_weights=tuple("resident" if r else "streamed" for r in mapping.resident))


def mapping_of(plan: GroupPlan) -> Mapping | None:
    if not plan.is_mapped:
        return None
    return Mapping(plan.map_tiles, tuple(plan.map_units), tuple(plan.map_memory), tuple(plan.map_sections),
                   tuple(w == "resident" for w in plan.map_weights))


def mapped_problem(graph: Graph, kernel: Kernel, target: Target,
                   types: Map[str, TensorType] | None = None) -> tuple[Problem, Mapping] | None:
    """The problem and mapping a mapped kernel's plan describes, checked (a stale or
    over-allocating hand edit is a `MappingError` naming the kernel); None when unmapped or
    the target has no spatial section."""
    if kernel.group is None or target.spatial is None:
        return None
    mapping = mapping_of(kernel.group.plan)
    if mapping is None:
        return None
    profile = profile_kernel(graph, kernel, target, types)
    check_names(kernel.key, kernel.group.plan.map_stages, stage_names(profile))
    problem = profile.problem(mapping.tiles)
    check(problem, mapping)
    return problem, mapping


def kernel_pipeline(graph: Graph, kernel: Kernel, target: Target,
                    types: Map[str, TensorType] | None = None) -> tuple[Problem, PipelineCost] | None:
    found = mapped_problem(graph, kernel, target, types)
    if found is None:
        return None
    problem, mapping = found
    return problem, evaluate(problem, mapping)
