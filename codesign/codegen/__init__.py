"""Code generation: the graph's kernels as source code for a backend (C++ for CPUs).

Backend-neutral pieces live here: the error every backend raises, and how a fusion
group's plan (its `tile_<tier>` attributes) is read. Each backend is a subpackage with
its op-to-text table, kernel bodies and host wrapper kept apart (`codesign.codegen.cpp`).
"""

from __future__ import annotations

from typing import Sequence

from codesign.ir.graph import Group
from codesign.ir.scalar import compute_dtype  # where arithmetic happens: f32 for the half types


class CodegenError(RuntimeError):
    """A graph (or one node of it) that a backend cannot generate code for."""


def group_tile(group: Group | None, rank: int | None = None,
               tiers: Sequence[str] = ()) -> tuple[int, ...] | None:
    """The tile sizes a group's plan gives for its fastest tier (`tile_l1`, `tile_sram`, ...).

    `tiers` is the target's tier order, fastest first (`target.tier_names`); a tier it does
    not list ranks after those it does (by name), so a plan with one tile — what the tile
    pass writes — gives that tile whatever its tier is called. Returns None when the group
    has no tile, or when `rank` is given and the tile has another length (a tile is one
    size per loop of the anchor's domain).
    """
    if group is None:
        return None
    found = group.plan.fastest_tile(tiers)
    if found is None:
        return None
    tile = found[1]
    if rank is not None and len(tile) != rank:
        return None
    return tile


__all__ = ["CodegenError", "compute_dtype", "group_tile"]
