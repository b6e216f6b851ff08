"""The cost model: predicted time of a kernel on a target, as a pure function of IR and target.

A kernel (a fusion group, or one node alone) is a roofline over every resource it uses:

    time = max(FLOPs / peak, bytes_t / bandwidth_t for every tier t) + launch overhead

Bytes at the *home* tier (where tensors live between kernels: HBM on a GPU or an SN40L,
LPDDR on a phone) are what the kernel reads from outside and writes back, with the
re-reads its tiling forces on a contraction's operands; values produced and consumed inside
the kernel never reach it — which is the whole point of fusion. Bytes at the fast tier are
every operand access of every node (tiles staged through SRAM / shared memory). FLOPs of
contractions run at the dtype's tensor peak; other ops at the target's vector (fp32) peak
when it lists one. That is the *ideal* model, and reports say so.

A target with a calibration (`Target.calibration`, measured by `codesign calibrate` or cited)
prices the same work as silicon runs it (`calibrated_time`): each template reaches its
measured fraction of the matrix peak, cut by wave quantisation (whole waves of output tiles
over the compute units) and by pipeline fill along a short reduction; vector FLOPs, special
functions and home-tier bytes run at their measured rates; the three overlap as a p-norm
(p measured); each kernel pays a fixed device time, and the program a host cost per launch.
The figures are structural — one set per target, fitted to microbenchmarks, none per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import ceil
from typing import Callable, Mapping, Sequence

from codesign.analysis import node_flops
from codesign.cost.features import KernelFeatures, class_chain, kernel_features
from codesign.ir.graph import Graph, Node
from codesign.ir.kernels import Kernel, kernels
from codesign.ir.ops import OpKind, Template, get_op
from codesign.ir.types import DType, TensorType
from codesign.targets import Target
from codesign.targets.calibration import Efficiency

_PEAK_KEY = {DType.bf16: "bf16", DType.f16: "fp16", DType.f32: "fp32", DType.f64: "fp32",
             DType.i8: "int8", DType.u8: "int8"}

TENSOR_KINDS = frozenset({OpKind.contraction})
# ops that read at most as many operand elements as they produce (slices, gathers): a
# kernel reads that part of a big operand (the rows of an embedding table it gathers), not all
PARTIAL_READERS = frozenset({OpKind.layout, OpKind.gather})


def peak_flops(target: Target, dtype: DType, tensor_op: bool) -> float:
    """FLOP/s for ops of `dtype`: tensor ops at the tensor peak, others at the vector peak.

    Fallbacks, in order: the dtype's own entry (fp32 contractions prefer tf32); fp16 ↔ bf16;
    else the target's 16-bit peak, halved for 32-bit data (a 32-bit datapath at half rate).
    """
    peak = target.compute.peak
    if not tensor_op and "fp32" in peak and dtype.is_float:
        return peak["fp32"]
    key = _PEAK_KEY.get(dtype, "fp32")
    if tensor_op and key == "fp32" and "tf32" in peak:
        return peak["tf32"]
    for candidate in (key, {"bf16": "fp16", "fp16": "bf16"}.get(key)):
        if candidate and candidate in peak:
            return peak[candidate]
    half = peak.get("bf16") or peak.get("fp16")
    if half:
        return half / 2 if dtype.itemsize >= 4 else half
    return max(peak.values())


def home_tier(target: Target) -> str:
    """The tier tensors live in between kernels (until placement decides per tensor): a
    role the target's memory order gives (`Target.home_tier`)."""
    return target.home_tier.name


def fast_tier(target: Target) -> str:
    return target.fast_tier.name


@dataclass(frozen=True)
class KernelCost:
    """Cost of one kernel: FLOPs by dtype, bytes per tier, and the roofline's verdict."""

    key: str
    name: str
    nodes: int
    flops: Mapping[str, int]
    bytes: Mapping[str, int]  # tier name -> bytes moved at that tier
    compute_time: float
    memory_time: Mapping[str, float]
    launch: float
    time: float
    bound: str  # "compute", "special", "launch" or the name of the binding tier
    intensity: float  # FLOPs per home-tier byte
    features: KernelFeatures | None = None
    host: float = 0.0  # host time to launch it (calibrated targets)
    pipeline: object = None  # the mapped kernel's `mapping.PipelineCost` (spatial targets)
    problem: object = None  # and its `mapping.Problem`
    roofline_time: float | None = None  # a mapped kernel's roofline time, for comparison

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())


