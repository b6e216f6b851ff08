"""Inputs of new shapes: compiled again for them (bounded LRU of variants, one warning), or
refused when the user asked for static shapes; another dtype is always an error."""

from __future__ import annotations

import warnings

import pytest
import torch

import codesign
from codesign.compiler import RecompileWarning
from codesign.frontend.signature import InputMismatchError
from helpers import rel_err


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(64, 96)
        self.l2 = torch.nn.Linear(96, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.nn.functional.gelu(self.l1(x))).softmax(-1)


def _check(cm, model, shape) -> None:
    x = torch.randn(*shape)
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= 1e-5


def test_a_new_shape_recompiles_once_with_one_warning():
    model = Mlp().eval()
    cm = codesign.compile(model, (torch.randn(8, 64),), target="cpu-host", backend="cpp", max_shapes=2)
    _check(cm, model, (8, 64))
    with pytest.warns(RecompileWarning, match=r"compiled for input shapes \[8, 64\]; compiling it again for \[16, 64\]"):
        _check(cm, model, (16, 64))
    assert cm.variants == (((16, 64),),)  # per input, its shape
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecompileWarning)  # no second warning, and no recompilation
        variant = cm._variants[((16, 64),)]
        _check(cm, model, (16, 64))
        _check(cm, model, (8, 64))
        _check(cm, model, (3, 5, 64))
        assert cm._variants[((16, 64),)] is variant
    _check(cm, model, (1, 64))  # a third shape: the least recently used (16, 64) goes
    assert cm.variants == (((3, 5, 64),), ((1, 64),))
    model.l1.weight.data.mul_(-2)  # variants read the weights live too
    _check(cm, model, (1, 64))


def test_static_shapes_refuse_a_new_shape():
    model = Mlp().eval()
    cm = codesign.compile(model, (torch.randn(8, 64),), target="cpu-host", backend="interpreter", shapes="static")
    with pytest.raises(InputMismatchError, match=r"input 0 'x' has shape \[16, 64\], the model was compiled for "
                                                 r"float32 \[8, 64\] \(shapes are static\)"):
        cm(torch.randn(16, 64))
    assert cm.variants == ()


def test_another_dtype_is_an_error_not_a_recompile():
    model = Mlp().eval()
    cm = codesign.compile(model, (torch.randn(8, 64),), target="cpu-host", backend="interpreter")
    with pytest.raises(InputMismatchError, match="is float64, the model was compiled for float32"):
        cm(torch.randn(16, 64, dtype=torch.float64))
    assert cm.variants == ()


def test_bad_shape_options_are_refused():
    model = Mlp().eval()
    with pytest.raises(ValueError, match="shapes='dynamic' is not one of recompile, static"):
        codesign.compile(model, (torch.randn(8, 64),), target="cpu-host", shapes="dynamic")
    with pytest.raises(ValueError, match="max_shapes=0 must be at least 1"):
        codesign.compile(model, (torch.randn(8, 64),), target="cpu-host", max_shapes=0)
