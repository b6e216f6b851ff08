"""`codesign sweep` and `codesign search`: co-design exploration from the command line.

```
codesign sweep examples/llama.py:tiny --target sn40l --vary sram.capacity=64MiB..1GiB:x2 \\
    --vary hbm.bandwidth=1TB/s,2TB/s,4TB/s --out sweep/ [--ray] [--json]
codesign search examples/llama.py:tiny --target sn40l --space sram.capacity=64MiB..1GiB:x2 \\
    --space hbm.bandwidth=1TB/s..4TB/s:+0.5TB/s --space compute.peak.bf16=300TFLOP/s..900TFLOP/s:+100TFLOP/s \\
    --objectives time,sram.capacity,cost --constraint area<=600 --trials 60 --out search/
```
Building the parser imports nothing heavy; each command imports what it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_explore_parser"]


def _time_limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.0 < value <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected more than 0 and at most 3600 seconds, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 100000, got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="path/to/file.py:factory returning (model, inputs)")
    parser.add_argument("--target", required=True, metavar="BASE", help="the base target: a name or a .yaml path")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write rows.jsonl (resumable), sweep.csv, sweep.json, summary.txt and PNGs here")
    parser.add_argument("--time-limit", type=_time_limit, default=None, metavar="S",
                        help="CP-SAT time per solve of a variant (placement, mapping, expert windows), in "
                             "deterministic seconds (default 2)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="run every pass for every variant (default: reuse results of passes whose read "
                             "fields a variant does not change)")
    parser.add_argument("--json", action="store_true", help="print the rows (and findings) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_explore_parser(commands: Any) -> None:
    sweep = commands.add_parser("sweep", help="evaluate a model on every variant of a target (co-design sweep)",
                                description="Vary target fields and predict time, traffic, energy, area and "
                                            "cost per variant (capture once; no code generation).")
    _common(sweep)
    sweep.add_argument("--vary", action="append", required=True, metavar="PATH=VALUES",
                       help="a field and its values: sram.capacity=64MiB..1GiB:x2 (log steps), "
                            "compute.peak.bf16=300TFLOP/s..900TFLOP/s:+150TFLOP/s (linear), "
                            "hbm.bandwidth=1TB/s,2TB/s (a list); repeat for more fields")
    sweep.add_argument("--metric", default="time_s", help="the figure the summary and plot follow (default time_s)")
    sweep.add_argument("--ray", action="store_true", help="run variants in parallel on Ray (a local cluster)")
    sweep.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (implies --ray)")
    sweep.add_argument("--workers", type=_positive, default=2, help="Ray workers (default 2)")
    sweep.set_defaults(func=_cmd_sweep)

    search = commands.add_parser("search", help="multi-objective search over target fields (Optuna)",
                                 description="NSGA-II over a space too big to enumerate; prints the Pareto front.")
    _common(search)
    search.add_argument("--space", action="append", required=True, metavar="PATH=VALUES",
                        help="a field and its values, as sweep's --vary; repeat for more fields")
    search.add_argument("--objectives", default="time,cost",
                        help="comma-separated: time, energy, cost, area, tokens, a row column, or a target field "
                             "such as sram.capacity (minimised; max:NAME maximises) (default time,cost)")
    search.add_argument("--constraint", action="append", default=[], metavar="NAME<=V",
                        help="e.g. area<=600, sram.capacity<=512MiB, cost_usd<=8000 (repeatable)")
    search.add_argument("--trials", type=_positive, default=50, help="Optuna trials (default 50)")
    search.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    search.set_defaults(func=_cmd_search)


def _user_error(exc: BaseException) -> Exception:
    from codesign.cli import UserError
    return UserError(str(exc))


def _setup(args: argparse.Namespace, specs: list[str]):
    """(evaluator, space, store) or a one-line UserError naming what is wrong."""
    from codesign.cli import _load_model
    from codesign.explore.evaluate import DEFAULT_TIME_LIMIT, Evaluator
    from codesign.explore.fields import FieldPathError
    from codesign.explore.space import Space
    from codesign.explore.store import RowStore
    from codesign.targets import load_target
    base = load_target(args.target)
    try:
        space = Space.parse(base, specs)  # before the (slow) capture: a bad --vary fails at once
    except FieldPathError as exc:
        raise _user_error(exc) from None
    model, inputs = _load_model(args.model)
    evaluator = Evaluator.from_model(model, inputs, time_limit=args.time_limit or DEFAULT_TIME_LIMIT,
                                     reuse=not args.no_reuse)
    return evaluator, space, RowStore(args.out)


def _meta(args: argparse.Namespace, evaluator: Any, space: Any) -> dict[str, Any]:
    import platform

    import torch

    from codesign import __version__
    return {"model": args.model, "target": space.base.name, "pipeline": evaluator.pipeline,
            "time_limit_s": evaluator.time_limit, "space": space.describe(),
            "versions": {"codesign": __version__, "python": platform.python_version(), "torch": torch.__version__}}


def _print_rows(rows: list[dict[str, Any]], space: Any, extra: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table()
    shown = ["variant"] + [a.name for a in space.axes] + extra
    for name in shown:
        table.add_column(name, justify="right")
    fields = {a.name: a.field for a in space.axes}
    for row in rows[:60]:
        cells = []
        for name in shown:
            v = row.get(name)
            if name in fields and v is not None:
                cells.append(fields[name].format(v))
            elif isinstance(v, float):
                cells.append(f"{v:.4g}")
            else:
                cells.append("" if v is None else str(v))
        table.add_row(*cells)
    Console(markup=False, highlight=False, soft_wrap=False, width=160).print(table)
    if len(rows) > 60:
        print(f"... {len(rows) - 60} more rows (--out DIR writes them all)")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from codesign.explore.ray_runner import RayUnavailable
    from codesign.explore.summary import summarize_sweep
    from codesign.explore.runner import run_sweep, write_outputs
    evaluator, space, store = _setup(args, args.vary)
    try:
        rows = run_sweep(evaluator, space, store=store, progress=not args.quiet and not args.json,
                         ray=args.ray or bool(args.ray_address), ray_address=args.ray_address, workers=args.workers)
    except RayUnavailable as exc:
        raise _user_error(exc) from None
    findings = summarize_sweep(space, rows, args.metric)
    if args.out is not None:
        from codesign.explore.plots import sensitivity_plot
        write_outputs(args.out, rows, {**_meta(args, evaluator, space), "findings": findings})
        (args.out / "summary.txt").write_text("\n".join(findings["lines"]) + "\n")
        sensitivity_plot(space, rows, args.out / "sensitivity.png", args.metric, title=f"{args.model} on {args.target}")
    if args.json:
        sys.stdout.write(json.dumps({"findings": findings, "rows": rows}, indent=1) + "\n")
        return 0
    _print_rows(rows, space, ["valid", args.metric, "tokens_per_s", "energy_j", "cost_usd", "layers_streamed"])
    print("\n".join(findings["lines"]))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from codesign.explore.fields import FieldPathError
    from codesign.explore.pareto import parse_constraint, parse_objectives
    from codesign.explore.search import OptunaUnavailable, run_search
    from codesign.explore.runner import write_outputs
    from codesign.targets import load_target
    base = load_target(args.target)
    columns = ["time_s", "tokens_per_s", "energy_j", "area_mm2", "cost_usd", "eager_time_s", "placement_time_s",
               "experts_time_s", "experts_stall_s", "kernels"] + [f"bytes_{t}" for t in base.tier_names]
    try:
        objectives = parse_objectives(args.objectives, base, columns)
        constraints = [parse_constraint(c, base, columns) for c in args.constraint]
    except FieldPathError as exc:
        raise _user_error(exc) from None
    evaluator, space, store = _setup(args, args.space)
    try:
        result = run_search(evaluator, space, objectives, constraints, trials=args.trials, seed=args.seed,
                            store=store, progress=not args.quiet and not args.json)
    except OptunaUnavailable as exc:
        raise _user_error(exc) from None
    if args.out is not None:
        from codesign.explore.plots import pareto_plot
        write_outputs(args.out, result.rows, {**_meta(args, evaluator, space), "objectives": args.objectives,
                                              "constraints": args.constraint, "trials": args.trials,
                                              "front": [r["key"] for r in result.front]})
        pareto_plot(result.rows, result.front, objectives, args.out / "pareto.png")
    if args.json:
        sys.stdout.write(json.dumps({"front": result.front, "rows": result.rows}, indent=1) + "\n")
        return 0
    print(f"{len(result.rows)} distinct variants in {result.trials} trials; Pareto front of {len(result.front)}:")
    _print_rows(result.front, space, [o.column for o in objectives if o.field is None] + ["valid"])
    return 0
