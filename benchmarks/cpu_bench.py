"""CPU benchmark of the C++ backend against eager PyTorch and torch.compile, same run.

Everything of ours goes through `codesign.compile(model, inputs, target="cpu-host")` (the
real pass pipeline, `codesign.compiler.COMPILE_PIPELINE`; no hand-written groups) and runs on CPU
inputs through the generated C++ (`CompiledModule.program("cpp")`, a `CppModule`).
Measures (ratios are speedups over eager; > 1 is faster):
  1. elementwise chain, 16M fp32 elements (64 MiB per tensor): a torch function of 7
     pointwise ops, sigmoid(relu(x * 1.5 + y) * x - 0.5) * y + x, captured and fused;
  2. GPT-2 small forward, fp32, batch 1, S = 128 (examples/gpt2.py:small); GEMMs through
     OpenBLAS (scipy-openblas32) with fused epilogues;
  3. compile time of GPT-2 small: capture → runnable C++ module with a cold C++ cache
     (CODESIGN_CACHE_DIR is a fresh temporary folder), and the warm (cached) rebuild;
     torch.compile's first call for comparison.
Every result is checked against eager first (relative error in float64). Timings are the
median of interleaved rounds (eager, torch.compile and C++ alternate), because this box is
shared: the load average is recorded with the results. OpenMP threads wait passively
(OMP_WAIT_POLICY=PASSIVE, set before torch loads, unless the caller set it): with other
processes on the same 2 cores, spin-waiting threads steal the core from the thread they
wait for. It applies to eager, torch.compile and ours alike (one libgomp in the process).

Run: .venv/bin/python benchmarks/cpu_bench.py [--quick]
Writes benchmarks/results/cpu_bench.json and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codesign  # noqa: E402
from codesign.codegen.cpp.build import compiler, compiler_version  # noqa: E402
from codesign.compiler import COMPILE_PIPELINE  # noqa: E402

N_CHAIN = 16 * 1024 * 1024


class Chain(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return chain_eager(x, y)


def chain_eager(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(torch.relu(x * 1.5 + y) * x - 0.5) * y + x


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
    rounds = 3 if args.quick else 9
    torch.manual_seed(0)
    cache = tempfile.mkdtemp(prefix="codesign-bench-cache-")
    os.environ["CODESIGN_CACHE_DIR"] = cache  # cold C++ cache: every build below runs the compiler
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_start": os.getloadavg(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "codesign": codesign.__version__, "compiler": compiler_version(compiler())},
        "notes": [],
        "benchmarks": {},
    }

    # 1. elementwise chain: capture + fusion pass ------------------------------------------------
    x, y = torch.randn(N_CHAIN), torch.randn(N_CHAIN)
    chain = codesign.compile(Chain(), (x, y), target="cpu-host", backend="cpp")
    chain_prog = chain.program("cpp")
    kinds = sorted({str(g.attrs.get("kind")) for g in chain.graph.groups})
    compiled_chain = torch.compile(chain_eager)
    want = chain_eager(x, y)
    err = rel_err(chain(x, y), want)
    t = interleaved({"eager": lambda: chain_eager(x, y), "torch.compile": lambda: compiled_chain(x, y),
                     "codesign-cpp": lambda: chain_prog(x, y)}, rounds * 2)
    results["benchmarks"]["elementwise_chain_16M_f32"] = {
        "what": "sigmoid(relu(x*1.5 + y)*x - 0.5)*y + x, x, y fp32[16M] (7 pointwise ops)",
        "rel_err_vs_eager": err, "groups": len(chain.graph.groups), "group_kinds": kinds,
        "cpp_kernels": chain_prog.code.kernel_count,
        "cpp_parallel_simd_loops": chain_prog.source.count("#pragma omp parallel for simd"),
        "seconds": t, "speedup_vs_eager": {k: t["eager"] / v for k, v in t.items()},
        "goal": "codesign-cpp >= 2x eager"}

    # 2 + 3. GPT-2 small -----------------------------------------------------------------------
    model, inputs = codesign.load_factory(str(ROOT / "examples" / "gpt2.py") + ":small")
    start = time.perf_counter()
    captured = codesign.capture(model, inputs)
    t_capture = time.perf_counter() - start
    cm = codesign.compile(captured, target="cpu-host", backend="cpp")
    t_passes = time.perf_counter() - start - t_capture
    module = cm.program("cpp")
    t_cold = time.perf_counter() - start
    start = time.perf_counter()
    again = codesign.compile(captured, target="cpu-host", backend="cpp")
    t_warm_passes = time.perf_counter() - start
    warm = again.program("cpp")
    t_warm = time.perf_counter() - start
    assert warm.built.cached
    groups: dict[str, int] = {}
    for g in cm.graph.groups:
        groups[str(g.attrs.get("kind"))] = groups.get(str(g.attrs.get("kind")), 0) + 1
    with torch.no_grad():
        want = model(*inputs)
        err = rel_err(cm(*inputs), want)
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
        "gemm": module.gemm, "fusion_groups": groups,
        "fused_epilogues": module.source.count("fused epilogue on each tile"),
        "kernels": module.code.kernel_count, "cpp_kernel_functions": len(module.code.kernel_functions),
        "arena_bytes": module.code.plan.arena_bytes, "seconds": t,
        "speedup_vs_eager": {k: t["eager"] / v for k, v in t.items()}, "goal": "codesign-cpp >= 0.9x eager"}
    results["benchmarks"]["gpt2_small_compile_time"] = {
        "capture_s": t_capture, "passes_s": t_passes, "capture_to_runnable_cold_s": t_cold,
        "generate_and_build_s": t_cold - t_capture - t_passes, "compiler_s": module.built.seconds,
        "warm_cache_rebuild_s": t_warm, "warm_cache_passes_s": t_warm_passes,
        "torch_compile_first_call_s": t_tc,
        "goal": "capture to runnable <= 15 s"}
    results["load_average_at_end"] = os.getloadavg()
    results["notes"] = [
        f"GEMM: {module.gemm}, one sgemm per output tile in an OpenMP loop (BLAS single-threaded), "
        "group epilogues (bias, residual, ...) applied per tile in cache; eager uses MKL.",
        f"All of ours through codesign.compile(target='cpu-host'): capture + {COMPILE_PIPELINE}.",
        "Shared 2-core box: compare ratios within this run only; see the load averages.",
    ]

    out = ROOT / "benchmarks" / "results" / "cpu_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"CPU: {results['cpu']} ({results['cores']} cores), torch {torch.__version__}, "
          f"load {results['load_average_at_start'][0]:.1f} -> {results['load_average_at_end'][0]:.1f}, "
          f"OMP_WAIT_POLICY={results['omp_wait_policy']}")
    print(f"{'benchmark':<28}{'eager':>12}{'torch.compile':>16}{'codesign-cpp':>15}{'cpp/eager':>11}{'rel err':>10}")
    for name in ("elementwise_chain_16M_f32", "gpt2_small_f32_s128"):
        b = results["benchmarks"][name]
        s = b["seconds"]
        tc = f"{s['torch.compile'] * 1e3:.1f} ms" if "torch.compile" in s else "-"
        print(f"{name:<28}{s['eager'] * 1e3:>9.1f} ms{tc:>16}{s['codesign-cpp'] * 1e3:>12.1f} ms"
              f"{b['speedup_vs_eager']['codesign-cpp']:>10.2f}x{b['rel_err_vs_eager']:>10.1e}")
    c = results["benchmarks"]["gpt2_small_compile_time"]
    print(f"GPT-2 small compile: capture {c['capture_s']:.1f} s, passes {c['passes_s']:.1f} s, capture→runnable "
          f"(cold) {c['capture_to_runnable_cold_s']:.1f} s (g++ {c['compiler_s']:.1f} s), warm cache "
          f"{c['warm_cache_rebuild_s']:.2f} s, torch.compile first call "
          + (f"{c['torch_compile_first_call_s']:.1f} s" if c["torch_compile_first_call_s"] else "-"))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
