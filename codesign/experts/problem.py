"""The expert-switching problem: experts with sizes, requests per slot, one link, one budget.

A *slot* is one (step, layer) of a trace: the experts it needs must be fully in the fast
tier while its compute runs. Slots run one after another. Experts move from the slow tier
to the fast tier over one shared link, one transfer at a time; where the target has DMA
the link runs while compute runs. All times are integer nanoseconds so that the simulator
and the ILP compute exactly the same numbers.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .trace import Trace

if TYPE_CHECKING:
    from codesign.targets import Target

__all__ = ["Expert", "InfeasibleError", "Problem", "ExpertLink", "expert_link", "next_use", "roofline_time", "problem_from_trace",
           "problem_for_target", "NS"]

NS = 1_000_000_000  # nanoseconds per second


class InfeasibleError(ValueError):
    """The instance has no schedule at all (a slot's experts do not fit the fast tier)."""


@dataclass(frozen=True)
class Expert:
    """One movable unit of weights: ``name`` (e.g. ``L3.E5``) and its size in bytes."""

    name: str
    nbytes: int


@dataclass(frozen=True)
class Problem:
    """One instance: what the simulator scores and the ILP solves.

    ``requests[i]`` are the expert ids slot ``i`` needs, ``compute[i]`` its compute time (ns),
    ``transfer[e]`` the time (ns) to move expert ``e`` over the link, ``capacity`` the bytes
    of the fast tier the experts may use, ``initial`` the experts resident at time 0.
    """

    experts: tuple[Expert, ...]
    requests: tuple[tuple[int, ...], ...]
    compute: tuple[int, ...]
    transfer: tuple[int, ...]
    capacity: int
    overlap: bool = True
    initial: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    bandwidth: float = 0.0  # link bytes/s, for reports

    def __post_init__(self) -> None:
        if len(self.compute) != len(self.requests):
            raise ValueError(f"{len(self.requests)} slots but {len(self.compute)} compute times")
        if len(self.transfer) != len(self.experts):
            raise ValueError(f"{len(self.experts)} experts but {len(self.transfer)} transfer times")
        for i, ids in enumerate(self.requests):
            if len(set(ids)) != len(ids):
                raise ValueError(f"slot {self.label(i)} lists an expert more than once ({list(ids)}): a slot's "
                                 f"experts are a set; list each once")
            need = sum(self.experts[e].nbytes for e in ids)
            if need > self.capacity:
                raise InfeasibleError(f"slot {self.label(i)} needs {need} bytes of experts at once but the "
                                      f"fast tier has {self.capacity} for experts: no schedule exists (reserve "
                                      f"less of the fast tier, or pick a target with more)")
        if sum(self.experts[e].nbytes for e in self.initial) > self.capacity:
            raise InfeasibleError(f"the initially resident experts need "
                                  f"{sum(self.experts[e].nbytes for e in self.initial)} bytes but the fast tier "
                                  f"has {self.capacity} for experts")

    @property
    def num_slots(self) -> int:
        return len(self.requests)

    def size(self, e: int) -> int:
        return self.experts[e].nbytes

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels else str(i)

    def uses(self) -> dict[int, list[int]]:
        """The slots that use each expert, in order."""
        out: dict[int, list[int]] = {}
        for v, ids in enumerate(self.requests):
            for e in ids:
                out.setdefault(e, []).append(v)
        return out

    def window(self, start: int, stop: int, initial: Sequence[int]) -> "Problem":
        """Slots ``start:stop`` as a problem of their own, starting with ``initial`` resident."""
        return Problem(self.experts, self.requests[start:stop], self.compute[start:stop], self.transfer,
                       self.capacity, self.overlap, tuple(sorted(initial)),
                       self.labels[start:stop] if self.labels else (), self.bandwidth)


def next_use(uses: Mapping[int, Sequence[int]], e: int, v: int) -> float:
    """The first slot after ``v`` that uses ``e`` (inf: none), from :meth:`Problem.uses`."""
    slots = uses.get(e, ())
    k = bisect.bisect_right(slots, v)
    return slots[k] if k < len(slots) else math.inf


@dataclass(frozen=True)
class ExpertLink:
    """Where experts live and move on a target: tiers, usable bytes, link rate, overlap."""

    fast: str
    slow: str
    capacity: int
    bandwidth: float
    overlap: bool
    fast_bandwidth: float


def expert_link(target: Target, reserve: int = 0) -> ExpertLink:
    """The fast tier experts run from, their backing tier, and the link between them.

    Fast tier: the fastest tier whose ``holds`` include ``experts`` (SN40L's SRAM and a
    GPU's shared memory hold only weights and activations of the running kernel). Slow tier:
    the last tier. Link: the node interconnect where a multi-socket target declares one
    (SN40L node: DDR->HBM over 1 TB/s), else the slower of the two tiers' node bandwidths
    (a GPU's host link). ``reserve`` bytes of the fast tier stay for non-expert weights,
    KV cache and activations.
    """
    fast = next((t for t in target.memory if "experts" in t.holds), target.memory[0])
    slow = target.memory[-1]
    if fast.name == slow.name:
        raise InfeasibleError(f"target {target.name!r} has one tier for experts: nothing to schedule")
    if target.sockets > 1 and target.interconnect is not None:
        bandwidth = target.interconnect.bandwidth
    else:
        bandwidth = min(target.total_bandwidth(fast.name), target.total_bandwidth(slow.name))
    capacity = target.total_capacity(fast.name) - reserve
    if capacity <= 0:
        raise InfeasibleError(f"reserve {reserve} bytes leaves no room for experts in {fast.name}")
    return ExpertLink(fast.name, slow.name, capacity, bandwidth, target.dma, target.total_bandwidth(fast.name))


def roofline_time(target: Target, weight_bytes: float, flops: float, *, tier: str | None = None,
                  dtype: str = "bf16", fixed: float = 0.0) -> float:
    """Seconds for one slot: max(FLOPs / peak, weight bytes / fast-tier bandwidth) + fixed.

    The one place the scheduler estimates compute; swap it for ``codesign.cost`` when that
    exists. Node-wide rates: a multi-socket target splits each expert over its sockets.
    """
    tier = tier or expert_link(target).fast
    return max(flops / target.total_peak_flops(dtype), weight_bytes / target.total_bandwidth(tier)) + fixed


def _ns(seconds: float) -> int:
    return int(math.ceil(seconds * NS))


def problem_from_trace(trace: Trace, *, expert_bytes: int | Sequence[int] | None = None, capacity: int,
                       bandwidth: float, compute: float | Sequence[float] | Callable[[int, int, tuple[int, ...]], float],
                       overlap: bool = True, latency: float = 0.0, initial: Sequence[int] = ()) -> Problem:
    """Build a :class:`Problem` from a trace and declared figures (SI units).

    Expert ``e`` of layer ``l`` gets global id ``l * num_experts + e``. ``expert_bytes`` is
    one size for all, or one per global id, or taken from the trace header. ``compute`` is
    seconds per slot: one number, one per slot, or ``f(step, layer, ids)``.
    """
    count = trace.num_experts * trace.num_layers
    sizes = expert_bytes if expert_bytes is not None else trace.expert_bytes
    if sizes is None:
        raise ValueError("expert sizes are needed: pass expert_bytes or write it in the trace header")
    sizes = [int(sizes)] * count if isinstance(sizes, (int, float)) else [int(s) for s in sizes]
    if len(sizes) != count:
        raise ValueError(f"{len(sizes)} expert sizes for {count} experts")
    many = trace.num_layers > 1
    experts = tuple(Expert(f"L{i // trace.num_experts}.E{i % trace.num_experts}" if many else f"E{i}", s)
                    for i, s in enumerate(sizes))
    slots = trace.slots()
    requests = tuple(tuple(layer * trace.num_experts + e for e in ids) for _, layer, ids in slots)
    if callable(compute):
        seconds = [compute(t, layer, ids) for t, layer, ids in slots]
    elif isinstance(compute, (int, float)):
        seconds = [float(compute)] * len(slots)
    else:
        seconds = list(compute)
    labels = tuple(f"{t}/{layer}" if many else str(t) for t, layer, _ in slots)
    transfer = tuple(_ns(latency + s / bandwidth) for s in sizes)
    return Problem(experts, requests, tuple(_ns(s) for s in seconds), transfer, int(capacity), overlap,
                   tuple(initial), labels, bandwidth)


def problem_for_target(trace: Trace, target: Target, *, expert_bytes: int | Sequence[int] | None = None,
                       reserve: int = 0, decode_tokens: int = 1, fixed: float = 0.0,
                       compute: float | Sequence[float] | None = None, dtype_bytes: int = 2) -> Problem:
    """A problem whose capacity, link and compute times come from ``target``.

    Compute per slot (unless given): ``decode_tokens`` sequential tokens, each reading the
    slot's experts once (roofline, :func:`roofline_time`) plus ``fixed`` seconds of
    non-expert work per token.
    """
    link = expert_link(target, reserve)
    sizes = expert_bytes if expert_bytes is not None else trace.expert_bytes
    if sizes is None:
        raise ValueError("expert sizes are needed: pass expert_bytes or write it in the trace header")
    per = [int(sizes)] * (trace.num_experts * trace.num_layers) if isinstance(sizes, (int, float)) else list(sizes)

    def roofline(step: int, layer: int, ids: tuple[int, ...]) -> float:
        active = sum(per[layer * trace.num_experts + e] for e in ids)
        flops = 2.0 * active / dtype_bytes
        return decode_tokens * roofline_time(target, active, flops, tier=link.fast, fixed=fixed)

    return problem_from_trace(trace, expert_bytes=per, capacity=link.capacity, bandwidth=link.bandwidth,
                              compute=roofline if compute is None else compute, overlap=link.overlap)
