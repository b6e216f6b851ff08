"""How long capture and compile take on this machine, for models too big to run here.

Meta-device Llama-2-7B (32 layers, built from its transformers config, no weights): capture
through torch.export, then the compile pipeline for one SN40L socket. The goal is capture
in under 60 s on a 2-core machine. Writes benchmarks/results/capture_time.json.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codesign  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    model, inputs = codesign.load_factory(str(ROOT / "examples/llama.py:llama2_7b_meta"))
    start = time.perf_counter()
    captured = codesign.capture(model, inputs)
    capture_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = codesign.compile(captured, target="sn40l")
    compile_s = time.perf_counter() - start
    summary = compiled.summary()
    result = {
        "benchmark": "capture_time",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "codesign": codesign.__version__},
        "model": "Llama-2-7B (meta device, batch 1, seq 128)",
        "capture_seconds": round(capture_s, 2),
        "pipeline_seconds": round(compile_s, 2),
        "nodes": summary["nodes"],
        "parameters": summary["parameters"],
        "kernels": summary["fusion"]["fused_kernels"],
        "predicted_speedup_fused_vs_unfused": round(summary["fusion"]["speedup"], 2),
    }
    out = ROOT / "benchmarks/results/capture_time.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
