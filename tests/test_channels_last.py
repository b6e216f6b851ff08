"""The `channels-last` pass: convs on NHWC data on GPU targets, exact against eager.

Blocks of the conv families (a ResNet block, ConvNeXt blocks, a VAE decoder block with
GroupNorm, SiLU and a nearest upsample) go through capture, the compile pipeline and the
Triton backend (TRITON_INTERPRET=1) in fp32 on fresh random inputs; the IR shows the layout
staying NHWC between convs; CPU targets and the off switch leave the graph as it was; a GPU
target's graph still runs on the C++ backend (its convs written back as NCHW).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import codesign  # noqa: E402
from codesign.compiler import COMPILE_PIPELINE  # noqa: E402
from codesign.ir import parse_graph, print_graph, run_graph  # noqa: E402
from codesign.ir.ops import get_op  # noqa: E402
from codesign.ir.verifier import VerifyError, verify  # noqa: E402
from codesign.passes import PassContext, PassManager, PipelineError, parse_pipeline  # noqa: E402
from codesign.passes.layout import is_layout_free, nchw_convs  # noqa: E402
from codesign.targets import load_target  # noqa: E402
from helpers import rel_err  # noqa: E402

TOL = 1e-5
OFF = COMPILE_PIPELINE.replace("channels-last", "channels-last{when=never}")
# the VAE block's up conv as a sub-pixel conv on the low-resolution input (whether the cost
# model finds that worth it at 4x4 pixels is subpixel-conv's decision, tested there): its
# conv then shares an NHWC region with the resnet conv before it
SUBPIXEL = COMPILE_PIPELINE.replace("subpixel-conv", "subpixel-conv{when=always}")


def _structural_h200():
    """h200 with a calibration that prices both conv layouts alike (no `nchw_library_conv`):
    the pass's structural rule (a region of two convs or more runs NHWC), so the blocks here,
    a few pixels wide, test the rewrite itself; the priced policy is tested at real sizes below."""
    target = load_target("h200")
    efficiency = target.calibration.efficiency.model_copy(update={"nchw_library_conv": None})
    return target.model_copy(update={"calibration": target.calibration.model_copy(update={"efficiency": efficiency})})


H200_STRUCTURAL = _structural_h200()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "codesign-cache"))


class ResNetBlock(nn.Module):
    def __init__(self, c: int = 8):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + x)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7, permute to NHWC, LayerNorm, MLP, layer scale, permute back, residual."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.dw, self.ln = nn.Conv2d(c, c, 7, padding=3, groups=c), nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.ln(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class VAEBlock(nn.Module):
    """A decoder's resnet block (GroupNorm, SiLU, 3x3 convs, residual) then a nearest x2
    upsample and a conv."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(4, c), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(4, c), nn.Conv2d(c, c, 3, padding=1)
        self.up = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h))) + x
        return self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))


BLOCKS = {
    "resnet": (lambda: ResNetBlock(), (2, 8, 6, 6)),
    "convnext": (lambda: nn.Sequential(ConvNeXtBlock(), ConvNeXtBlock()), (2, 8, 6, 6)),
    "vae": (lambda: VAEBlock(), (1, 8, 4, 4)),
}


