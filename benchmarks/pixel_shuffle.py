"""The upsample + conv → sub-pixel conv + pixel shuffle rewrite (issue 14), measured.

Cases, each through eager PyTorch, torch.compile and codesign with and without the rewrite
(`subpixel-conv{when=always}` in the pipeline, or left out), in the same run:
  1. the up blocks of an SD-VAE decoder at 720p: nearest ×2 then a 3×3 conv, C=512 at
     90×160, C=512 at 180×320, C=256 at 360×640 (the low-resolution input; `--shrink N`
     divides the sizes, for the CPU);
  2. the whole `diffusers` AutoencoderKL decoder (SD-VAE configuration, random weights,
     nothing downloaded) at latent 4×90×160 (720p; `--latent H W` to change);
  3. the same decoder's predicted time on `mobile-a18` from the cost model (no hardware
     needed): the default pipeline (the pass decides per conv), all rewritten, none.
Every codesign result is first checked against eager in float64 (relative error), on fresh
random inputs. FLOPs of the up-convs before and after the rewrite come from the graphs.

On a GPU: bf16, target h200, the Triton backend, `triton.testing.do_bench` medians.
On the CPU: fp32, target cpu-host, the C++ backend, interleaved medians (the box is shared:
the load average is recorded). The decoder in C++ takes minutes at 720p; use a small latent.

Run:  python benchmarks/pixel_shuffle.py                                  # GPU, writes pixel_shuffle.json
      python benchmarks/pixel_shuffle.py --device cpu --shrink 10 --latent 8 12   # pixel_shuffle_cpu.json
Needs `pip install diffusers` for case 2 (`--no-decoder` skips it).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codesign  # noqa: E402
from codesign.analysis import node_flops  # noqa: E402
from codesign.compiler import COMPILE_PIPELINE  # noqa: E402
from codesign.cost.model import CostModel  # noqa: E402
from codesign.targets import load_target  # noqa: E402

UP_BLOCKS = ((512, 90, 160), (512, 180, 320), (256, 360, 640))
WITH = COMPILE_PIPELINE.replace("subpixel-conv", "subpixel-conv{when=always}")
WITHOUT = COMPILE_PIPELINE.replace("subpixel-conv,", "")


class UpBlock(torch.nn.Module):
    """diffusers' Upsample2D: nearest ×2, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decode(torch.nn.Module):
    """AutoencoderKL.decode as a module: post-quant conv, then the decoder."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


def sd_vae():
    """The SD-VAE architecture (stabilityai/sd-vae-ft-mse's config), randomly initialised."""
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), norm_num_groups=32,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def timer(device: str, rounds: int) -> Callable[[dict], dict[str, float]]:
    """Seconds per call of each function: do_bench medians on a GPU, interleaved medians on the CPU."""
    def gpu(fns: dict) -> dict[str, float]:
        import triton.testing
        return {k: triton.testing.do_bench(f, return_mode="median") / 1e3 for k, f in fns.items()}

    def cpu(fns: dict) -> dict[str, float]:
        for f in fns.values():
            f()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        return {k: statistics.median(v) for k, v in times.items()}
    return gpu if device == "cuda" else cpu


def up_conv_flops(cm) -> int:
    types = cm.graph.types()
    return sum(node_flops(n, types) for n in cm.graph.nodes if n.op == "conv")


