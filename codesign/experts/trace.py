"""Expert request traces: the JSONL format, synthetic generators, and reading/writing.

A trace says, for every step (a decoded token, or a request to a composition of experts)
and every MoE layer, which experts that step needs. The JSONL file is one header line,
then one line per (step, layer)::

    {"codesign_expert_trace": 1, "num_experts": 8, "num_layers": 32, "top_k": 2,
     "expert_bytes": 352321536, "source": "zipf(alpha=1.0, locality=0.5, seed=0)"}
    {"step": 0, "layer": 0, "experts": [3, 5]}
    {"step": 0, "layer": 1, "experts": [0, 5]}
    ...

Expert ids are local to their layer (0 <= id < num_experts). ``expert_bytes`` is optional
(the problem may declare sizes instead). Lines are ordered by step, then layer; every
(step, layer) appears exactly once. See docs/experts.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["Trace", "TraceError", "read_trace", "write_trace", "zipf_trace", "LOCALITY_LEVELS"]

FORMAT_KEY = "codesign_expert_trace"
FORMAT_VERSION = 1


class TraceError(ValueError):
    """A trace file or trace data that breaks the format; the message says where."""


@dataclass(frozen=True)
class Trace:
    """Per step, per layer, the experts needed: ``steps[t][layer] == (ids, ...)``."""

    num_experts: int
    steps: tuple[tuple[tuple[int, ...], ...], ...]
    num_layers: int = 1
    top_k: int = 1
    expert_bytes: int | None = None
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t, layers in enumerate(self.steps):
            if len(layers) != self.num_layers:
                raise TraceError(f"step {t} has {len(layers)} layers, expected {self.num_layers}")
            for layer, ids in enumerate(layers):
                if not ids:
                    raise TraceError(f"step {t} layer {layer} requests no expert")
                if len(set(ids)) != len(ids):
                    raise TraceError(f"step {t} layer {layer} repeats an expert: {list(ids)}")
                bad = [e for e in ids if not 0 <= e < self.num_experts]
                if bad:
                    raise TraceError(f"step {t} layer {layer}: expert ids {bad} not in 0..{self.num_experts - 1}")

    def __len__(self) -> int:
        return len(self.steps)

    def slots(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """(step, layer, local expert ids) in execution order."""
        return [(t, layer, ids) for t, layers in enumerate(self.steps) for layer, ids in enumerate(layers)]

    def head(self, steps: int) -> "Trace":
        """The first ``steps`` steps."""
        return Trace(self.num_experts, self.steps[:steps], self.num_layers, self.top_k,
                     self.expert_bytes, self.source, self.meta)

    def header(self) -> dict[str, Any]:
        head: dict[str, Any] = {FORMAT_KEY: FORMAT_VERSION, "num_experts": self.num_experts,
                                "num_layers": self.num_layers, "top_k": self.top_k}
        if self.expert_bytes is not None:
            head["expert_bytes"] = self.expert_bytes
        if self.source:
            head["source"] = self.source
        if self.meta:
            head["meta"] = dict(self.meta)
        return head


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as JSONL (header line, then one line per step and layer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(trace.header())]
    lines += [json.dumps({"step": t, "layer": layer, "experts": list(ids)}) for t, layer, ids in trace.slots()]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_trace(path: str | Path) -> Trace:
    """Read a JSONL trace; every format mistake raises :class:`TraceError` naming the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TraceError(f"no such trace file: {path}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise TraceError(f"{path}: empty trace")
    records = []
    for n, line in lines:
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}:{n}: not JSON ({exc.msg})") from None
    n, head = records[0]
    if not isinstance(head, dict) or head.get(FORMAT_KEY) != FORMAT_VERSION:
        raise TraceError(f"{path}:{n}: the first line must be a header with \"{FORMAT_KEY}\": {FORMAT_VERSION}")
    try:
        num_experts, num_layers = int(head["num_experts"]), int(head.get("num_layers", 1))
    except KeyError:
        raise TraceError(f"{path}:{n}: the header needs num_experts") from None
    steps: list[list[tuple[int, ...]]] = []
    for n, rec in records[1:]:
        if not isinstance(rec, dict) or not {"step", "experts"} <= rec.keys():
            raise TraceError(f"{path}:{n}: a record needs \"step\" and \"experts\"")
        t, layer = int(rec["step"]), int(rec.get("layer", 0))
        expect = (len(steps), 0) if not steps or len(steps[-1]) == num_layers else (len(steps) - 1, len(steps[-1]))
        if (t, layer) != expect:
            raise TraceError(f"{path}:{n}: expected step {expect[0]} layer {expect[1]}, found step {t} layer {layer}")
        if layer == 0:
            steps.append([])
        steps[-1].append(tuple(int(e) for e in rec["experts"]))
    if steps and len(steps[-1]) != num_layers:
        raise TraceError(f"{path}: the last step has {len(steps[-1])} of {num_layers} layers")
    try:
        return Trace(num_experts, tuple(tuple(s) for s in steps), num_layers, int(head.get("top_k", 1)),
                     head.get("expert_bytes"), head.get("source", ""), head.get("meta", {}))
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None


