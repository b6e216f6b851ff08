"""Repeated layers: structural hashing in the IR, capture that traces three layers and stamps
out the rest, and plans identical with reuse on and off."""

import sys
from pathlib import Path

import pytest
import torch

import codesign
from codesign.frontend.repeat import PREFIX, same_layers
from codesign.ir.printer import print_graph
from codesign.ir.repeats import distinct_blocks, repetitions, signature

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
transformers = pytest.importorskip("transformers")


def tiny_llama(layers: int):
    from hf_causal_lm import LogitsOnly
    config = transformers.LlamaConfig(num_hidden_layers=layers, hidden_size=64, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                      use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LogitsOnly(transformers.LlamaForCausalLM(config)).eval(), (torch.zeros(1, 8, dtype=torch.int64),)


def tiny_mixtral(layers: int):
    from hf_causal_lm import LogitsOnly
    config = transformers.MixtralConfig(num_hidden_layers=layers, hidden_size=64, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=96, vocab_size=100,
                                        num_local_experts=4, num_experts_per_tok=2, use_cache=False,
                                        attn_implementation="sdpa")
    torch.manual_seed(0)
    return LogitsOnly(transformers.MixtralForCausalLM(config)).eval(), (torch.zeros(1, 8, dtype=torch.int64),)


@pytest.fixture(scope="module")
def llama4():
    model, inputs = tiny_llama(4)
    return model, inputs, codesign.capture(model, inputs, reuse=True), codesign.capture(model, inputs, reuse=False)


def test_stamped_capture_is_the_full_capture_name_for_name(llama4):
    model, inputs, reused, full = llama4
    assert print_graph(reused.graph) == print_graph(full.graph)
    assert list(reused.state) == list(full.state)
    assert all(reused.state[k] is full.state[k] for k in full.state)  # the module's own tensors


def test_stamped_capture_computes_what_eager_does(llama4):
    model, inputs, reused, _ = llama4
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(reused.run(*inputs)[0], want, rtol=1e-5, atol=1e-5)


def test_moe_layers_stamp_out_too():
    model, inputs = tiny_mixtral(5)
    assert print_graph(codesign.capture(model, inputs).graph) == \
        print_graph(codesign.capture(model, inputs, reuse=False).graph)


def test_layers_that_differ_are_not_reused():
    model, _ = tiny_llama(PREFIX + 2)
    layers = list(model.model.model.layers)
    assert same_layers(layers)  # layer_idx differs, but it is each layer's index
    layers[3].self_attn.scaling = 0.5  # a plain attribute that changes what layer 3 computes
    assert not same_layers(layers)
    layers[3].self_attn.scaling = layers[0].self_attn.scaling
    layers[4].register_forward_hook(lambda *a: None)
    assert not same_layers(layers)


def test_signature_finds_the_decoder_layer_once(llama4):
    graph = llama4[3].graph
    runs = repetitions(graph)
    assert [(r.container, r.count) for r in runs] == [("model.model.layers", 4)]
    b = runs[0].blocks
    assert signature(graph, b[2], b[1]) == signature(graph, b[3], b[2])
    # layer 0 reads the embedding, the others their predecessor: two distinct signatures
    assert sorted(len(v) for v in distinct_blocks(graph).values()) == [1, 3]


def test_signature_sees_a_changed_attribute(llama4):
    from dataclasses import replace
    graph = llama4[3].graph
    b = repetitions(graph)[0].blocks
    i = next(i for i in range(b[3].start, b[3].stop) if graph.nodes[i].op == "attention")
    node = graph.nodes[i]
    changed = replace(graph, nodes=graph.nodes[:i] + (node.with_(attrs={**node.attrs, "causal": False}),)
                      + graph.nodes[i + 1:])
    assert signature(changed, b[2], b[1]) != signature(changed, b[3], b[2])


def test_plans_are_identical_with_reuse_on_and_off(llama4):
    model, inputs, _, _ = llama4
    on = codesign.compile(model, inputs, target="sn40l-node", reuse=True)
    off = codesign.compile(model, inputs, target="sn40l-node", reuse=False)
    assert print_graph(on.graph) == print_graph(off.graph)
    assert on.summary() == off.summary()
    assert _timeless(on.ledger) == _timeless(off.ledger)


def _timeless(ledger) -> list:
    """The ledger without the placement's wall-clock solve time (the one figure that varies)."""
    from dataclasses import replace
    out = []
    for d in ledger:
        data = dict(d.data)
        if hasattr(data.get("plan"), "solve_seconds"):
            data["plan"] = replace(data["plan"], solve_seconds=0.0)
        out.append((d.pass_name, d.subject, d.choice, d.reason, data))
    return out


# -- the printed IR marks the repetition ------------------------------------------------------
def _marks(text: str) -> list[tuple[str, str]]:
    """(mark, the line after it) for every `// repeat` comment of a printed graph."""
    lines = text.splitlines()
    return [(line.strip(), lines[i + 1].strip()) for i, line in enumerate(lines) if line.strip().startswith("// repeat")]


@pytest.mark.parametrize("stage", ["captured", "compiled"])
def test_printed_ir_marks_the_repeated_layers_and_round_trips(llama4, stage):
    """Captured, and after every pass (groups, tiles, the dataflow mapping naming its stages,
    tiers): one mark before the first node of the run, naming its blocks; the text parses back
    to the same graph and prints to the same bytes; without the marks (an old file) it parses
    to the same graph too."""
    from codesign.ir.parser import parse_graph
    model, inputs, captured, _ = llama4
    graph = captured.graph if stage == "captured" else codesign.compile(model, inputs, target="sn40l").graph
    text = print_graph(graph)
    (run,) = repetitions(graph)
    first, last = run.blocks[0], run.blocks[-1]
    ((mark, after),) = _marks(text)
    assert mark == (f"// repeat {first.path}..{last.index}: {run.count} blocks of {len(first)} nodes, "
                    f"each the structure of {first.path}")
    assert after.startswith(f"%{graph.nodes[first.start].name} = ")
    assert run.count >= 3
    assert parse_graph(text) == graph
    assert print_graph(parse_graph(text)) == text
    old = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//")) + "\n"
    assert parse_graph(old) == graph


def test_a_changed_layer_ends_the_marked_run(llama4):
    from dataclasses import replace
    graph = llama4[3].graph
    b = repetitions(graph)[0].blocks
    i = next(i for i in range(b[2].start, b[2].stop) if graph.nodes[i].op == "attention")
    node = graph.nodes[i]
    changed = replace(graph, nodes=graph.nodes[:i] + (node.with_(attrs={**node.attrs, "causal": False}),)
                      + graph.nodes[i + 1:])
    marks = [m for m, _ in _marks(print_graph(changed))]
    assert marks == [f"// repeat {b[0].path}..{b[1].index}: 2 blocks of {len(b[0])} nodes, each the structure of "
                     f"{b[0].path}"]
