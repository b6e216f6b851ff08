"""Per-kernel timers in the generated C++, built only when asked for (`profile=True`).

A profiling build adds, and changes, nothing else: one array of seconds per program
(`cs_prof_seconds`), a clock read after each kernel call of `run` that adds the time since
the previous read to that call's slot, then a slot for the output copies and one for the
whole run (from after the GEMM set-up to the last copy), and three entry points to read and
clear them. Every line it adds names `cs_prof`, so the default source is the profiling
source without those lines, byte for byte (`tests/test_cpp_profile.py`). Readings are
consecutive, so the slots add up to the run's time; the clock is `omp_get_wtime` on the
calling thread, which waits for each kernel's OpenMP region to end, so a slot is the
kernel's wall time with every thread's work in it. Region programs (an MoE's expert body)
are timed as part of the kernel that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

MARK = "cs_prof"  # every line a profiling build adds contains it


@dataclass(frozen=True)
class Timer:
    """One timed kernel call of `run`: the C++ function it calls, and the graph kernel it runs."""

    function: str
    key: str  # the graph kernel ("g3", "%name")
    nodes: tuple[str, ...]


def symbols(prefix: str | None = None) -> dict[str, str]:
    """The entry points of a profiling build (`codesign_profile_read`, or `<prefix>_profile_read`)."""
    return {k: f"{prefix}_profile_{k}" if prefix else f"codesign_profile_{k}" for k in ("slots", "read", "reset")}


def tick(slot: int) -> str:
    """The line after kernel call `slot`: its time since the previous reading."""
    return (f"  cs_prof_now = omp_get_wtime(); cs_prof_seconds[{slot}] += cs_prof_now - cs_prof_t; "
            "cs_prof_t = cs_prof_now;  // cs_prof")


def start() -> list[str]:
    return ["  double cs_prof_t = omp_get_wtime(), cs_prof_now = cs_prof_t; const double cs_prof_start = cs_prof_t;"
            "  // cs_prof"]


def finish(timers: int) -> list[str]:
    """The lines before `run` returns: the output copies' slot, the whole run's, the run count."""
    return [tick(timers),
            f"  cs_prof_seconds[{timers + 1}] += cs_prof_now - cs_prof_start; ++cs_prof_runs;  // cs_prof"]


def storage(timers: int) -> list[str]:
    return [f"// ---- per-kernel timers ({timers} kernel calls, then output copies, then the whole run) -- cs_prof",
            f"static double cs_prof_seconds[{timers + 2}];  // cs_prof",
            "static int64_t cs_prof_runs = 0;  // cs_prof"]


def entries(timers: int, prefix: str | None = None) -> list[str]:
    """`slots()`: how many; `read(out)`: copies the accumulated seconds, returns the runs
    they add up; `reset()`: clears them."""
    s = symbols(prefix)
    return [f"int {s['slots']}(void) {{ return {timers + 2}; }}  // cs_prof",
            f"int64_t {s['read']}(double* out) {{ for (int i = 0; i < {timers + 2}; ++i) out[i] = cs_prof_seconds[i];"
            " return cs_prof_runs; }  // cs_prof",
            f"void {s['reset']}(void) {{ for (int i = 0; i < {timers + 2}; ++i) cs_prof_seconds[i] = 0.0;"
            " cs_prof_runs = 0; }  // cs_prof"]


def declarations(prefix: str | None = None) -> list[str]:
    s = symbols(prefix)
    return [f"int {s['slots']}(void);  // cs_prof", f"int64_t {s['read']}(double* out);  // cs_prof",
            f"void {s['reset']}(void);  // cs_prof"]
