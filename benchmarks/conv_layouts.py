"""Every 2-D conv of the conv models, timed through the convolution library in both layouts.

Why: the `channels-last` pass decides per NHWC region whether the library's NHWC convs gain
more than the layout conversions the region needs cost. This benchmark measures what that
decision rests on, per conv of real models (ResNet-50, ConvNeXt-T, MobileNetV2, the SD VAE
decoder, and RegNet and the tiny AutoencoderTiny decoder as families no test names):

- `nchw_s`: F.conv2d on contiguous NCHW input and weight (what a `conv` extern runs),
- `nhwc_s`: the same conv on channels-last input and weight (what a `conv_nhwc` extern runs),
- `to_nhwc_s` / `to_nchw_s`: converting the conv's input to channels-last and its output back,

beside the cost model's predictions of the same four (`predicted_*`, the target's calibrated
model as `compile()` uses it). Device times by CUDA events, median of `--repeat` after warm-up,
cuDNN with torch's defaults (as the generated wrapper calls it). Writes one JSON, and with
`--raw` the convs in both layouts as calibration raw data (each conv's `KernelFeatures`, as
a `conv` and as a `conv_nhwc` kernel): what `codesign calibrate` fits the library's conv
figures to (`fit.fit_library_convs`).

    python benchmarks/conv_layouts.py --out benchmarks/results/conv_layouts_h200.json \
        --raw benchmarks/results/raw/h200_conv_library_raw.json

`--measured JSON` takes the times from an earlier run's JSON (rows matched by model and conv)
and recomputes everything else here: features and predictions need no GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def regnet(quick: bool):
    import transformers as T
    model = T.RegNetModel(T.RegNetConfig())
    size, batch = (64, 2) if quick else (224, 32)

    class Main(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x).last_hidden_state
    return Main(), lambda g: (torch.randn(batch, 3, size, size, generator=g),)


def tiny_vae_decoder(quick: bool):
    from diffusers import AutoencoderTiny
    vae = AutoencoderTiny()
    side = 8 if quick else 64

    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z).sample
    return Decode(), lambda g: (torch.randn(1, 4, side, side, generator=g),)


def models() -> dict:
    import model_zoo_gpu as zoo
    named = {k: zoo.CASES[k] for k in ("resnet50", "convnext", "mobilenetv2", "vae_decoder")}
    return {**named, "regnet": regnet, "tiny_vae_decoder": tiny_vae_decoder}


def device_time(fn, repeat: int) -> float:
    """Median device time of `fn()` in seconds: three untimed calls, then `repeat` timed by CUDA
    events (the measured choice's timer, `triton.choice.median_ms`)."""
    from codesign.codegen.triton.choice import median_ms
    fn()
    fn()
    return median_ms(fn, repeat) * 1e-3


def conv_rows(name: str, build, quick: bool, target_name: str, repeat: int, cuda: bool,
              measured_rows: dict | None = None) -> list[dict]:
    import codesign
    from codesign.ir.graph import Node
    from codesign.ir.ops import get_op
    from codesign.passes import PassContext, PassManager
    from codesign.passes.layout import TO_FIRST, TO_LAST
    from codesign.passes.pricing import kernel_features_alone, price_kernels
    from codesign.targets import load_target

    target = load_target(target_name)
    model, make = build(quick)
    model = model.eval().to(torch.bfloat16)
    inputs = tuple(t.to(torch.bfloat16) for t in make(torch.Generator().manual_seed(0)))
    graph = codesign.capture(model, inputs).graph
    graph = PassManager("canonicalize").run(graph, PassContext(target=target))
    ctx = PassContext(target=target)
    rewritten = PassManager("channels-last{when=always}").run(graph, ctx)
    nhwc = {d.subject.lstrip("%"): d.data for d in ctx.ledger if d.pass_name == "channels-last" and d.choice == "nhwc"}
    types, nhwc_types = graph.types(), rewritten.types()
    twins = {n.name: n for n in rewritten.nodes}
    device = torch.device("cuda" if cuda else "cpu")
    measured: dict[tuple, dict] = {}
    rows = []
    for node in graph.nodes:
        if get_op(node.op).name != "conv" or types[node.operands[0]].rank != 4 or node.name not in nhwc:
            continue
        x_t, w_t, out_t = types[node.operands[0]], types[node.operands[1]], node.type
        a = node.attrs
        key = (x_t.shape, w_t.shape, tuple(a["stride"]), tuple(a["padding"]), tuple(a["dilation"]),
               a.get("groups", 1), len(node.operands) > 2)
        to_last = Node(f"{node.name}_to_nhwc", "permute", (node.operands[0],),
                       type(x_t)(tuple(x_t.shape[p] for p in TO_LAST), x_t.dtype), {"perm": TO_LAST})
        out_last = type(out_t)(tuple(out_t.shape[p] for p in TO_LAST), out_t.dtype)
        back = Node(f"{node.name}_to_nchw", "permute", (f"{node.name}_y",), out_t, {"perm": TO_FIRST})
        row = {"model": name, "conv": node.name, "input": list(x_t.shape), "weight": list(w_t.shape),
               "stride": list(a["stride"]), "padding": list(a["padding"]), "groups": a.get("groups", 1),
               "predicted_nchw_s": nhwc[node.name]["time_nchw"], "predicted_nhwc_s": nhwc[node.name]["time_nhwc"],
               "predicted_to_nhwc_s": price_kernels(target, [[to_last]], types)[0],
               "predicted_to_nchw_s": price_kernels(target, [[back]], {**types, f"{node.name}_y": out_last})[0],
               "flops": nhwc[node.name]["flops"],
               "features_nchw": kernel_features_alone(target, [node], types).as_dict(),
               "features_nhwc": kernel_features_alone(target, [twins[nhwc[node.name]["nhwc"]]], nhwc_types).as_dict()}
        if measured_rows is not None:
            row.update({k: v for k, v in measured_rows[(name, node.name)].items() if k in MEASURED})
        elif cuda:
            if key not in measured:
                x = torch.randn(x_t.shape, device=device, dtype=torch.bfloat16)
                w = torch.randn(w_t.shape, device=device, dtype=torch.bfloat16)
                b = torch.randn(w_t.shape[0], device=device, dtype=torch.bfloat16) if key[-1] else None
                kw = dict(stride=key[2], padding=key[3], dilation=key[4], groups=key[5])
                x_cl, w_cl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
                y = F.conv2d(x, w, b, **kw)
                y_cl = y.contiguous(memory_format=torch.channels_last)
                measured[key] = {
                    "nchw_s": device_time(lambda: F.conv2d(x, w, b, **kw), repeat),
                    "nhwc_s": device_time(lambda: F.conv2d(x_cl, w_cl, b, **kw), repeat),
                    "to_nhwc_s": device_time(lambda: x.contiguous(memory_format=torch.channels_last), repeat),
                    "to_nchw_s": device_time(lambda: y_cl.contiguous(), repeat)}
            row.update(measured[key])
        rows.append(row)
    return rows


MEASURED = ("nchw_s", "nhwc_s", "to_nhwc_s", "to_nchw_s")


def raw_data(rows: list[dict], env: dict):
    """The measured convs as calibration raw data: per model and layout one program of
    library (vendor) kernels, each with its features."""
    from codesign.calibrate.measure import RawData
    from codesign.calibrate.profile import KernelTime, ProgramTime
    from codesign.cost.features import KernelFeatures
    programs = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for layout in ("nchw", "nhwc"):
            case = f"conv_library_{model}_{layout}"
            kernels = tuple(KernelTime(case, r["conv"], r["conv"], KernelFeatures.from_dict(r[f"features_{layout}"]),
                                       r[f"{layout}_s"], "vendor") for r in rows if r["model"] == model)
            programs.append(ProgramTime(case, sum(k.seconds for k in kernels), kernels, launches=len(kernels)))
    meta = {"device": env["device"], "device_type": "cuda", "torch": env["torch"], "cudnn": env["cudnn"],
            "date": env["date"], "target": env["target"], "benchmark": "conv_layouts"}
    return RawData(meta, tuple(programs))


def summary(rows: list[dict]) -> dict:
    """Per model: summed times; the median and spread of the library's NHWC speed-up."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        s = {k: sum(r[k] for r in mine) for k in mine[0] if k.endswith("_s")}
        s["convs"] = len(mine)
        if "nchw_s" in mine[0]:
            ratios = sorted(r["nchw_s"] / r["nhwc_s"] for r in mine)
            s["speedup_median"] = statistics.median(ratios)
            s["speedup_min"], s["speedup_max"] = ratios[0], ratios[-1]
        out[model] = s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", default="h200")
    parser.add_argument("--only", default="")
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--raw", default=None, help="also write the convs as calibration raw data here")
    parser.add_argument("--measured", default=None, help="times from this earlier run's JSON")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    earlier = json.loads(Path(args.measured).read_text()) if args.measured else None
    measured_rows = {(r["model"], r["conv"]): r for r in earlier["rows"]} if earlier else None
    rows = []
    for name, build in models().items():
        if args.only and name not in args.only.split(","):
            continue
        start = time.perf_counter()
        rows += conv_rows(name, build, args.quick, args.target, args.repeat, cuda, measured_rows)
        print(f"{name}: {sum(r['model'] == name for r in rows)} convs, {time.perf_counter() - start:.0f} s", flush=True)
    if earlier is not None:  # the times and where they were taken are the earlier run's
        env = {**earlier["environment"], "features_and_predictions": f"recomputed {time.strftime('%Y-%m-%d')}"}
    else:
        env = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version() if cuda else None,
               "device": torch.cuda.get_device_name() if cuda else "cpu (predictions only)", "target": args.target,
               "date": time.strftime("%Y-%m-%d"), "quick": args.quick, "repeat": args.repeat}
    result = {"benchmark": "conv_layouts", "environment": env, "summary": summary(rows), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.raw and (cuda or earlier is not None):
        Path(args.raw).write_text(raw_data(rows, env).to_json())
    for model, s in result["summary"].items():
        print(model, {k: (round(v * 1e3, 3) if k.endswith("_s") else (round(v, 3) if isinstance(v, float) else v))
                      for k, v in s.items()})


if __name__ == "__main__":
    main()
