"""C++ convolution against eager PyTorch: im2col + GEMM, 1x1 as a GEMM, depthwise, loops.

Each model holds several conv blocks — conv (+ bias) → eval batch norm → relu → + a
residual input — over strides, padding, dilation, groups, 1x1 and depthwise kernels,
1-D / 2-D / 3-D, and inputs that are an inlined prologue (relu, nearest upsample); the
fusion pass puts each block's pointwise tail into its conv's kernel, where it runs on each
output tile. Compiled through `codesign.compile` for cpu-host with the C++ backend pinned,
with OpenBLAS (scipy-openblas32) and with the hand GEMM (`blas=False`), and compared with
eager on fresh random inputs (fp32 relative error <= 1e-5).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import codesign
from codesign.codegen.cpp.build import BLAS_NAME, blas_fits_cpu, find_blas, openblas_core
from codesign.codegen.cpp.conv import ConvLowering, conv_lowering

HAVE_BLAS = find_blas() is not None
BLAS = [pytest.param(True, marks=pytest.mark.skipif(not HAVE_BLAS, reason="no scipy-openblas32")), False]
TOL = 1e-5


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


class Block(nn.Module):
    """conv → batch norm (eval, random statistics) → relu → + residual; `pre` runs on the
    conv's input first (an elementwise prologue or an upsample)."""

    def __init__(self, nd: int, cin: int, cout: int, k, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 pre: str | None = None):
        super().__init__()
        self.conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1](cin, cout, k, stride, padding, dilation, groups, bias)
        self.bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[nd - 1](cout)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.bn.weight.data.uniform_(0.5, 1.5)
        self.bn.bias.data.uniform_(-0.2, 0.2)
        self.pre = pre

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.pre == "relu":
            x = torch.relu(x)
        elif self.pre == "upsample":
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.relu(self.bn(self.conv(x))) + residual


