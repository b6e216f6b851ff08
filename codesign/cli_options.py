"""Command-line flags shared by `codesign opt`, `compile` and `explain`: the pass manager's
instrumentation and its default pipeline.

Kept apart from `codesign.passes` (whose import registers every pass and loads torch and the
solvers) so that building the command line's parser costs nothing: `codesign --help` and
the target and expert commands start without torch. `passes.manager` re-exports these.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_PIPELINE = "canonicalize,dce"
"""The pipeline `codesign opt` and `PassManager` run when none is given."""


def name_list(text: str) -> list[str]:
    """The names of a comma-separated flag value, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()]


def add_instrumentation_args(parser: argparse.ArgumentParser) -> None:
    """Add the pass-debugging flags (`--print-ir-after-change`, `--dump-dir`, ...)."""
    group = parser.add_argument_group("pass instrumentation")
    group.add_argument("--print-ir-before", metavar="PASS", action="append", default=[],
                       help="print the IR before PASS (repeatable, or comma-separated)")
    group.add_argument("--print-ir-after", metavar="PASS", action="append", default=[],
                       help="print the IR after PASS (repeatable, or comma-separated)")
    group.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    group.add_argument("--print-ir-after-change", action="store_true",
                       help="print the IR after a pass only when the pass changed it")
    group.add_argument("--dump-dir", metavar="DIR", type=Path,
                       help="write the IR before and after every pass as DIR/NN-PASS.csir")
    group.add_argument("--verify-each", action=argparse.BooleanOptionalAction, default=True,
                       help="verify the IR after every pass (default: on)")
    group.add_argument("--timing", action="store_true", help="print a table of per-pass wall times")
    group.add_argument("--compile-to", metavar="PASS",
                       help="stop after PASS (its name, or its number in the pipeline: 1 is the first pass)")
