"""max_pool2d(..., return_indices=True): the indices are eager's, on every backend path.

Eager's rule has corners a plain argmax gets wrong: padding is never chosen (also when
every element of a window is -inf), ties go to the first element, and a window with NaNs
points at its last NaN. Inputs here are built to hit each corner.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import codesign


class PoolWithIndices(torch.nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, x):
        values, indices = F.max_pool2d(x, return_indices=True, **self.options)
        return values, indices


CASES = [
    (dict(kernel_size=3, stride=2, padding=1), (2, 3, 9, 11)),
    (dict(kernel_size=3, stride=2, ceil_mode=True), (1, 2, 8, 8)),
    (dict(kernel_size=(2, 3), stride=1, dilation=2, padding=1), (2, 2, 7, 9)),
    (dict(kernel_size=2), (3, 6, 6)),  # unbatched
    (dict(kernel_size=3, stride=1, padding=1, ceil_mode=True), (1, 1, 5, 4)),
]


def corner_input(shape, generator) -> torch.Tensor:
    x = torch.randn(shape, generator=generator)
    x[..., 0, 0] = float("nan")
    x[..., 3, 1] = float("nan")  # two NaNs in some windows: eager keeps the last
    x[..., 2, :] = float("-inf")  # windows whose in-bounds elements are all -inf next to padding
    x[..., 4, 2] = x[..., 4, 3]  # a tie
    return x


@pytest.mark.parametrize("options,shape", CASES, ids=[str(i) for i in range(len(CASES))])
def test_indices_match_eager_in_cpp(options, shape):
    generator = torch.Generator().manual_seed(hash(str(options)) % 1000)
    x = corner_input(shape, generator)
    model = PoolWithIndices(**options)
    compiled = codesign.compile(model, (x,), target="cpu-host")
    fresh = corner_input(shape, generator)
    (values, indices), (ref_values, ref_indices) = compiled(fresh), model(fresh)
    assert indices.dtype == torch.int64
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(values, ref_values, equal_nan=True, rtol=0, atol=0)


def test_all_minus_inf_windows_keep_the_first_in_bounds_element():
    x = torch.full((1, 1, 4, 4), float("-inf"))
    model = PoolWithIndices(kernel_size=3, stride=2, padding=1)
    compiled = codesign.compile(model, (x,), target="cpu-host")
    assert torch.equal(compiled(x)[1], model(x)[1])


def test_integer_input():
    x = torch.randint(-5, 5, (2, 2, 6, 7))
    model = PoolWithIndices(kernel_size=2, stride=1, padding=1)
    compiled = codesign.compile(model, (x,), target="cpu-host")
    y = torch.randint(-5, 5, (2, 2, 6, 7))
    assert torch.equal(compiled(y)[1], model(y)[1])
    assert torch.equal(compiled(y)[0], model(y)[0])


def test_unused_indices_add_nothing():
    """Models that pool without asking for indices (ResNet's stem) keep the one pool node."""
    from codesign.frontend.capture import capture

    class Pool(torch.nn.Module):
        def forward(self, x):
            return F.max_pool2d(x, 3, 2, 1)
    graph = capture(Pool(), (torch.randn(1, 2, 8, 8),)).graph
    assert [n.op for n in graph.nodes] == ["max_pool"]


def test_indices_under_the_triton_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = corner_input((1, 2, 7, 7), torch.Generator().manual_seed(3))
    model = PoolWithIndices(kernel_size=3, stride=2, padding=1)
    compiled = codesign.compile(model, (x,), target="h200")
    assert torch.equal(compiled(x)[1], model(x)[1])
    assert os.environ["TRITON_INTERPRET"] == "1"
