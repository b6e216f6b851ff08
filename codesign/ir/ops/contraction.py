"""Contractions: matmul, linear, convolution, and the attention named op.

These carry most of a model's FLOPs. Their maps are those of `linalg.matmul` /
`linalg.conv_*`; attention's domain is (batch..., i, j, e) with two contractions (QKᵀ over
d, PV over j), which is what FlashAttention tiles.
"""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, Mapping, Sequence

from codesign.ir.affine import AffineMap, Dim
from codesign.ir.ops.pointwise import broadcast_map, broadcast_shapes, same_dtype
from codesign.ir.ops.registry import (AttrSpec, Call, IterDim, IterKind, OpDef, OpKind,
                                      ShapeError, Structure, register, Template, Trait)
from codesign.ir.types import DType, TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")


# -- matmul: a[..., m, k] @ b[..., k, n], batch dims broadcast ------------------------------
def _matmul_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    a, b = operands
    dtype = same_dtype(operands, "matmul")
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul needs operands of rank >= 2, got {list(a.shape)} and {list(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul contraction sizes differ: {list(a.shape)} @ {list(b.shape)}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), dtype)


def _matmul_structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
    a, b = ops
    nb = res.rank - 2
    n = nb + 3  # batch..., m, n, k
    m_, n_, k_ = Dim(nb), Dim(nb + 1), Dim(nb + 2)
    batch = res.shape[:nb]

    def operand_map(t: TensorType, inner) -> AffineMap:
        outer = broadcast_map(t.shape[:-2], batch).results if t.rank > 2 else ()
        return AffineMap(n, tuple(outer) + inner)

    domain = tuple(IterDim(s) for s in res.shape) + (IterDim(a.shape[-1], IterKind.reduction),)
    return Structure(domain, (operand_map(a, (m_, k_)), operand_map(b, (k_, n_))),
                     AffineMap(n, tuple(Dim(i) for i in range(nb + 2))), "mul-add")


MATMUL = register(OpDef(
    name="matmul", kind=OpKind.contraction, template=Template.gemm, pointer_operands=(0, 1), traits=frozenset({Trait.anchor}), min_operands=2, max_operands=2,
    infer=_matmul_infer, run=lambda call: torch.matmul(*call.args),
    run_into=lambda call, out: torch.matmul(*call.args, out=out),
    structure=_matmul_structure,
    flops=lambda ops, res, at: 2 * res.numel * ops[0].shape[-1],
    doc="a[..., m, k] @ b[..., k, n]"))


# -- linear: x[..., k] · w[n, k]ᵀ + b[n] ------------------------------------------------------
def _linear_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, w, *bias = operands
    dtype = same_dtype(operands, "linear")
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"linear: input {list(x.shape)} does not match weight {list(w.shape)} "
                         f"(weight is [out_features, in_features])")
    if bias and bias[0].shape != (w.shape[0],):
        raise ShapeError(f"linear: bias {list(bias[0].shape)} must be [{w.shape[0]}]")
    return TensorType(x.shape[:-1] + (w.shape[0],), dtype)


def _linear_structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
    x = ops[0]
    n = res.rank + 1
    k_ = Dim(res.rank)
    outer = tuple(Dim(i) for i in range(res.rank - 1))
    maps = [AffineMap(n, outer + (k_,)), AffineMap(n, (Dim(res.rank - 1), k_))]
    if len(ops) == 3:
        maps.append(AffineMap(n, (Dim(res.rank - 1),)))
    domain = tuple(IterDim(s) for s in res.shape) + (IterDim(x.shape[-1], IterKind.reduction),)
    return Structure(domain, tuple(maps), AffineMap(n, outer + (Dim(res.rank - 1),)), "mul-add")


def _linear_into(call: Call, out: torch.Tensor) -> None:
    """x · wᵀ (+ b) written into `out` by one cuBLAS call (addmm / mm with out=)."""
    x, w, *bias = call.args
    rows, dest = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
    if bias:
        torch.addmm(bias[0], rows, w.t(), out=dest)
    else:
        torch.mm(rows, w.t(), out=dest)


