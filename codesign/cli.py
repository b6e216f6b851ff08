"""The `codesign` command line: `opt`, `capture`, `compile`, `targets`, `passes`.

```
codesign opt graph.csir --passes canonicalize,dce --print-ir-after-change --dump-dir out/
codesign opt out/01-canonicalize.csir --resume          # continue the pipeline from a dump
codesign capture examples/mlp.py:make_model -o mlp.csir
codesign compile examples/gpt2.py:make_model --target sn40l --report
codesign targets list | show sn40l | validate my.yaml | schema
codesign passes
```
Mistakes in what the user gave (a file that does not parse, an unknown pass or target, a
bad model spec, a pass that cannot do what its options ask: `PassError`) print one
`codesign: error:` message and exit 1, never a traceback;
`--traceback` shows it anyway. Argument errors exit 2, as argparse does.

Building the parser imports neither torch nor the solvers: each command imports what it
needs when it runs, so `codesign --help`, `--version` and `codesign targets ...` start in a
fraction of a second (`benchmarks/cli_startup.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from codesign.calibrate.cli import add_calibrate_parser
from codesign.cli_options import DEFAULT_PIPELINE, add_instrumentation_args
from codesign.experts.cli import add_experts_parser
from codesign.explore.cli import add_explore_parser
from codesign.targets.cli import add_targets_parser


class UserError(Exception):
    """A mistake in the command line's input; printed as one line, no traceback."""


