"""Kernel features of convolutions and pooling, their pricing, and CUDA-graph program time."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from codesign import frontend
from codesign.calibrate.profile import KernelTime, ProgramTime
from codesign.calibrate.measure import RawData
from codesign.calibrate.validate import validate
from codesign.cost.features import KernelFeatures, class_chain
from codesign.cost.model import CostModel, KernelCost, calibrated_time, combine_host, program_time
from codesign.ir.kernels import kernels
from codesign.targets import load_target


def _features(module: nn.Module, *shape: int) -> list[KernelFeatures]:
    captured = frontend.capture(module.eval(), (torch.randn(*shape),))
    graph = captured.graph
    model, types = CostModel(load_target("cpu-host")), graph.types()
    return [model.features(k, types) for k in kernels(graph)]


@pytest.mark.parametrize("conv, gemm, im2col", [
    # 3x3, padding 1: per image a [16, 8*9] x [8*9, 10*10] product, im2col of 72 x 100 floats
    (nn.Conv2d(8, 16, 3, padding=1), (2, 16, 100, 72), 2 * 72 * 100 * 4),
    # 1x1, unit stride, no padding: the input is the matrix already
    (nn.Conv2d(8, 16, 1), (2, 16, 100, 8), 0),
    # a strided 1x1 gathers every other pixel: it builds columns
    (nn.Conv2d(8, 16, 1, stride=2), (2, 16, 25, 8), 2 * 8 * 25 * 4),
    # grouped: one product per image and group, K = channels per group x taps
    (nn.Conv2d(8, 16, 3, padding=1, groups=4), (8, 4, 100, 18), 8 * 18 * 100 * 4),
])
def test_a_conv_is_priced_as_the_gemm_it_runs(conv, gemm, im2col):
    (f,) = _features(conv, 2, 8, 10, 10)
    assert f.template == "conv" and f.gemm == gemm and f.im2col_bytes == im2col
    batch, m, n, k = gemm
    assert f.matrix_flops == 2 * batch * m * n * k


def test_depthwise_conv_and_pooling_have_classes_of_their_own():
    (dw,) = _features(nn.Conv2d(8, 8, 3, padding=1, groups=8), 1, 8, 12, 12)
    assert dw.template == "depthwise" and dw.gemm is None and dw.im2col_bytes == 0
    (pool,) = _features(nn.MaxPool2d(2), 1, 8, 12, 12)
    assert pool.template == "pool"
    (norm,) = _features(nn.GroupNorm(2, 8), 1, 8, 12, 12)
    assert norm.template == "group_norm"
    assert class_chain("depthwise") == ("depthwise", "conv", "gemm")
    assert class_chain("pool") == ("pool", "row", "vector")


def test_features_round_trip_with_im2col_bytes():
    (f,) = _features(nn.Conv2d(4, 8, 3, padding=1), 1, 4, 6, 6)
    again = KernelFeatures.from_dict(json.loads(json.dumps(f.as_dict())))
    assert again == f and again.im2col_bytes > 0


def test_im2col_costs_time_and_missing_classes_fall_back():
    target = load_target("cpu-host")
    base = target.calibration.efficiency
    eff = base.model_copy(update={"im2col": 0.05, "matrix": {**base.matrix, "conv/fp32": 0.5}})
    (f,) = _features(nn.Conv2d(32, 32, 3, padding=1), 1, 32, 24, 24)
    t = calibrated_time(f, target, eff)[0]
    t_free = calibrated_time(dataclasses.replace(f, im2col_bytes=0), target, eff)[0]
    assert t > t_free
    # a calibration without pool figures prices a pool as a row kernel (the fallback chain)
    def without_pool(table: dict) -> dict:
        return {k: v for k, v in table.items() if not k.startswith("pool")}

    memory = {**without_pool(eff.memory), "row": 0.05, "vector": 0.5}
    eff = eff.model_copy(update={"memory": memory, "fixed": {},
                                 "matrix": without_pool(eff.matrix)})
    pool = KernelFeatures("pool", "f32", 0, 1 << 20, 0, 1 << 24)
    assert calibrated_time(pool, target, eff)[0] == pytest.approx(
        calibrated_time(dataclasses.replace(pool, template="row"), target, eff)[0])


def test_a_calibration_without_conv_figures_prices_no_conv_as_a_tiled_gemm():
    # a GPU calibration without conv figures (its backend runs convs through cuDNN): the conv's
    # GEMM shape and im2col bytes must not buy it a generated GEMM's wave quantisation
    target = load_target("h200")
    base = target.calibration.efficiency
    eff = base.model_copy(update={"im2col": 0.05, "nchw_library_conv": None, "matrix": {
        k: v for k, v in base.matrix.items() if k.split("/")[0] not in ("conv", "depthwise")}})
    (f,) = _features(nn.Conv2d(4, 16, 3, padding=1), 1, 4, 5, 7)
    assert f.gemm is not None and f.im2col_bytes > 0
    bare = dataclasses.replace(f, gemm=None, im2col_bytes=0)
    assert calibrated_time(f, target, eff) == calibrated_time(bare, target, eff)
    with_conv = eff.model_copy(update={"matrix": {**eff.matrix, "conv/fp32": 0.5}})
    assert calibrated_time(f, target, with_conv)[0] != calibrated_time(bare, target, with_conv)[0]


def _stub(time: float, host: float) -> KernelCost:
    return KernelCost("k", "k", 1, {}, {}, 0.0, {}, 0.0, time, "compute", 0.0, host=host)


def test_a_cuda_graph_program_pays_one_replay_not_one_launch_per_kernel():
    eff = load_target("h200").calibration.efficiency
    assert eff.asynchronous_launch
    tiny = [_stub(1e-6, 2e-5) for _ in range(40)]  # host-bound launch by launch
    device = 40e-6
    assert program_time(tiny, eff) == pytest.approx(eff.host_per_call + 40 * 2e-5)
    assert program_time(tiny, eff, graphed=True) == pytest.approx(device + eff.host_per_call)
    assert combine_host(device, 40 * 2e-5, eff, graphed=True) < combine_host(device, 40 * 2e-5, eff)


def test_validation_prices_a_graphed_program_as_a_replay():
    target = load_target("h200")
    f = KernelFeatures("vector", "bf16", 0, 1024, 0, 4096, arguments=2)
    kernel = KernelTime("p", "k0", "%k0", f, 2e-6)
    raw = RawData({"device_type": "cuda"}, (
        ProgramTime("launched", 1e-3, (kernel,) * 30),
        ProgramTime("graphed", 1e-3, (kernel,) * 30, graphed=True)))
    launched, graphed = validate(raw, target)["programs"]
    assert graphed["graphed"] and not launched["graphed"]
    assert graphed["predicted_seconds"] < launched["predicted_seconds"]
    assert ProgramTime.from_dict(raw.programs[1].as_dict()).graphed


def test_a_function_shared_by_layers_counts_once_per_launch():
    """The Triton wrapper defines a layer's kernels once for all layers, so the profiler names
    every layer's launch after the first kernel: a measurement then stands for several graph
    kernels, priced once each (it was once priced as one kernel for all layers' time)."""
    from codesign.calibrate.profile import launch_names

    class _Program:
        meta = {"kernels": [{"name": "mlp", "digest": "a"}, {"name": "norm", "digest": "b"},
                            {"name": "mlp_1", "digest": "a"}, {"name": "mlp_2", "digest": "a"}]}
    assert launch_names(_Program()) == {"mlp": "mlp", "norm": "norm", "mlp_1": "mlp", "mlp_2": "mlp"}
    target = load_target("h200")
    f = KernelFeatures("vector", "bf16", 0, 1 << 24, 0, 1 << 26, arguments=2)
    once, thrice = KernelTime("p", "mlp", "%mlp", f, 1e-5), KernelTime("p", "mlp", "%mlp", f, 1e-5, launches=3)
    assert thrice.total_seconds == pytest.approx(3e-5)
    assert KernelTime.from_dict(json.loads(json.dumps(thrice.as_dict()))) == thrice
    assert "launches" not in once.as_dict()  # raw files without shared kernels read as before
    one, three = validate(RawData({"device_type": "cuda"}, (ProgramTime("one", 1e-3, (once,), graphed=True),
                                                            ProgramTime("three", 1e-3, (thrice,), graphed=True))),
                          target)["programs"]
    assert one["median_abs_error"] == three["median_abs_error"]  # per launch, the same kernel
    assert three["measured_kernel_seconds"] == pytest.approx(3 * one["measured_kernel_seconds"])
    host = target.calibration.efficiency.host_per_call
    assert three["predicted_seconds"] - host == pytest.approx(3 * (one["predicted_seconds"] - host))


def test_programs_are_priced_as_graphs_on_a_gpu_only():
    from codesign.cost.model import replays_as_graph
    eff = load_target("h200").calibration.efficiency
    captured = frontend.capture(nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval(), (torch.randn(4, 8),))
    assert replays_as_graph(eff, kernels(captured.graph))
    cpu = load_target("cpu-host").calibration.efficiency
    assert not replays_as_graph(cpu, kernels(captured.graph))  # a CPU runs its kernels itself


def test_cpu_programs_fit_their_kernels_back_to_back_and_the_call():
    """CPU programs whose walls are 1.25x their kernels' sum plus 30 us a call: the fit finds
    both, and a CPU program's time is its kernels times the factor plus the host's share."""
    from codesign.calibrate.fit import cpu_program_costs
    f = KernelFeatures("vector", "f32", 0, 1024, 0, 4096, arguments=2)
    programs = []
    for case, n, seconds in (("a", 3, 1e-4), ("b", 9, 4e-5), ("c", 2, 2e-3), ("d", 20, 5e-6), ("e", 5, 1e-3)):
        kernels = tuple(KernelTime(case, f"k{i}", f"%k{i}", f, seconds) for i in range(n))
        programs.append(ProgramTime(case, 1.25 * n * seconds + 3e-5, kernels, launches=n))
    call, per_kernel, factor = cpu_program_costs(RawData({"device_type": "cpu"}, tuple(programs)))
    assert call == pytest.approx(3e-5, rel=1e-3) and factor == pytest.approx(1.25, rel=1e-3)
    assert per_kernel < 1e-8
    eff = load_target("cpu-host").calibration.efficiency
    assert not eff.asynchronous_launch and eff.in_sequence > 1.0
    costs = [_stub(1e-4, eff.host_per_launch) for _ in range(4)]
    assert program_time(costs, eff) == pytest.approx(
        4e-4 * eff.in_sequence + eff.host_per_call + 4 * eff.host_per_launch)
    unfactored = eff.model_copy(update={"in_sequence": None})
    assert program_time(costs, unfactored) == pytest.approx(4e-4 + eff.host_per_call + 4 * eff.host_per_launch)


def test_h200_prices_its_convs_as_the_library_runs_them_nchw_slower():
    """h200's calibration has library conv figures (fitted to convs timed in both layouts by
    benchmarks/conv_layouts.py): a conv is priced as cuDNN's, the NCHW one slower than its
    NHWC twin by the fitted factor and time, and a generated-conv figure would end that."""
    from codesign.cost.model import runs_in_library
    target = load_target("h200")
    eff = target.calibration.efficiency
    (f,) = _features(nn.Conv2d(64, 64, 3, padding=1), 8, 64, 56, 56)
    assert f.channels_first and runs_in_library(f, eff) and eff.nchw_library_conv > 1.0
    nhwc = dataclasses.replace(f, channels_first=False)
    t_nchw, _, parts = calibrated_time(f, target, eff)
    t_nhwc, _, parts_nhwc = calibrated_time(nhwc, target, eff)
    assert eff.nchw_library_conv_fixed > 0.0  # the library's layout transforms around an NCHW conv
    assert parts["fixed"] == pytest.approx(parts_nhwc["fixed"] + eff.nchw_library_conv_fixed)
    assert t_nchw - parts["fixed"] == pytest.approx((t_nhwc - parts_nhwc["fixed"]) * eff.nchw_library_conv)
    assert calibrated_time(f, target, eff) == calibrated_time(f, target, eff, vendor=True)
    generated = eff.model_copy(update={"matrix": {**eff.matrix, "conv/bf16": 0.5}})
    assert not runs_in_library(f, generated)


class _Permute(nn.Module):
    def __init__(self, *perm: int):
        super().__init__()
        self.perm = perm

    def forward(self, x):
        return x.permute(*self.perm).contiguous()


@pytest.mark.parametrize("shape, perm, share", [
    # NCHW -> NHWC with 3 channels: a block of 1,024 outputs reads 3 planes, each contiguously in
    # W — the sectors a contiguous read needs, give or take the planes' ends
    ((2, 3, 32, 32), (0, 2, 3, 1), 0.0),
    # NCHW -> NHWC with 64 channels: 16 pixels of 64 planes, 32 bytes of each: whole sectors
    ((2, 64, 16, 16), (0, 2, 3, 1), 0.0),
    # NCHW -> NHWC with 512 channels: 2 pixels of 512 planes, 8 bytes of each sector used
    ((1, 512, 8, 8), (0, 2, 3, 1), (512 - 128) / (1024 - 128)),
    # NHWC -> NCHW: 1,024 outputs of one channel, every one in another sector
    ((2, 32, 32, 64), (0, 3, 1, 2), 1.0),
    # a matrix transpose: a block is 4 output rows of 256, so 4 adjacent floats of each sector
    ((256, 128), (1, 0), (256 - 128) / (1024 - 128)),
    # ... and with rows longer than the block, a new sector at every output
    ((2048, 64), (1, 0), 1.0),
    # no transpose
    ((2, 3, 16, 16), (0, 1, 2, 3), 0.0),
])
def test_a_transpose_is_priced_by_the_lines_a_vector_of_outputs_reads(shape, perm, share):
    """Of the sectors a block of 1,024 consecutive outputs reads, those a contiguous read would
    not need (fp32: 128 sectors for 1,024 floats)."""
    captured = frontend.capture(_Permute(*perm).eval(), (torch.randn(*shape),))
    graph = captured.graph
    model, types = CostModel(load_target("cpu-host")), graph.types()
    (f,) = [model.features(k, types) for k in kernels(graph) if any(n.op == "permute" for n in k.nodes)] or [
        KernelFeatures("vector", "f32", 0, 0, 0, 0)]
    x_bytes = 4 * torch.Size(shape).numel()
    assert f.strided_bytes / x_bytes == pytest.approx(share, abs=0.005)
    target = load_target("h200")
    eff = target.calibration.efficiency
    plain = calibrated_time(dataclasses.replace(f, strided_bytes=0), target, eff)[0]
    priced = calibrated_time(f, target, eff)[0]
    assert priced > plain if share > 0 else priced == pytest.approx(plain, rel=1e-3)


def test_a_pixel_shuffle_reads_a_few_planes_contiguously():
    """Its map is floordiv / mod: the block is evaluated, not a stride. A block of 1,024 outputs
    (16 rows of 64) reads r = 2 planes, contiguous runs of 32 floats in each: no sector beyond
    those a contiguous read needs."""
    captured = frontend.capture(nn.PixelShuffle(2).eval(), (torch.randn(1, 16, 32, 32),))
    graph = captured.graph
    model, types = CostModel(load_target("cpu-host")), graph.types()
    (f,) = [model.features(k, types) for k in kernels(graph)]
    assert f.strided_bytes == 0
    nhwc = frontend.capture(_Permute(0, 2, 3, 1).eval(), (torch.randn(1, 256, 8, 8),)).graph
    (g,) = [model.features(k, nhwc.types()) for k in kernels(nhwc)]
    assert g.strided_bytes > 0  # while a 256-channel NHWC read of the same bytes is strided
