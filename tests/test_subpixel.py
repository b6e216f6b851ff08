"""The `subpixel-conv` rewrite: exact against eager on fresh inputs, on every backend.

Graphs are built directly (fast) for the sweep through the interpreter; modules go through
capture, the compile pipeline and the C++ and Triton (interpreter) backends for a few cases
of each kind: 2-D, 1-D, 3-D with a spatial-only upsample and causal temporal padding.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import codesign  # noqa: E402
from codesign.analysis import node_flops  # noqa: E402
from codesign.ir.builder import GraphBuilder  # noqa: E402
from codesign.ir import run_graph  # noqa: E402
from codesign.ir.graph import Graph, Input, InputKind  # noqa: E402
from codesign.ir.types import DType, TensorType  # noqa: E402
from codesign.passes import PassContext, PassManager  # noqa: E402
from codesign.passes.subpixel import AxisPlan  # noqa: E402
from codesign.targets import load_target  # noqa: E402
from helpers import rel_err  # noqa: E402

ALWAYS = "canonicalize,subpixel-conv{when=always},dce,fuse,tile,place{time_limit=2 deterministic=true}"
TOL = 1e-5


def up_conv_graph(nd: int, cin: int, cout: int, k: int, scales: tuple[int, ...], padding: int, bias: bool,
                  groups: int = 1, dilation: int = 1, stride: int = 1, size: int = 5,
                  pads: tuple[int, ...] | None = None, pad_value: float = 0.0) -> Graph:
    """upsample_nearest → [pad] → conv, as capture builds it."""
    b = GraphBuilder("up")
    x = b.add_input(Input("x", TensorType((2, cin) + (size,) * nd, DType.f32)))
    w = b.add_input(Input("w", TensorType((cout, cin // groups) + (k,) * nd, DType.f32), InputKind.param, "conv.weight"))
    operands = [w]
    if bias:
        operands.append(b.add_input(Input("b", TensorType((cout,), DType.f32), InputKind.param, "conv.bias")))
    u = b.add("upsample_nearest", [x], {"scales": scales})
    if pads is not None:
        u = b.add("pad", [u], {"pads": (0, 0, 0, 0) + pads, "value": pad_value})
    y = b.add("conv", [u] + operands, {"stride": (stride,) * nd, "padding": (padding,) * nd,
                                       "dilation": (dilation,) * nd, "groups": groups})
    return b.finish([y])


def eager(graph: Graph, x: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """What PyTorch computes for `up_conv_graph`'s graph (F.interpolate, F.pad, F.convNd)."""
    nodes = {n.op: n for n in graph.nodes}
    up, conv = nodes["upsample_nearest"], nodes["conv"]
    nd = x.dim() - 2
    scales = (1,) * (nd - len(up.attrs["scales"])) + tuple(up.attrs["scales"])
    h = F.interpolate(x, scale_factor=scales, mode="nearest")
    if "pad" in nodes:
        p = nodes["pad"].attrs["pads"][4:]
        h = F.pad(h, [v for i in reversed(range(nd)) for v in (p[2 * i], p[2 * i + 1])], value=nodes["pad"].attrs["value"])
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    a = conv.attrs
    return fn(h, state["w"], state.get("b"), a["stride"], a["padding"], a["dilation"], a["groups"])


def fresh(graph: Graph, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.inputs[0].type.shape, generator=gen)
    return x, {i.name: torch.randn(i.type.shape, generator=gen) for i in graph.inputs[1:]}


def rewrite(graph: Graph, pipeline: str = "subpixel-conv{when=always},dce", target=None) -> tuple[Graph, PassContext]:
    ctx = PassContext(target=target)
    return PassManager(pipeline).run(graph, ctx), ctx


