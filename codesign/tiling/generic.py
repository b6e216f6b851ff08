"""Tiling any structured op (or fused kernel) from its `Structure`, for one or more levels.

The model is the classic single-level analytic one (Timeloop's and ZigZag's, for one
memory level): the iteration domain is cut into tiles, one extent per loop; the tile
loops run in ``order`` (outermost first: parallel loops in domain order, then the
reductions, i.e. output-stationary); and for every operand

    traffic = (words of one sweep over the loops it uses) × (re-reads)
    re-reads = ∏ ⌈size/tile⌉ over loops it does NOT use that sit outside the innermost
               loop it does use (its tile changes there, so everything outside re-fetches)

Loops with a single tile are not loops at all and are skipped, which is what lets a
k-slab of A or a whole-K block in attention stay resident. A sweep is exact for projected
permutations (each element once, partial tiles included) and conservative otherwise:
per tile the bounding box of each index expression (``floordiv``/``mod`` widened to cover
any tile offset), times the number of tiles, so a convolution's halo is paid per tile.
An indirect operand (map ``None``) is charged one element per iteration point of a tile,
capped at its size. The result is written once per sweep (reductions innermost).

The working set is the sum of the operands' per-tile footprints (inputs twice when
double buffered, as the specialists do). For ``mul-add`` (matmul, linear, batched
matmul) and ``attention`` the numbers come from the specialists in matmul.py and
attention.py, which search exactly; other ops use a greedy search over a doubling ladder
of aligned extents (largest traffic saved per byte of working set first), then grow tiles
into leftover memory where that costs no traffic. A fused kernel is tiled as one
Structure whose operand maps are all written in the anchor op's domain, as linalg fusion
does; intermediates that never leave the kernel are not operands and are not charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod, sqrt
from typing import Sequence

from codesign.ir.affine import Add, AffineExpr, AffineMap, Const, Dim, FloorDiv, Mod, Mul
from codesign.ir.ops.registry import IterKind, Structure
from codesign.ir.types import TensorType
from codesign.tiling.attention import (flash_traffic, flash_working_set, two_phase_traffic,
                                       two_phase_working_set, choose_attention_tiles)
from codesign.tiling.bounds import attention_lower_bound
from codesign.tiling.matmul import cdiv, choose_matmul_tiles, smallest_for_count


@dataclass(frozen=True)
class TileChoice:
    """Tiles for one memory level and what they cost, in plain ints / strs (IR attrs).

    ``tiles`` has one extent per domain loop; ``order`` lists the loops outermost first;
    ``traffic_bytes`` is what crosses from the next slower tier at these tiles;
    ``scheme`` names the schedule ("output-stationary", "flash", "two-phase", "loop-nest").
    """

    level: str
    tiles: tuple[int, ...]
    traffic_bytes: int
    lower_bound_bytes: int
    working_set_bytes: int
    order: tuple[int, ...] = ()
    scheme: str = "loop-nest"

    @property
    def ratio(self) -> float:
        return self.traffic_bytes / max(1, self.lower_bound_bytes)

    def as_attrs(self) -> dict[str, object]:
        """The choice as IR group attributes (ints, strs and tuples of ints only)."""
        return {"level": self.level, "tiles": self.tiles, "order": self.order,
                "scheme": self.scheme, "traffic_bytes": self.traffic_bytes,
                "lower_bound_bytes": self.lower_bound_bytes,
                "working_set_bytes": self.working_set_bytes}


# -- the per-operand model --------------------------------------------------------------------
def default_order(structure: Structure) -> tuple[int, ...]:
    """Parallel loops (domain order), then reductions: output-stationary."""
    dims = range(len(structure.domain))
    par = [i for i in dims if structure.domain[i].kind is IterKind.parallel]
    return tuple(par + [i for i in dims if structure.domain[i].kind is IterKind.reduction])


def _span(expr: AffineExpr, tiles: Sequence[int]) -> int:
    """How many consecutive index values ``expr`` can take over a tile, at any offset."""
    if isinstance(expr, Dim):
        return tiles[expr.index]
    if isinstance(expr, Const):
        return 1
    if isinstance(expr, Add):
        return _span(expr.lhs, tiles) + _span(expr.rhs, tiles) - 1
    if isinstance(expr, Mul):
        return (_span(expr.expr, tiles) - 1) * abs(expr.factor) + 1
    if isinstance(expr, FloorDiv):  # a range of L values meets at most ⌊(L-1)/q⌋ + 2 quotients
        return (_span(expr.expr, tiles) - 1) // expr.divisor + 2
    if isinstance(expr, Mod):
        return min(expr.divisor, _span(expr.expr, tiles))
    raise TypeError(f"unknown affine expression {expr!r}")


def footprint(amap: AffineMap | None, tiles: Sequence[int], shape: Sequence[int] | None) -> int:
    """Elements of one operand touched by one full tile (exact for projected permutations,
    a bounding box otherwise; each index clamped to the operand's extent when known)."""
    if amap is None:
        cap = prod(shape) if shape is not None else None
        return prod(tiles) if cap is None else min(cap, prod(tiles))
    words = 1
    for pos, r in enumerate(amap.results):
        span = _span(r, tiles)
        words *= min(span, shape[pos]) if shape is not None else span
    return words


def _used(amap: AffineMap | None, rank: int) -> frozenset[int]:
    return frozenset(range(rank)) if amap is None else amap.dims_used()


def _operand_words(amap: AffineMap | None, sizes: Sequence[int], tiles: Sequence[int],
                   order: Sequence[int], shape: Sequence[int] | None) -> int:
    counts = [cdiv(s, t) for s, t in zip(sizes, tiles)]
    used = _used(amap, len(sizes))
    live = [pos for pos, loop in enumerate(order) if loop in used and counts[loop] > 1]
    inner = live[-1] if live else -1
    rereads = prod(counts[order[p]] for p in range(inner) if order[p] not in used)
    if amap is not None and amap.is_projected_permutation:
        sweep = prod(sizes[i] for i in used)
    else:
        sweep = footprint(amap, tiles, shape) * prod(counts[i] for i in used)
        if amap is None and shape is not None:
            sweep = min(sweep, prod(shape) * prod(counts))
    return sweep * rereads


def _clamp(structure: Structure, tiles: Sequence[int]) -> tuple[int, ...]:
    if len(tiles) != len(structure.domain):
        raise ValueError(f"{len(tiles)} tile extents for a {len(structure.domain)}-loop domain")
    return tuple(max(1, min(int(t), s)) for t, s in zip(tiles, structure.loop_sizes))


# -- attention view ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Attn:
    heads: int
    nq: int
    nk: int
    d: int
    e: int
    i: int  # loop indices of the query, value-dim, key and head-dim loops
    ev: int
    j: int
    dd: int


def _attention_view(structure: Structure) -> _Attn | None:
    if structure.body != "attention" or len(structure.domain) < 4:
        return None
    nb = len(structure.domain) - 4
    i, ev, j, dd = nb, nb + 1, nb + 2, nb + 3
    sz = structure.loop_sizes
    return _Attn(prod(sz[:nb]), sz[i], sz[j], sz[dd], sz[ev], i, ev, j, dd)


def _attention_words(a: _Attn, tiles: Sequence[int], causal: bool) -> int:
    br, be, bc, bd = tiles[a.i], tiles[a.ev], tiles[a.j], tiles[a.dd]
    if bd >= a.d and be >= a.e:
        return a.heads * flash_traffic(a.nq, a.nk, a.d, a.e, br, bc, causal=causal)
    return a.heads * two_phase_traffic(a.nq, a.nk, a.d, a.e, br, causal=causal, bc=bc, be=be)


def _attention_ws_words(a: _Attn, tiles: Sequence[int], double_buffer: bool) -> int:
    br, be, bc, bd = tiles[a.i], tiles[a.ev], tiles[a.j], tiles[a.dd]
    if bd >= a.d and be >= a.e:
        return flash_working_set(a.d, a.e, br, bc, double_buffer=double_buffer)
    return two_phase_working_set(a.d, a.e, br, bc, bd, be, double_buffer=double_buffer)


# -- public model -----------------------------------------------------------------------------
def _itemsizes(operand_types: Sequence[TensorType], result_type: TensorType) -> list[int]:
    return [t.dtype.itemsize for t in operand_types] + [result_type.dtype.itemsize]


def working_set(structure: Structure, tiles: Sequence[int], elem_bytes: int | Sequence[int],
                *, shapes: Sequence[Sequence[int]] | None = None,
                double_buffer: bool = False) -> int:
    """Bytes resident in fast memory for one tile.

    ``elem_bytes`` is one size for all, or one per operand with the result's last;
    ``shapes`` (same layout) tightens the footprint of non-projected maps. Inputs count
    twice when double buffered. Attention adds its score block (and row statistics in the
    two-phase scheme) in the operands' element size.
    """
    tiles = _clamp(structure, tiles)
    maps = list(structure.operand_maps) + [structure.result_map]
    sizes = [elem_bytes] * len(maps) if isinstance(elem_bytes, int) else list(elem_bytes)
    shp = list(shapes) if shapes is not None else [None] * len(maps)
    f = 2 if double_buffer else 1
    attn = _attention_view(structure)
    total = 0
    first = 0
    if attn is not None:  # q, k, v, o and the S block: the specialist's formula
        total += _attention_ws_words(attn, tiles, double_buffer) * sizes[0]
        first = 3
    for idx in range(first, len(maps) - 1):
        total += f * footprint(maps[idx], tiles, shp[idx]) * sizes[idx]
    if attn is None:
        total += footprint(maps[-1], tiles, shp[-1]) * sizes[-1]
    return total


def traffic(structure: Structure, tiles: Sequence[int], operand_types: Sequence[TensorType],
            result_type: TensorType, *, order: Sequence[int] | None = None,
            causal: bool = False) -> int:
    """Bytes between this level and the next slower one at ``tiles`` (module docstring).

    ``causal`` only matters for attention (the Structure does not carry the attribute:
    pass ``node.attr("causal")``).
    """
    tiles = _clamp(structure, tiles)
    order = default_order(structure) if order is None else tuple(order)
    sizes = structure.loop_sizes
    items = _itemsizes(operand_types, result_type)
    maps = list(structure.operand_maps) + [structure.result_map]
    shapes = [t.shape for t in operand_types] + [result_type.shape]
    attn = _attention_view(structure)
    total = 0
    skip: set[int] = set()
    if attn is not None:
        total += _attention_words(attn, tiles, causal) * items[0]
        skip = {0, 1, 2, len(maps) - 1}
    for idx, (amap, shape) in enumerate(zip(maps, shapes)):
        if idx not in skip:
            total += _operand_words(amap, sizes, tiles, order, shape) * items[idx]
    return total


def compulsory_bytes(operand_types: Sequence[TensorType], result_type: TensorType) -> int:
    """Every operand read once, the result written once (pass distinct values only)."""
    return sum(t.nbytes for t in operand_types) + result_type.nbytes


def lower_bound(structure: Structure, operand_types: Sequence[TensorType],
                result_type: TensorType, capacity_bytes: int, *, causal: bool = False) -> int:
    """Bytes no schedule can beat with ``capacity_bytes`` of fast memory.

    The compulsory bound for every op; for matmul-like ``mul-add`` also Hong–Kung's
    ``2mnk/√M`` per batch; for attention Saha–Ye's per head (bounds.py), in the element
    size of the first operand.
    """
    # an indirect (gathered) operand need only be read where it is indexed: at most one
    # element per iteration point
    compulsory = result_type.nbytes + sum(
        min(t.nbytes, structure.points * t.dtype.itemsize) if amap is None else t.nbytes
        for amap, t in zip(structure.operand_maps, operand_types))
    item = operand_types[0].dtype.itemsize if operand_types else 1
    words = max(1, capacity_bytes // item)
    mm = _matmul_view(structure)
    if mm is not None:
        m, n, k, batch = mm.sizes(structure)
        return max(compulsory, ceil(batch * 2 * m * n * k / sqrt(words)) * item)
    attn = _attention_view(structure)
    if attn is not None:  # pair terms per query head; compulsory from the real tensors
        pairs = attention_lower_bound(attn.nq, attn.d, words, n_k=attn.nk, e=attn.e,
                                      causal=causal, batch_heads=attn.heads)
        return max(compulsory, pairs * item if _pairs_dominate(attn, words) else 0)
    return compulsory


def _pairs_dominate(a: _Attn, words: int) -> bool:
    """True when Saha–Ye's pair term, not the compulsory one, is the per-head maximum."""
    pairs = a.nq * a.nk
    cap = min(pairs * a.d / sqrt(words), pairs * a.d * a.d / words)
    return cap > a.nq * a.d + a.nk * a.d + a.nk * a.e + a.nq * a.e


# -- matmul view ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Matmul:
    m_dims: tuple[int, ...]
    n_dims: tuple[int, ...]
    k_dims: tuple[int, ...]
    batch_dims: tuple[int, ...]

    def sizes(self, s: Structure) -> tuple[int, int, int, int]:
        sz = s.loop_sizes
        return (prod(sz[i] for i in self.m_dims), prod(sz[i] for i in self.n_dims),
                prod(sz[i] for i in self.k_dims), prod(sz[i] for i in self.batch_dims))


def _matmul_view(structure: Structure) -> _Matmul | None:
    """A, B = operands 0, 1 with projected maps; extra operands only epilogue (no k)."""
    maps = structure.operand_maps
    if structure.body != "mul-add" or len(maps) < 2 or any(
            m is None or not m.is_projected_permutation for m in (*maps, structure.result_map)):
        return None
    dims = range(len(structure.domain))
    par = {i for i in dims if structure.domain[i].kind is IterKind.parallel}
    red = set(dims) - par
    ua, ub = maps[0].dims_used(), maps[1].dims_used()
    if not red or not red <= (ua & ub) or any(m.dims_used() & red for m in maps[2:]):
        return None
    pick = lambda keep: tuple(i for i in dims if keep(i))  # noqa: E731
    return _Matmul(pick(lambda i: i in par and i in ua and i not in ub),
                   pick(lambda i: i in par and i in ub and i not in ua),
                   pick(lambda i: i in red),
                   pick(lambda i: i in par and ((i in ua) == (i in ub))))


def _spread(tiles: list[int], dims: Sequence[int], extent: int, sizes: Sequence[int]) -> None:
    """Lay a collapsed extent over several loops, innermost first (whole loops, then rest)."""
    left = extent
    for i in reversed(dims):
        tiles[i] = max(1, min(sizes[i], left))
        left = max(1, left // sizes[i]) if left >= sizes[i] else 1


def _choose_matmul(structure, mm: _Matmul, operand_types, result_type, capacity_bytes,
                   align, double_buffer, level) -> TileChoice | None:
    m, n, k, batch = mm.sizes(structure)
    item = operand_types[0].dtype.itemsize
    words = capacity_bytes // item
    sizes = structure.loop_sizes
    shapes = [t.shape for t in operand_types] + [result_type.shape]
    for _ in range(16):  # epilogue operands (bias, ...) also need room: shrink until it fits
        if words < 3:
            return None
        try:
            mt = choose_matmul_tiles(m, n, k, words, align=align, double_buffer=double_buffer)
        except ValueError:
            return None
        tiles = [1] * len(sizes)
        _spread(tiles, mm.m_dims, mt.tm, sizes)
        _spread(tiles, mm.n_dims, mt.tn, sizes)
        _spread(tiles, mm.k_dims, mt.tk, sizes)
        ws = working_set(structure, tiles, _itemsizes(operand_types, result_type),
                         shapes=shapes, double_buffer=double_buffer)
        if ws <= capacity_bytes:
            outer = mm.m_dims + mm.n_dims if mt.order == "mn" else mm.n_dims + mm.m_dims
            order = mm.batch_dims + outer + mm.k_dims
            return TileChoice(level, tuple(tiles),
                              traffic(structure, tiles, operand_types, result_type, order=order),
                              lower_bound(structure, operand_types, result_type, capacity_bytes),
                              ws, order, "output-stationary")
        words -= max(1, cdiv(ws - capacity_bytes, item))
    return None


def _choose_attention(structure, a: _Attn, operand_types, result_type, capacity_bytes, align,
                      double_buffer, causal, level) -> TileChoice | None:
    item = operand_types[0].dtype.itemsize
    words = capacity_bytes // item
    shapes = [t.shape for t in operand_types] + [result_type.shape]
    for _ in range(16):  # a mask operand also needs room
        try:
            at = choose_attention_tiles(a.nq, a.d, words, n_k=a.nk, e=a.e, causal=causal,
                                        align=align, double_buffer=double_buffer)
        except ValueError:
            return None
        tiles = [1] * len(structure.domain)
        tiles[a.i], tiles[a.ev], tiles[a.j], tiles[a.dd] = at.br, at.be, at.bc, at.bd
        ws = working_set(structure, tiles, _itemsizes(operand_types, result_type),
                         shapes=shapes, double_buffer=double_buffer)
        if ws <= capacity_bytes:
            return TileChoice(level, tuple(tiles),
                              traffic(structure, tiles, operand_types, result_type, causal=causal),
                              lower_bound(structure, operand_types, result_type, capacity_bytes,
                                          causal=causal),
                              ws, default_order(structure), at.scheme)
        words -= max(1, cdiv(ws - capacity_bytes, item))
    return None


# -- greedy search for everything else --------------------------------------------------------
def _ladder(size: int, align: int) -> list[int]:
    out, x = [1], min(size, align)
    while x < size:
        if x > out[-1]:
            out.append(x)
        x *= 2
    return out + ([size] if size > out[-1] else [])


def _choose_greedy(structure, operand_types, result_type, capacity_bytes, align,
                   double_buffer, level) -> TileChoice:
    sizes = structure.loop_sizes
    order = default_order(structure)
    items = _itemsizes(operand_types, result_type)
    shapes = [t.shape for t in operand_types] + [result_type.shape]
    ws_of = lambda t: working_set(structure, t, items, shapes=shapes,  # noqa: E731
                                  double_buffer=double_buffer)
    cost_of = lambda t: traffic(structure, t, operand_types, result_type, order=order)  # noqa: E731
    tiles = [1] * len(sizes)
    if ws_of(tiles) > capacity_bytes:
        raise ValueError(f"even a single iteration point needs {ws_of(tiles)} bytes; "
                         f"the level holds {capacity_bytes}")
    ladders = [_ladder(s, align) for s in sizes]
    step = [0] * len(sizes)
    cost, ws = cost_of(tiles), ws_of(tiles)
    while True:  # phase 1: the move that saves most traffic per byte of memory
        best = None
        for loop in reversed(order):  # innermost first on ties: contiguous tiles
            if step[loop] + 1 >= len(ladders[loop]):
                continue
            trial = list(tiles)
            trial[loop] = ladders[loop][step[loop] + 1]
            t_ws = ws_of(trial)
            if t_ws > capacity_bytes:
                continue
            t_cost = cost_of(trial)
            gain = (cost - t_cost) / max(1, t_ws - ws)
            if t_cost <= cost and (best is None or gain > best[0]):
                best = (gain, loop, trial, t_cost, t_ws)
        if best is None:
            break
        _, loop, tiles, cost, ws = best
        step[loop] += 1
    for loop in reversed(order):  # phase 2: grow each loop, innermost first, into what is left
        lo, hi = tiles[loop], sizes[loop]
        cands = [c for c in range(lo + 1, hi + 1) if c == hi or c % align == 0]
        keep = lo
        left, right = 0, len(cands) - 1
        while left <= right:  # working set grows with the tile: binary search the largest
            mid = (left + right) // 2
            trial = list(tiles)
            trial[loop] = cands[mid]
            if ws_of(trial) <= capacity_bytes:
                keep, left = cands[mid], mid + 1
            else:
                right = mid - 1
        if keep != lo:
            trial = list(tiles)
            trial[loop] = smallest_for_count(sizes[loop], align, cdiv(sizes[loop], keep))
            if cost_of(trial) <= cost:
                tiles, cost = trial, cost_of(trial)
    return TileChoice(level, tuple(tiles), cost,
                      lower_bound(structure, operand_types, result_type, capacity_bytes),
                      ws_of(tiles), order, "loop-nest")


def choose_tiles(structure: Structure, operand_types: Sequence[TensorType],
                 result_type: TensorType, capacity_bytes: int, align: int = 16, *,
                 causal: bool = False, double_buffer: bool = False,
                 level: str = "") -> TileChoice:
    """Traffic-minimising tiles that fit ``capacity_bytes`` (one level).

    Matmul-like ``mul-add`` and ``attention`` go to the exact specialists (their tiles
    laid over the domain's loops), everything else to the greedy loop-nest search; all
    three report traffic and working set through the same ``traffic``/``working_set``.
    Raises ValueError when not even one iteration point fits.
    """
    mm = _matmul_view(structure)
    if mm is not None:
        found = _choose_matmul(structure, mm, operand_types, result_type, capacity_bytes,
                               align, double_buffer, level)
        if found is not None:
            return found
    attn = _attention_view(structure)
    if attn is not None:
        found = _choose_attention(structure, attn, operand_types, result_type, capacity_bytes,
                                  align, double_buffer, causal, level)
        if found is not None:
            return found
        raise ValueError(f"no attention tiling fits in {capacity_bytes} bytes")
    return _choose_greedy(structure, operand_types, result_type, capacity_bytes, align,
                          double_buffer, level)


def tile_levels(structure: Structure, operand_types: Sequence[TensorType],
                result_type: TensorType, tiers: Sequence[tuple[str, int]], align: int = 16,
                **options) -> tuple[TileChoice, ...]:
    """One `TileChoice` per tier but the slowest (fastest first): tier i's tiles fit its
    capacity and its traffic is what crosses to tier i+1.

    Each level is chosen against the whole problem, which is what the cost model needs
    (bytes over each boundary). So that tiles nest, a slower level's tiles are then widened
    to contain the faster level's wherever that still fits and costs no traffic (it
    usually does: the slower level's choice is often one of many with equal traffic).
    Nesting is not guaranteed otherwise; codegen that needs it should check.
    """
    causal = bool(options.get("causal", False))
    double_buffer = bool(options.get("double_buffer", False))
    items = _itemsizes(operand_types, result_type)
    shapes = [t.shape for t in operand_types] + [result_type.shape]
    chosen: list[TileChoice] = []
    for name, capacity in tiers[:-1]:
        choice = choose_tiles(structure, operand_types, result_type, capacity, align,
                              level=name, **options)
        if chosen:
            wide = tuple(max(a, b) for a, b in zip(chosen[-1].tiles, choice.tiles))
            ws = working_set(structure, wide, items, shapes=shapes, double_buffer=double_buffer)
            if wide != choice.tiles and ws <= capacity:
                for order in (choice.order, chosen[-1].order):
                    cost = traffic(structure, wide, operand_types, result_type,
                                   order=order or None, causal=causal)
                    if cost <= choice.traffic_bytes:
                        choice = TileChoice(name, wide, cost, choice.lower_bound_bytes, ws,
                                            order, choice.scheme)
                        break
        chosen.append(choice)
    return tuple(chosen)


def target_tiers(target) -> tuple[tuple[str, int], ...]:
    """(name, bytes one compute unit sees) for each tier of a target, fastest first:
    per-SM shared memory on a GPU, the whole tier otherwise."""
    return tuple((t.name, target.unit_capacity(t.name)) for t in target.memory)
