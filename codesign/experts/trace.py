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

__all__ = ["Trace", "TraceError", "parse_trace", "read_trace", "write_trace", "zipf_trace", "LOCALITY_LEVELS",
           "MAX_EXPERTS", "MAX_EXPERT_BYTES"]

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


MAX_EXPERTS = 1 << 20
"""At most this many experts in all (``num_experts * num_layers``): the problem keeps a
size and a transfer time per expert."""
MAX_EXPERT_BYTES = 1 << 50  # 1 PiB: one expert's bytes, and any size the CLI takes


def _json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_trace(path: str | Path) -> Trace:
    """Read a JSONL trace; every format mistake raises :class:`TraceError` naming the line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TraceError(f"no such trace file: {path}") from None
    except OSError as exc:
        raise TraceError(f"cannot read trace file {path}: {exc.strerror}") from None
    return parse_trace(data, str(path))


def parse_trace(data: bytes | str, name: str = "<trace>") -> Trace:
    """A trace from the bytes (or text) of a JSONL trace file; every mistake is one
    :class:`TraceError` saying where (``name:line``), which field, and what it should be."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise TraceError(f"{name}:{line}: invalid UTF-8 byte 0x{data[exc.start]:02x} at byte offset "
                             f"{exc.start}: a trace is UTF-8 JSON lines") from None
    else:
        text = data
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not lines:
        raise TraceError(f"{name}: empty trace: expected a header line, then one line per step and layer")

    def load(n: int, line: str) -> Any:
        try:
            return json.loads(line, parse_constant=lambda c: _refuse(f"{name}:{n}: {c} is not a JSON number"))
        except json.JSONDecodeError as exc:
            raise TraceError(f"{name}:{n}: not JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # nesting thousands deep, integers of 5000 digits
            if isinstance(exc, TraceError):
                raise
            raise TraceError(f"{name}:{n}: not a trace line ({type(exc).__name__}: {str(exc)[:80]})") from None

    n, head = lines[0][0], load(*lines[0])
    if not isinstance(head, dict) or head.get(FORMAT_KEY) != FORMAT_VERSION:
        raise TraceError(f"{name}:{n}: the first line must be a header with \"{FORMAT_KEY}\": {FORMAT_VERSION}")

    def field_of(rec: dict, key: str, n: int, lo: int, hi: int, default: Any = None, what: str = "header") -> int:
        if key not in rec:
            if default is None:
                raise TraceError(f"{name}:{n}: the {what} needs \"{key}\" (an integer in {lo}..{hi})")
            return default
        value = rec[key]
        if not _json_int(value) or not lo <= value <= hi:
            raise TraceError(f"{name}:{n}: {what} field \"{key}\" must be an integer in {lo}..{hi}, got "
                             f"{json.dumps(value)[:40]}")
        return value

    num_experts = field_of(head, "num_experts", n, 1, MAX_EXPERTS)
    num_layers = field_of(head, "num_layers", n, 1, MAX_EXPERTS, default=1)
    if num_experts * num_layers > MAX_EXPERTS:
        raise TraceError(f"{name}:{n}: num_experts x num_layers = {num_experts * num_layers} experts in all; "
                         f"at most {MAX_EXPERTS}")
    top_k = field_of(head, "top_k", n, 1, num_experts, default=1)
    expert_bytes = head.get("expert_bytes")
    if expert_bytes is not None:
        expert_bytes = field_of(head, "expert_bytes", n, 1, MAX_EXPERT_BYTES)
    source, meta = head.get("source", ""), head.get("meta", {})
    if not isinstance(source, str):
        raise TraceError(f"{name}:{n}: header field \"source\" must be a string, got {json.dumps(source)[:40]}")
    if not isinstance(meta, dict):
        raise TraceError(f"{name}:{n}: header field \"meta\" must be an object, got {json.dumps(meta)[:40]}")
    if len(lines) == 1:
        raise TraceError(f"{name}: the trace has a header but no steps: expected one line per step and layer "
                         "after it")
    steps: list[list[tuple[int, ...]]] = []
    for n, line in lines[1:]:
        rec = load(n, line)
        if not isinstance(rec, dict) or not {"step", "experts"} <= rec.keys():
            raise TraceError(f"{name}:{n}: a record needs \"step\" and \"experts\"")
        t = field_of(rec, "step", n, 0, 1 << 62, what="record")
        layer = field_of(rec, "layer", n, 0, num_layers - 1, default=0, what="record")
        expect = (len(steps), 0) if not steps or len(steps[-1]) == num_layers else (len(steps) - 1, len(steps[-1]))
        if (t, layer) != expect:
            raise TraceError(f"{name}:{n}: expected step {expect[0]} layer {expect[1]}, found step {t} layer {layer}")
        ids = rec["experts"]
        if not isinstance(ids, list) or not ids or not all(_json_int(e) and 0 <= e < num_experts for e in ids):
            raise TraceError(f"{name}:{n}: record field \"experts\" must be a non-empty list of expert ids in "
                             f"0..{num_experts - 1}, got {json.dumps(ids)[:60]}")
        if len(set(ids)) != len(ids):
            raise TraceError(f"{name}:{n}: record field \"experts\" lists an expert twice: {json.dumps(ids)[:60]}")
        if layer == 0:
            steps.append([])
        steps[-1].append(tuple(ids))
    if len(steps[-1]) != num_layers:
        raise TraceError(f"{name}: the last step has {len(steps[-1])} of {num_layers} layers")
    try:
        return Trace(num_experts, tuple(tuple(s) for s in steps), num_layers, top_k, expert_bytes, source, meta)
    except TraceError as exc:
        raise TraceError(f"{name}: {exc}") from None


def _refuse(message: str) -> Any:
    raise TraceError(message)


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
    import numpy as np  # here, not at the top: reading a trace (and the CLI's parser) needs none
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
