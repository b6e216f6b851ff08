"""Compiled code computes what eager computes, or refuses with one clear error.

In-place updates of buffers and inputs are written back; training-mode modules that differ
from inference are refused (or compiled with inference semantics when asked); inputs of
another dtype or shape are refused, never cast; integer bitwise ops are refused; MoE blocks
with a shared expert keep it. Numerics are checked against eager on fresh random inputs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import codesign
from codesign.frontend import CaptureError, InputMismatchError, UnsupportedOpsError, capture
from helpers import rel_err

FAST = "canonicalize,dce,fuse"  # tests of calling semantics need no tiling or placement


class Counter(nn.Module):
    """A registered buffer updated in place on every call, read by the output."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 8)
        self.register_buffer("counter", torch.zeros(()))
        self.register_buffer("total", torch.zeros(8))

    def forward(self, x):
        self.counter += 1
        y = self.lin(x)
        self.total.add_(y.sum(0))
        return y * self.counter


class BumpInput(nn.Module):
    """Updates its input in place; also returns the value from before the update."""

    def forward(self, x):
        before = x.clone()
        x.add_(1)
        return x * 2, before


@pytest.mark.parametrize("backend", ["interpreter", "cpp"])
def test_buffer_updates_are_written_back_as_eager_does(backend):
    torch.manual_seed(0)
    model = Counter()
    eager = copy.deepcopy(model)
    cm = codesign.compile(model, torch.randn(4, 16), target="cpu-host", backend=backend)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 16, generator=gen)
        out = cm(x)
        assert isinstance(out, torch.Tensor), "only the user output is returned"
        ref = eager(x)
        assert rel_err(out, ref) <= 1e-6
    assert model.counter.item() == eager.counter.item() == 3
    assert rel_err(model.total, eager.total) <= 1e-6


@pytest.mark.parametrize("backend", ["interpreter", "cpp"])
def test_input_updates_are_written_back_as_eager_does(backend):
    cm = codesign.compile(BumpInput(), torch.randn(4, 8), target="cpu-host", backend=backend, pipeline=FAST)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    x_eager = x.clone()
    out, before = cm(x)
    ref, ref_before = BumpInput()(x_eager)
    assert torch.equal(x, x_eager), "the input is updated in place"
    assert torch.allclose(out, ref) and torch.equal(before, ref_before)


def test_captured_model_run_writes_back_too():
    model = Counter()
    captured = capture(model, torch.randn(4, 16))
    outs = captured.run(torch.randn(4, 16))
    assert len(outs) == 1 and outs[0].shape == (4, 8)
    assert model.counter.item() == 1


def test_make_fx_refuses_in_place_updates_it_cannot_write_back():
    with pytest.raises(UnsupportedOpsError, match="in-place update"):
        capture(Counter(), torch.randn(4, 16), method="make_fx")


# -- training mode ------------------------------------------------------------------------
def _bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1))
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def test_training_mode_batchnorm_and_dropout_are_refused():
    net = _bn_net()
    with pytest.raises(CaptureError, match=r"training mode(.|\n)*1 \(BatchNorm2d\)(.|\n)*3 \(Dropout\)"
                                           r"(.|\n)*model\.eval\(\)"):
        codesign.compile(net, torch.randn(2, 3, 8, 8), target="cpu-host")
    assert all(m.training for m in net.modules()), "the model's mode is left alone"


def test_train_mode_eval_compiles_inference_semantics_and_restores_each_mode():
    net = _bn_net()
    net[2].eval()  # a mixed-mode model: every module's own flag is restored
    modes = [m.training for m in net.modules()]
    cm = codesign.compile(net, torch.randn(2, 3, 8, 8), target="cpu-host", train_mode="eval", pipeline=FAST)
    assert [m.training for m in net.modules()] == modes
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = copy.deepcopy(net).eval()(x)
    assert rel_err(cm(x), ref) <= 1e-5


def test_training_mode_without_training_behaviour_compiles_in_its_own_mode():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.0), nn.Linear(16, 4))  # train mode
    cm = codesign.compile(mlp, torch.randn(3, 8), target="cpu-host", pipeline=FAST)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(4))
    assert rel_err(cm(x), mlp(x)) <= 1e-5
    assert mlp.training


