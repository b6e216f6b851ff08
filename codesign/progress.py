"""What a compile is doing while it runs: capture, each pass, the solves, code generation.

`codesign.compile(..., progress=p)` and the pass manager (`Instrumentation.progress`) wrap
each step in `p.step(description)`. The base `Progress` shows nothing, so a library call is
silent; `RichProgress` draws one line per step on stderr with rich — a spinner while the
step runs, its time once done — and is what `codesign compile` uses when stderr is a
terminal (not with `--quiet`, not when stderr is a file or a pipe). Nothing is written to
stdout, so `--json` and `--emit` output stay the same with or without it.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import Progress as _RichBar
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn


class Progress:
    """Told when each step of a compile starts and ends; this one shows nothing."""

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """Wrap one step (`with progress.step("capture"): ...`)."""
        yield

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class RichProgress(Progress):
    """One line per step on `console` (stderr by default): a spinner, the step, its time.

    Use as a context manager around the compile; steps left behind stay on screen with
    their times, so the user sees where the time went."""

    def __init__(self, console: Console | None = None):
        self.console = console if console is not None else Console(stderr=True)
        self._bar = _RichBar(SpinnerColumn(finished_text="✓"), TextColumn("{task.description}"),
                             TimeElapsedColumn(), console=self.console, transient=False)

    def __enter__(self) -> "RichProgress":
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self._bar.add_task(description, total=1)
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self._bar.update(task, completed=1, description=f"{description} ({seconds:.2f} s)")
            self._bar.stop_task(task)


def terminal_progress(quiet: bool = False) -> Progress:
    """`RichProgress` on stderr when it is a terminal and not `quiet`, else the silent one."""
    stream = sys.stderr
    if quiet or not (hasattr(stream, "isatty") and stream.isatty()):
        return Progress()
    return RichProgress(Console(file=stream))
