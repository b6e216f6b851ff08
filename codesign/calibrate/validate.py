"""Predicted beside measured, per kernel and per program: how right the cost model is.

`validate` prices every measured kernel with the target's model (calibrated when the
target carries a calibration, else the ideal roofline at the datasheet peaks) and reports
|predicted / measured - 1| per kernel, per program and over everything: the figures a
calibration is judged by. Library kernels that externs launched are priced as the vendor's
and count in the program's time, not per kernel (the profiler cannot tell them apart).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from codesign.calibrate.measure import RawData
from codesign.cost.features import KernelFeatures
from codesign.cost.model import calibrated_time, combine_host, host_time, peak_flops
from codesign.ir.types import DType
from codesign.targets import Target


def ideal_time(features: KernelFeatures, target: Target) -> float:
    """The uncalibrated model on a kernel's features: a roofline at the peaks plus launch."""
    dtype = DType(features.dtype)
    compute = (features.matrix_flops / peak_flops(target, dtype, True)
               + features.vector_flops / peak_flops(target, dtype, False)) / target.sockets
    memory = features.home_bytes / target.total_bandwidth(target.home_tier.name)
    return max(compute, memory) + target.launch_overhead


def predict(features: KernelFeatures, target: Target, vendor: bool = False) -> float:
    if target.calibration is None:
        return ideal_time(features, target)
    return calibrated_time(features, target, target.calibration.efficiency, vendor)[0]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile as the ceil(q·n)-th smallest value (what the calibration goals count)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def validate(raw: RawData, target: Target) -> dict:
    """Per-kernel and per-program errors of `target`'s model over `raw`'s measurements."""
    efficiency = target.calibration.efficiency if target.calibration else None
    kernels, programs, all_errors, program_errors = [], [], [], []
    for program in raw.programs:
        errs = []
        device = 0.0
        for k in program.kernels:
            predicted = predict(k.features, target, k.implementation == "vendor")
            device += predicted * k.launches
            err = abs(predicted / k.seconds - 1.0) if k.seconds > 0 else float("inf")
            errs.append(err)
            kernels.append({"case": program.case, "kernel": k.kernel, "key": k.key, "template": k.features.template,
                            "measured_seconds": k.seconds, "predicted_seconds": predicted, "abs_error": err,
                            "launches": k.launches})
        extern_device = sum(predict(f, target, vendor=True) for f in program.extern_features)
        device += extern_device
        if efficiency is None:
            total = device
        else:
            launches = (sum(host_time(k.features, efficiency) * k.launches for k in program.kernels)
                        + sum(host_time(f, efficiency) for f in program.extern_features))
            total = combine_host(device, launches, efficiency, program.graphed)
        program_err = abs(total / program.wall_seconds - 1.0) if program.wall_seconds > 0 else float("inf")
        all_errors += errs
        program_errors.append(program_err)
        programs.append({"case": program.case, "kernels": len(errs), "median_abs_error": statistics.median(errs) if errs else 0.0,
                         "p90_abs_error": percentile(errs, 0.9), "predicted_seconds": total,
                         "wall_seconds": program.wall_seconds, "program_abs_error": program_err,
                         "measured_kernel_seconds": sum(k.total_seconds for k in program.kernels),
                         "measured_other_device_seconds": program.other_device_seconds,
                         "predicted_extern_seconds": extern_device, "externs": len(program.extern_features),
                         "graphed": program.graphed})
    summary = {"kernels": len(all_errors), "programs": len(programs),
               "median_abs_error": statistics.median(all_errors) if all_errors else 0.0,
               "p90_abs_error": percentile(all_errors, 0.9),
               "program_median_abs_error": statistics.median(program_errors) if program_errors else 0.0,
               "model": "calibrated" if efficiency else "ideal (datasheet peaks)"}
    return {"summary": summary, "programs": programs, "kernels": kernels}


def scatter_plot(report: dict, path: str | Path, title: str) -> Path:
    """Predicted vs measured per kernel (log-log), one colour per program, the y = x line and
    the ±15% band; the slowest kernels labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=110)
    cases = sorted({k["case"] for k in report["kernels"]})
    for case in cases:
        pts = [(k["measured_seconds"] * 1e6, k["predicted_seconds"] * 1e6) for k in report["kernels"] if k["case"] == case]
        ax.scatter(*zip(*pts), s=14, label=case, alpha=0.8)
    values = [v for k in report["kernels"] for v in (k["measured_seconds"] * 1e6, k["predicted_seconds"] * 1e6)]
    lo, hi = (min(values) / 1.5, max(values) * 1.5) if values else (1.0, 10.0)
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15], color="grey", alpha=0.2, label="±15%")
    for k in sorted(report["kernels"], key=lambda k: -k["measured_seconds"])[:8]:
        ax.annotate(f"{k['case']}:{k['kernel'][:18]}", (k["measured_seconds"] * 1e6, k["predicted_seconds"] * 1e6),
                    fontsize=6, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured device time per kernel (µs)")
    ax.set_ylabel("predicted (µs)")
    s = report["summary"]
    ax.set_title(f"{title}\n{s['kernels']} kernels: median |pred/meas − 1| = {s['median_abs_error']:.3f}, "
                 f"p90 = {s['p90_abs_error']:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
