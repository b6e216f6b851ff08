"""C++ pooling one output row at a time (`kernels._window_rows`), against eager.

Pools run with the row loop innermost and each window offset's valid part of the row found
once (an interval: the window maps are monotone in the row coordinate), so the loop is
guard-free and vectorises; the combines per output point are the same, in the same order, as
the point-by-point form, so results are bit-identical to it and match eager. Checked on
fresh random inputs over padding, stride, dilation, ceil mode, a fused batch norm + ReLU
before the pool (the ResNet stem), NaNs (max propagates them, as eager), and a row wider
than the stack accumulators hold (the point-by-point form).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import codesign
from codesign.codegen.cpp import kernels as cpp_kernels


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cpp-pools-cache"))


class Pool(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class StemPool(nn.Module):
    """ResNet's stem after its conv: batch norm, ReLU, 3x3 / 2 max pool with padding 1."""

    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return F.max_pool2d(torch.relu(self.bn(x)), 3, 2, 1)


ROW_INTERVAL = "= [&](int64_t"  # the lambda that tests a row point against the window's guards


def _compiled(model: nn.Module, x: torch.Tensor):
    model = model.eval()
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp")
    return cm, cm.program("cpp").source


POOLS = {
    "max 3x3/2 pad 1": lambda x: F.max_pool2d(x, 3, 2, 1),
    "max 2x2": lambda x: F.max_pool2d(x, 2),
    "max 3x3 dilation 2 pad 1": lambda x: F.max_pool2d(x, 3, 1, 1, dilation=2),
    "max 3x3/2 ceil": lambda x: F.max_pool2d(x, 3, 2, 0, ceil_mode=True),
    "avg 3x3/2 pad 1": lambda x: F.avg_pool2d(x, 3, 2, 1),
    "avg 3x3/2 pad 1 excluding pad": lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "avg 2x2 ceil": lambda x: F.avg_pool2d(x, 2, 2, 0, ceil_mode=True),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pools_run_row_wise_and_match_eager(name):
    x = torch.randn(2, 5, 13, 11)
    cm, source = _compiled(Pool(POOLS[name]), x)
    assert ROW_INTERVAL in source or "pad" not in name  # padded windows: the valid interval found per offset
    fresh = torch.randn(2, 5, 13, 11)
    torch.testing.assert_close(cm(fresh), POOLS[name](fresh), rtol=1e-6, atol=1e-6)


def test_stem_pool_with_fused_batch_norm_matches_eager():
    model = StemPool(6).eval()
    x = torch.randn(2, 6, 24, 20)
    cm, source = _compiled(model, x)
    assert "float acc" in source and "[10];" in source  # one accumulator row of the 10 output columns
    fresh = torch.randn(2, 6, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(cm(fresh), model(fresh), rtol=1e-6, atol=1e-6)


def test_max_pool_propagates_nan_as_eager():
    x = torch.randn(1, 2, 8, 8)
    cm, _ = _compiled(Pool(lambda t: F.max_pool2d(t, 2)), x)
    fresh = torch.randn(1, 2, 8, 8)
    fresh[0, 0, 0, 0] = float("nan")  # first in its window: the accumulator holds NaN, larger values follow
    fresh[0, 1, 3, 2] = float("nan")  # last in its window
    fresh[0, 1, 2, 3] = 100.0
    out = cm(fresh)
    ref = F.max_pool2d(fresh, 2)
    assert out[0, 0, 0, 0].isnan() and out[0, 1, 1, 1].isnan()
    torch.testing.assert_close(out, ref, equal_nan=True)


def test_maximum_and_minimum_propagate_nan_either_side():
    def fn(t):
        return torch.maximum(t[0], t[1]), torch.minimum(t[0], t[1]), t.amax(0), t.amin(0)
    x = torch.randn(2, 64)
    cm, _ = _compiled(Pool(fn), x)
    fresh = torch.randn(2, 64)
    fresh[0, :4] = float("nan")
    fresh[1, 2:6] = float("nan")
    for got, ref in zip(cm(fresh), fn(fresh)):
        torch.testing.assert_close(got, ref, equal_nan=True)


def test_a_row_wider_than_the_stack_accumulators_is_pooled_point_by_point(monkeypatch):
    monkeypatch.setattr(cpp_kernels, "ROW_ACCUMULATORS_MAX", 4)
    x = torch.randn(1, 3, 9, 12)
    cm, source = _compiled(Pool(lambda t: F.max_pool2d(t, 3, 2, 1)), x)
    assert ROW_INTERVAL not in source  # the point-by-point form: guards per window element
    fresh = torch.randn(1, 3, 9, 12)
    torch.testing.assert_close(cm(fresh), F.max_pool2d(fresh, 3, 2, 1))
