"""Capture: every example model comes in whole and interprets to eager's numbers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from codesign.frontend import CaptureError, UnsupportedOpsError, capture, load_factory
from codesign.frontend.factory import ModelSpecError
from codesign.ir import OPS, verify
from helpers import EXAMPLES, fresh_like, rel_err

pytest.importorskip("transformers")

# factory, ops that must appear (with minimum counts)
CASES = {
    "mlp.py:tiny": {"linear": 3, "gelu": 1, "relu": 1},
    "cnn.py:tiny": {"conv": 3, "batch_norm": 3, "max_pool": 1, "add": 1, "mean": 1, "linear": 1},
    "gpt2.py:tiny": {"attention": 2, "layer_norm": 5, "embedding": 2, "matmul": 8, "tanh": 2},
    "llama.py:tiny": {"attention": 2, "linear": 15, "rsqrt": 5, "silu": 2, "sin": 1, "cos": 1},
    "vae_decoder.py:tiny": {"group_norm": 10, "conv": 10, "upsample_nearest": 1, "attention": 1},
    "mixtral_moe.py:tiny": {"moe": 1},
    "mixtral_moe.py:tiny_model": {"moe": 2, "attention": 2},
}


@pytest.fixture(scope="module")
def captured():
    cache = {}

    def get(spec: str):
        if spec not in cache:
            model, inputs = load_factory(str(EXAMPLES / spec))
            cache[spec] = (model, inputs, capture(model, inputs))
        return cache[spec]
    return get


@pytest.mark.parametrize("spec", sorted(CASES))
def test_example_captures_whole_and_matches_eager(spec, captured):
    model, inputs, cm = captured(spec)
    verify(cm.graph)
    assert all(n.op in OPS for n in cm.graph.walk())
    counts = Counter(n.op for n in cm.graph.nodes)
    for op, least in CASES[spec].items():
        assert counts[op] >= least, f"{spec}: expected >= {least} {op}, got {counts[op]}"
    for seed in (1, 2):
        fresh = fresh_like(inputs, seed)
        with torch.no_grad():
            ref = model(*fresh)
        assert rel_err(cm.run(*fresh)[0], ref) <= 1e-5


@pytest.mark.parametrize("spec", ["gpt2.py:tiny", "llama.py:tiny"])
def test_eager_attention_is_recognised_as_one_causal_op(spec):
    import importlib.util
    path = EXAMPLES / spec.split(":")[0]
    module_spec = importlib.util.spec_from_file_location(f"ex_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    model, inputs = module.tiny(attn_implementation="eager")
    cm = capture(model, inputs)
    counts = Counter(n.op for n in cm.graph.nodes)
    assert counts["attention"] == 2 and counts["softmax"] == 0
    assert all(n.attrs["causal"] and len(n.operands) == 3 for n in cm.graph.nodes if n.op == "attention")
    fresh = fresh_like(inputs, 3)
    with torch.no_grad():
        assert rel_err(cm.run(*fresh)[0], model(*fresh)) <= 1e-5


def test_sdpa_with_a_runtime_mask_keeps_the_mask():
    class Attn(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    q, k, v = (torch.randn(2, 3, 8, 16) for _ in range(3))
    mask = torch.rand(2, 1, 8, 8) > 0.3
    mask[..., 0] = True
    cm = capture(Attn(), (q, k, v, mask))
    (node,) = [n for n in cm.graph.nodes if n.op == "attention"]
    assert len(node.operands) == 4 and not node.attrs["causal"]
    assert rel_err(cm.run(q, k, v, mask)[0], Attn()(q, k, v, mask)) <= 1e-5


def test_moe_is_one_op_with_an_expert_region(captured):
    model, inputs, cm = captured("mixtral_moe.py:tiny")
    (moe,) = [n for n in cm.graph.nodes if n.op == "moe"]
    assert moe.attrs == {"num_experts": 4, "top_k": 2, "normalize": True}
    (region,) = moe.regions
    verify(region)
    assert [n.op for n in region.nodes] == ["linear", "slice", "slice", "silu", "mul", "linear"]
    # region inputs: tokens, one expert's gate_up [2I, H] and down [H, I]
    assert [i.type.shape for i in region.inputs][1:] == [(256, 64), (64, 128)]


def test_meta_llama2_7b_captures_with_the_right_parameter_count():
    """(Its capture time is measured in benchmarks/capture_time.py, not asserted here.)"""
    model, inputs = load_factory(str(EXAMPLES / "llama.py:llama2_7b_meta"))
    cm = capture(model, inputs)
    params = sum(i.type.numel for i in cm.graph.inputs if i.kind.value == "param")
    assert abs(params - 6.74e9) / 6.74e9 < 0.01
    assert cm.is_meta
    assert Counter(n.op for n in cm.graph.nodes)["attention"] == 32


class _Odd(torch.nn.Module):
    def forward(self, x):
        return torch.flip(x, [0]).cumprod(1)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Odd()

    def forward(self, x):
        return self.inner(x) + torch.fliplr(x)


def test_unsupported_ops_are_listed_together_with_module_and_line():
    with pytest.raises(UnsupportedOpsError) as info:
        capture(_Net(), (torch.randn(4, 4),), method="export")
    text = str(info.value)
    assert "aten.flip.default" in text and "aten.cumprod.default" in text
    assert "in inner at " in text and "test_capture.py:" in text
    assert {u.op for u in info.value.unsupported} == {"aten.flip.default", "aten.cumprod.default"}
    assert len(info.value.unsupported) == 3  # two flips, one cumprod


class _Pools(torch.nn.Module):
    """Every ceil_mode x count_include_pad x padding of avg_pool2d and max_pool2d, and the
    adaptive pool, on a batched (N, C, H, W) or an unbatched (C, H, W) input."""

    def forward(self, x):
        F = torch.nn.functional
        outs = [F.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(x, (7, 3))]
        for ceil in (False, True):
            for pad in (0, 1):
                outs.append(F.max_pool2d(x, 3, 2, pad, ceil_mode=ceil))
                outs += [F.avg_pool2d(x, 3, 2, pad, ceil_mode=ceil, count_include_pad=inc) for inc in (False, True)]
        return tuple(outs)


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (3, 7, 6)], ids=["batched", "unbatched"])
def test_pools_match_eager_in_every_mode(shape):
    """ceil_mode and count_include_pad as eager computes them; an unbatched input (found by
    the random programs: refused before) is pooled as a batch of one."""
    import codesign
    x = torch.randn(shape)
    fresh = torch.randn(shape)
    got = codesign.compile(_Pools(), (x,), target="cpu-host", backend="cpp")(fresh)
    for g, want in zip(got, _Pools()(fresh), strict=True):
        assert g.shape == want.shape
        torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-6)


def test_avg_pool_divisor_override_is_refused_naming_it():
    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 2, divisor_override=3)
    with pytest.raises(UnsupportedOpsError, match=r"avg_pool2d with divisor_override=3 is not supported; leave it"):
        capture(Pool(), (torch.randn(1, 2, 4, 4),))


@pytest.mark.parametrize("spec", ["mlp.py:tiny", "cnn.py:tiny", "mixtral_moe.py:tiny"])
def test_make_fx_fallback_captures_the_same_numbers(spec):
    model, inputs = load_factory(str(EXAMPLES / spec))
    cm = capture(model, inputs, method="make_fx")
    assert cm.method == "make_fx"
    assert {i.kind.value for i in cm.graph.state_inputs} <= {"param", "buffer"}
    fresh = fresh_like(inputs, 4)
    with torch.no_grad():
        assert rel_err(cm.run(*fresh)[0], model(*fresh)) <= 1e-5


def test_capture_is_deterministic():
    from codesign.ir import print_graph
    model, inputs = load_factory(str(EXAMPLES / "gpt2.py:tiny"))
    assert print_graph(capture(model, inputs).graph) == print_graph(capture(model, inputs).graph)


def test_data_dependent_shapes_are_refused_clearly():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x[x > 0]

    with pytest.raises(CaptureError) as info:
        capture(DataDependent(), (torch.randn(8),))
    assert "data-dependent shape" in str(info.value) and "aten.index.Tensor" in str(info.value)


@pytest.mark.parametrize("spec,message", [
    ("nope.py:tiny", "does not exist"),
    ("mlp.py:missing", "has no factory 'missing'"),
])
def test_bad_model_spec(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        load_factory(str(EXAMPLES / spec) if spec.startswith("mlp") else spec)


def test_unequal_length_causal_sdpa_keeps_torchs_top_left_mask():
    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    cm = capture(Attn(), (q, k, v))
    assert rel_err(cm.run(q, k, v)[0], Attn()(q, k, v)) <= 1e-6


def test_capture_leaves_the_models_mode_alone():
    model, inputs = load_factory(str(EXAMPLES / "mlp.py:tiny"))
    model.train()
    capture(model, inputs)
    assert model.training


def test_clamp_with_tensor_bounds_and_int_input():
    class Clamp(torch.nn.Module):
        def forward(self, x, lo, i):
            return torch.clamp(x, min=lo), torch.clamp(i, min=0.5, max=2.5)

    x, lo, i = torch.randn(3, 4), torch.zeros(3, 4), torch.arange(12).reshape(3, 4)
    cm = capture(Clamp(), (x, lo, i))
    for got, want in zip(cm.run(x, lo, i), Clamp()(x, lo, i)):
        assert got.dtype == want.dtype and torch.allclose(got, want)


def test_native_batch_norm_outputs_and_no_stats_overload_refuse_clearly():
    """OpInfo's `_native_batch_norm_legit` samples crashed capture with an IndexError: an
    output index past the converter's tuple, and the no-statistics overload's shifted args."""
    import codesign
    from codesign.frontend import CaptureError

    class WithStats(torch.nn.Module):
        def forward(self, x, w, b, rm, rv):
            out = torch.ops.aten._native_batch_norm_legit(x, w, b, rm, rv, False, 0.1, 1e-5)
            return out[0] + 0.0

    class NoStats(torch.nn.Module):
        def forward(self, x):
            return torch.ops.aten._native_batch_norm_legit(x, None, None, True, 0.5, 1e-5)[0]

    x = torch.randn(3, 2, 4)
    args = (x, torch.rand(2) + 0.5, torch.randn(2), torch.randn(2), torch.rand(2) + 0.5)
    try:  # export writes the (unchanged) statistics back to the inputs: those outputs are refused by name
        cm = codesign.compile(WithStats(), args, target="cpu-host")
    except CaptureError as exc:
        assert "_native_batch_norm_legit" in str(exc) and "not supported" in str(exc)
    else:
        torch.testing.assert_close(cm(*args), WithStats()(*args))
    with pytest.raises(CaptureError, match="without running statistics"):
        codesign.compile(NoStats(), (x,), target="cpu-host")
