"""Fit a target's efficiency model to raw measurements, deterministically.

The figures of `Efficiency` are fitted together by least squares on the log of predicted
over measured device time of every measured kernel (scipy's trust-region solver from a fixed
start, so the same data gives the same figures; they are rounded to four significant digits
so the file is byte-identical across platforms). The output tile for wave quantisation is
discrete: each candidate is fitted and the best kept. The host's cost per launch comes from
the launch case, a program of many tiny kernels, whose wall time is the host's.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from codesign.calibrate.measure import RawData
from codesign.calibrate.profile import KernelTime
from codesign.cost.model import calibrated_time
from codesign.targets import Target
from codesign.targets.calibration import Calibration, Efficiency, FitQuality

TILES = ((64, 64), (128, 64), (128, 128), (128, 256))
FIXED_TEMPLATES = ("vector", "gemm", "attention")
_DTYPE_KEY = {"bf16": "bf16", "f16": "fp16", "f32": "fp32", "f64": "fp32"}


def matrix_key(k: KernelTime) -> str | None:
    if not k.features.matrix_flops:
        return None
    key = f"{k.features.template}/{_DTYPE_KEY.get(k.features.dtype, 'fp32')}"
    return key + "/vendor" if k.implementation == "vendor" else key


@dataclass(frozen=True)
class _Layout:
    """Which position of the parameter vector holds which figure."""

    matrix: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (*(f"matrix:{k}" for k in self.matrix), "k_half", "vector", "memory", "special_rate",
                *(f"fixed:{t}" for t in FIXED_TEMPLATES), "overlap")

    def start(self, target: Target) -> np.ndarray:
        values = [0.6] * len(self.matrix) + [64.0, 0.5, 0.8, _special_start(target), 3e-6, 5e-6, 5e-6, 4.0]
        return np.log(np.array(values))

    def efficiency(self, theta: np.ndarray, tile: tuple[int, int], host: float, asynchronous: bool,
                   validate: bool = False) -> Efficiency:
        v = dict(zip(self.names, np.exp(theta).tolist()))
        fields = dict(
            matrix={k: min(v[f"matrix:{k}"], 1.5) for k in self.matrix}, k_half=v["k_half"], tile=tile,
            vector=min(v["vector"], 1.5), special_rate=v["special_rate"], memory=min(v["memory"], 1.5),
            fixed={t: v[f"fixed:{t}"] for t in FIXED_TEMPLATES}, overlap=min(max(v["overlap"], 1.0), 64.0),
            host_per_launch=host, asynchronous_launch=asynchronous)
        return Efficiency(**fields) if validate else Efficiency.model_construct(**fields)


def _special_start(target: Target) -> float:
    """A first guess at the special-function rate: a sixteenth of the vector FLOP rate."""
    peak = target.compute.peak
    return (peak.get("fp32") or max(peak.values())) / 16


def _bounds(layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    lo = {"k_half": 1e-3, "vector": 1e-3, "memory": 1e-2, "special_rate": 1e6, "overlap": 1.0}
    hi = {"k_half": 1e5, "vector": 1.5, "memory": 1.5, "special_rate": 1e16, "overlap": 32.0}
    lows, highs = [], []
    for name in layout.names:
        if name.startswith("matrix:"):
            lows.append(1e-3), highs.append(1.5)
        elif name.startswith("fixed:"):
            lows.append(1e-8), highs.append(1e-3)
        else:
            lows.append(lo[name]), highs.append(hi[name])
    return np.log(lows), np.log(highs)


def errors(kernels: list[KernelTime], target: Target, efficiency: Efficiency) -> list[float]:
    """|predicted / measured - 1| per kernel."""
    out = []
    for k in kernels:
        predicted = calibrated_time(k.features, target, efficiency, vendor=k.implementation == "vendor")[0]
        out.append(abs(predicted / k.seconds - 1.0))
    return out


def quality(kernels: list[KernelTime], target: Target, efficiency: Efficiency) -> FitQuality:
    errs = sorted(errors(kernels, target, efficiency))
    if not errs:
        return FitQuality(kernels=0, median_abs_error=0.0, p90_abs_error=0.0)
    p90 = errs[min(len(errs) - 1, math.ceil(0.9 * len(errs)) - 1)]
    return FitQuality(kernels=len(errs), median_abs_error=_round(statistics.median(errs)),
                      p90_abs_error=_round(p90))


def host_per_launch(raw: RawData) -> float:
    """Host seconds per launch: the launch case's wall time over its launches (a program of
    tiny kernels is host-bound), else 0."""
    for program in raw.programs:
        if program.case == "launch" and program.launches:
            return program.wall_seconds / program.launches
    return 0.0


def fit(raw: RawData, target: Target) -> Calibration:
    """The calibration of `target` that best reproduces `raw` (see the module docstring)."""
    kernels = [k for k in raw.kernels() if k.seconds > 0]
    if not kernels:
        raise ValueError("the raw data holds no measured kernels")
    layout = _Layout(tuple(sorted({key for k in kernels if (key := matrix_key(k))})))
    host = host_per_launch(raw)
    asynchronous = raw.meta.get("device_type") == "cuda"  # a GPU's host launches ahead of it
    measured = np.log(np.array([k.seconds for k in kernels]))
    weights = _case_weights(kernels)
    lo, hi = _bounds(layout)
    best = None
    for tile in TILES:
        def residuals(theta: np.ndarray, tile=tile) -> np.ndarray:
            eff = layout.efficiency(theta, tile, host, asynchronous)
            predicted = [calibrated_time(k.features, target, eff, vendor=k.implementation == "vendor")[0]
                         for k in kernels]
            return weights * (np.log(np.maximum(predicted, 1e-12)) - measured)

        result = least_squares(residuals, np.clip(layout.start(target), lo, hi), bounds=(lo, hi),
                               method="trf", x_scale="jac", max_nfev=400)
        cost = float(result.cost)
        if best is None or cost < best[0] - 1e-12:
            best = (cost, tile, result.x)
    _, tile, theta = best
    rounded = np.log([_round(v) for v in np.exp(theta).tolist()])
    efficiency = layout.efficiency(rounded, tile, _round(host), asynchronous, validate=True)
    meta = raw.meta
    software = {k: str(meta[k]) for k in ("driver", "cuda", "torch", "triton", "compiler", "blas", "python")
                if meta.get(k)}
    return Calibration(
        target=target.name, source="measured", device=str(meta.get("device", "")), date=str(meta.get("date", "")),
        software=software, threads=meta.get("threads"),
        notes=(f"fitted by codesign calibrate to {len(kernels)} kernels of {len(raw.programs)} programs "
               f"({', '.join(sorted({p.case for p in raw.programs}))})",),
        raw=str(meta.get("raw", "")), efficiency=efficiency, fit=quality(kernels, target, efficiency))


def _case_weights(kernels: list[KernelTime]) -> np.ndarray:
    """Each program weighs the same in the fit, however many kernels it has."""
    counts: dict[str, int] = {}
    for k in kernels:
        counts[k.case] = counts.get(k.case, 0) + 1
    return np.array([1.0 / math.sqrt(counts[k.case]) for k in kernels])


def _round(value: float, digits: int = 4) -> float:
    """Four significant digits: the figures' precision, and byte-identical files."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits - 1}e}")


def dump_calibration(calibration: Calibration) -> str:
    """The calibration as YAML (sorted keys, plain types): the file `calibrate` writes."""
    import yaml
    data = calibration.model_dump(mode="json", exclude_none=True)
    header = (f"# codesign calibration of target {calibration.target}: {calibration.source}"
              + (f" on {calibration.device}" if calibration.device else "")
              + (f", {calibration.date}" if calibration.date else "") + "\n")
    return header + yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)

