"""Differential testing against PyTorch's OpInfo samples (`common_methods_invocations.op_db`).

Each sample of an OpInfo becomes a call of the op inside a tiny `nn.Module` (tensors of the
sample are the module's inputs, everything else is baked in), compiled with
`codesign.compile(..., target="cpu-host", backend="cpp")`, run through the generated C++ and
compared with eager. The samples of one op are compiled together, up to `GROUP` at a time,
as one module with one output per sample result (one capture, one C++ build); only when a
group does not match
as a whole is each sample compiled alone, to say which one fails and how.

Outcomes per sample:

- `match`: same dtype and shape as eager; floats within `torch.testing.assert_close`-like
  tolerances (`TOLERANCES`), integers and booleans exactly. A float32 result outside them
  still matches when it is as close to the exact (float64) result as rounding the inputs to
  float32 alone moves that result (`within_conditioning`): on an ill-conditioned sample
  (softmax over logits in the thousands) eager itself is that far off, and another valid
  order of operations is too; a wrong formula is not.
- `refused`: a codesign error (`REFUSALS`) with a message, at compile or call time: the op,
  or this use of it, is not supported, and codesign says so.
- `MISMATCH`: a result that differs from eager.
- `CRASH`: any other exception (a traceback from deep inside).
- `skipped`: eager itself fails, returns no tensor, or is not deterministic.

`python tests/opinfo_harness.py [--full] [--dtypes f32,i64,b8] [op ...]` runs the sweep and
prints one line per sample that did not match, then the counts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.utils import _pytree as pytree

import codesign
from codesign.codegen import CodegenError
from codesign.frontend.aten import ConversionError
from codesign.frontend.capture import CaptureError
from codesign.frontend.signature import InputMismatchError

GROUP = 64
"""Samples compiled together at most: an op with 1,440 samples (max_pool2d) is checked in
groups, so that no build is huge and a refused sample costs a bisection of its group only."""

REFUSALS = (CaptureError, ConversionError, CodegenError, InputMismatchError)
"""codesign's own "cannot do this" errors; anything else raised is a crash."""

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-7, 1e-7),
              torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5)}
"""(rtol, atol) per float dtype: `assert_close`'s defaults, rtol widened to 1e-5 in f32."""

DTYPES = {"f32": torch.float32, "i64": torch.int64, "b8": torch.bool}

UNDEFINED_OUTPUT = frozenset({"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided",
                              "empty_permuted", "nn.functional.dropout", "bernoulli", "normal", "rand_like",
                              "randn_like", "randint_like", "randint", "uniform", "multinomial"})
"""OpInfos whose results eager leaves undefined or random: nothing to compare against."""

MATCH, REFUSED, MISMATCH, CRASH, SKIPPED = "match", "refused", "MISMATCH", "CRASH", "skipped"


@functools.lru_cache(maxsize=None)
def op_db() -> dict[str, Any]:
    """Every OpInfo by its full name (`name` or `name.variant`)."""
    from torch.testing._internal.common_methods_invocations import op_db as db
    return {full_name(op): op for op in db}


def full_name(op) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


@dataclass
class Outcome:
    op: str
    dtype: str
    sample: int
    outcome: str
    error: str = ""
    desc: str = ""

    def line(self) -> str:
        err = f": {self.error}" if self.error else ""
        return f"{self.outcome:8} {self.op} [{self.dtype} #{self.sample}] {self.desc}{err}"


# -- one sample as module inputs + constants -------------------------------------------------
TENSOR = object()
"""Where a sample's tensor goes among its flattened leaves."""

@dataclass
class Case:
    """A sample, flattened: `leaves` with `TENSOR` where `tensors` (in order) go."""

    index: int
    treedef: Any
    leaves: list
    tensors: list[torch.Tensor]
    desc: str

    def call(self, fn: Callable, tensors: Sequence[torch.Tensor]):
        it = iter(tensors)
        leaves = [next(it) if leaf is TENSOR else leaf for leaf in self.leaves]
        inp, args, kwargs = pytree.tree_unflatten(leaves, self.treedef)
        return fn(inp, *args, **kwargs)


