"""Op-family IR graphs shared by the backend tests (C++, MLIR/IREE), as data.

Each `OpSample` is one graph holding several ops of a family, the seed its random inputs
are drawn with, factories for the inputs that need a special range (positive, indices, ...),
and the relative-error tolerance for float outputs. A backend's test module parametrizes
over `OP_SAMPLES` with `sample_params("<backend>")` and runs each through `check_sample`,
which draws the inputs (`sample_inputs`) and compares the backend's outputs with the
interpreter's (`check_outputs`): floats to a relative error of `tol` (1e-5 in f32, 1e-2
where bf16 / f16 are involved), integers and booleans exactly. A backend that legitimately
cannot run a sample names it, with the reason, in the sample's `skip`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import pytest
import torch

from codesign.ir import Graph, TensorType, parse_graph, run_graph
from helpers import rel_err

Factory = Callable[[tuple[int, ...]], torch.Tensor]


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


@dataclass(frozen=True)
class OpSample:
    """One test graph: IR `text`, the input `seed`, special input factories by input name,
    the float tolerance, and `skip`: backend name -> why that backend cannot run it."""

    name: str
    text: str
    seed: int
    inputs: Mapping[str, Factory] = field(default_factory=dict)
    tol: float = 1e-5
    skip: Mapping[str, str] = field(default_factory=dict)

    def graph(self) -> Graph:
        return parse_graph(self.text)


def sample_inputs(sample: OpSample, graph: Graph) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Runtime inputs and state of `graph`, drawn from the global RNG seeded with `sample.seed`."""
    torch.manual_seed(sample.seed)

    def value(inp) -> torch.Tensor:
        if inp.name in sample.inputs:
            return sample.inputs[inp.name](inp.type.shape).to(inp.type.dtype.torch)
        return random_value(inp.type)
    inputs = [value(i) for i in graph.runtime_inputs]
    state = {i.name: value(i) for i in graph.state_inputs}
    return inputs, state


