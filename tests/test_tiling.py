"""Tiling: tiles fit, traffic ≥ bound, the issue's ratio limits, alignment, exactness of
the matmul search (brute force), agreement of the generic tiler with the specialists."""

from __future__ import annotations

import itertools
import random

import pytest

from codesign.ir.ops.registry import get_op
from codesign.ir.types import TensorType
from codesign.targets import load_target
from codesign.tiling import (MATMUL_REGIME, attention_lower_bound, choose_attention_tiles,
                             choose_matmul_tiles, choose_tiles, lower_bound,
                             matmul_lower_bound, target_tiers, tile_levels, traffic,
                             working_set)
from codesign.tiling.matmul import matmul_traffic, matmul_working_set


def bf16(*shape):
    return TensorType(shape, "bf16")


def structure(op, operands, result, **attrs):
    d = get_op(op)
    return d.structure(operands, result, d.attr_values(attrs))


# -- bounds ----------------------------------------------------------------------------------
def test_bounds_by_hand():
    assert matmul_lower_bound(4, 4, 4, 10 ** 6) == 48  # compulsory wins
    assert matmul_lower_bound(64, 64, 64, 16) == 2 * 64 ** 3 // 4
    n, d = 4096, 64
    assert attention_lower_bound(n, d, d * d) == n * n  # both terms equal at M = d²
    assert attention_lower_bound(n, d, 64) == n * n * d // 8
    assert attention_lower_bound(n, d, n * d * 64) == 4 * n * d
    assert attention_lower_bound(n, d, 64, causal=True) == n * n * d // 16
    assert attention_lower_bound(n, d, 64, batch_heads=3) == 3 * n * n * d // 8


# -- matmul ----------------------------------------------------------------------------------
DIMS = [1, 7, 16, 48, 100, 128, 1000, 4096]


def test_matmul_fits_and_bounded():
    for (m, n, k), M in itertools.product(itertools.product(DIMS, repeat=3),
                                          [3, 64, 1024, 8192, 65536, 2 ** 22]):
        t = choose_matmul_tiles(m, n, k, M)
        assert t.working_set <= M
        assert t.traffic >= t.lower_bound
        assert (t.tm, t.tn, t.tk) <= (m, n, k) or (t.tm <= m and t.tn <= n and t.tk <= k)


def test_matmul_ratio_in_regime():
    rng = random.Random(0)
    cases = [(rng.randint(1, 5000), rng.randint(1, 5000), rng.randint(1, 5000),
              rng.randint(MATMUL_REGIME * 256, 2 ** 22)) for _ in range(1500)]
    cases += [(s, s, s, M) for s in (256, 1024, 4096) for M in (8192, 116736, 2 ** 20)]
    for m, n, k, M in cases:
        assert choose_matmul_tiles(m, n, k, M).ratio <= 2.0, (m, n, k, M)


def test_matmul_alignment():
    for (m, n, k), M in itertools.product(itertools.product([48, 100, 1000, 4096], repeat=3),
                                          [8192, 65536, 2 ** 20]):
        t = choose_matmul_tiles(m, n, k, M)
        assert t.aligned
        for tile, dim in ((t.tm, m), (t.tn, n), (t.tk, k)):
            assert tile % 16 == 0 or tile == dim
    small = choose_matmul_tiles(8, 8, 8, 8192)  # dims below align: whole dims
    assert (small.tm, small.tn, small.tk) == (8, 8, 8)
    tiny = choose_matmul_tiles(256, 256, 256, 300)  # no 16×16×16 tile fits: unaligned
    assert not tiny.aligned and tiny.working_set <= 300


@pytest.mark.parametrize("align", [1, 4])
def test_matmul_search_is_exact(align):
    rng = random.Random(align)
    for _ in range(30):
        m, n, k = (rng.randint(1, 20) for _ in range(3))
        M = rng.randint(3, 400)
        best = None
        for tm, tn, tk in itertools.product(range(1, m + 1), range(1, n + 1), range(1, k + 1)):
            if any(t % align and t != s for t, s in ((tm, m), (tn, n), (tk, k))):
                continue
            if matmul_working_set(tm, tn, tk) > M:
                continue
            cost = min(matmul_traffic(m, n, k, tm, tn, tk, o) for o in ("mn", "nm"))
            best = cost if best is None else min(best, cost)
        if best is None:
            continue  # the tiler falls back to unaligned tiles here
        assert choose_matmul_tiles(m, n, k, M, align=align).traffic == best, (m, n, k, M)


