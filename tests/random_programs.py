"""Random well-typed programs over the IR's ops, as torch modules, for differential testing.

A `Program` is a list of `Step`s drawn with a seeded RNG: each step calls one torch
function (`FUNCTIONS`) on earlier values — runtime inputs, the results of earlier steps —
and on weights the program owns. Every IR op family is drawn: pointwise (float, integer,
boolean, casts), reductions, the norms and softmax, matmul / linear / conv / attention,
pooling, the layout ops (reshape, permute, expand, slice, concat, pad, pixel (un)shuffle,
upsample, tril...), the gathers and the sources, plus a few torch functions codesign may
refuse (which must then be one clear error). Shapes and dtypes come from torch itself:
a step is run on meta tensors as it is drawn, so the program is well-typed by eager's own
rules, the rules the IR's `OpDef.infer` mirrors.

Two things keep a comparison with eager meaningful:

- *Ranges*: each value carries bounds (exact for integers, an estimate for floats), so an
  `exp` reads values that cannot overflow, a divisor is kept away from zero, an integer
  product stays inside int64 and a gathered index inside its table.
- *Exactness*: a value is `exact` when every backend computes it bit for bit (inputs, and
  what layout ops, negation, abs, relu, max / min, clamp, comparisons, integer arithmetic
  and casts make of exact values). A discontinuous op — a comparison, floor, argmax, a
  float-to-int cast — reads only exact values, since a rounding difference at its
  threshold would flip its result and say nothing about the compiler.

`BatchModule` runs several programs side by side (one capture and one build for all,
`tests/random_programs_harness.py`); `Program.source()` prints a program for a bug report.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

Params = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Val:
    """A value of a program: shape, dtype, bounds lo <= v <= hi, and whether it is exact."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    lo: float
    hi: float
    exact: bool

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point

    @property
    def is_int(self) -> bool:
        return not self.dtype.is_floating_point and self.dtype != torch.bool

    @property
    def mag(self) -> float:
        return max(abs(self.lo), abs(self.hi))


@dataclass(frozen=True)
class InputSpec:
    """A runtime input: floats are standard normal, integers uniform in lo..hi, bools fair."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    lo: int = 0
    hi: int = 0

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, generator=gen).to(self.dtype)
        if self.dtype == torch.bool:
            return torch.rand(self.shape, generator=gen) > 0.5
        return torch.randint(self.lo, self.hi + 1, self.shape, generator=gen, dtype=self.dtype)


@dataclass(frozen=True)
class WeightSpec:
    """A weight the program owns: normal, or positive (variances)."""

    name: str
    shape: tuple[int, ...]
    positive: bool = False


@dataclass(frozen=True)
class Step:
    """`v<n> = function(*args, **params)`: `args` index the program's values."""

    function: str
    args: tuple[int, ...]
    params: Params = ()

    @property
    def kwargs(self) -> dict[str, object]:
        return dict(self.params)


