"""CPU benchmark of the C++ backend against eager PyTorch and torch.compile, same run.

Measures (ratios are speedups over eager; > 1 is faster):
  1. elementwise chain, 16M fp32 elements (64 MiB per tensor: the 64M-bf16 chain of the
     issue does not fit this 2-core box's time budget): sigmoid(relu(x * 1.5 + y) * x - 0.5),
     built by hand as ONE pointwise fusion group (the fusion pass has not landed yet);
  2. GPT-2 small forward, fp32, batch 1, S = 128 (examples/gpt2.py:small), captured graph
     with no fusion groups (one kernel per node, as the pipeline gives today);
  3. compile time of GPT-2 small: capture → runnable C++ module (cold cache), and the warm
     (cached) rebuild; torch.compile's first call for comparison.
Every result is checked against eager first (relative error in float64). Timings are the
median of interleaved rounds (eager, torch.compile and C++ alternate), because this box is
shared: the load average is recorded with the results.

Run: .venv/bin/python benchmarks/cpu_bench.py [--quick]
Writes benchmarks/results/cpu_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codesign  # noqa: E402
from codesign.codegen.cpp import CppModule  # noqa: E402
from codesign.codegen.cpp.build import compiler, compiler_version  # noqa: E402
from codesign.ir import parse_graph  # noqa: E402

N_CHAIN = 16 * 1024 * 1024
CHAIN_IR = """graph @chain(%x: f32[{n}], %y: f32[{n}]) -> (f32[{n}]) {{
  group 0 {{anchor = "out", kind = "pointwise"}}
  %a = full() {{value = 1.5}} : f32[] group(0)
  %h = full() {{value = 0.5}} : f32[] group(0)
  %t0 = mul(%x, %a) : f32[{n}] group(0)
  %t1 = add(%t0, %y) : f32[{n}] group(0)
  %t2 = relu(%t1) : f32[{n}] group(0)
  %t3 = mul(%t2, %x) : f32[{n}] group(0)
  %t4 = sub(%t3, %h) : f32[{n}] group(0)
  %out = sigmoid(%t4) : f32[{n}] group(0)
  return %out
}}
"""


def chain_eager(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(torch.relu(x * 1.5 + y) * x - 0.5)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, measured round-robin (one warm-up call each)."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no torch.compile of GPT-2")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    torch.manual_seed(0)
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "codesign": codesign.__version__, "compiler": compiler_version(compiler())},
        "notes": ["GEMMs: hand-written packed GEMM (no BLAS); eager uses MKL.",
                  "Elementwise chain: hand-built pointwise group (fusion pass not landed yet); 16M fp32.",
                  "GPT-2 small: no fusion groups (one C++ kernel per IR node)."],
        "benchmarks": {},
    }
    cache = tempfile.mkdtemp(prefix="codesign-bench-cache-")
    os.environ["CODESIGN_CACHE_DIR"] = cache

    # 1. elementwise chain ------------------------------------------------------------------
    x, y = torch.randn(N_CHAIN), torch.randn(N_CHAIN)
    graph = parse_graph(CHAIN_IR.format(n=N_CHAIN))
    chain = CppModule(graph, {})
    fused_loops = chain.source.count("#pragma omp parallel for simd")
    compiled_chain = torch.compile(chain_eager)
    want = chain_eager(x, y)
    err = rel_err(chain(x, y), want)
    t = interleaved({"eager": lambda: chain_eager(x, y), "torch.compile": lambda: compiled_chain(x, y),
                     "codesign-cpp": lambda: chain(x, y)}, rounds * 2)
    results["benchmarks"]["elementwise_chain_16M_f32"] = {
        "what": "sigmoid(relu(x*1.5 + y)*x - 0.5), x, y fp32[16M]", "rel_err_vs_eager": err,
        "cpp_kernel_functions": len(chain.code.kernel_functions), "cpp_parallel_simd_loops": fused_loops,
        "seconds": t, "speedup_vs_eager": {k: t["eager"] / v for k, v in t.items()},
        "goal": "codesign-cpp >= 2x eager"}

    # 2 + 3. GPT-2 small -----------------------------------------------------------------------
    model, inputs = codesign.load_factory(str(ROOT / "examples" / "gpt2.py") + ":small")
    start = time.perf_counter()
    captured = codesign.capture(model, inputs)
    t_capture = time.perf_counter() - start
    module = CppModule(captured.graph, captured.state)
    t_cold = time.perf_counter() - start
    start = time.perf_counter()
    CppModule(captured.graph, captured.state)
    t_warm = time.perf_counter() - start
    with torch.no_grad():
        want = model(*inputs)
        err = rel_err(module(*inputs), want)
        fns = {"eager": lambda: model(*inputs), "codesign-cpp": lambda: module(*inputs)}
        t_tc = None
        if not args.quick:
            compiled = torch.compile(model)
            start = time.perf_counter()
            compiled(*inputs)
            t_tc = time.perf_counter() - start
            fns["torch.compile"] = lambda: compiled(*inputs)
        t = interleaved(fns, rounds)
    results["benchmarks"]["gpt2_small_f32_s128"] = {
        "what": "examples/gpt2.py:small, batch 1, seq 128, fp32 logits", "rel_err_vs_eager": err,
        "kernels": module.code.kernel_count, "cpp_kernel_functions": len(module.code.kernel_functions),
        "arena_bytes": module.code.plan.arena_bytes, "seconds": t,
        "speedup_vs_eager": {k: t["eager"] / v for k, v in t.items()}, "goal": "codesign-cpp >= 0.9x eager"}
    results["benchmarks"]["gpt2_small_compile_time"] = {
        "capture_s": t_capture, "capture_to_runnable_cold_s": t_cold,
        "generate_and_build_s": t_cold - t_capture, "compiler_s": module.built.seconds,
        "warm_cache_rebuild_s": t_warm, "torch_compile_first_call_s": t_tc,
        "goal": "capture to runnable <= 15 s"}
    results["load_average_at_end"] = os.getloadavg()

    out = ROOT / "benchmarks" / "results" / "cpu_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"CPU: {results['cpu']} ({results['cores']} cores), torch {torch.__version__}, "
          f"load {results['load_average_at_start'][0]:.1f}")
    print(f"{'benchmark':<28}{'eager':>12}{'torch.compile':>16}{'codesign-cpp':>15}{'cpp/eager':>11}{'rel err':>10}")
    for name in ("elementwise_chain_16M_f32", "gpt2_small_f32_s128"):
        b = results["benchmarks"][name]
        s = b["seconds"]
        tc = f"{s['torch.compile'] * 1e3:.1f} ms" if "torch.compile" in s else "-"
        print(f"{name:<28}{s['eager'] * 1e3:>9.1f} ms{tc:>16}{s['codesign-cpp'] * 1e3:>12.1f} ms"
              f"{b['speedup_vs_eager']['codesign-cpp']:>10.2f}x{b['rel_err_vs_eager']:>10.1e}")
    c = results["benchmarks"]["gpt2_small_compile_time"]
    print(f"GPT-2 small compile: capture {c['capture_s']:.1f} s, capture→runnable (cold) "
          f"{c['capture_to_runnable_cold_s']:.1f} s (g++ {c['compiler_s']:.1f} s), warm cache "
          f"{c['warm_cache_rebuild_s']:.2f} s, torch.compile first call "
          + (f"{c['torch_compile_first_call_s']:.1f} s" if c["torch_compile_first_call_s"] else "-"))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