register(OpDef(
    name="linear", kind=OpKind.contraction, template=Template.gemm, pointer_operands=(0, 1, 2), traits=frozenset({Trait.anchor}), min_operands=2, max_operands=3,
    infer=_linear_infer, run=lambda call: F.linear(*call.args), run_into=_linear_into, structure=_linear_structure,
    flops=lambda ops, res, at: 2 * res.numel * ops[0].shape[-1],
    doc="x[..., k] · weight[n, k]ᵀ (+ bias[n])"))


# -- conv: x[N, C, *spatial] ⊛ w[F, C/groups, *kernel] ---------------------------------------
CONV_ATTRS = {
    "stride": AttrSpec((tuple,), required=True),
    "padding": AttrSpec((tuple,), required=True),
    "dilation": AttrSpec((tuple,), required=True),
    "groups": AttrSpec((int,), default=1),
}


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool = False) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:  # as torch: the last window must start inside
        out -= 1                                   # the input or its left padding
    return out


def _conv_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    x, w, *bias = operands
    dtype = same_dtype(operands, "conv")
    nsp = x.rank - 2
    if nsp < 1 or w.rank != x.rank:
        raise ShapeError(f"conv: input {list(x.shape)} and weight {list(w.shape)} ranks differ")
    for key in ("stride", "padding", "dilation"):
        if len(attrs[key]) != nsp:
            raise ShapeError(f"conv: {key} {list(attrs[key])} needs {nsp} entries")
    groups = attrs["groups"]
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ShapeError(f"conv: {x.shape[1]} input channels do not match weight {list(w.shape)} "
                         f"with groups={groups}")
    if bias and bias[0].shape != (w.shape[0],):
        raise ShapeError(f"conv: bias {list(bias[0].shape)} must be [{w.shape[0]}]")
    spatial = tuple(conv_out_size(x.shape[2 + i], w.shape[2 + i], attrs["stride"][i],
                                  attrs["padding"][i], attrs["dilation"][i]) for i in range(nsp))
    if any(s <= 0 for s in spatial):
        raise ShapeError(f"conv: output size {list(spatial)} is empty")
    return TensorType((x.shape[0], w.shape[0]) + spatial, dtype)


def _conv_structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
    """Domain (n, f, *out, c, *kernel); groups fold into the channel index."""
    x, w = ops[0], ops[1]
    nsp = x.rank - 2
    cin = w.shape[1]
    n = 2 + nsp + 1 + nsp
    nd, fd = Dim(0), Dim(1)
    outs = [Dim(2 + i) for i in range(nsp)]
    cd = Dim(2 + nsp)
    ks = [Dim(3 + nsp + i) for i in range(nsp)]
    per_group = w.shape[0] // attrs["groups"]
    channel = cd if attrs["groups"] == 1 else (fd // per_group) * cin + cd
    x_map = AffineMap(n, (nd, channel, *(outs[i] * attrs["stride"][i] + ks[i] * attrs["dilation"][i]
                                         - attrs["padding"][i] for i in range(nsp))))
    maps = [x_map, AffineMap(n, (fd, cd, *ks))]
    if len(ops) == 3:
        maps.append(AffineMap(n, (fd,)))
    domain = (tuple(IterDim(s) for s in res.shape) + (IterDim(cin, IterKind.reduction),)
              + tuple(IterDim(k, IterKind.reduction) for k in w.shape[2:]))
    return Structure(domain, tuple(maps), AffineMap(n, (nd, fd, *outs)), "mul-add")


def _conv_run(call: Call) -> torch.Tensor:
    x, w, *bias = call.args
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.dim() - 2]
    return fn(x, w, bias[0] if bias else None, call.attrs["stride"], call.attrs["padding"],
              call.attrs["dilation"], call.attrs["groups"])


register(OpDef(
    name="conv", kind=OpKind.contraction, template=Template.conv, traits=frozenset({Trait.anchor, Trait.may_read_outside}), min_operands=2, max_operands=3,
    infer=_conv_infer, run=_conv_run, structure=_conv_structure,
    flops=lambda ops, res, at: 2 * res.numel * prod(ops[1].shape[1:]),
    attrs=CONV_ATTRS, doc="N-d convolution (1-3 spatial dims), NC* layout, zero padding"))


# -- conv_nhwc: x[N, *spatial, C] ⊛ w[F, C/groups, *kernel] → y[N, *spatial, F] ---------------
def _nhwc_to_nchw(t: TensorType) -> TensorType:
    return TensorType((t.shape[0], t.shape[-1]) + t.shape[1:-1], t.dtype)


