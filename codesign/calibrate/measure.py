"""Run a calibration suite on the device present and save the raw measurements.

The raw file holds every program's per-kernel device times with their features, the vendor
library's GEMM times, and what was measured on (device, driver, versions, threads, date),
so `codesign calibrate --from-data RAW.json` refits without the device.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from codesign.calibrate.profile import KernelTime, ProgramTime, profile_cuda, time_vendor_cuda
from codesign.calibrate.suites import Case, cpu_cases, gpu_cases

RAW_FORMAT = 1


@dataclass(frozen=True)
class RawData:
    """Everything one calibration run measured."""

    meta: dict
    programs: tuple[ProgramTime, ...]

    def to_json(self) -> str:
        return json.dumps({"format": RAW_FORMAT, "meta": self.meta,
                           "programs": [p.as_dict() for p in self.programs]}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "RawData":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != RAW_FORMAT:
            raise ValueError(f"not a codesign raw calibration file (format {RAW_FORMAT} expected)")
        return cls(dict(data["meta"]), tuple(ProgramTime.from_dict(p) for p in data["programs"]))

    def kernels(self, implementation: str | None = None) -> list[KernelTime]:
        return [k for p in self.programs for k in p.kernels
                if implementation is None or k.implementation == implementation]


def device_meta(device: torch.device) -> dict:
    meta = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "device_type": device.type,
            "python": platform.python_version(), "host": platform.processor() or platform.machine()}
    if device.type == "cuda":
        import triton
        props = torch.cuda.get_device_properties(device)
        meta.update(device=props.name, sms=props.multi_processor_count, cuda=torch.version.cuda or "",
                    triton=triton.__version__, driver=_driver_version())
    else:
        meta.update(device=_cpu_name(), threads=torch.get_num_threads(), **_cpp_toolchain())
    return meta


def _cpp_toolchain() -> dict:
    """The C++ backend's compiler and BLAS (with the kernels it loads on this CPU)."""
    from codesign.codegen import CodegenError
    from codesign.codegen.cpp.build import compiler, compiler_version, find_blas, openblas_core
    try:
        meta = {"compiler": compiler_version(compiler())}
    except CodegenError:  # no compiler: the first case says so
        meta = {}
    blas = find_blas()
    if blas is not None:
        meta["blas"] = blas.name + (f", {openblas_core()} kernels requested" if openblas_core() else "")
    return meta


def _driver_version() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> float:
    import os
    return round(os.getloadavg()[0], 2)


def measure_case(case: Case, target, device: torch.device, repeat: int,
                 compile_only: bool = False) -> list[ProgramTime]:
    """Compile one case with codesign for `target`, time its kernels, and time the vendor
    library's GEMMs of the same shapes beside them (`compile_only`: build and run it once,
    to fill the caches, and measure nothing)."""
    import codesign

    torch.manual_seed(0)
    module, inputs = case.build(device, case.dtype)
    module = module.eval()
    # the launch cases measure the host's cost per launch, which a program pays launch by
    # launch (on a GPU: one whose program is not replayed as a CUDA graph)
    options = {"triton": {"cuda_graphs": False}} if case.axis == "launch" and device.type == "cuda" else None
    with torch.no_grad():
        cm = codesign.compile(module, inputs, target=target, backend_options=options)
        if compile_only:
            cm(*inputs)
            return []
        if device.type == "cuda":
            program = profile_cuda(case.name, cm, inputs, repeat=repeat)
        else:
            from codesign.calibrate.profile_cpu import profile_cpu
            program = profile_cpu(case.name, cm, inputs, repeat=repeat)
        results = [program]
        if case.gemms:
            results.append(_vendor(case, program, device, repeat))
    return results


def _vendor(case: Case, program: ProgramTime, device: torch.device, repeat: int) -> ProgramTime:
    by_shape = {k.features.gemm: k for k in program.kernels if k.features.gemm}
    timed = []
    for m, n, k in case.gemms:
        generated = by_shape.get((1, m, n, k))
        if generated is None:
            continue
        a = torch.randn(m, k, device=device, dtype=case.dtype)
        b = torch.randn(k, n, device=device, dtype=case.dtype)
        if device.type == "cuda":
            seconds = time_vendor_cuda(lambda: torch.matmul(a, b), repeat=repeat)
        else:
            from codesign.calibrate.profile_cpu import time_host
            seconds = time_host(lambda: torch.matmul(a, b), repeat=repeat)
        timed.append(KernelTime(f"{case.name}_vendor", f"matmul_{m}x{n}x{k}", generated.key,
                                generated.features, seconds, "vendor"))
    return ProgramTime(f"{case.name}_vendor", sum(t.seconds for t in timed), tuple(timed), launches=len(timed))


def measure(target, device: torch.device, *, budget_s: float = 300.0, repeat: int = 20,
            progress: Callable[[str, int, int], None] | None = None, axes: tuple[str, ...] = (),
            compile_only: bool = False) -> RawData:
    """Run the device's suite (the cases of `axes`, default all) within `budget_s` seconds
    (cases left over are skipped and named in the notes)."""
    cases = gpu_cases() if device.type == "cuda" else cpu_cases()
    if axes:
        cases = [c for c in cases if c.axis in axes]
    start = time.perf_counter()
    load_before = _load()
    programs: list[ProgramTime] = []
    skipped: list[str] = []
    for i, case in enumerate(cases):
        if time.perf_counter() - start > budget_s:
            skipped.append(case.name)
            continue
        if progress:
            progress(case.name, i, len(cases))
        programs.extend(measure_case(case, target, device, repeat, compile_only))
    meta = device_meta(device)
    meta["target"] = getattr(target, "name", str(target))
    meta["seconds"] = round(time.perf_counter() - start, 1)
    if device.type == "cpu":  # other processes share the cores: say how busy they kept them
        meta["load_average"] = [load_before, _load()]
    if skipped:
        meta["skipped"] = skipped
    return RawData(meta, tuple(programs))
