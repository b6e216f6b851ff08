"""Capture a model of repeated layers by tracing a few of them.

torch.export traces every decoder layer of an 80-layer model anew, and most of a frontier
model's capture time is spent there. When a model's longest `ModuleList` holds layers that
are the same module on different weights (same classes, parameter and buffer shapes, and
attributes, but for an attribute that is the layer's own index), `capture` exports the model
with only its first `PREFIX` layers, checks in the IR that layers 1 and 2 are the same
computation (`codesign.ir.repeats.signature`) with value names whose counters advance by
a fixed stride per layer, and stamps out the remaining layers: layer i is layer 2 with its
weights renamed to layer i's and every counter moved on by (i - 2) strides; what follows
the layers moves on by (N - PREFIX) strides. The result is the graph a full capture gives,
name for name (tests compare the printed IR). Anything the checks cannot vouch for — hooks,
layers that differ, a forward that indexes past the prefix, names that do not stride —
returns None, and the caller captures the whole model.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

import torch

from codesign.ir.graph import Graph, Input, Node
from codesign.ir.repeats import Block, blocks, signature

PREFIX = 3
"""Layers traced: the first (it may read other outside values), and two to compare."""

_COUNTER = re.compile(r"^(?P<base>[A-Za-z]\w*?)(?:_(?P<num>\d+))?(?P<tail>(?:_[A-Za-z]\w*)?)$")
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_state_dict_hooks", "_load_state_dict_pre_hooks")


def repeated_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """The path and list of the model's longest `ModuleList` of more than `PREFIX` identical
    layers (`same_layers`), if any."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > PREFIX and path:
            if (best is None or len(module) > len(best[1])) and same_layers(list(module)):
                best = (path, module)
    return best


def same_layers(layers: list[torch.nn.Module]) -> bool:
    """Whether every layer is the first one on other weights: the same module tree (classes,
    parameter and buffer names, shapes, dtypes), no hooks, and equal plain attributes — an
    integer attribute may differ only by being each layer's own index (HF's `layer_idx`)."""
    described = [_describe(layer) for layer in layers]
    first = described[0]
    for index, other in enumerate(described[1:], start=1):
        if other.keys() != first.keys():
            return False
        for key, value in other.items():
            if value != first[key] and not (key[1] == "attr" and value == ("int", index) and first[key] == ("int", 0)):
                return False
    return True


def _describe(layer: torch.nn.Module) -> dict[tuple, object] | dict:
    table: dict[tuple, object] = {}
    for path, module in layer.named_modules():
        if any(getattr(module, h, None) for h in _HOOKS):
            return {("hooks", path): object()}  # equal to nothing: never reused
        table[(path, "class")] = type(module)
        for name, p in module.named_parameters(recurse=False):
            table[(path, "param", name)] = (tuple(p.shape), p.dtype, p.requires_grad)
        for name, b in module.named_buffers(recurse=False):
            table[(path, "buffer", name)] = (tuple(b.shape), b.dtype)
        for name, value in vars(module).items():
            if name.startswith("_") or name == "training":
                continue
            table[(path, "attr", name)] = _plain(value)
    return table


def _plain(value: object) -> object:
    """A comparable description of an attribute; objects compare by identity (a shared config)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, (float, str, type(None))):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_plain(v) for v in value))
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, id(value))
    return ("object", id(value))


@contextmanager
def truncated(model: torch.nn.Module, path: str, keep: int) -> Iterator[None]:
    """The model with the `ModuleList` at `path` cut to its first `keep` layers, restored after."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    full = parent._modules[attr]
    parent._modules[attr] = torch.nn.ModuleList(list(full)[:keep])
    try:
        yield
    finally:
        parent._modules[attr] = full


# -- stamping out the layers -----------------------------------------------------------------
def _counter(name: str) -> tuple[str, int | None, str] | None:
    """(base, counter or None, tail) of an fx-style name: `reshape_10_f32` -> (reshape, 10, _f32)."""
    m = _COUNTER.match(name)
    if m is None:
        return None
    return m.group("base"), None if m.group("num") is None else int(m.group("num")), m.group("tail")


def _renamed(name: str, base_step: dict[str, int], times: int) -> str | None:
    """`name` with its counter moved on by `times` strides of its base; None when it has no
    counter although its base advances per layer (not the form a full capture would give)."""
    parsed = _counter(name)
    if parsed is None:
        return None
    base, num, tail = parsed
    step = base_step.get(base, 0)
    if not step or not times:
        return name
    if num is None:
        return None
    return f"{base}_{num + step * times}{tail}"


