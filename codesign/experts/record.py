"""``record``: run a model's MoE routers on given inputs and write the expert trace.

Forward pre-hooks on every stacked MoE block (``codesign.frontend.moe.is_stacked_moe``)
take the hidden states and call the same routing function the ``moe`` op uses. Step
``t`` is token position ``t``; its experts in a layer are the union, over the batch rows,
of the top-k experts chosen for that position (what one decoding step of the batch needs).
"""

from __future__ import annotations

from typing import Sequence

import torch

from codesign.frontend.moe import is_stacked_moe
from codesign.ir.ops.moe import route

from .trace import Trace, TraceError

__all__ = ["record"]


def record(model: torch.nn.Module, inputs: Sequence[torch.Tensor], *, source: str = "") -> Trace:
    """Run ``model(*inputs)`` once and return the routers' choices as a :class:`Trace`."""
    blocks = [(name, m) for name, m in model.named_modules() if is_stacked_moe(m)]
    if not blocks:
        raise TraceError(f"{type(model).__name__} has no stacked MoE block (router `gate` + stacked experts)")
    chosen: list[torch.Tensor] = []  # per layer, ids [batch, seq, k]
    top_ks: list[int] = []

    def hook(module: torch.nn.Module, args: tuple) -> None:
        hidden = args[0]
        top_k = int(getattr(module, "top_k", None) or getattr(module.gate, "top_k"))
        normalize = bool(getattr(module.gate, "norm_topk_prob", getattr(module, "norm_topk_prob", True)))
        tokens = hidden.reshape(-1, hidden.shape[-1])
        ids, _ = route(tokens, module.gate.weight, top_k, normalize)
        shape = hidden.shape[:-1] if hidden.dim() > 1 else (1,)
        chosen.append(ids.reshape(*shape, top_k) if hidden.dim() > 2 else ids.reshape(1, -1, top_k))
        top_ks.append(top_k)

    handles = [m.register_forward_pre_hook(hook) for _, m in blocks]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    if len(chosen) != len(blocks):
        raise TraceError(f"{len(blocks)} MoE blocks but {len(chosen)} router calls: a block ran twice or not at all")
    num_experts = int(blocks[0][1].gate.weight.shape[0])
    seq = chosen[0].shape[1]
    steps = tuple(tuple(tuple(sorted(set(ids[:, t].flatten().tolist()))) for ids in chosen) for t in range(seq))
    experts = blocks[0][1].experts
    nbytes = sum(p.numel() * p.element_size() // p.shape[0] for p in (experts.gate_up_proj, experts.down_proj))
    return Trace(num_experts, steps, num_layers=len(blocks), top_k=top_ks[0], expert_bytes=int(nbytes),
                 source=source or f"record({type(model).__name__})",
                 meta={"blocks": [name for name, _ in blocks], "batch": int(chosen[0].shape[0])})