@dataclass(frozen=True)
class GraphCost:
    kernels: tuple[KernelCost, ...]
    time: float
    flops: int
    home_bytes: int
    launches: int
    calibrated: bool = False  # priced with a calibration; else at the peaks ("ideal")

    def by_key(self) -> dict[str, KernelCost]:
        return {k.key: k for k in self.kernels}


# `reread(node, operand_index, types) -> factor`: how many times a contraction reads each
# operand from the home tier at its tiling (1.0 = once). Supplied by the tiling pass.
Reread = Callable[[Node, int, Mapping[str, TensorType]], float]


def compulsory(node: Node, index: int, types: Mapping[str, TensorType]) -> float:
    return 1.0


@dataclass(frozen=True)
class CostModel:
    """Predicts kernel times on one target.

    `reread` gives the tiling's operand re-read factors; by default they come from the
    tiling pass (`rereads`: node name → one read count per operand), else from a tile sized
    to the chip's fast tier.
    """

    target: Target
    rereads: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    reread: Reread | None = None
    home: str = field(default="")

    def __post_init__(self) -> None:
        if not self.home:
            object.__setattr__(self, "home", home_tier(self.target))
        if self.reread is None:
            from codesign.cost.traffic import TiledReread, aggregate_tile
            object.__setattr__(self, "reread", TiledReread(self.target, dict(self.rereads),
                                                           aggregate_tile(self.target)))

    # -- pieces --------------------------------------------------------------------------
    def _tier_of(self, t: TensorType) -> str:
        """Where a value lives: the tier placement chose, when it names one of the target's."""
        if t.tier and t.tier in self._tier_names:
            return t.tier
        return self.home

    @property
    def _tier_names(self) -> frozenset[str]:
        return frozenset(tier.name for tier in self.target.memory)

    def node_flops_by_dtype(self, node: Node, types: Mapping[str, TensorType]) -> tuple[str, int, bool]:
        op = get_op(node.op)
        tensor = op.kind in TENSOR_KINDS or op.template is Template.moe
        table = types if isinstance(types, dict) else dict(types)  # no copy per node
        return node.type.dtype.value, node_flops(node, table), tensor

    def recompute_factors(self, kernel: Kernel, types: Mapping[str, TensorType],
                          streamed: bool = False) -> dict[str, float]:
        """How many times each node of a kernel runs: a pointwise prologue feeding a
        contraction's operand is recomputed every time the contraction re-reads that
        operand. A heavy op's result is materialised in the fast tier once, and a streamed
        (dataflow) kernel buffers every intermediate, so neither is recomputed."""
        inside = {n.name: n for n in kernel.nodes}
        factor = {name: 1.0 for name in inside}
        if streamed:
            return factor
        for node in reversed(kernel.nodes):
            for i, operand in enumerate(node.operands):
                producer = inside.get(operand)
                if producer is None or get_op(producer.op).kind not in (OpKind.pointwise, OpKind.layout):
                    continue
                step = self.reread(node, i, types) if get_op(node.op).kind in TENSOR_KINDS else 1.0
                factor[operand] = max(factor[operand], factor[node.name] * step)
        return factor

    def operand_reads(self, kernel: Kernel, types: Mapping[str, TensorType],
                      streamed: bool | None = None, partial: bool = False) -> dict[str, float]:
        """How many times the kernel reads each outside value from the home tier: the
        tiling's re-read factor of the reading op, times how often that op is recomputed.
        `partial`: a slice or gather reads only the part it returns (the calibrated model;
        the ideal one, which the fusion pass's running sums mirror, charges whole operands)."""
        if streamed is None:
            streamed = kernel.group is not None and kernel.group.plan.is_layer
        runs = self.recompute_factors(kernel, types, streamed)
        inside = {n.name for n in kernel.nodes}
        reads: dict[str, float] = {}
        for node in kernel.nodes:
            for i, operand in enumerate(node.operands):
                if operand in inside:
                    continue
                kind = get_op(node.op).kind
                if kind in TENSOR_KINDS:
                    step = self.reread(node, i, types)
                elif partial and kind in PARTIAL_READERS:  # a slice or gather touches only what it returns
                    step = min(1.0, node.type.numel / max(types[operand].numel, 1))
                else:
                    step = 1.0
                reads[operand] = max(reads.get(operand, 0.0), step * runs[node.name])
        return reads

    def kernel_cost(self, graph: Graph, kernel: Kernel, types: Mapping[str, TensorType] | None = None,
                    *, streamed: bool | None = None) -> KernelCost:
        """Cost of `kernel`; `streamed` (default: the group's kind is "layer") buffers every
        intermediate on chip, as a dataflow layer does."""
        types = types if types is not None else graph.types()
        if streamed is None:
            streamed = kernel.group is not None and kernel.group.plan.is_layer
        flops: dict[str, int] = {}
        compute = 0.0
        fast_bytes = 0
        runs = self.recompute_factors(kernel, types, streamed)
        for node in kernel.nodes:
            dtype, f, tensor = self.node_flops_by_dtype(node, types)
            f = int(f * runs[node.name])
            if f:
                flops[dtype] = flops.get(dtype, 0) + f
                # every socket computes its share (tensor-parallel), as memory time uses
                # the sockets' total bandwidth
                compute += f / (peak_flops(self.target, node.type.dtype, tensor) * self.target.sockets)
            if get_op(node.op).kind is not OpKind.layout:
                fast_bytes += sum(types[o].nbytes for o in node.operands) + node.type.nbytes
        home_reads = self.operand_reads(kernel, types, streamed)
        # a value the placement put in another tier moves there (before placement: home)
        placed: dict[str, float] = {}
        for v, f in home_reads.items():
            tier = self._tier_of(types[v])
            placed[tier] = placed.get(tier, 0.0) + types[v].nbytes * f
        for o in kernel.outputs:
            tier = self._tier_of(types[o])
            placed[tier] = placed.get(tier, 0.0) + types[o].nbytes
        home_bytes = int(placed.pop(self.home, 0.0))
        fast = fast_tier(self.target)
        tiers = {self.home: home_bytes, fast: fast_bytes}
        for tier, b in sorted(placed.items()):
            tiers[tier] = tiers.get(tier, 0) + int(b)
        memory_time = {t: b / self.target.total_bandwidth(t) for t, b in tiers.items() if b}
        total = sum(flops.values())
        intensity = total / home_bytes if home_bytes else float("inf")
        efficiency = self.target.calibration.efficiency if self.target.calibration else None
        if efficiency is not None:
            features = self.features(kernel, types, runs=runs)
            time, bound, parts = calibrated_time(features, self.target, efficiency)
            return KernelCost(kernel.key, kernel.name, len(kernel.nodes), flops, tiers, parts["compute"],
                              memory_time, parts["fixed"], time, bound, intensity, features,
                              host_time(features, efficiency))
        launch = self.target.launch_overhead
        slowest = max(memory_time.items(), key=lambda kv: kv[1], default=(self.home, 0.0))
        bound = "compute" if compute >= slowest[1] else slowest[0]
        if launch > max(compute, slowest[1]):
            bound = "launch"
        time = max(compute, slowest[1]) + launch
        mapped = self._pipeline(graph, kernel, types)
        if mapped is not None:  # a mapped kernel runs as its pipeline; the roofline stays beside it
            problem, pipe = mapped
            bound = pipe.bound(problem.resources.reload_tier)
            if launch > pipe.seconds:
                bound = "launch"
            return KernelCost(kernel.key, kernel.name, len(kernel.nodes), flops, tiers, compute, memory_time,
                              launch, pipe.seconds + launch, bound, intensity, pipeline=pipe, problem=problem,
                              roofline_time=time)
        return KernelCost(kernel.key, kernel.name, len(kernel.nodes), flops, tiers, compute,
                          memory_time, launch, time, bound, intensity)

    def _pipeline(self, graph: Graph, kernel: Kernel, types: Mapping[str, TensorType]):
        """(problem, pipeline cost) of a kernel the map pass mapped, else None."""
        if self.target.spatial is None or kernel.group is None or not kernel.group.plan.is_mapped:
            return None
        from codesign.mapping.plan import kernel_pipeline  # the mapper builds on this module
        return kernel_pipeline(graph, kernel, self.target, types)

    def features(self, kernel: Kernel, types: Mapping[str, TensorType], home_bytes: int | None = None,
                 runs: Mapping[str, float] | None = None) -> KernelFeatures:
        """What the kernel does, in the calibrated model's terms (`codesign.cost.features`)."""
        table = types if isinstance(types, dict) else dict(types)
        streamed = kernel.group is not None and kernel.group.plan.is_layer
        if runs is None:
            runs = self.recompute_factors(kernel, table, streamed)
        if home_bytes is None:
            reads = self.operand_reads(kernel, table, streamed, partial=True)
            home_bytes = int(sum(table[v].nbytes * f for v, f in reads.items()))
            home_bytes += sum(table[o].nbytes for o in kernel.outputs)
        return kernel_features(kernel, table, lambda n: node_flops(n, table), home_bytes, runs)

    def graph_cost(self, graph: Graph, kernel_list: Sequence[Kernel] | None = None) -> GraphCost:
        types = graph.types()
        costs = tuple(self.kernel_cost(graph, k, types) for k in (kernel_list or kernels(graph))
                      if not _is_free(k))
        calibration = self.target.calibration
        efficiency = calibration.efficiency if calibration else None
        graphed = efficiency is not None and replays_as_graph(efficiency, (k for k in (kernel_list or kernels(graph))))
        return GraphCost(costs, program_time(costs, efficiency, graphed),
                         sum(c.total_flops for c in costs), sum(c.bytes.get(self.home, 0) for c in costs),
                         len(costs), calibration is not None)


