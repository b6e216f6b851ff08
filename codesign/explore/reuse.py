"""Run the analytic pipeline per variant, reusing each pass's result where the variant agrees
with an earlier one on every field that pass read.

The pipeline is a chain: pass k sees the graph (and ledger) pass k-1 left, and the target.
Each pass runs on a recording view of the target (`codesign.explore.reads`); its result is
stored under the state it started from together with the fields it read and their values.
A later variant whose state is the same and whose target has those values takes the stored
result instead of running the pass. Canonicalization (which reads no target field) thus runs
once per sweep; fusion and tiling run again only when a field they read changes; a sweep over
energy or price figures, which no pass reads, runs the pipeline once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from codesign.explore.reads import Reads, recording
from codesign.ir.graph import Graph
from codesign.ir.printer import print_graph
from codesign.ir.verifier import VerifyError, verify
from codesign.passes.manager import Decision, Instrumentation, Ledger, PassContext, PassManager, PassVerifyError
from codesign.passes.registry import Pass
from codesign.targets.schema import Target

__all__ = ["PassCache", "PassRun", "run_passes"]


class _RecordingLedger(Ledger):
    """The decisions earlier passes made, noting whether the running pass looked at them."""

    def __init__(self, decisions: Sequence[Decision]) -> None:
        super().__init__()
        self._decisions.extend(decisions)
        self.read = False

    @property
    def decisions(self) -> tuple[Decision, ...]:
        self.read = True
        return tuple(self._decisions)

    def by_pass(self, pass_name: str) -> tuple[Decision, ...]:
        self.read = True
        return tuple(d for d in self._decisions if d.pass_name == pass_name)

    def __len__(self) -> int:
        self.read = True
        return len(self._decisions)


@dataclass(frozen=True)
class PassRun:
    """One pass's stored result: what it returned and recorded, and what it read to do so:
    the target fields, and the earlier decisions when it looked at them."""

    decisions_in: tuple[Decision, ...] | None  # None: the pass did not read the ledger
    graph: Graph
    decisions: tuple[Decision, ...]
    reads: Reads

    def matches(self, decisions: tuple[Decision, ...], target: Target) -> bool:
        return (self.decisions_in is None or self.decisions_in == decisions) and self.reads.hold_for(target)


@dataclass
class PassCache:
    """Pass results by pipeline position and input graph. Graphs are interned by their
    printed text (which round-trips exactly), so two variants whose fusion came out the same
    hand the tiling one graph object, and a lookup compares identities, not whole graphs.
    `hits` / `runs` count per pass."""

    entries: dict[tuple[int, int], list[PassRun]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    graphs: dict[str, Graph] = field(default_factory=dict)  # printed-text hash -> the one graph object

    def intern(self, graph: Graph) -> Graph:
        if any(g is graph for g in self.graphs.values()):
            return graph
        key = hashlib.sha256(print_graph(graph).encode()).hexdigest()
        return self.graphs.setdefault(key, graph)

    def lookup(self, index: int, graph: Graph, decisions: tuple[Decision, ...], target: Target) -> PassRun | None:
        for run in self.entries.get((index, id(graph)), ()):
            if run.matches(decisions, target):
                return run
        return None

    def store(self, index: int, graph: Graph, run: PassRun) -> None:
        self.entries.setdefault((index, id(graph)), []).append(run)

    def read_by(self, passes: Sequence[Pass]) -> dict[str, list[str]]:
        """Per pass, the union of the fields its runs read: what it depends on, for reports."""
        out: dict[str, set[str]] = {}
        for (index, _), runs in sorted(self.entries.items()):
            out.setdefault(passes[index - 1].pipeline_text(), set()).update(p for r in runs for p in r.reads.paths())
        return {name: sorted(paths) for name, paths in out.items()}


def run_passes(graph: Graph, passes: Sequence[Pass], target: Target, options: Mapping[str, object] | None = None,
               cache: PassCache | None = None) -> tuple[Graph, tuple[Decision, ...]]:
    """The graph and decisions `passes` give for `target`; with `cache`, reusing stored runs
    whose inputs and reads `target` matches (the same result as running them, which the
    tests check)."""
    options = dict(options or {})
    if cache is None:
        ctx = PassContext(target=target, options=options)
        return PassManager(list(passes)).run(graph, ctx), tuple(ctx.ledger)
    decisions: tuple[Decision, ...] = ()
    graph = cache.intern(graph)
    for index, pass_ in enumerate(passes, start=1):
        name = pass_.pipeline_text()
        run = cache.lookup(index, graph, decisions, target)
        if run is not None:
            cache.hits[name] = cache.hits.get(name, 0) + 1
        else:
            reads, ledger = Reads(), _RecordingLedger(decisions)
            ctx = PassContext(target=recording(target, reads), options=options, ledger=ledger)
            # the whole pipeline's manager, resumed before pass #index and stopped after it, so
            # errors name the pass as compile() would; its input was checked as the last output
            manager = PassManager(list(passes), Instrumentation(compile_to=index, verify_each=False))
            result = manager.run(graph, ctx, start_after=index - 1)
            try:
                verify(result)
            except VerifyError as exc:
                raise PassVerifyError(pass_.name, index, exc) from None
            new = tuple(ledger._decisions[len(decisions):])
            run = PassRun(decisions if ledger.read else None, cache.intern(result), new, reads)
            cache.store(index, graph, run)
            cache.runs[name] = cache.runs.get(name, 0) + 1
        graph, decisions = run.graph, decisions + run.decisions
    return graph, decisions
