"""The placement problem as data, and its one exact evaluator.

Everything a placement changes is *linear* in how much of each tensor sits in each tier,
so the problem is a table of per-(tensor, tier) contributions:

* **occupancy** — bytes a tier holds over an interval of program points (the tensor's
  lifetime in its resting tier; staging buffers in the home tier for a slower tier);
* **load** — bytes a kernel moves at a tier, which the roofline turns into time.

A tensor resting in the home tier (HBM) or faster is read and written there. A tensor
resting in a slower tier (DDR, flash) is, on a target with DMA, *staged*: prefetched into
the home tier during the kernel before each reader (the transfer overlaps that kernel's
compute; the staging buffer occupies the home tier at both points) and drained to its tier
during the kernel after its producer. A staging buffer holds at most `Problem.stage` bytes
(by default 1/16 of the home tier): what does not fit streams through it while the kernel
runs, so its transfer overlaps that kernel only. Without DMA the kernel reads and writes it
in place. For a split tensor the staging buffer scales with the share (a linearisation).
The program repeats (steady state), so the kernel before the first is the last one.

A kernel's time is the cost model's roofline over every tier, plus serial collectives on
multi-socket targets:

    time_k = launch + comm_k + max(compute_k, load_k[t] / bandwidth_t for every tier t)

Figures are per socket: with `sockets > 1` weights are split tensor-parallel (2-D weights
hold 1/sockets of their bytes on each socket), activations are replicated, compute and the
cost model's fast-tier bytes divide by the socket count, and `comm_k` is the ring
all-reduce / all-gather time of the kernel's tensor-parallel collectives over the
interconnect.

`evaluate(problem, assignment)` is the only place times and capacities are computed in
floating point; the greedy, the ILP and brute force all report through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping, Sequence

from codesign.ir.graph import Graph, InputKind
from codesign.ir.kernels import Kernel, kernels as graph_kernels
from codesign.ir.ops import OpKind, Template, get_op, node_structure
from codesign.ir.plan import chip_rereads
from codesign.placement.liveness import liveness

Assignment = Mapping[str, Mapping[str, int]]
"""tensor name → {tier: chunks}; chunks of one tensor sum to `Problem.split` (or to 1 for a
tensor that may not be split, whose single chunk counts as the whole)."""


@dataclass(frozen=True)
class TierSpec:
    """One tier as placement sees it, per socket: usable capacity and bandwidth."""

    name: str
    capacity: int
    bandwidth: float
    holds: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One program point (a kernel): its fixed costs and the bytes no placement changes."""

    key: str
    name: str
    compute: float  # seconds, per socket
    base: Mapping[str, float] = field(default_factory=dict)  # tier -> bytes independent of placement
    launch: float = 0.0
    comm: float = 0.0  # serial collective time (multi-socket)
    free: bool = False  # folded constants: no time at all


@dataclass(frozen=True)
class Tensor:
    """One placed tensor, per socket: its lifetime, readers (with re-read factors), writer."""

    name: str
    kind: str
    nbytes: int
    start: int
    end: int
    tiers: tuple[str, ...]  # tiers that may hold it, fastest first
    reads: tuple[tuple[int, float], ...] = ()  # (step, times read)
    writer: int | None = None
    splittable: bool = False
    state: bool = False

    @property
    def volume(self) -> float:
        """Bytes the kernels move of this tensor per run (reads with re-reads, plus the write)."""
        return self.nbytes * (sum(r for _, r in self.reads) + (1 if self.writer is not None else 0))