@dataclass(frozen=True)
class Program:
    """A seeded random program: inputs are values 0..len(inputs)-1, step i is value len(inputs)+i."""

    seed: int
    inputs: tuple[InputSpec, ...]
    weights: tuple[WeightSpec, ...]
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]
    dtype: torch.dtype = torch.float32  # its float dtype

    def draw_inputs(self, seed: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        return tuple(spec.draw(gen) for spec in self.inputs)

    def module(self) -> "ProgramModule":
        return ProgramModule(self)

    def source(self) -> str:
        """The program as Python-like text (a bug report's reproduction)."""
        lines = [f"# program seed={self.seed}"]
        for i, spec in enumerate(self.inputs):
            rng = f" in {spec.lo}..{spec.hi}" if spec.hi or spec.lo else ""
            lines.append(f"v{i} = input({_dt(spec.dtype)}{list(spec.shape)}{rng})")
        for w in self.weights:
            lines.append(f"{w.name} = weight({_dt(self.dtype)}{list(w.shape)}{', positive' if w.positive else ''})")
        for j, step in enumerate(self.steps):
            args = ", ".join(f"v{a}" for a in step.args)
            params = ", ".join(f"{k}={v!r}" for k, v in step.params)
            lines.append(f"v{len(self.inputs) + j} = {step.function}({args}{', ' if args and params else ''}{params})")
        lines.append("return " + ", ".join(f"v{o}" for o in self.outputs))
        return "\n".join(lines)


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class ProgramModule(torch.nn.Module):
    """A `Program` as an `nn.Module`: its weights are parameters, `forward` runs the steps."""

    def __init__(self, program: Program):
        super().__init__()
        self.program = program
        gen = torch.Generator().manual_seed(program.seed + 1)
        for w in program.weights:
            value = torch.randn(w.shape, generator=gen)
            value = value.abs() + 0.5 if w.positive else value
            self.register_parameter(w.name, torch.nn.Parameter(value.to(program.dtype), requires_grad=False))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        weights = {w.name: getattr(self, w.name) for w in self.program.weights}
        return run_steps(self.program, inputs, weights)


def run_steps(program: Program, inputs: Sequence[torch.Tensor], weights: Mapping[str, torch.Tensor]):
    values = list(inputs)
    for step in program.steps:
        values.append(FUNCTIONS[step.function](*[values[a] for a in step.args], w=weights, **step.kwargs))
    return tuple(values[o] for o in program.outputs)


class BatchModule(torch.nn.Module):
    """Several programs side by side: inputs and outputs concatenated, in order."""

    def __init__(self, programs: Sequence[Program]):
        super().__init__()
        self.programs = list(programs)
        self.parts = torch.nn.ModuleList(p.module() for p in programs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs, i = [], 0
        for part, program in zip(self.parts, self.programs):
            n = len(program.inputs)
            outs += part(*inputs[i:i + n])
            i += n
        return tuple(outs)


# -- the torch functions a step may call -------------------------------------------------------
def _pos(x: torch.Tensor) -> torch.Tensor:
    """|x| + 0.5: a divisor, logarithm or root argument away from zero."""
    return x.abs() + 0.5


FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    # pointwise, float
    "neg": lambda x, w: -x,
    "abs": lambda x, w: x.abs(),
    "relu": lambda x, w: F.relu(x),
    "sigmoid": lambda x, w: torch.sigmoid(x),
    "tanh": lambda x, w: torch.tanh(x),
    "gelu": lambda x, w, approximate: F.gelu(x, approximate=approximate),
    "silu": lambda x, w: F.silu(x),
    "hardswish": lambda x, w: F.hardswish(x),
    "leaky_relu": lambda x, w, slope: F.leaky_relu(x, slope),
    "sin": lambda x, w: torch.sin(x),
    "cos": lambda x, w: torch.cos(x),
    "erf": lambda x, w: torch.erf(x),
    "exp": lambda x, w: torch.exp(x),
    "log": lambda x, w: torch.log(_pos(x)),
    "sqrt": lambda x, w: torch.sqrt(x.abs()),
    "rsqrt": lambda x, w: torch.rsqrt(_pos(x)),
    "reciprocal": lambda x, w: torch.reciprocal(_pos(x)),
    "pow_scalar": lambda x, w, p: _pos(x) ** p,
    "square": lambda x, w: x * x,
    "clamp": lambda x, w, lo, hi: torch.clamp(x, lo, hi),
    "floor": lambda x, w: torch.floor(x),
    "affine": lambda x, w, a, b: x * a + b,
    "add": lambda x, y, w: x + y,
    "sub": lambda x, y, w: x - y,
    "mul": lambda x, y, w: x * y,
    "div": lambda x, y, w: x / _pos(y),
    "add_scalar": lambda x, w, c: x + c,
    "mul_scalar": lambda x, w, c: x * c,
    "rsub_scalar": lambda x, w, c: c - x,
    "maximum": lambda x, y, w: torch.maximum(x, y),
    "minimum": lambda x, y, w: torch.minimum(x, y),
    "pow": lambda x, y, w: _pos(x) ** torch.clamp(y, -2.0, 2.0),
    "remainder": lambda x, w, c: torch.remainder(x, c),
    "logaddexp": lambda x, y, w: torch.logaddexp(x, y),
    "where": lambda c, x, y, w: torch.where(c, x, y),
    "where_scalar": lambda c, x, w, v: torch.where(c, x, v),
    # comparisons and logic (exact operands)
    **{f"cmp_{op}": (lambda x, y, w, op=op: getattr(torch, op)(x, y)) for op in ("gt", "lt", "ge", "le", "eq", "ne")},
    **{f"cmps_{op}": (lambda x, w, c, op=op: getattr(torch, op)(x, c)) for op in ("gt", "lt", "ge", "le")},
    "logical_and": lambda x, y, w: torch.logical_and(x, y),
    "logical_or": lambda x, y, w: torch.logical_or(x, y),
    "logical_not": lambda x, w: torch.logical_not(x),
    "to": lambda x, w, dtype: x.to(getattr(torch, dtype)),
    # integers
    "floor_divide": lambda x, y, w: torch.div(x, y.abs() + 1, rounding_mode="floor"),
    "int_remainder": lambda x, y, w: torch.remainder(x, y.abs() + 1),
    "floor_divide_scalar": lambda x, w, c: x // c,
    # reductions
    "sum": lambda x, w, dim, keepdim: x.sum(dim, keepdim=keepdim) if dim is not None else x.sum(),
    "mean": lambda x, w, dim, keepdim: x.mean(dim, keepdim=keepdim) if dim is not None else x.mean(),
    "amax": lambda x, w, dim, keepdim: x.amax(dim, keepdim=keepdim),
    "amin": lambda x, w, dim, keepdim: x.amin(dim, keepdim=keepdim),
    "prod": lambda x, w, dim, keepdim: x.prod(dim, keepdim=keepdim),
    "var": lambda x, w, dim, keepdim, correction: x.var(dim, keepdim=keepdim, correction=correction),
    "std": lambda x, w, dim, keepdim, correction: x.std(dim, keepdim=keepdim, correction=correction),
    "argmax": lambda x, w, dim, keepdim: x.argmax(dim, keepdim=keepdim),
    "argmin": lambda x, w, dim, keepdim: x.argmin(dim, keepdim=keepdim),
    "any": lambda x, w, dim, keepdim: x.any(dim, keepdim=keepdim),
    "all": lambda x, w, dim, keepdim: x.all(dim, keepdim=keepdim),
    "cumsum": lambda x, w, dim: x.cumsum(dim),
    "logsumexp": lambda x, w, dim, keepdim: torch.logsumexp(x, dim, keepdim=keepdim),
    "vector_norm": lambda x, w, dim, keepdim: torch.linalg.vector_norm(x, 2, dim, keepdim=keepdim),
    # norms
    "softmax": lambda x, w, dim: torch.softmax(x, dim),
    "log_softmax": lambda x, w, dim: torch.log_softmax(x, dim),
    "layer_norm": lambda x, w, shape, weight, bias, eps: F.layer_norm(x, shape, w.get(weight), w.get(bias), eps),
    "rms_norm": lambda x, w, shape, weight, eps: F.rms_norm(x, shape, w.get(weight), eps),
    "group_norm": lambda x, w, groups, weight, bias, eps: F.group_norm(x, groups, w.get(weight), w.get(bias), eps),
    "batch_norm": lambda x, w, mean, var, weight, bias, eps: F.batch_norm(x, w[mean], w[var], w.get(weight),
                                                                          w.get(bias), False, 0.1, eps),
    # contractions
    "matmul": lambda x, y, w: x @ y,
    "matmul_weight": lambda x, w, weight: x @ w[weight],
    "linear": lambda x, w, weight, bias: F.linear(x, w[weight], w.get(bias)),
    "bmm": lambda x, y, w: torch.bmm(x, y),
    "conv2d": lambda x, w, weight, bias, stride, padding, dilation, groups: F.conv2d(
        x, w[weight], w.get(bias), stride, padding, dilation, groups),
    "conv1d": lambda x, w, weight, bias, stride, padding: F.conv1d(x, w[weight], w.get(bias), stride, padding),
    "sdpa": lambda q, k, v, w, causal, scale: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale),
    "sdpa_mask": lambda q, k, v, m, w, scale: F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale),
    "attention_eager": lambda q, k, v, w, scale: torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v,
    # windows
    "max_pool2d": lambda x, w, kernel, stride, padding, dilation, ceil_mode: F.max_pool2d(
        x, kernel, stride, padding, dilation, ceil_mode),
    "avg_pool2d": lambda x, w, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override: F.avg_pool2d(
        x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override),
    "adaptive_avg_pool2d": lambda x, w, size: F.adaptive_avg_pool2d(x, size),
    # layout
    "reshape": lambda x, w, shape: x.reshape(shape),
    "permute": lambda x, w, perm: x.permute(perm),
    "transpose": lambda x, w, a, b: x.transpose(a, b),
    "expand": lambda x, w, shape: x.expand(shape),
    "slice": lambda x, w, dim, start, stop, step: x[(slice(None),) * dim + (slice(start, stop, step),)],
    "select": lambda x, w, dim, index: x.select(dim, index),
    "cat": lambda *xs, w, dim: torch.cat(xs, dim),
    "stack": lambda *xs, w, dim: torch.stack(xs, dim),
    "pad": lambda x, w, pads, value: F.pad(x, pads, value=value),
    "pad_mode": lambda x, w, pads, mode: F.pad(x, pads, mode=mode),
    "pixel_shuffle": lambda x, w, r: F.pixel_shuffle(x, r),
    "pixel_unshuffle": lambda x, w, r: F.pixel_unshuffle(x, r),
    "upsample_nearest": lambda x, w, scale: F.interpolate(x, scale_factor=scale, mode="nearest"),
    "tril": lambda x, w, diagonal: torch.tril(x, diagonal),
    "triu": lambda x, w, diagonal: torch.triu(x, diagonal),
    "flatten": lambda x, w, start, end: x.flatten(start, end),
    "unsqueeze": lambda x, w, dim: x.unsqueeze(dim),
    "squeeze": lambda x, w, dim: x.squeeze(dim),
    "repeat": lambda x, w, reps: x.repeat(reps),
    "chunk": lambda x, w, chunks, dim, index: x.chunk(chunks, dim)[index],
    "flip": lambda x, w, dims: x.flip(dims),
    "roll": lambda x, w, shift, dim: x.roll(shift, dim),
    # gathers
    "embedding": lambda i, w, table: F.embedding(i, w[table]),
    "index_select": lambda x, i, w, dim: x.index_select(dim, i),
    "index": lambda x, i, w, dim: x[(slice(None),) * dim + (i,)],
    "gather": lambda x, i, w, dim: torch.gather(x, dim, i),
    # sources
    "full_like": lambda x, w, value: torch.full_like(x, value),
    "add_arange": lambda x, w: x + torch.arange(x.shape[-1], dtype=x.dtype, device=x.device),
    # often refused: each must be one clear error
    "topk": lambda x, w, k: torch.topk(x, k).values,
    "sort": lambda x, w: torch.sort(x).values,
    "cumprod": lambda x, w, dim: torch.cumprod(x, dim),
    "expm1": lambda x, w: torch.expm1(x),
    "atan2": lambda x, y, w: torch.atan2(x, y),
    "elu": lambda x, w: F.elu(x),
    "softplus": lambda x, w: F.softplus(x),
    "sign": lambda x, w: torch.sign(x),
}


