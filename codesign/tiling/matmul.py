"""Tiles for C[m,n] += A[m,k]·B[k,n] under a fast memory of M words.

The schedule is output-stationary: a tm×tn block of C stays in fast memory while the k
loop streams tm×tk blocks of A and tk×tn blocks of B past it, then C is written once. With
the row loop (m) outside the column loop (n), in words and with partial tiles exact:

    traffic = m·k·R_A + k·n·R_B + m·n
    R_A = 1 if tk = k else ⌈n/tn⌉       (a tm×k slab of A that fits stays for the whole row)
    R_B = 1 if tk = k and tn = n else ⌈m/tm⌉
    working set = f·(tm·tk + tk·tn) + tm·tn ≤ M           (f = 2 when double buffered)

and symmetrically with the loops swapped (``order="nm"``: B's slab stays). A partial k
step (tk < k) costs the same whatever its size, so the search tries tk at its smallest
legal value and tk = k, both loop orders, every tm, and the largest tn that fits (a larger
tn never costs traffic). That is the exact minimum of the model (brute-force tested).
Afterwards tk takes the capacity left over: longer k steps mean fewer synchronisations at
no cost here. With a small tk the C block is close to the √M × √M square of Hong–Kung's
bound ``2mnk/√M``, which is why achieved / bound stays ≤ 2 once ``M ≥ 32·align²``
(``MATMUL_REGIME``; measured in docs/io_lower_bounds.md). Below that a tk = align slab
takes too large a share of M; the tiler still works, with a larger ratio.

Double buffering doubles only the *streamed* blocks (A and B), as CUTLASS's multistage
pipelines do; the stationary C block is held once.
"""

from __future__ import annotations

from dataclasses import dataclass

from codesign.tiling.bounds import matmul_lower_bound

MATMUL_REGIME = 32
"""Ratio ≤ 2 is claimed (and tested) for ``M ≥ MATMUL_REGIME · align²`` words."""


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class MatmulTiling:
    """A chosen (tm, tn, tk) and loop order, and what it costs in words (all ``batch``)."""

    tm: int
    tn: int
    tk: int
    order: str  # "mn": row blocks outer (A's slab can stay); "nm": column blocks outer
    traffic: int
    lower_bound: int
    working_set: int
    aligned: bool  # False when M was too small for align-multiple tiles (fallback)

    @property
    def ratio(self) -> float:
        return self.traffic / self.lower_bound


def matmul_reads(m: int, n: int, k: int, tm: int, tn: int, tk: int, order: str = "mn") -> tuple[int, int]:
    """How many times the schedule reads A and B in full (module docstring)."""
    if order == "nm":
        reads_b, reads_a = matmul_reads(n, m, k, tn, tm, tk, "mn")
        return reads_a, reads_b
    if order != "mn":
        raise ValueError(f"matmul loop order must be 'mn' or 'nm', got {order!r}")
    reads_a = 1 if tk >= k else cdiv(n, tn)
    reads_b = 1 if tk >= k and tn >= n else cdiv(m, tm)
    return reads_a, reads_b


def matmul_traffic(m: int, n: int, k: int, tm: int, tn: int, tk: int, order: str = "mn") -> int:
    """Words moved by the output-stationary schedule (module docstring)."""
    reads_a, reads_b = matmul_reads(m, n, k, tm, tn, tk, order)
    return m * k * reads_a + k * n * reads_b + m * n


def matmul_working_set(tm: int, tn: int, tk: int, *, double_buffer: bool = False) -> int:
    """Words resident at once: the streamed A and B blocks (twice if double buffered) and C."""
    return (2 if double_buffer else 1) * (tm * tk + tk * tn) + tm * tn


def tile_candidates(size: int, align: int) -> tuple[int, ...]:
    """Legal tile extents for a loop of ``size``: multiples of ``align`` below it, and the
    whole loop (a full-extent tile needs no alignment: the hardware pads the last one)."""
    if size <= align:
        return (size,)
    return tuple(range(align, size, align)) + (size,)