@dataclass(frozen=True)
class Problem:
    """Steps in order, tensors, tiers fastest first; `home` is where tensors live by default."""

    name: str
    steps: tuple[Step, ...]
    tensors: tuple[Tensor, ...]
    tiers: tuple[TierSpec, ...]
    home: str
    dma: bool = True
    split: int = 1
    sockets: int = 1
    target: str = ""
    stage: int = 0  # bytes of a staging buffer in the home tier (0: a whole tensor)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tiers]
        if self.home not in names:
            raise ValueError(f"home tier {self.home!r} is not one of {names}")
        for t in self.tensors:
            if not t.tiers:
                raise ValueError(f"tensor {t.name!r} ({t.kind}) has no tier that holds {t.kind}")

    @cached_property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)  # asked for every contribution: computed once

    def tier(self, name: str) -> TierSpec:
        return next(t for t in self.tiers if t.name == name)

    def rank(self, tier: str) -> int:
        return self.tier_names.index(tier)

    def staged(self, tier: str) -> bool:
        """Whether tensors resting in `tier` are staged through the home tier (DMA)."""
        return self.dma and self.rank(tier) > self.rank(self.home)

    def chunks(self, tensor: Tensor) -> int:
        return self.split if tensor.splittable and self.split > 1 else 1

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)


# -- contributions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Contribution:
    """What resting all of one tensor in one tier costs: occupancy and loads."""

    occupancy: tuple[tuple[str, int, int, int], ...]  # (tier, first point, last point, bytes)
    loads: tuple[tuple[int, str, float], ...]  # (step, tier, bytes)
    staging: tuple[tuple[int, str, str, int], ...] = ()  # (step, src, dst, bytes) moved by DMA


def _neighbour(problem: Problem, k: int, direction: int) -> int:
    """The nearest step before (-1) or after (+1) `k` that runs a kernel (cyclically):
    folded constants take no time, so DMA work cannot hide behind them."""
    n = len(problem.steps)
    j = (k + direction) % n
    while problem.steps[j].free and j != k:
        j = (j + direction) % n
    return j


def contribution(problem: Problem, tensor: Tensor, tier: str) -> Contribution:
    size = tensor.nbytes
    occupancy = [(tier, tensor.start, tensor.end, size)]
    loads: list[tuple[int, str, float]] = []
    moves: list[tuple[int, str, str, int]] = []
    if not problem.staged(tier):
        loads += [(k, tier, size * r) for k, r in tensor.reads]
        if tensor.writer is not None:
            loads.append((tensor.writer, tier, size))
        return Contribution(tuple(occupancy), tuple(loads))
    home = problem.home
    pre = min(size, problem.stage) if problem.stage else size  # what fits the staging buffer ahead
    rest = size - pre  # streamed through it while the kernel runs
    for k, r in tensor.reads:  # prefetch during the step before the reader
        before = _neighbour(problem, k, -1)
        occupancy += [(home, before, before, pre)] + ([(home, k, k, pre)] if before != k else [])
        loads += [(before, tier, pre), (before, home, pre), (k, home, size * r)]
        if rest:
            loads += [(k, tier, rest), (k, home, rest)]
        moves += [(before, tier, home, pre)] + ([(k, tier, home, rest)] if rest else [])
    if tensor.writer is not None:  # drain during the step after the writer
        k = tensor.writer
        after = _neighbour(problem, k, +1)
        occupancy += [(home, k, k, pre)] + ([(home, after, after, pre)] if after != k else [])
        loads += [(k, home, size), (after, home, pre), (after, tier, pre)]
        if rest:
            loads += [(k, home, rest), (k, tier, rest)]
        moves += [(after, home, tier, pre)] + ([(k, home, tier, rest)] if rest else [])
    return Contribution(tuple(occupancy), tuple(loads), tuple(moves))


# -- evaluation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Overflow:
    tier: str
    step: int
    used: float
    capacity: int

    @property
    def excess(self) -> float:
        return self.used - self.capacity


@dataclass(frozen=True)
class Evaluation:
    """Exact time and memory use of one assignment."""

    time: float
    step_times: tuple[float, ...]
    bound: tuple[str, ...]  # per step: "compute" or the binding tier
    loads: tuple[Mapping[str, float], ...]  # per step: tier -> bytes
    usage: Mapping[str, tuple[float, ...]]  # tier -> bytes in use at each point
    overflows: tuple[Overflow, ...]
    moved: Mapping[str, float]  # "ddr->hbm" -> bytes per run

    @property
    def feasible(self) -> bool:
        return not self.overflows


