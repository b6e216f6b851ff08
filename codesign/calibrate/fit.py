"""Fit a target's efficiency model to raw measurements, deterministically.

The figures of `Efficiency` are fitted together by least squares on the log of predicted
over measured device time of every measured kernel (scipy's trust-region solver from a fixed
start, so the same data gives the same figures; they are rounded to four significant digits
so the file is byte-identical on one machine and agrees to the figures' precision across CPUs;
a weak pull of every figure towards its start makes the optimum unique where the data leaves
a figure free). The output tile for wave quantisation is
discrete: each candidate is fitted and the best kept. The host's cost per launch comes from
the launch cases, programs of many tiny kernels whose wall time is the host's.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from codesign.calibrate.measure import RawData
from codesign.calibrate.profile import KernelTime
from codesign.calibrate.validate import percentile
from codesign.cost.model import calibrated_time
from codesign.targets import Target
from codesign.targets.calibration import Calibration, Efficiency, FitQuality

PRIOR = 0.05
"""Weight of the pull of every figure towards its start (per unit of log): a figure the data
leaves free (a flat valley of the least-squares cost) settles at a unique point instead of
wherever the solver stops, so the last bits of the arithmetic (another CPU's BLAS kernels)
do not move it. At 0.05 it is not only a tie-break: on the h200 suite it is ~13% of the
objective and moves weakly determined figures (memory:attention 0.94 -> 0.65, overlap 1.0 ->
1.4; the data cost rises 4%, the fit's reported errors, data only, fall); 0.005 keeps the
optimum unique with every figure within ~0.5% of the unpulled fit."""
TOLERANCE = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)  # converge well past the figures' four digits

TILES = ((128, 128), (128, 256))  # candidate effective output tiles (wave quantisation)
CACHES = (0.0, 32 * 2**20)  # candidate cache capacities (bytes): none, or a 32 MiB L2-like cache
_DTYPE_KEY = {"bf16": "bf16", "f16": "fp16", "f32": "fp32", "f64": "fp32"}


def matrix_key(k: KernelTime) -> str | None:
    if not k.features.matrix_flops:
        return None
    key = f"{k.features.template}/{_DTYPE_KEY.get(k.features.dtype, 'fp32')}"
    return key + "/vendor" if k.implementation == "vendor" else key


@dataclass(frozen=True)
class _Param:
    name: str  # "matrix:gemm/bf16", "memory:row", "fixed:vendor", "k_half", ...
    start: float
    low: float
    high: float


@dataclass(frozen=True)
class _Layout:
    """The figures the data can determine, in the parameter vector's order. A figure no
    measured kernel depends on (no prologue measured, say) keeps its default."""

    params: tuple[_Param, ...]

    @classmethod
    def of(cls, kernels: list[KernelTime], target: Target) -> "_Layout":
        f = [k.features for k in kernels]
        generated = [k for k in kernels if k.implementation != "vendor"]
        vendor = [k for k in kernels if k.implementation == "vendor"]
        keys = sorted({matrix_key(k) for k in kernels} - {None})
        params = [_Param(f"matrix:{key}", 0.6, 1e-3, 1.5) for key in keys]
        if any(k.features.gemm for k in generated):
            params += [_Param("tile_overhead", 2e-6, 1e-9, 1e-4), _Param("unit_bandwidth", 50e9, 1e8, 1e13)]
        if any(k.features.gemm for k in vendor):
            params.append(_Param("vendor_k_half", 64.0, 1e-3, 1e5))
        if any(x.vector_flops > x.prologue_flops for x in f):
            params.append(_Param("vector", 0.5, 1e-3, 1.5))
        if any(x.prologue_flops for x in f):
            params.append(_Param("prologue", 0.2, 1e-4, 1.5))
        if any(x.epilogue_flops for x in f):
            params.append(_Param("epilogue", 0.2, 1e-4, 1.5))
        params.append(_Param("cached", 1.5, 0.5, 8.0))
        params += [_Param(f"memory:{t}", 0.8, 1e-2, 1.5) for t in sorted({x.template for x in f})
                   if t in MEMORY_CLASSES]
        if any(x.im2col_bytes for x in generated_features(kernels)):
            params.append(_Param("im2col", 0.2, 1e-3, 1.5))
        if any(x.strided_bytes for x in f):
            params.append(_Param("strided", 0.2, 1e-3, 1.5))
        if any(x.special for x in f):
            params.append(_Param("special_rate", _special_start(target), 1e6, 1e16))
        params += [_Param(f"fixed:{t}", 3e-6, 1e-8, 1e-3) for t in sorted({x.template for x in f})]
        if vendor:
            params.append(_Param("fixed:vendor", 3e-6, 1e-8, 1e-3))
        params.append(_Param("overlap", 4.0, 1.0, 32.0))
        return cls(tuple(params))

    def start(self) -> np.ndarray:
        return np.log([p.start for p in self.params])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.log([p.low for p in self.params]), np.log([p.high for p in self.params])

    def efficiency(self, values: list[float], tile: tuple[int, int], host: tuple[float, float, float],
                   asynchronous: bool, validate: bool = False, cache: float = 0.0,
                   units: int | None = None) -> Efficiency:
        v = dict(zip((p.name for p in self.params), values))
        fields = dict(matrix=_prefixed(v, "matrix"), memory=_prefixed(v, "memory") or {"vector": 1.0},
                      fixed=_prefixed(v, "fixed"), tile=tile, host_per_call=host[0], host_per_launch=host[1],
                      host_per_argument=host[2], asynchronous_launch=asynchronous, cache_capacity=cache)
        if units is not None:
            fields["units"] = units
        for name in ("tile_overhead", "vendor_k_half", "unit_bandwidth", "vector", "prologue", "epilogue",
                     "strided", "im2col", "cached", "special_rate", "overlap"):
            if name in v:
                fields[name] = v[name]
        if not validate:
            return Efficiency.model_construct(**{**_DEFAULTS, **fields})
        return Efficiency(**fields)


def _prefixed(values: dict[str, float], prefix: str) -> dict[str, float]:
    """The figures of one table among fitted values named `<table>:<key>`, by key."""
    return {k.split(":", 1)[1]: x for k, x in values.items() if k.startswith(prefix + ":")}


MEMORY_CLASSES = ("vector", "row", "pool", "group_norm", "gemm", "attention", "conv", "depthwise", "moe")


def generated_features(kernels: list[KernelTime]) -> list:
    return [k.features for k in kernels if k.implementation != "vendor"]
_DEFAULTS = {name: field.get_default(call_default_factory=True) for name, field in Efficiency.model_fields.items()
             if not field.is_required()}


def _special_start(target: Target) -> float:
    """A first guess at the special-function rate: a sixteenth of the vector FLOP rate."""
    peak = target.compute.peak
    return (peak.get("fp32") or max(peak.values())) / 16


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
    return FitQuality(kernels=len(errs), median_abs_error=_round(statistics.median(errs)),
                      p90_abs_error=_round(percentile(errs, 0.9)))


def cpu_program_costs(raw: RawData) -> tuple[float, float, float]:
    """(per call, per kernel, in-sequence factor) of CPU programs: the host runs the kernels
    itself, so a program's wall is its kernels back to back plus the calling convention. Fitted
    to every suite program of generated kernels, wall - kernels - output copies =
    call + n_kernels * per_kernel + (factor - 1) * kernels, by least squares on relative
    errors (each program weighs by its wall), each figure at least its floor."""
    rows, gaps, shares = [], [], []
    for p in raw.programs:
        if p.kernels and all(k.implementation != "vendor" for k in p.kernels) and p.wall_seconds > 0:
            kernels = sum(k.total_seconds for k in p.kernels)
            share = p.wall_seconds - kernels - p.other_device_seconds
            rows.append(np.array([1.0, sum(k.launches for k in p.kernels), kernels]) / p.wall_seconds)
            gaps.append(share / p.wall_seconds)
            shares.append(max(share, 0.0))
    if len(rows) < 3:  # too few programs to tell the three apart: the host's share per call
        return (statistics.median(shares) if shares else 0.0), 0.0, 1.0
    from scipy.optimize import lsq_linear
    solved = lsq_linear(np.array(rows), np.array(gaps), bounds=([0.0, 0.0, 0.0], [1e-2, 1e-3, 3.0]))
    call, per_kernel, extra = (float(v) for v in solved.x)
    return call, per_kernel, 1.0 + extra


def host_costs(raw: RawData) -> tuple[float, float, float]:
    """(per call, per launch, per argument) host seconds, fitted by least squares (without
    enough cases, the per-launch cost alone). On a GPU, to the launch cases: programs of tiny
    kernels whose wall time is the host's (a CPU's come from `cpu_program_costs`)."""
    rows, walls = [], []
    for program in raw.programs:  # graph replays pay no per-launch host cost: left out
        if program.case.startswith("launch") and program.kernels and not program.graphed:
            rows.append([1.0, sum(k.launches for k in program.kernels),
                         sum(k.features.arguments * k.launches for k in program.kernels)])
            walls.append(program.wall_seconds)
    if not rows:
        return 0.0, 0.0, 0.0
    if len(rows) < 3 or np.linalg.matrix_rank(np.array(rows)) < 3:
        per_launch = sum(walls) / sum(r[1] for r in rows)
        return 0.0, per_launch, 0.0
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(walls), rcond=None)
    call, launch, argument = (max(float(c), 0.0) for c in coef)
    return call, launch, argument


def fit(raw: RawData, target: Target, library_convs: RawData | None = None) -> Calibration:
    """The calibration of `target` that best reproduces `raw` (see the module docstring), with
    the convolution library's figures fitted to `library_convs` where given."""
    kernels = [k for k in raw.kernels() if k.seconds > 0]
    if not kernels:
        raise ValueError("the raw data holds no measured kernels")
    layout = _Layout.of(kernels, target)
    if raw.meta.get("device_type") == "cpu":  # the host runs the kernels: per call, per kernel, in sequence
        call, launch, in_sequence = (_round(v) for v in cpu_program_costs(raw))
        argument = 0.0
    else:
        call, launch, argument = (_round(v) for v in host_costs(raw))
        in_sequence = None
    asynchronous = raw.meta.get("device_type") == "cuda"  # a GPU's host launches ahead of it
    units = measured_units(raw, target)
    measured = np.log(np.array([k.seconds for k in kernels]))
    weights = _case_weights(kernels)
    lo, hi = layout.bounds()
    start = np.clip(layout.start(), lo, hi)
    best = None
    for tile, cache in ((t, c) for t in TILES for c in CACHES):
        def residuals(theta: np.ndarray, tile=tile, cache=cache) -> np.ndarray:
            eff = layout.efficiency(np.exp(theta).tolist(), tile, (call, launch, argument), asynchronous, cache=cache,
                                    units=units)
            predicted = [calibrated_time(k.features, target, eff, vendor=k.implementation == "vendor")[0]
                         for k in kernels]
            return np.concatenate([weights * (np.log(np.maximum(predicted, 1e-12)) - measured),
                                   PRIOR * (theta - start)])

        result = least_squares(residuals, start, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=400,
                               **TOLERANCE)
        cost = float(result.cost)
        if best is None or cost < best[0] - 1e-12:
            best = (cost, tile, cache, result.x)
    _, tile, cache, theta = best
    values = [_round(v) for v in np.exp(theta).tolist()]
    efficiency = layout.efficiency(values, tile, (call, launch, argument), asynchronous, validate=True, cache=cache,
                                   units=units)
    if in_sequence is not None:
        efficiency = efficiency.model_copy(update={"in_sequence": in_sequence})
    notes = [f"fitted by codesign calibrate to {len(kernels)} kernels of {len(raw.programs)} programs "
             f"({', '.join(sorted({p.case for p in raw.programs}))})"]
    if library_convs is not None and library_convs.programs:
        efficiency = fit_library_convs(library_convs, target, efficiency)
        convs = sum(len(p.kernels) for p in library_convs.programs)
        notes.append(f"library conv figures fitted to {convs} convs timed in both layouts "
                     f"({library_convs.meta.get('benchmark', 'conv raw data')}, {library_convs.meta.get('date', '')})")
    meta = raw.meta
    software = {k: str(meta[k]) for k in ("driver", "cuda", "torch", "triton", "compiler", "blas", "python")
                if meta.get(k)}
    return Calibration(
        target=target.name, source="measured", device=str(meta.get("device", "")), date=str(meta.get("date", "")),
        software=software, threads=meta.get("threads"),
        notes=tuple(notes),
        raw=str(meta.get("raw", "")), efficiency=efficiency, fit=quality(kernels, target, efficiency))


LIBRARY_CONVS = "conv_library"
"""Programs of library convs (`benchmarks/conv_layouts.py --raw`): cases named `conv_library_*`."""


def fit_library_convs(raw: RawData, target: Target, efficiency: Efficiency) -> Efficiency:
    """`efficiency` with the convolution library's figures fitted to convs it ran in both
    layouts (`raw`): per class (conv, depthwise) its matrix fraction (`<class>/<dtype>/vendor`),
    memory fraction and fixed time per call (`<class>/vendor`), and what NCHW data costs more (the factor
    `nchw_library_conv` and the time `nchw_library_conv_fixed`), by least squares on log
    time with every other figure held (they come from the main suite, which runs no library
    conv); the same data gives the same figures."""
    kernels = [k for p in raw.programs if p.case.startswith(LIBRARY_CONVS) for k in p.kernels if k.seconds > 0]
    if not kernels:
        return efficiency
    classes = sorted({k.features.template for k in kernels})
    keys = sorted({f"{k.features.template}/{_DTYPE_KEY.get(k.features.dtype, 'fp32')}/vendor" for k in kernels})
    names = ([f"matrix:{key}" for key in keys] + [f"memory:{c}" for c in classes]
             + [f"fixed:{c}/vendor" for c in classes] + ["nchw_library_conv", "nchw_library_conv_fixed"])
    start = np.log([0.3] * len(keys) + [0.5] * len(classes) + [5e-6] * len(classes) + [1.2, 5e-6])
    lo = np.log([1e-3] * len(keys) + [1e-2] * len(classes) + [1e-8] * len(classes) + [0.5, 1e-9])
    hi = np.log([1.5] * len(keys) + [1.5] * len(classes) + [1e-3] * len(classes) + [8.0, 1e-3])

    def with_figures(values) -> Efficiency:
        v = dict(zip(names, values))
        tables = {t: {**getattr(efficiency, t), **_prefixed(v, t)} for t in ("matrix", "memory", "fixed")}
        return efficiency.model_copy(update={**tables, "nchw_library_conv": v["nchw_library_conv"],
                                             "nchw_library_conv_fixed": v["nchw_library_conv_fixed"]})
    measured = np.log([k.seconds for k in kernels])
    start = np.clip(start, lo, hi)

    def residuals(theta: np.ndarray) -> np.ndarray:
        eff = with_figures(np.exp(theta).tolist())
        predicted = [calibrated_time(k.features, target, eff, vendor=True)[0] for k in kernels]
        return np.concatenate([np.log(np.maximum(predicted, 1e-12)) - measured, PRIOR * (theta - start)])
    result = least_squares(residuals, start, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=400,
                           **TOLERANCE)
    fitted = with_figures([_round(v) for v in np.exp(result.x).tolist()])
    return Efficiency(**fitted.model_dump())


def measured_units(raw: RawData, target: Target) -> int | None:
    """The compute units the programs ran on, when fewer than the target's: a CPU's threads."""
    threads = raw.meta.get("threads")
    if raw.meta.get("device_type") != "cpu" or not threads:
        return None
    return int(threads) if int(threads) < target.compute.units * target.sockets else None


def _case_weights(kernels: list[KernelTime]) -> np.ndarray:
    """Each program weighs the same in the fit, however many kernels it has."""
    counts: dict[str, int] = {}
    for k in kernels:
        counts[k.case] = counts.get(k.case, 0) + 1
    return np.array([1.0 / math.sqrt(counts[k.case]) for k in kernels])


def figures_disagree(a: Calibration, b: Calibration, rel: float = 1e-3) -> list[str]:
    """The fields where two calibrations differ beyond `rel` (every number) or at all (the
    rest): a refit on another CPU reproduces a calibration to its figures' precision, not
    always to the last of their four digits (its BLAS rounds differently)."""
    def walk(x, y, path: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            return [d for k in sorted(set(x) | set(y)) for d in walk(x.get(k), y.get(k), f"{path}.{k}")]
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
            return [d for i, (u, v) in enumerate(zip(x, y)) for d in walk(u, v, f"{path}[{i}]")]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers and math.isclose(x, y, rel_tol=rel, abs_tol=0.0):
            return []
        return [] if x == y else [f"{path.lstrip('.')}: {x!r} vs {y!r}"]
    return walk(a.model_dump(mode="json"), b.model_dump(mode="json"), "")


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

