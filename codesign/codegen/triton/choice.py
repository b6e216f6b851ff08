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

Choices are data: each is written to the disk cache (`codesign.codegen.cache`, verified as
every entry is), keyed by the kernel's canonical source (name and buffer names taken out),
its launch (grid, constants, warps, stages), its arguments' shapes, strides and dtypes, the
card and the Triton and torch versions, so a second process measures nothing; the
module's report lists every choice with both times.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from codesign.codegen.cache import Cache

TUNED_KINDS = ("matmul", "attention")
"""Kernels with a library form worth measuring: an anchor cuBLAS / cuDNN also runs."""

REPEATS = 5
"""Timed launches of each form (after one untimed launch each)."""

CHOICES = Cache("triton")
NAMES = ("choice.json",)
IMPLEMENTATIONS = ("generated", "library")


@dataclass(frozen=True)
class Choice:
    """Which form of one kernel runs, and the two median times (ms) it was chosen on."""

    implementation: str
    generated_ms: float
    library_ms: float

    def line(self, name: str) -> str:
        return (f"{name}: {self.implementation} ({self.generated_ms:.4g} ms generated, "
                f"{self.library_ms:.4g} ms library form)")


def choice_key(digest: str, grid, args: Sequence, options: dict) -> str:
    """What a measured choice is valid for (see the module docstring)."""
    import triton
    shapes = [(tuple(a.shape), tuple(a.stride()), str(a.dtype)) if isinstance(a, torch.Tensor) else repr(a)
              for a in args]
    first = next((a for a in args if isinstance(a, torch.Tensor)), None)
    device = torch.cuda.get_device_name(first.device) if first is not None and first.is_cuda else "cpu"
    parts = ["choice/1", digest, repr(grid), repr(sorted(options.items())), repr(shapes), device,
             triton.__version__, torch.__version__]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def median_ms(run: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median device time of `run` (one untimed launch first), by CUDA events."""
    run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def load(key: str, directory: Path | None = None) -> Choice | None:
    """A recorded choice, or None (absent, or not a choice this version writes)."""
    entry = CHOICES.lookup(key, NAMES, directory)
    if entry is None:
        return None
    try:
        data = json.loads(entry.file(NAMES[0]).read_text())
        choice = Choice(str(data["implementation"]), float(data["generated_ms"]), float(data["library_ms"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return choice if choice.implementation in IMPLEMENTATIONS else None


def store(key: str, choice: Choice, directory: Path | None = None) -> None:
    text = json.dumps(asdict(choice), sort_keys=True)
    CHOICES.build(key, NAMES, lambda folder: (folder / NAMES[0]).write_text(text), replace=True,
                  directory=directory)


def measure(generated: Callable[[], object], library: Callable[[], object]) -> Choice:
    """Time both forms; the library form must be at least 3% faster to be chosen (noise)."""
    g, lib = median_ms(generated), median_ms(library)
    return Choice("library" if lib < 0.97 * g else "generated", round(g, 5), round(lib, 5))


__all__ = ["CHOICES", "Choice", "IMPLEMENTATIONS", "TUNED_KINDS", "choice_key", "load", "measure", "median_ms",
           "store"]