# (module, name) of every exception type that means "the user's input is wrong"
_USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("codesign.calibrate.cli", "CalibrateError"), ("codesign.ir.parser", "ParseError"),
    ("codesign.ir.verifier", "VerifyError"), ("codesign.passes.registry", "PipelineError"),
    ("codesign.passes.manager", "PassError"), ("codesign.targets.loader", "TargetError"),
    ("codesign.targets.schema", "TargetLookupError"), ("codesign.targets.units", "UnitError"),
    ("codesign.frontend.factory", "ModelSpecError"), ("codesign.frontend.capture", "CaptureError"),
    ("codesign.frontend.aten", "ConversionError"), ("codesign.frontend.moe", "MoeBlockError"),
    ("codesign.frontend.signature", "InputMismatchError"), ("codesign.passes.fuse", "FusionError"),
    ("codesign.placement.planner", "PlacementError"), ("codesign.compiler", "SaveError"),
    ("codesign.export.mlir_builder", "MlirExportError"),
    ("codesign.codegen", "CodegenError"),  # reaches the caller only for a pinned backend
    ("codesign.codegen.registry", "UnknownBackendError"), ("codesign.codegen.outdir", "ExportError"),
    ("codesign.experts.plan", "PlanError"), ("codesign.experts.trace", "TraceError"),
    ("codesign.experts.problem", "InfeasibleError"), ("codesign.explore.fields", "FieldPathError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the user's input is wrong", not "codesign has a bug": the
    one place that decides what `main` prints as a `codesign: error:` message (exit 1) and
    what it lets through as a traceback. Each type's message says what is wrong and where.

    Only the types of modules already imported are returned: an exception of a module that
    was never loaded cannot have been raised, and importing it here would load torch for a
    mistake in `codesign targets validate`."""
    found: list[type[BaseException]] = [UserError, OSError]
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(getattr(loaded, name, None), type):
            found.append(getattr(loaded, name))
    return tuple(found)


# -- helpers -------------------------------------------------------------------------------
def _write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)


def _read_ir(path: str) -> tuple[str, str]:
    """(text, name for messages) of an IR file, `-` meaning stdin."""
    from codesign.ir import decode_ir
    if path == "-":
        stdin = getattr(sys.stdin, "buffer", None)  # bytes, decoded as files are
        return (decode_ir(stdin.read(), "<stdin>") if stdin is not None else sys.stdin.read()), "<stdin>"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such IR file: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read IR file {path}: {exc.strerror}") from None
    return decode_ir(data, path), path


def pipeline_of_dump(text: str) -> str | None:
    """The pipeline recorded in a dump's header comment (`// codesign dump ... pipeline: P`)."""
    first = text.split("\n", 1)[0]
    if first.startswith("// codesign dump") and "pipeline: " in first:
        pipeline = first.split("pipeline: ", 1)[1].strip()
        return "" if pipeline == "(empty)" else pipeline
    return None


def _load_target(name: str | None) -> Any:
    if name is None:
        return None
    from codesign.targets import load_target
    return load_target(name)


def _load_model(spec: str) -> tuple[Any, Any]:
    """(model, example inputs) from `path/to/file.py:factory`."""
    try:
        from codesign.frontend import load_factory
    except ImportError as exc:
        raise UserError(f"the PyTorch frontend is not available ({exc})") from None
    try:
        return load_factory(spec)
    except _user_errors():
        raise
    except Exception as exc:  # noqa: BLE001 - the user's file or factory failed, not codesign
        raise UserError(f"cannot load model {spec}: {type(exc).__name__}: {exc}") from exc


# -- sub-commands --------------------------------------------------------------------------
def _cmd_opt(args: argparse.Namespace) -> int:
    from codesign.ir import parse_graph, print_graph
    from codesign.passes import PassContext, PassManager, instrumentation_from_args
    text, filename = _read_ir(args.file)
    graph = parse_graph(text, filename)
    pipeline = args.passes
    if pipeline is None:
        recorded = pipeline_of_dump(text) if args.resume else None
        pipeline = recorded if recorded is not None else DEFAULT_PIPELINE
    manager = PassManager(pipeline, instrumentation_from_args(args))
    start_after = None
    if args.resume:
        if args.file == "-":
            raise UserError("--resume needs a numbered dump file such as out/02-dce.csir, not stdin")
        start_after = manager.resume_position(args.file)
    result = manager.run(graph, PassContext(target=_load_target(args.target)), start_after=start_after)
    _write_output(print_graph(result), args.output)
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    try:
        from codesign.frontend import capture
    except ImportError as exc:
        raise UserError(f"the PyTorch frontend is not available ({exc})") from None
    from codesign.ir import print_graph
    model, inputs = _load_model(args.model)
    captured = capture(model, inputs)
    _write_output(print_graph(captured.graph), args.output)
    return 0


def _compile(args: argparse.Namespace, progress: Any = None):
    import codesign
    from codesign.passes import instrumentation_from_args
    model, inputs = _load_model(args.model)
    options: dict[str, Any] = {"instrumentation": instrumentation_from_args(args), "progress": progress}
    if args.passes is not None:
        options["pipeline"] = args.passes
    if args.must_fuse:
        options["must_fuse"] = [n.strip().lstrip("%") for n in args.must_fuse.split(",") if n.strip()]
    return codesign.compile(model, inputs, target=args.target, **options)


class _EmitAction(argparse.Action):
    """`--emit KIND [DIR]`, checked as argparse reads it (exit 2): ir and mlir print to
    stdout without DIR; cpp and triton need one. Stored as (kind, Path or None)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from codesign.emit import KINDS
        kind, *rest = values
        if kind not in KINDS or len(rest) > 1:
            parser.error(f"--emit takes KIND [DIR] with KIND one of {', '.join(KINDS)}; got {' '.join(values)}")
        if not rest and kind in ("cpp", "triton"):
            parser.error(f"--emit {kind} writes several files or a module: give a folder, --emit {kind} DIR")
        setattr(namespace, self.dest, (kind, Path(rest[0]) if rest else None))


def _cmd_compile(args: argparse.Namespace) -> int:
    from codesign.progress import terminal_progress
    emit = args.emit
    with terminal_progress(args.quiet) as progress:
        module = _compile(args, progress)
        if args.save is not None:
            with progress.step(f"save {args.save}"):
                module.save(args.save)
        if emit is not None and emit[1] is not None:
            from codesign.emit import emit as write_code
            with progress.step(f"code generation: {emit[0]} into {emit[1]}"):
                written = write_code(module, emit[0], emit[1], overwrite=args.overwrite)
        elif emit is not None:
            with progress.step(f"code generation: {emit[0]}"):
                from codesign.emit import generated_source
                text = generated_source(module, emit[0])[0]
    if emit is not None and emit[1] is not None:
        names = ", ".join(p.name for p in written)
        print(f"codesign: wrote {names} to {emit[1]}", file=sys.stderr)
    elif emit is not None:
        sys.stdout.write(text)
    if args.json:
        import json
        sys.stdout.write(json.dumps(module.summary(), indent=2, sort_keys=True) + "\n")
    elif args.report or emit is None or emit[1] is not None:
        sys.stdout.write(module.report().rstrip("\n") + "\n")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    module = _compile(args)
    sys.stdout.write(module.explain(as_json=args.json))
    return 0


def _cmd_passes(args: argparse.Namespace) -> int:
    from codesign.passes import PASSES
    for name in sorted(PASSES):
        cls = PASSES[name]
        print(f"{name}  {cls.summary}")
        for spec in cls.options():
            default = "required" if spec.required else f"default {spec.format(spec.default) or '()'}"
            doc = f"  {spec.doc}" if spec.doc else ""
            print(f"    {spec.name}: {spec.type_name} ({default}){doc}")
    return 0


# -- parser --------------------------------------------------------------------------------
def _version() -> str:
    """The installed distribution's version (no torch import), else the package's."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("codesign")
    except PackageNotFoundError:
        from codesign import __version__
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codesign", description="Hardware co-design compiler and dataflow mapper for PyTorch models.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the Python traceback of an error instead of one message")
    parser.add_argument("--version", action="version", version=f"codesign {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # `--traceback` is also accepted after the sub-command (SUPPRESS: don't reset the global one)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an error instead of one message")

    opt = commands.add_parser("opt", parents=[common], help="run passes over a textual IR file (mlir-opt style)",
                              description="Read a .csir file, run a pass pipeline, print the result.")
    opt.add_argument("file", metavar="FILE.csir", help="textual IR file ('-' for stdin)")
    opt.add_argument("--passes", metavar="PIPELINE",
                     help=f"comma-separated passes with options, e.g. 'canonicalize{{max_iterations=3}},dce' "
                          f"(default: {DEFAULT_PIPELINE}; '' runs none)")
    opt.add_argument("--resume", action="store_true",
                     help="FILE is a numbered dump (NN-PASS.csir): continue the pipeline after that pass")
    opt.add_argument("--target", metavar="T", help="target name or .yaml path, for target-aware passes")
    opt.add_argument("-o", "--output", type=Path, metavar="OUT", help="write the result here, not stdout")
    add_instrumentation_args(opt)
    opt.set_defaults(func=_cmd_opt)

    capture = commands.add_parser("capture", parents=[common], help="capture a PyTorch model into textual IR")
    capture.add_argument("model", metavar="MODEL", help="path/to/file.py:factory returning (model, inputs)")
    capture.add_argument("-o", "--output", type=Path, metavar="OUT.csir", help="write the IR here, not stdout")
    capture.set_defaults(func=_cmd_capture)

    compile_ = commands.add_parser("compile", parents=[common], help="compile a PyTorch model for a target")
    compile_.add_argument("model", metavar="MODEL", help="path/to/file.py:factory returning (model, inputs)")
    compile_.add_argument("--target", required=True, metavar="T", help="target name or .yaml path")
    compile_.add_argument("--report", action="store_true", help="print the report (the default output)")
    compile_.add_argument("--emit", nargs="+", metavar=("KIND", "DIR"), action=_EmitAction,
                          help="write the generated code to DIR: cpp (C++ and a CMake project), triton (the "
                               "kernels' .py), mlir, ir; without DIR, mlir and ir print to stdout")
    compile_.add_argument("--overwrite", action="store_true",
                          help="let --emit write into a folder that holds other files (same names are replaced)")
    compile_.add_argument("-q", "--quiet", action="store_true",
                          help="no progress display on stderr (it is shown only when stderr is a terminal)")
    compile_.add_argument("--passes", metavar="PIPELINE", help="pass pipeline (default: the compiler's)")
    compile_.add_argument("--save", type=Path, metavar="DIR", help="save dumps, code and plan to DIR")
    compile_.add_argument("--must-fuse", metavar="A,B", help="node names that must end in one kernel")
    compile_.add_argument("--json", action="store_true",
                          help="print the plan as JSON (what plan.json holds) instead of the report")
    add_instrumentation_args(compile_)
    compile_.set_defaults(func=_cmd_compile)

    explain = commands.add_parser("explain", parents=[common],
                                  help="why each fusion was or wasn't made (the decision ledger)")
    explain.add_argument("model", metavar="MODEL", help="path/to/file.py:factory returning (model, inputs)")
    explain.add_argument("--target", required=True, metavar="T", help="target name or .yaml path")
    explain.add_argument("--passes", metavar="PIPELINE", help="pass pipeline (default: the compiler's)")
    explain.add_argument("--must-fuse", metavar="A,B", help="node names that must end in one kernel")
    explain.add_argument("--json", action="store_true", help="print the ledger as JSON")
    add_instrumentation_args(explain)
    explain.set_defaults(func=_cmd_explain)

    add_targets_parser(commands)
    add_experts_parser(commands)
    add_calibrate_parser(commands)
    add_explore_parser(commands)

    passes = commands.add_parser("passes", parents=[common], help="list the registered passes and their options")
    passes.set_defaults(func=_cmd_passes)
    return parser


def _is_parse_error(exc: BaseException) -> bool:
    parser = sys.modules.get("codesign.ir.parser")
    return parser is not None and isinstance(exc, parser.ParseError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `codesign` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `codesign opt ... | head` closed our stdout early
        return 0
    except _user_errors() as exc:
        if getattr(args, "traceback", False):
            raise
        # a ParseError already reads `file:line:col: error: ...`, as compilers print them
        message = str(exc) if _is_parse_error(exc) else f"codesign: error: {exc}"
        notes = "".join(f"\n  ({note})" for note in getattr(exc, "__notes__", ()))  # the pass it came from
        print(message + notes, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
