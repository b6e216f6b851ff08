"""Where ResNet-50's bf16 error beyond eager's comes from, on the CPU (C++ backend).

    python benchmarks/resnet_bf16_error.py [--out benchmarks/results/raw/resnet_bf16_error.json]

transformers' ResNet-50 (default config, random weights, B=2 64²) in bf16 through
`codesign.compile(target="cpu-host")` with the default pipeline (fused) and with `fuse`
left out (unfused), beside eager bf16. Each output is compared with the f32 model and with
the exact model: the same bf16 weights and input in float64, so its error is the
activations' rounding alone. Then the smallest case found: stage 0's layers 0-1 from the
embedder's output, over four fresh inputs. A diagnostic for issue 13 (unexplained).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codesign  # noqa: E402
from codesign.compiler import COMPILE_PIPELINE  # noqa: E402
from cpu_erf import LastHidden  # noqa: E402
from model_zoo_gpu import rel_err  # noqa: E402

UNFUSED = COMPILE_PIPELINE.replace("fuse,", "")


def errors(model32: torch.nn.Module, x32: torch.Tensor) -> dict:
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    exact_model = copy.deepcopy(model16).double()
    x = x32.to(torch.bfloat16)
    outs = {"fused": codesign.compile(model16, (x,), target="cpu-host", backend="cpp")(x),
            "unfused": codesign.compile(model16, (x,), target="cpu-host", backend="cpp", pipeline=UNFUSED)(x),
            "eager": model16(x)}
    f32, exact = model32(x32), exact_model(x.double())
    return {k: {"vs_f32_model": float(f"{rel_err(y, f32):.4g}"), "vs_exact": float(f"{rel_err(y, exact):.4g}")}
            for k, y in outs.items()}


def main() -> None:
    import transformers as T
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/raw/resnet_bf16_error.json")
    args = p.parse_args()
    torch.manual_seed(0)
    resnet = T.ResNetModel(T.ResNetConfig()).eval()
    result = {}
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        result["resnet50"] = errors(LastHidden(resnet), x)
        print("resnet50", result["resnet50"], flush=True)
        layers = torch.nn.Sequential(*resnet.encoder.stages[0].layers[:2]).eval()
        h = resnet.embedder(x)
        result["stage0_layers0_1"] = []
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            fresh = h + 0.1 * torch.randn(h.shape, generator=g)
            row = errors(layers, fresh)
            result["stage0_layers0_1"].append(row)
            print("stage 0 layers 0-1, input", seed, row, flush=True)
    result["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
