"""This session's two CPU changes on families no test or other benchmark names.

    python benchmarks/cpu_unnamed_families.py [--out benchmarks/results/raw/cpu_unnamed_families.json]

- the runtime's erf (`cs_erf`) on transformers' ELECTRA encoder (exact GELU; 2 layers, d=192,
  B=2 S=128, fp32), against the same code with `std::erf` (`cpu_erf.py`'s A/B);
- bf16 convs widened to f32 (`f32_convs`) on transformers' RegNet (default config, bf16, B=2
  64²), against the same code with the widening off (`cpu_half_convs.py`'s A/B).
Same process, interleaved with eager (`cpu_bench.interleaved`), at torch's thread count.
"""

from __future__ import annotations

import argparse
import copy
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
from codesign.codegen.cpp import scalar, wrapper  # noqa: E402
from codesign.ir.scalar import Prim  # noqa: E402
from cpu_bench import interleaved  # noqa: E402
from cpu_erf import LastHidden  # noqa: E402
from model_zoo_gpu import rel_err  # noqa: E402


def main() -> None:
    import transformers as T
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/raw/cpu_unnamed_families.json")
    args = p.parse_args()
    torch.manual_seed(0)
    rows = {}
    with torch.no_grad():
        electra = LastHidden(T.ElectraModel(T.ElectraConfig(
            vocab_size=1000, embedding_size=192, hidden_size=192, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=768)).eval())
        ids = torch.randint(0, 1000, (2, 128), generator=torch.Generator().manual_seed(1))
        ours = codesign.compile(electra, (ids,), target="cpu-host")
        ours(ids)
        with mock.patch.dict(scalar.UNARY, {Prim.erf: scalar._unary_math("erf")}):
            before = codesign.compile(electra, (ids,), target="cpu-host")
            before(ids)
        ms = interleaved({"eager": lambda: electra(ids), "cs_erf": lambda: ours(ids), "std_erf": lambda: before(ids)},
                         20)
        rows["electra_fp32"] = {"ms": {k: round(v * 1e3, 3) for k, v in ms.items()},
                                "rel_err_vs_eager": float(f"{rel_err(ours(ids), electra(ids)):.3g}")}
        regnet = LastHidden(T.RegNetModel(T.RegNetConfig()).eval())
        regnet16 = copy.deepcopy(regnet).to(torch.bfloat16)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        xb = x.to(torch.bfloat16)
        ours = codesign.compile(regnet16, (xb,), target="cpu-host")
        ours(xb)
        with mock.patch.object(wrapper, "f32_convs", lambda graph: graph):
            loops = codesign.compile(regnet16, (xb,), target="cpu-host")
            loops(xb)
        ms = interleaved({"eager": lambda: regnet16(xb), "widened": lambda: ours(xb), "loops": lambda: loops(xb)}, 5)
        ref = regnet(x)
        rows["regnet_bf16"] = {"ms": {k: round(v * 1e3, 3) for k, v in ms.items()},
                               "rel_err_vs_f32": {"ours": float(f"{rel_err(ours(xb), ref):.3g}"),
                                                  "eager": float(f"{rel_err(regnet16(xb), ref):.3g}")}}
    for name, row in rows.items():
        print(name, row, flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "load_average": [round(v, 2) for v in os.getloadavg()]}
    Path(args.out).write_text(json.dumps({"environment": env, "cases": rows}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