def host_time(features: KernelFeatures, efficiency: Efficiency) -> float:
    """Host time to launch one kernel: a fixed cost plus one per tensor argument."""
    return efficiency.host_per_launch + efficiency.host_per_argument * features.arguments


def replays_as_graph(efficiency: Efficiency, kernel_list) -> bool:
    """Whether a program runs as one CUDA graph replay (`codegen.triton.graphs`, the GPU
    backend's default): on a GPU (the host launches asynchronously), unless a kernel routes on
    the host (a `moe`: data-dependent sizes synchronise, so the program is not captured)."""
    return efficiency.asynchronous_launch and not any(
        get_op(n.op).template is Template.moe for k in kernel_list for n in k.nodes)


def program_time(costs: Sequence[KernelCost], efficiency: Efficiency | None, graphed: bool = False) -> float:
    """A program's time from its kernels': their sum, or, when the host launches kernels
    asynchronously (a GPU), the larger of the device's sum and the host's time; a program
    replayed as a CUDA graph (`graphed`) pays one replay's host cost, not one per launch."""
    device = sum(c.time for c in costs)
    if efficiency is None:
        return device
    return combine_host(device, sum(c.host for c in costs), efficiency, graphed)


def combine_host(device: float, launches: float, efficiency: Efficiency, graphed: bool = False) -> float:
    """Device time and the host's launch time (plus its cost per call) as one program time:
    the larger when the host launches asynchronously (a GPU stream), else their sum, the
    kernels run back to back (`Efficiency.in_sequence`). A CUDA graph replay (`graphed`)
    launches every kernel with one driver call: the host's cost per call, then the device's
    time (the replay starts once the host has issued it)."""
    if graphed:
        return device + efficiency.host_per_call
    host = efficiency.host_per_call + launches
    if efficiency.asynchronous_launch:
        return max(device, host)
    return device * (efficiency.in_sequence or 1.0) + host


