"""Dataflow mapping benchmark (issue 19): Llama-2 decoder layers as SN40L pipelines.

Cases (meta device, bf16, batch 1, pipeline canonicalize,dce,fuse,tile,map — predicted,
no hardware): Llama-2-7B on one sn40l socket and Llama-2-70B on an sn40l node (8 sockets,
tensor-parallel), each at a prefill of 128 and 2048 tokens. Per case: every decoder layer
mapped (distinct layers solved once), the time of a layer as mapped (pipeline) beside its
roofline, fused (one streamed kernel a layer) vs unfused (one kernel an op, as eager
launches them), tokens/s of the whole prefill, heuristic vs CP-SAT predicted times, solve
times and gaps. Assumptions: docs/dataflow_mapping.md. Writes
benchmarks/results/dataflow_mapping.json.

    .venv/bin/python benchmarks/dataflow_mapping.py [--tokens 128 2048] [--layers N] [--time-limit 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import codesign  # noqa: E402
from codesign.cost.model import CostModel  # noqa: E402
from codesign.cost.report import eager_kernels  # noqa: E402
from codesign.ir.kernels import kernels  # noqa: E402
from codesign.mapping.cpsat import solve  # noqa: E402
from codesign.mapping.heuristic import best_tiles  # noqa: E402
from codesign.mapping.problem import profile_kernel  # noqa: E402
from codesign.passes.manager import PassContext, PassManager  # noqa: E402
from codesign.targets import load_target  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def build(which: str, tokens: int, layers: int | None):
    """Llama-2-7B or -70B (its published hyper-parameters) on the meta device, bf16."""
    from llama import llama2_7b_config
    from placement_llama import llama_meta
    from transformers import LlamaConfig
    config = llama2_7b_config() if which == "llama2-7b" else LlamaConfig(
        hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
        intermediate_size=28672, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
        tie_word_embeddings=False, use_cache=False, attn_implementation="sdpa")
    if layers:
        config.num_hidden_layers = layers
    return llama_meta(config, tokens)


def run_case(which: str, target_name: str, tokens: int, layers: int | None, time_limit: float) -> dict:
    target = load_target(target_name)
    model, inputs = build(which, tokens, layers)
    t0 = time.perf_counter()
    captured = codesign.capture(model, inputs)
    capture_s = time.perf_counter() - t0
    ctx = PassContext(target=target)
    t0 = time.perf_counter()
    graph = PassManager("canonicalize,dce,fuse,tile").run(captured.graph, ctx)
    passes_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mapped = PassManager(f"map{{time_limit={time_limit}}}").run(graph, ctx)
    map_s = time.perf_counter() - t0
    cost = CostModel(target).graph_cost(mapped)
    unfused = CostModel(target).graph_cost(captured.graph, eager_kernels(captured.graph))
    by_key = cost.by_key()
    layer_groups = [g for g in mapped.groups if g.plan.is_layer]
    decisions = {d.subject.split()[0]: d for d in ctx.ledger.by_pass("map")}
    distinct: dict = {}
    types = mapped.types()
    for kernel in kernels(mapped):
        if kernel.group is None or not kernel.group.plan.is_layer:
            continue
        profile = profile_kernel(mapped, kernel, target, types)
        if profile.signature() in distinct:
            distinct[profile.signature()]["layers"].append(kernel.key)
            continue
        t1 = time.perf_counter()
        problem, baseline, base_cost = best_tiles(profile)
        heuristic_solve = time.perf_counter() - t1
        solution = solve(problem, baseline, time_limit)
        k = by_key[kernel.key]
        p = k.pipeline
        distinct[profile.signature()] = {
            "layers": [kernel.key], "stages": [s.name for s in p.stages], "tiles": p.tiles,
            "sections": len(p.sections), "units": [s.units for s in p.stages], "memory_units": [s.memory for s in p.stages],
            "stage_times_s": [s.ps / 1e12 for s in p.stages], "mapped_time_s": k.time, "roofline_time_s": k.roofline_time,
            "bound": k.bound, "bottleneck": p.why(k.problem),
            "heuristic_time_s": decisions[kernel.key].data["heuristic_s"], "cpsat_time_s": decisions[kernel.key].data["cpsat_s"],
            "gap": decisions[kernel.key].data["gap"], "status": decisions[kernel.key].data["status"],
            "heuristic_solve_s": round(heuristic_solve, 4), "cpsat_solve_s": round(solution.seconds, 3),
            "map_solve_s": round(heuristic_solve + solution.seconds, 3),
        }
    fused_layers = sum(by_key[f"g{g.id}"].time for g in layer_groups)
    total = cost.time
    row = {
        "model": which, "target": target_name, "sockets": target.sockets, "tokens": tokens,
        "decoder_layers": len(layer_groups), "all_layers_mapped": all(g.plan.is_mapped for g in layer_groups),
        "distinct_layers": list(distinct.values()),
        "layer_time_mapped_s": fused_layers / max(len(layer_groups), 1),
        "layer_time_roofline_s": sum(by_key[f"g{g.id}"].roofline_time for g in layer_groups) / max(len(layer_groups), 1),
        "model_time_fused_s": total, "model_time_unfused_s": unfused.time, "fused_speedup": unfused.time / total,
        "unfused_kernels": unfused.launches, "fused_kernels": cost.launches,
        "tokens_per_s": tokens / total, "capture_s": round(capture_s, 1), "passes_s": round(passes_s, 1),
        "map_pass_s": round(map_s, 1),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--layers", type=int, default=None, help="override the layer count (smoke runs)")
    parser.add_argument("--time-limit", type=float, default=1.0, help="CP-SAT deterministic time per distinct layer")
    parser.add_argument("--out", type=Path, default=RESULTS / "dataflow_mapping.json")
    args = parser.parse_args()
    rows = []
    for which, target in (("llama2-7b", "sn40l"), ("llama2-70b", "sn40l-node")):
        for tokens in args.tokens:
            row = run_case(which, target, tokens, args.layers, args.time_limit)
            rows.append(row)
            worst = max(d["map_solve_s"] for d in row["distinct_layers"])
            print(f"{which} on {target}, {tokens} tokens: {row['decoder_layers']} layers mapped "
                  f"({len(row['distinct_layers'])} distinct, slowest solve {worst:.2f} s); layer "
                  f"{row['layer_time_mapped_s'] * 1e6:.1f} us mapped vs {row['layer_time_roofline_s'] * 1e6:.1f} us "
                  f"roofline; fused {row['fused_speedup']:.2f}x over unfused; {row['tokens_per_s']:.0f} tokens/s")
            for d in row["distinct_layers"]:
                print(f"   {d['layers'][0]} (+{len(d['layers']) - 1}): heuristic {d['heuristic_time_s'] * 1e6:.1f} us, "
                      f"CP-SAT {d['cpsat_time_s'] * 1e6:.1f} us (gap {d['gap']:.2%}, {d['status']}), "
                      f"solve {d['map_solve_s']:.2f} s; bound {d['bound']}: {d['bottleneck']}")
    out = {
        "benchmark": "dataflow_mapping", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": __import__("os").cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "ortools": __import__("ortools").__version__, "codesign": codesign.__version__},
        "settings": {"dtype": "bf16", "batch": 1, "tokens": args.tokens, "layers": args.layers,
                     "cpsat_deterministic_time_s": args.time_limit, "cost_model": "ideal (datasheet peaks), predicted",
                     "assumptions": "docs/dataflow_mapping.md"},
        "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
