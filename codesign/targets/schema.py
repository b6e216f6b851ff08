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
  ``streams_layers`` (dataflow layer streaming) and ``compute.tile_shape`` (GPU-shaped
  power-of-two tiles).
* Figures describe ONE socket. ``MemoryTier.capacity`` and ``bandwidth`` are the
  aggregate over the whole socket, even for a tier split across compute units
  (``scope="per_unit"``, e.g. GPU shared memory: write ``132 x 228 KiB``); use
  :meth:`Target.unit_capacity` for what one unit sees, and the ``total_*`` methods for a
  whole multi-socket node.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .units import (
    format_bandwidth,
    parse_bandwidth,
    parse_bytes,
    parse_flops,
    parse_time,
)

__all__ = [
    "Bytes",
    "Bandwidth",
    "Flops",
    "Seconds",
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


def _unit_schema(what: str, examples: list[str]) -> WithJsonSchema:
    """JSON Schema for a unit field: editors should accept '64 GB' as well as 64e9."""
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "examples": examples},
                {"type": "number"},
            ],
            "description": f"{what}; a string with units such as "
            + " or ".join(repr(e) for e in examples)
            + ", or a plain number in SI base units",
        }
    )


Bytes = Annotated[
    int, BeforeValidator(parse_bytes), _unit_schema("size in bytes", ["64 GB", "520 MiB"])
]
Bandwidth = Annotated[
    float,
    BeforeValidator(parse_bandwidth),
    _unit_schema("bandwidth in bytes/s", ["1.8 TB/s", "200 GB/s"]),
]
Flops = Annotated[
    float,
    BeforeValidator(parse_flops),
    _unit_schema("compute rate in FLOP/s (or OP/s for integers)", ["638 TFLOP/s", "35 TOPS"]),
]
Seconds = Annotated[
    float, BeforeValidator(parse_time), _unit_schema("duration in seconds", ["2 us", "1.5 ms"])
]

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


def _positive(value: float, what: str) -> float:
    if value <= 0:
        raise ValueError(f"{what} must be positive")
    return value


class Compute(_Frozen):
    """The arithmetic side of one socket."""

    peak: dict[Dtype, Flops] = Field(
        description="Peak dense rate per dtype, e.g. {bf16: 638 TFLOP/s}. The rate the cost "
        "model uses: prefer a measured figure to a datasheet one, and say which in a comment."
    )
    units: int = Field(gt=0, description="Number of compute units (PCUs, SMs, cores).")
    tile_multiple: int = Field(
        default=16,
        gt=0,
        description="Tile sizes should be multiples of this (tensor-core / SIMD alignment).",
    )
    tile_shape: TileShape = Field(
        default="min_traffic",
        description="How a kernel's tiles are shaped. min_traffic: the traffic-minimising "
        "search, extents multiples of tile_multiple (dataflow chips, CPUs). power_of_two: "
        "GPU kernel tiles: power-of-two blocks (tensor-core and tl.arange shapes), an "
        "accumulator resident in the register file, pipelined operand tiles in one unit's "
        "share of the fast tier.",
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
        for dtype, rate in peak.items():
            _positive(rate, f"peak rate for {dtype}")
        return peak

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
    scope: Scope = Field(
        default="socket",
        description="per_unit: split evenly across compute units (GPU shared memory); "
        "socket: one per socket (HBM, socket-attached DDR); host: one pool shared by all "
        "sockets (pinned host memory behind PCIe).",
    )

    @field_validator("capacity")
    @classmethod
    def _capacity_positive(cls, capacity: int) -> int:
        return int(_positive(capacity, "capacity"))

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth_positive(cls, bandwidth: float) -> float:
        return _positive(bandwidth, "bandwidth")

    @field_validator("latency")
    @classmethod
    def _latency_non_negative(cls, latency: float | None) -> float | None:
        if latency is not None and latency < 0:
            raise ValueError("latency must not be negative")
        return latency

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

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth_positive(cls, bandwidth: float) -> float:
        return _positive(bandwidth, "bandwidth")


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
    sockets: int = Field(default=1, gt=0, description="Sockets (chips) in the node.")
    interconnect: Interconnect | None = Field(
        default=None, description="Links between sockets; only meaningful when sockets > 1."
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
    launch_overhead: Seconds = Field(
        default=0.0, description="Fixed cost of launching one kernel (or one fused graph)."
    )

    # ------------------------------------------------------------------ validation

    @model_validator(mode="before")
    @classmethod
    def _capabilities_default_from_kind(cls, data: object) -> object:
        """Capabilities a file leaves out default to what its kind usually has (a
        dataflow chip streams layers, a GPU shapes tiles as powers of two), so target
        files written before the capabilities existed keep their behaviour."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if kind == "dataflow":
            data.setdefault("streams_layers", True)
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
        if problems:
            raise ValueError("; ".join(problems))
        return memory

    @field_validator("launch_overhead")
    @classmethod
    def _launch_overhead_non_negative(cls, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("launch_overhead must not be negative")
        return seconds

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

    def summary(self) -> dict[str, Any]:
        """The target as plain JSON-ready data (SI units), for plans and reports."""
        return self.model_dump(mode="json")
