"""Model-zoo GPU benchmark (issue 13): real architectures through the public API, against
eager, torch.compile (default) and torch.compile (mode="reduce-overhead") in one run.

Each case builds a model from a transformers / diffusers config with random weights (no
download), in fp32 and a bf16 copy, on the GPU. Correctness first: the bf16 outputs of
codesign and of eager are compared with the fp32 model's on fresh inputs
(‖out − ref‖ / ‖ref‖). Then each is timed with `triton.testing.do_bench` (median).
codesign's first call (capture, passes, code generation, Triton's compiles) is timed as
`ours_first_call_s`, beside torch.compile's. One failing case is recorded, not fatal;
results are written after every case, so a run cut short keeps what it finished.

    python benchmarks/model_zoo_gpu.py --out benchmarks/results/model_zoo_h200.json
    python benchmarks/model_zoo_gpu.py --only llama_b1,gpt2 --no-compile
    python benchmarks/model_zoo_gpu.py --quick --only bert     # small shapes (CPU: C++ backend)
    python benchmarks/model_zoo_gpu.py --only convnext,vae_decoder --ab-channels-last   # NHWC vs NCHW convs
    python benchmarks/model_zoo_gpu.py --only vae_decoder --ab-split-group-norm   # group norms split vs whole
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import codesign  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--no-graphs", action="store_true", help="codesign without CUDA graphs")
    p.add_argument("--ab-channels-last", action="store_true",
                   help="also time codesign with the channels-last pass off (channels-last{when=never}) and, "
                        "where it kept convs, on every conv (when=always), same run")
    p.add_argument("--ab-split-group-norm", action="store_true",
                   help="also time codesign with the group norms left whole (the pipeline without "
                        "split-group-norm: torch's group norm as an extern), same run")
    p.add_argument("--out", default=None, help="results JSON (merged with an existing file: cases replaced)")
    return p.parse_args()


# -- the cases: (model in fp32, inputs builder) -------------------------------------------------------
class Main(torch.nn.Module):
    """A model whose output is a ModelOutput / tuple, reduced to its main tensor."""

    def __init__(self, inner, key=None):
        super().__init__()
        self.inner, self.key = inner, key

    def forward(self, *args):
        out = self.inner(*args)
        if self.key is not None:
            return getattr(out, self.key)
        return out[0] if isinstance(out, (tuple, list)) else out


def decoder(family: str, quick: bool, batch: int, seq: int):
    import transformers as T
    small = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=2, vocab_size=1024)
    sizes = {
        "llama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=4, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000),
        "mistral": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=4, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=32000, sliding_window=None),
        "qwen2": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=4, num_attention_heads=12,
                      num_key_value_heads=2, vocab_size=151936),
        "phi3": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=4, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32064),
    }
    config_cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "qwen2": T.Qwen2Config,
                  "phi3": T.Phi3Config}[family]
    model_cls = {"llama": T.LlamaForCausalLM, "mistral": T.MistralForCausalLM, "qwen2": T.Qwen2ForCausalLM,
                 "phi3": T.Phi3ForCausalLM}[family]
    kw = dict(small if quick else sizes[family])
    if quick and family == "mistral":
        kw["sliding_window"] = None
    config = config_cls(**kw, use_cache=False, attn_implementation="sdpa")
    vocab = kw["vocab_size"]
    if quick:
        batch, seq = 1, 32
    return Main(model_cls(config), "logits"), lambda g: (torch.randint(0, vocab, (batch, seq), generator=g),)


def gpt2(quick: bool):
    import transformers as T
    config = (T.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=1024, n_positions=128) if quick
              else T.GPT2Config(use_cache=False))
    config.use_cache = False
    batch, seq = (1, 32) if quick else (8, 1024)
    return Main(T.GPT2LMHeadModel(config), "logits"), lambda g: (torch.randint(0, config.vocab_size, (batch, seq),
                                                                                generator=g),)


def encoder(family: str, quick: bool):
    import transformers as T
    config_cls, model_cls = {"bert": (T.BertConfig, T.BertModel), "roberta": (T.RobertaConfig, T.RobertaModel)}[family]
    config = config_cls(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=256,
                        vocab_size=1024) if quick else config_cls()
    config.attn_implementation = "sdpa"
    batch, seq = (2, 16) if quick else (32, 128)
    return Main(model_cls(config, add_pooling_layer=False), "last_hidden_state"), \
        lambda g: (torch.randint(3, config.vocab_size, (batch, seq), generator=g),)


def vision(family: str, quick: bool):
    import transformers as T
    if family == "vit":
        config = (T.ViTConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=256,
                              image_size=64, patch_size=16) if quick else T.ViTConfig())
        model, size = T.ViTModel(config, add_pooling_layer=False), config.image_size
        main = Main(model, "last_hidden_state")
    else:
        cls, model_cls = {"resnet50": (T.ResNetConfig, T.ResNetModel),
                          "convnext": (T.ConvNextConfig, T.ConvNextModel),
                          "mobilenetv2": (T.MobileNetV2Config, T.MobileNetV2Model)}[family]
        config = cls()
        main, size = Main(model_cls(config), "last_hidden_state"), 224
        if quick:
            size = 64
    batch = 2 if quick else (64 if family == "vit" else 32)
    return main, lambda g: (torch.randn(batch, 3, size, size, generator=g),)


def mixtral_moe(quick: bool):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    config = MixtralConfig(hidden_size=128 if quick else 1024, intermediate_size=256 if quick else 3584,
                           num_local_experts=8, num_experts_per_tok=2)
    tokens = 64 if quick else 4096

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.moe = MixtralSparseMoeBlock(config)

        def forward(self, x):
            out = self.moe(x)
            return out[0] if isinstance(out, tuple) else out
    block = Block()
    with torch.no_grad():  # a standalone block is not initialised by `post_init` (its experts are empty)
        for param in block.parameters():
            param.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(param.numel()))
    return block, lambda g: (torch.randn(1, tokens, config.hidden_size, generator=g),)


def vae_decoder(quick: bool):
    from diffusers import AutoencoderKL
    if quick:
        vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=16)
        side = 8
    else:  # Stable Diffusion's VAE (block_out_channels 128, 256, 512, 512); 64x64 latents → 512x512
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2)
        side = 64

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z).sample
    return Decoder(), lambda g: (torch.randn(1, 4, side, side, generator=g),)


CASES = {
    "gpt2": lambda q: gpt2(q),
    "llama": lambda q: decoder("llama", q, 4, 1024),
    "llama_b1": lambda q: decoder("llama", q, 1, 128),
    "mistral": lambda q: decoder("mistral", q, 4, 1024),
    "qwen2": lambda q: decoder("qwen2", q, 4, 1024),
    "phi3": lambda q: decoder("phi3", q, 4, 1024),
    "bert": lambda q: encoder("bert", q),
    "roberta": lambda q: encoder("roberta", q),
    "vit": lambda q: vision("vit", q),
    "resnet50": lambda q: vision("resnet50", q),
    "convnext": lambda q: vision("convnext", q),
    "mobilenetv2": lambda q: vision("mobilenetv2", q),
    "mixtral_moe": lambda q: mixtral_moe(q),
    "vae_decoder": lambda q: vae_decoder(q),
}


# -- measuring ---------------------------------------------------------------------------------------
def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def bench(fn) -> float:
    """Median milliseconds: do_bench (CUDA events) on a GPU, timed calls on the CPU."""
    if CUDA:
        import triton
        return float(triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median"))
    fn()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def first_call(fn, *inputs) -> tuple[torch.Tensor, float]:
    t = time.perf_counter()
    out = fn(*inputs)
    if CUDA:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def run_case(name: str, args) -> dict:
    row: dict = {}
    model32, make = CASES[name](args.quick)
    model32 = model32.eval().to(DEVICE)
    model16 = copy.deepcopy(model32).to(torch.bfloat16)

    def inputs(seed: int, dtype):
        g = torch.Generator().manual_seed(seed)
        return tuple((x.to(dtype) if x.is_floating_point() else x).to(DEVICE) for x in make(g))
    with torch.no_grad():
        x16 = inputs(0, torch.bfloat16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = time.perf_counter()
            cm = codesign.compile(model16, x16, target="h200" if CUDA else "cpu-host",
                                  backend_options={"triton": {"cuda_graphs": not args.no_graphs}})
            row["ours_compile_s"] = round(time.perf_counter() - t, 2)
            _, first = first_call(cm, *x16)
            row["ours_first_call_s"] = round(row["ours_compile_s"] + first, 2)
        row["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:300]}" for w in caught})
        backend = cm.backend_for(list(x16))
        program = cm._programs.get(backend)
        row["backend"] = backend if program is not None else "interpreter (fallback)"
        if program is not None and hasattr(program, "meta"):
            row["kernels"] = len(program.meta["kernels"])
            row["distinct_kernels"] = program.source.count("@triton.jit")
            row["externs"] = sorted({e["op"] for e in program.meta["externs"]})
            row["cuda_graphs"] = program.graphs.why_not or "on"
        fresh32, fresh16 = inputs(1, torch.float32), inputs(1, torch.bfloat16)
        ref = model32(*fresh32).float()
        row["rel_err_eager_bf16"] = rel_err(model16(*fresh16), ref)
        row["rel_err_ours"] = rel_err(cm(*fresh16), ref)
        if program is not None and hasattr(program, "guards"):  # each measured kernel's forms (`choice`)
            row["choices"] = {name: {"implementation": g.choice.implementation, "generated_ms": g.choice.generated_ms,
                                     "library_ms": g.choice.library_ms,
                                     "launch": g.choice.launch and g.choice.launch.label()}
                              for name, g in program.guards.items() if g.choice is not None}
        row["eager_ms"] = bench(lambda: model16(*fresh16))
        row["ours_ms"] = bench(lambda: cm(*fresh16))
        row["channels_last_convs"] = sum(d.pass_name == "channels-last" and d.choice == "nhwc" for d in cm.ledger)
        if args.ab_channels_last and any(d.pass_name == "channels-last" for d in cm.ledger):
            from codesign.compiler import COMPILE_PIPELINE
            off = codesign.compile(model16, x16, target="h200" if CUDA else "cpu-host",
                                   pipeline=COMPILE_PIPELINE.replace("channels-last", "channels-last{when=never}"),
                                   backend_options={"triton": {"cuda_graphs": not args.no_graphs}})
            row["rel_err_ours_nchw"] = rel_err(off(*fresh16), ref)
            row["ours_nchw_ms"] = bench(lambda: off(*fresh16))
            row["channels_last_gain"] = row["ours_nchw_ms"] / row["ours_ms"]  # > 1: NHWC is faster
            del off
            if any(d.pass_name == "channels-last" and d.choice == "kept" for d in cm.ledger):
                every = codesign.compile(model16, x16, target="h200" if CUDA else "cpu-host",
                                         pipeline=COMPILE_PIPELINE.replace("channels-last", "channels-last{when=always}"),
                                         backend_options={"triton": {"cuda_graphs": not args.no_graphs}})
                row["rel_err_ours_nhwc_all"] = rel_err(every(*fresh16), ref)
                row["ours_nhwc_all_ms"] = bench(lambda: every(*fresh16))  # every conv NHWC (when=always)
                del every
        if args.ab_split_group_norm and any(d.pass_name == "split-group-norm" for d in cm.ledger):
            from codesign.compiler import COMPILE_PIPELINE
            whole = codesign.compile(model16, x16, target="h200" if CUDA else "cpu-host",
                                     pipeline=COMPILE_PIPELINE.replace("split-group-norm,", ""),
                                     backend_options={"triton": {"cuda_graphs": not args.no_graphs}})
            row["rel_err_ours_unsplit"] = rel_err(whole(*fresh16), ref)
            row["ours_unsplit_ms"] = bench(lambda: whole(*fresh16))  # group norms as torch externs
            row["split_group_norm_gain"] = row["ours_unsplit_ms"] / row["ours_ms"]
            del whole
        if not args.no_compile:
            for key, mode in (("compile", "default"), ("compile_ro", "reduce-overhead")):
                try:
                    torch._dynamo.reset()
                    fn = torch.compile(model16, mode=mode)
                    out, t = first_call(fn, *fresh16)
                    row[f"{key}_first_call_s"] = round(t, 2)
                    row[f"rel_err_{key}"] = rel_err(out, ref)
                    row[f"{key}_ms"] = bench(lambda: fn(*fresh16))
                except Exception as exc:  # noqa: BLE001 - a baseline failing is recorded
                    row[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    row["speedup_vs_eager"] = row["eager_ms"] / row["ours_ms"]
    for key in ("compile", "compile_ro"):
        if f"{key}_ms" in row:
            row[f"vs_{key}"] = row[f"{key}_ms"] / row["ours_ms"]  # > 1: codesign is faster
    return {k: (float(f"{v:.5g}") if isinstance(v, float) else v) for k, v in row.items()}


def environment() -> dict:
    env = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "torch": torch.__version__, "codesign": codesign.__version__, "host": platform.node()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    if CUDA:
        env["device"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def main() -> None:
    args = parse_args()
    names = [n for n in CASES if not args.only or n in args.only.split(",")]
    out = Path(args.out) if args.out else None
    results = json.loads(out.read_text()) if out and out.exists() else {"cases": {}}
    results["environment"] = environment()
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            row = run_case(name, args)
        except Exception as exc:  # noqa: BLE001 - one failing case is recorded, the others run
            row = {"error": f"{type(exc).__name__}: {str(exc)[:500]}", "traceback": traceback.format_exc()[-3000:]}
        row["wall_s"] = round(time.perf_counter() - start, 1)
        results["cases"][name] = row
        print("   " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("traceback", "warnings")), flush=True)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        if CUDA:
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    ok = [r for r in results["cases"].values() if "vs_compile" in r]
    if ok:
        import math
        geo = math.exp(sum(math.log(r["vs_compile"]) for r in ok) / len(ok))
        results["geomean_vs_compile"] = round(geo, 4)
        print(f"geomean vs torch.compile over {len(ok)} cases: {geo:.3f}x")
        if out:
            out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
