"""I/O lower bounds, in words (elements), with constant 1 and nothing fitted.

A tiling is only as good as the bound it is measured against, so the bounds live apart
from the tilers and are taken from the literature as they are stated, with the leading
constant set to 1 (the issue's convention; see ../../docs/io_lower_bounds.md):

* compulsory traffic: every distinct input element is read once and every output element
  written once, whatever the schedule;
* matmul (Hong & Kung 1981, in the form of Smith et al.): ``2mnk/sqrt(M)``;
* attention (Saha & Ye, arXiv 2402.07443, Thm 3.1): ``min(N²d/sqrt(M), N²d²/M)``.

Every bound here is a ``max`` of the compulsory term and the capacity-driven term, so it
holds in both regimes (memory large enough to hold everything, or not). Results are
rounded *up* to an integer: traffic is an integer, so the ceiling of a lower bound is
still a lower bound.
"""

from __future__ import annotations

from math import ceil, sqrt
from typing import Iterable


def _check_memory(M: int) -> None:
    if M < 1:
        raise ValueError(f"fast memory must hold at least one word, got M={M}")


def compulsory_bound(input_words: Iterable[int], output_words: Iterable[int]) -> int:
    """Distinct input elements read once plus output elements written once.

    The caller passes each *distinct* value once (a kernel's inputs, not its operands: in
    ``x * x`` the value ``x`` counts once), which is what makes this a lower bound.
    """
    return sum(int(w) for w in input_words) + sum(int(w) for w in output_words)


def matmul_lower_bound(m: int, n: int, k: int, M: int) -> int:
    """``max(mk + kn + mn, 2mnk / sqrt(M))`` words for C[m,n] = A[m,k]·B[k,n].

    The first term is compulsory; the second is Hong–Kung's red–blue pebbling bound with
    the constant of the tight form (Smith, Lowery, Langou, van de Geijn 2019: ``2mnk/√M``),
    which output-stationary square tiles approach when ``M`` is large.
    """
    _check_memory(M)
    return ceil(max(m * k + k * n + m * n, 2 * m * n * k / sqrt(M)))


def attention_lower_bound(N: int, d: int, M: int, *, batch_heads: int = 1,
                          n_k: int | None = None, e: int | None = None,
                          causal: bool = False) -> int:
    """``heads · max(compulsory, min(N²d/√M, N²d²/M))`` words for softmax(QKᵀ)V.

    Per head, with queries ``N`` (= N_q), keys ``n_k`` (default N), head dim ``d`` and
    value dim ``e`` (default d): the compulsory term reads Q, K, V and writes O once,
    ``N·d + n_k·d + n_k·e + N·e`` (= 4Nd when square). The capacity term is Saha & Ye's
    Thm 3.1 with ``N²`` read as ``N·n_k`` (the number of query–key pairs): for ``M ≥ d²``
    it is ``N²d²/M`` (FlashAttention is optimal there), for ``M < d²`` it is ``N²d/√M``
    (the two-phase square tiling attains it); ``min`` picks the right one.

    ``causal=True`` halves the pair-count terms: only ``N·n_k/2`` pairs are computed, and
    both terms of the bound count pairs. This is the convention FlashAttention's and the
    issue's analyses use for causal masks; the compulsory term is unchanged.
    """
    _check_memory(M)
    n_k = N if n_k is None else n_k
    e = d if e is None else e
    compulsory = N * d + n_k * d + n_k * e + N * e
    pairs = N * n_k / (2 if causal else 1)
    capacity = min(pairs * d / sqrt(M), pairs * d * d / M)
    return ceil(batch_heads * max(compulsory, capacity))