# Named locality levels used by the CLI and the benchmark: (zipf alpha, temporal locality).
LOCALITY_LEVELS: dict[str, tuple[float, float]] = {"low": (0.6, 0.1), "mid": (1.0, 0.5), "high": (1.2, 0.85)}


def zipf_trace(num_experts: int, steps: int, *, num_layers: int = 1, top_k: int = 1, alpha: float = 1.0,
               locality: float = 0.5, seed: int = 0, expert_bytes: int | None = None) -> Trace:
    """A synthetic trace: Zipf popularity plus temporal locality; deterministic in ``seed``.

    Each layer ranks its experts by a random permutation; expert of rank r has popularity
    proportional to 1 / r**alpha (alpha = 0: uniform; larger: a few hot experts). Each of
    the top_k picks of a (step, layer) repeats one of that layer's previous step's experts
    with probability ``locality`` (0: independent steps; near 1: long runs), else draws
    from the Zipf popularity, without repeating an expert within the step.
    """
    if not 0 <= locality <= 1:
        raise TraceError(f"locality must be in [0, 1], got {locality}")
    if not 1 <= top_k <= num_experts:
        raise TraceError(f"top_k={top_k} must be in 1..{num_experts}")
    rng = np.random.default_rng(seed)
    ranks = [rng.permutation(num_experts) for _ in range(num_layers)]
    popularity = 1.0 / np.arange(1, num_experts + 1) ** alpha
    popularity /= popularity.sum()
    out: list[tuple[tuple[int, ...], ...]] = []
    previous: list[tuple[int, ...]] = [()] * num_layers
    for _ in range(steps):
        layers = []
        for layer in range(num_layers):
            chosen: list[int] = []
            for _ in range(top_k):
                reuse = [e for e in previous[layer] if e not in chosen]
                if reuse and rng.random() < locality:
                    chosen.append(int(reuse[rng.integers(len(reuse))]))
                    continue
                weights = popularity.copy()
                weights[[int(np.where(ranks[layer] == e)[0][0]) for e in chosen]] = 0.0
                rank = int(rng.choice(num_experts, p=weights / weights.sum()))
                chosen.append(int(ranks[layer][rank]))
            previous[layer] = tuple(chosen)
            layers.append(tuple(sorted(chosen)))
        out.append(tuple(layers))
    source = f"zipf(alpha={alpha}, locality={locality}, seed={seed})"
    return Trace(num_experts, tuple(out), num_layers, top_k, expert_bytes, source)


def trace_from_ids(per_step: Iterable[Iterable[Iterable[int]]], num_experts: int, **kw: Any) -> Trace:
    """A trace from nested lists ``[[ids of layer 0, ids of layer 1, ...], ...]``."""
    steps = tuple(tuple(tuple(sorted(int(e) for e in ids)) for ids in layers) for layers in per_step)
    num_layers = len(steps[0]) if steps else 1
    return Trace(num_experts, steps, num_layers=num_layers, **kw)