class Blocks(nn.Module):
    """Independent blocks, each on its own input and residual (one compile for all)."""

    def __init__(self, blocks: list[Block]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(b(args[2 * i], args[2 * i + 1]) for i, b in enumerate(self.blocks))


# (block, input shape, expected lowering)
CASES = {
    "gemm-2d": [
        (lambda: Block(2, 8, 16, 3, padding=1), (2, 8, 40, 36), ConvLowering.gemm),  # > 1 column block
        (lambda: Block(2, 6, 10, 3, stride=2, padding=1), (1, 6, 15, 17), ConvLowering.gemm),
        (lambda: Block(2, 4, 8, 3, padding=2, dilation=2, bias=False), (2, 4, 9, 11), ConvLowering.gemm),
        (lambda: Block(2, 6, 8, (5, 3), stride=(2, 1), padding=(2, 0), groups=2), (2, 6, 13, 9), ConvLowering.gemm),
        (lambda: Block(2, 64, 160, 3, padding=1), (1, 64, 7, 7), ConvLowering.gemm),  # rows split across threads
        (lambda: Block(2, 3, 8, 7, stride=2, padding=3), (1, 3, 32, 30), ConvLowering.gemm),  # a ResNet stem
    ],
    "pointwise-depthwise": [
        (lambda: Block(2, 24, 40, 1), (2, 24, 14, 15), ConvLowering.pointwise),
        (lambda: Block(2, 16, 24, 1, groups=4, bias=False), (1, 16, 9, 9), ConvLowering.pointwise),
        (lambda: Block(2, 16, 24, 1, stride=2), (1, 16, 11, 10), ConvLowering.gemm),  # a ResNet downsample
        (lambda: Block(2, 12, 12, 3, padding=1, groups=12), (2, 12, 17, 19), ConvLowering.depthwise),
        (lambda: Block(2, 8, 16, 3, stride=2, padding=1, groups=8), (1, 8, 15, 16), ConvLowering.depthwise),
        (lambda: Block(2, 16, 16, 7, padding=3, groups=16), (1, 16, 14, 14), ConvLowering.depthwise),  # ConvNeXt
        (lambda: Block(2, 8, 8, 3, padding=2, dilation=2, groups=8, bias=False), (1, 8, 9, 8), ConvLowering.depthwise),
    ],
    "nd-prologue": [
        (lambda: Block(1, 6, 10, 3, stride=2, padding=1), (2, 6, 33), ConvLowering.gemm),
        (lambda: Block(1, 8, 8, 5, padding=2, groups=8), (2, 8, 21), ConvLowering.depthwise),
        (lambda: Block(3, 4, 6, 3, padding=1), (1, 4, 5, 6, 7), ConvLowering.gemm),
        (lambda: Block(3, 6, 6, 3, padding=(1, 1, 1), groups=6), (1, 6, 4, 5, 6), ConvLowering.depthwise),
        (lambda: Block(2, 8, 12, 3, padding=1, pre="relu"), (2, 8, 10, 12), ConvLowering.gemm),
        (lambda: Block(2, 8, 8, 1, pre="relu"), (1, 8, 10, 12), ConvLowering.pointwise),
        (lambda: Block(2, 6, 6, 3, padding=1, groups=6, pre="relu"), (1, 6, 9, 9), ConvLowering.depthwise),
        (lambda: Block(2, 6, 8, 3, padding=1, pre="upsample"), (1, 6, 6, 7), ConvLowering.gemm),
    ],
}


def _model(name: str) -> tuple[Blocks, tuple[torch.Tensor, ...], list[ConvLowering]]:
    torch.manual_seed(0)
    blocks, inputs, want = [], [], []
    for make, shape, lowering in CASES[name]:
        block = make()
        blocks.append(block)
        x = torch.randn(shape)
        with torch.no_grad():
            residual = torch.randn(block.eval()(x, torch.zeros(())).shape)
        inputs += [x, residual]
        want.append(lowering)
    return Blocks(blocks).eval(), tuple(inputs), want


_COMPILED: dict[tuple[str, bool], tuple] = {}


def compiled(name: str, blas: bool):
    if (name, blas) not in _COMPILED:
        model, inputs, want = _model(name)
        cm = codesign.compile(model, inputs, target="cpu-host", backend="cpp",
                              backend_options={"cpp": {"blas": blas}})
        _COMPILED[name, blas] = (model, inputs, want, cm)
    return _COMPILED[name, blas]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cpp-cache-conv"))


@pytest.mark.parametrize("blas", BLAS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_blocks_match_eager_on_fresh_inputs(name, blas):
    model, inputs, want, cm = compiled(name, blas)
    graph = cm.graph_for("cpp")
    types = graph.types()
    convs = [n for n in graph.nodes if n.op == "conv"]
    assert [conv_lowering(n, types) for n in convs] == want
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):  # fresh inputs, twice (the per-thread scratch is reused)
        fresh = tuple(torch.randn(t.shape, generator=gen) for t in inputs)
        with torch.no_grad():
            ref = model(*fresh)
        got = cm(*fresh)
        for i, (g, r) in enumerate(zip(got, ref)):
            assert rel_err(g, r) <= TOL, f"{name} block {i} ({want[i].value}): relative error {rel_err(g, r):.2e}"
    program = cm.program("cpp")
    assert (program.blas is not None) == blas
    if blas:  # blas=True runs BLAS whatever its kernels
        assert program.gemm == BLAS_NAME


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_conv_kernel_runs_its_epilogue_on_the_tile(name):
    """Every block's batch norm, relu and residual add are computed on the conv's output
    tile (no separate loop reads the conv's buffer), and the 1x1 convs whose input has a
    buffer read it in place."""
    model, inputs, want, cm = compiled(name, HAVE_BLAS)
    source = cm.program("cpp").source
    blocked = sum(w is not ConvLowering.loops for w in want)
    assert source.count("fused epilogue on each tile") + source.count("fused epilogue on each plane") == blocked
    assert source.count("\n  // conv as GEMM:") == sum(w in (ConvLowering.gemm, ConvLowering.pointwise) for w in want)
    assert source.count("\n  // depthwise conv:") == want.count(ConvLowering.depthwise)
    if name == "pointwise-depthwise":
        assert source.count("the input read in place") == 2


def test_other_dtypes_keep_the_direct_loops():
    """f64 convs are lowered as loops from the structure (the GEMM template is fp32)."""
    torch.manual_seed(1)
    model = Block(2, 4, 6, 3, stride=2, padding=1, groups=2).double().eval()
    x, residual = torch.randn(1, 4, 9, 8, dtype=torch.float64), torch.randn(1, 6, 5, 4, dtype=torch.float64)
    cm = codesign.compile(model, (x, residual), target="cpu-host", backend="cpp")
    graph = cm.graph_for("cpp")
    assert [conv_lowering(n, graph.types()) for n in graph.nodes if n.op == "conv"] == [ConvLowering.loops]
    x2, r2 = torch.randn_like(x), torch.randn_like(residual)
    with torch.no_grad():
        assert rel_err(cm(x2, r2), model(x2, r2)) <= 1e-12
    assert "\n  // conv as GEMM:" not in cm.program("cpp").source


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("groups", [1, 4])
def test_half_convs_run_widened_to_f32_as_close_as_eager(dtype, groups):
    """A bf16 / f16 conv block computes in f32 through the blocked lowerings (GEMM, or the
    depthwise kernel), not the direct loops: against the f32 model, as close as eager in
    that dtype is; and an in-place update of the weight is seen (its cast runs each call)."""
    from codesign.codegen.cpp.conv import f32_convs
    torch.manual_seed(2)
    model32 = Block(2, 4, 8 if groups == 1 else 4, 3, stride=1, padding=1, groups=groups).eval()
    model = Block(2, 4, 8 if groups == 1 else 4, 3, stride=1, padding=1, groups=groups).eval()
    model.load_state_dict(model32.state_dict())
    model = model.to(dtype)
    x, residual = torch.randn(1, 4, 12, 10), torch.randn(1, 8 if groups == 1 else 4, 12, 10)
    cm = codesign.compile(model, (x.to(dtype), residual.to(dtype)), target="cpu-host", backend="cpp")
    widened = f32_convs(cm.graph_for("cpp"))
    lowerings = [conv_lowering(n, widened.types()) for n in widened.nodes if n.op == "conv"]
    assert lowerings and ConvLowering.loops not in lowerings, lowerings
    x2, r2 = torch.randn_like(x), torch.randn_like(residual)
    with torch.no_grad():
        want = model32(x2, r2)
        ours = rel_err(cm(x2.to(dtype), r2.to(dtype)), want)
        eager = rel_err(model(x2.to(dtype), r2.to(dtype)), want)
        assert ours <= 1.5 * eager + 1e-3, (ours, eager)
        cm.state[next(k for k in cm.state if k.endswith("conv.weight"))].mul_(-1)  # in place, as training does
        model.conv.weight.data.copy_(cm.state[next(k for k in cm.state if k.endswith("conv.weight"))])
        model32.conv.weight.data.mul_(-1)
        assert rel_err(cm(x2.to(dtype), r2.to(dtype)), model32(x2, r2)) <= 1.5 * eager + 1e-3
    assert "\n  // conv as GEMM:" in cm.program("cpp").source or "depthwise conv" in cm.program("cpp").source


class UpConv(nn.Module):
    """nearest x2 → conv 3x3 (+ relu), which `subpixel-conv{when=always}` turns into a
    sub-pixel conv read through a pixel shuffle and margin slices."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


SUBPIXEL = "canonicalize,subpixel-conv{when=always},dce,fuse,tile,place{time_limit=2 deterministic=true}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subpixel_conv_through_its_pixel_shuffle(dtype):
    """fp32: each GEMM tile stored through the shuffle and slices (at their inverse map);
    f64 (loops): the conv computed at the shuffle's points; neither has a buffer."""
    torch.manual_seed(2)
    model = UpConv(6, 5).to(dtype).eval()
    x = torch.randn(2, 6, 7, 9, dtype=dtype)
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp", pipeline=SUBPIXEL)
    assert [d.choice for d in cm.ledger if d.pass_name == "subpixel-conv"] == ["rewritten"]
    x2 = torch.randn_like(x)
    with torch.no_grad():
        assert rel_err(cm(x2), model(x2)) <= (TOL if dtype == torch.float32 else 1e-12)
    source = cm.program("cpp").source
    if dtype == torch.float32:
        assert "\n  // conv as GEMM:" in source and "each tile stored through" in source
    else:
        assert "stored through" in source and "\n  // conv as GEMM:" not in source


def test_blas_runs_where_its_kernels_fit_the_cpu():
    """AVX2 OpenBLAS kernels on an AVX-512 CPU lose to the -march=native hand GEMM."""
    assert blas_fits_cpu("SkylakeX") and blas_fits_cpu(None)
    assert blas_fits_cpu("Haswell") == (openblas_core() is None)