def expand(graph: Graph, container: str, count: int) -> Graph | None:
    """The graph of `count` layers from `graph`, which holds the first `PREFIX` layers of
    `container` (see the module docstring); None when it does not have the expected form."""
    found = [b for b in blocks(graph) if b.container == container]
    if [b.index for b in found] != list(range(PREFIX)) or any(
            found[i].stop != found[i + 1].start for i in range(PREFIX - 1)):
        return None
    if any(b.container == container for b in blocks(graph) if b not in found):
        return None
    first, middle, last = found[0], found[1], found[2]
    inputs = {i.name: i for i in graph.inputs}
    if len(middle) != len(last) or signature(graph, middle, first, inputs) != signature(graph, last, middle, inputs):
        return None
    nodes = graph.nodes
    base_step: dict[str, int] = {}
    for a, b in zip(nodes[middle.start:middle.stop], nodes[last.start:last.stop]):
        pa, pb = _counter(a.name), _counter(b.name)
        if pa is None or pb is None or pa[0] != pb[0] or pa[2] != pb[2] or pa[1] is None or pb[1] is None \
                or pb[1] <= pa[1]:
            return None
        if base_step.setdefault(pa[0], pb[1] - pa[1]) != pb[1] - pa[1]:
            return None
    extra = count - PREFIX
    path = last.path

    def weight(name: str, i: int) -> str:
        return name.replace(path, f"{container}.{i}", 1) if name.startswith(path + ".") else \
            name.replace(f".{path}.", f".{container}.{i}.", 1)

    layer_names = {n.name for n in nodes[last.start:last.stop]}
    prev_names = {n.name: j for j, n in enumerate(nodes[middle.start:middle.stop])}
    stamped: list[Node] = list(nodes[:last.stop])
    # where the last traced layer reads the middle one, layer i reads layer i - 1: middle's name -> layer i - 1's
    previous = {m.name: l.name for m, l in zip(nodes[middle.start:middle.stop], nodes[last.start:last.stop])}
    for i in range(PREFIX, count):
        times = i - (PREFIX - 1)
        rename: dict[str, str] = {}
        for n in nodes[last.start:last.stop]:
            new = _renamed(n.name, base_step, times)
            if new is None:
                return None
            rename[n.name] = new
        for n in nodes[last.start:last.stop]:
            operands = []
            for o in n.operands:
                if o in layer_names:
                    operands.append(rename[o])
                elif o in prev_names:
                    operands.append(previous[o])
                elif o in inputs and inputs[o].kind.is_state and weight(o, i) != o:
                    operands.append(weight(o, i))
                else:
                    operands.append(o)
            loc = n.loc.replace(path, f"{container}.{i}", 1) if n.loc else n.loc
            stamped.append(replace(n, name=rename[n.name], operands=tuple(operands), loc=loc))
        previous = {m.name: rename[l.name] for m, l in zip(nodes[middle.start:middle.stop],
                                                          nodes[last.start:last.stop])}
    carried = {l.name: previous[m.name] for m, l in zip(nodes[middle.start:middle.stop], nodes[last.start:last.stop])}
    tail_rename: dict[str, str] = {}
    for n in nodes[last.stop:]:
        new = _renamed(n.name, base_step, extra)
        if new is None:
            return None
        tail_rename[n.name] = new
    for n in nodes[last.stop:]:
        operands = tuple(tail_rename.get(o) or carried.get(o) or o for o in n.operands)
        stamped.append(replace(n, name=tail_rename[n.name], operands=operands))
    outputs = tuple(tail_rename.get(o) or carried.get(o) or o for o in graph.outputs)
    return replace(graph, inputs=_stamped_inputs(graph.inputs, path, container, count, weight),
                   nodes=tuple(stamped), outputs=outputs)


def _stamped_inputs(inputs: tuple[Input, ...], path: str, container: str, count: int, weight) -> tuple[Input, ...]:
    """The inputs with every run of the last traced layer's state followed by the same run
    for each later layer (state-dict order: layer by layer)."""
    out: list[Input] = []
    run: list[Input] = []

    def flush() -> None:
        for i in range(PREFIX, count):
            out.extend(replace(inp, name=weight(inp.name, i),
                               source=weight(inp.source, i) if inp.source else inp.source) for inp in run)
        run.clear()

    for inp in inputs:
        mine = inp.kind.is_state and weight(inp.name, PREFIX) != inp.name
        if mine:
            out.append(inp)
            run.append(inp)
        else:
            flush()
            out.append(inp)
    flush()
    return tuple(out)


def check_state(graph: Graph, model: torch.nn.Module) -> bool:
    """Whether every state input's source names a tensor of the model with the input's shape and dtype."""
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    for inp in graph.state_inputs:
        if inp.source is None:
            continue
        t = named.get(inp.source)
        if t is None or tuple(t.shape) != inp.type.shape or t.dtype != inp.type.dtype.torch:
            return False
    return True