# -- the generator -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Proposal:
    """A drawn step and what is known of its result (its shape and dtype come from torch)."""

    function: str
    args: tuple[int, ...]
    params: Params
    lo: float
    hi: float
    exact: bool


@dataclass
class Builder:
    """The program under construction: its values, inputs and weights, and the RNG."""

    rng: random.Random
    dtype: torch.dtype
    max_dim: int = 6
    values: list[Val] = field(default_factory=list)
    inputs: list[InputSpec] = field(default_factory=list)
    weights: list[WeightSpec] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)

    # values ---------------------------------------------------------------------------------
    def new_input(self, shape: Sequence[int], dtype: torch.dtype | None = None, lo: int = 0, hi: int = 0) -> int:
        """A fresh runtime input; its id among the values."""
        dtype = dtype or self.dtype
        if self.steps:  # inputs come first: shift the step values' ids up by one
            raise RuntimeError("inputs are drawn before steps")
        spec = InputSpec(tuple(shape), dtype, lo, hi)
        self.inputs.append(spec)
        bounds = (-4.0, 4.0) if dtype.is_floating_point else (0, 1) if dtype == torch.bool else (lo, hi)
        self.values.append(Val(tuple(shape), dtype, *bounds, exact=True))
        return len(self.values) - 1

    def weight(self, shape: Sequence[int], positive: bool = False) -> str:
        name = f"w{len(self.weights)}"
        self.weights.append(WeightSpec(name, tuple(shape), positive))
        return name

    def pick(self, ok: Callable[[Val], bool], empty_ok: bool = False) -> int | None:
        """A value satisfying `ok`, favouring recent ones (programs grow deep, not only wide);
        a zero-size value only when `empty_ok` (pointwise and layout ops)."""
        ids = [i for i, v in enumerate(self.values) if ok(v) and (empty_ok or 0 not in v.shape)]
        if not ids:
            return None
        weights = [1.0 + 3.0 * (i >= len(self.values) - 3) for i in ids]
        return self.rng.choices(ids, weights)[0]

    def shape(self, rank: int | None = None) -> tuple[int, ...]:
        rank = self.rng.randint(1, 4) if rank is None else rank
        return tuple(self.rng.randint(1, self.max_dim) for _ in range(rank))

    def apply(self, p: Proposal) -> int:
        """Append the step; its result's shape and dtype by running it on meta tensors."""
        step = Step(p.function, p.args, p.params)
        metas = [torch.empty(self.values[a].shape, dtype=self.values[a].dtype, device="meta") for a in p.args]
        weights = {w.name: torch.empty(w.shape, dtype=self.dtype, device="meta") for w in self.weights}
        out = FUNCTIONS[p.function](*metas, w=weights, **step.kwargs)
        lo, hi = (p.lo, p.hi) if out.dtype != torch.bool else (0, 1)
        if not out.dtype.is_floating_point:
            lo, hi = math.floor(lo), math.ceil(hi)
        self.steps.append(step)
        self.values.append(Val(tuple(out.shape), out.dtype, lo, hi, p.exact))
        return len(self.values) - 1


FloatPred = Callable[[Val], bool]


def is_float(v: Val) -> bool:
    return v.is_float and v.mag < 1e6


def broadcast_partner(b: Builder, x: Val, ok: FloatPred) -> int | None:
    """A value whose shape broadcasts against `x` without growing it."""
    def fits(v: Val) -> bool:
        if not ok(v) or v.rank > x.rank:
            return False
        return all(d in (1, e) for d, e in zip(reversed(v.shape), reversed(x.shape)))
    return b.pick(fits)


