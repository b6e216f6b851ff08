"""Placement of repeated layers (`codesign.placement.repeated`): the middle layers' tensors
tied to one layer's, a full plan checked like any other, and no slower than searching every
layer apart on a model small enough for both searches to finish."""

from __future__ import annotations

import pytest

import codesign
from codesign.ir.repeats import repetitions
from codesign.passes import PassContext, PassManager
from codesign.placement import evaluate, place
from codesign.placement.problem import build_problem
from codesign.placement.repeated import TEMPLATE, ties
from codesign.targets import load_target

pytest.importorskip("transformers")
from test_repeats import tiny_llama  # noqa: E402

PIPELINE = "canonicalize,dce,fuse,tile,map"


def _squeezed(fraction: float):
    """sn40l with an SRAM and HBM too small for every layer's weights: placement has choices."""
    target = load_target("sn40l")
    return target.model_copy(update={"memory": tuple(
        t.model_copy(update={"capacity": c}) for t, c in zip(target.memory, (2**16, int(fraction * 2**20), 10**12)))})


@pytest.fixture(scope="module")
def planned():
    model, inputs = tiny_llama(9)
    graph = codesign.capture(model, inputs).graph
    target = _squeezed(0.6)
    return PassManager(PIPELINE).run(graph, PassContext(target=target)), target


def test_middle_layers_are_tied_to_the_template_layer(planned):
    graph, target = planned
    problem = build_problem(graph, target)
    tied = ties(graph, problem)
    (rep,) = repetitions(graph)
    block_of = {graph.nodes[i].name: k for k, b in enumerate(rep.blocks) for i in range(b.start, b.stop)}
    template = {graph.nodes[i].name for i in range(rep.blocks[TEMPLATE].start, rep.blocks[TEMPLATE].stop)}
    tensors = {t.name: t for t in problem.tensors}
    assert tied and set(tied.values()) <= {t.name for t in problem.tensors}
    copies = {block_of[c] for c in tied if c in block_of}
    assert copies == set(range(TEMPLATE + 1, rep.count - 1))  # not the first layers, not the last
    assert any(tensors[c].state for c in tied)  # weights, by their path in the layer
    for copy, original in tied.items():
        assert original in template or tensors[original].state
        assert (tensors[copy].nbytes, tensors[copy].kind) == (tensors[original].nbytes, tensors[original].kind)


def test_tied_plan_is_valid_and_no_slower_than_searching_every_layer(planned):
    graph, target = planned
    problem = build_problem(graph, target)
    tied_plan = place(graph, target, time_limit=2.5, deterministic=True, repeat=True)
    free_plan = place(graph, target, time_limit=2.5, deterministic=True, repeat=False)
    assert {tier for p in tied_plan.tensors for tier, _ in p.shares} >= {"hbm", "ddr"}  # it had choices
    shares = {t.name: t.shares for t in tied_plan.tensors}
    assert all(shares[c] == shares[o] for c, o in ties(graph, problem).items())
    chunks = {t.name: {tier: round(f * problem.chunks(t)) for tier, f in shares[t.name]} for t in problem.tensors}
    ev = evaluate(problem, chunks)
    assert ev.feasible and ev.time == tied_plan.time
    assert all(u.peak_address <= u.capacity for u in tied_plan.tiers)
    assert tied_plan.time <= free_plan.time


def test_placement_is_deterministic_with_ties(planned):
    graph, target = planned
    a = place(graph, target, time_limit=1, deterministic=True)
    b = place(graph, target, time_limit=1, deterministic=True)
    assert (a.tensors, a.buffers, a.time) == (b.tensors, b.buffers, b.time)


_DUMP = """
import json, sys
sys.path.insert(0, {tests!r}); sys.path.insert(0, {examples!r})
import codesign
from codesign.ir import print_graph
from test_repeats import tiny_llama
model, inputs = tiny_llama(9)
for target in ("sn40l-node", "h100"):
    cm = codesign.compile(model, inputs, target=target)
    sys.stdout.write(cm.explain(as_json=True) + json.dumps(cm.summary(), indent=2, sort_keys=True) + print_graph(cm.graph))
"""


def test_reused_plans_are_byte_identical_under_any_hash_seed():
    """Fusion moved to the copies, placement with ties and the marked IR: the same bytes
    from one subprocess per PYTHONHASHSEED."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    here = Path(__file__).resolve().parent
    code = _DUMP.format(tests=str(here), examples=str(here.parent / "examples"))

    def start(seed):
        return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = [start(seed) for seed in (0, 1)]
    outs = [p.communicate(timeout=600) for p in runs]
    assert all(p.returncode == 0 for p in runs), [err.decode()[-2000:] for _, err in outs]
    assert b"// repeat model.model.layers." in outs[0][0]
    assert outs[0][0] == outs[1][0]


def test_a_gap_limit_stops_within_it_and_says_so(planned):
    """`place{gap=...}` (default 0.1%) lets CP-SAT stop once its plan is proven that close to
    the optimum: the plan is no worse than that, reports its proven gap, and does not call
    itself optimal (CP-SAT does)."""
    graph, target = planned
    exact = place(graph, target, time_limit=5, deterministic=True, gap=0.0)
    loose = place(graph, target, time_limit=5, deterministic=True, gap=0.2)
    assert exact.status in ("optimal", "feasible") and exact.gap is not None
    assert loose.gap is not None and loose.gap <= 0.2
    assert loose.time <= exact.time / (1 - 0.2) * (1 + 1e-9)
    assert loose.status.startswith("within gap") or loose.gap == 0.0
    assert exact.time <= loose.time * (1 + 1e-9)  # the exact search is never worse