# -- the interpreter: a sweep of shapes ------------------------------------------------------
SWEEP = [
    # nd, cin, cout, k, scales, padding, bias, groups, dilation, pads
    *[(2, cin, cout, k, (r, r), (k - 1) // 2, bias, groups, 1, None)
      for k in (1, 3, 5) for r in (2, 3) for bias in (True, False)
      for cin, cout, groups in ((4, 6, 1), (6, 4, 2))],
    (2, 3, 5, 3, (2, 2), 0, True, 1, 1, None),       # valid padding: phases of unequal length
    (2, 4, 4, 3, (2, 2), 2, True, 1, 2, None),       # dilation 2
    (2, 4, 4, 2, (2, 2), 0, False, 1, 1, None),      # even kernel
    (2, 4, 4, 3, (2, 3), 1, True, 1, 1, None),       # unequal factors: reshape/permute, not pixel_shuffle
    (2, 4, 8, 3, (2, 2), 1, True, 4, 1, None),       # depthwise-style groups
    (2, 4, 4, 3, (2, 2), 0, True, 1, 1, (1, 1, 0, 2)),  # a zero pad op between (asymmetric)
    (1, 4, 6, 3, (2,), 1, True, 1, 1, None),
    (1, 4, 6, 5, (3,), 2, False, 2, 1, None),
    (3, 4, 6, 3, (2, 2, 2), 1, True, 1, 1, None),
    (3, 4, 6, 3, (2, 2), 0, True, 2, 1, (2, 0, 1, 1, 1, 1)),  # spatial-only upsample, causal time padding
    (3, 2, 4, 3, (2, 2, 2), 0, False, 1, 1, (2, 0, 1, 1, 1, 1)),  # temporal too, causal
]


@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "nd{}-c{}-{}-k{}-r{}-p{}-b{}-g{}-d{}-{}".format(
    *c[:4], "x".join(map(str, c[4])), *c[5:9], "pad" if c[9] else "nopad"))
def test_exact_through_the_interpreter(case):
    nd, cin, cout, k, scales, padding, bias, groups, dilation, pads = case
    graph = up_conv_graph(nd, cin, cout, k, scales, padding, bias, groups, dilation,
                          size=4 if nd == 3 else 5, pads=pads)
    out, ctx = rewrite(graph)
    assert [d.choice for d in ctx.ledger.by_pass("subpixel-conv")] == ["rewritten"]
    assert not any(n.op == "upsample_nearest" for n in out.nodes)  # the large tensor never exists
    (conv,) = [n for n in out.nodes if n.op == "conv"]
    assert conv.type.shape[1] == cout * torch.tensor(scales).prod().item()
    for seed in (1, 2):
        x, state = fresh(graph, seed)
        assert rel_err(run_graph(out, [x], state)[0], eager(graph, x, state)) <= TOL


def test_three_by_three_needs_a_two_by_two_window_per_phase():
    """k = 3, r = 2: 16 taps instead of 36, and the up-conv's FLOPs down more than 2x."""
    graph = up_conv_graph(2, 64, 64, 3, (2, 2), 1, True, size=90)
    out, ctx = rewrite(graph)
    (decision,) = ctx.ledger.by_pass("subpixel-conv")
    assert (decision.data["taps_before"], decision.data["taps_after"]) == (36, 16)
    (conv,) = [n for n in out.nodes if n.op == "conv"]
    assert conv.type.shape[2:] == (91, 91) and out.types()[conv.operands[1]].shape == (256, 64, 2, 2)
    before = sum(node_flops(n, graph.types()) for n in graph.nodes)
    after = sum(node_flops(n, out.types()) for n in out.nodes)
    assert before / after >= 2.0


def test_axis_plan_rotates_phases_by_the_shift():
    """Phase φ sits in channel slot (φ + K) mod r, so the shuffle puts it at r·q + φ + K."""
    axis = AxisPlan(r=2, k=3, dilation=1, pad_lo=1, pad_hi=1, size=5)
    assert (axis.new_k, axis.new_pads, axis.shift) == (2, (1, 1), 1)
    assert [axis.taps(s, a) for s in range(2) for a in range(2)] == [(0, 1), (2,), (0,), (1, 2)]


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, reason", [
    ({"stride": 2}, "stride"),
    ({"pads": (1, 1, 1, 1), "pad_value": 1.0}, "zero padding"),
    ({"pads": (-1, 0, 0, 0)}, "zero padding"),
])
def test_refused_where_not_exact(kwargs, reason):
    graph = up_conv_graph(2, 4, 4, 3, (2, 2), 1, True, **kwargs)
    out, ctx = rewrite(graph, "subpixel-conv{when=always}")
    assert out == graph  # untouched
    (decision,) = ctx.ledger.by_pass("subpixel-conv")
    assert decision.choice == "kept" and reason in decision.reason


def test_a_conv_without_upsample_is_not_mentioned():
    b = GraphBuilder("plain")
    x = b.add_input(Input("x", TensorType((1, 4, 6, 6), DType.f32)))
    w = b.add_input(Input("w", TensorType((4, 4, 3, 3), DType.f32), InputKind.param, "w"))
    graph = b.finish([b.add("conv", [x, w], {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1})])
    out, ctx = rewrite(graph)
    assert out == graph and not ctx.ledger.by_pass("subpixel-conv")