def test_matmul_double_buffer_fits():
    t = choose_matmul_tiles(4096, 4096, 4096, 65536, double_buffer=True)
    assert matmul_working_set(t.tm, t.tn, t.tk, double_buffer=True) == t.working_set <= 65536


# -- attention -------------------------------------------------------------------------------
def sweep():
    for causal, d in itertools.product((False, True), (64, 128)):
        M = d
        while M <= 4096 * d:
            yield causal, d, M
            M *= 2


def test_attention_issue_sweep():
    for causal, d, M in sweep():
        t = choose_attention_tiles(4096, d, M, causal=causal)
        assert t.working_set <= M
        assert t.traffic >= t.lower_bound
        assert t.ratio <= 10, (causal, d, M, t)
        if M >= 4 * d * d:
            assert t.scheme == "flash" and t.br > d  # row blocks sized to memory, not capped at d
        if M <= d * d // 4:
            assert t.scheme == "two-phase" and t.br == int((M // 4) ** 0.5)


def test_attention_shapes():
    for nq, nk, d, e, M in [(1, 4096, 128, 128, 65536), (100, 300, 64, 32, 9000),
                            (4096, 4096, 64, 64, 17), (33, 33, 8, 8, 5)]:
        for causal in (False, True):
            t = choose_attention_tiles(nq, d, M, n_k=nk, e=e, causal=causal)
            assert t.working_set <= M and t.traffic >= t.lower_bound
    whole = choose_attention_tiles(256, 64, 10 ** 7)
    assert whole.traffic == whole.lower_bound == 4 * 256 * 64


# -- generic ---------------------------------------------------------------------------------
def test_generic_matches_matmul_specialist():
    for m, n, k, cap in [(1024, 2048, 512, 228 * 1024), (100, 300, 70, 16384), (4096, 64, 4096, 2 ** 20)]:
        a, b, r = bf16(m, k), bf16(k, n), bf16(m, n)
        s = structure("matmul", [a, b], r)
        c = choose_tiles(s, [a, b], r, cap)
        mt = choose_matmul_tiles(m, n, k, cap // 2)
        assert c.tiles == (mt.tm, mt.tn, mt.tk)
        assert c.traffic_bytes == 2 * mt.traffic and c.working_set_bytes == 2 * mt.working_set
        assert c.lower_bound_bytes == 2 * mt.lower_bound
        assert traffic(s, c.tiles, [a, b], r, order=c.order) == c.traffic_bytes


def test_generic_matches_attention_specialist():
    q, r = bf16(2, 8, 4096, 64), bf16(2, 8, 4096, 64)
    s = structure("attention", [q, q, q], r, scale=1.0, causal=True)
    for cap in (1024, 16384, 228 * 1024):
        c = choose_tiles(s, [q, q, q], r, cap, causal=True)
        at = choose_attention_tiles(4096, 64, cap // 2, causal=True, batch_heads=16)
        assert c.traffic_bytes == 2 * at.traffic and c.scheme == at.scheme
        assert c.working_set_bytes <= cap and c.ratio <= 10


def test_generic_other_ops_fit_and_bound():
    cases = []
    x = bf16(8, 256, 1024)
    cases.append(("gelu", [x], x, {}))
    cases.append(("add", [x, bf16(1024)], x, {}))
    lin = ("linear", [bf16(4, 100, 768), bf16(3072, 768), bf16(3072)], bf16(4, 100, 3072), {})
    cases.append(lin)
    cases.append(("conv", [bf16(2, 64, 56, 56), bf16(128, 64, 3, 3)], bf16(2, 128, 54, 54),
                  {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}))
    cases.append(("conv", [bf16(1, 32, 32, 32), bf16(32, 1, 3, 3)], bf16(1, 32, 32, 32),
                  {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 32}))
    for op, ops, res, attrs in cases:
        s = structure(op, ops, res, **attrs)
        for cap in (4096, 228 * 1024, 2 ** 26):
            c = choose_tiles(s, ops, res, cap)
            assert c.working_set_bytes <= cap, (op, cap)
            assert c.traffic_bytes >= c.lower_bound_bytes, (op, cap)
            assert working_set(s, c.tiles, [t.dtype.itemsize for t in ops] + [2],
                               shapes=[t.shape for t in ops] + [res.shape]) == c.working_set_bytes
    # pointwise traffic is compulsory at any tiles
    s = structure("gelu", [x], x)
    assert choose_tiles(s, [x], x, 4096).ratio == 1.0


def test_tile_levels_and_determinism():
    h100 = load_target("h100")
    tiers = target_tiers(h100)
    assert tiers[0] == ("smem", 228 * 1024)
    a, b, r = bf16(2048, 4096), bf16(4096, 4096), bf16(2048, 4096)
    s = structure("matmul", [a, b], r)
    levels = tile_levels(s, [a, b], r, tiers)
    assert [c.level for c in levels] == ["smem", "hbm"]
    assert levels[0].working_set_bytes <= tiers[0][1]
    assert levels[1].traffic_bytes == levels[1].lower_bound_bytes  # all fits in HBM
    assert all(f <= g for f, g in zip(levels[0].tiles, levels[1].tiles))
    assert levels == tile_levels(s, [a, b], r, tiers)
    assert lower_bound(s, [a, b], r, tiers[0][1]) == levels[0].lower_bound_bytes
    assert isinstance(levels[0].as_attrs()["tiles"], tuple)


# -- the tile pass reads tier order and tile shape from the target ------------------------------

LINEAR_IR = """graph @fc(%x: bf16[512,1024], %w: bf16[2048,1024] param) -> (bf16[512,2048]) {
  %y = linear(%x, %w) : bf16[512,2048]
  %z = gelu(%y) {approximate = "none"} : bf16[512,2048]
  return %z
}
"""

VMEM_TARGET = """\
name: vchip
kind: mobile
host_backend: cpp
compute:
  peak: {bf16: 100 TFLOP/s}
  units: 4
memory:
  - {name: vmem, capacity: 4 x 1 MiB, bandwidth: 20 TB/s, scope: per_unit}
  - {name: hbm, capacity: 16 GB, bandwidth: 1 TB/s}
"""


def _tiled(target):
    from codesign.ir import parse_graph
    from codesign.passes import PassContext, PassManager
    return PassManager("fuse,tile").run(parse_graph(LINEAR_IR), PassContext(target=target))


def test_a_vmem_tier_listed_first_is_tiled_for_and_ranked_first(tmp_path):
    from codesign.codegen import group_tile
    from codesign.ir.graph import Group
    path = tmp_path / "vchip.yaml"
    path.write_text(VMEM_TARGET)
    target = load_target(path)
    assert target.tier_names == ("vmem", "hbm") and target.tier_rank("vmem") == 0
    assert target.fast_tier.name == "vmem" and target.home_tier.name == "hbm"
    graph = _tiled(target)
    (group,) = graph.groups
    tile = group.plan.tile("vmem")
    assert tile is not None and set(group.plan.tiles) == {"vmem"} and group.plan.ratio("vmem") >= 1.0
    assert group_tile(group, 3, tiers=target.tier_names) == tile == group_tile(group, 3)
    # with tiles for other tiers too, the target's order decides, not the tiers' names (a
    # fixed name list put l1 and hbm ahead of a tier it did not know)
    for other in ("hbm", "l1", "smem"):
        both = Group(group.id, group.plan.with_tile(other, (1, 1, 1)))
        assert group_tile(both, 3, tiers=target.tier_names) == tile, other
    assert group_tile(Group(0, group.plan.with_tile("l1", (1, 1, 1))), 3, tiers=("l1", "vmem")) == (1, 1, 1)


def test_tile_shape_not_kind_decides_gpu_shaped_tiles(tmp_path):
    from codesign.targets.loader import bundled_target_path
    text = bundled_target_path("h100").read_text()
    assert "tile_shape: power_of_two" in text and "kind: gpu" in text
    as_cpu = tmp_path / "gpu-as-cpu.yaml"
    as_cpu.write_text(text.replace("kind: gpu", "kind: cpu"))
    searched = tmp_path / "gpu-searched.yaml"
    searched.write_text(text.replace("tile_shape: power_of_two", "tile_shape: min_traffic"))
    h100 = _tiled(load_target("h100")).groups[0].plan.tile("smem")
    assert all(t & (t - 1) == 0 for t in h100)  # power-of-two blocks
    assert _tiled(load_target(as_cpu)).groups[0].plan.tile("smem") == h100
    assert _tiled(load_target(searched)).groups[0].plan.tile("smem") != h100
