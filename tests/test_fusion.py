"""Fusion: the groups each target gets, and the ledger's reasons for what it refused."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import codesign
from codesign.fusion.capacity import fast_capacity, working_set
from codesign.fusion.legality import check_merge
from codesign.fusion.partition import Partition
from codesign.ir import parse_graph, print_graph, run_graph
from codesign.ir.kernels import kernels
from codesign.passes import PassContext, PassManager
from codesign.passes.fuse import FusionError
from codesign.targets import load_target
from codesign.targets.loader import bundled_target_path
from helpers import EXAMPLES, fresh_like, rel_err

PIPELINE = "canonicalize,dce,fuse"


@pytest.fixture(scope="module")
def captured():
    cache = {}

    def get(spec):
        if spec not in cache:
            model, inputs = codesign.load_factory(str(EXAMPLES / spec))
            cache[spec] = (model, inputs, codesign.capture(model, inputs))
        return cache[spec]
    return get


def fuse(graph, target):
    ctx = PassContext(target=load_target(target) if isinstance(target, str) else target)
    return PassManager(PIPELINE).run(graph, ctx), ctx.ledger


@pytest.mark.parametrize("spec,layers", [("gpt2.py:tiny", 2), ("llama.py:tiny", 2)])
def test_each_decoder_layer_is_one_group_on_sn40l(spec, layers, captured):
    model, inputs, cap = captured(spec)
    graph, ledger = fuse(cap.graph, "sn40l")
    layer_groups = [g for g in graph.groups if g.attrs["kind"] == "layer"]
    assert len(layer_groups) == layers
    # every attention and every linear/matmul of a layer sits in its layer's group
    for node in graph.nodes:
        in_block = node.loc is not None and (".layers." in node.loc or ".h." in node.loc)
        if in_block and node.op != "full":  # scalar constants are immediates, in no kernel
            assert graph.group_map()[node.group].attrs["kind"] == "layer", node.name
    streamed = [d for d in ledger if d.subject.startswith("layer ")]
    assert len(streamed) == layers and all(d.choice == "fused" for d in streamed)
    assert all(d.data["fused_time"] < d.data["separate_time"] for d in streamed)
    fresh = fresh_like(inputs, 11)
    with torch.no_grad():
        assert rel_err(run_graph(graph, fresh, cap.state)[0], model(*fresh)) <= 1e-5


@pytest.mark.parametrize("spec", ["gpt2.py:tiny", "llama.py:tiny"])
def test_h100_fuses_chains_epilogues_and_attention(spec, captured):
    _, _, cap = captured(spec)
    target = load_target("h100")
    graph, _ = fuse(cap.graph, target)
    groups = graph.group_map()
    nodes = graph.node_map()
    for node in graph.nodes:
        if node.op == "attention":
            assert groups[node.group].attrs["kind"] == "attention"
    # every pointwise op that reads a matmul's result is an epilogue in a matmul's kernel
    for node in graph.nodes:
        producers = [nodes[o] for o in node.operands if o in nodes and nodes[o].op in ("matmul", "linear")
                     and nodes[o].type.numel == node.type.numel]
        if producers and node.op in ("add", "mul", "gelu", "silu"):
            assert node.group is not None, node.name
            assert groups[node.group].attrs["kind"] in ("contraction", "norm_contraction"), node.name
    assert not [k for k in kernels(graph) if k.group is None and k.nodes[0].op in ("add", "mul", "tanh", "pow")]
    capacity = fast_capacity(target)
    for k in kernels(graph):
        assert working_set(graph, k, target).bytes <= capacity, k.key


def test_gpt2_mlp_chain_is_one_kernel_with_its_matmul(captured):
    _, _, cap = captured("gpt2.py:tiny")
    graph, _ = fuse(cap.graph, "h100")
    tanh = next(n for n in graph.nodes if n.op == "tanh")
    members = Counter(n.op for n in graph.nodes if n.group == tanh.group)
    assert members["matmul"] == 1 and members["tanh"] == 1 and members["pow"] == 1


CYCLE_IR = """graph @cycle(%x: f32[8,16], %router: f32[4,16] param, %gu: f32[4,32,16] param, %down: f32[4,16,16] param) -> (f32[8,16]) {
  %a = exp(%x) : f32[8,16]
  %m = moe(%a, %router, %gu, %down) {num_experts = 4, normalize = true, top_k = 2} : f32[8,16] ({
    graph @expert(%t: f32[8,16], %w0: f32[32,16], %w1: f32[16,16]) -> (f32[8,16]) {
      %h = linear(%t, %w0) : f32[8,32]
      %g = slice(%h) {dim = 1, end = 16, start = 0, step = 1} : f32[8,16]
      %u = slice(%h) {dim = 1, end = 32, start = 16, step = 1} : f32[8,16]
      %s = silu(%g) : f32[8,16]
      %p = mul(%s, %u) : f32[8,16]
      %o = linear(%p, %w1) : f32[8,16]
      return %o
    }
  })
  %b = add(%a, %m) : f32[8,16]
  return %b
}
"""


def test_ledger_names_a_cycle():
    graph = parse_graph(CYCLE_IR)
    fused, ledger = fuse(graph, "h100")
    by_subject = {d.subject: d for d in ledger}
    assert by_subject["%a -> %b"].choice == "refused"
    assert by_subject["%a -> %b"].data["rule"] == "cycle"
    assert "%a -> %m -> %b" in by_subject["%a -> %b"].reason
    assert by_subject["%a -> %m"].data["rule"] == "region-op"
    verdict = check_merge(Partition(graph), "a", "b")
    assert not verdict.legal and verdict.rule == "cycle"


def test_ledger_names_an_sram_overflow(captured, tmp_path):
    _, _, cap = captured("gpt2.py:tiny")
    text = bundled_target_path("sn40l").read_text().replace("520 MiB", "64 KiB")
    path = tmp_path / "small-sram.yaml"
    path.write_text(text)
    graph, ledger = fuse(cap.graph, load_target(path))
    layers = [d for d in ledger if d.subject.startswith("layer ")]
    assert layers and all(d.choice == "refused" and d.data["rule"] == "capacity" for d in layers)
    assert "stage buffers need" in layers[0].reason
    assert not [g for g in graph.groups if g.attrs["kind"] == "layer"]
    assert any(d.data.get("rule") == "capacity" for d in ledger if not d.subject.startswith("layer "))


# a prologue recomputed for every column tile of a very wide, compute-bound matmul
SLOWDOWN_IR = """graph @prologue(%x: bf16[1024,1024], %w: bf16[65536,1024] param) -> (bf16[1024,65536]) {
  %g = gelu(%x) {approximate = "none"} : bf16[1024,1024]
  %y = linear(%g, %w) : bf16[1024,65536]
  return %y
}
"""


def test_ledger_names_a_slowdown():
    graph, ledger = fuse(parse_graph(SLOWDOWN_IR), "h100")
    (decision,) = [d for d in ledger if d.subject == "%g -> %y"]
    assert decision.choice == "refused" and decision.data["rule"] == "slowdown"
    assert decision.data["fused_time"] > decision.data["separate_time"]
    assert not graph.groups


def test_must_fuse_fails_with_the_ledgers_reason():
    graph = parse_graph(SLOWDOWN_IR)
    ctx = PassContext(target=load_target("h100"), options={"must_fuse": ("g", "y")})
    with pytest.raises(FusionError, match="rule 'slowdown'"):
        PassManager(PIPELINE).run(graph, ctx)


def test_fusion_is_deterministic(captured):
    _, _, cap = captured("llama.py:tiny")
    a, la = fuse(cap.graph, "h100")
    b, lb = fuse(cap.graph, "h100")
    assert print_graph(a) == print_graph(b)
    assert [(d.subject, d.choice, d.reason) for d in la] == [(d.subject, d.choice, d.reason) for d in lb]


def test_fused_ir_prints_groups_and_round_trips():
    text = """graph @chain(%x: f32[64,64], %w: f32[64,64] param, %b: f32[64] param) -> (f32[64,64]) {
  %y = linear(%x, %w, %b) : f32[64,64]
  %r = relu(%y) : f32[64,64]
  %e = exp(%r) : f32[64,64]
  return %e
}
"""
    graph, _ = fuse(parse_graph(text), "h100")
    printed = print_graph(graph)
    assert 'group 0 {anchor = "y", kind = "contraction"}' in printed
    assert all(f"group(0)" in line for line in printed.splitlines() if line.strip().startswith(("%y", "%r", "%e")))
    assert parse_graph(printed) == graph


class _CrossedMatmuls(torch.nn.Module):
    """Two merges that each look legal alone, but together would close a cycle."""

    def forward(self, a, b):
        z, x = torch.relu(a), torch.sigmoid(b)
        return z @ x, x @ z


@pytest.mark.parametrize("target", ["cpu-host", "sn40l", "h100"])
def test_greedy_fusion_rechecks_cycles_as_groups_grow(target):
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    cap = codesign.capture(_CrossedMatmuls(), (a, b))
    graph, ledger = fuse(cap.graph, target)
    out = run_graph(graph, [a, b], cap.state)
    ref = _CrossedMatmuls()(a, b)
    assert all(rel_err(o, r) <= 1e-6 for o, r in zip(out, ref))


class _Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(),
                                            torch.nn.Linear(64, 64), torch.nn.GELU())

    def forward(self, x):
        return self.features(x)


def test_sequential_entries_are_not_layer_blocks():
    cap = codesign.capture(_Stack(), (torch.randn(8, 64),))
    graph, ledger = fuse(cap.graph, "sn40l")
    assert not any(d.data.get("rule") == "layer-boundary" for d in ledger)
    assert len([k for k in kernels(graph) if k.nodes[0].op != "full"]) == 2  # linear+gelu, twice


def test_must_fuse_needs_the_fuse_pass():
    model, inputs = codesign.load_factory(str(EXAMPLES / "mlp.py:tiny"))
    with pytest.raises(ValueError, match="needs the fuse pass"):
        codesign.compile(model, inputs, target="h100", pipeline="canonicalize", must_fuse=["linear"])


@pytest.mark.parametrize("target", ["h100", "sn40l", "cpu-host"])
def test_tile_pass_tiles_every_contraction_group(target, captured):
    _, _, cap = captured("gpt2.py:tiny")
    ctx = PassContext(target=load_target(target))
    graph = PassManager("canonicalize,dce,fuse,tile").run(cap.graph, ctx)
    fast = load_target(target).memory[0].name
    nodes = graph.node_map()
    for group in graph.groups:
        anchor = nodes[group.attrs["anchor"]] if "anchor" in group.attrs else None
        if anchor is not None and anchor.op in ("linear", "matmul", "attention"):
            assert f"tile_{fast}" in group.attrs, (group.id, dict(group.attrs))
            assert group.attrs[f"ratio_{fast}"] >= 1.0 - 1e-9  # never below the I/O lower bound
    assert not [d for d in ctx.ledger.by_pass("tile") if d.choice == "untiled"]


def test_streams_layers_not_kind_decides_layer_streaming(captured, tmp_path):
    _, _, cap = captured("gpt2.py:tiny")
    text = bundled_target_path("sn40l").read_text()
    assert "streams_layers: true" in text and "kind: dataflow" in text

    def layers(old, new):
        path = tmp_path / f"{new.split(':')[0]}.yaml"
        path.write_text(text.replace(old, new))
        graph, ledger = fuse(cap.graph, load_target(path))
        return ([g for g in graph.groups if g.plan.is_layer],
                [d for d in ledger if d.subject.startswith("layer ")])
    groups, streamed = layers("kind: dataflow", "kind: gpu")  # a "gpu" that streams layers
    assert len(groups) == 2 and len(streamed) == 2
    groups, streamed = layers("streams_layers: true", "streams_layers: false")  # a dataflow chip that does not
    assert not groups and not streamed
    assert not [g for g in fuse(cap.graph, "h100")[0].groups if g.plan.is_layer]


# -- determinism: the same bytes under any PYTHONHASHSEED ---------------------------------

# groups %m0..%m5 (moe nodes stay alone) each lie on a path %a -> %mi -> %s0 -> ... -> %b:
# which one the cycle rule names must not depend on set iteration order
_EXPERT = CYCLE_IR[CYCLE_IR.index("({"):CYCLE_IR.index("})") + 2]
MANY_PATHS_IR = (
    "graph @paths(%x: f32[8,16], %router: f32[4,16] param, %gu: f32[4,32,16] param, "
    "%down: f32[4,16,16] param) -> (f32[8,16]) {\n  %a = exp(%x) : f32[8,16]\n"
    + "".join(f"  %m{i} = moe(%a, %router, %gu, %down) {{num_experts = 4, normalize = true, top_k = 2}} "
              f": f32[8,16] {_EXPERT}\n" for i in range(6))
    + "  %s0 = add(%m0, %m1) : f32[8,16]\n"
    + "".join(f"  %s{i} = add(%s{i - 1}, %m{i + 1}) : f32[8,16]\n" for i in range(1, 5))
    + "  %b = add(%a, %s4) : f32[8,16]\n  return %b\n}\n")

_DUMP = f"""
import json, sys
import codesign
from codesign.explain import render_ledger
from codesign.ir import parse_graph, print_graph
from codesign.passes import PassContext, PassManager
from codesign.targets import load_target
model, inputs = codesign.load_factory({str(EXAMPLES / "gpt2.py:tiny")!r})
cap = codesign.capture(model, inputs)
for target in ("sn40l", "h100"):
    cm = codesign.compile(cap, target=target)
    for text in (cm.explain(as_json=True), cm.explain(), json.dumps(cm.summary(), indent=2, sort_keys=True),
                 print_graph(cm.graph), cm.report()):
        sys.stdout.write(text + "\\n")