def largest_candidate(size: int, align: int, limit: int) -> int | None:
    """The largest legal extent ≤ ``limit`` (None if even the smallest does not fit)."""
    if limit >= size:
        return size
    best = (limit // align) * align
    return best if best >= align else None


def smallest_for_count(size: int, align: int, count: int) -> int:
    """The smallest legal extent that covers ``size`` in ``count`` tiles: same traffic,
    less memory, and balanced tiles instead of a ragged last one."""
    if size <= align:
        return size
    rounded = cdiv(cdiv(size, count), align) * align
    return size if rounded >= size else rounded


def _distinct_counts(size: int, align: int):
    """One balanced extent per distinct tile count, smallest extent first.

    Traffic depends on a row extent only through its tile count, and the smallest extent
    with that count leaves the most room for the other dim, so these are the only row
    extents worth trying: O(√(size/align)) of them instead of size/align.
    """
    count = cdiv(size, min(size, align))
    while count >= 1:
        extent = smallest_for_count(size, align, count)
        actual = cdiv(size, extent)
        if actual == count:
            yield extent
            count -= 1
        else:
            count = actual


def _search(m: int, n: int, k: int, M: int, align: int, f: int):
    """Exact minimum of the model over (order, tk ∈ {small, k}, tm, largest tn)."""
    best_key, best = None, None
    for order in ("mn", "nm"):
        rows, cols = (m, n) if order == "mn" else (n, m)
        for tk in sorted({min(k, align), k}):
            for tr in _distinct_counts(rows, align):
                room = M - f * tk * tr
                if room <= 0:
                    break
                tc = largest_candidate(cols, align, room // (tr + f * tk))
                if tc is None:
                    break  # the column limit only falls as tr grows
                tc = smallest_for_count(cols, align, cdiv(cols, tc))
                tm, tn = (tr, tc) if order == "mn" else (tc, tr)
                key = (matmul_traffic(m, n, k, tm, tn, tk, order),
                       matmul_working_set(tm, tn, tk, double_buffer=f == 2),
                       abs(tm - tn), order != "mn", -tm)
                if best_key is None or key < best_key:
                    best_key, best = key, (tm, tn, tk, order)
    if best is None:
        return None
    tm, tn, tk, order = best
    if tk < k:  # spend what is left on longer k steps: same traffic, fewer steps
        tk = max(tk, largest_candidate(k, align, (M - tm * tn) // (f * (tm + tn))) or tk)
    return tm, tn, tk, order


def choose_matmul_tiles(m: int, n: int, k: int, M: int, *, align: int = 16,
                        double_buffer: bool = False, batch: int = 1) -> MatmulTiling:
    """The traffic-minimising output-stationary tiles for ``batch`` matmuls of m×k·k×n.

    Tiles are multiples of ``align`` (or the whole dim) when such a tile fits in ``M``
    words; otherwise the search drops alignment (``aligned=False``). Ties in traffic go to
    the smaller working set, then the squarer tile, then order "mn". Deterministic, and a
    few thousand integer steps at most.
    """
    if min(m, n, k, batch, align) < 1:
        raise ValueError(f"matmul tiling needs positive sizes, got m={m} n={n} k={k} "
                         f"batch={batch} align={align}")
    f = 2 if double_buffer else 1
    found, aligned = _search(m, n, k, M, align, f), True
    if found is None and align > 1:
        found, aligned = _search(m, n, k, M, 1, f), False
    if found is None:
        raise ValueError(f"no matmul tile fits in M={M} words (a 1×1×1 tile needs "
                         f"{matmul_working_set(1, 1, 1, double_buffer=double_buffer)})")
    tm, tn, tk, order = found
    return MatmulTiling(tm, tn, tk, order, batch * matmul_traffic(m, n, k, tm, tn, tk, order),
                        batch * matmul_lower_bound(m, n, k, M),
                        matmul_working_set(tm, tn, tk, double_buffer=double_buffer), aligned)


# A GPU keeps the output tile's accumulator in registers: 128 x 256 fp32 values is what one
# thread block of 8 warps holds without spilling (255 registers a thread on Hopper/Ampere).
GPU_MAX_ACCUMULATOR = 128 * 256
GPU_PIPELINE_STAGES = 3  # operand tiles in flight (Triton's num_stages for Hopper matmuls)


def choose_gpu_matmul_tiles(m: int, n: int, k: int, capacity_bytes: int, elem_bytes: int, *,
                            units: int = 1, peak_flops: float = 0.0,
                            fast_bandwidth: float = 0.0) -> MatmulTiling:
    """Tiles a GPU matmul kernel can use: power-of-two blocks (tensor-core and `tl.arange`
    shapes), an accumulator that fits the register file, `GPU_PIPELINE_STAGES` operand
    tiles in one SM's shared memory.

    Among those, the least time in waves: output tiles run in waves of `units` (one per
    SM), a wave costing one tile's 2·tm·tn·k FLOPs at one SM's share of `peak_flops` or
    its (tm + tn)·k operand elements at one SM's share of `fast_bandwidth` (shared memory),
    whichever is longer — small tiles starve the tensor cores — and a tile count that
    leaves the last wave mostly empty costs a whole wave. (Home-tier traffic is set by all SMs' tiles sharing operands through L2 — the
    chip-level tiling — so it does not separate these kernel shapes.) Ties go to less
    traffic at this level, then the larger tile, then BLOCK_K nearest 64 (deep enough to
    pipeline). Without a peak, least traffic decides.
    """
    def powers(limit: int, least: int) -> list[int]:
        """Power-of-two blocks from `least` (16 at the smallest, a tensor-core tile) up to
        the dim rounded up to a power of two, at most 256."""
        top = max(16, min(256, 1 << max(0, (limit - 1).bit_length())))
        lo = min(max(16, least), top)
        return [p for p in (16, 32, 64, 128, 256) if lo <= p <= top]
    best: tuple | None = None
    # tensor-core blocks: two 64-row warpgroups (Hopper wgmma) a block, when the dims allow
    least = 128 if elem_bytes <= 2 else 16
    for tm in powers(m, least):
        for tn in powers(n, least):
            if tm * tn > GPU_MAX_ACCUMULATOR:
                continue
            for tk in [p for p in powers(k, 16) if p <= 128]:
                if GPU_PIPELINE_STAGES * elem_bytes * (tm * tk + tk * tn) > capacity_bytes:
                    continue
                words = matmul_traffic(m, n, k, min(tm, m), min(tn, n), min(tk, k), "mn")
                seconds = 0.0
                if peak_flops:
                    per_unit = max(units, 1)
                    waves = cdiv(cdiv(m, tm) * cdiv(n, tn), per_unit)
                    tile = 2 * tm * tn * k / (peak_flops / per_unit)
                    if fast_bandwidth:  # operand tiles stream from shared memory each k-step
                        tile = max(tile, (tm + tn) * k * elem_bytes / (fast_bandwidth / per_unit))
                    seconds = waves * tile
                key = (round(seconds, 9), words, -tm * tn, abs(tk - 64), tm > tn, tm, tn, tk)
                if best is None or key < best[0]:
                    best = (key, tm, tn, tk, words)
    if best is None:
        raise ValueError(f"no GPU matmul tile of {m}x{n}x{k} fits {capacity_bytes} bytes")
    _, tm, tn, tk, words = best
    ws = GPU_PIPELINE_STAGES * (tm * tk + tk * tn) + tm * tn
    from codesign.tiling.bounds import matmul_lower_bound
    bound = matmul_lower_bound(m, n, k, max(capacity_bytes // elem_bytes, 1))
    return MatmulTiling(tm, tn, tk, "mn", words, bound, ws, True)
