"""`codesign calibrate` and `codesign profile`: measure a target, and check the model per kernel.

    codesign calibrate --target h200 --out h200.calibration.yaml     # on the device: measure, fit
    codesign calibrate --target h200 --from-data RAW.json --out F    # refit without the device
        [--library-convs CONVS.json]   # + the conv library's figures (benchmarks/conv_layouts.py --raw)
    codesign profile path/model.py:factory --target h200 [--json F] [--plot F.png]

The device is the target's: a CPU target (cpu-host) is measured on this CPU (the C++
backend's per-kernel timers, torch's thread count), a GPU target on CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CalibrateError(ValueError):
    """A user error of `calibrate` / `profile`: printed as one line by the CLI."""


def add_calibrate_parser(commands) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an error instead of one message")
    cal = commands.add_parser("calibrate", parents=[common], help="measure the device present and fit the "
                              "target's efficiency model (or refit from raw data)")
    cal.add_argument("--target", required=True, metavar="T", help="target name or .yaml path")
    cal.add_argument("--out", type=Path, metavar="FILE.yaml", help="write the calibration here (default: stdout)")
    cal.add_argument("--from-data", type=Path, metavar="RAW.json", help="refit from saved measurements, no device")
    cal.add_argument("--library-convs", type=Path, metavar="CONVS.json",
                     help="convs timed through the convolution library in both layouts (benchmarks/conv_layouts.py "
                          "--raw): fit the library's conv figures to them too")
    cal.add_argument("--raw", type=Path, metavar="RAW.json", help="where to save the measurements (with --out: "
                     "beside it, as FILE.raw.json)")
    cal.add_argument("--budget", type=float, default=300.0, metavar="S",
                     help="seconds the measurements may take (default 300; cases left over are skipped)")
    cal.set_defaults(func=_cmd_calibrate)

    prof = commands.add_parser("profile", parents=[common], help="run a compiled model and print predicted "
                               "beside measured time per kernel (CUDA, or the C++ backend on the CPU)")
    prof.add_argument("model", metavar="MODEL", help="path/to/file.py:factory returning (model, inputs)")
    prof.add_argument("--target", required=True, metavar="T", help="target name or .yaml path")
    prof.add_argument("--json", type=Path, metavar="FILE", help="write the comparison as JSON")
    prof.add_argument("--plot", type=Path, metavar="FILE.png", help="write the log-log scatter plot")
    prof.add_argument("--repeat", type=int, default=20, help="profiled calls (default 20)")
    prof.set_defaults(func=_cmd_profile)


def _existing_output(path: Path | None) -> None:
    if path is not None and path.is_dir():
        raise CalibrateError(f"{path} is a directory; give a file name")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from codesign.calibrate.fit import LIBRARY_CONVS, dump_calibration, fit
    from codesign.calibrate.measure import RawData
    from codesign.targets import load_target

    target = load_target(args.target)
    _existing_output(args.out)
    if args.budget <= 0 or args.budget > 3600:
        raise CalibrateError(f"--budget {args.budget} must be in (0, 3600] seconds")
    convs = _read_raw(args.library_convs) if args.library_convs is not None else None
    if convs is not None and not any(p.case.startswith(LIBRARY_CONVS) for p in convs.programs):
        raise CalibrateError(f"{args.library_convs}: no library convs in it (cases named {LIBRARY_CONVS}_*, "
                             "as benchmarks/conv_layouts.py --raw writes them)")
    if args.from_data is not None:
        raw = _read_raw(args.from_data)
        reference = str(args.from_data)
    else:
        raw = _measure(target, args.budget)
        raw_path = args.raw or (args.out.with_suffix(".raw.json") if args.out else None)
        if raw_path is not None:
            raw_path.write_text(raw.to_json())
            print(f"raw measurements: {raw_path}", file=sys.stderr)
        reference = str(raw_path) if raw_path else ""
    if raw.meta.get("target") not in (None, target.name):
        print(f"note: the raw data was measured for target {raw.meta.get('target')!r}, fitted to {target.name!r}",
              file=sys.stderr)
    calibration = fit(RawData({**raw.meta, "raw": Path(reference).name if reference else ""}, raw.programs), target,
                      convs)
    text = dump_calibration(calibration)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        quality = calibration.fit
        print(f"wrote {args.out}: {quality.kernels} kernels, median |pred/meas - 1| {quality.median_abs_error:.3f}, "
              f"p90 {quality.p90_abs_error:.3f}", file=sys.stderr)
    return 0


def _read_raw(path: Path):
    """Saved measurements (`RawData`), or one line saying why the file cannot be read."""
    from codesign.calibrate.measure import RawData
    try:
        return RawData.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrateError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrateError(f"{path}: not a codesign raw calibration file ({exc})") from None


def _device(target):
    """Where `target` is measured: this CPU for a CPU target (its kernels run as the C++
    backend's), a CUDA device for a GPU target; other kinds of chip cannot be measured here."""
    import torch
    if target.kind == "cpu":
        return torch.device("cpu")
    if target.kind != "gpu":
        raise CalibrateError(f"target {target.name} ({target.kind}) cannot be measured on this machine: give it "
                             "a calibration from published figures (source: cited, with its citations)")
    if not torch.cuda.is_available():
        raise CalibrateError(f"target {target.name} is a GPU: measuring it needs a CUDA device, and none is "
                             "present (refit with --from-data, or measure a CPU target such as cpu-host)")
    return torch.device("cuda")


def _measure(target, budget: float):
    from rich.progress import Progress

    from codesign.calibrate.measure import measure
    device = _device(target)
    with Progress(transient=True) as progress:
        task = progress.add_task("calibrating", total=None)

        def step(name: str, i: int, n: int) -> None:
            progress.update(task, total=n, completed=i, description=f"calibrating: {name}")
        return measure(target, device, budget_s=budget, progress=step)


def _cmd_profile(args: argparse.Namespace) -> int:
    import torch

    import codesign
    from codesign.calibrate.measure import RawData, device_meta
    from codesign.calibrate.profile import profile_cuda
    from codesign.calibrate.profile_cpu import profile_cpu
    from codesign.calibrate.validate import scatter_plot, validate
    from codesign.targets import load_target
    from codesign.targets.units import format_time

    if not 1 <= args.repeat <= 10000:
        raise CalibrateError(f"--repeat {args.repeat} must be in 1..10000")
    device = _device(load_target(args.target))
    model, inputs = codesign.load_factory(args.model)
    model = model.to(device).eval()
    inputs = tuple(x.to(device) for x in inputs)
    with torch.no_grad():
        cm = codesign.compile(model, inputs, target=args.target)
        time_kernels = profile_cuda if device.type == "cuda" else profile_cpu
        program = time_kernels(cm.graph.name, cm, inputs, repeat=args.repeat)
    report = validate(RawData(device_meta(device), (program,)), cm.target)
    print(f"{'kernel':<40}{'measured':>12}{'predicted':>12}{'error':>8}")
    for k in sorted(report["kernels"], key=lambda k: -k["measured_seconds"]):
        print(f"{k['kernel'][:39]:<40}{format_time(k['measured_seconds']):>12}"
              f"{format_time(k['predicted_seconds']):>12}{k['abs_error']:>8.2f}")
    p = report["programs"][0]
    s = report["summary"]
    print(f"program: measured {format_time(p['wall_seconds'])}, predicted {format_time(p['predicted_seconds'])}; "
          f"{s['kernels']} kernels, median |pred/meas - 1| {s['median_abs_error']:.3f} ({s['model']} model)")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    if args.plot is not None:
        scatter_plot(report, args.plot, f"{cm.graph.name} on {cm.target.name}")
    return 0
