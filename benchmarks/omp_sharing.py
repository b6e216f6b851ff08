"""Eager PyTorch speed in the same process before and after a compiled (generated C++) call.

Issue 16: after the generated code ran, eager PyTorch slowed down (1.35x for a small
transformer layer on a quiet machine, up to ~500x on a loaded one) because the generated
library's OpenMP threads spun on the cores torch's threads needed. `codegen/cpp/openmp.py`
loads generated libraries with passive waiting and runs them on torch's thread count.

What happens depends on which OpenMP runtime the generated library binds to, so each
configuration runs in a fresh process:
  shared            as codesign loads it here: this torch ships its runtime as
                    `libgomp.so.1`, the soname the library needs, so both use torch's pool;
  separate-passive  the library in its own link namespace (dlmopen), with its own libgomp
                    as with a torch whose runtime is a renamed copy (the PyPI wheels'),
                    loaded as `openmp.load` does: OMP_WAIT_POLICY=PASSIVE during the load;
  separate-default  the same, loaded without it: libgomp's default spinning (before the fix).
Per configuration: eager alone (median of calls before any compiled call), then rounds
of an eager call timed after an eager call and one timed after a compiled call (the same
load for both: `eager_slowdown` is their ratio of medians), and the compiled call itself;
the compiled result is first checked against eager. The machine is
shared with other work: the load average is recorded before and after each process, and
ratios, not absolute times, are the figures to quote.

Run: .venv/bin/python benchmarks/omp_sharing.py [--rounds N]
Writes benchmarks/results/omp_sharing.json and prints a table.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("shared", "separate-passive", "separate-default")
RTLD_NOW, LM_ID_NEWLM = 2, -1


def block():
    """A small pre-norm transformer layer (d=256, 4 heads, S=64), fp32, and its input."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self, d: int = 256, heads: int = 4) -> None:
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.up, self.down = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, s, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
            return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))

    torch.manual_seed(0)
    return Block().eval(), torch.randn(1, 64, 256)


def _separate(library: Path, passive: bool) -> ctypes.CDLL:
    """`library` loaded in a new link namespace, so it starts its own libgomp."""
    libc = ctypes.CDLL(None)
    libc.dlmopen.restype, libc.dlmopen.argtypes = ctypes.c_void_p, [ctypes.c_long, ctypes.c_char_p, ctypes.c_int]
    if passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        handle = libc.dlmopen(LM_ID_NEWLM, str(library).encode(), RTLD_NOW)
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
    if not handle:
        libc.dlerror.restype = ctypes.c_char_p
        raise OSError(f"dlmopen {library}: {libc.dlerror().decode()}")
    lib = ctypes.CDLL(str(library), handle=handle)
    lib.run.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
    lib.run.restype = ctypes.c_int
    return lib


def child(config: str, rounds: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    import codesign
    from codesign.codegen.cpp.openmp import runtime_of

    load_start = os.getloadavg()
    model, x = block()
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp")
    cm(x)
    program = cm.program("cpp")
    if config != "shared":
        program._lib = _separate(program.built.library, passive=config == "separate-passive")
    with torch.no_grad():
        want = model(x)
        got = cm(x)
        err = ((got.double() - want.double()).norm() / want.double().norm()).item()

        def timed(fn) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        for _ in range(20):
            model(x)
        alone = [timed(lambda: model(x)) for _ in range(rounds)]  # before any compiled call (but the checks)
        interleaved, compiled, after = [], [], []
        for _ in range(rounds):  # the same load for both: eager after eager, eager after compiled
            model(x)
            interleaved.append(timed(lambda: model(x)))
            compiled.append(timed(lambda: cm(x)))
            after.append(timed(lambda: model(x)))
    return {
        "config": config, "rel_err": err, "runtime": runtime_of(program._lib),
        "eager_alone_ms": statistics.median(alone) * 1e3,
        "eager_after_compiled_ms": statistics.median(after) * 1e3,
        "compiled_ms": statistics.median(compiled) * 1e3,
        "eager_after_eager_ms": statistics.median(interleaved) * 1e3,
        "eager_slowdown": statistics.median(after) / statistics.median(interleaved),
        "eager_after_p90_ms": statistics.quantiles(after, n=10)[-1] * 1e3,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds)))
        return
    import torch
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    results = []
    for config in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--child", config, "--rounds", str(args.rounds)],
                             capture_output=True, text=True, env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        assert r["rel_err"] <= 1e-4, r
    data = {
        "benchmark": "omp_sharing", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": "pre-norm transformer layer d=256, 4 heads, S=64, fp32 (benchmarks/omp_sharing.py:block)",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "rounds": args.rounds, "results": results,
        "note": "shared machine (other engineers' jobs on the same cores): see loadavg_start/end per config",
    }
    out = ROOT / "benchmarks" / "results" / "omp_sharing.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"{'config':<18} {'eager alone':>12} {'after eager':>12} {'after cs':>12} {'slowdown':>9} "
          f"{'compiled':>10}  load")
    for r in results:
        print(f"{r['config']:<18} {r['eager_alone_ms']:>10.3f}ms {r['eager_after_eager_ms']:>10.3f}ms "
              f"{r['eager_after_compiled_ms']:>10.3f}ms {r['eager_slowdown']:>8.2f}x {r['compiled_ms']:>8.3f}ms  "
              f"{r['loadavg_start'][0]:.2f}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