def matrix_efficiency(features: KernelFeatures, target: Target, efficiency: Efficiency,
                      vendor: bool = False) -> float:
    """The fraction of the matrix peak a kernel's template reaches at its shape: the
    template's measured efficiency, times wave quantisation (generated kernels: one tile
    for every shape), times pipeline fill along the reduction."""
    dtype = _PEAK_KEY.get(DType(features.dtype), 'fp32')
    table = efficiency.matrix
    e = None
    for cls in class_chain(features.template):  # a depthwise conv without figures of its own: conv's, then gemm's
        key = f"{cls}/{dtype}"
        e = (table.get(key + "/vendor") if vendor else None) or table.get(key)
        if e is not None:
            break
    if e is None:  # an uncalibrated template or dtype: the calibrated GEMM's, else the mean
        same = [v for k, v in sorted(table.items()) if k.startswith("gemm/") and k.count("/") == 1]
        e = same[0] if same else (sum(table.values()) / len(table) if table else 1.0)
    if features.gemm is None or not vendor:
        return e
    _, _, n, k = features.gemm  # the vendor: no waves (tiles picked per shape), a K-fill
    depth = n if features.template == "attention" else k
    return max(e * depth / (depth + efficiency.vendor_k_half), 1e-6) if depth else e


def compute_units(target: Target, efficiency: Efficiency) -> int:
    """The units a kernel's tiles spread over: those the calibration was measured on (a CPU's
    threads), else all of the target's."""
    return efficiency.units or target.compute.units * target.sockets


