"""The target schema: what a chip is, as data the compiler's passes read.

A target is never code. It is one YAML file validated by these models, so that a new chip
(or a "what if the SRAM were 1 GiB" variant) needs no Python. The models are frozen (a
target does not change during a compilation) and forbid unknown fields (a misspelled
field is an error, not a silently ignored default).

Conventions every consumer may rely on:

* All quantities are SI base units: bytes (``int``), bytes/s, FLOP/s, seconds.
* ``memory`` is ordered fastest first (bandwidth non-increasing), and a tier's role comes
  from its place in that order, never from its name: ``memory[0]`` is the tier tiles must
  fit in (:attr:`Target.fast_tier`), ``memory[1]`` the *home* tier tensors live in between
  kernels (:attr:`Target.home_tier`; ``memory[0]`` when there is one tier) and
  ``memory[-1]`` the backing store (:attr:`Target.slow_tier`).
* Behaviour is read from capabilities, not from ``kind`` (which only describes the chip):
  ``streams_layers`` (dataflow layer streaming), ``compute.tile_shape`` (GPU-shaped
  power-of-two tiles), ``subpixel_conv`` (the upsample + conv rewrite) and
  ``channels_last_conv`` (convs on NHWC data).
* Figures describe ONE socket. ``MemoryTier.capacity`` and ``bandwidth`` are the
  aggregate over the whole socket, even for a tier split across compute units
  (``scope="per_unit"``, e.g. GPU shared memory: write ``132 x 228 KiB``); use
  :meth:`Target.unit_capacity` for what one unit sees, and the ``total_*`` methods for a
  whole multi-socket node.
* Every number is finite and inside a plausible range, so that ``targets validate``
  refuses what would later overflow a pass (a capacity of ``1e400`` bytes, a peak of
  ``1e-300`` FLOP/s, a launch overhead of ``1e300`` s). The ranges are generous, a few
  orders of magnitude beyond any chip we know of, but finite (:data:`RANGES`):

  ==============================  ===================  =========================================
  field                           range                why the ends
  ==============================  ===================  =========================================
  ``memory[].capacity``           1 B to 1 EB          per socket; the largest hosts hold ~100 TB
  ``memory[].bandwidth``,         1 kB/s to 1 EB/s     a wafer-scale SRAM moves ~20 PB/s
  ``interconnect.bandwidth``
  ``compute.peak.<dtype>``        1 MFLOP/s to         per socket; a wafer-scale chip is ~0.1
                                  1 EFLOP/s            EFLOP/s
  ``memory[].latency``,           0 s to 1 s           a kernel launch is microseconds
  ``interconnect.latency``,
  ``launch_overhead``
  ``sockets``                     1 to 65536           the largest nodes have thousands
  ``compute.units``               1 to 16777216        a wafer-scale chip has ~900 000 cores
  ``compute.tile_multiple``       1 to 4096            tensor cores and MXUs align to <= 256
  ``energy_per_flop``,            0 J to 1 uJ          a FLOP costs ~0.1-1 pJ, a DRAM byte ~10-100 pJ
  ``energy_per_byte``
  ``area_mm2``,                   0 to 1e6             a reticle is ~850 mm2; a wafer ~70 000 mm2
  ``area_mm2_per_mib``
  ``cost_usd_per_mm2``,           0 to 1e6             US$; HBM costs ~10-20 $/GB
  ``cost_usd_per_gb``
  ==============================  ===================  =========================================

* Energy, area and cost figures are optional (co-design exploration reads them:
  ``codesign sweep`` reports energy when every tier the model touches has an
  ``energy_per_byte`` and its dtype an ``energy_per_flop``, area and cost when the target
  gives them; :meth:`Target.area_mm2`, :meth:`Target.cost_usd`). No pass reads them.

  Across the tiers of one target, the fastest bandwidth may be at most
  :data:`MAX_BANDWIDTH_SPREAD` (1e9) times the slowest.
* A node of more than one socket must say how its sockets are linked (``interconnect``):
  placement needs its bandwidth to place tensor-parallel weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .calibration import Calibration
from .units import (
    UnitRangeError,
    format_bandwidth,
    format_bytes,
    format_energy,
    format_flops,
    format_time,
    parse_bandwidth,
    parse_bytes,
    parse_energy,
    parse_flops,
    parse_time,
)

__all__ = [
    "Bytes",
    "Bandwidth",
    "Flops",
    "Seconds",
    "Range",
    "RANGES",
    "MAX_BANDWIDTH_SPREAD",
    "Dtype",
    "DTYPES",
    "Holds",
    "HOLDS",
    "Scope",
    "TileShape",
    "TILE_SHAPES",
    "Compute",
    "MemoryTier",
    "Interconnect",
    "Target",
    "TargetLookupError",
]


@dataclass(frozen=True)
class Range:
    """The plausible values of one kind of figure: generous, but finite. Inclusive."""

    low: float
    high: float
    what: str  # "a capacity", for messages
    format: Callable[[Any], str] = str

    def expected(self) -> str:
        return f"expected {self.what} from {self.format(self.low)} to {self.format(self.high)}"

    def check(self, value: float) -> float:
        """``value`` if it is finite and in range; else a ValueError saying the range (the
        loader adds the value as written, the file, the field path and the line)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{self.expected()} (not a finite number)")
        # int-to-float comparisons are exact in Python: no OverflowError for a huge int
        if self.low > 0 and value <= 0:
            raise ValueError(f"must be positive; {self.expected()}")
        if not self.low <= value <= self.high:
            raise ValueError(self.expected())
        return value