def fractions(problem: Problem, tensor: Tensor, chunks: Mapping[str, int]) -> dict[str, float]:
    total = problem.chunks(tensor)
    if sum(chunks.values()) != total:
        raise ValueError(f"tensor {tensor.name!r}: chunks {dict(chunks)} must sum to {total}")
    bad = [t for t, c in chunks.items() if c and t not in tensor.tiers]
    if bad:
        raise ValueError(f"tensor {tensor.name!r} ({tensor.kind}) may not rest in {', '.join(bad)} "
                         f"(allowed: {', '.join(tensor.tiers)})")
    return {t: c / total for t, c in chunks.items() if c}


def step_time(problem: Problem, step: Step, loads: Mapping[str, float]) -> tuple[float, str]:
    if step.free and not any(loads.values()):
        return 0.0, "free"
    best, bound = step.compute, "compute"
    for tier in problem.tiers:
        t = loads.get(tier.name, 0.0) / tier.bandwidth
        if t > best:
            best, bound = t, tier.name
    return (0.0 if step.free else step.launch + step.comm) + best, bound


def evaluate(problem: Problem, assignment: Assignment) -> Evaluation:
    n = len(problem.steps)
    loads = [dict(s.base) for s in problem.steps]
    usage = {t.name: [0.0] * n for t in problem.tiers}
    moved: dict[str, float] = {}
    for tensor in problem.tensors:
        for tier, frac in fractions(problem, tensor, assignment[tensor.name]).items():
            c = contribution(problem, tensor, tier)
            for t, a, b, size in c.occupancy:
                row = usage[t]
                for p in range(a, b + 1):
                    row[p] += size * frac
            for k, t, size in c.loads:
                loads[k][t] = loads[k].get(t, 0.0) + size * frac
            for _, src, dst, size in c.staging:
                moved[f"{src}->{dst}"] = moved.get(f"{src}->{dst}", 0.0) + size * frac
    times, bounds = zip(*(step_time(problem, s, l) for s, l in zip(problem.steps, loads))) if n else ((), ())
    overflows = []
    for tier in problem.tiers:
        for p, used in enumerate(usage[tier.name]):
            if used > tier.capacity:
                overflows.append(Overflow(tier.name, p, used, tier.capacity))
    return Evaluation(sum(times), tuple(times), tuple(bounds), tuple(loads),
                      {k: tuple(v) for k, v in usage.items()}, tuple(overflows), moved)


