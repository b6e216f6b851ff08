"""``codesign experts schedule | simulate | record | generate``.

```
codesign experts generate --experts 150 --steps 1000 --locality mid -o coe.jsonl
codesign experts simulate --trace coe.jsonl --target sn40l-node --expert-bytes 13.5GB --plot res.png
codesign experts schedule --trace coe.jsonl --target sn40l-node --expert-bytes 13.5GB --time-limit 10
codesign experts record examples/mixtral_moe.py:tiny_model -o trace.jsonl
```
The main CLI calls :func:`add_experts_parser` on its sub-parsers, then ``args.func(args)``,
which returns the exit code. Every numeric option's range is checked as argparse reads it
(an ``ArgumentTypeError`` naming the range: exit 2); a trace is checked as it is read (file,
line, field, expectation); other user mistakes raise ``TraceError`` / ``InfeasibleError``
with one message, which the main CLI prints as ``codesign: error:``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from codesign.targets.units import UnitError, format_bytes, parse_bytes

from .baselines import BASELINES
from .problem import InfeasibleError, expert_link, problem_for_target
from .schedule import HORIZON_WINDOWS, schedule
from .trace import LOCALITY_LEVELS, MAX_EXPERT_BYTES, MAX_EXPERTS, TraceError, read_trace, write_trace, zipf_trace

# The parser needs only the constants above (pure Python); what runs a command (the target
# loader, the bounds' min-cost flow, the report's plots, CP-SAT) is imported by the command,
# so `codesign --help` and `codesign targets list` do not load it.

__all__ = ["add_experts_parser"]


# -- option types: each option's range is checked as argparse reads it ------------------------
def _integer(lo: int, hi: int):
    """An argparse ``type=``: an integer in lo..hi (argparse prints the error and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _seconds(lo: float, hi: float):
    """Seconds, a number greater than ``lo`` and at most ``hi``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, a number in ({lo:g}, {hi:g}], got {text!r}") from None
        if not lo < value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be more than {lo:g} and at most {hi:g} seconds, got {text}")
        return value
    parse.__name__ = "seconds"
    return parse


def _size(lo: int, hi: int = MAX_EXPERT_BYTES):
    """Bytes such as ``13.5GB`` or ``512 MiB`` (``codesign.targets.units``), in lo..hi."""
    def parse(text: str) -> int:
        try:
            value = parse_bytes(text)
        except UnitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {format_bytes(lo)} and {format_bytes(hi)}, "
                                             f"got {text} ({value} bytes)")
        return value
    parse.__name__ = "size"
    return parse


def _locality(text: str) -> tuple[float, float]:
    """``low | mid | high`` or ``ALPHA,LOCALITY`` (Zipf exponent >= 0, locality in [0, 1])."""
    if text in LOCALITY_LEVELS:
        return LOCALITY_LEVELS[text]
    try:
        alpha, locality = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected low, mid, high or ALPHA,LOCALITY, got {text!r}") from None
    if not 0 <= alpha <= 100 or not 0 <= locality <= 1:
        raise argparse.ArgumentTypeError(f"ALPHA must be in [0, 100] and LOCALITY in [0, 1], got {text!r}")
    return alpha, locality


STEPS = _integer(1, 10_000_000)
TOKENS = _integer(1, 1_000_000)


def add_experts_parser(subparsers: Any) -> None:
    """Register ``experts`` and its sub-commands on an argparse ``_SubParsersAction``."""
    experts = subparsers.add_parser("experts", help="schedule expert weights between memory tiers",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experts.set_defaults(func=lambda args: (experts.print_help(sys.stdout), 0)[1])
    commands = experts.add_subparsers(dest="experts_command", metavar="COMMAND")

    def problem_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trace", required=True, type=Path, help="JSONL expert trace (docs/experts.md)")
        p.add_argument("--target", required=True, help="bundled target name or .yaml path")
        p.add_argument("--expert-bytes", type=_size(1), help="bytes per expert (default: the trace header's)")
        p.add_argument("--reserve", type=_size(0), default=0,
                       help="fast-tier bytes kept for non-expert weights, KV cache, activations")
        p.add_argument("--decode-tokens", type=TOKENS, default=1,
                       help="sequential tokens per step (compute time; 1..1000000)")
        p.add_argument("--steps", type=STEPS, help="use only the first STEPS steps of the trace")
        p.add_argument("--plot", type=Path, help="write a PNG of fast-tier residency over time")
        p.add_argument("--perfetto", type=Path, help="write the timeline as Chrome/Perfetto trace JSON")
        p.add_argument("--json", type=Path, help="write the results as JSON")

    simulate_ = commands.add_parser("simulate", help="score the baseline policies on a trace")
    problem_args(simulate_)
    simulate_.add_argument("--policy", action="append", choices=sorted(BASELINES), help="baseline(s); default all")
    simulate_.set_defaults(func=_simulate)

    schedule_ = commands.add_parser("schedule", help="the ILP schedule, compared with every baseline")
    problem_args(schedule_)
    schedule_.add_argument("--time-limit", type=_seconds(0, 86400), default=10.0,
                           help="CP-SAT seconds per window (at most 86400)")
    schedule_.add_argument("--window", type=_integer(1, 100_000), default=1000,
                           help="slots per rolling-horizon window (1..100000)")
    schedule_.add_argument("--horizon", type=_integer(0, 10_000_000), default=None,
                           help="slots after a window that its candidates are judged over "
                                f"(0..10000000; default {HORIZON_WINDOWS} windows)")
    schedule_.add_argument("--workers", type=_integer(1, 256), default=2, help="CP-SAT workers (1..256)")
    schedule_.add_argument("--plan", type=Path, help="write the chosen plan (decisions) as JSON")
    schedule_.set_defaults(func=_schedule)

    record_ = commands.add_parser("record", help="run a model's routers on its inputs, write the trace")
    record_.add_argument("model", metavar="MODEL", help="path/to/file.py:factory returning (model, inputs)")
    record_.add_argument("-o", "--output", type=Path, required=True, help="trace file to write (.jsonl)")
    record_.set_defaults(func=_record)

    generate = commands.add_parser("generate", help="write a synthetic trace (Zipf + temporal locality)")
    generate.add_argument("--experts", type=_integer(1, MAX_EXPERTS), required=True, help="experts per layer")
    generate.add_argument("--steps", type=_integer(1, 1_000_000), required=True)
    generate.add_argument("--layers", type=_integer(1, MAX_EXPERTS), default=1)
    generate.add_argument("--top-k", type=_integer(1, MAX_EXPERTS), default=1, help="experts per step and layer")
    generate.add_argument("--locality", type=_locality, default="mid",
                          help="low | mid | high, or ALPHA,LOCALITY (ALPHA >= 0, LOCALITY in [0, 1])")
    generate.add_argument("--expert-bytes", type=_size(1))
    generate.add_argument("--seed", type=_integer(0, 2**63 - 1), default=0)
    generate.add_argument("-o", "--output", type=Path, required=True)
    generate.set_defaults(func=_generate)


def _console() -> Console:
    return Console(file=sys.stdout, markup=False, highlight=False, soft_wrap=False, width=110)


def _problem(args: argparse.Namespace):
    from codesign.targets import load_target
    trace = read_trace(args.trace)
    if args.steps:
        trace = trace.head(args.steps)
    if args.expert_bytes is None and trace.expert_bytes is None:
        raise TraceError(f"{args.trace}: the header gives no expert_bytes: pass --expert-bytes (e.g. 13.5GB)")
    target = load_target(args.target)
    fast = expert_link(target)
    if args.reserve >= fast.capacity:
        raise InfeasibleError(f"--reserve {format_bytes(args.reserve)} leaves no room for experts: the "
                              f"{fast.fast} tier of {target.name!r} holds {format_bytes(fast.capacity)}; "
                              f"give a --reserve below that")
    return problem_for_target(trace, target, expert_bytes=args.expert_bytes,
                              reserve=args.reserve, decode_tokens=args.decode_tokens)


def _outputs(args: argparse.Namespace, problem, plan, result, data: dict) -> None:
    from .report import plot_residency
    from .simulate import write_chrome_trace
    console = _console()
    if args.plot:
        console.print(f"wrote {plot_residency(args.plot, problem, result)}")
    if args.perfetto:
        console.print(f"wrote {write_chrome_trace(args.perfetto, problem, plan, result)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {args.json}")


def _simulate(args: argparse.Namespace) -> int:
    from .report import results_table
    problem = _problem(args)
    sched = schedule(problem, baselines=args.policy, use_ilp=False)
    console = _console()
    console.print(results_table([r for _, r in sched.baselines.values()]))
    _outputs(args, problem, sched.plan, sched.result, {"baselines": sched.summary()["baselines"]})
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from .bounds import lower_bound
    from .ilp import IlpOptions
    from .report import results_table
    problem = _problem(args)
    console = _console()
    options = IlpOptions(time_limit=args.time_limit, workers=args.workers)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        windows = -(-problem.num_slots // args.window)
        task = progress.add_task("CP-SAT", total=windows)

        def report(w: int, count: int, t: float, objective: int, bound: int) -> None:
            progress.update(task, completed=w, description=f"window {w + 1}/{count}: "
                            f"best {objective / 1e6:.2f} ms, bound {bound / 1e6:.2f} ms")

        sched = schedule(problem, window=args.window, options=options, progress=report,
                         horizon=args.horizon)
        progress.update(task, completed=windows)
    console.print(results_table([sched.result] + [r for _, r in sched.baselines.values()]))
    best_plan, best = sched.best_baseline
    with console.status("proving a lower bound for the whole trace"):
        # one busy-link flow over a long trace already takes seconds: probe only its last slot
        trace_bound = lower_bound(problem, probes=16 if problem.num_slots <= 8000 else 1)
    console.print(f"ILP vs best baseline ({best.policy}): {sched.result.total / best.total:.4f}x; "
                  f"largest window gap (ILP vs proven bound): {100 * sched.gap:.2f}%; whole trace vs its "
                  f"proven bound: {100 * max(0.0, 1 - trace_bound / sched.result.total):.2f}%")
    if args.plan:
        args.plan.parent.mkdir(parents=True, exist_ok=True)
        args.plan.write_text(json.dumps(sched.plan.to_json()) + "\n")
        console.print(f"wrote {args.plan}")
    _outputs(args, problem, sched.plan, sched.result, sched.summary())
    return 0


def _record(args: argparse.Namespace) -> int:
    from codesign.cli import _load_model  # the user's factory failing is their error, not a traceback

    from .record import record
    model, inputs = _load_model(args.model)
    trace = record(model, inputs, source=f"record({args.model})")
    write_trace(trace, args.output)
    print(f"wrote {args.output}: {len(trace)} steps x {trace.num_layers} layers, "
          f"{trace.num_experts} experts, top-{trace.top_k}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    alpha, locality = args.locality
    if args.experts * args.layers > MAX_EXPERTS:
        raise TraceError(f"--experts x --layers = {args.experts * args.layers} experts in all; at most {MAX_EXPERTS}")
    if args.top_k > args.experts:
        raise TraceError(f"--top-k {args.top_k} is more than the {args.experts} experts of a layer")
    trace = zipf_trace(args.experts, args.steps, num_layers=args.layers, top_k=args.top_k, alpha=alpha,
                       locality=locality, seed=args.seed, expert_bytes=args.expert_bytes)
    write_trace(trace, args.output)
    print(f"wrote {args.output}: {trace.source}")
    return 0
