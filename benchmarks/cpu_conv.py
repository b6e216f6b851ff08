"""CPU benchmark of convolutional networks through the C++ backend against eager PyTorch.

Models (random weights, fp32, eval mode, batch 1), defined here with plain torch.nn
(torchvision does not import with this CPU torch) or built from a diffusers config:
  resnet18 / resnet50   torchvision's layouts (basic / bottleneck blocks, 2-2-2-2 / 3-4-6-3),
                        224x224 image
  convnext              ConvNeXt-T-style stage stack: depthwise 7x7, layer norm over
                        channels, 1x1 MLP (x4) with GELU, layer scale, residual; dims
                        96-192-384, depths 2-2-4, 112x112 image after a 2x2 stem
  mobilenetv2           MobileNetV2's inverted residuals (expand 1x1, depthwise 3x3,
                        project 1x1, ReLU6, residual where shapes allow), width 1.0, 160x160
  sd-vae-decoder        diffusers AutoencoderKL with Stable Diffusion's decoder config
                        (128-256-512-512, 2 layers a block, 32 groups), latent 4x8x8 → 64x64
  unet2d                diffusers UNet2DModel (32-64-64, attention in the lower blocks), 32x32
Each is compiled with `codesign.compile(model, inputs, target="cpu-host")` (the real pass
pipeline) and run through the generated C++ (`CompiledModule.program("cpp")`; fp32 GEMM
tiles on OpenBLAS sgemm from scipy-openblas32 where its kernels fit the CPU, else on the
-march=native hand GEMM: then BLAS forced is timed too, the A/B behind that choice). Correctness first: relative error against
eager in float64 on fresh random inputs. Timings: eager and codesign interleaved in one
process, the same thread count (`torch.get_num_threads()`), median of rounds; the load
average is recorded, since the box is shared. OpenMP threads wait passively.

Run: .venv/bin/python benchmarks/cpu_conv.py [--quick] [--only NAME,...]
Writes benchmarks/results/cpu_conv.json and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codesign  # noqa: E402
from codesign.codegen.cpp.build import compiler, compiler_version  # noqa: E402


# -- ResNet ---------------------------------------------------------------------------------------
def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), _bn(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), _bn(c)
        self.down = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), _bn(c))
                     if stride != 1 or cin != c else None)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, c, 1, bias=False), _bn(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, stride, 1, bias=False), _bn(c)
        self.conv3, self.bn3 = nn.Conv2d(c, 4 * c, 1, bias=False), _bn(4 * c)
        self.down = (nn.Sequential(nn.Conv2d(cin, 4 * c, 1, stride, bias=False), _bn(4 * c))
                     if stride != 1 or cin != 4 * c else None)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
    def __init__(self, block, layers: tuple[int, ...], classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _bn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, n in enumerate(layers):
            c = 64 * 2 ** i
            for j in range(n):
                stages.append(block(cin, c, 2 if j == 0 and i > 0 else 1))
                cin = c * block.expansion
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# -- ConvNeXt -------------------------------------------------------------------------------------
class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's downsampling norm)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.up, self.down = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.down(nn.functional.gelu(self.up(y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(96, 192, 384), depths=(2, 2, 4), classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), ChannelNorm(dims[0])]
        for i, (c, d) in enumerate(zip(dims, depths)):
            if i:
                layers += [ChannelNorm(dims[i - 1]), nn.Conv2d(dims[i - 1], c, 2, 2)]
            layers += [ConvNeXtBlock(c) for _ in range(d)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


# -- MobileNetV2 ----------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), _bn(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))  # (expand, channels, repeats, first stride)

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


# -- diffusers ------------------------------------------------------------------------------------
class VaeDecode(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


class UNetSample(nn.Module):
    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep).sample


def sd_vae_decoder() -> nn.Module:
    import diffusers
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, norm_num_groups=32, sample_size=64)
    return VaeDecode(vae)


def unet2d() -> nn.Module:
    import diffusers
    unet = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64, 64),
        norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    return UNetSample(unet)


def _randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Eval batch norms with non-trivial statistics (fresh modules have mean 0, var 1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


MODELS: dict[str, tuple[str, Callable[[], nn.Module], Callable[[torch.Generator], tuple]]] = {
    "resnet18": ("ResNet-18, 224x224, batch 1", lambda: ResNet(Basic, (2, 2, 2, 2)),
                 lambda g: (torch.randn(1, 3, 224, 224, generator=g),)),
    "resnet50": ("ResNet-50, 224x224, batch 1", lambda: ResNet(Bottleneck, (3, 4, 6, 3)),
                 lambda g: (torch.randn(1, 3, 224, 224, generator=g),)),
    "convnext": ("ConvNeXt-style, dims 96-192-384, depths 2-2-4, 112x112, batch 1", ConvNeXt,
                 lambda g: (torch.randn(1, 3, 112, 112, generator=g),)),
    "mobilenetv2": ("MobileNetV2 inverted residuals, width 1.0, 160x160, batch 1", MobileNetV2,
                    lambda g: (torch.randn(1, 3, 160, 160, generator=g),)),
    "sd-vae-decoder": ("diffusers AutoencoderKL, SD decoder config, latent 4x8x8 -> 64x64", sd_vae_decoder,
                       lambda g: (torch.randn(1, 4, 8, 8, generator=g),)),
    "unet2d": ("diffusers UNet2DModel 32-64-64 with attention, 32x32, batch 1", unet2d,
               lambda g: (torch.randn(1, 3, 32, 32, generator=g), torch.tensor([10]))),
}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, measured round-robin after one warm-up call each."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return times


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run(name: str, rounds: int) -> dict:
    what, build, make_inputs = MODELS[name]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build().eval()
    _randomize_norms(model, gen)
    inputs = make_inputs(gen)
    start = time.perf_counter()
    cm = codesign.compile(model, inputs, target="cpu-host")
    program = cm.program("cpp")
    compile_s = time.perf_counter() - start
    fresh = make_inputs(torch.Generator().manual_seed(1))
    fns = {"eager": lambda: model(*inputs), "codesign-cpp": lambda: program(*inputs)}
    forced = None
    if program.blas is not None and program.gemm != program.blas:  # the A/B behind `build.blas_fits_cpu`
        forced = codesign.compile(model, inputs, target="cpu-host",
                                  backend_options={"cpp": {"blas": True}}).program("cpp")
        fns["codesign-cpp-blas-forced"] = lambda: forced(*inputs)
    with torch.no_grad():
        err = rel_err(cm(*fresh), model(*fresh))
        load_before = os.getloadavg()
        times = interleaved(fns, rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    source = program.source
    gemm_choice = None
    if forced is not None:
        gemm_choice = {"chosen": program.gemm, "blas_kernels": program.blas_kernels,
                       "blas_forced_speedup_vs_eager": med["eager"] / med["codesign-cpp-blas-forced"]}
    return {"what": what, "rel_err_vs_eager": err, "gemm": program.gemm, "gemm_choice": gemm_choice,
            "kernels": program.code.kernel_count, "conv_as_gemm": source.count("\n  // conv as GEMM:"),
            "conv_depthwise": source.count("\n  // depthwise conv:"),
            "fused_epilogues": source.count("fused epilogue on each"), "compile_s": compile_s,
            "load_average": [load_before, os.getloadavg()], "seconds_median": med,
            "seconds_all": times, "speedup_vs_eager": med["eager"] / med["codesign-cpp"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_conv.json"))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(MODELS)
    rounds = 5 if args.quick else 15
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_at_start": os.getloadavg(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "codesign": codesign.__version__, "compiler": compiler_version(compiler())},
        "baseline": "eager PyTorch (oneDNN convolutions, MKL GEMMs), same process and thread count",
        "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
        "models": {}}
    print(f"{'model':<16}{'eager':>11}{'codesign':>11}{'speedup':>9}{'rel err':>10}{'load':>7}")
    for name in names:
        r = run(name, rounds)
        results["models"][name] = r
        s = r["seconds_median"]
        forced = (f"   (BLAS {r['gemm_choice']['blas_kernels']} forced: "
                  f"{r['gemm_choice']['blas_forced_speedup_vs_eager']:.2f}x)") if r["gemm_choice"] else ""
        print(f"{name:<16}{s['eager'] * 1e3:>8.1f} ms{s['codesign-cpp'] * 1e3:>8.1f} ms{r['speedup_vs_eager']:>8.2f}x"
              f"{r['rel_err_vs_eager']:>10.1e}{r['load_average'][1][0]:>7.1f}{forced}", flush=True)
    speedups = [r["speedup_vs_eager"] for r in results["models"].values()]
    results["geomean_speedup_vs_eager"] = math.exp(sum(map(math.log, speedups)) / len(speedups))
    results["load_average_at_end"] = os.getloadavg()
    print(f"geometric mean {results['geomean_speedup_vs_eager']:.2f}x eager")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
