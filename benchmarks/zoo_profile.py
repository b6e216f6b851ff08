"""Where a model-zoo case spends device time: codesign's kernels beside torch.compile's.

    python benchmarks/zoo_profile.py llama [--top 15]

Builds the case as benchmarks/model_zoo_gpu.py does (bf16, random weights), runs codesign
(CUDA graphs off, so each launch shows by name) and torch.compile (default) under
torch.profiler, and prints each one's kernels by total device time per call, then which
form (generated or library) each measured GEMM / attention kernel of codesign's runs.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import codesign  # noqa: E402
from model_zoo_gpu import CASES  # noqa: E402


def table(fn, inputs, calls: int = 10) -> list[tuple[str, float, int]]:
    for _ in range(3):
        fn(*inputs)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn(*inputs)
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / calls / 1e3, e.count // calls) for e in prof.key_averages()
            if e.device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("case")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    model, make = CASES[args.case](False)
    model = copy.deepcopy(model).eval().cuda().to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    inputs = tuple((x.to(torch.bfloat16) if x.is_floating_point() else x).cuda() for x in make(g))
    with torch.no_grad():
        cm = codesign.compile(model, inputs, target="h200", backend_options={"triton": {"cuda_graphs": False}})
        tc = torch.compile(model)
        for name, fn in (("codesign", cm), ("torch.compile", tc)):
            rows = table(fn, inputs)
            total = sum(r[1] for r in rows)
            print(f"== {name}: {total:.3f} ms device time per call, {sum(r[2] for r in rows)} launches")
            for key, ms, count in rows[:args.top]:
                print(f"   {ms:8.3f} ms  x{count:<3d} {key[:110]}")
        program = cm.program("triton")
        print("== codesign's measured choices (generated kernel vs its library form):")
        for line in program.report().splitlines():
            if line.strip().startswith("measured"):
                print("  ", line.strip())


if __name__ == "__main__":
    main()
