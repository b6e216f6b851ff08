"""Belady's MIN on two caches at once: what one different eviction costs later.

Deciding between evicting ``a`` or ``b`` now is a question about the future: how many
more loads does MIN make from the cache that keeps ``b`` than from the one that keeps
``a``? Rerunning MIN over a long horizon for each option is slow. But the two caches
differ in one expert, and MIN run on both in lockstep keeps them differing in at most one
expert each, until they coincide (then every later miss is shared). So the difference
(-1, 0 or +1 loads) is known after a few dozen uses instead of thousands.

Relaxation as in :mod:`.bounds`: unit sizes, a slot's experts requested one after another.
"""

from __future__ import annotations

import bisect
import heapq
import math
from typing import Iterable, Sequence

__all__ = ["UseSequence", "extra_misses"]


class UseSequence:
    """The trace's uses in order (slot by slot), with the next position of each expert."""

    def __init__(self, requests: Sequence[Sequence[int]]) -> None:
        self.experts: list[int] = []
        self.slot_start: list[int] = []
        self.positions: dict[int, list[int]] = {}
        for ids in requests:
            self.slot_start.append(len(self.experts))
            for e in ids:
                self.positions.setdefault(e, []).append(len(self.experts))
                self.experts.append(e)
        self.slot_start.append(len(self.experts))

    def next_at(self, e: int, k: int) -> float:
        """The first position ``>= k`` where ``e`` is used (inf: never)."""
        ps = self.positions.get(e, [])
        j = bisect.bisect_left(ps, k)
        return ps[j] if j < len(ps) else math.inf


def extra_misses(seq: UseSequence, start: int, common: Iterable[int], a: int, b: int, limit: int = 4000) -> int:
    """MIN's misses from position ``start`` with cache ``common + {a}``, minus those with
    ``common + {b}`` (both caches full): -1, 0 or 1.

    Both runs evict the expert used farthest ahead; they are simulated together while
    they differ (``a`` only in the first, ``b`` only in the second). Exact when they meet
    within ``limit`` uses (they meet quickly in practice); otherwise the difference so far.
    """
    key = {x: seq.next_at(x, start) for x in common}
    heap = [(-k, x) for x, k in key.items()]
    heapq.heapify(heap)
    ka, kb = seq.next_at(a, start), seq.next_at(b, start)
    diff = 0

    def farthest() -> tuple[int | None, float]:
        while heap:
            k, x = heap[0]
            if key.get(x) == -k:
                return x, -k
            heapq.heappop(heap)
        return None, -math.inf

    def move_in(z: int, k: float) -> None:
        key[z] = k
        heapq.heappush(heap, (-k, z))

    for pos in range(start, min(len(seq.experts), start + limit)):
        z = seq.experts[pos]
        nz = seq.next_at(z, pos + 1)
        if z in key:  # a hit in both
            move_in(z, nz)
            continue
        m, km = farthest()
        if z == a:  # the first hits, the second misses and evicts b or m
            diff -= 1
            if kb >= km:
                return diff
            del key[m]
            move_in(z, nz)
            a, ka = m, km
        elif z == b:  # the second hits, the first misses and evicts a or m
            diff += 1
            if ka >= km:
                return diff
            del key[m]
            move_in(z, nz)
            b, kb = m, km
        else:  # both miss
            first_evicts_a, second_evicts_b = ka >= km, kb >= km
            if first_evicts_a and second_evicts_b:
                return diff
            if m is not None:
                del key[m]
            move_in(z, nz)
            if first_evicts_a:  # the first keeps m, the second keeps b
                a, ka = m, km
            elif second_evicts_b:  # the first keeps a, the second keeps m
                b, kb = m, km
    return diff