def _conv_nhwc_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    """conv's shapes with the channel dim last on the input and the output; the weight keeps
    conv's [F, C/groups, *kernel] (the parameter as the model holds it)."""
    x, *rest = operands
    y = _conv_infer([_nhwc_to_nchw(x), *rest], attrs)
    return TensorType((y.shape[0],) + y.shape[2:] + (y.shape[1],), y.dtype)


def _conv_nhwc_structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
    """Domain (n, *out, f, c, *kernel): conv's, with the output channel after the spatial dims."""
    x, w = ops[0], ops[1]
    nsp = x.rank - 2
    cin = w.shape[1]
    n = 2 + nsp + 1 + nsp
    nd, outs, fd = Dim(0), [Dim(1 + i) for i in range(nsp)], Dim(1 + nsp)
    cd = Dim(2 + nsp)
    ks = [Dim(3 + nsp + i) for i in range(nsp)]
    per_group = w.shape[0] // attrs["groups"]
    channel = cd if attrs["groups"] == 1 else (fd // per_group) * cin + cd
    x_map = AffineMap(n, (nd, *(outs[i] * attrs["stride"][i] + ks[i] * attrs["dilation"][i]
                               - attrs["padding"][i] for i in range(nsp)), channel))
    maps = [x_map, AffineMap(n, (fd, cd, *ks))]
    if len(ops) == 3:
        maps.append(AffineMap(n, (fd,)))
    domain = (tuple(IterDim(s) for s in res.shape) + (IterDim(cin, IterKind.reduction),)
              + tuple(IterDim(k, IterKind.reduction) for k in w.shape[2:]))
    return Structure(domain, tuple(maps), AffineMap(n, (nd, *outs, fd)), "mul-add")


def _conv_nhwc_run(call: Call) -> torch.Tensor:
    x, *rest = call.args
    to_first = (0, x.dim() - 1) + tuple(range(1, x.dim() - 1))
    to_last = (0,) + tuple(range(2, x.dim())) + (1,)
    y = _conv_run(Call([x.permute(to_first), *rest], call.attrs, _nhwc_to_nchw(call.type)))
    return y.permute(to_last).contiguous()


register(OpDef(
    name="conv_nhwc", kind=OpKind.contraction, template=Template.conv,
    traits=frozenset({Trait.anchor, Trait.may_read_outside}), min_operands=2, max_operands=3,
    infer=_conv_nhwc_infer, run=_conv_nhwc_run, structure=_conv_nhwc_structure,
    flops=lambda ops, res, at: 2 * res.numel * prod(ops[1].shape[1:]),
    attrs=CONV_ATTRS, doc="conv with the channel dim last on input and output (NHWC; the weight stays "
                          "[F, C/groups, *kernel]): what the channels-last pass runs on GPU targets"))


# -- attention: softmax(q kᵀ · scale + mask) v ----------------------------------------------
def _attention_infer(operands: Sequence[TensorType], attrs: Mapping[str, object]) -> TensorType:
    q, k, v, *mask = operands
    dtype = same_dtype((q, k, v), "attention")
    if not (q.rank == k.rank == v.rank >= 2):
        raise ShapeError(f"attention: q, k, v ranks differ: {list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"attention: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} do not fit "
                         f"(need q[..., Lq, d], k[..., Lk, d], v[..., Lk, e])")
    if q.rank >= 3 and k.shape[:-3] != q.shape[:-3]:
        raise ShapeError(f"attention: batch dims of q {list(q.shape)} and k {list(k.shape)} differ")
    if q.rank >= 3 and q.shape[-3] % k.shape[-3]:
        raise ShapeError(f"attention: {q.shape[-3]} query heads are not a multiple of {k.shape[-3]} key heads")
    out = q.shape[:-1] + (v.shape[-1],)
    if mask:
        m = mask[0]
        if m.dtype is not DType.i1 and m.dtype != dtype:
            raise ShapeError(f"attention: mask must be i1 or {dtype.value}, got {m.dtype.value}")
        broadcast_shapes(m.shape, q.shape[:-1] + (k.shape[-2],))
    return TensorType(out, dtype)


