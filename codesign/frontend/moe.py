"""Mixture-of-experts blocks captured as one `moe` op.

Routed experts are data-dependent (which tokens go where is known only at run time), so
torch.export cannot trace them. During capture we swap the block's forward for a call to
the custom op `codesign::moe`, which export keeps as one node; the converter then builds
the IR `moe` node with the expert body as its region. Recognised: blocks with a top-k
router `gate` and experts stored as stacked `gate_up_proj [E, 2I, H]` / `down_proj [E, H, I]`
(transformers' Mixtral, Qwen-MoE and friends).
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
import torch.nn.functional as F

from codesign.frontend.builder import GraphBuilder
from codesign.ir.graph import Graph, Input
from codesign.ir.ops.moe import route
from codesign.ir.types import TensorType

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


def gated_expert(tokens: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, activation: str) -> torch.Tensor:
    """One expert: act(x·Wgᵀ) ⊙ (x·Wuᵀ) · Wdᵀ, with Wg and Wu stacked in `gate_up`."""
    gate, up = F.linear(tokens, gate_up).chunk(2, dim=-1)
    return F.linear(ACTIVATIONS[activation](gate) * up, down)


@torch.library.custom_op("codesign::moe", mutates_args=())
def moe_op(x: torch.Tensor, router: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
           top_k: int, normalize: bool, activation: str) -> torch.Tensor:
    tokens = x.reshape(-1, x.shape[-1])
    ids, weights = route(tokens, router, top_k, normalize)
    out = torch.zeros_like(tokens)
    for e in range(router.shape[0]):
        rows, slot = torch.where(ids == e)
        if rows.numel():
            y = gated_expert(tokens[rows], gate_up[e], down[e], activation)
            out.index_add_(0, rows, y * weights[rows, slot, None])
    return out.reshape(x.shape)


@moe_op.register_fake
def _moe_fake(x, router, gate_up, down, top_k, normalize, activation):
    return torch.empty_like(x)


def _activation_name(module: torch.nn.Module) -> str:
    name = type(module).__name__.lower()
    for key in ACTIVATIONS:
        if key in name:
            return key
    raise ValueError(f"MoE expert activation {type(module).__name__} is not supported "
                     f"(supported: {', '.join(ACTIVATIONS)})")


def is_stacked_moe(module: torch.nn.Module) -> bool:
    experts = getattr(module, "experts", None)
    gate = getattr(module, "gate", None)
    return (experts is not None and gate is not None and isinstance(getattr(experts, "gate_up_proj", None), torch.Tensor)
            and isinstance(getattr(experts, "down_proj", None), torch.Tensor)
            and isinstance(getattr(gate, "weight", None), torch.Tensor))


def _leaf_forward(self: torch.nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    top_k = int(getattr(self, "top_k", None) or getattr(self.gate, "top_k"))
    normalize = bool(getattr(self.gate, "norm_topk_prob", getattr(self, "norm_topk_prob", True)))
    activation = _activation_name(self.experts.act_fn)
    return torch.ops.codesign.moe(hidden_states, self.gate.weight, self.experts.gate_up_proj,
                                  self.experts.down_proj, top_k, normalize, activation)


@contextlib.contextmanager
def moe_leaf_modules(model: torch.nn.Module) -> Iterator[list[str]]:
    """Within the block, recognised MoE blocks of `model` call `codesign::moe`; restored after."""
    patched = []
    for name, module in model.named_modules():
        if is_stacked_moe(module):
            patched.append((module, module.__dict__.get("forward")))
            module.forward = types.MethodType(_leaf_forward, module)
    try:
        yield [n for n, m in model.named_modules() if is_stacked_moe(m)]
    finally:
        for module, original in patched:
            if original is None:
                del module.forward
            else:
                module.forward = original


def expert_region(tokens: TensorType, gate_up: TensorType, down: TensorType, activation: str) -> Graph:
    """The IR body of one gated expert (the `moe` op's region)."""
    b = GraphBuilder("expert")
    x = b.add_input(Input("tokens", tokens))
    wgu = b.add_input(Input("gate_up", gate_up.with_shape(gate_up.shape[1:])))
    wd = b.add_input(Input("down", down.with_shape(down.shape[1:])))
    inter = gate_up.shape[1] // 2
    h = b.add("linear", [x, wgu], hint="gate_up")
    gate = b.add("slice", [h], {"dim": tokens.rank - 1, "start": 0, "end": inter, "step": 1}, hint="gate")
    up = b.add("slice", [h], {"dim": tokens.rank - 1, "start": inter, "end": 2 * inter, "step": 1}, hint="up")
    act = b.add(activation, [gate], hint="act")
    prod = b.add("mul", [act, up], hint="gated")
    out = b.add("linear", [prod, wd], hint="down")
    return b.finish([out])
