"""Fusion decided once per distinct layer (`codesign.fusion.repeated`): the groups and ledger
of a model with many equal layers are those of fusing every layer, byte for byte."""

from __future__ import annotations

from dataclasses import replace

import pytest

import codesign
from codesign.cost.model import CostModel
from codesign.fusion import repeated
from codesign.fusion.policy import FusionPolicy
from codesign.ir import print_graph
from codesign.passes import PassContext, PassManager
from codesign.passes import fuse as fuse_module
from codesign.targets import load_target

pytest.importorskip("transformers")
from test_repeats import tiny_llama, tiny_mixtral  # noqa: E402


@pytest.fixture(scope="module")
def graphs():
    cache = {}

    def get(kind: str, layers: int):
        if (kind, layers) not in cache:
            model, inputs = (tiny_llama if kind == "llama" else tiny_mixtral)(layers)
            graph = codesign.capture(model, inputs).graph
            cache[kind, layers] = PassManager("canonicalize,dce").run(graph, PassContext())
        return cache[kind, layers]
    return get


def _fused(graph, target: str, reuse: bool):
    ctx = PassContext(target=load_target(target), options={"reuse": reuse})
    out = PassManager("fuse").run(graph, ctx)
    return print_graph(out), [(d.subject, d.choice, d.reason, dict(d.data)) for d in ctx.ledger]


@pytest.mark.parametrize("kind,layers,target", [("llama", 9, "sn40l-node"), ("llama", 9, "h100"),
                                                ("mixtral", 8, "sn40l"), ("mixtral", 8, "h100")])
def test_reused_fusion_equals_fusing_every_layer(graphs, kind, layers, target, monkeypatch):
    """Streaming targets (one layer kernel per layer) and GPUs (groups joining one layer's
    residual add to the next layer's norm) alike; the shortened graph is what was fused."""
    graph = graphs(kind, layers)
    sizes = []
    decide = fuse_module.decide

    def counted(g, *args):
        sizes.append(len(g.nodes))
        return decide(g, *args)
    monkeypatch.setattr(fuse_module, "decide", counted)
    reused = _fused(graph, target, True)
    assert sizes and sizes[0] < len(graph.nodes)  # fused a shortened graph, and kept what it decided
    assert len(sizes) == 1
    assert reused == _fused(graph, target, False)
    assert any(d[1] == "fused" for d in reused[1])


def test_a_layer_not_yet_steady_fuses_the_whole_graph(graphs):
    """When the layer before the template, moved one layer on, does not decide what the
    template decides, the decisions are not applied to the copies."""
    graph = graphs("llama", 9)
    short = repeated.shorten(graph)
    target = load_target("sn40l-node")
    decided = fuse_module.decide(short.graph, CostModel(target), FusionPolicy(0.0, True), "fuse")
    assert short.expand(decided) is not None
    template = short.repetition.blocks[repeated.TEMPLATE]
    names = {n.name for n in short.graph.nodes[template.start:template.stop]}
    i = next(i for i, r in enumerate(decided.edges) if repeated._consumer(r.subject) in names)
    changed = list(decided.edges)
    changed[i] = replace(changed[i], reason=changed[i].reason + " (differs)")
    assert short.expand(replace(decided, edges=tuple(changed))) is None


def test_shift_moves_values_and_module_paths_one_layer_on(graphs):
    graph = graphs("llama", 9)
    short = repeated.shorten(graph)
    blocks = short.repetition.blocks
    a, b = graph.nodes[blocks[2].start + 3].name, graph.nodes[blocks[4].start + 3].name
    path, moved = blocks[2].path, blocks[4].path
    assert short.shift(f"%{a} -> %x in {path} and {path}0", 2) == f"%{b} -> %x in {moved} and {path}0"
    last = blocks[-1]
    assert short.shift(f"%{graph.nodes[last.start].name}", 1) == f"%{graph.nodes[last.start].name}"


def test_too_few_layers_are_fused_as_they_are(graphs):
    assert repeated.shorten(graphs("llama", repeated.KEEP)) is None


def test_compile_without_reuse_fuses_every_layer(graphs, monkeypatch):
    sizes = []
    decide = fuse_module.decide

    def counted(g, *args):
        sizes.append(len(g.nodes))
        return decide(g, *args)
    monkeypatch.setattr(fuse_module, "decide", counted)
    graph = graphs("llama", 9)
    PassManager("fuse{reuse=false}").run(graph, PassContext(target=load_target("sn40l")))
    assert sizes == [len(graph.nodes)]
