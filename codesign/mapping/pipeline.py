"""Pricing a mapping: the one exact evaluator every solver and report shares.

Per section, the stages run as a pipeline over the tiles. A stage takes, per tile, the
longest of its compute (its FLOPs over its units), its memory-unit traffic (over its memory
units) and the network boundary after it (the tiles of every edge crossing it). Identical
tiles through stages of times t_1..t_S finish after

    fill + (tiles - 1) x slowest + drain  =  sum(t_s) + (tiles - 1) x max(t_s)

(fill: the first tile reaching the slowest stage; drain: the last one leaving it), plus a
tile's first word crossing the mesh. Meanwhile the section's weights (once if resident,
every tile if streamed) and the kernel's inputs and outputs move at the reload tier; with
DMA (`Target.dma`) that overlaps the pipeline, else it comes first. Sections run one after
another, each switch costing a reconfiguration; values crossing a section boundary spill
to the reload tier and back.
"""

from __future__ import annotations

from dataclasses import dataclass

from codesign.mapping.problem import Mapping, Problem

COMPUTE, MEMORY, NETWORK = "compute", "memory-unit bandwidth", "network"


@dataclass(frozen=True)
class StageTime:
    """One stage's time per tile and what sets it."""

    name: str
    section: int
    units: int
    memory: int
    compute_ps: int
    memory_ps: int
    network_ps: int

    @property
    def ps(self) -> int:
        return max(self.compute_ps, self.memory_ps, self.network_ps)

    @property
    def cause(self) -> str:
        """compute, memory-unit bandwidth or network: the largest part (ties: in that order)."""
        parts = ((self.compute_ps, COMPUTE), (self.memory_ps, MEMORY), (self.network_ps, NETWORK))
        return max(parts, key=lambda p: p[0])[1]


@dataclass(frozen=True)
class SectionTime:
    index: int
    stages: tuple[int, ...]
    pipeline_ps: int
    load_ps: int
    bottleneck: int  # index (into the kernel's stages) of the slowest stage
    period_ps: int  # the slowest stage's time per tile
    ps: int  # the section's time (pipeline and loads, overlapped or not)

    @property
    def load_bound(self) -> bool:
        return self.load_ps > self.pipeline_ps


@dataclass(frozen=True)
class PipelineCost:
    """A mapping's predicted time, with every part a report shows."""

    tiles: int
    stages: tuple[StageTime, ...]
    sections: tuple[SectionTime, ...]
    switch_ps: int
    spill_ps: int
    ps: int

    @property
    def seconds(self) -> float:
        return self.ps / 1e12

    @property
    def bottleneck(self) -> StageTime:
        """The slowest stage of the section that takes longest."""
        section = max(self.sections, key=lambda s: (s.ps, -s.index))
        return self.stages[section.bottleneck]

    def bound(self, reload_tier: str) -> str:
        """What sets the kernel's time: the bottleneck stage's cause, the reload tier
        (weights and inputs arriving slower than the pipeline runs), or section switches."""
        pipe = sum(s.pipeline_ps for s in self.sections if not s.load_bound)
        load = sum(s.load_ps for s in self.sections if s.load_bound)
        if self.switch_ps + self.spill_ps > max(pipe, load):
            return "sections"
        if load > pipe:
            return reload_tier
        return self.bottleneck.cause

    def why(self, problem: Problem) -> str:
        """One line: the bottleneck and why, for reports."""
        b = self.bottleneck
        r = problem.resources
        bound = self.bound(r.reload_tier)
        if bound == "sections":
            return (f"{len(self.sections)} sections: switches and spills take "
                    f"{(self.switch_ps + self.spill_ps) / 1e6:.3g} us")
        detail = {COMPUTE: f"{b.units} {r.compute_name}s", MEMORY: f"{b.memory} {r.memory_name}s",
                  NETWORK: "the strip boundary after it"}[b.cause]
        stage = f"stage {b.name}: {b.cause} ({detail})"
        if bound == r.reload_tier:
            return f"weights and inputs from {r.reload_tier} outlast the pipeline (slowest {stage})"
        return stage


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def network_ps(problem: Problem, sections: tuple[int, ...], boundary: int) -> int:
    """One tile's traffic across the strip boundary after stage `boundary`, counting the
    edges that stay inside one section (the others spill)."""
    return sum(problem.edges[e].ps for e in problem.crossing(boundary)
               if sections[problem.edges[e].src] == sections[problem.edges[e].dst])


def evaluate(problem: Problem, mapping: Mapping) -> PipelineCost:
    """The predicted time of `mapping` (assumed feasible: `check.violations` says whether)."""
    r, tiles = problem.resources, problem.tiles
    stages = tuple(
        StageTime(s.name, mapping.sections[i], mapping.units[i], mapping.memory[i],
                  ceil_div(s.compute_ps, mapping.units[i]), ceil_div(s.memory_ps, mapping.memory[i]),
                  network_ps(problem, mapping.sections, i))
        for i, s in enumerate(problem.stages))
    sections = []
    for k in range(mapping.section_count):
        members = tuple(i for i, sec in enumerate(mapping.sections) if sec == k)
        times = [stages[i].ps for i in members]
        slowest = max(times)
        bottleneck = members[times.index(slowest)]
        pipe = sum(times) + (tiles - 1) * slowest + r.hop_fill_ps
        load = sum(problem.stages[i].io_ps + problem.stages[i].weight_ps * (1 if mapping.resident[i] else tiles)
                   for i in members)
        total = max(pipe, load) if r.overlap_loads else pipe + load
        sections.append(SectionTime(k, members, pipe, load, bottleneck, slowest, total))
    switches = r.reconfigure_ps * (len(sections) - 1)
    spills = sum(e.spill_ps for e in problem.edges if mapping.sections[e.src] != mapping.sections[e.dst])
    return PipelineCost(tiles, stages, tuple(sections), switches, spills,
                        sum(s.ps for s in sections) + switches + spills)
