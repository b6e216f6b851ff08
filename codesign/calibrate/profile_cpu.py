"""Time each kernel of a compiled model on the CPU, beside the cost model's view of it.

The C++ backend's profiling build (`CppModule(..., profile=True)`: a timer after each kernel
call of the generated `run`, `codesign.codegen.cpp.profiling`) gives each kernel call's wall
time; every call runs one graph kernel, so each measurement carries that kernel's
`KernelFeatures`, as `profile_cuda`'s do. The program's time is the default build's (no
timers), called through the compiled module as a user calls it; its runs are interleaved
with the profiled ones, so both see the same machine load. A CPU's kernels run one after
the other on the host, so the per-kernel times add up to the program's minus the host's
share (the calling convention, ctypes), which the fit prices as the host's cost per call.

On a shared machine the samples are bimodal: a kernel whose OpenMP team lost a core to
another process waits a scheduler slice at its barrier (1 ms becomes 17-40 ms on a loaded
2-core box), and at a load average of 6 most samples are. Every time here is therefore
`steady`: the median of the fastest quarter of the samples, which on an idle machine is
within the samples' spread of their median, and on a busy one is the machine's own speed,
not its neighbours'. The load average is recorded with each program.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Sequence

import torch

from codesign.calibrate.profile import KernelTime, ProgramTime, kernel_features_by_name


def steady(samples: Sequence[float]) -> float:
    """The median of the fastest quarter of `samples` (see the module docstring)."""
    ordered = sorted(samples)
    return statistics.median(ordered[:max(1, (len(ordered) + 3) // 4)])


def time_host(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Steady wall time of `fn()` on the host (`steady`), seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return steady(samples)


def profiled_program(cm):
    """`cm`'s C++ program built again with per-kernel timers (its other options kept)."""
    from codesign.codegen.registry import get_backend

    options = {**cm.backend_options.get("cpp", {}), "profile": True}
    return get_backend("cpp").build(cm.graph_for("cpp"), cm.state, cm.target, options)


def profile_cpu(case: str, cm, inputs: Sequence[torch.Tensor], repeat: int = 20, warmup: int = 3) -> ProgramTime:
    """Time every kernel of `cm` on CPU inputs (the C++ program): each kernel call's steady
    time over `repeat` profiled runs, and the steady wall time of `repeat` calls of `cm` itself."""
    timed = profiled_program(cm)
    graph = cm.graph_for("cpp")
    timers = timed.code.timers
    features, _ = kernel_features_by_name(cm.target, graph, [(t.key, t.nodes) for t in timers], [])
    runtime = cm.calling.bind(inputs)
    load_before = os.getloadavg()[0]
    for _ in range(warmup):
        cm(*inputs)
        timed(*runtime)
    walls: list[float] = []
    samples: dict[str, list[float]] = {t.key: [] for t in timers}
    copies: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        cm(*inputs)
        walls.append(time.perf_counter() - start)
        timed.reset_profile()
        timed(*runtime)
        seconds, copied, _, _ = timed.kernel_seconds()
        for key, value in seconds.items():
            samples[key].append(value)
        copies.append(copied)
    measured = tuple(KernelTime(case, t.function, t.key, features[t.key][1], steady(samples[t.key]))
                     for t in timers if t.key in features)
    notes = (f"threads {torch.get_num_threads()}", f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
             f"GEMM: {timed.gemm}")
    return ProgramTime(case, steady(walls), measured, steady(copies), len(timers), (), notes)
