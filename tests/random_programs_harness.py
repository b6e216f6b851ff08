"""Random programs (tests/random_programs.py) through codesign, compared with eager.

Each program is captured by `codesign.capture` and compiled; the compiled module runs on
fresh random inputs (drawn apart from the example inputs) through each backend asked for —
the reference interpreter on the compiled graph, the generated C++ (cpu-host), Triton
(h200, under TRITON_INTERPRET=1) — and every output is compared with eager PyTorch on the
same inputs. Programs are run in batches, side by side in one module (one capture, one
compile, one build per backend); a batch that fails as a whole is split in halves until
the failing programs are alone, so a refusal or a crash is charged to its program only.

Outcomes per program and backend (as in tests/opinfo_harness.py):

- `match`: same dtype and shape as eager; NaN and infinities in the same places; floats
  within `TOLERANCES` of eager, normwise (max |got - eager| <= rtol * max(1, max |eager|):
  the programs chain up to ten ops, whose rounding errors add up, and a wrong index or op
  is off by the values themselves); integers and booleans exactly.
- `refused`: one of codesign's errors (`REFUSALS`) with a message: the program uses
  something codesign does not support, and says so.
- `MISMATCH`: a result that differs from eager.
- `CRASH`: any other exception.

`python tests/random_programs_harness.py [--count 1000] [--first 0] [--batch 10]
[--backends interpreter,cpp,triton] [--triton-every 10]` runs a sweep and prints one line per
program that did not match, then the counts.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import torch  # noqa: E402

import codesign  # noqa: E402
from codesign.frontend.capture import UnsupportedOpsError  # noqa: E402
from opinfo_harness import CRASH, MATCH, MISMATCH, REFUSED, classify  # noqa: E402
from random_programs import BatchModule, Program, random_program  # noqa: E402

TOLERANCES = {torch.float32: 2e-4, torch.float64: 1e-9, torch.bfloat16: 6e-2, torch.float16: 6e-3}
"""Normwise relative tolerance of float outputs, by dtype."""

TARGETS = {"interpreter": "cpu-host", "cpp": "cpu-host", "triton": "h200"}
"""The target each backend's programs are compiled for."""

SEVERITY = {MATCH: 0, REFUSED: 1, MISMATCH: 2, CRASH: 3}


@dataclass
class Outcome:
    seed: int
    backend: str
    outcome: str
    error: str = ""
    program: Program | None = field(default=None, repr=False, compare=False)

    def line(self) -> str:
        return f"{self.outcome:8} seed={self.seed} [{self.backend}] {self.error}"


@dataclass
class Sweep:
    """Every program's outcome per backend, and the time the sweep took."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def by_program(self) -> dict[tuple[int, bool], str]:
        """Each program's worst outcome over the backends, by (seed, a small Triton program)."""
        worst: dict[tuple[int, bool], str] = {}
        for o in self.outcomes:
            key = (o.seed, "triton" in o.backend)
            if key not in worst or SEVERITY[o.outcome] > SEVERITY[worst[key]]:
                worst[key] = o.outcome
        return worst

    def counts(self) -> dict[str, int]:
        counts = {k: 0 for k in SEVERITY}
        for outcome in self.by_program().values():
            counts[outcome] += 1
        return counts

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome in (MISMATCH, CRASH)]


def compare(got: torch.Tensor, ref: torch.Tensor) -> str:
    """Why `got` is not eager's `ref` ("" when it matches)."""
    if not isinstance(got, torch.Tensor):
        return f"got a {type(got).__name__}, eager a tensor"
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return f"{got.dtype}{list(got.shape)} != eager {ref.dtype}{list(ref.shape)}"
    if not ref.dtype.is_floating_point:
        bad = (got != ref).sum().item()
        return f"{bad} of {ref.numel()} elements differ" if bad else ""
    g, r = got.double(), ref.double()
    for name, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        if not torch.equal(test(g), test(r)):
            return f"{name} at {int((test(g) != test(r)).sum())} other places than eager"
    finite = torch.isfinite(r)
    if not finite.any():
        return ""
    err = (g[finite] - r[finite]).abs().max().item()
    scale = max(1.0, r[finite].abs().max().item())
    tol = TOLERANCES.get(ref.dtype, 1e-4)
    return f"max error {err:.3g} > {tol:g} x {scale:.3g}" if err > tol * scale else ""


