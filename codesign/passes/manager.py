"""The pass manager: runs a pipeline of passes over a graph, with mlir-opt style debugging.

Every arrow of the compiler pipeline is a named pass run by this one driver, so printing the
IR between passes, dumping re-parsable files, verifying after each pass, timing, stopping
early (`compile_to`) and resuming from a dump work the same for every pass. Passes receive
everything they may use through an explicit `PassContext`; there is no global state.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, TextIO

from codesign.cli_options import DEFAULT_PIPELINE, add_instrumentation_args  # noqa: F401  (re-exported)
from codesign.cli_options import name_list as _name_list
from codesign.ir.graph import Graph
from codesign.ir.printer import print_graph
from codesign.ir.verifier import VerifyError, verify
from codesign.passes.registry import PASSES, Pass, PipelineError, format_pipeline, parse_pipeline

if TYPE_CHECKING:
    from codesign.progress import Progress


# -- context -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """One choice a pass made and why (a fusion refused, a tile size picked, ...)."""

    pass_name: str
    subject: str
    choice: str
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)  # score parts, what-if times, ...


class Ledger:
    """Append-only record of decisions, handed to passes through the context (never global)."""

    def __init__(self) -> None:
        self._decisions: list[Decision] = []

    def record(self, pass_name: str, subject: str, choice: str, reason: str = "",
               **data: Any) -> Decision:
        decision = Decision(pass_name, subject, choice, reason, MappingProxyType(dict(data)))
        self._decisions.append(decision)
        return decision

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(self._decisions)

    def by_pass(self, pass_name: str) -> tuple[Decision, ...]:
        return tuple(d for d in self._decisions if d.pass_name == pass_name)

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.decisions)

    def __len__(self) -> int:
        return len(self._decisions)


@dataclass(frozen=True)
class PassContext:
    """What a pass may read besides the graph: the target, free-form options, the ledger.

    `target` is a `codesign.targets.Target` (or None for target-independent pipelines).
    """

    target: Any = None
    options: Mapping[str, object] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


class PassError(Exception):
    """A pass cannot do what was asked of it on this input: a user-facing failure (an option
    too tight for the graph, a plan that cannot be met), which the command line prints as one
    `codesign: error:` line. Any other exception a pass raises is a bug in codesign.

    The manager re-raises it with the pass that failed named: `pass_text` (the pass as the
    pipeline spells it, options included) and `index` (its 1-based position).
    """

    def __init__(self, message: str, pass_text: str | None = None, index: int | None = None):
        super().__init__(message)
        self.pass_text, self.index = pass_text, index


# -- instrumentation -----------------------------------------------------------------------
@dataclass(frozen=True)
class Instrumentation:
    """Debugging controls of a pipeline run (the `opt` / `compile` command-line flags).

    `print_ir_after_change` alone prints after every pass that changed the printed IR; with
    `print_ir_after` or `print_ir_after_all` it restricts those to passes that changed it.
    `compile_to` stops after the named pass, or after pass #N of the pipeline given as its
    number (an int, or a string of digits as the command line passes it; needed when a pass
    runs more than once). Output goes to `stream` (stderr when None). `progress`
    (`codesign.progress.Progress`) is told when each pass starts and ends.
    """

    print_ir_before: frozenset[str] = frozenset()
    print_ir_after: frozenset[str] = frozenset()
    print_ir_after_all: bool = False
    print_ir_after_change: bool = False
    dump_dir: Path | None = None
    verify_each: bool = True
    timing: bool = False
    compile_to: str | int | None = None
    stream: TextIO | None = field(default=None, compare=False)
    progress: Progress | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "print_ir_before", frozenset(self.print_ir_before))
        object.__setattr__(self, "print_ir_after", frozenset(self.print_ir_after))
        if self.dump_dir is not None:
            object.__setattr__(self, "dump_dir", Path(self.dump_dir))

    @property
    def out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def prints_after(self, pass_name: str) -> bool:
        """Whether the IR is printed after this pass (before the changed-IR filter)."""
        explicit = self.print_ir_after_all or bool(self.print_ir_after)
        return (self.print_ir_after_all or pass_name in self.print_ir_after
                or (self.print_ir_after_change and not explicit))


@dataclass(frozen=True)
class PassTiming:
    """Wall time of one pass (the pass's `run` only, not printing or verification)."""

    index: int
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


class PassVerifyError(VerifyError):
    """The IR fails verification between passes; the message names the pass that broke it.

    `pass_name` is None when the IR was already invalid before the first pass ran.
    """

    def __init__(self, pass_name: str | None, index: int, error: VerifyError):
        self.pass_name, self.index, self.diagnostics = pass_name, index, error.diagnostics
        if pass_name is None:
            where = "the input IR" if index == 0 else f"the IR resumed after pass #{index}"
            message = f"{where} is invalid before any pass runs: {error}"
        else:
            message = f"pass {pass_name!r} (#{index} of the pipeline) produced invalid IR: {error}"
        ValueError.__init__(self, message)


# -- dumps ---------------------------------------------------------------------------------
_DUMP_RE = re.compile(r"^(\d{2,})-([A-Za-z0-9_.-]+)\.csir$")
DUMP_SUFFIX = ".csir"


def dump_name(index: int, phase: str) -> str:
    """`02-dce.csir`: the graph after the pipeline's pass #2 (`00-input.csir` before any)."""
    return f"{index:02d}-{phase}{DUMP_SUFFIX}"


def parse_dump_name(path: str | Path) -> tuple[int, str] | None:
    """(index, phase) of a numbered dump file name, or None for any other file."""
    m = _DUMP_RE.match(Path(path).name)
    return (int(m.group(1)), m.group(2)) if m else None


def phase_of_dump(path: str | Path) -> str | None:
    """The phase a numbered dump was written after (`02-dce.csir` → `dce`); None otherwise."""
    parsed = parse_dump_name(path)
    return parsed[1] if parsed else None


# -- the manager ---------------------------------------------------------------------------
class PassManager:
    """Runs `passes` in order; `timings` holds the per-pass times of the last run."""

    def __init__(self, passes: Sequence[Pass] | str = DEFAULT_PIPELINE,
                 instrumentation: Instrumentation | None = None):
        self.passes: tuple[Pass, ...] = (parse_pipeline(passes) if isinstance(passes, str)
                                         else tuple(passes))
        self.instrumentation = instrumentation or Instrumentation()
        self.timings: tuple[PassTiming, ...] = ()
        self._check_names()

    @property
    def pipeline_text(self) -> str:
        return format_pipeline(self.passes)

    def _check_names(self) -> None:
        """Catch typos in `--print-ir-after X` and friends before running anything."""
        inst, known = self.instrumentation, {p.name for p in self.passes} | set(PASSES)
        for flag, names in (("print_ir_before", inst.print_ir_before),
                            ("print_ir_after", inst.print_ir_after)):
            for name in sorted(names - known):
                raise PipelineError(f"{flag}: unknown pass {name!r} (passes: {', '.join(sorted(known))})")
        if inst.compile_to is not None:
            self._position(inst.compile_to, "compile_to")

    def _position(self, phase: str | int, what: str) -> int:
        """1-based position of a pass in the pipeline, from a name (unique) or a number (an
        int, or a string of digits: pass names are identifiers, so the two never clash)."""
        names = [p.name for p in self.passes]
        listing = f"pipeline: {self.pipeline_text or '(empty)'}"
        if isinstance(phase, str) and phase.strip().isdigit():
            phase = int(phase)
        if isinstance(phase, int):
            if not 0 <= phase <= len(names):
                raise PipelineError(f"{what}: pass #{phase} is outside the pipeline ({listing})")
            return phase
        if phase == "input":
            return 0
        hits = [i + 1 for i, n in enumerate(names) if n == phase]
        if not hits:
            raise PipelineError(f"{what}: pass {phase!r} is not in the pipeline ({listing})")
        if len(hits) > 1:
            raise PipelineError(f"{what}: pass {phase!r} runs {len(hits)} times in the pipeline "
                                f"(at {', '.join(map(str, hits))}); give its number instead")
        return hits[0]

    def resume_position(self, dump: str | Path) -> int:
        """How many passes a numbered dump has already been through; checks its phase name."""
        parsed = parse_dump_name(dump)
        if parsed is None:
            raise PipelineError(f"{Path(dump).name} is not a numbered dump (like 02-dce.csir), "
                                f"so it does not say where to resume")
        index, phase = parsed
        expected = "input" if index == 0 else (
            self.passes[index - 1].name if index <= len(self.passes) else None)
        if expected != phase:
            raise PipelineError(f"{Path(dump).name} was written after {phase!r}, but pass #{index} "
                                f"of the pipeline is {expected!r} (pipeline: {self.pipeline_text})")
        return index

    def run(self, graph: Graph, ctx: PassContext | None = None, *,
            start_after: str | int | None = None) -> Graph:
        """Run the pipeline (after pass `start_after` when resuming) and return the result."""
        ctx = ctx if ctx is not None else PassContext()
        inst, out = self.instrumentation, self.instrumentation.out
        first = 0 if start_after is None else self._position(start_after, "start_after")
        last = len(self.passes) if inst.compile_to is None else self._position(inst.compile_to, "compile_to")
        if last < first:
            raise PipelineError(f"compile_to {inst.compile_to!r} comes before the resume point")
        if inst.verify_each:
            self._verify(graph, None, first)
        if inst.dump_dir is not None and first == 0:
            self._dump(graph, 0, "input")
        timings: list[PassTiming] = []
        for index in range(first + 1, last + 1):
            pass_ = self.passes[index - 1]
            before_text = print_graph(graph) if inst.print_ir_after_change else None
            if pass_.name in inst.print_ir_before:
                _print_ir(out, f"IR Dump Before {pass_.name}", graph)
            start = time.perf_counter()
            step = (inst.progress.step(f"pass {index}/{last} {pass_.name}: {pass_.summary.split(' (')[0]}")
                    if inst.progress is not None else nullcontext())
            try:
                with step:
                    result = pass_.run(graph, ctx)
            except PassError as exc:
                if exc.pass_text is not None:  # already named (a pass running a nested pipeline)
                    raise
                raise PassError(f"pass {pass_.pipeline_text()!r} (#{index} of the pipeline) failed: {exc}",
                                pass_.pipeline_text(), index) from exc
            except Exception as exc:
                if hasattr(exc, "add_note"):  # Python >= 3.11: name the pass in the traceback
                    exc.add_note(f"while running pass {pass_.pipeline_text()!r} (#{index} of the pipeline)")
                raise
            seconds = time.perf_counter() - start
            if not isinstance(result, Graph):
                raise TypeError(f"pass {pass_.name!r} returned {type(result).__name__}, not a Graph")
            timings.append(PassTiming(index, pass_.name, seconds, len(graph.nodes), len(result.nodes)))
            if inst.verify_each:
                self._verify(result, pass_, index)
            if inst.prints_after(pass_.name):
                if before_text is None or print_graph(result) != before_text:
                    _print_ir(out, f"IR Dump After {pass_.name}", result)
            if inst.dump_dir is not None:
                self._dump(result, index, pass_.name)
            graph = result
        self.timings = tuple(timings)
        if inst.timing:
            render_timings(self.timings, out)
        return graph

    def _verify(self, graph: Graph, pass_: Pass | None, index: int) -> None:
        try:
            verify(graph)
        except VerifyError as exc:
            raise PassVerifyError(pass_.name if pass_ else None, index, exc) from None

    def _dump(self, graph: Graph, index: int, phase: str) -> None:
        directory = self.instrumentation.dump_dir
        assert directory is not None
        directory.mkdir(parents=True, exist_ok=True)
        header = (f"// codesign dump #{index}: after {phase!r}; "
                  f"pipeline: {self.pipeline_text or '(empty)'}\n")
        (directory / dump_name(index, phase)).write_text(header + print_graph(graph))


def _print_ir(out: TextIO, title: str, graph: Graph) -> None:
    out.write(f"// -----// {title} //----- //\n{print_graph(graph)}\n")
    out.flush()


def render_timings(timings: Sequence[PassTiming], out: TextIO) -> None:
    """A rich table: pass, wall time, share of the total, node counts before and after."""
    from rich.console import Console
    from rich.table import Table

    total = sum(t.seconds for t in timings)
    table = Table(title="pass timing")
    table.add_column("#", justify="right")
    table.add_column("pass")
    table.add_column("time (ms)", justify="right")
    table.add_column("%", justify="right")
    table.add_column("nodes before", justify="right")
    table.add_column("nodes after", justify="right")
    for t in timings:
        share = 100.0 * t.seconds / total if total > 0 else 0.0
        table.add_row(str(t.index), t.name, f"{t.seconds * 1e3:.3f}", f"{share:.1f}",
                      str(t.nodes_before), str(t.nodes_after))
    table.add_section()
    table.add_row("", "total", f"{total * 1e3:.3f}", "100.0" if timings else "-",
                  str(timings[0].nodes_before) if timings else "-",
                  str(timings[-1].nodes_after) if timings else "-")
    Console(file=out, markup=False, highlight=False, soft_wrap=False, width=100).print(table)


def run_pipeline(graph: Graph, pipeline: str | Sequence[Pass] = DEFAULT_PIPELINE,
                 ctx: PassContext | None = None,
                 instrumentation: Instrumentation | None = None) -> Graph:
    """One-call form: `run_pipeline(graph, "canonicalize,dce")`."""
    return PassManager(pipeline, instrumentation).run(graph, ctx)


# -- command-line flags shared by `codesign opt` and `codesign compile` ----------------------
def instrumentation_from_args(args: argparse.Namespace, stream: TextIO | None = None) -> Instrumentation:
    """The `Instrumentation` the flags of `add_instrumentation_args` ask for."""
    return Instrumentation(
        print_ir_before=frozenset(n for text in args.print_ir_before for n in _name_list(text)),
        print_ir_after=frozenset(n for text in args.print_ir_after for n in _name_list(text)),
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after_change=args.print_ir_after_change,
        dump_dir=args.dump_dir,
        verify_each=args.verify_each,
        timing=args.timing,
        compile_to=args.compile_to,
        stream=stream,
    )