def wave_quantisation(features: KernelFeatures, target: Target, efficiency: Efficiency) -> tuple[float, float]:
    """(useful fraction of the waves of output tiles, fraction of the units busy) of a
    generated GEMM or attention kernel; (1, 1) for other kernels."""
    if features.gemm is None:
        return 1.0, 1.0
    batch, m, n, _ = features.gemm
    units = compute_units(target, efficiency)
    bm, bn = efficiency.tile
    if features.template == "attention":  # a program per block of query rows, all keys each
        tiles, useful, per_tile = batch * ceil(m / bm), batch * m, bm
    else:
        tiles, useful, per_tile = batch * ceil(m / bm) * ceil(n / bn), batch * m * n, bm * bn
    if not tiles:
        return 1.0, 1.0
    waves = max(1, ceil(tiles / units))
    return useful / (waves * units * per_tile), min(1.0, tiles / units)


def cached_bytes(features: KernelFeatures, efficiency: Efficiency) -> int:
    """Of a kernel's home bytes, those of operands small enough to stay in the on-chip cache
    between kernels (at most the home bytes not read strided)."""
    if not efficiency.cache_capacity:
        return 0
    small = sum(b for b in features.operand_bytes if b <= efficiency.cache_capacity)
    return min(small, max(features.home_bytes - features.strided_bytes, 0))


def waves(features: KernelFeatures, target: Target, efficiency: Efficiency) -> int:
    """Waves of output tiles a generated GEMM or attention kernel runs in."""
    if features.gemm is None:
        return 0
    batch, m, n, _ = features.gemm
    bm, bn = efficiency.tile
    tiles = batch * ceil(m / bm) * (1 if features.template == "attention" else ceil(n / bn))
    return max(1, ceil(tiles / compute_units(target, efficiency)))


def prologue_reruns(features: KernelFeatures, efficiency: Efficiency) -> float:
    """How often a fused prologue runs: once per tile along the dimension it is not indexed
    by (attention: each block of query rows re-reads every key; a GEMM: each column block
    re-reads its rows)."""
    if features.gemm is None or features.template == "conv":  # a conv's prologue runs as it builds im2col
        return 1.0
    _, m, n, _ = features.gemm
    bm, bn = efficiency.tile
    return float(ceil(m / bm)) if features.template == "attention" else float(ceil(n / bn))


def as_calibrated(features: KernelFeatures, efficiency: Efficiency) -> KernelFeatures:
    """`features` as this calibration can price them: a conv's GEMM shape and im2col bytes
    only where it has conv figures of its own (fitted from convs it ran); a calibration
    without them (a GPU, whose backend calls cuDNN) never measured a conv as a tiled GEMM, so
    the conv is priced by its FLOPs and bytes, without a generated GEMM's waves."""
    if features.template not in ("conv", "depthwise") or any(
            k.split("/")[0] in ("conv", "depthwise") for k in efficiency.matrix):
        return features
    return replace(features, gemm=None, im2col_bytes=0)


LIBRARY_CONV_CLASSES = ("conv", "depthwise")


def runs_in_library(features: KernelFeatures, efficiency: Efficiency) -> bool:
    """A conv this calibration prices as the convolution library's: it measured library convs
    (`conv/<dtype>/vendor` figures) and no generated ones (a GPU backend calls cuDNN)."""
    if features.template not in LIBRARY_CONV_CLASSES:
        return False
    keys = [k.split("/") for k in efficiency.matrix if k.split("/")[0] in LIBRARY_CONV_CLASSES]
    return bool(keys) and all(k[-1] == "vendor" for k in keys)


