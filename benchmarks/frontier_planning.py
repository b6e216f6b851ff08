"""Frontier planning: how long capture, each pass and placement take for frontier-size models.

Models are built from their transformers configurations on the meta device (no weights, no
download), bf16, one prefill of 128 tokens, and compiled by `codesign.compile` with the
default pipeline (placement included). Timed apart: building the model (the user's code,
not ours), capture (torch.export of the traced layers, conversion, stamping out the rest),
and every pass (PassManager timings). Cases: Llama-2-7B on sn40l, Llama-2-70B on sn40l-node,
Llama-3.1-405B on sn40l-x16 (16 sockets), Mixtral-8x22B on sn40l-node; each also with half
its layers, so that what doubling the layers costs is measured in the same run. `--no-reuse`
traces every layer (the old behaviour). The machine is shared: the load average is recorded
with every figure. Writes benchmarks/results/frontier_planning.json.

    .venv/bin/python benchmarks/frontier_planning.py [--cases llama2-70b,...] [--no-reuse]
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
from codesign.passes.manager import PassManager  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def llama(hidden, layers, heads, kv, inter, vocab, tie=False):
    from transformers import LlamaConfig
    return "llama", LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                                max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                                use_cache=False, attn_implementation="sdpa")


def mixtral_8x22b(layers):
    from transformers import MixtralConfig
    return "mixtral", MixtralConfig(hidden_size=6144, num_hidden_layers=layers, num_attention_heads=48,
                                    num_key_value_heads=8, intermediate_size=16384, vocab_size=32768,
                                    num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=4096,
                                    use_cache=False, attn_implementation="sdpa")


CASES = {  # name: (config factory of the layer count, layers, target)
    "llama2-7b": (lambda n: llama(4096, n, 32, 32, 11008, 32000), 32, "sn40l"),
    "llama2-70b": (lambda n: llama(8192, n, 64, 8, 28672, 32000), 80, "sn40l-node"),
    "llama3.1-405b": (lambda n: llama(16384, n, 128, 8, 53248, 128256), 126, "sn40l-x16"),
    "mixtral-8x22b": (mixtral_8x22b, 56, "sn40l-node"),
}


def build(kind, config):
    from hf_causal_lm import LogitsOnly
    from transformers import LlamaForCausalLM, MixtralForCausalLM
    cls = LlamaForCausalLM if kind == "llama" else MixtralForCausalLM
    with torch.device("meta"):
        model = LogitsOnly(cls(config)).eval().to(torch.bfloat16)
        ids = torch.zeros(1, 128, dtype=torch.int64)
    return model, (ids,)


def timed_compile(name: str, layers: int, target: str, reuse: bool) -> dict:
    factory = CASES[name][0]
    t0 = time.perf_counter()
    model, inputs = build(*factory(layers))
    built = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    t1 = time.perf_counter()
    captured = codesign.capture(model, inputs, reuse=reuse)
    capture_s = time.perf_counter() - t1
    timings = {}
    original = PassManager.run

    def run(self, graph, ctx):  # keep the manager's own per-pass timings
        out = original(self, graph, ctx)
        timings.update({f"{t.index}:{t.name}": round(t.seconds, 3) for t in self.timings})
        return out

    PassManager.run = run
    try:
        t2 = time.perf_counter()
        compiled = codesign.compile(captured, target=target)
        compile_s = time.perf_counter() - t2
    finally:
        PassManager.run = original
    summary = compiled.summary()
    placement = summary.get("placement") or {}
    row = {"model": name, "layers": layers, "target": target, "reuse": reuse,
           "build_model_s": round(built, 2), "capture_s": round(capture_s, 2), "passes_s": timings,
           "compile_s": round(compile_s, 2), "end_to_end_s": round(capture_s + compile_s, 2),
           "nodes": len(compiled.graph.nodes), "kernels": len(compiled.graph.groups),
           "predicted_time_s": placement.get("time"),
           "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--no-reuse", action="store_true", help="trace every layer (capture(reuse=False))")
    parser.add_argument("--no-half", action="store_true", help="skip the half-layer runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontier_planning.json")
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        _, layers, target = CASES[name]
        if not args.no_half:
            rows.append(timed_compile(name, layers // 2, target, not args.no_reuse))
        rows.append(timed_compile(name, layers, target, not args.no_reuse))
    import transformers
    result = {"benchmark": "frontier_planning", "date": datetime.date.today().isoformat(),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "note": "shared 2-core machine; load average (1 min) before and after each run"},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "codesign": codesign.__version__},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