# each draw returns a Proposal, or None when the program has no operand it needs
def draw_unary(b: Builder, rng: random.Random) -> Proposal | None:
    i = b.pick(is_float, empty_ok=True)
    if i is None:
        return None
    x = b.values[i]
    m = x.mag
    choices: list[tuple[str, Params, float, float, bool]] = [
        ("neg", (), -x.hi, -x.lo, x.exact), ("abs", (), 0, m, x.exact), ("relu", (), 0, max(0, x.hi), x.exact),
        ("sigmoid", (), 0, 1, False), ("tanh", (), -1, 1, False), ("silu", (), -0.3, m, False),
        ("gelu", (("approximate", rng.choice(["none", "tanh"])),), -0.2, m, False),
        ("hardswish", (), -0.4, m, False), ("leaky_relu", (("slope", rng.choice([0.01, 0.2])),), -m, m, False),
        ("sin", (), -1, 1, False), ("cos", (), -1, 1, False), ("erf", (), -1, 1, False),
        ("log", (), math.log(0.5), math.log(m + 0.5), False), ("sqrt", (), 0, math.sqrt(m), False),
        ("rsqrt", (), 0, 1.5, False), ("reciprocal", (), 0, 2, False),
        ("clamp", (("lo", -1.0), ("hi", 1.5)), -1, 1.5, x.exact),
        ("affine", (("a", rng.choice([0.5, -2.0, 3.0])), ("b", rng.choice([0.25, -1.0]))), -3 * m - 1, 3 * m + 1, False),
        ("add_scalar", (("c", rng.choice([1.0, -0.5, 2.5])),), x.lo - 2.5, x.hi + 2.5, False),
        ("mul_scalar", (("c", rng.choice([0.5, -3.0, 2.0])),), -3 * m, 3 * m, False),
        ("rsub_scalar", (("c", 1.0),), 1 - x.hi, 1 - x.lo, False),
    ]
    if m < 10:
        choices += [("exp", (), 0, math.exp(m), False), ("square", (), 0, m * m, False),
                    ("pow_scalar", (("p", rng.choice([0.5, 1.5, 2.0, 3.0])),), 0, (m + 0.5) ** 3, False)]
    if x.exact:
        choices += [("floor", (), math.floor(x.lo), math.ceil(x.hi), True),
                    ("remainder", (("c", rng.choice([0.75, 1.5, 2.0])),), 0, 2, False)]
    if rng.random() < 0.1:  # ops codesign may refuse
        choices += [("expm1", (), -1, math.exp(min(m, 10)), False), ("elu", (), -1, m, False),
                    ("softplus", (), 0, m + 1, False), ("sign", (), -1, 1, x.exact)]
    name, params, lo, hi, exact = rng.choice(choices)
    return Proposal(name, (i,), params, lo, hi, exact)


def draw_binary(b: Builder, rng: random.Random) -> Proposal | None:
    i = b.pick(is_float, empty_ok=True)
    if i is None:
        return None
    x = b.values[i]
    j = broadcast_partner(b, x, lambda v: is_float(v) and v.dtype == x.dtype)
    if j is None:
        return None
    y = b.values[j]
    m = max(x.mag, y.mag)
    both = x.exact and y.exact
    choices = [("add", -2 * m, 2 * m, False), ("sub", -2 * m, 2 * m, False), ("maximum", max(x.lo, y.lo), m, both),
               ("minimum", -m, min(x.hi, y.hi), both), ("div", -2 * x.mag, 2 * x.mag, False),
               ("logaddexp", min(x.lo, y.lo), m + 1, False)]
    if x.mag * y.mag < 1e6:
        choices.append(("mul", -x.mag * y.mag, x.mag * y.mag, False))
    if x.mag < 100:
        choices.append(("pow", 0, (x.mag + 0.5) ** 2, False))
    if rng.random() < 0.05:
        choices.append(("atan2", -4, 4, False))
    name, lo, hi, exact = rng.choice(choices)
    return Proposal(name, (i, j), (), lo, hi, exact)


def draw_compare(b: Builder, rng: random.Random) -> Proposal | None:
    """A comparison of exact values (a bool), then used by `where` or logic or a cast."""
    i = b.pick(lambda v: v.exact and v.dtype != torch.bool)
    if i is None:
        return None
    x = b.values[i]
    op = rng.choice(["gt", "lt", "ge", "le"])
    j = broadcast_partner(b, x, lambda v: v.exact and v.dtype == x.dtype)
    if j is not None and rng.random() < 0.6:
        return Proposal(f"cmp_{rng.choice([op, 'eq', 'ne'])}", (i, j), (), 0, 1, True)
    c = rng.choice([0.0, 0.5, -1.0]) if x.is_float else rng.choice([0, 2, -1])
    return Proposal(f"cmps_{op}", (i,), (("c", c),), 0, 1, True)


def draw_where_logic(b: Builder, rng: random.Random) -> Proposal | None:
    c = b.pick(lambda v: v.dtype == torch.bool)
    if c is None:
        return draw_compare(b, rng)
    cond = b.values[c]
    r = rng.random()
    if r < 0.3:
        j = broadcast_partner(b, cond, lambda v: v.dtype == torch.bool)
        if j is not None and rng.random() < 0.7:
            return Proposal(rng.choice(["logical_and", "logical_or"]), (c, j), (), 0, 1, True)
        return Proposal("logical_not", (c,), (), 0, 1, True)
    if r < 0.45:
        return Proposal("to", (c,), (("dtype", rng.choice(["float32", "int64"]) if b.dtype == torch.float32
                                      else str(b.dtype).removeprefix("torch.")),), 0, 1, True)
    if r < 0.55:
        return Proposal(rng.choice(["any", "all"]), (c,), _reduce_dims(cond, rng, optional=False), 0, 1, True)

    # where(cond, x, y): x, y broadcast against the condition (or the condition against them)
    def partner(v: Val) -> bool:
        return is_float(v) and all(d in (1, e) or e == 1 for d, e in zip(reversed(v.shape), reversed(cond.shape)))
    i = b.pick(partner)
    if i is None:
        return None
    x = b.values[i]
    j = b.pick(lambda v: partner(v) and v.dtype == x.dtype and _broadcasts(v.shape, x.shape))
    if j is None or rng.random() < 0.3:
        return Proposal("where_scalar", (c, i), (("v", rng.choice([0.0, -1.0])),), min(x.lo, -1), max(x.hi, 0),
                        x.exact)
    y = b.values[j]
    return Proposal("where", (c, i, j), (), min(x.lo, y.lo), max(x.hi, y.hi), x.exact and y.exact)


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(d == e or 1 in (d, e) for d, e in zip(reversed(a), reversed(b)))