def _model(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    make, shape = BLOCKS[name]
    model = make().eval()
    for m in model.modules():  # running statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model, torch.randn(shape)


def _pipeline(name: str) -> str:
    return SUBPIXEL if name == "vae" else COMPILE_PIPELINE


def _ops(graph, op: str) -> list:
    return [n for n in graph.nodes if get_op(n.op) is get_op(op)]


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_blocks_match_eager_on_the_triton_backend(name):
    model, x = _model(name)
    cm = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton", pipeline=_pipeline(name))
    convs = _ops(cm.graph, "conv_nhwc")
    kept = [d for d in cm.ledger if d.pass_name == "channels-last" and d.choice == "kept"]
    assert convs and len(_ops(cm.graph, "conv")) == len(kept)
    assert all("alone in its NHWC region" in d.reason for d in kept)
    assert not kept  # the group norms are split (split-group-norm): the layout moves through them too
    for seed in (1, 2):  # fresh inputs, not the example
        fresh = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            assert rel_err(cm(fresh), model(fresh)) <= TOL
    rewritten = [d for d in cm.ledger if d.pass_name == "channels-last" and d.choice == "nhwc"]
    assert len(rewritten) == len(convs)
    assert all(d.data["time_nhwc"] > 0 and d.data["time_nchw"] > 0 for d in rewritten)
    (summary,) = [d for d in cm.ledger if d.pass_name == "channels-last" and d.choice == "layout"]
    assert summary.data["convs"] == len(convs)
    program = cm.program("triton")
    assert program.source.count(".permute(0, 3, 1, 2), ") == len(convs)  # cuDNN reads NHWC as a view


def test_convnext_keeps_nhwc_between_convs():
    """The model's permutes cancel against the conv's: one conversion, at the input."""
    model, x = _model("convnext")
    graph = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton").graph
    permutes = _ops(graph, "permute")
    assert [tuple(p.attrs["perm"]) for p in permutes] == [(0, 2, 3, 1), (0, 3, 1, 2)]  # input, output
    second = _ops(graph, "conv_nhwc")[1]
    producers = graph.node_map()
    assert get_op(producers[second.operands[0]].op) is get_op("add")  # the residual, in NHWC


def test_resnet_block_kernels_as_many_as_nchw():
    """The permutes fold into the batch-norm kernels' loads and stores: the NHWC program has
    the NCHW one's kernels plus at most the input's conversion."""
    model, x = _model("resnet")
    on = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton").program("triton")
    off = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton", pipeline=OFF).program("triton")
    assert on.kernel_count <= off.kernel_count + 1  # the conversion may join its reader (lone-producer)


def test_off_switch_and_cpu_targets_leave_the_graph_unchanged():
    model, x = _model("resnet")
    off = codesign.compile(model, (x,), target=H200_STRUCTURAL, pipeline=OFF)
    assert _ops(off.graph, "conv") and not _ops(off.graph, "conv_nhwc")
    assert any(d.pass_name == "channels-last" and d.choice == "kept" and "when=never" in d.reason
               for d in off.ledger)
    cpu = codesign.compile(model, (x,), target="cpu-host")
    without = codesign.compile(model, (x,), target="cpu-host", pipeline=COMPILE_PIPELINE.replace("channels-last,", ""))
    assert print_graph(cpu.graph) == print_graph(without.graph)
    assert any("channels_last_conv: false" in d.reason for d in cpu.ledger if d.pass_name == "channels-last")


def test_vae_block_whose_convs_are_each_alone_stays_nchw():
    """Without the sub-pixel rewrite and the group norms' split each conv of the VAE block sits
    between NCHW readers (group norms, the nearest upsample): under when=auto all three are kept, ledgered; with
    when=always all three run NHWC and still match eager."""
    model, x = _model("vae")
    plain = COMPILE_PIPELINE.replace("subpixel-conv,", "").replace("split-group-norm,", "")  # NCHW group norms
    auto = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="interpreter", pipeline=plain)
    assert not _ops(auto.graph, "conv_nhwc") and len(_ops(auto.graph, "conv")) == 3
    kept = [d for d in auto.ledger if d.pass_name == "channels-last" and d.choice == "kept"]
    assert len(kept) == 3 and all("alone in its NHWC region" in d.reason for d in kept)
    always = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="interpreter",
                              pipeline=plain.replace("channels-last", "channels-last{when=always}"))
    assert len(_ops(always.graph, "conv_nhwc")) == 3 and not _ops(always.graph, "conv")
    fresh = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel_err(always(fresh), model(fresh)) <= TOL


def test_gpu_graph_runs_on_the_cpp_backend_and_exports_nchw():
    model, x = _model("vae")
    cm = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="cpp", pipeline=SUBPIXEL)
    assert _ops(cm.graph, "conv_nhwc")
    assert not _ops(cm.graph_for("cpp"), "conv_nhwc")
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= TOL


def test_a_backend_without_nhwc_convs_refuses_a_graph_that_has_them():
    """Handed the channels-last graph directly (not through compile()), the C++ backend says so
    instead of running its NCHW conv template on NHWC data."""
    from codesign.codegen import CodegenError
    from codesign.codegen.registry import build_program
    model, x = _model("convnext")
    cm = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="interpreter")
    with pytest.raises(CodegenError, match="conv_nhwc"):
        build_program("cpp", cm.graph, cm.state, cm.target)


def test_nchw_convs_computes_the_same_values():
    model, x = _model("convnext")
    cm = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="interpreter")
    back = nchw_convs(cm.graph)
    assert not _ops(back, "conv_nhwc") and len(_ops(back, "conv")) == len(_ops(cm.graph, "conv_nhwc"))
    state = {i.name: cm.state[i.name] for i in cm.graph.state_inputs}
    want = run_graph(cm.graph, [x], state)[0]
    assert torch.equal(run_graph(back, [x], state)[0], want)


def test_compile_is_deterministic():
    model, x = _model("vae")
    a = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton")
    b = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton")
    assert print_graph(a.graph) == print_graph(b.graph)
    assert a.program("triton").source == b.program("triton").source


