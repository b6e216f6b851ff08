"""Triton GEMM tiles against cuBLAS on decoder shapes, plain and with a norm computed into A.

    python benchmarks/gemm_tiles_gpu.py [--out benchmarks/results/gemm_tiles_h200.json]

What chose `codesign.codegen.triton.kernels.GEMM_TILES`: a pointer-load GEMM written as the
generated one is (grouped launch order, a [N, K] weight read transposed), timed by
`do_bench` medians at ten block / warp / stage configurations on seven bf16 shapes of the
zoo's Llama and Phi-3, once reading A as it is and once computing it as RMSNorm's
`(x * r).to(bf16) * w` from an f32 x (a fused prologue), beside `torch.mm` (and the same
prologue through torch). Each result is checked against torch's product first.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

@triton.jit
def mm(a_ptr, b_ptr, c_ptr, r_ptr, w_ptr, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
       PRO: tl.constexpr):
    pid = tl.program_id(0)
    npm = tl.cdiv(M, BLOCK_M); npn = tl.cdiv(N, BLOCK_N)
    group_id = pid // (GROUP_M * npn)
    first_m = group_id * GROUP_M
    gs = tl.minimum(npm - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * npn)) % gs
    pid_n = (pid % (GROUP_M * npn)) // gs
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if PRO:
        r = tl.load(r_ptr + offs_m)
    for k0 in range(0, K, BLOCK_K):
        offs_k = (k0 + tl.arange(0, BLOCK_K))[None, :]
        offs_kt = (k0 + tl.arange(0, BLOCK_K))[:, None]
        if PRO:
            x = tl.load(a_ptr + offs_m * K + offs_k)
            a = (x * r).to(tl.bfloat16) * tl.load(w_ptr + offs_k)
        else:
            a = tl.load(a_ptr + offs_m * K + offs_k)
        b = tl.load(b_ptr + offs_n * K + offs_kt)
        acc += tl.dot(a, b)
    tl.store(c_ptr + offs_m * N + offs_n, acc.to(tl.bfloat16))

CONFIGS = [(128,128,64,8,3), (128,128,64,4,4), (128,256,64,8,3), (256,128,64,8,3), (128,128,64,8,4),
           (64,256,64,4,4), (128,64,64,4,4), (64,128,64,4,4), (128,256,64,8,4), (128,128,32,4,4)]
SHAPES = {"llama q/o": (4096, 2048, 2048), "llama gate/up": (4096, 2048, 5632), "llama down": (4096, 5632, 2048),
          "llama lm_head": (4096, 2048, 32000), "phi3 qkv": (4096, 3072, 9216), "phi3 gate_up": (4096, 3072, 16384),
          "phi3 down": (4096, 8192, 3072)}
p = argparse.ArgumentParser()
p.add_argument("--out", default="benchmarks/results/gemm_tiles_h200.json")
args = p.parse_args()
rows = []
for label, (M, K, N) in SHAPES.items():
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
    x = a.float()
    b = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) / K ** 0.5
    r = torch.rand(M, device="cuda", generator=g) + 0.5
    w = torch.randn(K, device="cuda", dtype=torch.bfloat16, generator=g)
    c = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    lib = do_bench(lambda: torch.mm(a, b.t()), return_mode="median")
    lib_pro = do_bench(lambda: torch.mm((x * r[:, None]).to(torch.bfloat16) * w, b.t()), return_mode="median")
    ref = torch.mm(a, b.t()).float()
    ref_pro = torch.mm((x * r[:, None]).to(torch.bfloat16) * w, b.t()).float()
    row = {"shape": label, "M": M, "K": K, "N": N, "cublas_ms": lib, "cublas_pro_ms": lib_pro, "configs": {}}
    for (bm, bn, bk, warps, stages) in CONFIGS:
        grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
        out = {}
        for pro in (False, True):
            try:
                fn = lambda: mm[grid](x if pro else a, b, c, r, w, M, N, K, bm, bn, bk, 8, pro, num_warps=warps, num_stages=stages)
                fn(); torch.cuda.synchronize()
                err = ((c.float() - (ref_pro if pro else ref)).norm() / (ref_pro if pro else ref).norm()).item()
                out["pro" if pro else "plain"] = (do_bench(fn, return_mode="median"), err)
            except Exception as e:
                out["pro" if pro else "plain"] = (None, type(e).__name__)
        row["configs"][f"{bm}x{bn}x{bk} w{warps} s{stages}"] = out
    rows.append(row)
    best = min((v["plain"][0], k) for k, v in row["configs"].items() if v["plain"][0])
    bestp = min((v["pro"][0], k) for k, v in row["configs"].items() if v["pro"][0])
    cur = row["configs"]["128x128x64 w8 s3"]
    print(f"{label:14s} cublas {lib:.3f} (+pro torch {lib_pro:.3f}) | cur {cur['plain'][0]:.3f} pro {cur['pro'][0]:.3f} "
          f"| best {best[0]:.3f} {best[1]} | best pro {bestp[0]:.3f} {bestp[1]}", flush=True)
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__, "rows": rows},
          open(args.out, "w"), indent=1)