def draw_integer(b: Builder, rng: random.Random) -> Proposal | None:
    """Integer arithmetic (exact), within int64, and casts between ints and floats."""
    i = b.pick(lambda v: v.is_int)
    if i is None:
        if rng.random() < 0.5:  # an exact float cast to int
            f = b.pick(lambda v: v.is_float and v.exact and v.mag < 1e9)
            if f is None:
                return None
            x = b.values[f]
            return Proposal("to", (f,), (("dtype", "int64"),), math.trunc(x.lo), math.trunc(x.hi), True)
        return None
    x = b.values[i]
    r = rng.random()
    if r < 0.15:
        return Proposal("to", (i,), (("dtype", str(b.dtype).removeprefix("torch.")),), x.lo, x.hi, x.exact)
    j = broadcast_partner(b, x, lambda v: v.is_int)
    y = b.values[j] if j is not None else None
    choices = [("neg", (i,), (), -x.hi, -x.lo), ("abs", (i,), (), 0, x.mag),
               ("add_scalar", (i,), (("c", 3),), x.lo + 3, x.hi + 3),
               ("floor_divide_scalar", (i,), (("c", rng.choice([2, 3, -2])),), -x.mag, x.mag),
               ("clamp", (i,), (("lo", -2), ("hi", 5)), -2, 5)]
    if y is not None:
        m = max(x.mag, y.mag)
        choices += [("add", (i, j), (), -2 * m, 2 * m), ("sub", (i, j), (), -2 * m, 2 * m),
                    ("maximum", (i, j), (), max(x.lo, y.lo), m), ("minimum", (i, j), (), -m, min(x.hi, y.hi)),
                    ("floor_divide", (i, j), (), -x.mag, x.mag), ("int_remainder", (i, j), (), 0, y.mag + 1)]
        if x.mag * y.mag < 2**40:
            choices.append(("mul", (i, j), (), -x.mag * y.mag, x.mag * y.mag))
    n = math.prod(x.shape)
    if n * x.mag < 2**40:
        d = rng.randrange(x.rank) if x.rank else None
        choices += [("sum", (i,), _reduce_dims(x, rng), -n * x.mag, n * x.mag)]
        if d is not None:
            choices.append(("cumsum", (i,), (("dim", d),), -n * x.mag, n * x.mag))
    if x.rank:
        choices.append(("amax", (i,), _reduce_dims(x, rng, optional=False), x.lo, x.hi))
    name, args, params, lo, hi = rng.choice(choices)
    return Proposal(name, args, params, lo, hi, True)


def _reduce_dims(x: Val, rng: random.Random, optional: bool = True) -> Params:
    """`dim` (a tuple of distinct dims, or None: all) and `keepdim`."""
    if x.rank == 0:
        return (("dim", None if optional else ()), ("keepdim", False))
    if optional and rng.random() < 0.2:
        return (("dim", None), ("keepdim", False))
    dims = tuple(sorted(rng.sample(range(x.rank), rng.randint(1, x.rank))))
    if rng.random() < 0.3:
        dims = tuple(d - x.rank for d in dims)  # negative dims
    return (("dim", dims), ("keepdim", rng.random() < 0.4))


def draw_reduction(b: Builder, rng: random.Random) -> Proposal | None:
    i = b.pick(lambda v: is_float(v) and v.rank >= 1)
    if i is None:
        return None
    x = b.values[i]
    n = math.prod(x.shape)
    dims = _reduce_dims(x, rng, optional=False)
    one = rng.randrange(x.rank)
    choices = [("sum", _reduce_dims(x, rng), -n * x.mag, n * x.mag, False),
               ("mean", _reduce_dims(x, rng), x.lo, x.hi, False),
               ("amax", dims, x.lo, x.hi, x.exact), ("amin", dims, x.lo, x.hi, x.exact),
               ("var", dims + (("correction", rng.choice([0, 1])),), 0, x.mag ** 2 * n, False),
               ("std", dims + (("correction", rng.choice([0, 1])),), 0, x.mag * n, False),
               ("cumsum", (("dim", one),), -n * x.mag, n * x.mag, False),
               ("logsumexp", dims, x.lo, x.hi + math.log(max(n, 1)) + 1, False)]
    if x.exact:
        choices += [("argmax", (("dim", one), ("keepdim", rng.random() < 0.3)), 0, x.shape[one] - 1, True),
                    ("argmin", (("dim", one), ("keepdim", rng.random() < 0.3)), 0, x.shape[one] - 1, True)]
    if x.shape[one] <= 4 and x.mag <= 4:
        choices.append(("prod", (("dim", one), ("keepdim", rng.random() < 0.3)),
                        -x.mag ** x.shape[one], x.mag ** x.shape[one], False))
    if rng.random() < 0.05:
        choices.append(("vector_norm", dims, 0, x.mag * n, False))
    name, params, lo, hi, exact = rng.choice(choices)
    return Proposal(name, (i,), params, lo, hi, exact)


def draw_norm(b: Builder, rng: random.Random) -> Proposal | None:
    i = b.pick(lambda v: is_float(v) and v.rank >= 1)
    if i is None:
        return None
    x = b.values[i]
    r = rng.random()
    eps = rng.choice([1e-5, 1e-6])
    if r < 0.35:
        return Proposal(rng.choice(["softmax", "log_softmax"]), (i,), (("dim", rng.randrange(-x.rank, x.rank)),),
                        -40, 1, False)
    k = rng.randint(1, min(2, x.rank))
    shape = x.shape[x.rank - k:]
    affine = rng.random() < 0.6
    bound = 2 * math.sqrt(math.prod(shape)) + 4
    if r < 0.6:
        weight, bias = (b.weight(shape), b.weight(shape)) if affine else (None, None)
        return Proposal("layer_norm", (i,), (("shape", shape), ("weight", weight), ("bias", bias), ("eps", eps)),
                        -5 * bound, 5 * bound, False)
    if r < 0.75:
        weight = b.weight(shape) if affine else None
        return Proposal("rms_norm", (i,), (("shape", shape), ("weight", weight), ("eps", eps)), -5 * bound,
                        5 * bound, False)
    if x.rank < 2:
        return None
    c = x.shape[1]
    bound = 2 * math.sqrt(math.prod(x.shape[1:])) + 4
    if r < 0.9:
        groups = rng.choice([g for g in range(1, c + 1) if c % g == 0])
        weight, bias = (b.weight((c,)), b.weight((c,))) if affine else (None, None)
        return Proposal("group_norm", (i,), (("groups", groups), ("weight", weight), ("bias", bias), ("eps", eps)),
                        -5 * bound, 5 * bound, False)
    weight, bias = (b.weight((c,)), b.weight((c,))) if affine else (None, None)
    mean, var = b.weight((c,)), b.weight((c,), positive=True)
    return Proposal("batch_norm", (i,), (("mean", mean), ("var", var), ("weight", weight), ("bias", bias),
                                         ("eps", eps)), -10 * x.mag - 10, 10 * x.mag + 10, False)


