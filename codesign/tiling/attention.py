"""Tiles for attention, O = softmax(Q Kᵀ) V, under a fast memory of M words.

Two schedules, and the tiler keeps whichever moves fewer words (both are modelled exactly,
partial tiles included; the table in docs/io_lower_bounds.md shows which one wins where):

**flash** (FlashAttention, arXiv 2205.14135 Alg. 1): a Br×d block of Q and a Br×e output
accumulator stay in fast memory while Bc×d blocks of K and Bc×e blocks of V stream past,
with the Br×Bc score block S in between. Working set, in words::

    Br·d (Q) + Br·e (O acc) + f·Bc·(d + e) (K, V; f = 2 if double buffered) + Br·Bc (S) ≤ M

With e = d and f = 1 this is the issue's ``Br·d + 2·Bc·d + Br·Bc + Br·d ≤ M``. Traffic is
Q read and O written once, K and V read once per row block: ``N_k·(d+e)·⌈N_q/Br⌉`` (all
of K, V once if a Bc = N_k block fits: then nothing streams). Unlike the paper, Br is *not*
capped at d: the row block is what divides the K/V re-reads, so it takes all the memory
the S block and the K/V blocks leave, giving traffic ≈ 4N²d²/M against the bound N²d²/M
(ratio → 4 + alignment loss) when M ≥ d². Bc does not change non-causal traffic, so it is
searched over a short ladder and then grown into leftover memory when that costs nothing.

**two-phase** (Saha & Ye, arXiv 2402.07443 Alg. 1), for M < d² where a Br×d block of Q
no longer fits usefully: square B×B blocks, ``B = ⌊√(M/4)⌋`` (``⌊√(M/6)⌋`` double
buffered), over *every* dim including d and e. Phase 1 computes S = QKᵀ one B×B block at a
time (Q and K blocks streamed over d-chunks, running row max / sum kept for the block's
rows) and writes S and the 2·N_q row statistics; phase 2 computes O = softmax(S)·V one B×B
output block at a time, streaming S and V blocks over j. Per head, with nI, nJ, nE the
block counts of N_q, N_k, e::

    N_q·d·nJ + N_k·d·nI + N_q·N_k (S written) + 2·N_q (stats written)       phase 1
    N_q·N_k·nE + 2·N_q·nE + N_k·e·nI + N_q·e                                  phase 2

which is ≈ 4N²d/B = 8N²d/√M against the bound N²d/√M. Two-phase blocks are not aligned:
at M < d² a tensor-core tile is already a sizeable share of the memory, and rounding B
down to 16 would double the traffic.

**causal** (keys visible to query r: ``j ≤ r + N_k − N_q``, as torch's bottom-right
``tril``): blocks entirely above the diagonal are skipped; a block that straddles it is
read whole. The bound halves its pair-count terms (bounds.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt

from codesign.tiling.bounds import attention_lower_bound
from codesign.tiling.matmul import cdiv, largest_candidate, smallest_for_count


@dataclass(frozen=True)
class AttentionTiling:
    """The chosen schedule and blocks, and what they cost in words (all heads).

    ``br``/``bc``/``bd``/``be`` are the block extents of the query, key, head-dim and
    value-dim loops (flash: bd = d and be = e, whole; two-phase: all B, clamped).
    """

    scheme: str  # "flash" | "two-phase"
    br: int
    bc: int
    bd: int
    be: int
    traffic: int
    lower_bound: int
    working_set: int
    aligned: bool

    @property
    def ratio(self) -> float:
        return self.traffic / self.lower_bound


def _visible_rows(nq: int, nk: int, br: int, bc: int, causal: bool):
    """Per query block: (its rows, key rows it reads when keys come in blocks of bc)."""
    off = nk - nq
    for start in range(0, nq, br):
        rows = min(br, nq - start)
        if not causal:
            yield rows, nk
            continue
        last_key = start + rows - 1 + off  # the block's last row sees keys 0..last_key
        blocks = 0 if last_key < 0 else min(cdiv(nk, bc), last_key // bc + 1)
        yield rows, min(nk, blocks * bc)


def flash_traffic(nq: int, nk: int, d: int, e: int, br: int, bc: int, *,
                  causal: bool = False) -> int:
    """Words per head of the flash schedule (module docstring)."""
    if bc >= nk:  # all of K and V fit at once: they stay, read once
        return nq * d + nk * (d + e) + nq * e
    kv = sum(keys for _, keys in _visible_rows(nq, nk, br, bc, causal))
    return nq * d + kv * (d + e) + nq * e


def flash_working_set(d: int, e: int, br: int, bc: int, *, double_buffer: bool = False) -> int:
    """Q and K/V blocks (inputs: twice if double buffered), the O accumulator, the S block."""
    f = 2 if double_buffer else 1
    return f * br * d + br * e + f * bc * (d + e) + br * bc


def two_phase_working_set(d: int, e: int, bi: int, bj: int, bd: int, be: int, *,
                          double_buffer: bool = False) -> int:
    """The larger phase: phase 1 holds Q, K blocks and S; phase 2 S, V blocks and O; plus
    the 2 row statistics per query row of the block."""
    f = 2 if double_buffer else 1
    return max(f * (bi * bd + bj * bd) + bi * bj, f * (bi * bj + bj * be) + bi * be) + 2 * bi


def two_phase_traffic(nq: int, nk: int, d: int, e: int, b: int, *, causal: bool = False,
                      bc: int | None = None, be: int | None = None) -> int:
    """Words per head of Saha–Ye's two-phase tiling (module docstring): query blocks of
    ``b``, key blocks of ``bc`` and value-dim blocks of ``be`` (both default ``b``)."""
    bc = b if bc is None else bc
    n_e = cdiv(e, b if be is None else be)
    total = 0
    for rows, keys in _visible_rows(nq, nk, b, bc, causal):
        key_blocks = cdiv(keys, bc)
        total += rows * d * key_blocks + keys * d + rows * keys + 2 * rows      # phase 1
        total += rows * keys * n_e + 2 * rows * n_e + keys * e + rows * e       # phase 2
    return total


def two_phase_block(M: int, *, double_buffer: bool = False) -> int:
    """B = ⌊√(M/4)⌋: three B×B blocks (two streamed, one stationary) plus row stats fit
    (the fourth B² covers the 2B statistics once B ≥ 2); ⌊√(M/6)⌋ when the two streamed
    blocks are double buffered."""
    return isqrt(M // (6 if double_buffer else 4))


def _ladder(size: int, align: int) -> list[int]:
    """Key-block extents to try: align, 2·align, 4·align, ... and the whole dim."""
    out, x = [], min(size, align)
    while x < size:
        out.append(x)
        x *= 2
    return out + [size]


def _flash_search(nq, nk, d, e, M, align, f, causal):
    best_key, best = None, None
    for bc in _ladder(nk, align):
        room = M - f * bc * (d + e)
        if room <= 0:
            break
        br = largest_candidate(nq, align, room // (f * d + e + bc))
        if br is None:
            break
        br = smallest_for_count(nq, align, cdiv(nq, br))
        traffic = flash_traffic(nq, nk, d, e, br, bc, causal=causal)
        ws = flash_working_set(d, e, br, bc, double_buffer=f == 2)
        key = (traffic, ws, -br, bc)
        if best_key is None or key < best_key:
            best_key, best = key, (br, bc, traffic)
    if best is None:
        return None
    br, bc, traffic = best
    grown = largest_candidate(nk, align, (M - br * (f * d + e)) // (f * (d + e) + br))
    if grown and grown > bc and flash_traffic(nq, nk, d, e, br, grown, causal=causal) <= traffic:
        bc = grown  # fewer, longer key steps at no cost in traffic
    return br, bc


def choose_attention_tiles(N: int, d: int, M: int, *, n_k: int | None = None,
                           e: int | None = None, batch_heads: int = 1, causal: bool = False,
                           align: int = 16, double_buffer: bool = False) -> AttentionTiling:
    """The traffic-minimising attention schedule for ``batch_heads`` heads.

    ``N`` queries, ``n_k`` keys (default N), head dim ``d``, value dim ``e`` (default d),
    ``M`` words of fast memory. Flash blocks are multiples of ``align`` (or whole dims) when
    such blocks fit, else unaligned; the two-phase scheme competes whenever B ≥ 1. Raises
    ValueError when nothing fits (M < 4 words, or no flash block and B = 0).
    """
    n_k = N if n_k is None else n_k
    e = d if e is None else e
    if min(N, n_k, d, e, batch_heads, align) < 1:
        raise ValueError(f"attention tiling needs positive sizes, got N={N} n_k={n_k} d={d} "
                         f"e={e} batch_heads={batch_heads} align={align}")
    f = 2 if double_buffer else 1
    bound = attention_lower_bound(N, d, M, batch_heads=batch_heads, n_k=n_k, e=e, causal=causal)
    options: list[AttentionTiling] = []
    found, aligned = _flash_search(N, n_k, d, e, M, align, f, causal), True
    if found is None and align > 1:
        found, aligned = _flash_search(N, n_k, d, e, M, 1, f, causal), False
    if found is not None:
        br, bc = found
        options.append(AttentionTiling(
            "flash", br, bc, d, e,
            batch_heads * flash_traffic(N, n_k, d, e, br, bc, causal=causal), bound,
            flash_working_set(d, e, br, bc, double_buffer=double_buffer), aligned))
    b = two_phase_block(M, double_buffer=double_buffer)
    if b >= 1:
        bi, bj, bd, be = min(b, N), min(b, n_k), min(b, d), min(b, e)
        ws = two_phase_working_set(d, e, bi, bj, bd, be, double_buffer=double_buffer)
        if ws <= M:  # false only for B = 1, where the row statistics tip it over
            options.append(AttentionTiling(
                "two-phase", bi, bj, bd, be,
                batch_heads * two_phase_traffic(N, n_k, d, e, b, causal=causal), bound, ws,
                b % align == 0))
    if not options:
        raise ValueError(f"no attention tiling fits in M={M} words (d={d}, e={e})")
    return min(options, key=lambda t: (t.traffic, t.scheme))