def test_weights_are_stored_channels_last_once_and_follow_updates():
    model, x = _model("resnet")
    cm = codesign.compile(model, (x,), target=H200_STRUCTURAL, backend="triton")
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= TOL
    program = cm.program("triton")
    assert program.nhwc_weights == {"c1.weight", "c2.weight"}
    bound = program._state_on(x.device)["c1.weight"]
    assert bound.is_contiguous(memory_format=torch.channels_last) and not bound.is_contiguous()
    with torch.no_grad():
        model.c1.weight.mul_(-2.0)  # a live update: the next call sees it, as eager does
        assert rel_err(cm(x), model(x)) <= TOL


def test_conv_nhwc_reference_is_conv_on_permuted_data():
    text = """graph @g(%x: f32[2,9,7,4], %w: f32[6,2,3,3] param, %b: f32[6] param) -> (f32[2,4,4,6]) {
  %y = conv_nhwc(%x, %w, %b) {dilation = [2, 1], groups = 2, padding = [1, 1], stride = [2, 2]} : f32[2,4,4,6]
  return %y
}"""
    graph = parse_graph(text)
    gen = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(2, 9, 7, 4, generator=gen), torch.randn(6, 2, 3, 3, generator=gen), torch.randn(6, generator=gen)
    got = run_graph(graph, [x], {"w": w, "b": b})[0]
    want = F.conv2d(x.permute(0, 3, 1, 2), w, b, stride=2, padding=1, dilation=(2, 1), groups=2).permute(0, 2, 3, 1)
    assert got.is_contiguous() and torch.allclose(got, want, atol=1e-6)
    with pytest.raises(VerifyError, match="conv: 4 input channels do not match weight"):
        verify(parse_graph(text.replace("f32[6,2,3,3]", "f32[6,3,3,3]")))


def test_rewrite_is_exact_through_pad_batch_norm_broadcasts_and_permutes():
    """Every rule at once, in the interpreter: a zero pad and an eval batch norm between the
    convs run on NHWC rows, a broadcast scale, a residual, the model's own permutes."""
    graph = parse_graph("""graph @g(%x: f32[2,4,5,5], %w1: f32[6,4,3,3] param, %w2: f32[6,6,3,3] param, %m: f32[6], %v: f32[6], %s: f32[6,1,1], %k: f32[1,5,5,6]) -> (f32[2,6,3,3], f32[2,6,5,5]) {
  %c1 = conv(%x, %w1) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]} : f32[2,6,5,5]
  %n = batch_norm(%c1, %m, %v) {eps = 1e-05} : f32[2,6,5,5]
  %t = permute(%n) {perm = [0, 2, 3, 1]} : f32[2,5,5,6]
  %u = mul(%t, %k) : f32[2,5,5,6]
  %b = permute(%u) {perm = [0, 3, 1, 2]} : f32[2,6,5,5]
  %a = add(%b, %c1) : f32[2,6,5,5]
  %q = mul(%a, %s) : f32[2,6,5,5]
  %p = pad(%q) {pads = [0, 0, 0, 0, 1, 0, 0, 1], value = 0.0} : f32[2,6,6,6]
  %c2 = conv(%p, %w2) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [2, 2]} : f32[2,6,2,2]
  %r = relu(%c2) : f32[2,6,2,2]
  %o = pad(%r) {pads = [0, 0, 0, 0, 0, 1, 1, 0], value = 0.0} : f32[2,6,3,3]
  return %o, %a
}""")
    ctx = PassContext(target=H200_STRUCTURAL)
    out = PassManager("channels-last").run(graph, ctx)
    assert len(_ops(out, "conv_nhwc")) == 2 and not _ops(out, "conv")
    assert [tuple(p.attrs["perm"]) for p in _ops(out, "permute")].count((0, 3, 1, 2)) == 2  # the outputs only
    gen = torch.Generator().manual_seed(5)
    inputs = [torch.randn(i.type.shape, generator=gen) for i in graph.runtime_inputs]
    state = {i.name: torch.randn(i.type.shape, generator=gen) for i in graph.state_inputs}
    index = [i.name for i in graph.runtime_inputs].index("v")
    inputs[index] = inputs[index].abs() + 0.5  # a variance
    for got, want in zip(run_graph(out, inputs, state), run_graph(graph, inputs, state)):
        assert rel_err(got, want) <= TOL