# -- targets and the cost model --------------------------------------------------------------
def test_targets_enable_it_by_capability():
    assert load_target("h200").subpixel_conv and load_target("mobile-a18").subpixel_conv
    assert not load_target("cpu-host").subpixel_conv and not load_target("sn40l").subpixel_conv


@pytest.mark.parametrize("name, choice", [("h200", "rewritten"), ("mobile-a18", "rewritten"), ("cpu-host", "kept")])
def test_auto_asks_the_target_and_the_cost_model(name, choice):
    graph = up_conv_graph(2, 256, 256, 3, (2, 2), 1, True, size=64)
    out, ctx = rewrite(graph, "subpixel-conv", load_target(name))
    (decision,) = ctx.ledger.by_pass("subpixel-conv")
    assert decision.choice == choice
    assert decision.data["time_after"] < decision.data["time_before"]  # both predicted times are there
    assert decision.data["flops_before"] / decision.data["flops_after"] >= 2.0
    if choice == "kept":
        assert out == graph and "subpixel_conv" in decision.reason
    enabled = load_target(name).model_copy(update={"subpixel_conv": True})
    _, ctx = rewrite(graph, "subpixel-conv", enabled)
    assert ctx.ledger.by_pass("subpixel-conv")[0].choice == "rewritten"


def test_auto_keeps_a_rewrite_that_does_not_pay():
    """An even kernel with no padding needs as many taps per phase as before (16 = 16)."""
    graph = up_conv_graph(2, 64, 64, 2, (2, 2), 0, False, size=32)
    out, ctx = rewrite(graph, "subpixel-conv", load_target("h200"))
    (decision,) = ctx.ledger.by_pass("subpixel-conv")
    assert decision.choice == "kept" and "no gain" in decision.reason and out == graph


# -- modules through capture, compile and the backends ---------------------------------------
class UpConv(nn.Module):
    """A decoder up block: nearest upsample (optionally a causal time pad), then a conv."""

    def __init__(self, nd: int, cin: int, cout: int, k: int, scale, padding, bias=True, groups=1, causal=0):
        super().__init__()
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1]
        self.conv = conv(cin, cout, k, padding=padding, bias=bias, groups=groups)
        self.scale, self.causal = scale, causal

    def forward(self, x):
        x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        if self.causal:
            x = F.pad(x, (0, 0, 0, 0, self.causal, 0))
        return self.conv(x)


MODULES = {
    "2d-k3-r2": (lambda: UpConv(2, 6, 5, 3, 2, 1), (1, 6, 5, 7)),
    "2d-k5-r3-groups-nobias": (lambda: UpConv(2, 4, 6, 5, 3, 2, bias=False, groups=2), (2, 4, 4, 3)),
    "1d-k3-r2": (lambda: UpConv(1, 4, 6, 3, 2, 1), (2, 4, 9)),
    "3d-causal": (lambda: UpConv(3, 4, 4, 3, (1, 2, 2), (0, 1, 1), causal=2), (1, 4, 3, 4, 5)),
}


def _compiled(name: str, backend: str, target: str, pipeline: str | None):
    make, shape = MODULES[name]
    torch.manual_seed(0)
    model = make().eval()
    example = torch.randn(shape)
    cm = codesign.compile(model, (example,), target=target, backend=backend, pipeline=pipeline)
    return model, cm


def _check_fresh(model, cm, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cm.calling.args[0].type.shape, generator=gen)
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= TOL


@pytest.mark.parametrize("name", sorted(MODULES))
def test_exact_through_the_cpp_backend_with_the_shuffle_in_the_store(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path))
    model, cm = _compiled(name, "cpp", "cpu-host", ALWAYS)
    assert [d.choice for d in cm.ledger if d.pass_name == "subpixel-conv"] == ["rewritten"]
    _check_fresh(model, cm)
    source = cm.program("cpp").source
    # an fp32 conv runs as GEMM tiles, each stored through the shuffle into the output
    # (tests/test_codegen_cpp_conv.py checks the loops of other dtypes too)
    assert "\n  // conv as GEMM:" in source and source.count("each tile stored through") == 1
    assert_no_subpixel_buffer(cm)
    if name == "2d-k3-r2":
        with torch.no_grad():  # live weights: the derived weights follow the module's
            model.conv.weight.mul_(-0.5)
            model.conv.bias.add_(1.0)
        _check_fresh(model, cm, seed=4)


