"""C++ backend: every op family, grouped kernels, example models, the cache, export + CMake.

Each op-family test compiles one graph holding several ops (a compile costs about a second
on 2 cores) and compares every output with the interpreter on fresh random inputs: floats
to a relative error of 1e-5 in f32 (1e-2 in bf16 / f16), integers and booleans exactly.
Example models are compiled once per session (module-scoped fixtures).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Mapping

import pytest
import torch

from codesign.codegen import CodegenError
from codesign.codegen.cpp import CppModule, export_cpp, generate
from codesign.ir import Graph, TensorType, parse_graph, run_graph

Factory = Callable[[tuple[int, ...]], torch.Tensor]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Build into a per-session cache unless the caller chose one (keeps ~/.cache clean)."""
    if "CODESIGN_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["CODESIGN_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "cpp-cache")
    yield
    os.environ.pop("CODESIGN_CACHE_DIR", None)


def random_value(t: TensorType) -> torch.Tensor:
    """A random tensor of type `t`: normal floats, small signed ints, fair booleans."""
    if t.dtype.is_float:
        return torch.randn(t.shape).to(t.dtype.torch)
    if t.dtype.value == "i1":
        return torch.rand(t.shape) > 0.5
    return torch.randint(-8, 8, t.shape).to(t.dtype.torch)


def positive(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape) + 0.5


