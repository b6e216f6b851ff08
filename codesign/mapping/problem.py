"""The mapping problem: a fused kernel seen as a pipeline of stages, and the chip's units.

A kernel streams its rows (tokens; image rows) through the chip in `tiles` equal tiles.
Each *stage* is one heavy op (a contraction, attention, a reduction or norm) together
with the pointwise and layout ops around it, which run in the same units' pipelines (a
PCU's SIMD stages): an op joins the stage of its latest producer inside the kernel, or,
having none, the stage of its first consumer. Per tile, a stage needs

* compute: its FLOPs over one compute unit's rate (`compute_ps`, divided by the units it gets);
* memory-unit bandwidth: the bytes it reads and writes in its memory units — its input
  and output tiles, its weights (every tile re-reads them) and, for attention, the keys
  and values of earlier tiles (`memory_ps`, divided by the memory units it gets);
* capacity: double-buffered input and output tiles, the keys and values it keeps, and its
  weights when they stay resident (else one memory unit's worth of staging);
* banks: one for every buffer it reads or writes at once.

Tiles cross from stage to stage over the mesh; laid out as strips in stage order, every
edge from stage u to stage v > u crosses the strip boundaries u..v-1, each `dims[1]`
links wide (`Edge.ps`: one tile's crossing time). Every quantity is an integer number of
picoseconds or bytes, so the evaluator (`pipeline`), the checker, brute force and CP-SAT
compute exactly the same numbers.

Assumptions (docs/dataflow_mapping.md): every op's work is spread evenly over the tiles
(a causal attention's average tile); a conv's halo rows are not re-sent; on a node of
several sockets each socket maps its tensor-parallel share (FLOPs and weights / sockets).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Mapping, Sequence

from codesign.analysis import node_flops
from codesign.cost.model import TENSOR_KINDS, peak_flops
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel, is_heavy
from codesign.ir.ops import OpKind, Template, get_op
from codesign.ir.types import TensorType
from codesign.targets import Target

PS = 1e12  # picoseconds a second


class MappingError(ValueError):
    """A kernel or a hand-edited mapping that no pipeline on the chip can run."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, per tile (see the module docstring)."""

    name: str  # the anchor node's name (the plan's `map_stages` entry)
    ops: tuple[str, ...]
    compute_ps: int  # one tile on ONE compute unit
    memory_ps: int  # one tile's memory-unit traffic at ONE memory unit's bandwidth
    max_units: int  # compute units beyond this idle (a tile's outputs / vector width)
    buffer_bytes: int  # stage buffers besides weights
    buffers: int  # buffers it reads or writes at once (banks needed)
    weight_bytes: int
    weight_ps: int  # its weights once from the reload tier
    io_ps: int  # kernel inputs it reads and kernel outputs it writes, at the reload tier


@dataclass(frozen=True)
class Edge:
    """Tiles from stage `src` to stage `dst` > `src`: per tile over the mesh, or, across a
    section boundary, all tiles spilled to the reload tier and read back."""

    src: int
    dst: int
    tile_bytes: int
    ps: int  # one tile across one strip boundary
    spill_ps: int  # every tile written to and read back from the reload tier


@dataclass(frozen=True)
class Resources:
    """What one socket offers the mapper (`Target.spatial`, in the mapper's integers)."""

    compute_units: int
    memory_units: int
    memory_capacity: int  # bytes of one memory unit
    banks: int
    boundary_bandwidth: float  # bytes/s across one strip boundary (dims[1] links)
    reconfigure_ps: int
    hop_fill_ps: int  # a tile's first word across the chip (dims[0] hops)
    overlap_loads: bool  # weights stream in while tiles flow (Target.dma)
    compute_name: str = "compute unit"
    memory_name: str = "memory unit"
    reload_tier: str = "home"


@dataclass(frozen=True)
class Problem:
    """A kernel at a tile count: its stages, the edges between them, the chip's units."""

    kernel: str
    tiles: int
    stages: tuple[Stage, ...]
    edges: tuple[Edge, ...]
    resources: Resources

    def memory_floor(self, stage: int, resident: bool) -> int:
        """The fewest memory units stage `stage` fits in (capacity and banks)."""
        s, r = self.stages[stage], self.resources
        weights = s.weight_bytes if resident else min(s.weight_bytes, r.memory_capacity)
        return max(1, ceil((s.buffer_bytes + weights) / r.memory_capacity), ceil(s.buffers / r.banks))

    def unit_ceiling(self, stage: int) -> int:
        return max(1, min(self.stages[stage].max_units, self.resources.compute_units))

    def crossing(self, boundary: int) -> tuple[int, ...]:
        """Indices of the edges that cross the strip boundary after stage `boundary`."""
        return tuple(i for i, e in enumerate(self.edges) if e.src <= boundary < e.dst)


@dataclass(frozen=True)
class Mapping:
    """The decision for one kernel: per stage, its compute units, memory units, section and
    whether its weights stay resident in its memory units (else stream every tile)."""

    tiles: int
    units: tuple[int, ...]
    memory: tuple[int, ...]
    sections: tuple[int, ...]
    resident: tuple[bool, ...]

    @property
    def section_count(self) -> int:
        return max(self.sections) + 1 if self.sections else 0


