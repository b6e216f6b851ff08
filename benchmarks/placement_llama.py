"""Placement benchmark: ILP (CP-SAT, warm-started) vs the SN40L greedy rule on Llama-2.

Cases (meta device, bf16, one prefill of 128 tokens, pipeline canonicalize,dce,fuse,tile):
  * Llama-2-7B on one sn40l socket;
  * Llama-2-70B on an sn40l node (8 sockets, tensor-parallel weights);
  * Llama-2-70B on one sn40l socket (138 GB of weights: must spill to DDR).

Each case is solved within a 60 s budget (`--time-limit`, default 20 s of CP-SAT per
placement attempt — a fragmentation re-placement is a second attempt — plus the greedy and
the offsets; the reported solve time counts every attempt). Writes
benchmarks/results/placement_llama.json and .md.

    .venv/bin/python benchmarks/placement_llama.py [--time-limit 20] [--layers N]
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

import codesign  # noqa: E402
from codesign.passes.manager import PassContext, PassManager  # noqa: E402
from codesign.placement import build_problem, memory_plot, place_problem, render  # noqa: E402
from codesign.targets import load_target  # noqa: E402
from codesign.targets.units import format_bytes  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def llama_meta(config, tokens: int = 128):
    from hf_causal_lm import LogitsOnly
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LogitsOnly(LlamaForCausalLM(config)).eval().to(torch.bfloat16)
        ids = torch.zeros(1, tokens, dtype=torch.int64)
    return model, (ids,)


def llama2_7b_bf16(layers: int | None = None):
    from llama import llama2_7b_config
    config = llama2_7b_config()
    if layers:
        config.num_hidden_layers = layers
    return llama_meta(config)


def llama2_70b_bf16(layers: int | None = None):
    """Llama-2-70B: hidden 8192, 80 layers, 64 heads, 8 KV heads, intermediate 28672."""
    from transformers import LlamaConfig
    config = LlamaConfig(hidden_size=8192, num_hidden_layers=layers or 80, num_attention_heads=64,
                         num_key_value_heads=8, intermediate_size=28672, vocab_size=32000,
                         max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         use_cache=False, attn_implementation="sdpa")
    return llama_meta(config)


def lowered(factory, target_name: str):
    t0 = time.perf_counter()
    model, inputs = factory()
    captured = codesign.capture(model, inputs)
    t1 = time.perf_counter()
    graph = PassManager("canonicalize,dce,fuse,tile").run(captured.graph, PassContext(target=load_target(target_name)))
    return graph, t1 - t0, time.perf_counter() - t1


def run_case(label, graph, target_name, time_limit, plots: Path):
    target = load_target(target_name)
    t0 = time.perf_counter()
    problem = build_problem(graph, target)
    built = time.perf_counter() - t0
    plan = place_problem(problem, time_limit=time_limit, progress=True, target=target)
    total = built + plan.solve_seconds
    print(render(plan))
    png = memory_plot(plan, plots / f"placement_{label}.png")
    shares = {}
    for t in plan.tensors:
        for tier, f in t.shares:
            shares[tier] = shares.get(tier, 0) + t.nbytes * f
    weights_ddr = sum(t.nbytes * f for t in plan.tensors if t.kind == "weights" for tier, f in t.shares if tier == "ddr")
    return {
        "case": label, "target": target_name, "sockets": target.sockets,
        "kernels": len(problem.steps), "tensors": len(problem.tensors),
        "ilp_time_s": plan.time, "greedy_time_s": plan.greedy_time,
        "greedy_over_ilp": plan.speedup, "method": plan.method, "status": plan.status,
        "bound_s": plan.bound, "gap": plan.gap, "solve_s": round(total, 2),
        "bytes_per_tier_per_socket": {k: int(v) for k, v in shares.items()},
        "weights_in_ddr_per_socket": int(weights_ddr),
        "moved_per_run": {k: int(v) for k, v in plan.moved},
        "tiers": [{"tier": u.tier, "capacity": u.capacity, "peak_live": u.peak_live,
                   "peak_address": u.peak_address, "fragmentation": round(u.fragmentation, 4),
                   "offsets": u.offsets} for u in plan.tiers],
        "plot": str(png.relative_to(ROOT)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=20.0,
                        help="CP-SAT wall-clock limit per placement attempt (s); a fragmentation re-placement is a second attempt")
    parser.add_argument("--layers", type=int, default=None, help="override the layer count (smoke runs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "placement_llama.json")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, lowering = [], {}
    g7, cap7, pass7 = lowered(lambda: llama2_7b_bf16(args.layers), "sn40l")
    lowering["llama2-7b"] = {"capture_s": round(cap7, 1), "passes_s": round(pass7, 1), "nodes": len(g7.nodes)}
    rows.append(run_case("llama2-7b_sn40l", g7, "sn40l", args.time_limit, RESULTS))
    g70, cap70, pass70 = lowered(lambda: llama2_70b_bf16(args.layers), "sn40l")
    lowering["llama2-70b"] = {"capture_s": round(cap70, 1), "passes_s": round(pass70, 1), "nodes": len(g70.nodes)}
    # the tiling pass sizes chip tiles per socket, so one tiled graph serves both targets
    rows.append(run_case("llama2-70b_sn40l-node", g70, "sn40l-node", args.time_limit, RESULTS))
    rows.append(run_case("llama2-70b_sn40l", g70, "sn40l", args.time_limit, RESULTS))
    import ortools
    data = {
        "benchmark": "placement_llama", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": __import__("os").cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "ortools": ortools.__version__, "codesign": codesign.__version__},
        "settings": {"dtype": "bf16", "tokens": 128, "batch": 1, "time_limit_s": args.time_limit,
                     "split": 4, "reserve_fast_tier": 0.5, "stage_share_of_home": 1 / 16, "layers": args.layers},
        "lowering": lowering, "cases": rows,
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    md = [f"# Placement: ILP vs SN40L greedy on Llama-2 (bf16, 128-token prefill)", "",
          f"{data['date']} · {data['machine']['platform']} · {data['machine']['cpus']} CPUs · python "
          f"{data['versions']['python']} · torch {data['versions']['torch']} · ortools {data['versions']['ortools']}"
          f" · produced by `benchmarks/placement_llama.py` (CP-SAT limit {args.time_limit:g} s)", "",
          "Predicted time per run from the codesign cost model with per-tensor tiers (lower is better).", "",
          "| case | sockets | kernels | tensors | greedy (SN40L rule) | ILP | greedy / ILP | status | gap "
          "| solve (s) | weights in DDR / socket | DDR->HBM per run |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['case']} | {r['sockets']} | {r['kernels']} | {r['tensors']} | "
                  f"{r['greedy_time_s'] * 1e3:.4f} ms | {r['ilp_time_s'] * 1e3:.4f} ms | "
                  f"{r['greedy_over_ilp']:.4f}x | {r['method']} {r['status']} | "
                  f"{(r['gap'] or 0):.2%} | {r['solve_s']} | {format_bytes(r['weights_in_ddr_per_socket'])} | "
                  f"{format_bytes(r['moved_per_run'].get('ddr->hbm', 0))} |")
    md += ["", "Peak use per tier (per socket): " + "; ".join(
        f"{r['case']}: " + ", ".join(f"{u['tier']} {format_bytes(u['peak_live'])} (addr {format_bytes(u['peak_address'])})"
                                     for u in r["tiers"]) for r in rows), ""]
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