ctx = PassContext(target=load_target("h100"))
graph = PassManager("canonicalize,dce,fuse").run(parse_graph({MANY_PATHS_IR!r}), ctx)
sys.stdout.write(render_ledger(ctx.ledger, as_json=True) + print_graph(graph))
"""


def test_outputs_are_byte_identical_under_any_hash_seed():
    """Ledger (JSON and table), plan.json, fused IR and report of GPT-2 tiny on two targets,
    and a ledger that names a cycle among many, from one subprocess per PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    def start(seed):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        return subprocess.Popen([sys.executable, "-c", _DUMP], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    runs = [start(seed) for seed in (0, 1, 2)]
    outs = [p.communicate(timeout=600) for p in runs]
    assert all(p.returncode == 0 for p in runs), [err.decode()[-2000:] for _, err in outs]
    first = outs[0][0]
    assert b"rule 'cycle': merging would close the path %a -> %m0 -> %s0" in first
    for out, _ in outs[1:]:
        assert out == first


def test_cycle_path_is_the_earliest():
    _, ledger = fuse(parse_graph(MANY_PATHS_IR), "h100")
    (decision,) = [d for d in ledger if d.subject == "%a -> %b"]
    assert decision.data["rule"] == "cycle" and "%a -> %m0 -> %s0 " in decision.reason


# -- the greedy loop's cost: kept sums, exact, and n log n work on a chain ----------------

def _chain(n: int, shape: str = "64,64") -> str:
    ops = ("exp", "tanh", "neg", "relu", "sigmoid")
    lines = [f"  %v{i} = {ops[i % len(ops)]}(%{'x' if i == 0 else f'v{i - 1}'}) : f32[{shape}]" for i in range(n)]
    return f"graph @chain(%x: f32[{shape}]) -> (f32[{shape}]) {{\n" + "\n".join(lines) + f"\n  return %v{n - 1}\n}}\n"


def _checked_costs(monkeypatch):
    """Make every pointwise figure the fusion pass reads be checked against the cost model."""
    from codesign.passes import fuse as fuse_module
    checked = []
    candidate, group = fuse_module._Costs.candidate, fuse_module._Costs.group

    def checked_candidate(self, a, b):
        figures, ws, sums = candidate(self, a, b)
        if sums is not None:
            assert (figures, ws) == self.exact(a, b), (a, b)
            checked.append((a, b))
        return figures, ws, sums

    def checked_group(self, key):
        figures = group(self, key)
        assert figures == self.exact_group(key), key
        return figures
    monkeypatch.setattr(fuse_module._Costs, "candidate", checked_candidate)
    monkeypatch.setattr(fuse_module._Costs, "group", checked_group)
    return checked


@pytest.mark.parametrize("target", ["h100", "sn40l", "cpu-host"])
def test_pointwise_sums_equal_the_cost_model(target, captured, monkeypatch):
    checked = _checked_costs(monkeypatch)
    for spec in ("gpt2.py:tiny", "cnn.py:tiny"):
        fuse(captured(spec)[2].graph, target)
    fuse(parse_graph(MANY_PATHS_IR), target)
    fuse(parse_graph(_chain(300, "16,16")), target)
    broadcast = """graph @bcast(%x: f32[32,64], %y: f16[64], %s: f32[32,1]) -> (f32[32,64], f32[32,64]) {
  %c = cast(%y) {dtype = "f32"} : f32[64]
  %a = add(%x, %c) : f32[32,64]
  %m = mul(%a, %s) : f32[32,64]
  %t = tanh(%m) : f32[32,64]
  %u = mul(%t, %a) : f32[32,64]
  return %u, %m
}
"""
    fuse(parse_graph(broadcast), target)
    assert len(checked) > 50


def test_long_pointwise_chain_fuses_in_n_log_n_work(monkeypatch):
    """A 2000-op chain on the SN40L (one group in the end): no kernel is priced by the cost
    model, and the compute sums add up about n log n terms, not n^2 / 2."""
    import math

    from codesign.cost.model import CostModel
    from codesign.fusion.policy import FusionPolicy
    from codesign.passes import fuse as fuse_module
    costs = []
    init = fuse_module._Costs.__init__

    def keep(self, *args):
        init(self, *args)
        costs.append(self)
    monkeypatch.setattr(fuse_module._Costs, "__init__", keep)
    monkeypatch.setattr(CostModel, "kernel_cost", lambda *a, **k: pytest.fail("priced by the cost model"))
    n = 2000
    part, evaluations = fuse_module.greedy_fuse(parse_graph(_chain(n)), CostModel(load_target("sn40l")),
                                                FusionPolicy())
    assert len(part.groups()) == 1 and len(evaluations) == n - 1
    assert costs[0].pointwise.folded <= 4 * n * math.log2(n) < n * n / 8


# -- cycle checks: the bitset answer agrees with the walk, and deferred paths are exact ----

_CYCLE_CASES = ("mixtral_moe.py:tiny_model", "llama.py:tiny", "gpt2.py:tiny")


def test_closes_cycle_agrees_with_the_walk(captured, monkeypatch):
    """Every cycle question fusion asks, on models with cycles it refuses, is answered by
    `closes_cycle` (node reachability first) as the group-by-group walk answers it."""
    answers = []
    closes = Partition.closes_cycle

    def checked(self, a, b):
        answer = closes(self, a, b)
        assert answer == (self.would_cycle(a, b) is not None), (a, b)
        answers.append(answer)
        return answer
    monkeypatch.setattr(Partition, "closes_cycle", checked)
    for spec in _CYCLE_CASES:
        for target in ("sn40l", "h100"):
            fuse(captured(spec)[2].graph, target)
    fuse(parse_graph(MANY_PATHS_IR), "h100")
    fuse(parse_graph(CYCLE_IR), "h100")
    assert answers.count(True) > 10 and answers.count(False) > 100


def test_deferred_cycle_paths_equal_the_paths_found_at_once(captured, monkeypatch):
    """The greedy loop refuses cycles without their paths and finds the kept ones afterwards
    by replaying its merges: the evaluations equal those of finding each path at once."""
    from codesign.cost.model import CostModel
    from codesign.fusion import legality
    from codesign.fusion.policy import FusionPolicy
    from codesign.passes import fuse as fuse_module

    graphs = [(PassManager("canonicalize,dce").run(captured(spec)[2].graph, PassContext()), target)
              for spec in _CYCLE_CASES for target in ("sn40l", "h100")]
    graphs += [(parse_graph(MANY_PATHS_IR), "h100"), (parse_graph(CYCLE_IR), "h100")]

    def run(graph, target):
        t = load_target(target)
        return fuse_module.greedy_fuse(graph, CostModel(t), FusionPolicy(0.0, t.streams_layers))[1]
    deferred = [run(g, t) for g, t in graphs]
    eager = legality.check_merge
    monkeypatch.setattr(fuse_module, "check_merge", lambda part, a, b, path=True: eager(part, a, b))
    monkeypatch.setattr(fuse_module, "_cycle_paths", lambda *args: {})
    at_once = [run(g, t) for g, t in graphs]
    assert deferred == at_once
    kept = [ev for evs in deferred for ev in evs.values() if ev.decision == "refused" and ev.verdict.rule == "cycle"]
    assert len(kept) >= 3 and all(ev.verdict.detail.startswith("merging would close the path %") for ev in kept)


@pytest.mark.parametrize("target", ["sn40l", "h100"])
def test_kernels_priced_once_per_structure_decide_as_priced_each(target, captured, monkeypatch):
    """The fusion pass remembers priced kernels by structure (`kernel_signature`): on a
    model with equal layers its IR and ledger equal those of pricing every kernel, with
    fewer calls to the cost model."""
    from codesign.cost.model import CostModel
    from codesign.passes import fuse as fuse_module
    calls = []
    price = CostModel.kernel_cost

    def counted(self, *args, **kwargs):
        calls.append(1)
        return price(self, *args, **kwargs)
    monkeypatch.setattr(CostModel, "kernel_cost", counted)
    graph = captured("llama.py:tiny")[2].graph

    def run():
        calls.clear()
        fused, ledger = fuse(graph, target)
        return print_graph(fused), [(d.subject, d.choice, d.reason, dict(d.data)) for d in ledger], len(calls)
    remembered = run()
    init = fuse_module._Costs.__init__

    def forgetful(self, *args):
        init(self, *args)
        self.by_structure = None
    monkeypatch.setattr(fuse_module._Costs, "__init__", forgetful)
    each = run()
    assert remembered[:2] == each[:2]
    assert remembered[2] < each[2]


def test_plans_equal_those_of_the_unshortened_fusion(captured, monkeypatch):
    """compile() end to end (fuse, tile, map, place) on models with equal layers and cycles
    it refuses: the IR, the ledger and the placement plan equal those of a fusion pass that
    prices every kernel and finds every cycle's path at once (the old behaviour)."""
    from codesign.fusion import legality
    from codesign.passes import fuse as fuse_module

    def plan(spec, target):
        cm = codesign.compile(captured(spec)[2], target=target)
        ledger = [(d.pass_name, d.subject, d.choice, d.reason, {k: v for k, v in d.data.items() if k != "plan"})
                  for d in cm.ledger]
        return print_graph(cm.graph), ledger, cm.summary()["placement"]
    cases = [("llama.py:tiny", "sn40l-node"), ("mixtral_moe.py:tiny_model", "sn40l")]
    shortened = [plan(*case) for case in cases]
    eager = legality.check_merge
    monkeypatch.setattr(fuse_module, "check_merge", lambda part, a, b, path=True: eager(part, a, b))
    monkeypatch.setattr(fuse_module, "_cycle_paths", lambda *args: {})
    init = fuse_module._Costs.__init__

    def forgetful(self, *args):
        init(self, *args)
        self.by_structure = None
    monkeypatch.setattr(fuse_module._Costs, "__init__", forgetful)
    assert [plan(*case) for case in cases] == shortened
    assert all(s[2]["tensors"] for s in shortened)
