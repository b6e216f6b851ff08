"""Is the cost model right? Calibrate it, then check it per kernel on models the fit never saw.

Two steps, so the device is needed only for the first:

    python benchmarks/cost_validation.py measure --out DIR [--families all] [--skip-suite]
        on the device (an H200, or this CPU): runs `codesign calibrate`'s suite (raw data for the
        fit) and then profiles every kernel of each model family below, compiled by
        codesign.compile for the target; writes DIR/calibration_raw.json and
        DIR/validation_raw.json (device times per kernel, with the cost model's features).
    python benchmarks/cost_validation.py analyse --raw DIR --target h200 [--calibration FILE]
        (DIR: what `measure` wrote, or benchmarks/results/raw with its <target>_*_raw.json)
        anywhere: fits the calibration from the suite's raw data (or reads FILE), predicts
        every validation kernel and program, and writes
        benchmarks/results/cost_validation_<target>.json, a log-log scatter plot
        (benchmarks/results/cost_validation_<target>.png) and a table; measured on a CPU,
        cost_validation_cpu.json / .png.

On a CPU (target cpu-host, fp32, torch's thread count) the families are built at a quarter
of their width and at small batch and sequence, so each runs in well under a second, and the
kernels are timed by the C++ backend's per-kernel timers (`codesign.calibrate.profile_cpu`:
the median of each kernel's fastest quarter of samples, since a shared machine's other
processes slow the rest; the load average is recorded).

The families (random weights from configs, no downloads; eval mode): a Llama-style decoder
(GQA, RMSNorm, SwiGLU), a BERT encoder, ViT-B/16, a ResNet, a Mixtral sparse-MoE block,
a Qwen2 decoder and a diffusers VAE decoder. None of their kernels is in the fit: the fit
sees only the calibration suite (`codesign.calibrate.suites`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402


class Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        out = self.model(*args)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _llama(scale):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=2048 // scale, intermediate_size=5632 // scale, num_hidden_layers=2,
                      num_attention_heads=32 // scale, num_key_value_heads=4 // min(scale, 4) or 1,
                      vocab_size=32000 // scale, max_position_embeddings=4096, use_cache=False,
                      attn_implementation="sdpa")
    b, s = (4, 1024) if scale == 1 else (1, 128)
    return Logits(LlamaForCausalLM(cfg)), (torch.randint(0, cfg.vocab_size, (b, s)),)


def _qwen2(scale):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(hidden_size=1536 // scale, intermediate_size=8960 // scale, num_hidden_layers=2,
                      num_attention_heads=12 // min(scale, 4), num_key_value_heads=2 if scale == 1 else 1,
                      vocab_size=32000 // scale, max_position_embeddings=4096, use_cache=False,
                      attn_implementation="sdpa")
    b, s = (4, 1024) if scale == 1 else (1, 128)
    return Logits(Qwen2ForCausalLM(cfg)), (torch.randint(0, cfg.vocab_size, (b, s)),)


def _bert(scale):
    from transformers import BertConfig, BertModel
    cfg = BertConfig(hidden_size=768 // scale, num_hidden_layers=2, num_attention_heads=12 // min(scale, 4),
                     intermediate_size=3072 // scale, attn_implementation="sdpa")
    b, s = (16, 512) if scale == 1 else (2, 128)
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    # explicit token types: BERT's default indexes a buffer with aten.gather (not yet supported)
    return Logits(BertModel(cfg, add_pooling_layer=False)), (ids, torch.ones_like(ids), torch.zeros_like(ids))


def _vit(scale):
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(hidden_size=768 // scale, num_hidden_layers=2, num_attention_heads=12 // min(scale, 4),
                    intermediate_size=3072 // scale, image_size=224, patch_size=16, attn_implementation="sdpa")
    b = 64 if scale == 1 else 2
    return Logits(ViTModel(cfg, add_pooling_layer=False)), (torch.randn(b, 3, 224, 224),)


def _resnet(scale):
    from transformers import ResNetConfig, ResNetModel
    cfg = ResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[256 // scale, 512 // scale, 1024 // scale, 2048 // scale],
                       layer_type="bottleneck", embedding_size=64)
    b = 32 if scale == 1 else 2
    return Logits(ResNetModel(cfg)), (torch.randn(b, 3, 224 if scale == 1 else 64, 224 if scale == 1 else 64),)


def _mixtral(scale):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    cfg = MixtralConfig(hidden_size=1024 // scale, intermediate_size=3584 // scale, num_local_experts=8,
                        num_experts_per_tok=2, num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=8,
                        vocab_size=256)
    block = MixtralSparseMoeBlock(cfg)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.02)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x):
            out = self.block(x)
            return out[0] if isinstance(out, tuple) else out
    tokens = 4096 if scale == 1 else 64
    return Block(), (torch.randn(1, tokens, cfg.hidden_size),)


def _vae(scale):
    from diffusers import AutoencoderKL

    class Decode(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z).sample
    channels = (128, 256, 512) if scale == 1 else (32, 64)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(channels),
                        up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=channels,
                        layers_per_block=1, latent_channels=4, norm_num_groups=32 if scale == 1 else 8)
    side = 64 if scale == 1 else 8
    return Decode(vae), (torch.randn(1, 4, side, side),)


FAMILIES = {"llama": _llama, "qwen2": _qwen2, "bert": _bert, "vit": _vit, "resnet": _resnet,
            "mixtral_moe": _mixtral, "vae_decoder": _vae}


def _to(model, inputs, device, dtype):
    model = model.to(device=device, dtype=dtype).eval()
    moved = tuple(x.to(device) if not x.is_floating_point() else x.to(device=device, dtype=dtype) for x in inputs)
    return model, moved


def measure(args) -> None:
    import codesign
    from codesign.calibrate.measure import RawData, device_meta, measure as run_suite
    from codesign.calibrate.profile import profile_cuda

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    target = args.target or ("h200" if cuda else "cpu-host")
    if not args.skip_suite:
        start = time.perf_counter()
        axes = tuple(a for a in args.axes.split(",") if a)
        raw = run_suite(codesign.targets.load_target(target), device, budget_s=args.budget, axes=axes,
                        compile_only=args.compile_only,
                        progress=lambda name, i, n: print(f"[suite {i + 1}/{n}] {name}", flush=True))
        if not args.compile_only:
            (out / "calibration_raw.json").write_text(raw.to_json())
        print(f"suite: {time.perf_counter() - start:.0f} s", flush=True)
    programs, failures = [], {}
    load_before = round(os.getloadavg()[0], 2)
    names = list(FAMILIES) if args.families == "all" else [n for n in args.families.split(",") if n]
    for name in names:
        start = time.perf_counter()
        try:
            torch.manual_seed(0)
            model, inputs = FAMILIES[name](1 if cuda else 4)
            model, inputs = _to(model, inputs, device, dtype)
            with torch.no_grad():
                cm = codesign.compile(model, inputs, target=target)
                if args.compile_only:  # fill the caches for the measuring run
                    cm(*inputs)
                    continue
                if cuda:
                    program = profile_cuda(name, cm, inputs, repeat=10)
                else:
                    from codesign.calibrate.profile_cpu import profile_cpu
                    program = profile_cpu(name, cm, inputs, repeat=12)
            programs.append(program)
            print(f"[family] {name}: {len(program.kernels)} kernels, wall {program.wall_seconds * 1e3:.2f} ms, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        except Exception as exc:  # noqa: BLE001 - one failing family is recorded, not fatal
            failures[name] = f"{type(exc).__name__}: {str(exc)[:400]}"
            traceback.print_exc()
        if not args.compile_only:
            meta = {**device_meta(device), "target": target, "failures": failures}
            if not cuda:
                meta["load_average"] = [load_before, round(os.getloadavg()[0], 2)]
            raw = RawData(meta, tuple(programs))
            (out / "validation_raw.json").write_text(raw.to_json())


def _meta_family(name: str):
    """A family built on the meta device at the measured size and dtype (for refeaturing)."""
    if name not in FAMILIES:
        return None
    with torch.device("meta"):
        torch.manual_seed(0)
        model, inputs = FAMILIES[name](1)
    return _to(model, inputs, torch.device("meta"), torch.bfloat16)


def _meta_case(name: str):
    from codesign.calibrate.suites import gpu_cases
    case = next((c for c in gpu_cases() if c.name == name), None)
    if case is None:
        return None
    module, inputs = case.build(torch.device("meta"), case.dtype)
    return module, inputs


def analyse(args) -> None:
    from codesign.calibrate.fit import dump_calibration, fit
    from codesign.calibrate.measure import RawData
    from codesign.calibrate.profile import refeature
    from codesign.calibrate.validate import validate, scatter_plot
    from codesign.targets import load_target
    from codesign.targets.calibration import Calibration

    raw_dir = Path(args.raw)
    target = load_target(args.target)

    def raw_file(kind: str) -> Path:
        """DIR/<kind>_raw.json as `measure` writes it, else DIR/<target>_<kind>_raw.json as
        the raw data is committed (benchmarks/results/raw)."""
        for name in (f"{kind}_raw.json", f"{target.name}_{kind}_raw.json"):
            if (raw_dir / name).exists():
                return raw_dir / name
        raise SystemExit(f"{raw_dir}: neither {kind}_raw.json nor {target.name}_{kind}_raw.json is there")
    if args.calibration:
        import yaml
        calibration = Calibration.model_validate(yaml.safe_load(Path(args.calibration).read_text()))
    else:
        suite = RawData.from_json(raw_file("calibration").read_text())
        if args.refeature:
            suite = RawData(suite.meta, refeature(suite.programs, _meta_case, target.name))
            raw_file("calibration").write_text(suite.to_json())
        convs = next((raw_dir / n for n in ("conv_library_raw.json", f"{target.name}_conv_library_raw.json")
                      if (raw_dir / n).exists()), None)  # library convs in both layouts (conv_layouts.py --raw)
        calibration = fit(suite, target, RawData.from_json(convs.read_text()) if convs else None)
        print(dump_calibration(calibration))
    validation = RawData.from_json(raw_file("validation").read_text())
    if args.refeature:  # features by this version of the cost model (kernels matched by name)
        validation = RawData(validation.meta, refeature(validation.programs, _meta_family, target.name))
        raw_file("validation").write_text(validation.to_json())
    report = validate(validation, target.model_copy(update={"calibration": calibration}))
    uncalibrated = validate(validation, target.model_copy(update={"calibration": None}))
    results = {"target": target.name, "device": validation.meta.get("device"), "meta": validation.meta,
               "calibration": calibration.model_dump(mode="json"), "calibrated": report,
               "ideal (datasheet peaks)": {k: uncalibrated[k] for k in ("summary", "programs")}}
    stem = f"cost_validation_{'cpu' if validation.meta.get('device_type') == 'cpu' else target.name}"
    path = ROOT / "benchmarks" / "results" / f"{stem}.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    scatter_plot(report, ROOT / "benchmarks" / "results" / f"{stem}.png",
                 f"{target.name} ({validation.meta.get('device', '')}): predicted vs measured per kernel")
    s = report["summary"]
    print(f"{'family':<14}{'kernels':>8}{'median':>9}{'p90':>8}{'model pred':>12}{'measured':>10}{'err':>7}")
    for fam in report["programs"]:
        print(f"{fam['case']:<14}{fam['kernels']:>8}{fam['median_abs_error']:>9.3f}{fam['p90_abs_error']:>8.3f}"
              f"{fam['predicted_seconds'] * 1e3:>10.2f}ms{fam['wall_seconds'] * 1e3:>8.2f}ms"
              f"{fam['program_abs_error']:>7.3f}")
    print(f"all: {s['kernels']} kernels, median {s['median_abs_error']:.3f}, p90 {s['p90_abs_error']:.3f}, "
          f"program median {s['program_median_abs_error']:.3f}; ideal model: median "
          f"{uncalibrated['summary']['median_abs_error']:.3f}")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--target", default=None)
    m.add_argument("--families", default="all")
    m.add_argument("--skip-suite", action="store_true")
    m.add_argument("--axes", default="", help="suite axes to run (gemm,attention,memory,launch; default all)")
    m.add_argument("--compile-only", action="store_true",
                   help="compile and run once, measuring nothing (fills the caches for a later run)")
    m.add_argument("--budget", type=float, default=240.0, help="seconds for the calibration suite")
    a = sub.add_parser("analyse")
    a.add_argument("--raw", required=True)
    a.add_argument("--target", required=True)
    a.add_argument("--calibration", default=None)
    a.add_argument("--refeature", action="store_true",
                   help="recompute every kernel's features with this version of the cost model "
                        "(models rebuilt on the meta device; the raw files are rewritten)")
    args = parser.parse_args()
    (measure if args.command == "measure" else analyse)(args)


if __name__ == "__main__":
    main()