def measure(name: str, model: torch.nn.Module, example: torch.Tensor, args, time_them) -> dict:
    """eager, torch.compile, codesign with and without the rewrite; errors first."""
    target, backend = ("h200", "triton") if args.device == "cuda" else ("cpu-host", "cpp")
    with torch.no_grad():
        compiled = {label: codesign.compile(model, (example,), target=target, backend=backend, pipeline=p)
                    for label, p in (("codesign", WITH), ("codesign_no_rewrite", WITHOUT))}
        fresh = torch.randn(example.shape, generator=torch.Generator().manual_seed(1)).to(example)
        reference = copy.deepcopy(model).double()(fresh.double())
        errors = {label: rel_err(cm(fresh), reference) for label, cm in compiled.items()}
        errors["eager"] = rel_err(model(fresh), reference)
        fns = {"eager": lambda: model(fresh)}
        if not args.no_torch_compile:
            tc = torch.compile(model)
            errors["torch_compile"] = rel_err(tc(fresh), reference)
            fns["torch_compile"] = lambda: tc(fresh)
        fns.update({label: (lambda cm=cm: cm(fresh)) for label, cm in compiled.items()})
        times = time_them(fns)
    rewritten = [d for d in compiled["codesign"].ledger if d.pass_name == "subpixel-conv" and d.choice == "rewritten"]
    row = {"case": name, "shape": list(example.shape), "seconds": times, "rel_err": errors,
           "speedup_over_eager": {k: times["eager"] / v for k, v in times.items()},
           "rewritten_convs": len(rewritten),
           "conv_flops": {"with_rewrite": up_conv_flops(compiled["codesign"]),
                          "without_rewrite": up_conv_flops(compiled["codesign_no_rewrite"])}}
    if "torch_compile" in times:
        row["speedup_over_torch_compile"] = {k: times["torch_compile"] / v for k, v in times.items()}
    print(f"{name:28s} " + "  ".join(f"{k} {v * 1e3:9.2f} ms" for k, v in times.items())
          + f"  | err {max(errors.values()):.1e} | conv FLOPs {row['conv_flops']['without_rewrite'] / 1e9:.2f} -> "
            f"{row['conv_flops']['with_rewrite'] / 1e9:.2f} G", flush=True)
    return row


def predicted(model: torch.nn.Module, example: torch.Tensor, target_name: str) -> dict:
    """The cost model's time of the model on a target (meta: nothing runs): the default
    pipeline (the pass decides per conv), every up-conv rewritten, none rewritten."""
    target = load_target(target_name)
    out = {}
    for label, p in (("default", COMPILE_PIPELINE), ("with_rewrite", WITH), ("without_rewrite", WITHOUT)):
        cm = codesign.compile(model, (example,), target=target, pipeline=p)
        out[label] = CostModel(target).graph_cost(cm.graph).time
        if label == "default":
            out["rewritten_by_default"] = sum(d.pass_name == "subpixel-conv" and d.choice == "rewritten"
                                              for d in cm.ledger)
    out["speedup_default"] = out["without_rewrite"] / out["default"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shrink", type=int, default=1, help="divide the up blocks' sizes by this (CPU runs)")
    ap.add_argument("--latent", type=int, nargs=2, default=(90, 160), metavar=("H", "W"))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds on the CPU")
    ap.add_argument("--no-decoder", action="store_true", help="skip the diffusers decoder")
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.shrink < 1 or args.rounds < 1 or min(args.latent) < 1:
        ap.error("--shrink, --rounds and --latent must be positive")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    time_them = timer(args.device, args.rounds)
    results: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__, "codesign": codesign.__version__,
        "python": platform.python_version(), "pipeline_with": WITH, "pipeline_without": WITHOUT,
        "load_average_at_start": os.getloadavg(), "cases": [],
    }
    if args.device == "cuda":
        import triton
        results["triton"] = triton.__version__
    torch.manual_seed(0)
    for c, h, w in UP_BLOCKS:
        h, w = max(1, h // args.shrink), max(1, w // args.shrink)
        block = UpBlock(c).eval().to(args.device)
        x = torch.randn(1, c, h, w, device=args.device, dtype=dtype)
        results["cases"].append(measure(f"up block C{c} {h}x{w}", block, x, args, time_them))
    if not args.no_decoder:
        import diffusers
        results["diffusers"] = diffusers.__version__
        decoder = Decode(sd_vae()).eval()
        z = torch.randn(1, 4, *args.latent, dtype=torch.float32)
        results["mobile_a18_predicted_seconds"] = predicted(decoder.to("meta"), z.to("meta"), "mobile-a18")
        decoder = Decode(sd_vae()).eval().to(args.device)
        results["cases"].append(measure(f"SD-VAE decoder {args.latent[0]}x{args.latent[1]}", decoder,
                                        z.to(args.device, dtype), args, time_them))
        print(f"mobile-a18 (predicted): {results['mobile_a18_predicted_seconds']}")
    results["load_average_at_end"] = os.getloadavg()
    results["note"] = ("Ratios within this run only. conv_flops: every conv of the compiled graph. "
                       + ("Shared 2-core CPU box: see the load averages." if args.device == "cpu" else ""))
    out = args.out or ROOT / "benchmarks" / "results" / ("pixel_shuffle.json" if args.device == "cuda"
                                                         else "pixel_shuffle_cpu.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
