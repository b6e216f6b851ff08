"""The `moe` op: a routed mixture of experts, with the expert body as a region.

Operands: tokens x[..., H], the router weight [E, H], then the experts' weights stacked
along a leading expert dim ([E, ...] each). The single region is one expert's body: its
inputs are the routed tokens [T, H] and that expert's slice of every stacked weight; its
output is [T, H]. Expert e is thus the slice e of each stacked weight — the unit the expert
scheduler moves between memory tiers. Routing is softmax → top-k (→ renormalise).
"""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineMap
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, OpDef, OpKind, ShapeError,
                                      Structure, register, Template)
from codesign.ir.types import TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


def _moe_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, router, *stacked = operands
    experts, top_k = attrs["num_experts"], attrs["top_k"]
    if router.shape != (experts, x.shape[-1]):
        raise ShapeError(f"moe: router weight {list(router.shape)} must be [{experts}, {x.shape[-1]}]")
    if not 1 <= top_k <= experts:
        raise ShapeError(f"moe: top_k={top_k} must be in 1..{experts}")
    for w in stacked:
        if w.rank < 1 or w.shape[0] != experts:
            raise ShapeError(f"moe: stacked expert weight {list(w.shape)} must lead with {experts} experts")
    return x


def route(x: torch.Tensor, router: torch.Tensor, top_k: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert ids and their weights for each token (rows of x)."""
    probs = torch.softmax(torch.nn.functional.linear(x, router).float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return ids, weights.to(x.dtype)


def _moe_run(call: Call) -> torch.Tensor:
    x, router, *stacked = call.args
    (expert,) = call.regions
    tokens = x.reshape(-1, x.shape[-1])
    ids, weights = route(tokens, router, call.attrs["top_k"], call.attrs["normalize"])
    out = torch.zeros_like(tokens)
    for e in range(call.attrs["num_experts"]):
        rows, slot = torch.where(ids == e)
        if rows.numel() == 0:
            continue
        # the region's type is [T, H] for all T tokens: run it on every token, keep the routed rows
        y = expert(tokens, *(w[e] for w in stacked))[rows]
        out.index_add_(0, rows, y * weights[rows, slot, None])
    return out.reshape(x.shape)


def expert_bytes(operands: Sequence[TensorType]) -> int:
    """Bytes of one expert's weights: its slice of every stacked weight."""
    return sum(t.nbytes // t.shape[0] for t in operands[2:])


register(OpDef(
    name="moe", kind=OpKind.region, template=Template.moe,  min_operands=2, max_operands=None,
    infer=_moe_infer, run=_moe_run,
    structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape),
        (AffineMap.identity(res.rank),) + (None,) * (len(ops) - 1),
        AffineMap.identity(res.rank), "moe"),
    flops=lambda ops, res, at: 2 * prod(ops[0].shape) * at["num_experts"],  # router; experts via region
    attrs={"num_experts": AttrSpec((int,), required=True), "top_k": AttrSpec((int,), required=True),
           "normalize": AttrSpec((bool,), default=True)},
    regions=1, doc="routed mixture of experts; region = one expert's body"))
