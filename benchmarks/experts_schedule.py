"""Expert-switching schedules: the ILP against every baseline, on the issue's two scales.

* Samba-CoE: 150 experts x 13.5 GB (Llama-2-7B, bf16) on an SN40L node (sn40l-node: HBM
  8 x 64 GB, 64 GB of it reserved for router and KV cache; DDR->HBM 1 TB/s), one expert per
  request, 8 decoded tokens per request (short completions: switching matters most).
* Mixtral-8x7B on one H100 (h100): 32 layers x 8 experts x 352 MB, top-2; 80 GB HBM less
  13.2 GB reserved (3.2 GB non-expert weights + 10 GB KV cache / activations); experts in
  pinned host memory behind the measured 55 GB/s link; one decoded token per step.

Three synthetic locality levels each (trace.LOCALITY_LEVELS), seed 0. The ILP runs in
rolling windows of 1000 slots (Samba-CoE: 1000 requests; Mixtral: 1000 layer-slots =
31.25 tokens) with a 10 s CP-SAT limit per window. Every plan is scored by the same
simulator. Writes benchmarks/results/experts_schedule.json and .md.

    .venv/bin/python benchmarks/experts_schedule.py [--quick]
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

import numpy as np
import ortools

import codesign
from codesign.experts import IlpOptions, LOCALITY_LEVELS, Load, Plan, problem_for_target, schedule, simulate, zipf_trace
from codesign.experts.bounds import lower_bound
from codesign.experts.ilp import resident_after
from codesign.targets import load_target

RESULTS = Path(__file__).resolve().parent / "results"

SCENARIOS = {
    "samba-coe": dict(target="sn40l-node", experts=150, layers=1, top_k=1, expert_bytes=13_500_000_000,
                      reserve=64_000_000_000, decode_tokens=8, fixed=0.0, steps=1000),
    "mixtral-8x7b": dict(target="h100", experts=8, layers=32, top_k=2, expert_bytes=352_000_000,
                         reserve=13_200_000_000, decode_tokens=1, fixed=100e6 / 3.0e12, steps=125),
}


def window_gaps(problem, plan, window: int) -> list[dict]:
    """Per ``window``-slot piece of the final plan: its replayed time from the state it found
    and the proven combinatorial bound of that piece (bounds.lower_bound), and the gap."""
    out = []
    for a in range(0, problem.num_slots, window):
        b = min(problem.num_slots, a + window)
        before = Plan(tuple(ld for ld in plan.loads if ld.slot < a), frozenset((e, u) for e, u in plan.drops if u < a))
        state = resident_after(problem.window(0, a, problem.initial), before) if a else set(problem.initial)
        sub = problem.window(a, b, state)
        piece = Plan(tuple(Load(ld.expert, ld.slot - a, max(0, ld.release - a)) for ld in plan.loads if a <= ld.slot < b),
                     frozenset((e, u - a) for e, u in plan.drops if a <= u < b))
        total, bound = simulate(sub, piece).total, lower_bound(sub)
        out.append({"start": a, "stop": b, "total_s": total / 1e9, "bound_s": bound / 1e9,
                    "gap": max(0.0, (total - bound) / total) if total else 0.0})
    return out


def run(name: str, level: str, time_limit: float, window: int, steps: int | None) -> dict:
    sc = SCENARIOS[name]
    alpha, locality = LOCALITY_LEVELS[level]
    trace = zipf_trace(sc["experts"], steps or sc["steps"], num_layers=sc["layers"], top_k=sc["top_k"],
                       alpha=alpha, locality=locality, seed=0)
    problem = problem_for_target(trace, load_target(sc["target"]), expert_bytes=sc["expert_bytes"],
                                 reserve=sc["reserve"], decode_tokens=sc["decode_tokens"], fixed=sc["fixed"])
    began = time.perf_counter()
    # the ILP's own windows: ilp_window slots each, the 10 s of a 1000-slot window split evenly
    ilp_window = min(window, sc.get("ilp_window", window))
    limit = time_limit * ilp_window / window
    sched = schedule(problem, window=ilp_window, options=IlpOptions(time_limit=limit, workers=2),
                     lookahead=sc.get("lookahead", 0))
    seconds = time.perf_counter() - began
    report_windows = window_gaps(problem, sched.plan, window)
    began = time.perf_counter()
    trace_bound = lower_bound(problem)
    bound_seconds = time.perf_counter() - began
    best_plan, best = sched.best_baseline
    row = {"scenario": name, "locality": level, "alpha": alpha, "temporal_locality": locality,
           "target": sc["target"], "steps": len(trace), "slots": problem.num_slots,
           "experts": len(problem.experts), "expert_bytes": sc["expert_bytes"],
           "fits_experts": problem.capacity // sc["expert_bytes"], "ilp_total_s": sched.result.total_s,
           "ilp_stall_s": sched.result.stall_s, "ilp_hit_rate": sched.result.hit_rate,
           "best_baseline": best.policy, "best_baseline_total_s": best.total_s,
           "ilp_vs_best": sched.result.total / best.total,
           "max_window_gap": sched.gap, "max_kept_gap": max(w["gap"] for w in report_windows),
           "max_window_wall_s": max(w.wall_seconds for w in sched.windows),
           "trace_bound_s": trace_bound / 1e9, "trace_bound_seconds": bound_seconds,
           "trace_gap": max(0.0, 1 - trace_bound / sched.result.total) if sched.result.total else 0.0,
           "ilp_window_slots": ilp_window, "ilp_time_limit_s": limit, "report_windows": report_windows,
           "ilp_le_best": sched.result.total <= best.total, "seconds": seconds,
           "windows": sched.summary()["windows"],
           "baselines": {k: r.summary() for k, (_, r) in sched.baselines.items()}}
    print(f"{name:13s} {level:5s} ILP {row['ilp_total_s']:.4f} s  best {best.policy} {best.total_s:.4f} s  "
          f"ratio {row['ilp_vs_best']:.4f}  window gap {100 * row['max_window_gap']:.2f}%  "
          f"trace gap {100 * row['trace_gap']:.2f}%  ({seconds:.0f} s)", flush=True)
    return row


def long_window(level: str, tokens: int) -> dict:
    """Mixtral with ``tokens`` decode steps as one window (a *step* is a token; 32 slots):
    every baseline and the MIN-preserving heuristic, each timed, against the proven bound
    (Belady's, and the busy-link bound at the last slot). No ILP: 32 000 slots are beyond
    CP-SAT in 10 s here."""
    from codesign.experts.baselines import BASELINES
    from codesign.experts.prefetch import aggressive_min
    sc = SCENARIOS["mixtral-8x7b"]
    alpha, locality = LOCALITY_LEVELS[level]
    trace = zipf_trace(sc["experts"], tokens, num_layers=sc["layers"], top_k=sc["top_k"], alpha=alpha,
                       locality=locality, seed=0)
    problem = problem_for_target(trace, load_target(sc["target"]), expert_bytes=sc["expert_bytes"],
                                 reserve=sc["reserve"], decode_tokens=sc["decode_tokens"], fixed=sc["fixed"])
    began = time.perf_counter()
    belady = lower_bound(problem, probes=0)
    belady_seconds = time.perf_counter() - began
    began = time.perf_counter()
    bound = lower_bound(problem, probes=1)  # the busy-link bound at the last slot: one flow
    row = {"locality": level, "steps": tokens, "slots": problem.num_slots, "bound_s": bound / 1e9,
           "bound_seconds": time.perf_counter() - began, "belady_bound_s": belady / 1e9,
           "belady_bound_seconds": belady_seconds, "policies": {}}
    for name, policy in list(BASELINES.items()) + [("aggressive-min", aggressive_min)]:
        began = time.perf_counter()
        plan = policy(problem)
        seconds = time.perf_counter() - began
        total = simulate(problem, plan).total
        row["policies"][plan.policy] = {"total_s": total / 1e9, "gap": 1 - bound / total, "seconds": seconds,
                                        "loads": len(plan.loads)}
    best = min(row["policies"].values(), key=lambda r: r["total_s"])
    row["best"] = next(k for k, v in row["policies"].items() if v is best)
    print(f"mixtral {tokens} tokens {level:5s} best {row['best']} gap {100 * best['gap']:.2f}% "
          f"({best['seconds']:.1f} s)", flush=True)
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Expert-switching schedules ({meta['date']}, {meta['machine']['cpus']} CPUs, "
             f"ortools {meta['versions']['ortools']})", "",
             "Total time of each policy replayed by the same simulator (seconds). Baselines: the issue's five "
             "and Cao et al.'s aggressive prefetching (1995). `scheduled`: the rolling-horizon ILP, warm "
             "started from the best of the baselines and codesign's MIN-preserving aggressive heuristic "
             "(codesign/experts/prefetch.py), with rollout (a window keeps the ILP's plan only if that, "
             "followed by the best baseline, is no slower over the whole trace). `hint`: the warm start most "
             "windows took; `ILP kept`: windows whose ILP plan the rollout kept. `window gap`: the largest, over "
             "the 1000-slot windows, of the ILP's gap: its window plan (warm started from the best plan for the "
             "window, whole-trace candidates and the same policies run on the window alone) against the window's "
             "proven lower bound, the larger of CP-SAT's and the combinatorial ones of codesign/experts/bounds.py "
             "(Belady's minimum loads on the link, and the busy-link bound: a transfer in flight takes a frame). "
             "`kept gap`: the same for the pieces of the final plan, which the rollout may take from a whole-trace "
             "candidate that gives up window time for the state it leaves. `trace gap`: the final plan against "
             "the bound of the whole trace. `s`: the longest window's wall time (warm starts, bounds, CP-SAT and "
             "rollout; the limit is 10 s per window, of which the ILP call gets at least 1 s), 2 workers.", "",
             "| scenario | locality | copy-every-request | lru | lfu | belady-prefetch | lookahead | aggressive | "
             "scheduled | / best | hint | ILP kept | window gap | kept gap | trace gap | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["baselines"]
        look = next(v for k, v in b.items() if k.startswith("lookahead"))
        hints = [w["hint"] for w in r["windows"]]
        hint = max(sorted(set(hints)), key=hints.count) if hints else "-"
        lines.append(f"| {r['scenario']} | {r['locality']} | {b['copy-every-request']['total_s']:.3f} | "
                     f"{b['lru']['total_s']:.3f} | {b['lfu']['total_s']:.3f} | {b['belady-prefetch']['total_s']:.3f} | "
                     f"{look['total_s']:.3f} | {b['aggressive']['total_s']:.3f} | **{r['ilp_total_s']:.3f}** | "
                     f"{r['ilp_vs_best']:.4f} | {hint} | "
                     f"{sum(w['ilp_window_kept'] for w in r['windows'])}/{len(r['windows'])} | "
                     f"{100 * r['max_window_gap']:.2f}% | {100 * r['max_kept_gap']:.2f}% | "
                     f"{100 * r['trace_gap']:.2f}% | {r['max_window_wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def long_markdown(rows: list[dict]) -> str:
    lines = ["", f"## Mixtral-8x7B, one window of {rows[0]['steps']} steps (tokens; {rows[0]['slots']} slots)", "",
             "Each policy on the whole trace, its planning time on this machine and its gap to the proven bound "
             "(no ILP): the larger of Belady's (time `s`) and the busy-link bound at the last slot (one min-cost "
             "flow over every slot; its time in `bound s`).", "",
             "| locality | Belady bound | s | bound | bound s | best baseline | gap | s | aggressive-min | gap | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = {k: v for k, v in r["policies"].items() if k != "aggressive-min"}
        name = min(base, key=lambda k: base[k]["total_s"])
        b, h = base[name], r["policies"]["aggressive-min"]
        lines.append(f"| {r['locality']} | {r['belady_bound_s']:.3f} | {r['belady_bound_seconds']:.2f} | "
                     f"{r['bound_s']:.3f} | {r['bound_seconds']:.1f} | {name} {b['total_s']:.3f} | "
                     f"{100 * b['gap']:.2f}% | {b['seconds']:.1f} | {h['total_s']:.3f} | {100 * h['gap']:.2f}% | "
                     f"{h['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="short traces, 2 s limit (smoke run)")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md table from the JSON")
    args = parser.parse_args()
    if args.render:
        data = json.loads((RESULTS / "experts_schedule.json").read_text())
        (RESULTS / "experts_schedule.md").write_text(markdown(data["results"], data["meta"])
                                                     + long_markdown(data["long_window"]))
        return 0
    limit = 2.0 if args.quick else args.time_limit
    rows = [run(name, level, limit, args.window, 100 if args.quick else None)
            for name in SCENARIOS for level in LOCALITY_LEVELS]
    long = [long_window(level, 100 if args.quick else 1000) for level in LOCALITY_LEVELS]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count()},
            "versions": {"python": sys.version.split()[0], "ortools": ortools.__version__, "numpy": np.__version__,
                         "codesign": codesign.__version__},
            "settings": {"time_limit_s": limit, "window_slots": args.window, "workers": 2, "seed": 0,
                         "scenarios": SCENARIOS}}
    stem = "experts_schedule_quick" if args.quick else "experts_schedule"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows, "long_window": long},
                                                     indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(rows, meta) + long_markdown(long))
    print(markdown(rows, meta) + long_markdown(long))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