def eager(program: Program, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(program.module()(*[t.clone() for t in inputs]))


def _quiet():
    """Silence warnings and the C++ compiler's / torch's stderr chatter around a call."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def run_batch(programs: Sequence[Program], backends: Sequence[str], seed: int = 0) -> list[Outcome]:
    """Outcomes of `programs` on each backend, compiled together; split where they fail."""
    example = [p.draw_inputs(10_000 + seed + p.seed) for p in programs]
    fresh = [p.draw_inputs(20_000 + seed + p.seed) for p in programs]
    refs = [eager(p, x) for p, x in zip(programs, fresh)]
    return _run(list(programs), example, fresh, refs, list(backends))


def _run(programs, example, fresh, refs, backends) -> list[Outcome]:
    module = BatchModule(programs)
    try:
        with _quiet():
            captured = codesign.capture(module, tuple(t for x in example for t in x))
    except Exception as exc:  # noqa: BLE001 - classified, or split to find whose it is
        if len(programs) > 1:
            whose = _unsupported_by_part(exc, len(programs))
            if whose:  # the error names each program (`parts.<k>`) that uses an unsupported op
                rest = [k for k in range(len(programs)) if k not in whose]
                refused = [Outcome(programs[k].seed, _capture(backends), REFUSED, f"{type(exc).__name__}: {why}", programs[k])
                           for k, why in sorted(whose.items())]
                pick = lambda xs: [xs[k] for k in rest]  # noqa: E731
                return refused + (_run(pick(programs), pick(example), pick(fresh), pick(refs), backends)
                                  if rest else [])
            return _split(programs, example, fresh, refs, backends)
        outcome, error = classify(exc)
        return [Outcome(programs[0].seed, _capture(backends), outcome, error, programs[0])]
    outcomes: list[Outcome] = []
    for backend in backends:
        try:
            with _quiet():
                cm = codesign.compile(captured, target=TARGETS[backend], backend=backend)
                outs = cm(*[t.clone() for x in fresh for t in x])
        except Exception as exc:  # noqa: BLE001
            if len(programs) > 1:
                return _split(programs, example, fresh, refs, backends)
            outcome, error = classify(exc)
            outcomes.append(Outcome(programs[0].seed, backend, outcome, error, programs[0]))
            continue
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        i = 0
        for program, ref in zip(programs, refs):
            mine, i = outs[i:i + len(ref)], i + len(ref)
            why = next((f"output {k}: {w}" for k, (g, r) in enumerate(zip(mine, ref)) if (w := compare(g, r))), "")
            if len(mine) != len(ref):
                why = f"{len(mine)} outputs, eager {len(ref)}"
            outcomes.append(Outcome(program.seed, backend, MISMATCH if why else MATCH, why, program))
    return outcomes


def _capture(backends: Sequence[str]) -> str:
    """The stage name of a capture failure, for programs bound for `backends`."""
    return "capture for " + ",".join(backends)


def _unsupported_by_part(exc: BaseException, count: int) -> dict[int, str]:
    """Program index -> the unsupported ops it uses, when `exc` is capture's list of
    unsupported ops and every use lies in one program's module (`parts.<k>`); else {}."""
    uses = getattr(exc, "unsupported", None)
    if not isinstance(exc, UnsupportedOpsError) or not uses:
        return {}
    whose: dict[int, list[str]] = {}
    for use in uses:
        head, _, rest = use.module.partition(".")
        index = rest.split(".")[0]
        if head != "parts" or not index.isdigit() or int(index) >= count:
            return {}
        whose.setdefault(int(index), []).append(f"{use.op}{': ' + use.reason if use.reason else ''}")
    return {k: "; ".join(v) for k, v in whose.items()}


def _split(programs, example, fresh, refs, backends) -> list[Outcome]:
    h = len(programs) // 2
    return (_run(programs[:h], example[:h], fresh[:h], refs[:h], backends)
            + _run(programs[h:], example[h:], fresh[h:], refs[h:], backends))


def sweep(seeds: Sequence[int], batch: int = 10, backends: Sequence[str] = ("interpreter", "cpp"),
          triton_every: int = 0, triton_dim: int = 3, log=None) -> Sweep:
    """Every seed's program through `backends` (in batches); each `triton_every`-th seed also
    through Triton, drawn with dims up to `triton_dim` (the interpreter is slow)."""
    start = time.perf_counter()
    result = Sweep()
    programs = [random_program(s) for s in seeds] if backends else []
    for k in range(0, len(programs), batch):
        outcomes = run_batch(programs[k:k + batch], backends)
        result.outcomes += outcomes
        if log:
            for o in outcomes:
                if o.outcome != MATCH:
                    log(o.line())
    if triton_every:
        small = [random_program(s, max_dim=triton_dim) for s in seeds[::triton_every]]
        for k in range(0, len(small), batch):
            outcomes = run_batch(small[k:k + batch], ("triton",))
            result.outcomes += outcomes
            if log:
                for o in outcomes:
                    if o.outcome != MATCH:
                        log(o.line())
    result.seconds = time.perf_counter() - start
    return result


def main(argv: Sequence[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--backends", default="interpreter,cpp")
    parser.add_argument("--triton-every", type=int, default=10)
    args = parser.parse_args(argv)
    seeds = range(args.first, args.first + args.count)
    result = sweep(seeds, args.batch, args.backends.split(","), args.triton_every,
                   log=lambda line: print(line, flush=True))
    print(f"{args.count} programs in {result.seconds:.0f}s:", result.counts())
    return 1 if result.failures() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