def indices(high: int) -> Factory:
    return lambda shape: torch.randint(0, high, shape)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def check_cpp(text: str, seed: int, tol: float = 1e-5,
              special: Mapping[str, Factory] | None = None) -> CppModule:
    """Compile `text` to C++, run it, and compare every output with the interpreter."""
    torch.manual_seed(seed)
    graph = parse_graph(text)
    special = special or {}

    def value(inp) -> torch.Tensor:
        if inp.name in special:
            return special[inp.name](inp.type.shape).to(inp.type.dtype.torch)
        return random_value(inp.type)
    inputs = [value(i) for i in graph.runtime_inputs]
    state = {i.name: value(i) for i in graph.state_inputs}
    module = CppModule(graph, state)
    got = module.run(inputs)
    want = run_graph(graph, inputs, state)
    assert len(got) == len(want)
    for name, g, w in zip(graph.outputs, got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, f"%{name}: {g.dtype}{list(g.shape)} vs {w.dtype}{list(w.shape)}"
        if w.dtype.is_floating_point:
            err = rel_err(g, w)
            assert err <= tol, f"%{name}: relative error {err:.2e} > {tol:.0e}"
        else:
            assert torch.equal(g, w), f"%{name}: {g} != {w}"
    return module


def test_unary_float_ops():
    check_cpp("""graph @unary(%x: f32[4,8], %p: f32[4,8]) -> (f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], i1[4,8]) {
  %neg = neg(%x) : f32[4,8]
  %abs = abs(%x) : f32[4,8]
  %exp = exp(%x) : f32[4,8]
  %log = log(%p) : f32[4,8]
  %sqrt = sqrt(%p) : f32[4,8]
  %rsqrt = rsqrt(%p) : f32[4,8]
  %rec = reciprocal(%p) : f32[4,8]
  %tanh = tanh(%x) : f32[4,8]
  %sig = sigmoid(%x) : f32[4,8]
  %erf = erf(%x) : f32[4,8]
  %sin = sin(%x) : f32[4,8]
  %cos = cos(%x) : f32[4,8]
  %floor = floor(%x) : f32[4,8]
  %relu = relu(%x) : f32[4,8]
  %silu = silu(%x) : f32[4,8]
  %gelu = gelu(%x) : f32[4,8]
  %gelu_tanh = gelu(%x) {approximate = "tanh"} : f32[4,8]
  %clamp = clamp(%x) {max = 0.5, min = -0.25} : f32[4,8]
  %tril = tril(%x) {diagonal = 1} : f32[4,8]
  %triu = triu(%x) {diagonal = -1} : f32[4,8]
  %not = logical_not(%x) : i1[4,8]
  return %neg, %abs, %exp, %log, %sqrt, %rsqrt, %rec, %tanh, %sig, %erf, %sin, %cos, %floor, %relu, %silu, %gelu, %gelu_tanh, %clamp, %tril, %triu, %not
}
""", seed=0, special={"p": positive})


def test_binary_ops_broadcast_and_compare():
    check_cpp("""graph @binary(%a: f32[4,8], %b: f32[8], %c: f32[4,1], %p: f32[4,8]) -> (f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], f32[4,8]) {
  %add = add(%a, %b) : f32[4,8]
  %sub = sub(%a, %c) : f32[4,8]
  %mul = mul(%c, %b) : f32[4,8]
  %div = div(%a, %p) : f32[4,8]
  %floordiv = div(%a, %c) {rounding_mode = "floor"} : f32[4,8]
  %truncdiv = div(%a, %c) {rounding_mode = "trunc"} : f32[4,8]
  %rem = remainder(%a, %c) : f32[4,8]
  %pow = pow(%p, %a) : f32[4,8]
  %max = maximum(%a, %b) : f32[4,8]
  %min = minimum(%a, %c) : f32[4,8]
  %eq = eq(%a, %a) : i1[4,8]
  %ne = ne(%a, %b) : i1[4,8]
  %lt = lt(%a, %b) : i1[4,8]
  %le = le(%a, %c) : i1[4,8]
  %gt = gt(%a, %c) : i1[4,8]
  %ge = ge(%b, %a) : i1[4,8]
  %and = logical_and(%lt, %gt) : i1[4,8]
  %where = where(%gt, %a, %b) : f32[4,8]
  return %add, %sub, %mul, %div, %floordiv, %truncdiv, %rem, %pow, %max, %min, %eq, %ne, %lt, %le, %gt, %ge, %and, %where
}
""", seed=1, special={"p": positive})


def test_integer_ops_and_casts():
    check_cpp("""graph @ints(%i: i64[4,8], %j: i64[4,8], %k: i32[8], %x: f32[4,8], %m: i1[4,8]) -> (i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i1[4,8], i1[4,8], f32[4,8], i32[4,8], i64[4,8], f32[4,8], i1[4,8], i32[4], i64[8], i64[4,8], i64[4,8]) {
  %add = add(%i, %j) : i64[4,8]
  %mul = mul(%i, %j) : i64[4,8]
  %neg = neg(%i) : i64[4,8]
  %abs = abs(%i) : i64[4,8]
  %max = maximum(%i, %j) : i64[4,8]
  %div = div(%i, %j) : i64[4,8]
  %floordiv = div(%i, %j) {rounding_mode = "floor"} : i64[4,8]
  %rem = remainder(%i, %j) : i64[4,8]
  %lt = lt(%i, %j) : i1[4,8]
  %or = logical_or(%m, %lt) : i1[4,8]
  %itof = cast(%i) {dtype = "f32"} : f32[4,8]
  %ftoi = cast(%x) {dtype = "i32"} : i32[4,8]
  %btoi = cast(%m) {dtype = "i64"} : i64[4,8]
  %btof = cast(%m) {dtype = "f32"} : f32[4,8]
  %ftob = cast(%x) {dtype = "i1"} : i1[4,8]
  %narrow = cast(%i) {dtype = "i32"} : i32[4,8]
  %rowsum = sum(%narrow) {dims = [1]} : i32[4]
  %wide = cast(%k) {dtype = "i64"} : i64[8]
  %relu = relu(%i) : i64[4,8]
  %clamp = clamp(%i) {max = 3, min = -2} : i64[4,8]
  return %add, %mul, %neg, %abs, %max, %div, %floordiv, %rem, %lt, %or, %itof, %ftoi, %btoi, %btof, %ftob, %rowsum, %wide, %relu, %clamp
}
""", seed=2, special={"j": lambda shape: torch.randint(1, 5, shape) * (2 * torch.randint(0, 2, shape) - 1),
                      "x": lambda shape: torch.randn(shape) * 4})


def test_half_precision_boundaries():
    """bf16 and f16 cross the function boundary; float casts round to nearest even as torch."""
    check_cpp("""graph @half(%x: f32[4,8], %h: bf16[4,8], %f: f16[4,8], %w: bf16[6,8] param) -> (bf16[4,8], f16[4,8], f32[4,8], bf16[4,8], f16[4,8], bf16[4,6], f64[4,8]) {
  %tobf = cast(%x) {dtype = "bf16"} : bf16[4,8]
  %tof16 = cast(%x) {dtype = "f16"} : f16[4,8]
  %back = cast(%h) {dtype = "f32"} : f32[4,8]
  %cross = cast(%f) {dtype = "bf16"} : bf16[4,8]
  %addh = add(%f, %f) : f16[4,8]
  %lin = linear(%h, %w) : bf16[4,6]
  %wide = cast(%x) {dtype = "f64"} : f64[4,8]
  return %tobf, %tof16, %back, %cross, %addh, %lin, %wide
}
""", seed=3, tol=1e-2)


def test_reductions():
    check_cpp("""graph @reduce(%x: f32[3,4,5], %i: i64[3,4]) -> (f32[3,5], f32[3,1,1], f32[3,4], f32[4,5], f32[1,4,5], f32[3], f32[3,4], f32[5], i1[3], i64[3,5], i64[3,1,5], f32[3,4,5], i64[3,4], i64[4]) {
  %sum = sum(%x) {dims = [1]} : f32[3,5]
  %mean = mean(%x) {dims = [1, 2], keepdim = true} : f32[3,1,1]
  %amax = amax(%x) {dims = [2]} : f32[3,4]
  %amin = amin(%x) {dims = [0]} : f32[4,5]
  %prod = prod(%x) {dims = [0], keepdim = true} : f32[1,4,5]
  %var = var(%x) {dims = [1, 2]} : f32[3]
  %var0 = var(%x) {correction = 0, dims = [2]} : f32[3,4]
  %all = sum(%x) {dims = [0, 1]} : f32[5]
  %pos = gt(%i, %i) : i1[3,4]
  %any = any(%pos) {dims = [1]} : i1[3]
  %argmax = argmax(%x) {dim = 1} : i64[3,5]
  %argmin = argmin(%x) {dim = 1, keepdim = true} : i64[3,1,5]
  %cumsum = cumsum(%x) {dim = 2} : f32[3,4,5]
  %icumsum = cumsum(%i) {dim = 1} : i64[3,4]
  %imax = amax(%i) {dims = [0]} : i64[4]
  return %sum, %mean, %amax, %amin, %prod, %var, %var0, %all, %any, %argmax, %argmin, %cumsum, %icumsum, %imax
}
""", seed=4)


def test_softmax_and_norms():
    check_cpp("""graph @norms(%x: f32[2,6,8], %img: f32[2,6,3,3], %w: f32[8] param, %b: f32[8] param, %gw: f32[6] param, %gb: f32[6] param, %rm: f32[6] buffer, %rv: f32[6] buffer) -> (f32[2,6,8], f32[2,6,8], f32[2,6,8], f32[2,6,8], f32[2,6,8], f32[2,6,3,3], f32[2,6,3,3], f32[2,6,3,3], f32[2,6,8]) {
  %sm = softmax(%x) {dim = 2} : f32[2,6,8]
  %sm1 = softmax(%x) {dim = 1} : f32[2,6,8]
  %lsm = log_softmax(%x) {dim = 2} : f32[2,6,8]
  %ln = layer_norm(%x, %w, %b) {normalized_rank = 1} : f32[2,6,8]
  %rms = rms_norm(%x, %w) {eps = 1e-06, normalized_rank = 1} : f32[2,6,8]
  %gn = group_norm(%img, %gw, %gb) {groups = 3} : f32[2,6,3,3]
  %bn = batch_norm(%img, %rm, %rv, %gw, %gb) : f32[2,6,3,3]
  %bn_plain = batch_norm(%img, %rm, %rv) {eps = 0.001} : f32[2,6,3,3]
  %ln2 = layer_norm(%x) {normalized_rank = 2} : f32[2,6,8]
  return %sm, %sm1, %lsm, %ln, %rms, %gn, %bn, %bn_plain, %ln2
}
""", seed=5, special={"rv": positive})


def test_contractions():
    check_cpp("""graph @contract(%a: f32[2,3,4,8], %b: f32[3,8,5], %x: f32[2,4,8], %w: f32[16,8] param, %bias: f32[16] param, %m: f32[4,8], %n: f32[8,6]) -> (f32[2,3,4,5], f32[2,4,16], f32[2,4,16], f32[4,6]) {
  %bmm = matmul(%a, %b) : f32[2,3,4,5]
  %lin = linear(%x, %w, %bias) : f32[2,4,16]
  %lin_nobias = linear(%x, %w) : f32[2,4,16]
  %mm = matmul(%m, %n) : f32[4,6]
  return %bmm, %lin, %lin_nobias, %mm
}
""", seed=6)


def test_convolutions():
    check_cpp("""graph @convs(%x: f32[2,4,9,9], %w: f32[6,4,3,3] param, %b: f32[6] param, %dw: f32[4,1,3,3] param, %gw: f32[6,2,2,2] param, %s: f32[2,4,10], %w1: f32[3,4,3] param) -> (f32[2,6,5,5], f32[2,4,5,5], f32[2,6,8,8], f32[2,3,10]) {
  %conv = conv(%x, %w, %b) {dilation = [1, 1], padding = [1, 1], stride = [2, 2]} : f32[2,6,5,5]
  %depthwise = conv(%x, %dw) {dilation = [2, 2], groups = 4, padding = [2, 2], stride = [2, 2]} : f32[2,4,5,5]
  %grouped = conv(%x, %gw) {dilation = [1, 1], groups = 2, padding = [0, 0], stride = [1, 1]} : f32[2,6,8,8]
  %conv1d = conv(%s, %w1) {dilation = [1], padding = [1], stride = [1]} : f32[2,3,10]
  return %conv, %depthwise, %grouped, %conv1d
}
""", seed=7)


def test_pooling():
    check_cpp("""graph @pools(%x: f32[2,3,9,9]) -> (f32[2,3,5,5], f32[2,3,5,5], f32[2,3,4,4], f32[2,3,5,5], f32[2,3,5,5], f32[2,3,4,4]) {
  %max = max_pool(%x) {kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,3,5,5]
  %max_ceil = max_pool(%x) {ceil_mode = true, kernel = [2, 2], padding = [0, 0], stride = [2, 2]} : f32[2,3,5,5]
  %max_dil = max_pool(%x) {dilation = [2, 2], kernel = [2, 2], padding = [0, 0], stride = [2, 2]} : f32[2,3,4,4]
  %avg = avg_pool(%x) {kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,3,5,5]
  %avg_ex = avg_pool(%x) {count_include_pad = false, kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,3,5,5]
  %avg_ceil = avg_pool(%x) {ceil_mode = true, kernel = [3, 3], padding = [0, 0], stride = [2, 2]} : f32[2,3,4,4]
  return %max, %max_ceil, %max_dil, %avg, %avg_ex, %avg_ceil
}
""", seed=8)


def test_gathers():
    check_cpp("""graph @gather(%ids: i64[2,5], %table: f32[10,8] param, %x: f32[3,10,4], %sel: i32[6], %r: i64[2,3], %s: i64[3]) -> (f32[2,5,8], f32[3,6,4], f32[3,2,3], f32[2,3,10,4]) {
  %emb = embedding(%table, %ids) : f32[2,5,8]
  %pick = index_select(%x, %sel) {dim = 1} : f32[3,6,4]
  %adv = index(%x, %r, %s) {dim = 1} : f32[3,2,3]
  %rows = index(%x, %r) : f32[2,3,10,4]
  return %emb, %pick, %adv, %rows
}
""", seed=9, special={"ids": indices(10), "sel": indices(10),
                      "r": lambda shape: torch.randint(-3, 3, shape), "s": lambda shape: torch.randint(-4, 4, shape)})


def test_layout_ops():
    check_cpp("""graph @layout(%x: f32[2,8,3], %y: f32[2,4,3], %img: f32[1,8,3,3]) -> (f32[4,12], f32[12,4], f32[3,8,2], f32[5,2,8,3], f32[2,3,3], f32[2,12,3], f32[2,9,4], f32[2,6,2], f32[1,2,6,6], f32[1,32,1,1], f32[1,8,6,9], f32[48]) {
  %flat = reshape(%x) {shape = [4, 12]} : f32[4,12]
  %split = reshape(%x) {shape = [12, 4]} : f32[12,4]
  %perm = permute(%x) {perm = [2, 1, 0]} : f32[3,8,2]
  %bcast = expand(%x) {shape = [5, 2, 8, 3]} : f32[5,2,8,3]
  %strided = slice(%x) {dim = 1, end = 7, start = 1, step = 2} : f32[2,3,3]
  %cat = concat(%x, %y) {dim = 1} : f32[2,12,3]
  %pad = pad(%x) {pads = [0, 0, 0, 1, 1, 0], value = 0.5} : f32[2,9,4]
  %crop = pad(%x) {pads = [0, 0, -1, -1, 0, -1]} : f32[2,6,2]
  %shuffle = pixel_shuffle(%img) {factor = 2} : f32[1,2,6,6]
  %unshuffle = pixel_unshuffle(%shuffle) {factor = 6} : f32[1,72,1,1]
  %part = slice(%unshuffle) {dim = 1, end = 32, start = 0} : f32[1,32,1,1]
  %up = upsample_nearest(%img) {scales = [2, 3]} : f32[1,8,6,9]
  %flat1 = reshape(%x) {shape = [48]} : f32[48]
  return %flat, %split, %perm, %bcast, %strided, %cat, %pad, %crop, %shuffle, %part, %up, %flat1
}
""", seed=10)


def test_sources_and_scalars():
    check_cpp("""graph @sources(%x: f32[4]) -> (f32[2,3], i64[5], i1[2], f32[6], i64[4], f32[], f32[4]) {
  %full = full() {value = 1.5} : f32[2,3]
  %ifull = full() {value = 7} : i64[5]
  %bfull = full() {value = true} : i1[2]
  %iota = iota() {start = 0.5, step = 0.25} : f32[6]
  %iiota = iota() {start = 3, step = -2} : i64[4]
  %total = sum(%x) {dims = [0]} : f32[]
  %shifted = sub(%x, %total) : f32[4]
  return %full, %ifull, %bfull, %iota, %iiota, %total, %shifted
}
""", seed=11)


def test_attention():
    check_cpp("""graph @attn(%q: f32[2,4,5,8], %k: f32[2,4,7,8], %v: f32[2,4,7,6], %kg: f32[2,2,7,8], %vg: f32[2,2,7,6], %mask: i1[5,7], %bias: f32[2,1,5,7], %q6: f32[6,5,8], %k2: f32[2,7,8], %v2: f32[2,7,6]) -> (f32[2,4,5,6], f32[2,4,5,6], f32[2,4,5,6], f32[2,4,5,6], f32[2,4,5,6], f32[6,5,6], f32[5,8]) {
  %plain = attention(%q, %k, %v) {scale = 0.35} : f32[2,4,5,6]
  %causal = attention(%q, %k, %v) {causal = true, scale = 0.35} : f32[2,4,5,6]
  %masked = attention(%q, %k, %v, %mask) {scale = 0.35} : f32[2,4,5,6]
  %biased = attention(%q, %k, %v, %bias) {scale = 0.35} : f32[2,4,5,6]
  %gqa = attention(%q, %kg, %vg) {causal = true, scale = 0.35} : f32[2,4,5,6]
  %gqa3 = attention(%q6, %k2, %v2) {scale = 0.35} : f32[6,5,6]
  %q2d = slice(%q6) {dim = 0, end = 1, start = 0} : f32[1,5,8]
  %q1 = reshape(%q2d) {shape = [5, 8]} : f32[5,8]
  %k1 = reshape(%q2d) {shape = [5, 8]} : f32[5,8]
  %single = attention(%q1, %k1, %q1) {causal = true, scale = 0.125} : f32[5,8]
  return %plain, %causal, %masked, %biased, %gqa, %gqa3, %single
}
""", seed=12, special={"mask": lambda shape: (torch.rand(shape) > 0.3) | torch.eye(*shape, dtype=torch.bool)})




# -- grouped kernels: a pointwise chain is one loop nest, intermediates stay in registers -------
CHAIN = """graph @chain(%x: f32[4,64], %y: f32[64], %b: bf16[4,64]) -> (f32[4,64], f32[4,64], bf16[4,64]) {
  group 0 {anchor = "out", kind = "pointwise"}
  group 1 {anchor = "hb", kind = "pointwise", tile_l1 = [2, 16]}
  %c = full() {value = 0.5} : f32[] group(0)
  %t0 = mul(%x, %c) : f32[4,64] group(0)
  %t1 = add(%t0, %y) : f32[4,64] group(0)
  %t2 = tanh(%t1) : f32[4,64] group(0)
  %out = mul(%t2, %x) : f32[4,64] group(0)
  %side = exp(%t1) : f32[4,64] group(0)
  %perm = permute(%out) {perm = [0, 1]} : f32[4,64]
  %hb0 = cast(%side) {dtype = "bf16"} : bf16[4,64] group(1)
  %hb1 = mul(%hb0, %b) : bf16[4,64] group(1)
  %hb = silu(%hb1) : bf16[4,64] group(1)
  return %out, %perm, %hb
}
"""


def test_pointwise_group_is_one_loop_nest_without_intermediate_stores():
    module = check_cpp(CHAIN, seed=20, tol=1e-2)
    src = module.source
    plan = module.code.plan
    # t0, t1, t2 and the constant never get memory; out and side leave the group
    assert not {"t0", "t1", "t2", "c", "hb0", "hb1"} & plan.materialized
    assert {"out", "side", "hb"} <= plan.materialized
    fn = next(f for f in module.code.kernel_functions if f.endswith("_mul_add_tanh_exp"))
    body = src[src.index(f"static void {fn}("):]
    body = body[:body.index("\n}\n")]
    assert body.count("#pragma omp parallel") == 1, body  # one loop nest for the whole chain
    assert body.count("] = ") == 2  # two stores: %out and %side
    assert "cs_tanh" in body and "cs_exp" in body
    # the tiled bf16 group follows its plan
    assert "tiled by the group's plan: [2, 16]" in src
    assert module.code.kernel_count == 3 and len(module.code.kernel_functions) == 3


def test_reduction_group_inlines_its_prologue():
    module = check_cpp("""graph @rms(%x: f32[8,32], %w: f32[32] param) -> (f32[8,32]) {
  group 0 {anchor = "ms", kind = "reduction"}
  %sq = mul(%x, %x) : f32[8,32] group(0)
  %ms = mean(%sq) {dims = [1], keepdim = true} : f32[8,1] group(0)
  %e = full() {value = 1e-06} : f32[] group(0)
  %d = add(%ms, %e) : f32[8,1] group(0)
  %r = rsqrt(%d) : f32[8,1] group(0)
  %y = mul(%x, %r) : f32[8,32] group(0)
  %out = mul(%y, %w) : f32[8,32] group(0)
  return %out
}
""", seed=21)
    plan = module.code.plan
    assert "sq" not in plan.materialized and "ms" in plan.materialized
    assert len(module.code.kernel_functions) == 1


def test_identical_layers_share_one_function_and_reshape_is_a_view():
    module = check_cpp("""graph @two(%x: f32[4,8], %w1: f32[8,8] param, %w2: f32[8,8] param) -> (f32[32]) {
  %a = linear(%x, %w1) : f32[4,8]
  %b = relu(%a) : f32[4,8]
  %c = linear(%b, %w2) : f32[4,8]
  %d = relu(%c) : f32[4,8]
  %flat = reshape(%d) {shape = [32]} : f32[32]
  return %flat
}
""", seed=22)
    assert len(module.code.kernel_functions) == 2  # linear and relu, each written once
    assert module.code.plan.aliases == {"flat": "d"}
    # %a and %c have disjoint lifetimes: the arena reuses memory
    assert module.code.plan.arena_bytes < 3 * 4 * 8 * 4 + 64 * 3


def test_moe_is_refused_with_the_node_named():
    graph = parse_graph("""graph @routed(%x: f32[4,8], %router: f32[2,8] param, %w: f32[2,8,8] param) -> (f32[4,8]) {
  %y = moe(%x, %router, %w) {num_experts = 2, top_k = 1} : f32[4,8] ({
    graph @expert(%t: f32[4,8], %we: f32[8,8]) -> (f32[4,8]) {
      %o = linear(%t, %we) : f32[4,8]
      return %o
    }
  })
  return %y
}
""")
    with pytest.raises(CodegenError, match=r"%y = moe.*not supported by the C\+\+ backend yet"):
        generate(graph)


def test_every_registered_op_has_an_emitter_or_a_scalar_body():
    from codesign.codegen.cpp.exprs import is_expression_op
    from codesign.codegen.cpp.kernels import EMITTERS
    from codesign.codegen.cpp.scalar import POINTWISE
    from codesign.ir import OPS
    layout_or_source = {"reshape", "permute", "expand", "slice", "concat", "pad", "pixel_shuffle",
                        "pixel_unshuffle", "upsample_nearest", "full", "iota", "embedding",
                        "index_select", "index"}
    missing = [op for op in OPS if op not in EMITTERS and op not in POINTWISE and op not in layout_or_source]
    assert not missing, f"ops the C++ backend cannot generate: {missing}"
    assert all(is_expression_op(op) for op in layout_or_source)


# -- the cache ---------------------------------------------------------------------------------------
def test_second_build_hits_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path / "cache"))
    graph = parse_graph("""graph @cached(%x: f32[16]) -> (f32[16]) {
  %y = exp(%x) : f32[16]
  return %y
}
""")
    first = CppModule(graph)
    assert not first.built.cached and first.built.seconds > 0
    second = CppModule(graph)
    assert second.built.cached and second.built.library == first.built.library
    assert str(first.built.library).startswith(str(tmp_path / "cache"))
    x = torch.randn(16)
    assert torch.allclose(second(x), torch.exp(x), rtol=1e-6)


