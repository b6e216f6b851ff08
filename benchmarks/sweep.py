"""Co-design sweeps (issue 15): how fast, how reproducible, and what they find.

Cases (meta device for the large models, bf16, compile()'s analytic pipeline per variant):
  * tiny   — tiny LLaMA (examples/llama.py:tiny) on sn40l, 200 variants (SRAM x HBM bandwidth x
             DDR bandwidth x HBM energy per byte): serial time, the same sweep on a 2-worker
             local Ray cluster (rows compared byte for byte), and 20 variants without reuse
             (same rows; the time reuse saves);
  * llama7b — Llama-2-7B on sn40l, SRAM 64 MiB .. 1 GiB (x1.5 and x1.33 steps: 64, 96, 128, 192 ... MiB): where a whole
             decoder layer starts to fit on chip (the fuse pass's own decisions);
  * search — Optuna over SRAM x HBM bandwidth x peak for tiny LLaMA (time, SRAM, cost; area
             <= 450 mm2): the Pareto front, each point evaluated again from scratch;
  * moe    — a Mixtral-8x7B-shaped model (4 layers, 8 experts of 352 MB, top-2) on sn40l, HBM
             capacity 2 .. 16 GB: where expert switching stops dominating (the expert
             scheduler's simulated stall).

Writes benchmarks/results/sweep_<case>.json (rows, findings, timings, machine, versions, load)
and the sensitivity PNGs beside them.

    .venv/bin/python benchmarks/sweep.py [--case tiny|llama7b|moe|search|all] [--time-limit 2]
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import codesign  # noqa: E402
from codesign.explore.evaluate import Evaluator  # noqa: E402
from codesign.explore.plots import sensitivity_plot  # noqa: E402
from codesign.explore.space import Space  # noqa: E402
from codesign.explore.summary import summarize_sweep  # noqa: E402
from codesign.explore.runner import run_sweep  # noqa: E402
from codesign.targets import load_target  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

TINY_SPACE = ["sram.capacity=64KiB..1MiB:x2", "hbm.bandwidth=1TB/s,1.8TB/s,2.4TB/s,3.2TB/s",
              "ddr.bandwidth=100GB/s..300GB/s:+50GB/s", "hbm.energy_per_byte=20pJ,31pJ"]
LLAMA_SPACE = ["sram.capacity=64MiB,96MiB,128MiB,192MiB,256MiB,384MiB,512MiB,768MiB,1GiB"]
MOE_SPACE = ["hbm.capacity=2GB..16GB:+2GB"]


def _machine() -> dict:
    import ortools
    versions = {"python": platform.python_version(), "torch": torch.__version__, "ortools": ortools.__version__,
                "codesign": codesign.__version__}
    for name in ("optuna", "ray", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count()},
            "versions": versions}


def _finish(name: str, space: Space, rows: list, evaluator: Evaluator, extra: dict, title: str) -> dict:
    findings = summarize_sweep(space, rows)
    png = sensitivity_plot(space, rows, RESULTS / f"sweep_{name}.png", title=title)
    data = {"benchmark": "sweep", "case": name, **_machine(), "target": space.base.name,
            "pipeline": evaluator.pipeline, "time_limit_s": evaluator.time_limit, "space": space.describe(),
            "pass_runs": evaluator.cache.runs, "pass_reuse_hits": evaluator.cache.hits,
            "load_average_at_end": list(os.getloadavg()), **extra, "findings": findings,
            "plot": str(png.relative_to(ROOT)), "rows": rows}
    (RESULTS / f"sweep_{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    print("\n".join(findings["lines"]))
    return data


def tiny(time_limit: float) -> None:
    from llama import tiny as factory
    model, inputs = factory()
    t0 = time.perf_counter()
    evaluator = Evaluator.from_model(model.to(torch.bfloat16), inputs, time_limit=time_limit)
    capture_s = time.perf_counter() - t0
    space = Space.parse(load_target("sn40l"), TINY_SPACE)
    t0 = time.perf_counter()
    rows = run_sweep(evaluator, space, progress=True)
    serial_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray_rows = run_sweep(Evaluator(evaluator.graph, time_limit=time_limit), space, ray=True, workers=2, progress=True)
    ray_s = time.perf_counter() - t0
    subset = list(space)[:20]
    t0 = time.perf_counter()
    plain = run_sweep(Evaluator(evaluator.graph, time_limit=time_limit, reuse=False), space, variants=subset)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reused = run_sweep(Evaluator(evaluator.graph, time_limit=time_limit), space, variants=subset)
    reused_s = time.perf_counter() - t0
    extra = {"variants": len(space), "capture_s": round(capture_s, 2), "serial_s": round(serial_s, 2),
             "ray_workers": 2, "ray_s": round(ray_s, 2),
             "ray_rows_identical": json.dumps(ray_rows) == json.dumps(rows),
             "reuse_check": {"variants": len(subset), "without_reuse_s": round(plain_s, 2),
                             "with_reuse_s": round(reused_s, 2), "rows_identical": plain == reused == rows[:20]}}
    print(json.dumps(extra, indent=1))
    _finish("tiny_llama", space, rows, evaluator, extra, "tiny LLaMA (bf16) on sn40l variants")


def llama7b(time_limit: float) -> None:
    from llama import llama2_7b_config
    from hf_causal_lm import LogitsOnly
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LogitsOnly(LlamaForCausalLM(llama2_7b_config())).eval().to(torch.bfloat16)
        ids = torch.zeros(1, 128, dtype=torch.int64)
    t0 = time.perf_counter()
    evaluator = Evaluator.from_model(model, (ids,), time_limit=time_limit)
    capture_s = time.perf_counter() - t0
    space = Space.parse(load_target("sn40l"), LLAMA_SPACE)
    t0 = time.perf_counter()
    rows = run_sweep(evaluator, space, progress=True)
    extra = {"model": "Llama-2-7B (meta, bf16, 1 x 128 tokens)", "variants": len(space),
             "capture_s": round(capture_s, 2), "serial_s": round(time.perf_counter() - t0, 2)}
    print(json.dumps(extra, indent=1))
    _finish("llama2_7b", space, rows, evaluator, extra, "Llama-2-7B (bf16, 128 tokens) on sn40l: SRAM capacity")


def moe(time_limit: float) -> None:
    from hf_causal_lm import LogitsOnly
    from transformers import MixtralConfig, MixtralForCausalLM
    config = MixtralConfig(hidden_size=4096, num_hidden_layers=4, num_attention_heads=32, num_key_value_heads=8,
                           intermediate_size=14336, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2,
                           max_position_embeddings=4096, use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LogitsOnly(MixtralForCausalLM(config)).eval().to(torch.bfloat16)
        ids = torch.zeros(1, 128, dtype=torch.int64)
    t0 = time.perf_counter()
    evaluator = Evaluator.from_model(model, (ids,), time_limit=time_limit)
    capture_s = time.perf_counter() - t0
    space = Space.parse(load_target("sn40l"), MOE_SPACE)
    t0 = time.perf_counter()
    rows = run_sweep(evaluator, space, progress=True)
    extra = {"model": "Mixtral-8x7B-shaped, 4 layers (meta, bf16, 1 x 128 tokens; 8 experts of 352 MB a layer)",
             "variants": len(space), "capture_s": round(capture_s, 2), "serial_s": round(time.perf_counter() - t0, 2)}
    print(json.dumps(extra, indent=1))
    _finish("moe", space, rows, evaluator, extra, "Mixtral-8x7B-shaped (4 layers) on sn40l: HBM capacity")


SEARCH_SPACE = ["sram.capacity=64KiB..4MiB:x2", "hbm.bandwidth=1TB/s,1.8TB/s,2.4TB/s,3.2TB/s",
                "compute.peak.bf16=300TFLOP/s..900TFLOP/s:+150TFLOP/s"]


def search(time_limit: float) -> None:
    """Optuna NSGA-II over three fields (time, SRAM, cost; area <= 450 mm2); every front point
    evaluated again from scratch (no reuse) must give the same figures."""
    from llama import tiny as factory
    from codesign.explore.pareto import parse_constraint, parse_objectives
    from codesign.explore.plots import pareto_plot
    from codesign.explore.search import run_search
    model, inputs = factory()
    evaluator = Evaluator.from_model(model.to(torch.bfloat16), inputs, time_limit=time_limit)
    base = load_target("sn40l")
    space = Space.parse(base, SEARCH_SPACE)
    columns = ["time_s", "area_mm2", "cost_usd"]
    objectives = parse_objectives("time,sram.capacity,cost", base, columns)
    constraints = [parse_constraint("area<=450", base, columns)]
    t0 = time.perf_counter()
    result = run_search(evaluator, space, objectives, constraints, trials=60, seed=0, progress=True)
    search_s = time.perf_counter() - t0
    fresh = Evaluator(evaluator.graph, time_limit=time_limit, reuse=False)
    same = all({k: row[k] for k in again} == again for row in result.front
               for again in [fresh.evaluate(space.variant({a.name: row[a.name] for a in space.axes}).target(base))])
    png = pareto_plot(result.rows, result.front, objectives, RESULTS / "sweep_search.png",
                      title="tiny LLaMA on sn40l: time vs SRAM vs cost (area <= 450 mm2)")
    data = {"benchmark": "sweep", "case": "search", **_machine(), "load_average_at_end": list(os.getloadavg()),
            "space": space.describe(), "space_size": len(space), "objectives": "time,sram.capacity,cost",
            "constraints": ["area<=450"], "trials": 60, "distinct_variants": len(result.rows),
            "search_s": round(search_s, 2), "front_size": len(result.front), "front_reevaluates_identically": same,
            "front": result.front, "plot": str(png.relative_to(ROOT)), "rows": result.rows}
    (RESULTS / "sweep_search.json").write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: data[k] for k in ("distinct_variants", "search_s", "front_size",
                                           "front_reevaluates_identically")}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("tiny", "llama7b", "moe", "search", "all"), default="all")
    parser.add_argument("--time-limit", type=float, default=2.0, help="CP-SAT deterministic seconds per solve")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for case, run in (("tiny", tiny), ("llama7b", llama7b), ("moe", moe), ("search", search)):
        if args.case in (case, "all"):
            run(args.time_limit)


if __name__ == "__main__":
    main()
