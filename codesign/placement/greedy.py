"""The greedy baseline: the SN40L spill rule.

Every tensor rests in the home tier (HBM), nothing in the fast tier between kernels. While
some tier overflows at some program point, take the worst point and spill one tensor that
frees space there to the next slower tier that may hold it: first the non-weights (the
activations, KV cache and experts) with the smallest aggregate transfer volume; weights
stay in HBM, and spill (again smallest volume first) only when nothing else is left to
spill. Ties break by size, then by name, so the plan is deterministic. Tensors are never
split. When the slowest tier overflows the plan is infeasible.
"""

from __future__ import annotations

import numpy as np

from codesign.placement.problem import Problem, Tensor, contribution, evaluate, whole


class GreedyOverflow(Exception):
    """The greedy could spill no further; carries its last assignment for diagnosis."""

    def __init__(self, assignment, evaluation):
        super().__init__("greedy placement overflows")
        self.assignment, self.evaluation = assignment, evaluation


def _next_tier(problem: Problem, tensor: Tensor, tier: str) -> str | None:
    slower = [t for t in tensor.tiers if problem.rank(t) > problem.rank(tier)]
    return slower[0] if slower else None


def greedy(problem: Problem) -> dict[str, dict[str, int]]:
    """The SN40L-rule assignment; raises GreedyOverflow when even the slowest tier overflows."""
    n = len(problem.steps)
    tiers = problem.tier_names
    caps = np.array([t.capacity for t in problem.tiers], dtype=float)[:, None]
    cache: dict[tuple[str, str], np.ndarray] = {}

    def occupancy(t: Tensor, tier: str) -> np.ndarray:
        key = (t.name, tier)
        if key not in cache:
            grid = np.zeros((len(tiers), n))
            for w, a, b, size in contribution(problem, t, tier).occupancy:
                grid[tiers.index(w), a:b + 1] += size
            cache[key] = grid
        return cache[key]

    where: dict[str, str] = {}
    usage = np.zeros((len(tiers), n))
    for t in problem.tensors:
        where[t.name] = problem.home if problem.home in t.tiers else \
            min(t.tiers, key=lambda x: abs(problem.rank(x) - problem.rank(problem.home)))
        usage += occupancy(t, where[t.name])
    for _ in range(len(problem.tensors) * len(tiers) + 1):
        excess = usage - caps
        if (excess <= 0).all():
            return whole(problem, where)
        row, point = np.unravel_index(int(np.argmax(excess)), excess.shape)
        candidates = []
        for t in problem.tensors:
            tier = where[t.name]
            to = _next_tier(problem, t, tier)
            if to is None:
                continue
            if occupancy(t, tier)[row, point] - occupancy(t, to)[row, point] <= 0:
                continue  # moving it frees nothing where the overflow is
            candidates.append(((t.kind == "weights", t.volume, -t.nbytes, t.name), t, to))
        if not candidates:
            break
        _, t, to = min(candidates, key=lambda c: c[0])
        usage += occupancy(t, to) - occupancy(t, where[t.name])
        where[t.name] = to
    raise GreedyOverflow(whole(problem, where), evaluate(problem, whole(problem, where)))