def make_case(index: int, sample) -> Case:
    leaves, treedef = pytree.tree_flatten((sample.input, tuple(sample.args), dict(sample.kwargs)))
    tensors = [leaf.detach().clone() for leaf in leaves if isinstance(leaf, torch.Tensor)]
    template = [TENSOR if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
    return Case(index, treedef, template, tensors, describe(sample))


def describe(sample) -> str:
    def one(v):
        if isinstance(v, torch.Tensor):
            return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
        if isinstance(v, (list, tuple)):
            inner = ", ".join(one(x) for x in v)
            return f"[{inner}]" if isinstance(v, list) else f"({inner})"
        return repr(v)
    parts = [one(sample.input)] + [one(a) for a in sample.args] + [f"{k}={one(v)}" for k, v in sample.kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


def tensor_leaves(out) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


class OpModule(torch.nn.Module):
    """Calls `fn` once per case on slices of its inputs; returns every tensor result."""

    def __init__(self, fn: Callable, cases: Sequence[Case]):
        super().__init__()
        self.fn, self.cases = fn, list(cases)

    def forward(self, *tensors: torch.Tensor):
        outs, i = [], 0
        for case in self.cases:
            n = len(case.tensors)
            outs += tensor_leaves(case.call(self.fn, tensors[i:i + n]))
            i += n
        return tuple(outs)


# -- comparison ------------------------------------------------------------------------------
def compare(got: torch.Tensor, ref: torch.Tensor) -> str:
    """Why `got` is not `ref` ("" when it matches)."""
    if not isinstance(got, torch.Tensor):
        return f"got a {type(got).__name__}, eager a tensor"
    if got.dtype != ref.dtype:
        return f"dtype {got.dtype} != eager {ref.dtype}"
    if got.shape != ref.shape:
        return f"shape {list(got.shape)} != eager {list(ref.shape)}"
    if ref.is_complex():
        got, ref = torch.view_as_real(got.resolve_conj()), torch.view_as_real(ref.resolve_conj())
    if ref.dtype.is_floating_point:
        rtol, atol = TOLERANCES.get(ref.dtype, (1e-5, 1e-5))
    else:
        rtol, atol = 0, 0
    try:
        torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, equal_nan=True, check_stride=False,
                                   check_device=False)
    except AssertionError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return "; ".join(lines[1:4]) if len(lines) > 1 else lines[0]
    return ""


CONDITIONING_PROBES = 4
"""float64 runs on inputs perturbed by one float32 rounding each: their spread around the exact
result is how far float32 inputs alone can move it."""


def within_conditioning(fn: Callable, case: Case, results: Sequence[torch.Tensor]) -> str:
    """Why `results` (the case's, in float32) are not within float32 conditioning of the exact
    result ("" when they are): elementwise, |got - exact| <= spread + atol + rtol * |exact|,
    where `spread` is the largest move of the exact result over `CONDITIONING_PROBES` runs on
    inputs perturbed by a relative float32 epsilon each. Deterministic: the probes are seeded
    by the sample index."""
    def exact(tensors):
        with torch.no_grad():
            return [t.double() for t in tensor_leaves(case.call(fn, tensors))]

    wide = [t.double() if t.dtype == torch.float32 else t for t in case.tensors]
    try:
        truth = exact(wide)
        gen = torch.Generator().manual_seed(case.index)
        eps = torch.finfo(torch.float32).eps
        spread = [torch.zeros_like(t) for t in truth]
        for _ in range(CONDITIONING_PROBES):
            probe = [t * (1 + eps * (2 * torch.rand(t.shape, generator=gen, dtype=t.dtype) - 1))
                     if t.dtype == torch.float64 else t for t in wide]
            spread = [torch.maximum(s, (p - e).abs().nan_to_num(0.0))
                      for s, p, e in zip(spread, exact(probe), truth)]
    except Exception as exc:  # noqa: BLE001 - no float64 reference: the float32 verdict stands
        return f"no float64 reference ({type(exc).__name__})"
    if len(truth) != len(results):
        return "float64 results differ in number"
    rtol, atol = TOLERANCES[torch.float32]
    for i, (got, e, s) in enumerate(zip(results, truth, spread)):
        if got.dtype != torch.float32:
            continue
        if got.shape != e.shape:
            return f"result {i}: shape differs from the float64 result"
        err = (got.double() - e).abs()
        bound = s + atol + rtol * e.abs()
        bad = ~((err <= bound) | (got.isnan() & e.isnan()) | (got.double() == e))
        if bad.any():
            j = int(bad.flatten().nonzero()[0])
            return (f"result {i}: {int(bad.sum())} elements beyond float32 conditioning, e.g. at flat "
                    f"index {j}: |got - exact| {err.flatten()[j].item():.3g} > {bound.flatten()[j].item():.3g}")
    return ""


def eager_results(fn: Callable, case: Case) -> tuple[list[torch.Tensor] | None, str]:
    """The sample's tensor results in eager (twice: a result that differs is undefined), or
    None with why it cannot be compared."""
    try:
        with torch.no_grad():
            first = tensor_leaves(case.call(fn, [t.clone() for t in case.tensors]))
            second = tensor_leaves(case.call(fn, [t.clone() for t in case.tensors]))
    except Exception as exc:  # noqa: BLE001 - eager refusing a sample is not codesign's problem
        return None, f"eager raises {type(exc).__name__}: {first_line(exc)}"
    if not first:
        return None, "eager returns no tensor"
    try:
        differs = any(a.shape != b.shape or compare(a, b) for a, b in zip(first, second))
    except Exception as exc:  # noqa: BLE001 - results that cannot be compared
        return None, f"eager results cannot be compared: {first_line(exc)}"
    if differs:
        return None, "eager is not deterministic"
    return first, ""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    if isinstance(exc, CaptureError) and len(text) > 1 and "unsupported ATen op" in line:
        line = line + " " + text[1].strip()
    return line if len(line) <= 300 else line[:297] + "..."


def crash_site(exc: BaseException) -> str:
    """The innermost codesign frame of a traceback (where the crash happened)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/codesign/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" @ {f.filename.split('/codesign/', 1)[1]}:{f.lineno}"


def classify(exc: BaseException) -> tuple[str, str]:
    """A refusal (codesign's own error, with a message) or a crash: anything else, and a
    refusal caused by generated code that does not parse (codesign's bug, not a limit)."""
    msg = first_line(exc)
    if isinstance(exc, REFUSALS) and msg and not _caused_by(exc, SyntaxError):
        return REFUSED, f"{type(exc).__name__}: {msg}"
    return CRASH, f"{type(exc).__name__}: {msg}{crash_site(exc)}"


def _caused_by(exc: BaseException, kind: type) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


BACKENDS = {"cpp": "cpu-host", "triton": "h200"}
"""The backends a sample can run through, with the target each is compiled for (Triton on
CPU tensors needs TRITON_INTERPRET=1, as the suite sets it)."""


def compile_and_run(fn: Callable, cases: Sequence[Case], backend: str = "cpp") -> list[torch.Tensor]:
    """`cases` as one module, compiled for the backend's target (`BACKENDS`) and run through
    the generated code."""
    module = OpModule(fn, cases)
    inputs = tuple(t for case in cases for t in case.tensors)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        cm = codesign.compile(module, inputs, target=BACKENDS[backend], backend=backend)
        outs = cm(*[t.clone() for t in inputs])
    return list(outs) if isinstance(outs, (tuple, list)) else [outs]


def check_cases(fn: Callable, cases: Sequence[Case], backend: str = "cpp") -> tuple[str, str]:
    """One outcome for `cases` compiled together."""
    refs = []
    for case in cases:
        refs += case.refs
    try:
        outs = compile_and_run(fn, cases, backend)
    except Exception as exc:  # noqa: BLE001 - classified
        return classify(exc)
    if len(outs) != len(refs):
        return MISMATCH, f"{len(outs)} results, eager {len(refs)}"
    first = 0
    for case in cases:
        mine = outs[first:first + len(case.refs)]
        whys = [(first + i, compare(got, ref)) for i, (got, ref) in enumerate(zip(mine, case.refs))]
        first += len(case.refs)
        bad = [(i, why) for i, why in whys if why]
        if not bad:
            continue
        only_float32_values = all(isinstance(outs[i], torch.Tensor) and outs[i].dtype == torch.float32 == refs[i].dtype
                         and outs[i].shape == refs[i].shape for i, _ in bad)
        if only_float32_values and not within_conditioning(fn, case, mine):
            continue
        return MISMATCH, f"result {bad[0][0]}: {bad[0][1]}"
    return MATCH, ""


def split_capturable(fn: Callable, cases: Sequence[Case]) -> list[tuple[Case, str]]:
    """Each case with why capture refuses it ("" when it captures), by bisection: a half
    that captures as a whole costs one capture."""
    if len(cases) == 1:
        return [(cases[0], unsupported(fn, cases[0]))]
    if not unsupported(fn, *cases):
        return [(c, "") for c in cases]
    half = len(cases) // 2
    return split_capturable(fn, cases[:half]) + split_capturable(fn, cases[half:])


def unsupported(fn: Callable, *cases: Case) -> str:
    """Why capture refuses the op on these samples together ("" when they capture)."""
    module = OpModule(fn, cases)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            codesign.capture(module, tuple(t for case in cases for t in case.tensors))
    except REFUSALS as exc:
        return classify(exc)[1]
    except Exception:  # noqa: BLE001 - a crash: the full check below reports it
        return ""
    return ""


# -- one OpInfo ------------------------------------------------------------------------------
@dataclass
class OpRun:
    op: str
    dtype: str
    backend: str = "cpp"
    outcomes: list[Outcome] = field(default_factory=list)
    builds: int = 0
    seconds: float = 0.0

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome in (MISMATCH, CRASH)]


def op_samples(op, dtype: torch.dtype, limit: int | None = None, max_numel: int | None = None,
               indices: Sequence[int] | None = None) -> list[tuple[int, Any]]:
    """(index, sample) of `op`'s samples in `dtype`: those at `indices` (all when None), the first
    `limit`, leaving out samples with a tensor of more than `max_numel` elements."""
    torch.manual_seed(0)
    out = []
    for i, sample in enumerate(op.sample_inputs("cpu", dtype, requires_grad=False)):
        if indices is not None and i > max(indices):
            break
        if indices is not None and i not in indices:
            continue
        if max_numel is not None:
            leaves = pytree.tree_leaves((sample.input, sample.args, sample.kwargs))
            if any(isinstance(t, torch.Tensor) and t.numel() > max_numel for t in leaves):
                continue
        out.append((i, sample))
        if limit is not None and len(out) >= limit:
            break
    return out


def run_op(name: str, op, dtype_name: str = "f32", limit: int | None = None,
           max_numel: int | None = None, indices: Sequence[int] | None = None, backend: str = "cpp") -> OpRun:
    """Every sample of `op` in `dtype_name` (the first `limit`), grouped, then alone on failure,
    through `backend` (`BACKENDS`)."""
    start = time.perf_counter()
    run = OpRun(name, dtype_name, backend)
    if name in UNDEFINED_OUTPUT or op.name in UNDEFINED_OUTPUT:
        run.outcomes.append(Outcome(name, dtype_name, -1, SKIPPED, "results are undefined or random"))
        return run
    try:
        samples = op_samples(op, DTYPES[dtype_name], limit, max_numel, indices)
    except Exception as exc:  # noqa: BLE001
        run.outcomes.append(Outcome(name, dtype_name, -1, SKIPPED, f"sample_inputs raises {first_line(exc)}"))
        return run
    fn = op.op
    cases = []
    for i, sample in samples:
        case = make_case(i, sample)
        case.refs, why = eager_results(fn, case)
        if case.refs is None:
            run.outcomes.append(Outcome(name, dtype_name, i, SKIPPED, why, case.desc))
        else:
            cases.append(case)
    if cases:
        probes = [cases[0], cases[len(cases) // 2], cases[-1]]  # the first sample may be an edge case
        why = unsupported(fn, cases[0])
        if why and all(unsupported(fn, c) for c in probes[1:]):  # the op itself is not supported: one refusal stands for all its samples
            run.outcomes.append(Outcome(name, dtype_name, -1, REFUSED, why, f"op unsupported ({len(cases)} samples)"))
            run.seconds = time.perf_counter() - start
            return run
        for first in range(0, len(cases), GROUP):
            check_group(run, fn, cases[first:first + GROUP])
    run.outcomes.sort(key=lambda o: o.sample)
    run.seconds = time.perf_counter() - start
    return run


def check_group(run: OpRun, fn: Callable, cases: Sequence[Case]) -> None:
    """Outcomes of `cases` into `run`: compiled together; on failure, which samples capture at
    all (cheap: no build), then those together, then each alone."""
    name, dtype_name, before = run.op, run.dtype, len(run.outcomes)
    verdict = check_cases(fn, cases, run.backend) if len(cases) > 1 else None
    run.builds += verdict is not None
    if verdict is not None and verdict[0] == MATCH:
        run.outcomes += [Outcome(name, dtype_name, c.index, MATCH, "", c.desc) for c in cases]
    else:
        capturable = []
        for case, why in split_capturable(fn, cases):
            if why:
                run.outcomes.append(Outcome(name, dtype_name, case.index, REFUSED, why, case.desc))
            else:
                capturable.append(case)
        rest = None
        if len(capturable) > 1 and len(capturable) < len(cases):
            rest = check_cases(fn, capturable, run.backend)
            run.builds += 1
        if rest is not None and rest[0] == MATCH:
            run.outcomes += [Outcome(name, dtype_name, c.index, MATCH, "", c.desc) for c in capturable]
        else:
            for case in capturable:
                outcome, error = check_cases(fn, [case], run.backend)
                run.builds += 1
                run.outcomes.append(Outcome(name, dtype_name, case.index, outcome, error, case.desc))
        if verdict is not None and verdict[0] in (MISMATCH, CRASH) and \
                not any(o.outcome in (MISMATCH, CRASH) for o in run.outcomes[before:]):
            run.outcomes.append(Outcome(name, dtype_name, -1, verdict[0], "only when compiled together: "
                                        + verdict[1], "all samples in one module"))


def supported_dtypes(op) -> list[str]:
    have = op.supported_dtypes("cpu")
    return [k for k, v in DTYPES.items() if v in have]


def main(argv: Sequence[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ops", nargs="*")
    parser.add_argument("--dtypes", default="f32")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-numel", type=int, default=None)
    parser.add_argument("--all-lines", action="store_true", help="print matches and refusals too")
    parser.add_argument("--after", default=None, help="start after this op (resume a sweep)")
    parser.add_argument("--until", default=None, help="stop after this op")
    parser.add_argument("--jsonl", default=None, help="append every outcome to this file, one JSON a line")
    args = parser.parse_args(argv)
    sink = open(args.jsonl, "a") if args.jsonl else None
    db = op_db()
    names = args.ops or sorted(db)
    if args.after:
        names = [n for n in names if n > args.after]
    if args.until:
        names = [n for n in names if n <= args.until]
    counts: dict[str, int] = {}
    for name in names:
        op = db[name]
        for dt in args.dtypes.split(","):
            if DTYPES[dt] not in op.supported_dtypes("cpu"):
                continue
            run = run_op(name, op, dt, args.limit, args.max_numel)
            for o in run.outcomes:
                if sink:
                    import dataclasses
                    import json
                    sink.write(json.dumps(dataclasses.asdict(o)) + "\n")
                    sink.flush()
                counts[o.outcome] = counts.get(o.outcome, 0) + 1
                if args.all_lines or o.outcome in (MISMATCH, CRASH, REFUSED):
                    print(o.line(), flush=True)
            print(f"# {name} {dt}: {len(run.outcomes)} samples, {run.builds} builds, {run.seconds:.1f}s "
                  + " ".join(f"{k}={sum(o.outcome == k for o in run.outcomes)}"
                             for k in (MATCH, REFUSED, MISMATCH, CRASH, SKIPPED)), flush=True)
    print("TOTAL", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