def whole(problem: Problem, tiers: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """An assignment resting each tensor wholly in one tier (name → tier)."""
    return {t.name: {tiers[t.name]: problem.chunks(t)} for t in problem.tensors}


# -- building a problem from a graph ------------------------------------------------------
def _tier_specs(target, reserve: float) -> tuple[TierSpec, ...]:
    specs = []
    sockets = max(target.sockets, 1)
    for i, tier in enumerate(target.memory):
        capacity = tier.capacity if tier.scope != "host" else tier.capacity // sockets
        bandwidth = tier.bandwidth if tier.scope != "host" else tier.bandwidth / sockets
        if i == 0 and len(target.memory) > 1:
            capacity = int(capacity * (1.0 - reserve))  # the rest holds the kernels' tiles
        specs.append(TierSpec(tier.name, int(capacity), float(bandwidth), tuple(tier.holds)))
    return tuple(specs)


def _indirect_operands(op, node, types) -> list[str]:
    """The operands a node reads at data-dependent indices (its structure's map is None)."""
    s = node_structure(node, types)
    return [o for o, m in zip(node.operands, s.operand_maps) if m is None]


def _collectives(kernel: Kernel, types, params: set[str], sockets: int, link: float) -> float:
    """Serial time of a kernel's tensor-parallel collectives (Megatron-style).

    A GEMM (linear, matmul) on a 2-D weight whose input is replicated is column-parallel
    (its result is sharded); one whose input is sharded is row-parallel and ends in an
    all-reduce; a gather (embedding, index_select, index) reading a sharded 2-D weight
    indirectly (vocab-parallel embedding) too. Ops on sharded values stay
    sharded; a sharded kernel output is all-gathered. Ring times: all-reduce 2(S-1)/S·n,
    all-gather (S-1)/S·n bytes over each socket's share of the interconnect.
    """
    if sockets <= 1:
        return 0.0
    sharded: set[str] = set()
    volume = 0.0
    for node in kernel.nodes:
        op = get_op(node.op)
        weight = node.operands[1] if len(node.operands) > 1 else None
        if op.template is Template.gemm and weight in params and types[weight].rank == 2:
            if node.operands[0] in sharded:
                volume += 2 * (sockets - 1) / sockets * node.type.nbytes
            else:
                sharded.add(node.name)
        elif op.kind is OpKind.gather and any(o in params and types[o].rank == 2
                                              for o in _indirect_operands(op, node, types)):
            volume += 2 * (sockets - 1) / sockets * node.type.nbytes
        elif any(o in sharded for o in node.operands):
            sharded.add(node.name)
    volume += sum((sockets - 1) / sockets * types[o].nbytes for o in kernel.outputs if o in sharded)
    return volume / link


def build_problem(graph: Graph, target, *, cost_model=None, split: int = 4, reserve: float = 0.5,
                  stage: float = 1 / 16, kernel_list: Sequence[Kernel] | None = None) -> Problem:
    """The placement problem of a tiled graph on a target (see the module docstring).

    `split`: chunks a weight or expert may be divided into across tiers (1: no splitting);
    `reserve`: the share of the fast tier kept for kernels' tiles (the tiling pass sizes
    chip tiles to half of it); `stage`: the staging buffer as a share of the home tier.
    """
    from codesign.cost.model import CostModel, _is_free, home_tier
    cm = cost_model or CostModel(target, rereads=chip_rereads(graph))
    ks = list(kernel_list) if kernel_list is not None else graph_kernels(graph)
    types = graph.types()
    sockets = max(target.sockets, 1)
    params = {i.name for i in graph.inputs if i.kind is InputKind.param}
    link = None
    if sockets > 1:
        if target.interconnect is None:
            raise ValueError(f"target {target.name!r} has {sockets} sockets but no interconnect; "
                             "add `interconnect: {bandwidth: ...}` to place tensor-parallel weights")
        link = target.interconnect.bandwidth / sockets
    fast = target.memory[0].name
    steps = []
    reads: dict[str, list[tuple[int, float]]] = {}
    for index, k in enumerate(ks):
        if _is_free(k):
            steps.append(Step(k.key, k.name, 0.0, {}, 0.0, 0.0, True))
        else:
            cost = cm.kernel_cost(graph, k, types)
            steps.append(Step(k.key, k.name, cost.compute_time / sockets,
                              {fast: cost.bytes.get(fast, 0) / sockets}, cost.launch,
                              _collectives(k, types, params, sockets, link) if link else 0.0))
        for v, r in cm.operand_reads(k, types).items():
            reads.setdefault(v, []).append((index, r))
    tensors = []
    for live in liveness(graph, ks):
        shard = live.kind in ("weights", "experts") and types[live.name].rank >= 2
        nbytes = -(-live.nbytes // sockets) if shard else live.nbytes
        holding = target.tiers_holding(live.kind)
        # a per-unit tier (GPU shared memory) does not keep data from one kernel to the next
        tiers = tuple(t.name for t in holding if t.scope != "per_unit") or tuple(t.name for t in holding)
        tensors.append(Tensor(live.name, live.kind, nbytes, live.start, live.end, tiers,
                              tuple(reads.get(live.name, ())), live.producer,
                              splittable=live.kind in ("weights", "experts") and split > 1, state=live.state))
    specs = _tier_specs(target, reserve)
    home = home_tier(target)
    staging = int(next(t.capacity for t in specs if t.name == home) * stage) if stage else 0
    return Problem(graph.name, tuple(steps), tuple(tensors), specs, home, target.dma, max(split, 1), sockets,
                   target.name, staging)


__all__ = ["Assignment", "Contribution", "Evaluation", "Overflow", "Problem", "Step", "Tensor",
           "TierSpec", "build_problem", "contribution", "evaluate", "fractions", "whole"]