# ----------------------------------------------------------------------------- building

@dataclass(frozen=True)
class _StageWork:
    """A stage's totals over the whole kernel, before it is cut into tiles."""

    name: str
    ops: tuple[str, ...]
    tensor_seconds: float  # on ONE unit, all rows
    vector_seconds: float
    activation_bytes: int  # tiled inputs and outputs (all rows)
    kv_bytes: int  # keys/values every tile reads (attention), per tile
    kv_buffer: int  # keys/values kept
    outputs_per_row: float  # output elements a row
    weight_bytes: int
    buffers: int
    io_bytes: int


@dataclass(frozen=True)
class KernelProfile:
    """A kernel's stages and edges in whole-kernel totals; `problem(tiles)` cuts them into
    tiles. Hashable: equal layers (every decoder layer of a model) share one solve."""

    kernel: str
    rows: int
    stages: tuple[_StageWork, ...]
    edges: tuple[tuple[int, int, int], ...]  # (src, dst, bytes over all rows)
    resources: Resources
    memory_bandwidth: float
    reload_bandwidth: float
    vector_width: int

    def signature(self) -> "KernelProfile":
        """This profile without node names: equal for equal layers (layer 3 and layer 7 of a
        model), so the map pass solves one and reuses its mapping, which is positional."""
        from dataclasses import replace
        return replace(self, kernel="", stages=tuple(replace(w, name=str(i), ops=()) for i, w in enumerate(self.stages)))

    def tile_counts(self) -> tuple[int, ...]:
        """Tile counts worth trying: 1 (no pipelining) and powers of two up to a row a tile."""
        counts, t = [1], 2
        while t <= self.rows:
            counts.append(t)
            t *= 2
        if counts[-1] != self.rows:
            counts.append(self.rows)
        return tuple(counts)

    def problem(self, tiles: int) -> Problem:
        if not 1 <= tiles <= max(self.rows, 1):
            raise MappingError(f"kernel {self.kernel}: {tiles} tiles, but it streams {self.rows} rows "
                               f"(expected 1 to {self.rows})")
        stages = []
        for w in self.stages:
            per_tile = w.activation_bytes / tiles
            stages.append(Stage(
                name=w.name, ops=w.ops,
                compute_ps=_ps((w.tensor_seconds + w.vector_seconds) / tiles),
                memory_ps=_ps((per_tile + w.weight_bytes + w.kv_bytes) / self.memory_bandwidth),
                max_units=max(1, ceil(w.outputs_per_row * ceil(self.rows / tiles) / self.vector_width)),
                buffer_bytes=ceil(2 * per_tile) + w.kv_buffer,
                buffers=w.buffers, weight_bytes=w.weight_bytes,
                weight_ps=_ps(w.weight_bytes / self.reload_bandwidth),
                io_ps=_ps(w.io_bytes / self.reload_bandwidth)))
        r = self.resources
        edges = tuple(Edge(src, dst, ceil(b / tiles), _ps(b / tiles / r.boundary_bandwidth),
                           _ps(2 * b / self.reload_bandwidth)) for src, dst, b in self.edges)
        return Problem(self.kernel, tiles, tuple(stages), edges, r)


def _ps(seconds: float) -> int:
    return ceil(seconds * PS - 1e-6) if seconds > 0 else 0


def stream_rows(t: TensorType) -> int:
    """Rows a tensor streams in: the leading dims of a [.., features] activation; batch x
    height of an NCHW feature map."""
    shape = t.shape
    if len(shape) >= 4:
        return shape[0] * shape[2]
    return prod(shape[:-1]) if len(shape) > 1 else 1


def resources(target: Target) -> Resources:
    sp = target.spatial
    if sp is None:
        raise MappingError(f"target {target.name!r} has no spatial section to map onto")
    x, y = sp.network.dims
    return Resources(
        compute_units=sp.compute.count, memory_units=sp.memory.count,
        memory_capacity=sp.memory.capacity, banks=sp.memory.banks,
        boundary_bandwidth=y * sp.network.link_bandwidth,
        reconfigure_ps=_ps(sp.section_switch.reconfigure), hop_fill_ps=_ps(x * sp.network.hop_latency),
        overlap_loads=target.dma, compute_name=sp.compute.name, memory_name=sp.memory.name,
        reload_tier=target.reload_tier.name)


def unit_rate(target: Target, node: Node, tensor: bool) -> float:
    """FLOP/s of ONE compute unit for `node`: the unit's own peak for a tensor op of a listed
    dtype, else the socket's rate (`cost.model.peak_flops`) shared over the units."""
    from codesign.cost.model import _PEAK_KEY
    sp = target.spatial
    key = _PEAK_KEY.get(node.type.dtype, "fp32")
    for candidate in (key, {"bf16": "fp16", "fp16": "bf16"}.get(key)):
        if tensor and candidate in sp.compute.peak:
            return sp.compute.peak[candidate]
    return peak_flops(target, node.type.dtype, tensor) / sp.compute.count


