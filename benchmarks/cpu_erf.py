"""Exact-GELU models through the C++ backend: the runtime's vectorisable erf vs std::erf.

    python benchmarks/cpu_erf.py [--out benchmarks/results/cpu_erf.json]

BERT and ViT (transformers configs, 2 layers, d=192, random weights, fp32; BERT B=2 S=128,
ViT B=2 224²) compiled for `cpu-host` twice in one process — once as the code is
(`cs_erf`), once with erf rendered as `std::erf` (the code before it) — and timed
interleaved with eager at torch's thread count, medians of 30 rounds; each checked against
eager first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codesign  # noqa: E402
from cpu_bench import interleaved  # noqa: E402
from codesign.codegen.cpp import scalar  # noqa: E402
from codesign.ir.scalar import Prim  # noqa: E402


class LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).last_hidden_state


def cases():
    import transformers as T
    kw = dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=4, intermediate_size=768)
    yield "bert", LastHidden(T.BertModel(T.BertConfig(vocab_size=1000, **kw)).eval()), \
        torch.randint(0, 1000, (2, 128), generator=torch.Generator().manual_seed(1))
    yield "vit", LastHidden(T.ViTModel(T.ViTConfig(image_size=224, patch_size=16, **kw)).eval()), \
        torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/cpu_erf.json")
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    torch.manual_seed(0)
    rows = {}
    with torch.no_grad():
        for name, model, x in cases():
            ours = codesign.compile(model, (x,), target="cpu-host")
            ours(x)
            with mock.patch.dict(scalar.UNARY, {Prim.erf: scalar._unary_math("erf")}):
                before = codesign.compile(model, (x,), target="cpu-host")
                before(x)  # the program is built at the first call: inside the patch
            want = model(x)
            err = {k: ((m(x) - want).norm() / want.norm()).item() for k, m in (("cs_erf", ours), ("std_erf", before))}
            fns = {"eager": lambda: model(x), "cs_erf": lambda: ours(x), "std_erf": lambda: before(x)}
            ms = {k: round(v * 1e3, 3) for k, v in interleaved(fns, args.rounds).items()}
            rows[name] = {"ms": ms, "rel_err": {k: float(f"{v:.3g}") for k, v in err.items()},
                          "cs_erf_vs_eager": round(ms["eager"] / ms["cs_erf"], 3),
                          "std_erf_vs_eager": round(ms["eager"] / ms["std_erf"], 3),
                          "gain": round(ms["std_erf"] / ms["cs_erf"], 3)}
            print(name, rows[name], flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "load_average": [round(v, 2) for v in os.getloadavg()]}
    Path(args.out).write_text(json.dumps({"environment": env, "cases": rows}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