def _attention_structure(ops: Sequence[TensorType], res: TensorType, attrs) -> Structure:
    """Domain (batch..., i, e, j, d): j and d are reductions (softmax over j, QKᵀ over d)."""
    q, k, v = ops[:3]
    nb = q.rank - 2
    n = nb + 4
    batch = [Dim(i) for i in range(nb)]
    i_, e_, j_, d_ = Dim(nb), Dim(nb + 1), Dim(nb + 2), Dim(nb + 3)
    kv_batch = list(batch)
    if nb >= 1 and k.shape[-3] != q.shape[-3]:  # grouped-query: kv head = q head // group
        kv_batch[nb - 1] = batch[nb - 1] // (q.shape[-3] // k.shape[-3])
    maps = [AffineMap(n, (*batch, i_, d_)), AffineMap(n, (*kv_batch, j_, d_)),
            AffineMap(n, (*kv_batch, j_, e_))]
    if len(ops) == 4:
        scores = q.shape[:-1] + (k.shape[-2],)
        bm = broadcast_map(ops[3].shape, scores)
        sub = {**{idx: batch[idx] for idx in range(nb)}, nb: i_, nb + 1: j_}
        maps.append(AffineMap(n, tuple(sub[r.index] if isinstance(r, Dim) else r for r in bm.results)))
    domain = (tuple(IterDim(s) for s in res.shape) + (IterDim(k.shape[-2], IterKind.reduction),
                                                       IterDim(q.shape[-1], IterKind.reduction)))
    return Structure(domain, tuple(maps), AffineMap(n, (*batch, i_, e_)), "attention")


def library_attention_applies(q: torch.Tensor, k: torch.Tensor, mask: Sequence[torch.Tensor], causal: bool) -> bool:
    """Whether torch's fused attention (F.scaled_dot_product_attention: flash, memory-efficient
    or cuDNN kernels) computes exactly what this op means: no mask (so no row is fully masked,
    which SDPA's fused kernels and this op treat differently) and, when causal, as many keys as
    queries (SDPA aligns a causal mask top-left, this op bottom-right)."""
    return not mask and q.dim() >= 3 and (not causal or q.shape[-2] == k.shape[-2])


def _attention_run(call: Call) -> torch.Tensor:
    """On CUDA, where it means the same (`library_attention_applies`), the vendor's fused
    kernels: what a kernel's library form (the choice against the generated flash kernel)
    and the fallback run. Elsewhere the reference: scores, softmax in f32, weighted sum."""
    q, k, v, *mask = call.args
    if q.is_cuda and library_attention_applies(q, k, mask, call.attrs["causal"]):
        return sdpa(q, k, v, call.attrs["scale"], call.attrs["causal"])
    if q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)
        v = v.repeat_interleave(group, dim=-3)
    scale = call.attrs["scale"]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if call.attrs["causal"]:
        lq, lk = q.shape[-2], k.shape[-2]
        keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask:
        m = mask[0]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
    wide = torch.promote_types(scores.dtype, torch.float32)  # f16 / bf16 in f32; f64 stays f64
    probs = torch.softmax(scores.to(wide), dim=-1)
    # a row whose every key is masked attends to nothing: 0, as SDPA's `_safe_softmax` gives
    probs = probs.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
    return torch.matmul(probs.to(q.dtype), v)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """F.scaled_dot_product_attention with grouped key / value heads repeated (GQA)."""
    if k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


register(OpDef(
    name="attention", kind=OpKind.contraction, template=Template.attention, pointer_operands=(0, 1, 2), traits=frozenset({Trait.anchor}), min_operands=3, max_operands=4,
    infer=_attention_infer, run=_attention_run, structure=_attention_structure,
    flops=lambda ops, res, at: (2 * prod(ops[0].shape) * ops[1].shape[-2]
                                + 2 * res.numel * ops[1].shape[-2]) // (2 if at["causal"] else 1),
    attrs={"scale": AttrSpec((float,), required=True), "causal": AttrSpec((bool,), default=False)},
    doc="softmax(q kᵀ·scale [+ mask | causal]) v; operands q, k, v, optional mask "
        "(i1: keep where true; float: added); fewer kv heads than q heads means grouped-query; "
        "a query row whose every key is masked gives 0 (SDPA's semantics)"))