def test_functional_dropout_in_training_is_refused():
    class Drop(nn.Module):
        def forward(self, x):
            return nn.functional.dropout(x, 0.2, training=True)
    with pytest.raises(UnsupportedOpsError, match=r"dropout\(p=0.2\) in training mode(.|\n)*model\.eval\(\)"):
        capture(Drop(), torch.randn(4, 4))


# -- runtime inputs are checked, never cast -----------------------------------------------
@pytest.fixture(scope="module")
def mlp_cm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU()).eval()
    return codesign.compile(model, torch.randn(8, 64), target="cpu-host", pipeline=FAST, shapes="static")


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.bool, torch.float16])
def test_inputs_of_another_dtype_are_refused(mlp_cm, dtype):
    x = torch.randn(8, 64).to(dtype)
    with pytest.raises(InputMismatchError, match=rf"input 0 'input' is {str(dtype)[6:]}, the model was "
                                                 r"compiled for float32 \[8, 64\]; compile with an example"):
        mlp_cm(x)


def test_inputs_of_another_shape_or_count_are_refused(mlp_cm):
    with pytest.raises(InputMismatchError, match=r"has shape \[4, 64\].*float32 \[8, 64\]"):
        mlp_cm(torch.randn(4, 64))
    with pytest.raises(InputMismatchError, match=r"has shape \[8, 64, 1\]"):
        mlp_cm(torch.randn(8, 64, 1))
    with pytest.raises(InputMismatchError, match="takes 1 input"):
        mlp_cm(torch.randn(8, 64), torch.randn(8, 64))
    with pytest.raises(InputMismatchError, match="is a list"):
        mlp_cm([1.0])


def test_inputs_on_different_devices_are_refused():
    class Add(nn.Module):
        def forward(self, a, b):
            return a + b
    cm = codesign.compile(Add(), (torch.randn(4), torch.randn(4)), target="cpu-host", pipeline=FAST)
    with pytest.raises(InputMismatchError, match="different devices"):
        cm(torch.randn(4), torch.randn(4, device="meta"))


# -- bitwise ops ----------------------------------------------------------------------------
def test_integer_bitwise_ops_are_refused_not_made_logical():
    class Bits(nn.Module):
        def forward(self, a):
            return (a & 6) + (a | 1)
    with pytest.raises(UnsupportedOpsError, match=r"bitwise_and(.|\n)*integer bitwise ops are not supported yet"):
        capture(Bits(), torch.arange(8))


def test_bool_bitwise_ops_are_logical_and_match_eager():
    class Logic(nn.Module):
        def forward(self, a, b):
            return (a & b) | ~a
    gen = torch.Generator().manual_seed(5)
    a, b = (torch.rand(16, generator=gen) > 0.5 for _ in range(2))
    cm = codesign.compile(Logic(), (a, b), target="cpu-host", pipeline=FAST)
    a, b = (torch.rand(16, generator=gen) > 0.5 for _ in range(2))
    assert torch.equal(cm(a, b), Logic()(a, b))


# -- MoE blocks with a shared expert --------------------------------------------------------
def _qwen2_moe_block():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
    config = transformers.Qwen2MoeConfig(hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                                         shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         vocab_size=64, use_cache=False)
    torch.manual_seed(0)
    block = Qwen2MoeSparseMoeBlock(config)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.2)  # the shared expert's share is not small next to the routed experts'
    return block.eval()


def test_qwen2_moe_shared_expert_is_kept():
    block = _qwen2_moe_block()
    cm = codesign.compile(block, torch.randn(2, 8, 32), target="cpu-host")
    gen = torch.Generator().manual_seed(6)
    for _ in range(2):
        x = torch.randn(2, 8, 32, generator=gen)
        with torch.no_grad():
            ref = block(x)
        assert rel_err(cm(x), ref) <= 1e-5


def test_moe_block_with_unknown_parts_is_refused():
    block = _qwen2_moe_block()
    block.extra_norm = nn.LayerNorm(32)
    with pytest.raises(CaptureError, match=r"MoE block <top> \(Qwen2MoeSparseMoeBlock\) has submodule\(s\) extra_norm"):
        capture(block, torch.randn(2, 8, 32))