# -- example models through the C++ backend, each compiled once -----------------------------------
@pytest.fixture(scope="module", params=["mlp.py:tiny", "cnn.py:tiny", "gpt2.py:tiny", "llama.py:tiny",
                                        "vae_decoder.py:tiny"])
def example(request):
    from codesign.frontend import capture, load_factory
    model, inputs = load_factory(str(EXAMPLES / request.param))
    captured = capture(model, inputs)
    return request.param, model, inputs, captured, CppModule(captured.graph, captured.state)


def test_example_matches_eager_on_fresh_inputs(example):
    name, model, inputs, captured, module = example
    gen = torch.Generator().manual_seed(5)
    fresh = tuple(torch.randn(x.shape, generator=gen, dtype=x.dtype) if x.dtype.is_floating_point
                  else torch.randint(0, 64, x.shape, generator=gen, dtype=x.dtype) for x in inputs)
    with torch.no_grad():
        want = model(*fresh)
    got = module(*fresh)
    assert rel_err(got, want) <= 1e-5, f"{name}: relative error {rel_err(got, want):.2e}"


def test_mixtral_moe_is_refused():
    from codesign.frontend import capture, load_factory
    model, inputs = load_factory(str(EXAMPLES / "mixtral_moe.py:tiny"))
    with pytest.raises(CodegenError, match="moe"):
        generate(capture(model, inputs).graph)