def class_figure(table: Mapping[str, float], template: str, default: float) -> float:
    """A per-class figure (memory fraction, fixed time) of `template`: its own, else that of the
    class standing in for it (`features.class_chain`), else the 'vector' one, else `default`."""
    for cls in class_chain(template):
        if cls in table:
            return table[cls]
    return table.get("vector", default)


def calibrated_time(features: KernelFeatures, target: Target, efficiency: Efficiency,
                    vendor: bool = False) -> tuple[float, str, dict[str, float]]:
    """(device time, bound, parts) of a kernel on a calibrated target. A conv the calibration
    prices as the library's (`runs_in_library`) is priced as a vendor kernel, and on NCHW data
    takes `Efficiency.nchw_library_conv` times as long as on NHWC data, plus
    `nchw_library_conv_fixed`."""
    features = as_calibrated(features, efficiency)
    library_conv = runs_in_library(features, efficiency)
    vendor = vendor or library_conv
    dtype = DType(features.dtype)
    sockets = target.sockets
    home = target.home_tier.name
    parts = {"compute": 0.0, "special": 0.0, home: 0.0}
    vector_rate = peak_flops(target, dtype, False) * sockets
    if features.matrix_flops:
        e = matrix_efficiency(features, target, efficiency, vendor)
        quantisation = 1.0 if vendor else wave_quantisation(features, target, efficiency)[0]
        parts["compute"] += features.matrix_flops / (peak_flops(target, dtype, True) * sockets * e * quantisation)
        if not vendor and features.gemm is not None:  # each wave of tiles pays its prologue and epilogue
            parts["compute"] += waves(features, target, efficiency) * efficiency.tile_overhead
    plain = features.vector_flops - features.prologue_flops - features.epilogue_flops
    if plain > 0:
        parts["compute"] += plain / (vector_rate * efficiency.vector)
    if features.epilogue_flops:
        parts["compute"] += features.epilogue_flops / (vector_rate * efficiency.epilogue)
    if features.prologue_flops:
        reruns = prologue_reruns(features, efficiency)
        parts["compute"] += features.prologue_flops * reruns / (vector_rate * efficiency.prologue)
    if features.im2col_bytes and efficiency.im2col and not vendor:  # built before the GEMM reads it
        parts["compute"] += features.im2col_bytes / (target.total_bandwidth(home) * efficiency.im2col)
    if features.special and efficiency.special_rate:
        parts["special"] = features.special / (efficiency.special_rate * sockets)
    bandwidth = target.total_bandwidth(home)
    memory = class_figure(efficiency.memory, features.template, 1.0)
    cached = cached_bytes(features, efficiency)
    contiguous = max(features.home_bytes - features.strided_bytes - cached, 0)
    parts[home] = (contiguous / (bandwidth * memory) + features.strided_bytes / (bandwidth * efficiency.strided)
                   + cached / (bandwidth * memory * efficiency.cached))
    if efficiency.unit_bandwidth and features.gemm is not None and not vendor:
        busy_units = wave_quantisation(features, target, efficiency)[1] * compute_units(target, efficiency)
        parts[home] = max(parts[home], features.home_bytes / (busy_units * efficiency.unit_bandwidth))
    p = efficiency.overlap
    busy = sum(t ** p for t in parts.values()) ** (1.0 / p) if any(parts.values()) else 0.0
    fixed = class_figure(efficiency.fixed, features.template, 0.0)
    if vendor:  # a library conv's own fixed time where fitted (`<class>/vendor`), else the library's
        fixed = efficiency.fixed.get(f"{features.template}/vendor" if library_conv else "vendor",
                                     efficiency.fixed.get("vendor", fixed))
    if library_conv and features.channels_first and efficiency.nchw_library_conv:
        busy *= efficiency.nchw_library_conv
        fixed += efficiency.nchw_library_conv_fixed
    bound = max(sorted(parts), key=lambda k: parts[k])
    if fixed > busy or host_time(features, efficiency) > busy + fixed:
        bound = "launch"
    return busy + fixed, bound, {**parts, "fixed": fixed}


def _is_free(kernel: Kernel) -> bool:
    """Lone constants cost nothing: they are folded into their users' code."""
    return all(get_op(n.op).kind is OpKind.source and n.type.numel <= 1 for n in kernel.nodes)
