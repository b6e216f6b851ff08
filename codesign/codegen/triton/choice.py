"""Generated kernel or library, chosen per kernel by measurement on the card that runs it.

A generated GEMM with its fused prologue and epilogue saves the round trips of its
neighbours, but on some shapes its inner loop is far from the vendor library's (cuBLAS on
Hopper has warp-specialised, TMA-fed kernels that the Triton template does not match): a
32000-wide LM head ran 1.39 ms generated against cuBLAS's 0.70 ms on an H200. Neither the
cost model nor a rule knows the crossing point for every shape, so it is measured: at a
kernel's first launch on CUDA (outside any CUDA-graph capture), the generated kernel and
its *library form* — the kernel's nodes run by their torch definitions (`GuardedKernel.
reference`: cuBLAS / cuDNN for the anchor, torch kernels for the fused ops) — each run a
few times between CUDA events, and the faster is kept for the life of the module.

A GEMM kernel's source does not depend on its block sizes (`kernels.Launch`), so the
generated form is measured at each of its candidate launches — the plan's tile and the
other `kernels.GEMM_TILES` — and the fastest is the generated form's time and launch.

Times are what the module will pay: when it runs as a CUDA graph (`graphs`), each form is
captured in a graph of its own and its replays timed, so the Python of the library form's
torch calls — gone under a graph — does not count against it; otherwise (launch by launch)
the host's time between launches does count, and each form is timed as launched.

Choices are data: each is written to the disk cache (`codesign.codegen.cache`, verified as
every entry is), keyed by the kernel's canonical source (name and buffer names taken out),
its launches (grid, constants, warps, stages; the candidates too), whether it is timed as a
graph, its arguments' shapes, strides and dtypes, the card and the Triton and torch
versions, so a second process measures nothing; the module's report lists every choice
with both times and the launch kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from codesign.codegen.cache import Cache
from codesign.codegen.triton.kernels import Launch

TUNED_KINDS = ("matmul", "attention")
"""Kernels with a library form worth measuring: an anchor cuBLAS / cuDNN also runs."""

REPEATS = 5
"""Timed launches of each form (after one untimed launch each)."""

CHOICES = Cache("triton")
NAMES = ("choice.json",)
IMPLEMENTATIONS = ("generated", "library")


@dataclass(frozen=True)
class Choice:
    """Which form of one kernel runs, the two median times (ms) it was chosen on, and the
    generated form's fastest launch (None: the one the wrapper makes)."""

    implementation: str
    generated_ms: float
    library_ms: float
    launch: Launch | None = None

    def line(self, name: str) -> str:
        at = f" at {self.launch.label()}" if self.launch is not None else ""
        return (f"{name}: {self.implementation} ({self.generated_ms:.4g} ms generated{at}, "
                f"{self.library_ms:.4g} ms library form)")


def choice_key(digest: str, grid, args: Sequence, options: dict, launches: Sequence[Launch] = (),
               graphed: bool = False) -> str:
    """What a measured choice is valid for (see the module docstring)."""
    import triton
    shapes = [(tuple(a.shape), tuple(a.stride()), str(a.dtype)) if isinstance(a, torch.Tensor) else repr(a)
              for a in args]
    first = next((a for a in args if isinstance(a, torch.Tensor)), None)
    device = torch.cuda.get_device_name(first.device) if first is not None and first.is_cuda else "cpu"
    parts = ["choice/2", digest, repr(grid), repr(sorted(options.items())), repr(list(launches)), repr(graphed),
             repr(shapes), device, triton.__version__, torch.__version__]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def median_ms(run: Callable[[], object], repeats: int = REPEATS, graphed: bool = False) -> float:
    """Median device time of `run` (one untimed launch first), by CUDA events; `graphed`:
    of a CUDA graph capturing one `run` (falling back to timing `run` itself when the
    capture fails)."""
    run()
    replay = _graphed(run) if graphed else None
    step = replay.replay if replay is not None else run
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _graphed(run: Callable[[], object]) -> "torch.cuda.CUDAGraph | None":
    """`run` captured on a side stream (its allocations in the graph's private pool), or
    None when it cannot be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                run()
            finally:
                graph.capture_end()
    except Exception:  # noqa: BLE001 - not capturable: time it launch by launch
        torch.cuda.synchronize()
        return None
    torch.cuda.current_stream().wait_stream(stream)
    return graph


def load(key: str, directory: Path | None = None) -> Choice | None:
    """A recorded choice, or None (absent, or not a choice this version writes)."""
    entry = CHOICES.lookup(key, NAMES, directory)
    if entry is None:
        return None
    try:
        data = json.loads(entry.file(NAMES[0]).read_text())
        launch = data.get("launch")
        choice = Choice(str(data["implementation"]), float(data["generated_ms"]), float(data["library_ms"]),
                        None if launch is None else Launch.from_json(launch))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return choice if choice.implementation in IMPLEMENTATIONS else None


def store(key: str, choice: Choice, directory: Path | None = None) -> None:
    data = {**asdict(choice), "launch": None if choice.launch is None else choice.launch.to_json()}
    text = json.dumps(data, sort_keys=True)
    CHOICES.build(key, NAMES, lambda folder: (folder / NAMES[0]).write_text(text), replace=True,
                  directory=directory)


def measure(generated: Mapping[Launch | None, Callable[[], object]], library: Callable[[], object],
            graphed: bool = False) -> Choice:
    """Time the generated form at each launch (None: the wrapper's; a launch that fails is
    skipped, all failing raises the first failure) and the library form; the library form
    must be at least 3% faster than the fastest launch to be chosen (noise)."""
    times: dict[Launch | None, float] = {}
    failure: Exception | None = None
    for launch, run in generated.items():
        try:
            times[launch] = median_ms(run, graphed=graphed)
        except Exception as exc:  # noqa: BLE001 - a candidate that does not compile or fit is no candidate
            failure = failure or exc
    if not times:
        raise failure if failure is not None else ValueError("no generated launch to measure")
    best = min(times, key=lambda launch: (times[launch], launch is not None))
    g, lib = times[best], median_ms(library, graphed=graphed)
    return Choice("library" if lib < 0.97 * g else "generated", round(g, 5), round(lib, 5), best)


__all__ = ["CHOICES", "Choice", "IMPLEMENTATIONS", "TUNED_KINDS", "choice_key", "load", "measure", "median_ms",
           "store"]