# -- export: sources, weights, CMake, on a clean build tree ----------------------------------------
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_export_cpp_builds_with_cmake_and_runs(tmp_path):
    graph = parse_graph(MLP_SMALL)
    torch.manual_seed(3)
    state = {i.name: torch.randn(i.type.shape) for i in graph.state_inputs}
    out = export_cpp(graph, state, tmp_path / "mlp")
    names = {p.name for p in out.iterdir()}
    assert {"mlp.cpp", "mlp.h", "mlp.weights.bin", "mlp_weights.h", "main.cpp", "CMakeLists.txt"} <= names
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(out), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True, timeout=120)
    run = subprocess.run([str(build / "mlp_main"), str(out / "mlp.weights.bin")], capture_output=True,
                         text=True, timeout=60, check=True)
    assert "output 0 %y f32[4,10]: sum" in run.stdout
    # the demo's checksum equals the interpreter's on the same pseudo-random input
    seed, values = 12345, []
    for _ in range(4 * 32):
        seed = (seed * 1664525 + 1013904223) % (1 << 32)
        values.append((seed >> 8) / 16777216.0 - 0.5)
    x = torch.tensor(values, dtype=torch.float32).reshape(4, 32)
    want = run_graph(graph, [x], state)[0].double().sum().item()
    got = float(run.stdout.split("sum ")[1].split()[0])
    assert abs(got - want) <= 1e-4 * max(1.0, abs(want))


MLP_SMALL = """graph @mlp(%x: f32[4,32], %fc1.weight: f32[64,32] param, %fc1.bias: f32[64] param, %fc2.weight: f32[10,64] param, %fc2.bias: f32[10] param) -> (f32[4,10]) {
  %h1 = linear(%x, %fc1.weight, %fc1.bias) : f32[4,64]
  %a1 = gelu(%h1) : f32[4,64]
  %y = linear(%a1, %fc2.weight, %fc2.bias) : f32[4,10]
  return %y
}
"""