RANGES: dict[str, Range] = {
    "capacity": Range(1, 10**18, "a capacity", format_bytes),  # 1 B .. 1 EB per socket
    "bandwidth": Range(1e3, 1e18, "a bandwidth", format_bandwidth),  # 1 kB/s .. 1 EB/s
    "peak": Range(1e6, 1e18, "a peak rate", format_flops),  # 1 MFLOP/s .. 1 EFLOP/s per socket
    "duration": Range(0.0, 1.0, "a duration", format_time),  # latencies, launch: 0 .. 1 s
    "sockets": Range(1, 65536, "a whole number"),
    "units": Range(1, 2**24, "a whole number"),
    "tile_multiple": Range(1, 4096, "a whole number"),
    "energy": Range(0.0, 1e-6, "an energy per operation", format_energy),  # 0 J .. 1 uJ
    "area": Range(0.0, 1e6, "an area in mm2"),
    "price": Range(0.0, 1e6, "a price in US$"),
}
"""Plausible range of each kind of figure (the table in this module's docstring)."""

MAX_BANDWIDTH_SPREAD = 1e9
"""Most times the fastest tier's bandwidth may exceed the slowest's. Real chips span about
1e2 (a phone) to 1e6 (wafer-scale SRAM over PCIe); placement's ILP counts time in units of
the slowest tier's transfers, and a spread near 1e15 overflows its 64-bit coefficients."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quantity(
    base: type, parse: Callable[[Any], Any], limits: Range, what: str, examples: list[str]
) -> Any:
    """A unit field: read with ``parse``, then held to ``limits``. A number no float can
    hold (inf, nan, 1e400) is reported against the field's range, not the float's."""

    def validate(value: object) -> Any:
        try:
            amount = parse(value)
        except UnitRangeError:
            finite = not (isinstance(value, float) and not math.isfinite(value))
            why = "out of range" if finite else "not a finite number"
            raise ValueError(f"{limits.expected()}, got {_short(value)} ({why})") from None
        return limits.check(amount)

    low, high = limits.format(limits.low), limits.format(limits.high)
    schema = WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "examples": examples},
                {"type": "number", "minimum": limits.low, "maximum": limits.high},
            ],
            "description": f"{what}, from {low} to {high}; a string with units such as "
            + " or ".join(repr(e) for e in examples)
            + ", or a plain number in SI base units",
        }
    )
    return Annotated[base, BeforeValidator(validate), schema]


def _count(limits: Range) -> Any:
    """A whole-number field held to ``limits`` (pydantic refuses inf, nan and fractions)."""
    def whole(value: object) -> object:
        # 1.0e+26 is a whole number too large for pydantic's float-to-int path; let the
        # range check report it instead of a parsing complaint.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return value

    return Annotated[
        int,
        BeforeValidator(whole),
        Field(gt=0, json_schema_extra={"maximum": int(limits.high)}),
        AfterValidator(lambda n: int(limits.check(n))),
    ]


Bytes = _quantity(int, parse_bytes, RANGES["capacity"], "size in bytes", ["64 GB", "520 MiB"])
Bandwidth = _quantity(
    float, parse_bandwidth, RANGES["bandwidth"], "bandwidth in bytes/s", ["1.8 TB/s", "200 GB/s"]
)
Flops = _quantity(
    float,
    parse_flops,
    RANGES["peak"],
    "compute rate in FLOP/s (or OP/s for integers)",
    ["638 TFLOP/s", "35 TOPS"],
)
Seconds = _quantity(
    float, parse_time, RANGES["duration"], "duration in seconds", ["2 us", "1.5 ms"]
)

Energy = _quantity(float, parse_energy, RANGES["energy"], "energy in joules", ["0.5 pJ", "20 pJ"])


def _number(limits: Range, what: str) -> Any:
    """A plain number (its unit in the field's name, e.g. ``area_mm2``) held to ``limits``."""
    return Annotated[float, AfterValidator(limits.check),
                     Field(ge=limits.low, le=limits.high, description=what)]


_Area = _number(RANGES["area"], "area in mm2")
_Price = _number(RANGES["price"], "price in US$")

_Sockets = _count(RANGES["sockets"])
_Units = _count(RANGES["units"])
_TileMultiple = _count(RANGES["tile_multiple"])

Dtype = Literal["bf16", "fp16", "fp32", "tf32", "fp8", "int8"]
DTYPES: tuple[str, ...] = get_args(Dtype)

Holds = Literal["weights", "activations", "kv_cache", "experts"]
HOLDS: tuple[str, ...] = get_args(Holds)

Scope = Literal["per_unit", "socket", "host"]
"""Who owns a tier: split evenly across compute units; one per socket; one for the host."""

TileShape = Literal["min_traffic", "power_of_two"]
TILE_SHAPES: tuple[str, ...] = get_args(TileShape)
"""How kernel tiles are shaped (``Compute.tile_shape``)."""

# Dtypes that run at the same rate on every target we know of, used when a target lists
# only one of them (SN40L publishes bf16 only; fp16 runs on the same datapath).
_SAME_RATE: dict[str, str] = {"fp16": "bf16", "bf16": "fp16"}


class TargetLookupError(LookupError):
    """A name (tier, dtype) that the target does not have; the message lists what it has."""


class _Frozen(BaseModel):
    """Base for all target models: immutable, and strict about field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Compute(_Frozen):
    """The arithmetic side of one socket."""

    peak: dict[Dtype, Flops] = Field(
        description="Peak dense rate per dtype, e.g. {bf16: 638 TFLOP/s}. The rate the cost "
        "model uses: prefer a measured figure to a datasheet one, and say which in a comment."
    )
    units: _Units = Field(
        description="Number of compute units (PCUs, SMs, cores), 1 to 16777216."
    )
    tile_multiple: _TileMultiple = Field(
        default=16,
        description="Tile sizes should be multiples of this (tensor-core / SIMD alignment), "
        "1 to 4096.",
    )
    tile_shape: TileShape = Field(
        default="min_traffic",
        description="How a kernel's tiles are shaped. min_traffic: the traffic-minimising "
        "search, extents multiples of tile_multiple (dataflow chips, CPUs). power_of_two: "
        "GPU kernel tiles: power-of-two blocks (tensor-core and tl.arange shapes), an "
        "accumulator resident in the register file, pipelined operand tiles in one unit's "
        "share of the fast tier.",
    )
    energy_per_flop: dict[Dtype, Energy] | None = Field(
        default=None,
        description="Energy of one FLOP per dtype, e.g. {bf16: 0.3 pJ} (optional; exploration "
        "reports energy with it). Cite it or label it an assumption in a comment.",
    )
    area_mm2: _Area | None = Field(
        default=None,
        description="Die area of everything but the tiers that give area_mm2_per_mib (logic, "
        "I/O), mm2 (optional; exploration reports area with it).",
    )

    @model_validator(mode="after")
    def _power_of_two_alignment(self) -> Compute:
        multiple = self.tile_multiple
        if self.tile_shape == "power_of_two" and multiple & (multiple - 1):
            raise ValueError(
                f"tile_shape power_of_two needs a power-of-two tile_multiple, got {multiple}"
            )
        return self

    @field_validator("peak")
    @classmethod
    def _peak_valid(cls, peak: dict[str, float]) -> dict[str, float]:
        if not peak:
            raise ValueError(f"peak needs at least one dtype, one of {', '.join(DTYPES)}")
        return peak  # each rate is held to RANGES["peak"] by its type (Flops)

    def __hash__(self) -> int:  # dict fields are unhashable; hash a sorted view instead.
        return hash((tuple(sorted(self.peak.items())), self.units, self.tile_multiple,
                     self.tile_shape))


class MemoryTier(_Frozen):
    """One level of the memory hierarchy, as seen by one socket."""

    name: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="Short identifier, e.g. sram, hbm, ddr."
    )
    capacity: Bytes = Field(
        description="Aggregate capacity per socket. For scope per_unit write it as "
        "'<units> x <per-unit size>', e.g. '132 x 228 KiB'."
    )
    bandwidth: Bandwidth = Field(
        description="Sustained aggregate bandwidth per socket (read+write copy rate)."
    )
    holds: tuple[Holds, ...] = Field(
        default=HOLDS, description="What the placement pass may put in this tier."
    )
    latency: Seconds | None = Field(default=None, description="Access latency, if known.")
    energy_per_byte: Energy | None = Field(
        default=None, description="Energy of moving one byte at this tier (optional)."
    )
    area_mm2_per_mib: _Area | None = Field(
        default=None,
        description="Die area per MiB of capacity, mm2/MiB, for an on-chip tier (optional): "
        "the target's area grows with this tier's capacity.",
    )
    cost_usd_per_gb: _Price | None = Field(
        default=None,
        description="Price per GB (1e9 bytes) of capacity, US$, for a packaged memory (optional).",
    )
    scope: Scope = Field(
        default="socket",
        description="per_unit: split evenly across compute units (GPU shared memory); "
        "socket: one per socket (HBM, socket-attached DDR); host: one pool shared by all "
        "sockets (pinned host memory behind PCIe).",
    )

    @field_validator("holds")
    @classmethod
    def _holds_valid(cls, holds: tuple[str, ...]) -> tuple[str, ...]:
        if not holds:
            raise ValueError(f"holds must name at least one of {', '.join(HOLDS)}")
        repeated = sorted({h for h in holds if holds.count(h) > 1})
        if repeated:
            raise ValueError(f"holds lists {', '.join(repeated)} more than once")
        return holds


class Interconnect(_Frozen):
    """How the sockets of a node move data to each other and to their host memory."""

    bandwidth: Bandwidth = Field(description="Aggregate bandwidth across the node.")
    latency: Seconds | None = Field(default=None, description="Per-transfer latency, if known.")
    description: str = Field(default="", description="What the link is, with its source.")


# The spatial section's models use the quantities above; imported here, after them.
from .spatial import Spatial  # noqa: E402

_UNIT_SLACK = 0.02
"""How far `spatial` per-unit figures times their count may stray from the socket's (a
rounded per-unit figure such as 613.5 GFLOP/s for 638 TFLOP/s over 1040 PCUs)."""


class Target(_Frozen):
    """A chip (or node of chips) the compiler plans for, without needing the hardware."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Identifier, e.g. sn40l."
    )
    description: str = Field(default="", description="One line, with the main source.")
    kind: Literal["dataflow", "gpu", "cpu", "mobile"] = Field(
        description="What the chip is, for people and reports; passes read capabilities "
        "(streams_layers, compute.tile_shape), never this."
    )
    host_backend: Literal["cpp", "triton", "iree", "interpreter"] = Field(
        description="What runs the plan functionally on this host: triton on a GPU, cpp "
        "(generated C++) elsewhere; iree or interpreter on request. A backend names the "
        "devices it runs on; other inputs (CUDA tensors, say) pick that device's backend."
    )
    compute: Compute
    memory: tuple[MemoryTier, ...] = Field(description="Memory tiers, fastest first.")
    sockets: _Sockets = Field(
        default=1, description="Sockets (chips) in the node, 1 to 65536."
    )
    interconnect: Interconnect | None = Field(
        default=None,
        validate_default=True,  # so that a missing one is checked against sockets
        description="Links between sockets; required when sockets > 1.",
    )
    dma: bool = Field(
        default=True, description="Whether tier-to-tier transfers can overlap compute."
    )
    streams_layers: bool = Field(
        default=False,
        strict=True,
        description="Whether a repeated block (a decoder layer) may run as one kernel that "
        "streams through the fast tier with every intermediate buffered, as a dataflow "
        "chip maps a layer (SN40L); the fusion pass tries it when the stage buffers fit.",
    )
    subpixel_conv: bool = Field(
        default=False,
        strict=True,
        description="Whether the compile pipeline rewrites nearest upsample + conv into a "
        "sub-pixel conv + pixel shuffle where the cost model predicts a gain (the "
        "subpixel-conv pass; exact). On by default for gpu and mobile targets, whose "
        "decoders are bound by the upsampled convolutions.",
    )
    channels_last_conv: bool = Field(
        default=False,
        strict=True,
        description="Whether the compile pipeline runs 2-D convolutions on channels-last (NHWC) "
        "data (the channels-last pass): the convolution library's fast kernels read NHWC "
        "(cuDNN's tensor-core kernels), and the layout then stays NHWC between convs. On by "
        "default for gpu targets.",
    )
    launch_overhead: Seconds = Field(
        default=0.0,
        description="Fixed cost of launching one kernel (or one fused graph), 0 s to 1 s.",
    )
    cost_usd_per_mm2: _Price | None = Field(
        default=None,
        description="Price of a mm2 of yielded die, US$ (optional): with area it prices the die.",
    )
    spatial: Spatial | None = Field(
        default=None,
        description="The chip's compute and memory units, on-chip network and section "
        "switch cost (codesign.targets.spatial): the map pass then plans each fused kernel as "
        "a pipeline of stages over the units; without it kernels are priced as a roofline.",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="The measured (or cited) efficiency model: a calibration file's path, "
        "relative to the target file (codesign.targets.calibration). Without one the cost "
        "model prices at the peaks above and reports say the figures are ideal.",
    )

    # ------------------------------------------------------------------ validation

    @model_validator(mode="before")
    @classmethod
    def _capabilities_default_from_kind(cls, data: object) -> object:
        """Capabilities a file leaves out default to what its kind usually has (a
        dataflow chip streams layers, a GPU shapes tiles as powers of two, GPUs and phones
        rewrite upsampling convs as sub-pixel convs), so target
        files written before the capabilities existed keep their behaviour."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if kind == "dataflow":
            data.setdefault("streams_layers", True)
        if kind in ("gpu", "mobile"):
            data.setdefault("subpixel_conv", True)
        if kind == "gpu":
            data.setdefault("channels_last_conv", True)
        compute = data.get("compute")
        if kind == "gpu" and isinstance(compute, dict) and "tile_shape" not in compute:
            data["compute"] = {**compute, "tile_shape": "power_of_two"}
        return data

    @field_validator("memory")
    @classmethod
    def _memory_valid(cls, memory: tuple[MemoryTier, ...]) -> tuple[MemoryTier, ...]:
        if not memory:
            raise ValueError("memory needs at least one tier")
        problems: list[str] = []
        names = [tier.name for tier in memory]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"tier name {name!r} is used more than once")
        for i, (faster, slower) in enumerate(zip(memory, memory[1:])):
            if slower.bandwidth > faster.bandwidth:
                problems.append(
                    "tiers must be ordered fastest first (bandwidth non-increasing), but "
                    f"memory[{i}] {faster.name!r} ({format_bandwidth(faster.bandwidth)}) "
                    f"comes before memory[{i + 1}] {slower.name!r} "
                    f"({format_bandwidth(slower.bandwidth)})"
                )
        fastest = max(memory, key=lambda tier: tier.bandwidth)
        slowest = min(memory, key=lambda tier: tier.bandwidth)
        if fastest.bandwidth > MAX_BANDWIDTH_SPREAD * slowest.bandwidth:
            problems.append(
                f"the fastest tier may be at most {MAX_BANDWIDTH_SPREAD:.0e} times faster "
                f"than the slowest, but {fastest.name!r} ({format_bandwidth(fastest.bandwidth)})"
                f" is {fastest.bandwidth / slowest.bandwidth:.1e} times {slowest.name!r} "
                f"({format_bandwidth(slowest.bandwidth)})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return memory

    @field_validator("interconnect")
    @classmethod
    def _interconnect_when_several_sockets(
        cls, interconnect: Interconnect | None, info: ValidationInfo
    ) -> Interconnect | None:
        sockets = info.data.get("sockets")  # absent when sockets itself was invalid
        if interconnect is None and isinstance(sockets, int) and sockets > 1:
            raise ValueError(
                f"required when sockets > 1 (sockets is {sockets}): expected a mapping such "
                "as {bandwidth: 900 GB/s} saying how the sockets are linked, got none"
            )
        return interconnect

    @model_validator(mode="after")
    def _per_unit_divides(self) -> Target:
        # A per-unit tier is one equal slice per compute unit; a slice of fractional
        # bytes means the capacity or the unit count was mistyped.
        for tier in self.memory:
            if tier.scope == "per_unit" and tier.capacity % self.compute.units:
                raise ValueError(
                    f"tier {tier.name!r} is per_unit but its capacity ({tier.capacity} bytes) "
                    f"does not split evenly over {self.compute.units} compute units; "
                    "write it as '<units> x <size per unit>'"
                )
        return self

    @model_validator(mode="after")
    def _spatial_consistent(self) -> Target:
        """The per-unit figures of `spatial` must add up to the socket's: the mapper and the
        roofline then price the same chip."""
        sp = self.spatial
        if sp is None:
            return self
        fast = self.memory[0]
        derived: dict[str, dict] = {"compute": {}, "memory": {}}  # left-out figures: the socket's over the count
        if sp.compute.peak is None:
            derived["compute"]["peak"] = {d: r / sp.compute.count for d, r in self.compute.peak.items()}
        if sp.memory.capacity is None:
            derived["memory"]["capacity"] = max(1, fast.capacity // sp.memory.count)
        if sp.memory.bandwidth is None:
            derived["memory"]["bandwidth"] = fast.bandwidth / sp.memory.count
        if derived["compute"] or derived["memory"]:
            sp = sp.model_copy(update={"compute": sp.compute.model_copy(update=derived["compute"]),
                                       "memory": sp.memory.model_copy(update=derived["memory"])})
            object.__setattr__(self, "spatial", sp)
        problems: list[str] = []

        def off(total: float, socket: float) -> bool:
            return abs(total - socket) > _UNIT_SLACK * socket

        if sp.compute.count != self.compute.units:
            problems.append(f"spatial.compute.count ({sp.compute.count}) must equal compute.units "
                            f"({self.compute.units})")
        for dtype, rate in sorted(sp.compute.peak.items()):
            socket = self.compute.peak.get(dtype)  # type: ignore[call-overload]
            if socket is not None and off(rate * sp.compute.count, socket):
                problems.append(
                    f"spatial.compute.peak.{dtype} x count is {format_flops(rate * sp.compute.count)}, "
                    f"but compute.peak.{dtype} is {format_flops(socket)} (expected within "
                    f"{_UNIT_SLACK:.0%}; write the per-unit rate, {format_flops(socket / sp.compute.count)})")
        total = sp.memory.capacity * sp.memory.count
        if off(total, fast.capacity):
            problems.append(
                f"spatial.memory.capacity x count is {format_bytes(total)}, but memory[0] "
                f"{fast.name!r} holds {format_bytes(fast.capacity)} (expected within {_UNIT_SLACK:.0%}: "
                f"the memory units are the fast tier, {format_bytes(fast.capacity // sp.memory.count)} each)")
        if sp.memory.bandwidth * sp.memory.count > fast.bandwidth * (1 + _UNIT_SLACK):
            problems.append(
                f"spatial.memory.bandwidth x count is {format_bandwidth(sp.memory.bandwidth * sp.memory.count)}, "
                f"more than memory[0] {fast.name!r}'s {format_bandwidth(fast.bandwidth)}")
        switches, c, m = sp.network.switches, sp.compute.count, sp.memory.count
        if switches == c + m and c != m:
            problems.append(f"spatial.network.dims {list(sp.network.dims)} lay units out as a checkerboard, "
                            f"which needs as many compute ({c}) as memory units ({m})")
        elif switches != c + m and not (switches == c == m):
            problems.append(
                f"spatial.network.dims {list(sp.network.dims)} give {switches} switches; expected "
                f"{c + m} (one unit a switch: compute + memory units) or {c} (a compute and a "
                "memory unit a switch, when the counts are equal)")
        reload = sp.section_switch.reload_from
        if reload is not None:
            if reload not in self.tier_names:
                problems.append(f"spatial.section_switch.reload_from names no memory tier {reload!r}; "
                                f"the tiers are {', '.join(self.tier_names)}")
            elif reload == fast.name and len(self.memory) > 1:
                problems.append(f"spatial.section_switch.reload_from is {reload!r}, the fast tier the "
                                "memory units make up; name a slower tier (the home tier, "
                                f"{self.home_tier.name!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def reload_tier(self) -> MemoryTier:
        """The tier a section's weights are loaded from: `spatial.section_switch.reload_from`,
        else the home tier."""
        name = self.spatial.section_switch.reload_from if self.spatial is not None else None
        return self.tier(name) if name else self.home_tier

    # ------------------------------------------------------------------ lookups

    @property
    def tier_names(self) -> tuple[str, ...]:
        """Tier names, fastest first."""
        return tuple(t.name for t in self.memory)

    def tier(self, name: str) -> MemoryTier:
        """The tier called ``name``; raises :class:`TargetLookupError` naming the others."""
        for tier in self.memory:
            if tier.name == name:
                return tier
        raise TargetLookupError(
            f"target {self.name!r} has no memory tier {name!r}; "
            f"its tiers are {', '.join(self.tier_names)}"
        )

    @property
    def fast_tier(self) -> MemoryTier:
        """The fastest tier: where tiles must fit."""
        return self.memory[0]

    @property
    def home_tier(self) -> MemoryTier:
        """The tier tensors live in between kernels: the second fastest (the only one if
        there is one), e.g. HBM on a GPU or an SN40L, LPDDR on a phone."""
        return self.memory[1] if len(self.memory) > 1 else self.memory[0]

    @property
    def slow_tier(self) -> MemoryTier:
        """The slowest tier: the backing store everything can fall back to."""
        return self.memory[-1]

    def tier_rank(self, name: str) -> int:
        """Position of tier ``name`` in the memory order (0: fastest); raises
        :class:`TargetLookupError` naming the tiers for an unknown name."""
        return self.memory.index(self.tier(name))

    def tiers_holding(self, what: Holds) -> tuple[MemoryTier, ...]:
        """Tiers (fastest first) that may hold ``what``, e.g. ``"kv_cache"``."""
        return tuple(t for t in self.memory if what in t.holds)

    def peak_flops(self, dtype: str = "bf16") -> float:
        """Peak rate of one socket for ``dtype``, in FLOP/s.

        fp16 and bf16 stand in for each other when only one is listed (they share the
        datapath on every target here); anything else missing is an error, because
        guessing a rate for, say, fp8 on a chip without fp8 would mislead the cost model.
        """
        if dtype in self.compute.peak:
            return self.compute.peak[dtype]  # type: ignore[index]
        stand_in = _SAME_RATE.get(dtype)
        if stand_in is not None and stand_in in self.compute.peak:
            return self.compute.peak[stand_in]  # type: ignore[index]
        raise TargetLookupError(
            f"target {self.name!r} lists no peak rate for {dtype!r}; "
            f"it lists {', '.join(self.compute.peak)}"
        )

    # ------------------------------------------------------------------ per unit / node

    def unit_capacity(self, name: str) -> int:
        """Bytes of tier ``name`` one compute unit sees: a slice if per_unit, else all."""
        tier = self.tier(name)
        if tier.scope == "per_unit":
            return tier.capacity // self.compute.units
        return tier.capacity

    def _node_factor(self, tier: MemoryTier) -> int:
        return 1 if tier.scope == "host" else self.sockets

    def total_capacity(self, name: str) -> int:
        """Bytes of tier ``name`` across the node: × sockets unless the tier is the host's."""
        tier = self.tier(name)
        return tier.capacity * self._node_factor(tier)

    def total_bandwidth(self, name: str) -> float:
        """Bandwidth of tier ``name`` across the node: × sockets unless the host's."""
        tier = self.tier(name)
        return tier.bandwidth * self._node_factor(tier)

    def total_peak_flops(self, dtype: str = "bf16") -> float:
        """Peak rate of the whole node for ``dtype``."""
        return self.peak_flops(dtype) * self.sockets

    # ------------------------------------------------------------------ area, cost

    def area_mm2(self) -> float | None:
        """Die area of one socket: the compute's ``area_mm2`` plus every tier's capacity in
        MiB times its ``area_mm2_per_mib``; None when the target gives no ``area_mm2``."""
        if self.compute.area_mm2 is None:
            return None
        return self.compute.area_mm2 + sum(t.capacity / 2**20 * t.area_mm2_per_mib
                                           for t in self.memory if t.area_mm2_per_mib is not None)

    def cost_usd(self) -> float | None:
        """Price of the node: each socket's die (area x ``cost_usd_per_mm2``) and memories
        (capacity x ``cost_usd_per_gb``), host tiers once; None when it gives no price."""
        area = self.area_mm2()
        priced = [t for t in self.memory if t.cost_usd_per_gb is not None]
        if not priced and (area is None or self.cost_usd_per_mm2 is None):
            return None
        die = area * self.cost_usd_per_mm2 if area is not None and self.cost_usd_per_mm2 is not None else 0.0
        memories = sum(self.total_capacity(t.name) / 1e9 * t.cost_usd_per_gb for t in priced)
        return die * self.sockets + memories

    def summary(self) -> dict[str, Any]:
        """The target as plain JSON-ready data (SI units), for plans and reports."""
        return self.model_dump(mode="json")