def assert_no_subpixel_buffer(cm) -> None:
    """The sub-pixel convs have no buffer: no kernel writes one, none reads one back."""
    from codesign.codegen.cpp.wrapper import plan_buffers
    from codesign.ir.kernels import kernels
    graph = cm.graph_for("cpp")
    convs = {n.name for n in graph.nodes if n.op == "conv" and n.name.endswith(".subpixel")}
    assert convs and not convs & plan_buffers(graph, kernels(graph)).materialized


class UpConvAct(UpConv):
    """An up block whose conv output the next op reads (a relu, as a decoder's resnet does)."""

    def forward(self, x):
        return torch.relu(super().forward(x)) * 0.5


GEMM_STORE_CASES = {  # scale, kernel, padding, channels in / out, groups, bias, input size
    "r2-k3-bias": (2, 3, 1, 8, 12, 1, True, (2, 8, 13, 11)),
    "r3-k3-groups": (3, 3, 1, 6, 9, 3, True, (1, 6, 7, 10)),
    "r2-k5-nobias": (2, 5, 2, 4, 5, 1, False, (1, 4, 9, 6)),
    "r2-k1": (2, 1, 0, 16, 8, 1, True, (2, 16, 12, 12)),
    "r2-k3-unpadded": (2, 3, 0, 5, 7, 1, True, (1, 5, 8, 9)),
    "r2-k3-many-tiles": (2, 3, 1, 32, 24, 2, True, (2, 32, 40, 36)),
}


@pytest.mark.parametrize("name", sorted(GEMM_STORE_CASES))
def test_cpp_gemm_tiles_store_through_the_shuffle(name, tmp_path, monkeypatch):
    """fp32 sub-pixel convs as GEMM tiles: every tile goes straight to its shuffled (and
    sliced) address in the up block's result, so no buffer of the sub-pixel conv's size
    exists and no loop copies it; the result matches eager on fresh inputs."""
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path))
    scale, k, padding, cin, cout, groups, bias, shape = GEMM_STORE_CASES[name]
    torch.manual_seed(5)
    model = UpConvAct(2, cin, cout, k, scale, padding, bias=bias, groups=groups).eval()
    cm = codesign.compile(model, (torch.randn(shape),), target="cpu-host", backend="cpp", pipeline=ALWAYS)
    assert [d.choice for d in cm.ledger if d.pass_name == "subpixel-conv"] == ["rewritten"]
    for seed in (6, 7):
        _check_fresh(model, cm, seed)
    source = cm.program("cpp").source
    assert source.count("each tile stored through") == 1
    assert_no_subpixel_buffer(cm)


@pytest.mark.parametrize("name", ["2d-k3-r2", "3d-causal"])
def test_exact_through_triton(name, tmp_path, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path))
    model, cm = _compiled(name, "triton", "h200", ALWAYS)
    assert [d.choice for d in cm.ledger if d.pass_name == "subpixel-conv"] == ["rewritten"]
    _check_fresh(model, cm)


def test_gpu_target_keeps_a_launch_bound_up_conv():
    """At 5×7 pixels the extra weight-transform kernel costs more than the FLOPs save."""
    model, cm = _compiled("2d-k3-r2", "interpreter", "h200", None)
    (decision,) = [d for d in cm.ledger if d.pass_name == "subpixel-conv"]
    assert decision.choice == "kept" and decision.data["time_after"] > decision.data["time_before"]


def test_cpu_target_keeps_the_graph_by_default():
    model, cm = _compiled("1d-k3-r2", "interpreter", "cpu-host", None)
    (decision,) = [d for d in cm.ledger if d.pass_name == "subpixel-conv"]
    assert decision.choice == "kept"
    assert any(n.op == "upsample_nearest" for n in cm.graph.nodes)
    _check_fresh(model, cm)


class CastUp(nn.Module):
    """diffusers' Upsample2D for bf16: upsample in float32, cast back, then the conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1).double()

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest").to(torch.float64))


def test_a_cast_between_upsample_and_conv_moves_to_the_small_tensor():
    model = CastUp().eval()
    cm = codesign.compile(model, (torch.randn(1, 4, 5, 6),), target="cpu-host", backend="interpreter",
                          pipeline=ALWAYS)
    assert [d.choice for d in cm.ledger if d.pass_name == "subpixel-conv"] == ["rewritten"]
    (conv,) = [n for n in cm.graph.nodes if n.op == "conv"]
    assert cm.graph.types()[conv.operands[0]].shape == (1, 4, 5, 6)
    _check_fresh(model, cm)