def test_layout_free_ops_are_read_off_their_structure():
    graph = parse_graph("""graph @g(%x: f32[2,4,3,3], %m: f32[4], %v: f32[4], %s: f32[4,1,1]) -> (f32[2,4,3,3], f32[2,4,3,3]) {
  %a = mul(%x, %s) : f32[2,4,3,3]
  %n = batch_norm(%a, %m, %v) {eps = 1e-05} : f32[2,4,3,3]
  return %a, %n
}""")
    types = graph.types()
    a, n = graph.nodes
    assert is_layout_free(a, types)
    assert not is_layout_free(n, types)  # per-channel statistics read at dim 1


def test_pass_options_are_checked():
    with pytest.raises(PipelineError, match="when='sometimes' is not one of auto, always, never"):
        parse_pipeline("channels-last{when=sometimes}")
    graph = parse_graph("""graph @g(%x: f32[1,4,5,5], %w: f32[4,4,3,3] param) -> (f32[1,4,3,3]) {
  %y = conv(%x, %w) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]} : f32[1,4,3,3]
  return %y
}""")
    ctx = PassContext()
    out = PassManager("channels-last").run(graph, ctx)  # auto without a target: nothing to decide for
    assert print_graph(out) == print_graph(graph)
    assert "no target" in list(ctx.ledger)[0].reason
    ctx = PassContext(target=H200_STRUCTURAL)
    out = PassManager("channels-last").run(graph, ctx)  # a lone conv: only conversions around it
    assert print_graph(out) == print_graph(graph) and "alone in its NHWC region" in list(ctx.ledger)[0].reason
    out = PassManager("channels-last{when=always}").run(graph, ctx)
    assert [n.op for n in out.nodes] == ["permute", "conv_nhwc", "permute"]


class VaeResnetStack(nn.Module):
    """Decoder resnet blocks as diffusers writes them: GroupNorm, SiLU, conv, GroupNorm, SiLU,
    conv, residual add; the residual stream ties the second convs into one NHWC region."""

    def __init__(self, c: int, blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleList([nn.GroupNorm(8, c), nn.Conv2d(c, c, 3, padding=1),
                                                   nn.GroupNorm(8, c), nn.Conv2d(c, c, 3, padding=1)])
                                    for _ in range(blocks))

    def forward(self, x):
        for n1, c1, n2, c2 in self.blocks:
            x = x + c2(F.silu(n2(c1(F.silu(n1(x))))))
        return x


class ResNetStack(nn.Module):
    def __init__(self, c: int, blocks: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(ResNetBlock(c) for _ in range(blocks))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _layout_decisions(model: nn.Module, shape) -> tuple[list, list]:
    """(rewritten, kept) ledger entries of channels-last under auto on h200 (priced), the graph
    captured at a real size on the meta device (nothing runs)."""
    graph = codesign.capture(model.eval(), (torch.empty(shape, device="meta", dtype=torch.bfloat16),)).graph
    ctx = PassContext(target=load_target("h200"))
    PassManager("canonicalize,channels-last").run(graph, ctx)
    ds = [d for d in ctx.ledger if d.pass_name == "channels-last"]
    return [d for d in ds if d.choice == "nhwc"], [d for d in ds if d.choice == "kept"]


def test_priced_policy_keeps_a_groupnorm_region_whose_conversions_cost_more_than_it_gains():
    """At SD-VAE decoder sizes every GroupNorm reads NCHW, so the residual stream's region pays
    a conversion on both sides of every norm: the predicted conversions outweigh the library's
    NHWC gain (the H200 A/B measured the same: NHWC 23.8 ms vs NCHW 20.2 ms), and all convs stay
    NCHW, each ledgered with both figures."""
    rewritten, kept = _layout_decisions(VaeResnetStack(128).to(torch.bfloat16).to("meta"), (1, 128, 256, 256))
    assert not rewritten and len(kept) == 4
    priced = [d for d in kept if "would gain" in d.reason]
    assert priced and all(d.data["gain"] < d.data["time_conversions"] for d in priced)
    assert all(d.data["gain"] > 0 for d in priced)  # NHWC convs are faster; the conversions are not free


def test_priced_policy_rewrites_a_batchnorm_chain_whose_conversions_are_at_its_edges():
    """BatchNorm runs on NHWC rows, so a ResNet stack converts only at its input and output:
    the library's gain over six convs outweighs two conversions, and the region runs NHWC."""
    model = ResNetStack(64).to(torch.bfloat16)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.fill_(1.0)
    rewritten, kept = _layout_decisions(model.to("meta"), (16, 64, 56, 56))
    assert len(rewritten) == 6 and not kept
    assert all(d.data["time_nchw"] > d.data["time_nhwc"] for d in rewritten)
