"""Mixture-of-experts blocks captured as one `moe` op.

Routed experts are data-dependent (which tokens go where is known only at run time), so
torch.export cannot trace them. During capture we swap the block's forward for a call to
the custom op `codesign::moe`, which export keeps as one node; the converter then builds
the IR `moe` node with the expert body as its region. Recognised: blocks with a top-k
router `gate` and experts stored as stacked `gate_up_proj [E, 2I, H]` / `down_proj [E, H, I]`
(transformers' Mixtral, Qwen-MoE and friends), optionally with a shared expert and its gate
(Qwen2-MoE: `shared_expert`, `shared_expert_gate`), which stay ordinary traced code around the
op. A block with any other submodule is refused: its forward may combine it in a way the
op does not.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
import torch.nn.functional as F

from codesign.ir.builder import GraphBuilder
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


class MoeBlockError(ValueError):
    """A block that looks like a stacked MoE block but holds parts codesign cannot model."""


# The submodules a recognised block may have, and what its forward does with them: the
# routed experts (`gate`, `experts`), plus (Qwen2-MoE) a shared expert every token runs
# through, scaled by sigmoid(shared_expert_gate(x)) when there is a gate, added to the result.
KNOWN_PARTS = frozenset({"gate", "experts", "shared_expert", "shared_expert_gate"})


def check_moe_block(path: str, module: torch.nn.Module) -> None:
    """Raise `MoeBlockError` unless `_leaf_forward` computes what `module.forward` does."""
    where = f"MoE block {path or '<top>'} ({type(module).__name__})"
    extra = sorted(set(dict(module.named_children())) - KNOWN_PARTS)
    if extra:
        raise MoeBlockError(f"{where} has submodule(s) {', '.join(extra)} besides the router and the experts; "
                            "codesign does not know how its forward combines them (known: "
                            f"{', '.join(sorted(KNOWN_PARTS))}): extend codesign/frontend/moe.py")
    if hasattr(module, "shared_expert_gate") and not hasattr(module, "shared_expert"):
        raise MoeBlockError(f"{where} has a shared_expert_gate but no shared_expert")
    if module.training and getattr(module, "jitter_noise", 0):
        raise MoeBlockError(f"{where} is in training mode with jitter_noise={module.jitter_noise} (random); "
                            "call model.eval()")
    _activation_name(module.experts.act_fn)


def check_moe_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The recognised MoE blocks of `model` (path, module), each checked (`check_moe_block`)."""
    blocks = [(name, module) for name, module in model.named_modules() if is_stacked_moe(module)]
    for name, module in blocks:
        check_moe_block(name, module)
    return blocks


def _leaf_forward(self: torch.nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    top_k = int(getattr(self, "top_k", None) or getattr(self.gate, "top_k"))
    normalize = bool(getattr(self.gate, "norm_topk_prob", getattr(self, "norm_topk_prob", True)))
    activation = _activation_name(self.experts.act_fn)
    out = torch.ops.codesign.moe(hidden_states, self.gate.weight, self.experts.gate_up_proj,
                                 self.experts.down_proj, top_k, normalize, activation)
    shared = getattr(self, "shared_expert", None)
    if shared is not None:
        tokens = hidden_states.reshape(-1, hidden_states.shape[-1])
        extra = shared(tokens)
        gate = getattr(self, "shared_expert_gate", None)
        if gate is not None:
            extra = torch.sigmoid(gate(tokens)) * extra
        out = out + extra.reshape(out.shape)
    return out


@contextlib.contextmanager
def moe_leaf_modules(model: torch.nn.Module) -> Iterator[list[str]]:
    """Within the block, recognised MoE blocks of `model` call `codesign::moe`; restored after.
    A block that looks stacked but holds parts `_leaf_forward` does not model raises
    `MoeBlockError` (before anything is patched)."""
    blocks = check_moe_blocks(model)
    patched = []
    for name, module in blocks:
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
