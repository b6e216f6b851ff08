"""bf16 CNNs through the C++ backend: convs widened to f32 (`f32_convs`) vs the direct loops.

    python benchmarks/cpu_half_convs.py [--out benchmarks/results/cpu_half_convs.json]

The model zoo's small CNN / ViT configurations (`model_zoo_gpu.CASES`, quick: random
weights) cast to bf16, compiled for `cpu-host` twice in one process — as the code is, and
with the widening switched off (the code before it: bf16 convs as direct loops) — and timed
interleaved with eager bf16 at torch's thread count (medians); each checked against the f32
model beside eager bf16's own error.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codesign  # noqa: E402
from codesign.codegen.cpp import wrapper  # noqa: E402
from cpu_bench import interleaved  # noqa: E402
from model_zoo_gpu import CASES, rel_err  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/cpu_half_convs.json")
    p.add_argument("--cases", default="resnet50,mobilenetv2,convnext,vit")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    rows = {}
    with torch.no_grad():
        for name in args.cases.split(","):
            model32, make = CASES[name](True)
            model32 = model32.eval()
            model = copy.deepcopy(model32).to(torch.bfloat16)
            x32 = make(torch.Generator().manual_seed(0))[0]
            x = x32.to(torch.bfloat16)
            ours = codesign.compile(model, (x,), target="cpu-host")
            ours(x)
            with mock.patch.object(wrapper, "f32_convs", lambda graph: graph):
                loops = codesign.compile(model, (x,), target="cpu-host")
                loops(x)  # built at the first call: inside the patch
            ref = model32(x32).float()
            err = {"ours": rel_err(ours(x), ref), "loops": rel_err(loops(x), ref), "eager": rel_err(model(x), ref)}
            fns = {"eager": lambda: model(x), "ours": lambda: ours(x), "loops": lambda: loops(x)}
            ms = {k: round(v * 1e3, 3) for k, v in interleaved(fns, args.rounds).items()}
            rows[name] = {"ms": ms, "rel_err_vs_f32": {k: float(f"{v:.3g}") for k, v in err.items()},
                          "ours_vs_eager": round(ms["eager"] / ms["ours"], 3),
                          "loops_vs_eager": round(ms["eager"] / ms["loops"], 3)}
            print(name, rows[name], flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "load_average": [round(v, 2) for v in os.getloadavg()]}
    Path(args.out).write_text(json.dumps({"environment": env, "cases": rows}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