def stage_of(kernel: Kernel) -> dict[str, int]:
    """Node name → stage index: heavy ops start stages in program order; a light op joins
    its latest in-kernel producer's stage, else (fed only from outside: a rotary table, a
    mask) its first consumer's. Producers thus never sit in a later stage than readers."""
    stage: dict[str, int] = {}
    count = 0
    for node in kernel.nodes:
        if is_heavy(node):
            stage[node.name] = count
            count += 1
        else:
            producers = [stage[o] for o in node.operands if o in stage]
            if producers:
                stage[node.name] = max(producers)
    if count == 0:
        return {n.name: 0 for n in kernel.nodes}
    consumers: dict[str, list[str]] = {n.name: [] for n in kernel.nodes}
    for n in kernel.nodes:
        for o in n.operands:
            if o in consumers:
                consumers[o].append(n.name)
    for node in reversed(kernel.nodes):
        if node.name not in stage:
            later = [stage[c] for c in consumers[node.name] if c in stage]
            stage[node.name] = min(later) if later else count - 1
    return stage


def profile_kernel(graph: Graph, kernel: Kernel, target: Target,
                   types: Mapping[str, TensorType] | None = None) -> KernelProfile:
    """The kernel's stages and edges on `target` (which must have a `spatial` section)."""
    types = types if types is not None else graph.types()
    sp = target.spatial
    res = resources(target)
    sockets = target.sockets
    state = {i.name for i in graph.inputs if i.kind.is_state}
    where = stage_of(kernel)
    readers: dict[str, set[int]] = {n.name: set() for n in kernel.nodes}
    for m in kernel.nodes:
        for o in m.operands:
            if o in readers:
                readers[o].add(where[m.name])
    count = max(where.values()) + 1
    inside = {n.name for n in kernel.nodes}
    kernel_outputs = set(kernel.outputs)
    main = types[kernel.outputs[0]] if kernel.outputs else kernel.nodes[-1].type
    rows = max(1, stream_rows(main))
    stages: list[_StageWork] = []
    edges: dict[tuple[int, int], int] = {}
    for s in range(count):
        nodes = [n for n in kernel.nodes if where[n.name] == s]
        tensor_s = vector_s = 0.0
        reads: dict[str, int] = {}
        kv = kv_buffer = 0
        for node in nodes:
            op = get_op(node.op)
            flops = node_flops(node, types)
            tensor = op.kind in TENSOR_KINDS
            share = flops / sockets
            if tensor:
                tensor_s += share / unit_rate(target, node, True)
            else:
                vector_s += share / unit_rate(target, node, False)
            for i, operand in enumerate(node.operands):
                if operand in inside and where[operand] == s:
                    continue  # stays in the stage's own pipeline
                if op.template is Template.attention and i in (1, 2):
                    full = types[operand].nbytes
                    kv_buffer += full
                    kv += full // 2 if node.attrs.get("causal") else full
                    reads.setdefault(operand, 0)
                    continue
                size = types[operand].nbytes
                if op.kind is OpKind.gather and operand in state:  # a gather reads the rows it returns
                    size = min(size, node.type.nbytes)
                reads[operand] = size
        outs = [n for n in nodes if n.name in kernel_outputs or readers[n.name] - {s}]
        weights = sum(b for v, b in reads.items() if v in state) // sockets
        activations = sum(b for v, b in reads.items() if v not in state) + sum(n.type.nbytes for n in outs)
        io = sum(b for v, b in reads.items() if v not in state and v not in inside)
        io += sum(n.type.nbytes for n in nodes if n.name in kernel_outputs)
        anchor = next((n for n in nodes if is_heavy(n)), nodes[-1])
        produced = max((n.type.numel for n in nodes if get_op(n.op).kind is not OpKind.layout), default=1)
        stages.append(_StageWork(
            name=anchor.name, ops=tuple(n.name for n in nodes), tensor_seconds=tensor_s,
            vector_seconds=vector_s, activation_bytes=activations, kv_bytes=kv, kv_buffer=kv_buffer,
            outputs_per_row=produced / rows / sockets, weight_bytes=weights,
            buffers=len(reads) + max(len(outs), 1), io_bytes=io))
        for node in nodes:
            for consumer in sorted(readers[node.name] - {s}):
                if consumer > s:
                    edges[(s, consumer)] = edges.get((s, consumer), 0) + node.type.nbytes
    return KernelProfile(kernel.key, rows, tuple(stages), tuple((s, d, b) for (s, d), b in sorted(edges.items())),
                         res, sp.memory.bandwidth, target.reload_tier.bandwidth, sp.compute.vector_width)


def stage_names(profile: KernelProfile | Problem) -> tuple[str, ...]:
    return tuple(s.name for s in profile.stages)


def check_names(kernel: str, given: Sequence[str], expected: Sequence[str]) -> None:
    """A plan's `map_stages` must name the stages the kernel has (a hand edit that moved ops
    between kernels makes the mapping stale)."""
    if tuple(given) != tuple(expected):
        raise MappingError(f"kernel {kernel}: the plan's map_stages {list(given)} are not the kernel's "
                           f"stages {list(expected)}; run the map pass again (or edit map_stages to match)")