def check_outputs(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor], tol: float,
                  names: Sequence[str] | None = None) -> None:
    """Every output equals the interpreter's: same dtype and shape; floats to a relative
    error of `tol`, integers and booleans exactly."""
    assert len(got) == len(want)
    names = list(names) if names is not None else [str(i) for i in range(len(want))]
    for name, g, w in zip(names, got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, f"%{name}: {g.dtype}{list(g.shape)} vs {w.dtype}{list(w.shape)}"
        if w.dtype.is_floating_point:
            err = rel_err(g, w)
            assert err <= tol, f"%{name}: relative error {err:.2e} > {tol:.0e}"
        else:
            assert torch.equal(g, w), f"%{name}: {g} != {w}"


def check_sample(sample: OpSample,
                 run: Callable[[Graph, list[torch.Tensor], dict[str, torch.Tensor]], Sequence[torch.Tensor]]) -> Graph:
    """Run `sample` through a backend, `run(graph, inputs, state) -> outputs`, on its seeded
    inputs and compare every output with the interpreter's (see `check_outputs`)."""
    graph = sample.graph()
    inputs, state = sample_inputs(sample, graph)
    got = run(graph, inputs, state)
    check_outputs(got, run_graph(graph, inputs, state), sample.tol, graph.outputs)
    return graph


def sample_params(backend: str, samples: Sequence[OpSample] | None = None) -> list:
    """`samples` (default `OP_SAMPLES`) as pytest params with ids, skipped where `backend` is in `skip`."""
    return [pytest.param(s, id=s.name, marks=[pytest.mark.skip(reason=s.skip[backend])] if backend in s.skip else [])
            for s in (OP_SAMPLES if samples is None else samples)]


# -- whole small models --------------------------------------------------------------------------
MLP = """graph @mlp(%x: f32[4,32], %fc1.weight: f32[64,32] param, %fc1.bias: f32[64] param, %fc2.weight: f32[64,64] param, %fc2.bias: f32[64] param, %fc3.weight: f32[10,64] param, %fc3.bias: f32[10] param) -> (f32[4,10]) {
  %h1 = linear(%x, %fc1.weight, %fc1.bias) : f32[4,64]
  %a1 = gelu(%h1) : f32[4,64]
  %h2 = linear(%a1, %fc2.weight, %fc2.bias) : f32[4,64]
  %a2 = relu(%h2) : f32[4,64]
  %y = linear(%a2, %fc3.weight, %fc3.bias) : f32[4,10]
  return %y
}
"""

CNN = """graph @cnn(%x: f32[2,3,16,16], %c1: f32[8,3,3,3] param, %m1: f32[8] buffer, %v1: f32[8] buffer, %g1: f32[8] param, %b1: f32[8] param, %c2: f32[8,8,3,3] param, %m2: f32[8] buffer, %v2: f32[8] buffer, %g2: f32[8] param, %b2: f32[8] param, %fw: f32[10,8] param, %fb: f32[10] param) -> (f32[2,10]) {
  %conv1 = conv(%x, %c1) {dilation = [1, 1], padding = [1, 1], stride = [1, 1]} : f32[2,8,16,16]
  %bn1 = batch_norm(%conv1, %m1, %v1, %g1, %b1) : f32[2,8,16,16]
  %relu1 = relu(%bn1) : f32[2,8,16,16]
  %pool = max_pool(%relu1) {kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,8,8,8]
  %conv2 = conv(%pool, %c2) {dilation = [1, 1], padding = [1, 1], stride = [1, 1]} : f32[2,8,8,8]
  %bn2 = batch_norm(%conv2, %m2, %v2, %g2, %b2) : f32[2,8,8,8]
  %res = add(%bn2, %pool) : f32[2,8,8,8]
  %relu2 = relu(%res) : f32[2,8,8,8]
  %gap = mean(%relu2) {dims = [2, 3]} : f32[2,8]
  %y = linear(%gap, %fw, %fb) : f32[2,10]
  return %y
}
"""


OP_SAMPLES: tuple[OpSample, ...] = (
    OpSample("unary_float_ops", """graph @unary(%x: f32[4,8], %p: f32[4,8]) -> (f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], i1[4,8], f32[4,8], f32[4,8], f32[4,8]) {
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
  %hsw = hardswish(%x) : f32[4,8]
  %ceil = ceil(%x) : f32[4,8]
  %sign = sign(%x) : f32[4,8]
  return %neg, %abs, %exp, %log, %sqrt, %rsqrt, %rec, %tanh, %sig, %erf, %sin, %cos, %floor, %relu, %silu, %gelu, %gelu_tanh, %clamp, %tril, %triu, %not, %hsw, %ceil, %sign
}
""", seed=0, inputs={"p": positive}),
    OpSample("binary_ops_broadcast_and_compare", """graph @binary(%a: f32[4,8], %b: f32[8], %c: f32[4,1], %p: f32[4,8]) -> (f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], f32[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], i1[4,8], f32[4,8], f32[4,8]) {
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
  %lae = logaddexp(%a, %b) : f32[4,8]
  return %add, %sub, %mul, %div, %floordiv, %truncdiv, %rem, %pow, %max, %min, %eq, %ne, %lt, %le, %gt, %ge, %and, %where, %lae
}
""", seed=1, inputs={"p": positive}),
    OpSample("integer_ops_and_casts", """graph @ints(%i: i64[4,8], %j: i64[4,8], %k: i32[8], %x: f32[4,8], %m: i1[4,8]) -> (i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i64[4,8], i1[4,8], i1[4,8], f32[4,8], i32[4,8], i64[4,8], f32[4,8], i1[4,8], i32[4], i64[8], i64[4,8], i64[4,8]) {
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
""", seed=2, inputs={"j": lambda shape: torch.randint(1, 5, shape) * (2 * torch.randint(0, 2, shape) - 1),
                     "x": lambda shape: torch.randn(shape) * 4}),
    # bf16 and f16 cross the function boundary; float casts round to nearest even as torch.
    OpSample("half_precision_boundaries", """graph @half(%x: f32[4,8], %h: bf16[4,8], %f: f16[4,8], %w: bf16[6,8] param) -> (bf16[4,8], f16[4,8], f32[4,8], bf16[4,8], f16[4,8], bf16[4,6], f64[4,8]) {
  %tobf = cast(%x) {dtype = "bf16"} : bf16[4,8]
  %tof16 = cast(%x) {dtype = "f16"} : f16[4,8]
  %back = cast(%h) {dtype = "f32"} : f32[4,8]
  %cross = cast(%f) {dtype = "bf16"} : bf16[4,8]
  %addh = add(%f, %f) : f16[4,8]
  %lin = linear(%h, %w) : bf16[4,6]
  %wide = cast(%x) {dtype = "f64"} : f64[4,8]
  return %tobf, %tof16, %back, %cross, %addh, %lin, %wide
}
""", seed=3, tol=1e-2),
    OpSample("reductions", """graph @reduce(%x: f32[3,4,5], %i: i64[3,4]) -> (f32[3,5], f32[3,1,1], f32[3,4], f32[4,5], f32[1,4,5], f32[3], f32[3,4], f32[5], i1[3], i64[3,5], i64[3,1,5], f32[3,4,5], i64[3,4], i64[4]) {
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
""", seed=4),
    OpSample("softmax_and_norms", """graph @norms(%x: f32[2,6,8], %img: f32[2,6,3,3], %w: f32[8] param, %b: f32[8] param, %gw: f32[6] param, %gb: f32[6] param, %rm: f32[6] buffer, %rv: f32[6] buffer) -> (f32[2,6,8], f32[2,6,8], f32[2,6,8], f32[2,6,8], f32[2,6,8], f32[2,6,3,3], f32[2,6,3,3], f32[2,6,3,3], f32[2,6,8]) {
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
""", seed=5, inputs={"rv": positive}),
    OpSample("contractions", """graph @contract(%a: f32[2,3,4,8], %b: f32[3,8,5], %x: f32[2,4,8], %w: f32[16,8] param, %bias: f32[16] param, %m: f32[4,8], %n: f32[8,6]) -> (f32[2,3,4,5], f32[2,4,16], f32[2,4,16], f32[4,6]) {
  %bmm = matmul(%a, %b) : f32[2,3,4,5]
  %lin = linear(%x, %w, %bias) : f32[2,4,16]
  %lin_nobias = linear(%x, %w) : f32[2,4,16]
  %mm = matmul(%m, %n) : f32[4,6]
  return %bmm, %lin, %lin_nobias, %mm
}
""", seed=6),
    OpSample("convolutions", """graph @convs(%x: f32[2,4,9,9], %w: f32[6,4,3,3] param, %b: f32[6] param, %dw: f32[4,1,3,3] param, %gw: f32[6,2,2,2] param, %s: f32[2,4,10], %w1: f32[3,4,3] param) -> (f32[2,6,5,5], f32[2,4,5,5], f32[2,6,8,8], f32[2,3,10]) {
  %conv = conv(%x, %w, %b) {dilation = [1, 1], padding = [1, 1], stride = [2, 2]} : f32[2,6,5,5]
  %depthwise = conv(%x, %dw) {dilation = [2, 2], groups = 4, padding = [2, 2], stride = [2, 2]} : f32[2,4,5,5]
  %grouped = conv(%x, %gw) {dilation = [1, 1], groups = 2, padding = [0, 0], stride = [1, 1]} : f32[2,6,8,8]
  %conv1d = conv(%s, %w1) {dilation = [1], padding = [1], stride = [1]} : f32[2,3,10]
  return %conv, %depthwise, %grouped, %conv1d
}
""", seed=7),
    OpSample("pooling", """graph @pools(%x: f32[2,3,9,9]) -> (f32[2,3,5,5], f32[2,3,5,5], f32[2,3,4,4], f32[2,3,5,5], f32[2,3,5,5], f32[2,3,4,4]) {
  %max = max_pool(%x) {kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,3,5,5]
  %max_ceil = max_pool(%x) {ceil_mode = true, kernel = [2, 2], padding = [0, 0], stride = [2, 2]} : f32[2,3,5,5]
  %max_dil = max_pool(%x) {dilation = [2, 2], kernel = [2, 2], padding = [0, 0], stride = [2, 2]} : f32[2,3,4,4]
  %avg = avg_pool(%x) {kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,3,5,5]
  %avg_ex = avg_pool(%x) {count_include_pad = false, kernel = [3, 3], padding = [1, 1], stride = [2, 2]} : f32[2,3,5,5]
  %avg_ceil = avg_pool(%x) {ceil_mode = true, kernel = [3, 3], padding = [0, 0], stride = [2, 2]} : f32[2,3,4,4]
  return %max, %max_ceil, %max_dil, %avg, %avg_ex, %avg_ceil
}
""", seed=8),
    OpSample("gathers", """graph @gather(%ids: i64[2,5], %table: f32[10,8] param, %x: f32[3,10,4], %sel: i32[6], %r: i64[2,3], %s: i64[3], %gi: i64[3,5,4]) -> (f32[2,5,8], f32[3,6,4], f32[3,2,3], f32[2,3,10,4], f32[3,5,4]) {
  %emb = embedding(%table, %ids) : f32[2,5,8]
  %pick = index_select(%x, %sel) {dim = 1} : f32[3,6,4]
  %adv = index(%x, %r, %s) {dim = 1} : f32[3,2,3]
  %rows = index(%x, %r) : f32[2,3,10,4]
  %gath = gather(%x, %gi) {dim = 1} : f32[3,5,4]
  return %emb, %pick, %adv, %rows, %gath
}
""", seed=9, inputs={"ids": indices(10), "sel": indices(10), "gi": indices(10),
                     "r": lambda shape: torch.randint(-3, 3, shape), "s": lambda shape: torch.randint(-4, 4, shape)}),
    OpSample("layout_ops", """graph @layout(%x: f32[2,8,3], %y: f32[2,4,3], %img: f32[1,8,3,3]) -> (f32[4,12], f32[12,4], f32[3,8,2], f32[5,2,8,3], f32[2,3,3], f32[2,12,3], f32[2,9,4], f32[2,6,2], f32[1,2,6,6], f32[1,32,1,1], f32[1,8,6,9], f32[48]) {
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
""", seed=10),
    OpSample("sources_and_scalars", """graph @sources(%x: f32[4]) -> (f32[2,3], i64[5], i1[2], f32[6], i64[4], f32[], f32[4]) {
  %full = full() {value = 1.5} : f32[2,3]
  %ifull = full() {value = 7} : i64[5]
  %bfull = full() {value = true} : i1[2]
  %iota = iota() {start = 0.5, step = 0.25} : f32[6]
  %iiota = iota() {start = 3, step = -2} : i64[4]
  %total = sum(%x) {dims = [0]} : f32[]
  %shifted = sub(%x, %total) : f32[4]
  return %full, %ifull, %bfull, %iota, %iiota, %total, %shifted
}
""", seed=11),
    OpSample("attention", """graph @attn(%q: f32[2,4,5,8], %k: f32[2,4,7,8], %v: f32[2,4,7,6], %kg: f32[2,2,7,8], %vg: f32[2,2,7,6], %mask: i1[5,7], %bias: f32[2,1,5,7], %q6: f32[6,5,8], %k2: f32[2,7,8], %v2: f32[2,7,6]) -> (f32[2,4,5,6], f32[2,4,5,6], f32[2,4,5,6], f32[2,4,5,6], f32[2,4,5,6], f32[6,5,6], f32[5,8]) {
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
""", seed=12, inputs={"mask": lambda shape: (torch.rand(shape) > 0.3) | torch.eye(*shape, dtype=torch.bool)}),
    OpSample("small_mlp", MLP, seed=13),
    OpSample("small_cnn", CNN, seed=14, inputs={"v1": positive, "v2": positive}),
)


# A routed mixture of experts: C++ runs it (routing + the region as its own program), Triton as an
# extern torch call, the MLIR export refuses it naming the node.
MOE_ROUTED = """graph @routed(%x: f32[4,8], %router: f32[2,8] param, %w: f32[2,8,8] param) -> (f32[4,8]) {
  %y = moe(%x, %router, %w) {num_experts = 2, top_k = 1} : f32[4,8] ({
    graph @expert(%t: f32[4,8], %we: f32[8,8]) -> (f32[4,8]) {
      %o = linear(%t, %we) : f32[4,8]
      return %o
    }
  })
  return %y
}
"""


# NaNs as torch treats them: amax / amin are NaN where a row holds one, and a literal -nan keeps
# its sign bit (`where` stores the literal itself). Each backend runs it through `check_nans`.
NANS = """graph @nans(%x: f32[6,40], %y: f32[6,40]) -> (f32[6], f32[6], f32[6,40], f32[6,40]) {
  %mx = amax(%x) {dims = [1], keepdim = false} : f32[6]
  %mn = amin(%x) {dims = [1], keepdim = false} : f32[6]
  %n = full() {value = -nan} : f32[]
  %p = full() {value = nan} : f32[]
  %zero = full() {value = 0.0} : f32[]
  %neg = lt(%y, %zero) : i1[6,40]
  %w = where(%neg, %n, %y) : f32[6,40]
  %v = where(%neg, %y, %p) : f32[6,40]
  return %mx, %mn, %w, %v
}
"""


def check_nans(run: Callable[[Graph, list[torch.Tensor], dict[str, torch.Tensor]], Sequence[torch.Tensor]],
               seed: int = 15) -> None:
    """`NANS` through a backend on fresh inputs (NaNs in random rows of %x): every output is
    NaN where the interpreter's is and equal elsewhere; the selected literals keep their sign
    bit (a NaN an instruction computes has the hardware's sign: x86's default NaN is negative)."""
    graph = parse_graph(NANS)
    torch.manual_seed(seed)
    x, y = torch.randn(6, 40), torch.randn(6, 40)
    rows = torch.randperm(6)[:3]
    x[rows, torch.randint(0, 40, (3,))] = float("nan")
    got, want = run(graph, [x, y], {}), run_graph(graph, [x, y], {})
    assert torch.isnan(want[0]).sum() == 3 and torch.signbit(want[2]).any() and torch.isnan(want[3]).any()
    for name, g, w in zip(graph.outputs, got, want):
        assert torch.equal(torch.isnan(g), torch.isnan(w)), f"%{name}: NaN at {torch.isnan(g)}, want {torch.isnan(w)}"
        if name in ("w", "v"):
            assert torch.equal(torch.signbit(g), torch.signbit(w)), f"%{name}: sign bits {torch.signbit(g)}"
        assert torch.equal(g.nan_to_num(), w.nan_to_num()), f"%{name}: {g} != {w}"
