"""A schedule as data: which experts to load for which slot, in link order, and when to drop.

Every policy — a baseline, the ILP, a hand-written plan — produces a :class:`Plan`; the one
simulator replays it, so their scores are comparable. A plan fixes *decisions* (what moves,
in which order, what is evicted after which slot, how early a load may be issued); the
simulator derives *times*, each event as early as the decisions allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from .problem import Problem

__all__ = ["Load", "Plan", "PlanError", "check_plan"]


class PlanError(ValueError):
    """A plan that does not fit its problem; the message gives the slot and the reason."""


@dataclass(frozen=True, order=True)
class Load:
    """Move ``expert`` into the fast tier for its use at ``slot``.

    The load may start once slot ``release`` has arrived (slot ``release - 1`` finished;
    slot 0 arrives at time 0): ``release == slot`` is fetch-on-demand, smaller values
    prefetch. It also waits for the link, for the expert's previous drop, and for space.
    """

    expert: int
    slot: int
    release: int


@dataclass(frozen=True)
class Plan:
    """Loads in link order, and drops: ``(expert, slot)`` frees the expert when that slot's
    compute ends (slot -1: at time 0)."""

    loads: tuple[Load, ...]
    drops: frozenset[tuple[int, int]]
    policy: str = ""

    def to_json(self) -> dict:
        return {"policy": self.policy,
                "loads": [[ld.expert, ld.slot, ld.release] for ld in self.loads],
                "drops": sorted([e, u] for e, u in self.drops)}

    @staticmethod
    def from_json(data: dict) -> "Plan":
        return Plan(tuple(Load(*map(int, x)) for x in data["loads"]),
                    frozenset((int(e), int(u)) for e, u in data["drops"]), data.get("policy", ""))


def check_plan(problem: Problem, plan: Plan) -> list[int]:
    """Raise :class:`PlanError` unless every used expert is resident or loaded for its slot.

    Returns, for each load, the slot after whose end the expert was last dropped (-1 when
    it was never resident before), which the simulator needs as a precedence.
    """
    by_slot: dict[int, list[int]] = {}
    for k, ld in enumerate(plan.loads):
        if not 0 <= ld.slot < problem.num_slots:
            raise PlanError(f"load {k} of expert {ld.expert} is for slot {ld.slot}, outside 0..{problem.num_slots - 1}")
        if not 0 <= ld.release <= ld.slot:
            raise PlanError(f"load {k} of expert {ld.expert}: release {ld.release} must be in 0..{ld.slot}")
        by_slot.setdefault(ld.slot, []).append(k)
    drops_at: dict[int, set[int]] = {}
    for e, u in plan.drops:
        drops_at.setdefault(u, set()).add(e)
    resident = set(problem.initial)
    last_drop: dict[int, int] = {}
    for e in drops_at.get(-1, ()):
        if e not in resident:
            raise PlanError(f"drop of expert {e} at the start, but it is not resident")
        resident.discard(e)
        last_drop[e] = -1
    after = [-1] * len(plan.loads)
    for v, ids in enumerate(problem.requests):
        loaded = {plan.loads[k].expert: k for k in by_slot.get(v, ())}
        if len(loaded) != len(by_slot.get(v, ())):
            raise PlanError(f"slot {problem.label(v)}: an expert is loaded twice")
        for e, k in loaded.items():
            if e not in ids:
                raise PlanError(f"slot {problem.label(v)}: loads expert {e}, which the slot does not use")
            if e in resident:
                raise PlanError(f"slot {problem.label(v)}: loads expert {e}, which is already resident")
            after[k] = last_drop.get(e, -1)
        missing = [e for e in ids if e not in resident and e not in loaded]
        if missing:
            raise PlanError(f"slot {problem.label(v)}: experts {missing} are neither resident nor loaded")
        resident |= loaded.keys()
        for e in drops_at.get(v, ()):
            if e not in resident:
                raise PlanError(f"slot {problem.label(v)}: drops expert {e}, which is not resident")
            resident.discard(e)
            last_drop[e] = v
    return after