def draw_contraction(b: Builder, rng: random.Random) -> Proposal | None:
    r = rng.random()
    if r < 0.55:
        i = b.pick(lambda v: is_float(v) and v.rank >= 1)
        if i is None:
            return None
        x = b.values[i]
        k, n = x.shape[-1], rng.randint(1, b.max_dim)
        bound = k * x.mag * 4 + 4
        if r < 0.3:
            weight = b.weight((n, k))
            bias = b.weight((n,)) if rng.random() < 0.6 else None
            return Proposal("linear", (i,), (("weight", weight), ("bias", bias)), -bound, bound, False)
        if x.rank >= 2:  # a second operand from the program: [..., k, n]
            j = b.pick(lambda v: is_float(v) and v.dtype == x.dtype and v.rank >= 2 and v.shape[-2] == k
                       and _broadcasts(v.shape[:-2], x.shape[:-2]))
            if j is not None:
                bound = k * x.mag * b.values[j].mag + 1
                return Proposal("matmul", (i, j), (), -bound, bound, False)
        weight = b.weight((k, n) if rng.random() < 0.8 else (k,))
        return Proposal("matmul_weight", (i,), (("weight", weight),), -bound, bound, False)
    if r < 0.75:
        i = b.pick(lambda v: is_float(v) and v.rank in (3, 4))
        if i is None:
            return None
        x = b.values[i]
        if x.rank == 3 and rng.random() < 0.3:
            c = x.shape[1]
            o, kw = rng.randint(1, b.max_dim), rng.randint(1, min(3, x.shape[2] + 2))
            pad = rng.randint(0, kw // 2)
            if x.shape[2] + 2 * pad < kw:
                return None
            bias = b.weight((o,)) if rng.random() < 0.5 else None
            bound = c * kw * x.mag * 4 + 4
            return Proposal("conv1d", (i,), (("weight", b.weight((o, c, kw))), ("bias", bias),
                                             ("stride", rng.randint(1, 2)), ("padding", pad)), -bound, bound, False)
        if x.rank == 3:
            j = b.pick(lambda v: is_float(v) and v.dtype == x.dtype and v.rank == 3 and v.shape[0] == x.shape[0]
                       and v.shape[1] == x.shape[2])
            if j is None:
                return None
            bound = x.shape[2] * x.mag * b.values[j].mag + 1
            return Proposal("bmm", (i, j), (), -bound, bound, False)
        _, c, h, wd = x.shape
        groups = rng.choice([g for g in range(1, c + 1) if c % g == 0])
        o = groups * rng.randint(1, 3)
        kh, kw = rng.randint(1, 3), rng.randint(1, 3)
        dilation = rng.choice([1, 1, 2])
        padding = rng.randint(0, 1)
        if h + 2 * padding < dilation * (kh - 1) + 1 or wd + 2 * padding < dilation * (kw - 1) + 1:
            return None
        bias = b.weight((o,)) if rng.random() < 0.5 else None
        bound = c // groups * kh * kw * x.mag * 4 + 4
        return Proposal("conv2d", (i,), (("weight", b.weight((o, c // groups, kh, kw))), ("bias", bias),
                                         ("stride", rng.randint(1, 2)), ("padding", padding),
                                         ("dilation", dilation), ("groups", groups)), -bound, bound, False)
    # attention: q from the program, k and v too when their shapes fit
    i = b.pick(lambda v: is_float(v) and v.rank in (3, 4))
    if i is None:
        return None
    q = b.values[i]
    *batch, length, d = q.shape

    def kv(v: Val) -> bool:
        return is_float(v) and v.dtype == q.dtype and v.rank == q.rank and tuple(v.shape[:-2]) == tuple(batch) \
            and v.shape[-1] == d
    k = b.pick(kv)
    if k is None:
        return None
    s = b.values[k].shape[-2]
    v = b.pick(lambda u: is_float(u) and u.dtype == q.dtype and u.rank == q.rank and tuple(u.shape[:-2]) == tuple(batch)
               and u.shape[-2] == s)
    if v is None:
        return None
    bound = b.values[v].mag
    scale = rng.choice([None, 0.5]) if rng.random() < 0.5 else None
    if rng.random() < 0.2:
        return Proposal("attention_eager", (i, k, v), (("scale", scale or 1.0 / math.sqrt(d)),), -bound, bound, False)
    m = b.pick(lambda u: (u.dtype == torch.bool or (u.dtype == q.dtype and u.mag < 100)) and 2 <= u.rank <= q.rank
               and all(d in (1, e) for d, e in zip(reversed(u.shape), reversed((*batch, length, s)))))
    if m is not None and rng.random() < 0.4:  # a bool mask keeps, a float one is added
        return Proposal("sdpa_mask", (i, k, v, m), (("scale", scale),), -bound, bound, False)
    return Proposal("sdpa", (i, k, v), (("causal", rng.random() < 0.4), ("scale", scale)), -bound, bound, False)


def draw_window(b: Builder, rng: random.Random) -> Proposal | None:
    i = b.pick(lambda v: is_float(v) and v.rank in (3, 4))
    if i is None:
        return None
    x = b.values[i]
    h, wd = x.shape[-2:]
    if rng.random() < 0.15:
        size = (rng.choice([d for d in range(1, h + 1) if h % d == 0]), rng.choice([d for d in range(1, wd + 1)
                                                                                     if wd % d == 0 or d == 1]))
        return Proposal("adaptive_avg_pool2d", (i,), (("size", size),), x.lo, x.hi, False)
    k = (rng.randint(1, min(3, h)), rng.randint(1, min(3, wd)))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2))
    ceil_mode = rng.random() < 0.3
    if rng.random() < 0.5:
        dilation = rng.choice([1, 2]) if all(h + 2 * p >= 2 * (kk - 1) + 1 for kk, p in zip(k, padding)) else 1
        return Proposal("max_pool2d", (i,), (("kernel", k), ("stride", stride), ("padding", padding),
                                             ("dilation", dilation), ("ceil_mode", ceil_mode)), x.lo, x.hi, x.exact)
    divisor = rng.choice([None] * 12 + [3])
    return Proposal("avg_pool2d", (i,), (("kernel", k), ("stride", stride), ("padding", padding),
                                         ("ceil_mode", ceil_mode), ("count_include_pad", rng.random() < 0.5),
                                         ("divisor_override", divisor)), -x.mag * 9, x.mag * 9, False)


def _factor(n: int, rank: int, rng: random.Random) -> tuple[int, ...]:
    """`rank` dims whose product is n."""
    if n == 0:
        dims = [0] + [rng.randint(1, 3) for _ in range(rank - 1)]
        rng.shuffle(dims)
        return tuple(dims)
    dims = []
    for _ in range(rank - 1):
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        d = rng.choice(divisors)
        dims.append(d)
        n //= d
    dims.append(n)
    rng.shuffle(dims)
    return tuple(dims)


def draw_layout(b: Builder, rng: random.Random) -> Proposal | None:  # noqa: C901 - one branch per op
    i = b.pick(lambda v: v.rank >= 1 and (v.is_float or rng.random() < 0.2), empty_ok=True)
    if i is None:
        return None
    x = b.values[i]
    keep = (x.lo, x.hi, x.exact)
    r = rng.randrange(20)
    if r == 0:
        n = math.prod(x.shape)
        shape = list(_factor(n, rng.randint(1, 4), rng))
        if rng.random() < 0.3:
            shape[rng.randrange(len(shape))] = -1
        return Proposal("reshape", (i,), (("shape", tuple(shape)),), *keep)
    if r == 1:
        perm = list(range(x.rank))
        rng.shuffle(perm)
        return Proposal("permute", (i,), (("perm", tuple(perm)),), *keep)
    if r == 2 and x.rank >= 2:
        a, c = rng.sample(range(x.rank), 2)
        return Proposal("transpose", (i,), (("a", a), ("b", c - x.rank)), *keep)
    if r == 3:
        shape = tuple(rng.randint(2, 4) if d == 1 else d for d in x.shape)
        if rng.random() < 0.4 and x.rank < 4:
            shape = (rng.randint(1, 3),) + shape
        return Proposal("expand", (i,), (("shape", shape),), *keep)
    if r == 4:
        dim = rng.randrange(x.rank)
        size = x.shape[dim]
        start = rng.randint(-size, size - 1) if rng.random() < 0.3 else rng.randint(0, size - 1)
        stop = rng.choice([None, size, rng.randint(1, size + 2), -1])
        return Proposal("slice", (i,), (("dim", dim), ("start", start), ("stop", stop),
                                        ("step", rng.choice([1, 1, 2, 3]))), *keep)
    if r == 5:
        dim = rng.randrange(x.rank)
        return Proposal("select", (i,), (("dim", dim), ("index", rng.randrange(-x.shape[dim], x.shape[dim]))), *keep)
    if r in (6, 7):
        dim = rng.randrange(x.rank)
        others = [j for j, v in enumerate(b.values) if v.dtype == x.dtype and v.rank == x.rank
                  and all(a == c for d, (a, c) in enumerate(zip(v.shape, x.shape)) if d != dim)]
        parts = [i] + rng.sample(others, min(len(others), rng.randint(1, 2)))
        lo, hi = min(b.values[j].lo for j in parts), max(b.values[j].hi for j in parts)
        exact = all(b.values[j].exact for j in parts)
        if r == 7:
            same = [j for j in parts if b.values[j].shape == x.shape]
            return Proposal("stack", tuple(same), (("dim", rng.randint(-x.rank - 1, x.rank)),), lo, hi, exact)
        return Proposal("cat", tuple(parts), (("dim", dim - x.rank if rng.random() < 0.3 else dim),), lo, hi, exact)
    if r == 8:
        k = rng.randint(1, min(3, x.rank))
        pads = tuple(rng.randint(-1 if x.shape[-1 - d // 2] > 2 else 0, 2) for d in range(2 * k))
        if rng.random() < 0.3 and x.is_float and x.rank in (2, 3):
            pads = tuple(max(0, min(p, 1)) for p in pads[:2])
            return Proposal("pad_mode", (i,), (("pads", pads), ("mode", rng.choice(["reflect", "replicate",
                                                                                   "circular"]))), *keep)
        value = rng.choice([0.0, 1.5, -2.0]) if x.is_float else rng.choice([0, 3])
        return Proposal("pad", (i,), (("pads", pads), ("value", value)), min(x.lo, value), max(x.hi, value),
                        x.exact)
    if r == 9 and x.rank >= 3:
        c = x.shape[-3]
        rs = [s for s in (2, 3) if c % (s * s) == 0]
        if rs:
            return Proposal("pixel_shuffle", (i,), (("r", rng.choice(rs)),), *keep)
        rs = [s for s in (2, 3) if x.shape[-1] % s == 0 and x.shape[-2] % s == 0]
        if rs:
            return Proposal("pixel_unshuffle", (i,), (("r", rng.choice(rs)),), *keep)
        return None
    if r == 10 and x.rank in (3, 4) and x.is_float:
        return Proposal("upsample_nearest", (i,), (("scale", rng.choice([2, 2.0, 3])),), *keep)
    if r == 11 and x.rank >= 2:
        return Proposal(rng.choice(["tril", "triu"]), (i,), (("diagonal", rng.randint(-1, 1)),), min(x.lo, 0),
                        max(x.hi, 0), x.exact)
    if r == 12:
        start = rng.randrange(x.rank)
        return Proposal("flatten", (i,), (("start", start), ("end", rng.randint(start, x.rank - 1))), *keep)
    if r == 13 and x.rank < 4:
        return Proposal("unsqueeze", (i,), (("dim", rng.randint(-x.rank - 1, x.rank)),), *keep)
    if r == 14:
        ones = [d for d, s in enumerate(x.shape) if s == 1]
        if ones:
            return Proposal("squeeze", (i,), (("dim", rng.choice(ones)),), *keep)
        return None
    if r == 15 and x.rank <= 3:
        reps = tuple(rng.randint(1, 2) for _ in range(x.rank + rng.randint(0, 1)))
        return Proposal("repeat", (i,), (("reps", reps),), *keep)
    if r == 16:
        dim = rng.randrange(x.rank)
        chunks = rng.randint(1, 3)
        count = len(torch.empty(x.shape, device="meta").chunk(chunks, dim))
        return Proposal("chunk", (i,), (("chunks", chunks), ("dim", dim), ("index", rng.randrange(count))), *keep)
    if r == 17 and x.is_float:
        return Proposal("add_arange", (i,), (), x.lo, x.hi + x.shape[-1], False)
    if r == 18 and rng.random() < 0.3:
        if rng.random() < 0.5:
            return Proposal("flip", (i,), (("dims", (rng.randrange(x.rank),)),), *keep)
        return Proposal("roll", (i,), (("shift", rng.randint(1, 3)), ("dim", rng.randrange(x.rank))), *keep)
    if r == 19:
        value = rng.choice([0.0, 2.0, -0.5]) if x.is_float else 1
        return Proposal("full_like", (i,), (("value", value),), value, value, True)
    return None


def draw_gather(b: Builder, rng: random.Random) -> Proposal | None:
    """Embedding, index_select, x[idx], gather: indices are int inputs or computed ints in range."""
    r = rng.random()

    def index_into(size: int) -> int | None:
        return b.pick(lambda v: v.is_int and v.rank >= 1 and 0 <= v.lo and v.hi < size)
    if r < 0.3:
        table = b.weight((rng.randint(2, 10), rng.randint(1, b.max_dim)))
        rows = b.weights[-1].shape[0]
        i = index_into(rows)
        if i is None:
            return None
        return Proposal("embedding", (i,), (("table", table),), -4, 4, False)
    i = b.pick(lambda v: v.is_int and v.rank >= 1 and 0 <= v.lo)  # the index, then what it indexes
    if i is None:
        return None
    idx = b.values[i]
    x_id = b.pick(lambda v: v.rank >= 1 and (v.is_float or v.is_int) and max(v.shape) > idx.hi
                  and (r < 0.9 or v.rank == idx.rank))
    if x_id is None:
        return None
    x = b.values[x_id]
    dim = rng.choice([d for d in range(x.rank) if x.shape[d] > idx.hi])
    keep = (x.lo, x.hi, x.exact)
    if r < 0.6 and idx.rank == 1:
        return Proposal("index_select", (x_id, i), (("dim", dim),), *keep)
    if r < 0.9:
        return Proposal("index", (x_id, i), (("dim", dim),), *keep)
    if idx.rank == x.rank and all(a <= c for d, (a, c) in enumerate(zip(idx.shape, x.shape)) if d != dim):
        return Proposal("gather", (x_id, i), (("dim", dim),), *keep)
    return None


def draw_refused(b: Builder, rng: random.Random) -> Proposal | None:
    """A torch function codesign may not support: each must be one clear refusal."""
    i = b.pick(lambda v: is_float(v) and v.rank >= 1)
    if i is None:
        return None
    x = b.values[i]
    name = rng.choice(["topk", "sort", "cumprod"])
    params = {"topk": (("k", 1),), "sort": (), "cumprod": (("dim", -1),)}[name]
    return Proposal(name, (i,), params, -x.mag ** 2 - 1, x.mag ** 2 + 1, False)


DRAWS: tuple[tuple[Callable[[Builder, random.Random], Proposal | None], float], ...] = (
    (draw_unary, 4), (draw_binary, 4), (draw_where_logic, 1.5), (draw_compare, 0.6), (draw_integer, 1),
    (draw_reduction, 2), (draw_norm, 1.5), (draw_contraction, 2), (draw_window, 0.8), (draw_layout, 4),
    (draw_gather, 1), (draw_refused, 0.08),
)


def random_program(seed: int, max_steps: int = 10, max_dim: int = 6) -> Program:
    """A well-typed random program, the same for the same seed."""
    rng = random.Random(seed)
    dtype = rng.choices([torch.float32, torch.float64, torch.bfloat16], [0.9, 0.06, 0.04])[0]
    b = Builder(rng, dtype, max_dim=max_dim)
    for _ in range(rng.randint(1, 3)):  # float inputs
        b.new_input(b.shape(), dtype)
    if rng.random() < 0.4:  # an integer input: gather indices (lo = 0, small hi), or integer arithmetic
        lo = rng.choice([0, 0, -8])
        b.new_input(b.shape(rng.randint(1, 2)), torch.int64, lo=lo, hi=rng.randint(1, 3 if lo == 0 else 8))
    if rng.random() < 0.15:
        b.new_input(b.shape(), torch.bool)
    if rng.random() < 0.35:  # a 4-d image (conv, pooling, pixel shuffle, attention)
        b.new_input((rng.randint(1, 2), rng.choice([1, 2, 3, 4, 8]), rng.randint(2, max_dim + 2),
                     rng.randint(2, max_dim + 2)), dtype)
    # steps draw on what is there; a draw that finds no operand it needs is redrawn
    draws, weights = zip(*DRAWS)
    target = rng.randint(2, max_steps)
    tries = 0
    while len(b.steps) < target and tries < 20 * max_steps:
        tries += 1
        owned = len(b.weights)
        proposal = rng.choices(draws, weights)[0](b, rng)
        if proposal is not None:
            _check_operands(b, proposal)
            try:
                b.apply(proposal)
                continue
            except (RuntimeError, ValueError, IndexError):  # torch's shape rules refuse it: redraw
                pass
        del b.weights[owned:]  # the weights a refused draw made
    produced = list(range(len(b.inputs), len(b.values)))
    if not produced:
        raise RuntimeError(f"random program {seed}: no step could be drawn")
    outputs = [produced[-1]] + rng.sample(produced[:-1], min(len(produced) - 1, rng.randint(0, 2)))
    return Program(seed, tuple(b.inputs), tuple(b.weights), tuple(b.steps), tuple(outputs), dtype)


def _check_operands(b: Builder, p: Proposal) -> None:
    """Operands of one step share the float dtype (a program is well-typed without promotion)."""
    floats = {b.values[a].dtype for a in p.args if b.values[a].is_float}
    if len(floats) > 1 and p.function not in ("where",):
        raise AssertionError(f"{p.function}: operands of dtypes {floats}")
