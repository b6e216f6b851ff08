"""Scaling: the fuse pass on long pointwise chains, the expert scheduler on long traces.

* fuse: a chain of n pointwise ops (exp, tanh, neg, relu, sigmoid over f32[64,64]) for
  n = 1k / 5k / 20k, on the SN40L (its SRAM takes the whole chain: one group, the worst
  case for re-scoring) and the H100 (groups capped by shared memory). Timed: the `fuse`
  pass itself (greedy merging, the ledger, the grouped graph), without verification.
* experts schedule: the Samba-CoE scenario of benchmarks/experts_schedule.py (150 experts
  x 13.5 GB on an SN40L node, mid locality, seed 0) for 10k / 50k / 100k steps, 1000-slot
  windows, CP-SAT in deterministic mode with a 0.5 s (work-unit) limit per window so that
  the scheduler's own work, not the solver's budget, is what is measured.

Prints a table and writes benchmarks/results/scaling.json (machine, versions, date, load).

    .venv/bin/python benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import ortools

import codesign
from codesign.experts import IlpOptions, LOCALITY_LEVELS, problem_for_target, schedule, zipf_trace
from codesign.experts.schedule import HORIZON_WINDOWS
from codesign.ir import parse_graph
from codesign.passes import PassContext
from codesign.passes.fuse import Fuse
from codesign.targets import load_target

RESULTS = Path(__file__).resolve().parent / "results"
OPS = ("exp", "tanh", "neg", "relu", "sigmoid")


def chain(n: int, shape: str = "64,64") -> str:
    lines = [f"  %v{i} = {OPS[i % len(OPS)]}(%{'x' if i == 0 else f'v{i - 1}'}) : f32[{shape}]" for i in range(n)]
    return f"graph @chain(%x: f32[{shape}]) -> (f32[{shape}]) {{\n" + "\n".join(lines) + f"\n  return %v{n - 1}\n}}\n"


def time_fuse(n: int, target: str) -> dict:
    graph = parse_graph(chain(n))
    ctx = PassContext(target=load_target(target))
    began = time.perf_counter()
    fused = Fuse().run(graph, ctx)
    seconds = time.perf_counter() - began
    return {"ops": n, "target": target, "seconds": seconds, "groups": len(fused.groups),
            "ledger_entries": len(ctx.ledger), "load_after": os.getloadavg()[0]}


def time_schedule(steps: int, time_limit: float, window: int = 1000) -> dict:
    alpha, locality = LOCALITY_LEVELS["mid"]
    trace = zipf_trace(150, steps, num_layers=1, top_k=1, alpha=alpha, locality=locality, seed=0)
    problem = problem_for_target(trace, load_target("sn40l-node"), expert_bytes=13_500_000_000,
                                 reserve=64_000_000_000, decode_tokens=8)
    began = time.perf_counter()
    sched = schedule(problem, window=window, options=IlpOptions(time_limit=time_limit, workers=1, deterministic=True))
    seconds = time.perf_counter() - began
    best = sched.best_baseline[1]
    return {"steps": steps, "slots": problem.num_slots, "window": window, "windows": len(sched.windows),
            "seconds": seconds, "seconds_per_window": seconds / max(1, len(sched.windows)),
            "ilp_seconds": sum(w.seconds for w in sched.windows), "plan_total_s": sched.result.total_s,
            "best_baseline": best.policy, "best_baseline_total_s": best.total_s,
            "load_after": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run; writes nothing)")
    parser.add_argument("--time-limit", type=float, default=0.5, help="CP-SAT limit per window (deterministic)")
    args = parser.parse_args()
    chains = (200, 500) if args.quick else (1000, 5000, 20000)
    traces = (2000, 3000) if args.quick else (10000, 50000, 100000)
    load_before = os.getloadavg()
    fuse_rows = []
    for n in chains:
        for target in ("sn40l", "h100"):
            fuse_rows.append(time_fuse(n, target))
            r = fuse_rows[-1]
            print(f"fuse     {n:>7} ops   {target:<6} {r['seconds']:8.2f} s   {r['groups']} groups", flush=True)
    sched_rows = []
    for steps in traces:
        sched_rows.append(time_schedule(steps, args.time_limit))
        r = sched_rows[-1]
        print(f"schedule {steps:>7} steps {r['windows']:>4} windows {r['seconds']:8.1f} s   "
              f"({r['seconds_per_window']:.2f} s/window, ILP {r['ilp_seconds']:.1f} s)", flush=True)
    if args.quick:
        return 0
    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "note": "2 shared cores; other sessions' jobs ran at the same time (see load averages)"},
        "versions": {"codesign": codesign.__version__, "ortools": ortools.__version__},
        "settings": {"chain_shape": "f32[64,64]", "chain_ops": list(OPS), "schedule_window": 1000,
                     "schedule_horizon_windows": HORIZON_WINDOWS, "ilp_time_limit": args.time_limit,
                     "ilp_deterministic": True, "ilp_workers": 1, "scenario": "samba-coe, mid locality, seed 0"},
        "fuse": fuse_rows,
        "experts_schedule": sched_rows,
        "before": {  # measured on this machine with the code before this change (same chains, same scenario)
            "fuse_chain_sn40l_1000_ops_s": 13.7, "fuse_chain_h100_2000_ops_s": 14.4,
            "fuse_chain_sn40l_2000_ops_s_reported": 40, "fuse_chain_20000_ops": "did not finish in 180 s",
            "schedule_samba_steps_s": {"2000": 7.2, "4000": 11.7, "20000": "202 (reported)"},
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {RESULTS / 'scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
