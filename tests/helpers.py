"""Shared test helpers: fresh random inputs like a factory's, relative error."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def fresh_like(inputs: tuple[torch.Tensor, ...], seed: int, high: int = 256) -> tuple[torch.Tensor, ...]:
    """New random inputs with the shapes and dtypes of `inputs` (ints in [0, high))."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in inputs:
        if x.dtype.is_floating_point:
            out.append(torch.randn(x.shape, generator=gen, dtype=x.dtype))
        else:
            out.append(torch.randint(0, high, x.shape, generator=gen, dtype=x.dtype))
    return tuple(out)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# A graph every canonicalization pattern has work on (reshape pairs, CSE), used by the pass
# manager and CLI tests.
FOLDABLE = """graph @g(%x: f32[2,3]) -> (f32[2,3]) {
  %a = reshape(%x) {shape = [6]} : f32[6]
  %b = reshape(%a) {shape = [2, 3]} : f32[2,3]
  %c = relu(%b) : f32[2,3]
  %d = relu(%b) : f32[2,3]
  %e = add(%c, %d) : f32[2,3]
  return %e
}
"""
