"""A placement plan as data: frozen, JSON round-trippable, replayable.

The greedy, the ILP and a hand-written plan are all `PlacementPlan`s; `plan.json` holds
`plan.to_json()`, and `PlacementPlan.from_json` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from codesign.placement.offsets import Buffer


@dataclass(frozen=True)
class TensorPlacement:
    """Where one tensor rests: (tier, fraction) shares, fastest tier first."""

    name: str
    kind: str
    nbytes: int  # per socket
    start: int
    end: int
    shares: tuple[tuple[str, float], ...]

    @property
    def tier(self) -> str:
        """The tier holding the largest share (the faster one on a tie): what the IR prints."""
        return max(self.shares, key=lambda s: s[1])[0] if self.shares else ""

    @property
    def split(self) -> bool:
        return len(self.shares) > 1


@dataclass(frozen=True)
class StepTime:
    key: str
    name: str
    time: float
    bound: str
    compute: float
    comm: float


@dataclass(frozen=True)
class TierUse:
    """Use of one tier (per socket): capacity, peak of live bytes, peak address."""

    tier: str
    capacity: int
    peak_live: int
    peak_step: int
    peak_address: int
    offsets: str  # "exact", "best-fit", ...

    @property
    def fragmentation(self) -> float:
        return self.peak_address / self.peak_live if self.peak_live else 1.0


@dataclass(frozen=True)
class PlacementPlan:
    graph: str
    target: str
    sockets: int
    split: int
    method: str  # what produced the chosen plan: "cp-sat", "greedy", "exhaustive"
    status: str  # solver status ("optimal", "feasible", ...) or "heuristic"
    time: float  # predicted seconds per run of the chosen plan
    greedy_time: float | None  # the SN40L rule's predicted time (None when it does not fit)
    bound: float | None  # the ILP's lower bound on the time (seconds)
    gap: float | None  # (time - bound) / time
    solve_seconds: float
    tensors: tuple[TensorPlacement, ...]
    steps: tuple[StepTime, ...]
    buffers: tuple[Buffer, ...]
    tiers: tuple[TierUse, ...]
    moved: tuple[tuple[str, float], ...]  # ("ddr->hbm", bytes per run)

    def tier_of(self, name: str) -> str | None:
        for t in self.tensors:
            if t.name == name:
                return t.tier
        return None

    def tiers_by_tensor(self) -> dict[str, str]:
        return {t.name: t.tier for t in self.tensors}

    @property
    def speedup(self) -> float | None:
        return self.greedy_time / self.time if self.greedy_time and self.time else None

    def __str__(self) -> str:  # short: the ledger stringifies its data
        greedy = f", greedy {self.greedy_time:.6g} s" if self.greedy_time is not None else ""
        return (f"PlacementPlan({self.method} {self.status}, {len(self.tensors)} tensors, "
                f"{self.time:.6g} s{greedy})")

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tensors"] = [[t.name, t.kind, t.nbytes, t.start, t.end, [list(s) for s in t.shares]]
                           for t in self.tensors]
        data["steps"] = [asdict(s) for s in self.steps]
        data["buffers"] = [[b.name, b.tier, b.kind, b.start, b.end, b.size, b.offset] for b in self.buffers]
        data["tiers"] = [asdict(t) | {"fragmentation": round(t.fragmentation, 4)} for t in self.tiers]
        data["moved"] = [list(m) for m in self.moved]
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> "PlacementPlan":
        d = dict(data)
        d["tensors"] = tuple(TensorPlacement(n, k, int(b), int(s), int(e), tuple((t, float(f)) for t, f in sh))
                             for n, k, b, s, e, sh in d["tensors"])
        d["steps"] = tuple(StepTime(**s) for s in d["steps"])
        d["buffers"] = tuple(Buffer(n, t, k, int(s), int(e), int(z), int(o)) for n, t, k, s, e, z, o in d["buffers"])
        d["tiers"] = tuple(TierUse(**{k: v for k, v in t.items() if k != "fragmentation"}) for t in d["tiers"])
        d["moved"] = tuple((r, float(b)) for r, b in d["moved"])
        return PlacementPlan(**d)
