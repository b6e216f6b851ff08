"""A target's spatial resources: the units a dataflow mapper hands out, as data.

A spatial chip (an SN40L, a Simba-style edge accelerator) runs a fused kernel as a
pipeline: each op gets its own compute units and memory units, tiles flow from stage to
stage over the on-chip network, and a kernel too big for the chip runs in *sections* that
reconfigure the chip one after another. The `map` pass (`codesign.mapping`) reads this
section of a target file; a target without one is priced as a roofline over the socket.

```yaml
spatial:
  compute:  {name: pcu, count: 1040, peak: {bf16: 613.5 GFLOP/s}, vector_width: 16}
  memory:   {name: pmu, count: 1040, capacity: 512 KiB, banks: 16, bandwidth: 96 GB/s}
  network:  {topology: mesh, dims: [52, 40], link_bandwidth: 100 GB/s, hop_latency: 1 ns}
  section_switch: {reconfigure: 10 us, reload_from: hbm}
```

Every figure is one unit's (one PCU, one PMU, one link); the consistency checks that tie
them to the socket's figures (`count` x per-unit peak = the socket's peak, `count` x
capacity = the fast tier's capacity, ...) live on `Target`, which knows both. A unit's
peak, capacity and bandwidth may be left out: they are then the socket's figure over the
count (`Target` fills them in), so a what-if edit of the socket (a smaller SRAM) carries
through to the units.
"""

from __future__ import annotations

from math import prod
from typing import Literal

from pydantic import Field, field_validator

from .schema import DTYPES, Bandwidth, Bytes, Dtype, Flops, Seconds, _Frozen, _count, RANGES

__all__ = ["ComputeUnits", "MemoryUnits", "Network", "SectionSwitch", "Spatial", "TOPOLOGIES"]

Topology = Literal["mesh"]
TOPOLOGIES: tuple[str, ...] = ("mesh",)

_Count = _count(RANGES["units"])
_Banks = _count(RANGES["tile_multiple"])  # 1 .. 4096 banks per memory unit
_Width = _count(RANGES["tile_multiple"])  # 1 .. 4096 lanes


class ComputeUnits(_Frozen):
    """The chip's compute units (PCUs, PEs): how many, and what one of them computes."""

    name: str = Field(default="cu", pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
                      description="What the chip calls them: pcu, pe.")
    count: _Count = Field(description="Units on one socket; must equal compute.units.")
    peak: dict[Dtype, Flops] | None = Field(
        default=None,
        description="Peak rate of ONE unit per dtype, e.g. {bf16: 613.5 GFLOP/s}; count x "
        "this must match compute.peak for every dtype both list. Left out: compute.peak over "
        "count (so a what-if edit of the socket's peak carries through).")
    vector_width: _Width = Field(
        default=16, description="Output elements one unit computes at once (SIMD lanes, "
        "systolic columns); a stage whose tile has fewer outputs than units x lanes leaves "
        "units idle, so the mapper gives it no more.")

    @field_validator("peak")
    @classmethod
    def _peak_valid(cls, peak: dict[str, float] | None) -> dict[str, float] | None:
        if peak is not None and not peak:
            raise ValueError(f"peak needs at least one dtype, one of {', '.join(DTYPES)}")
        return peak

    def __hash__(self) -> int:
        return hash((self.name, self.count, tuple(sorted((self.peak or {}).items())), self.vector_width))


class MemoryUnits(_Frozen):
    """The chip's memory units (PMUs, PE buffers): the fast tier, cut into pieces."""

    name: str = Field(default="mu", pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
                      description="What the chip calls them: pmu, buffer.")
    count: _Count = Field(description="Units on one socket.")
    capacity: Bytes | None = Field(default=None, description="Bytes ONE unit holds; count x this must "
                                   "match the fast tier's (memory[0]) capacity. Left out: that capacity over count.")
    banks: _Banks = Field(description="Independently addressed banks of one unit: a stage "
                                      "needs a bank for every buffer it reads or writes at once.")
    bandwidth: Bandwidth | None = Field(default=None, description="Read+write bandwidth of ONE unit; "
                                        "count x this may not exceed the fast tier's bandwidth. Left out: that "
                                        "bandwidth over count.")


class Network(_Frozen):
    """The on-chip network that carries tiles between stages."""

    topology: Topology = Field(default="mesh", description="mesh: a 2-D grid of switches, "
                               "one link between neighbours in each direction.")
    dims: tuple[_Count, _Count] = Field(
        description="Switches along x and y. Every compute and memory unit sits at one: "
        "x * y equals compute + memory units (a checkerboard, as SN40L and Plasticine lay "
        "them out) or the compute count when each switch joins one compute and one memory unit.")
    link_bandwidth: Bandwidth = Field(description="Bandwidth of one link, one direction.")
    hop_latency: Seconds = Field(default=0.0, description="Time a tile's first word takes per hop.")

    @property
    def switches(self) -> int:
        return prod(self.dims)


class SectionSwitch(_Frozen):
    """What it costs to run the next section of a kernel that does not fit the chip."""

    reconfigure: Seconds = Field(description="Time to load the next section's configuration.")
    reload_from: str | None = Field(
        default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        description="The tier a section's weights are loaded from (default: the home tier, "
        "memory[1]); never memory[0], which the memory units are.")


class Spatial(_Frozen):
    """Units, network and section switches of a chip the `map` pass plans pipelines for."""

    compute: ComputeUnits
    memory: MemoryUnits
    network: Network
    section_switch: SectionSwitch

    def cells(self) -> list[tuple[str, int, int, int]]:
        """(kind, index, x, y) of every unit on the network's grid: memory and compute units
        alternate in a checkerboard when each switch holds one unit, else share a switch."""
        x_dims, y_dims = self.network.dims
        out: list[tuple[str, int, int, int]] = []
        paired = self.network.switches == self.compute.count
        counts = {"compute": 0, "memory": 0}
        for x in range(x_dims):
            for y in range(y_dims):
                kinds = ("compute", "memory") if paired else \
                    (("compute",) if (x + y) % 2 == 0 else ("memory",))
                for kind in kinds:
                    limit = self.compute.count if kind == "compute" else self.memory.count
                    if counts[kind] < limit:
                        out.append((kind, counts[kind], x, y))
                        counts[kind] += 1
        return out
