"""CUDA graphs: the generated program captured once per input signature, then replayed.

At small batch a generated program is bound by the host: each launch costs Python and
driver time (about 20 µs), far more than a small kernel runs. A CUDA graph records every
launch of one `launch(...)` once and replays them all with one driver call, as
torch.compile's `mode="reduce-overhead"` does. What it needs, and how this module gives it:

- **Fixed addresses.** A replay reads and writes the buffers it was captured with: the
  inputs are copied into static input buffers before each replay; the weights are the
  module's device copies (in-place updates show, since the same memory is read; new weight
  tensors drop the graphs: `CudaGraphs.clear`); intermediates and outputs live in the
  graph's private memory pool. Outputs are cloned on return, so a later call never
  overwrites a tensor the caller holds (one device copy per output).
- **No host work inside.** A program with an extern that routes on the host (`moe`) is not
  captured; a capture that still fails (an op that synchronises) turns graphs off for that
  module with a `CudaGraphWarning`, and it runs launch by launch as before.
- **Warm-up first.** The program runs once outside the capture (Triton compiles its kernels
  at their first launch, cuBLAS and cuDNN pick their algorithms), on a side stream.

Run-time checks (`safety`) stay on: the check buffer is zeroed inside the graph and read
after each replay.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


class CudaGraphWarning(UserWarning):
    """The program could not be captured as a CUDA graph; it runs launch by launch."""


Launch = Callable[[Sequence[torch.Tensor]], tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]


@dataclass
class Captured:
    """One captured replay: its graph, static inputs, outputs and check buffer."""

    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: tuple[torch.Tensor, ...]
    err: torch.Tensor | None


def signature(inputs: Sequence[torch.Tensor]) -> tuple:
    """What a captured graph is valid for: every input's device, dtype and shape."""
    return tuple((str(x.device), x.dtype, tuple(x.shape)) for x in inputs)


@dataclass
class CudaGraphs:
    """Captured replays of one generated program, by input signature (`why_not`: why graphs
    are off for it, once a capture failed or the program cannot be captured)."""

    name: str
    why_not: str | None = None
    interpreted: bool = False  # the kernels were defined under TRITON_INTERPRET: they run on the host
    captured: dict[tuple, Captured] = field(default_factory=dict)

    def usable(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Graphs apply: on, CUDA inputs, kernels compiled for the GPU (interpreted ones run on
        the host, copying), and not already inside someone else's capture."""
        return (self.why_not is None and not self.interpreted and bool(inputs) and all(x.is_cuda for x in inputs)
                and not torch.cuda.is_current_stream_capturing())

    def clear(self) -> None:
        """Forget every capture (the weights they read were replaced)."""
        self.captured.clear()

    def run(self, launch: Launch, inputs: Sequence[torch.Tensor]):
        """`launch(inputs)` through a captured graph: (outputs, check buffer), or None when the
        capture failed (graphs are then off for this program; the caller runs it directly)."""
        key = signature(inputs)
        entry = self.captured.get(key)
        if entry is None:
            entry = self._capture(launch, inputs)
            if entry is None:
                return None
            self.captured[key] = entry
        for static, x in zip(entry.inputs, inputs):
            if static.data_ptr() != x.data_ptr():
                static.copy_(x)
        entry.graph.replay()
        return tuple(o.clone() for o in entry.outputs), entry.err

    def _capture(self, launch: Launch, inputs: Sequence[torch.Tensor]) -> Captured | None:
        static = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                launch(static)  # warm-up: Triton compiles, libraries choose algorithms
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs, err = launch(static)
        except Exception as exc:  # noqa: BLE001 - any capture failure: run launch by launch
            self.why_not = f"{type(exc).__name__}: {exc}"
            torch.cuda.synchronize()
            warnings.warn(f"{self.name}: the generated program could not be captured as a CUDA graph "
                          f"({self.why_not}); it runs launch by launch", CudaGraphWarning, stacklevel=4)
            return None
        return Captured(graph, static, tuple(outputs), err)


__all__ = ["Captured", "CudaGraphWarning", "CudaGraphs", "signature"]
