"""ATen → codesign IR: one small converter per ATen op.

Converters see the fx node's arguments with tensors already mapped to IR value names
(`Val`), and the fx node's fake result (`meta["val"]`) for dtypes torch has promoted.
They normalise what ATen leaves implicit — negative dims, `alpha`, scalar operands,
type promotion — so that IR ops stay strict and simple.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from codesign.ir.builder import GraphBuilder
from codesign.ir.types import DType, TensorType


class Val(str):
    """An IR value name standing for a tensor argument (plain `str` args are attributes)."""


@dataclass(frozen=True)
class Ctx:
    """What a converter may read about the fx node it converts."""

    b: GraphBuilder
    node: torch.fx.Node
    hint: str

    @property
    def out(self) -> TensorType:
        return result_type(self.node.meta["val"])

    def t(self, v: Val) -> TensorType:
        return self.b.types[v]

    def add(self, op: str, operands: Sequence[str], attrs: dict | None = None, **kw) -> Val:
        return Val(self.b.add(op, list(operands), attrs, hint=kw.pop("hint", self.hint), **kw))


class ConversionError(Exception):
    """A supported op used in a way the converter cannot express."""


def result_type(val: Any) -> TensorType:
    return TensorType(tuple(int(s) for s in val.shape), DType.from_torch(val.dtype))


Converter = Callable[..., Any]
CONVERTERS: dict[str, Converter] = {}


KEPT_WHOLE: set[str] = set()
"""ATen composites (`packet.overload`) whose converter wants them undecomposed."""


def converts(*names: str, keep: Sequence[str] = ()):
    """Register a converter for ATen ops `names`; `keep` lists the overloads
    (`"hardswish.default"`) that capture must not decompose, so they reach it whole."""
    def deco(fn: Converter) -> Converter:
        for n in names:
            CONVERTERS[n] = fn
        KEPT_WHOLE.update(keep)
        return fn
    return deco


class ConverterRegistrationError(ValueError):
    """`register_converter` was given an op torch does not have, or one codesign converts already."""


_USER_CONVERTERS: set[str] = set()  # packets registered from user code (only those may be unregistered)


def _packet_and_overload(aten_op: Any) -> tuple[str, str | None]:
    """("expm1", None) for "aten.expm1" / "expm1" / torch.ops.aten.expm1; ("expm1", "default")
    for "aten.expm1.default" / torch.ops.aten.expm1.default. Checks that torch has the op."""
    if isinstance(aten_op, torch._ops.OpOverload):
        if aten_op.namespace != "aten":
            raise ConverterRegistrationError(f"{aten_op} is not an ATen op; register ATen ops (torch.ops.aten.*)")
        return aten_op._overloadpacket.__name__, aten_op._overloadname
    if isinstance(aten_op, torch._ops.OpOverloadPacket):
        return aten_op.__name__, None
    if not isinstance(aten_op, str) or not aten_op:
        raise ConverterRegistrationError(f"expected an ATen op name such as 'aten.expm1' or torch.ops.aten.expm1, "
                                         f"got {aten_op!r}")
    parts = aten_op.split(".")
    if parts[0] == "aten":
        parts = parts[1:]
    if not 1 <= len(parts) <= 2:
        raise ConverterRegistrationError(f"{aten_op!r} is not an ATen op name: write 'aten.expm1' or "
                                         "'aten.expm1.default'")
    packet = getattr(torch.ops.aten, parts[0], None)
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        import difflib
        close = difflib.get_close_matches(parts[0], [n for n in dir(torch.ops.aten) if not n.startswith("__")], 3)
        hint = f" (closest: {', '.join('aten.' + c for c in close)})" if close else ""
        raise ConverterRegistrationError(f"torch has no ATen op {aten_op!r}{hint}")
    if len(parts) == 2 and parts[1] not in packet.overloads():
        raise ConverterRegistrationError(f"aten.{parts[0]} has no overload {parts[1]!r} "
                                         f"(overloads: {', '.join(packet.overloads())})")
    return parts[0], parts[1] if len(parts) == 2 else None


def register_converter(aten_op: Any, fn: Converter | None = None, *, keep: bool = False,
                       replace: bool = False):
    """Teach capture an ATen op from user code, without editing codesign (also a decorator).

    `fn(ctx, *args, **kwargs)` receives the fx node's arguments, tensors as IR value names
    (`Val`), and builds IR ops with `ctx.add(op, operands, attrs)` (`tensor_operand(ctx, 1.0,
    dtype)` for a scalar; `ctx.t(v)` an operand's type, `ctx.out` the result's), returning the
    result's value (a tuple for an op with several outputs). It converts every overload of
    the op (`aten.expm1`, `torch.ops.aten.expm1`); `keep=True` (with an overload named, e.g.
    "aten.hardswish.default", or its `.default`) keeps a composite op that torch.export
    would decompose whole, so it reaches `fn`. An op codesign converts already is refused
    unless `replace=True`. A converter registered here can be removed with
    `unregister_converter`."""
    packet, overload = _packet_and_overload(aten_op)

    def deco(f: Converter) -> Converter:
        if not callable(f):
            raise ConverterRegistrationError(f"the converter for aten.{packet} must be callable, got {f!r}")
        if packet in CONVERTERS and packet not in _USER_CONVERTERS and not replace:
            raise ConverterRegistrationError(f"codesign already converts aten.{packet}; pass replace=True to "
                                             "use yours instead")
        CONVERTERS[packet] = f
        _USER_CONVERTERS.add(packet)
        if keep:
            KEPT_WHOLE.add(f"{packet}.{overload or 'default'}")
        return f

    return deco if fn is None else deco(fn)


def unregister_converter(aten_op: Any) -> None:
    """Remove a converter `register_converter` added (built-in ones cannot be removed)."""
    packet, _ = _packet_and_overload(aten_op)
    if packet not in _USER_CONVERTERS:
        raise ConverterRegistrationError(f"aten.{packet} has no converter registered from user code")
    _USER_CONVERTERS.discard(packet)
    del CONVERTERS[packet]
    KEPT_WHOLE.difference_update({k for k in KEPT_WHOLE if k.split(".")[0] == packet})


def norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def norm_dims(dims, rank: int) -> tuple[int, ...]:
    if rank == 0:  # a scalar's only dims are 0 and -1, and reducing over them reduces nothing
        return ()
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return tuple(sorted(norm_dim(d, rank) for d in dims))


def tensor_operand(c: Ctx, x: Any, dtype: DType) -> Val:
    """A tensor or Python scalar as an IR value of element type `dtype`."""
    if isinstance(x, Val):
        return Val(c.b.cast(x, dtype))
    if isinstance(x, (bool, int, float)):
        return Val(c.b.constant(x, dtype))
    raise ConversionError(f"expected a tensor or a scalar, got {type(x).__name__}")


def compute_dtype(c: Ctx, *args: Any) -> DType:
    """torch's promotion of the operands (tensors and scalars)."""
    probes = []
    for a in args:
        if isinstance(a, Val):
            t = c.t(a)
            probes.append(torch.empty((0,) if t.rank else (), dtype=t.dtype.torch, device="meta"))
        else:
            probes.append(a)
    if len(probes) == 1:
        p = probes[0]
        return DType.from_torch(p.dtype) if isinstance(p, torch.Tensor) else c.out.dtype
    dtype = torch.result_type(probes[0], probes[1])
    for p in probes[2:]:
        dtype = torch.promote_types(dtype, torch.result_type(probes[0], p))
    return DType.from_torch(dtype)


# -- pointwise ---------------------------------------------------------------------------
def _binary(op: str, *, compare: bool = False):
    def convert(c: Ctx, a, b_, *, alpha=1, **_):
        dtype = compute_dtype(c, a, b_) if compare else c.out.dtype
        lhs, rhs = tensor_operand(c, a, dtype), tensor_operand(c, b_, dtype)
        if alpha != 1:
            rhs = c.add("mul", [rhs, tensor_operand(c, alpha, dtype)])
        return c.add(op, [lhs, rhs])
    return convert


for _aten, _op in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("maximum", "maximum"),
                   ("minimum", "minimum"), ("remainder", "remainder"), ("pow", "pow"),
                   ("logical_and", "logical_and"), ("logical_or", "logical_or")):
    converts(_aten)(_binary(_op))


def _bitwise(op: str):
    """`&`, `|` on bool tensors are the logical ops; on integers they are bitwise, which the
    IR has no primitive for: refused rather than computed as a logical op."""
    def convert(c: Ctx, a, b_, **_):
        if c.out.dtype is not DType.i1:
            name = c.node.target.__name__.split(".")[0]
            raise ConversionError(f"{name} on {c.out.dtype.value} operands: integer bitwise ops are not "
                                  "supported yet (only on bool tensors, as logical ops)")
        return _binary(op)(c, a, b_)
    return convert


for _aten, _op in (("bitwise_and", "logical_and"), ("__and__", "logical_and"),
                   ("bitwise_or", "logical_or"), ("__or__", "logical_or")):
    converts(_aten)(_bitwise(_op))
for _aten in ("eq", "ne", "lt", "le", "gt", "ge"):
    converts(_aten)(_binary(_aten, compare=True))


@converts("rsub")
def _rsub(c: Ctx, a, b_, alpha=1):
    return _binary("sub")(c, b_, a, alpha=alpha)


@converts("div")
def _div(c: Ctx, a, b_, *, rounding_mode=None):
    dtype = c.out.dtype
    if rounding_mode is not None:
        dtype = compute_dtype(c, a, b_)
    out = c.add("div", [tensor_operand(c, a, dtype), tensor_operand(c, b_, dtype)],
                {"rounding_mode": rounding_mode} if rounding_mode else None)
    return Val(c.b.cast(out, c.out.dtype))


def _unary(op: str):
    def convert(c: Ctx, x, **_):
        return c.add(op, [tensor_operand(c, x, c.out.dtype)])
    return convert


for _name in ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "tanh", "sigmoid", "erf",
              "sin", "cos", "floor", "ceil", "sign", "relu", "silu"):
    converts(_name)(_unary(_name))
converts("hardswish", keep=("hardswish.default",))(_unary("hardswish"))
converts("logaddexp", keep=("logaddexp.default",))(_binary("logaddexp"))
converts("remainder", keep=("remainder.Scalar",))(_binary("remainder"))  # else decomposed to fmod


@converts("leaky_relu")
def _leaky_relu(c: Ctx, x, negative_slope=0.01):
    """x where x > 0, else x * slope: eager's definition (NaN stays NaN, -0 stays -0)."""
    dtype = c.out.dtype
    x = tensor_operand(c, x, dtype)
    scaled = c.add("mul", [x, tensor_operand(c, negative_slope, dtype)])
    return c.add("where", [c.add("gt", [x, tensor_operand(c, 0, dtype)]), x, scaled])


@converts("logical_not", "bitwise_not")
def _not(c: Ctx, x):
    if c.t(x).dtype is not DType.i1 and "logical" in c.node.target.__name__:  # not x: x == 0
        return c.add("eq", [x, tensor_operand(c, 0, c.t(x).dtype)])
    if c.t(x).dtype is not DType.i1:
        raise ConversionError("bitwise_not on integer tensors is not supported (only on bool)")
    return c.add("logical_not", [x])


@converts("gelu")
def _gelu(c: Ctx, x, approximate="none"):
    return c.add("gelu", [x], {"approximate": approximate})


@converts("clamp", "hardtanh", "clamp_min", "clamp_max")
def _clamp(c: Ctx, x, min=None, max=None):
    name = c.node.target.__name__.split(".")[0]
    if name == "clamp_max":
        min, max = None, min
    x = Val(c.b.cast(x, c.out.dtype))
    if isinstance(min, Val) or isinstance(max, Val):  # tensor bounds: maximum / minimum
        if min is not None:
            x = c.add("maximum", [x, tensor_operand(c, min, c.out.dtype)])
        if max is not None:
            x = c.add("minimum", [x, tensor_operand(c, max, c.out.dtype)])
        return x
    return c.add("clamp", [x], {"min": min, "max": max})


@converts("where")
def _where(c: Ctx, cond, a, b_):
    dtype = c.out.dtype
    return c.add("where", [tensor_operand(c, cond, DType.i1), tensor_operand(c, a, dtype),
                           tensor_operand(c, b_, dtype)])


@converts("_to_copy", "to")
def _to_copy(c: Ctx, x, *args, **_):
    return Val(c.b.cast(x, c.out.dtype))


@converts("clone", "alias", "contiguous", "detach", "lift_fresh_copy", "lift_fresh")
def _identity(c: Ctx, x, *args, **_):
    return x


@converts("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout")
def _dropout(c: Ctx, x, p=0.5, train=False, *_, **__):
    name = c.node.target.__name__.split(".")[0]
    if train is None:
        train = True  # native_dropout(x, p, train=None) drops
    if train and p:
        raise ConversionError(f"{name}(p={p}) in training mode drops activations at random, which compiled "
                              "code cannot reproduce: call model.eval()")
    return (x, None) if name == "native_dropout" else x


@converts("tril", "triu")
def _tril(c: Ctx, x, diagonal=0):
    return c.add(c.node.target.__name__.split(".")[0], [x], {"diagonal": diagonal})


@converts("masked_fill")
def _masked_fill(c: Ctx, x, mask, value):
    return c.add("where", [mask, tensor_operand(c, value, c.out.dtype), x])


# -- sources -----------------------------------------------------------------------------
@converts("scalar_tensor", "full", "full_like", "zeros", "ones", "zeros_like", "ones_like",
          "new_zeros", "new_ones", "empty", "empty_like")
def _full(c: Ctx, *args, **_):
    name = c.node.target.__name__.split(".")[0]
    if name == "scalar_tensor":
        value = args[0]
    elif name in ("full", "full_like"):
        value = args[1]
    else:  # zeros / ones; `empty` is filled with zeros so that runs are deterministic
        value = 1 if "ones" in name else 0
    return Val(c.b.constant(value, c.out.dtype, c.out.shape))


@converts("arange")
def _arange(c: Ctx, *args, **kw):
    nums = [int(a) if isinstance(a, bool) else a for a in args if isinstance(a, (int, float))]
    start, step = (0, 1) if len(nums) == 1 else (nums[0], nums[2] if len(nums) > 2 else 1)
    if not c.out.dtype.is_float:  # eager counts in the result's type: start and step truncated first
        start, step = int(start), int(step)
    return c.add("iota", [], {"start": start, "step": step}, type=c.out)


@converts("linspace", keep=("linspace.default", "linspace.Tensor_Tensor", "linspace.Tensor_Scalar",
                            "linspace.Scalar_Tensor"))
def _linspace(c: Ctx, start, end, steps, **_):
    """Eager's rule: `start + step·i` for the first half, `end − step·(steps−1−i)` for the rest, so
    both ends are exact. Integer results are refused: eager computes them in double and
    truncates, where a value that lands on an integer is one rounding away from the one below."""
    dtype = c.out.dtype
    if not dtype.is_float:
        raise ConversionError(f"linspace with an integer dtype ({dtype.value}) is not supported: eager rounds "
                              "in double precision; compute it in a float dtype and cast the result")
    steps = int(steps)
    if steps <= 1:
        return c.add("expand", [Val(c.b.reshape(tensor_operand(c, start, dtype), (1,)))], {"shape": c.out.shape}) \
            if steps == 1 else Val(c.b.constant(0, dtype, c.out.shape))
    first, last = tensor_operand(c, start, dtype), tensor_operand(c, end, dtype)
    first, last = (Val(c.b.reshape(v, ())) for v in (first, last))
    step = c.add("div", [c.add("sub", [last, first]), tensor_operand(c, float(steps - 1), dtype)])
    index = c.add("iota", [], {"start": 0, "step": 1}, type=TensorType((steps,), dtype))
    back = c.add("iota", [], {"start": steps - 1, "step": -1}, type=TensorType((steps,), dtype))
    rising = c.add("add", [first, c.add("mul", [step, index])])
    falling = c.add("sub", [last, c.add("mul", [step, back])])
    return c.add("where", [c.add("lt", [index, tensor_operand(c, float(steps // 2), dtype)]), rising, falling])


# -- reductions --------------------------------------------------------------------------
def _reduction(op: str):
    def convert(c: Ctx, x, dim=None, keepdim=False, *, dtype=None, **_):
        rank = c.t(x).rank
        if op in ("sum", "mean", "prod") and dtype is None and c.t(x).dtype is not c.out.dtype:
            x = Val(c.b.cast(x, c.out.dtype))
        elif dtype is not None:
            x = Val(c.b.cast(x, DType.from_torch(dtype)))
        return c.add(op, [x], {"dims": norm_dims(dim, rank), "keepdim": bool(keepdim)})
    return convert


for _aten, _op in (("sum", "sum"), ("mean", "mean"), ("amax", "amax"), ("amin", "amin"),
                   ("any", "any"), ("prod", "prod")):
    converts(_aten)(_reduction(_op))


@converts("var")
def _var(c: Ctx, x, dim=None, *, correction=None, keepdim=False, unbiased=None):
    corr = 1 if correction is None and unbiased is None else (correction if correction is not None else int(unbiased))
    return c.add("var", [x], {"dims": norm_dims(dim, c.t(x).rank), "keepdim": bool(keepdim),
                              "correction": corr})


@converts("argmax", "argmin")
def _argmax(c: Ctx, x, dim=None, keepdim=False):
    if dim is None or c.t(x).rank == 0:
        x = Val(c.b.reshape(x, (c.t(x).numel,)))
        dim = 0
    out = c.add(c.node.target.__name__.split(".")[0], [x],
                {"dim": norm_dim(dim, c.t(x).rank), "keepdim": bool(keepdim)})
    return Val(c.b.reshape(out, c.out.shape))


@converts("cumsum")
def _cumsum(c: Ctx, x, dim, *, dtype=None):
    x = Val(c.b.cast(x, c.out.dtype))
    if c.t(x).rank == 0:  # a scalar is its own prefix sum
        return x
    return c.add("cumsum", [x], {"dim": norm_dim(dim, c.t(x).rank)})


@converts("softmax", "_softmax", "log_softmax", "_log_softmax")
def _softmax(c: Ctx, x, dim, *rest, **_):
    op = "log_softmax" if "log" in c.node.target.__name__ else "softmax"
    x = Val(c.b.cast(x, c.out.dtype))
    if c.t(x).rank == 0:  # a scalar is its own row
        return Val(c.b.reshape(c.add(op, [Val(c.b.reshape(x, (1,)))], {"dim": 0}), ()))
    return c.add(op, [x], {"dim": norm_dim(dim, c.t(x).rank)})


# -- contractions ------------------------------------------------------------------------
@converts("linear")
def _linear(c: Ctx, x, w, bias=None):
    return c.add("linear", [x, w] + ([bias] if bias is not None else []))


@converts("mm", "bmm", "matmul")
def _matmul(c: Ctx, a, b_):
    ta, tb = c.t(a), c.t(b_)
    if ta.rank == 1 or tb.rank == 1:
        a2 = Val(c.b.reshape(a, (1,) + ta.shape)) if ta.rank == 1 else a
        b2 = Val(c.b.reshape(b_, tb.shape + (1,))) if tb.rank == 1 else b_
        return Val(c.b.reshape(c.add("matmul", [a2, b2]), c.out.shape))
    return c.add("matmul", [a, b_])


@converts("addmm", "baddbmm")
def _addmm(c: Ctx, bias, a, b_, *, beta=1, alpha=1):
    prod_ = c.add("matmul", [a, b_])
    dtype = c.out.dtype
    if alpha != 1:
        prod_ = c.add("mul", [prod_, tensor_operand(c, alpha, dtype)])
    if beta == 0:
        return prod_
    if beta != 1:
        bias = c.add("mul", [bias, tensor_operand(c, beta, dtype)])
    return c.add("add", [prod_, bias])


@converts("scaled_dot_product_attention")
def _sdpa(c: Ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
    if dropout_p:
        raise ConversionError("attention dropout is not supported (capture models in eval mode)")
    scale = 1.0 / math.sqrt(c.t(q).shape[-1]) if scale is None else float(scale)
    operands = [q, k, v]
    lq, lk = c.t(q).shape[-2], c.t(k).shape[-2]
    if is_causal and lq != lk:
        # SDPA aligns its causal mask top-left; the IR's `causal` is bottom-right (as for a
        # KV cache), so an unequal-length causal SDPA carries an explicit mask instead
        if attn_mask is not None:
            raise ConversionError("scaled_dot_product_attention with both attn_mask and is_causal")
        ones = Val(c.b.constant(True, DType.i1, (lq, lk)))
        attn_mask, is_causal = c.add("tril", [ones], {"diagonal": 0}, hint="causal_mask"), False
    if attn_mask is not None:
        mask_t = c.t(attn_mask)
        operands.append(attn_mask if mask_t.dtype is DType.i1 else Val(c.b.cast(attn_mask, c.t(q).dtype)))
    return c.add("attention", operands, {"scale": scale, "causal": bool(is_causal)}, hint="attention")


@converts("embedding")
def _embedding(c: Ctx, weight, indices, *rest, **_):
    return c.add("embedding", [weight, indices])


@converts("index_select")
def _index_select(c: Ctx, x, dim, index):
    return c.add("index_select", [x, index], {"dim": norm_dim(dim, c.t(x).rank)})


@converts("gather")
def _gather(c: Ctx, x, dim, index, *, sparse_grad=False):
    return c.add("gather", [x, index], {"dim": norm_dim(dim, c.t(x).rank)})


@converts("index")
def _index(c: Ctx, x, indices):
    lead = 0
    while lead < len(indices) and indices[lead] is None:
        lead += 1
    rest = list(indices[lead:])
    if any(i is None for i in rest):
        raise ConversionError("index with non-consecutive index tensors is not supported")
    return c.add("index", [x, *rest], {"dim": lead})


@converts("convolution", "conv2d", "conv1d", "conv3d", "_convolution")
def _convolution(c: Ctx, x, w, bias=None, stride=(1,), padding=(0,), dilation=(1,), *rest, groups=1, **_):
    name = c.node.target.__name__.split(".")[0]
    nsp = c.t(x).rank - 2
    if name in ("convolution", "_convolution"):
        transposed, _output_padding, groups = rest[0], rest[1], rest[2]
        if transposed:
            raise ConversionError("transposed convolution is not supported yet")
    elif rest:
        groups = rest[0]
    if isinstance(padding, str):
        raise ConversionError(f"padding={padding!r} is not supported; give explicit padding")

    def expand(v):
        v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
        return v * nsp if len(v) == 1 else v
    return c.add("conv", [x, w] + ([bias] if bias is not None else []),
                 {"stride": expand(stride), "padding": expand(padding), "dilation": expand(dilation),
                  "groups": int(groups)})


def _pool_attrs(kernel, stride, padding, dilation=1, ceil_mode=False):
    def pair(v):
        v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
        return v * 2 if len(v) == 1 else v
    return {"kernel": pair(kernel), "stride": pair(stride if stride else kernel),
            "padding": pair(padding), "dilation": pair(dilation), "ceil_mode": bool(ceil_mode)}


def _unbatched(c: Ctx, x: Val, pool: Callable[[Val], Val]) -> Val:
    """A 2-d pool of `x`; an unbatched (C, H, W) input is pooled as a batch of one, as eager does."""
    shape = c.t(x).shape
    if len(shape) != 3:
        return pool(x)
    out = pool(Val(c.b.reshape(x, (1, *shape))))
    return Val(c.b.reshape(out, c.t(out).shape[1:]))


@converts("max_pool2d_with_indices", "max_pool2d")
def _max_pool(c: Ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    attrs = _pool_attrs(kernel, stride, padding, dilation, ceil_mode)
    if "indices" not in c.node.target.__name__:
        return _unbatched(c, x, lambda v: c.add("max_pool", [v], attrs))
    if not any(user.target is GETITEM and user.args[1] == 1 for user in c.node.users):
        return _unbatched(c, x, lambda v: c.add("max_pool", [v], attrs)), None  # the usual case: no indices
    from codesign.frontend.pool_indices import max_pool_indices
    pooled: dict[str, Val] = {}

    def pool(v: Val) -> Val:
        pooled["values"] = c.add("max_pool", [v], attrs)
        pooled["indices"] = max_pool_indices(c, v, pooled["values"], attrs)
        return pooled["values"]
    out = _unbatched(c, x, pool)
    indices = pooled["indices"]
    if c.t(indices).rank != c.t(out).rank:  # an unbatched input: drop the batch of one
        indices = Val(c.b.reshape(indices, c.t(indices).shape[1:]))
    return out, indices


@converts("avg_pool2d")
def _avg_pool(c: Ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    if divisor_override is not None:
        raise ConversionError(f"avg_pool2d with divisor_override={divisor_override} is not supported; "
                              "leave it out (divide by the window size) or scale the result yourself")
    attrs = _pool_attrs(kernel, stride, padding, 1, ceil_mode)
    attrs["count_include_pad"] = bool(count_include_pad)
    return _unbatched(c, x, lambda v: c.add("avg_pool", [v], attrs))


@converts("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def _adaptive_avg_pool(c: Ctx, x, output_size):
    h, w = c.t(x).shape[-2:]
    oh, ow = output_size
    if (oh, ow) == (1, 1):
        return _unbatched(c, x, lambda v: c.add("mean", [v], {"dims": (2, 3), "keepdim": True}))
    if h % oh or w % ow:
        raise ConversionError(f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow} is not an even split")
    attrs = _pool_attrs((h // oh, w // ow), (h // oh, w // ow), 0)
    return _unbatched(c, x, lambda v: c.add("avg_pool", [v], attrs))


# -- normalisation -------------------------------------------------------------------------
@converts("layer_norm", "native_layer_norm")
def _layer_norm(c: Ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    operands = [x]
    if weight is not None or bias is not None:
        operands.append(weight if weight is not None else
                        Val(c.b.constant(1.0, c.t(x).dtype, tuple(normalized_shape))))
    if bias is not None:
        operands.append(bias)
    out = c.add("layer_norm", operands, {"normalized_rank": len(normalized_shape), "eps": float(eps)})
    return (out, None, None) if "native" in c.node.target.__name__ else out


@converts("rms_norm")
def _rms_norm(c: Ctx, x, normalized_shape, weight=None, eps=None):
    eps = torch.finfo(c.t(x).dtype.torch).eps if eps is None else eps
    return c.add("rms_norm", [x] + ([weight] if weight is not None else []),
                 {"normalized_rank": len(normalized_shape), "eps": float(eps)})


@converts("group_norm", "native_group_norm")
def _group_norm(c: Ctx, x, *args):
    native = "native" in c.node.target.__name__
    if native:
        weight, bias, _n, _c, _hw, groups, eps = args
    else:
        groups, weight, bias, eps = (list(args) + [None, None, None])[:4]
        eps = 1e-5 if eps is None else eps
    operands = [x]
    if weight is not None or bias is not None:
        operands.append(weight if weight is not None else Val(c.b.constant(1.0, c.t(x).dtype, (c.t(x).shape[1],))))
    if bias is not None:
        operands.append(bias)
    out = c.add("group_norm", operands, {"groups": int(groups), "eps": float(eps)})
    return (out, None, None) if native else out


@converts("_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit",
          "native_batch_norm", "_native_batch_norm_legit_functional")
def _batch_norm(c: Ctx, x, weight, bias, running_mean, running_var=None, *rest):
    name = c.node.target.__name__.split(".")[0]
    if isinstance(running_mean, bool):  # the `no_stats` overload: (x, weight, bias, training, momentum, eps)
        raise ConversionError("batch_norm without running statistics is not supported")
    if name == "batch_norm":
        training, _momentum, eps = rest[0], rest[1], rest[2]
    elif name in ("_native_batch_norm_legit", "native_batch_norm", "_native_batch_norm_legit_functional"):
        training, _momentum, eps = rest[0], rest[1], rest[2]
    else:
        training, eps = False, rest[1]
    if training:
        raise ConversionError("batch_norm in training mode (batch statistics, running-statistics updates) "
                              "is not supported: call model.eval()")
    if running_mean is None or running_var is None:
        raise ConversionError("batch_norm without running statistics is not supported")
    operands = [x, running_mean, running_var]
    if weight is not None or bias is not None:
        operands.append(weight if weight is not None else Val(c.b.constant(1.0, c.t(x).dtype, (c.t(x).shape[1],))))
    if bias is not None:
        operands.append(bias)
    out = c.add("batch_norm", operands, {"eps": float(eps)})
    return out if name == "batch_norm" else (out, None, None)


# -- layout --------------------------------------------------------------------------------
@converts("view", "_unsafe_view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze",
          "view_copy", "_reshape_alias", "unsafe_view")
def _reshape(c: Ctx, x, *args, **_):
    return Val(c.b.reshape(x, c.out.shape))


@converts("permute")
def _permute(c: Ctx, x, dims):
    rank = c.t(x).rank
    perm = tuple(norm_dim(d, rank) for d in dims)
    if perm == tuple(range(rank)):
        return x
    return c.add("permute", [x], {"perm": perm})


@converts("transpose", "t", "numpy_T")
def _transpose(c: Ctx, x, dim0=0, dim1=1):
    rank = c.t(x).rank
    if rank < 2:
        return x
    perm = list(range(rank))
    d0, d1 = norm_dim(dim0, rank), norm_dim(dim1, rank)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return c.add("permute", [x], {"perm": tuple(perm)})


@converts("expand", "expand_as", "broadcast_to")
def _expand(c: Ctx, x, *args, **_):
    if c.t(x).shape == c.out.shape:
        return x
    return c.add("expand", [x], {"shape": c.out.shape})


@converts("repeat")
def _repeat(c: Ctx, x, repeats):
    t = c.t(x)
    lead = len(repeats) - t.rank
    shape = (1,) * lead + t.shape
    x = Val(c.b.reshape(x, shape))
    inter = []
    for s, r in zip(shape, repeats):
        inter += [r, s]
    x = Val(c.b.reshape(x, tuple(v for s in shape for v in (1, s))))
    x = c.add("expand", [x], {"shape": tuple(inter)})
    return Val(c.b.reshape(x, c.out.shape))


def _slice_value(c: Ctx, x: Val, dim: int, start, end, step) -> Val:
    size = c.t(x).shape[dim]
    start = 0 if start is None else start
    end = size if end is None else end
    start = max(0, min(size, start + size if start < 0 else start))
    end = max(start, min(size, end + size if end < 0 else end))
    if (start, end, step) == (0, size, 1):
        return x
    return c.add("slice", [x], {"dim": dim, "start": start, "end": end, "step": int(step)})


@converts("slice")
def _slice(c: Ctx, x, dim=0, start=None, end=None, step=1):
    return _slice_value(c, x, norm_dim(dim, c.t(x).rank), start, end, step)


@converts("select")
def _select(c: Ctx, x, dim, index):
    dim = norm_dim(dim, c.t(x).rank)
    size = c.t(x).shape[dim]
    index = index + size if index < 0 else index
    piece = _slice_value(c, x, dim, index, index + 1, 1)
    return Val(c.b.reshape(piece, c.out.shape))


@converts("split_with_sizes", "split", "chunk", "unbind", "tensor_split")
def _split(c: Ctx, x, arg, dim=0):
    name = c.node.target.__name__.split(".")[0]
    if name == "unbind":
        arg, dim = None, arg if isinstance(arg, int) else 0
    rank = c.t(x).rank
    dim = norm_dim(dim, rank)
    size = c.t(x).shape[dim]
    if name == "unbind":
        sizes = [1] * size
    elif name == "chunk":
        each = -(-size // arg)
        sizes = [min(each, size - i) for i in range(0, size, each)]
    elif isinstance(arg, int):
        sizes = [min(arg, size - i) for i in range(0, size, arg)]
    else:
        sizes = list(arg)
    outs, start = [], 0
    for s in sizes:
        piece = _slice_value(c, x, dim, start, start + s, 1)
        if name == "unbind":
            t = c.t(piece)
            piece = Val(c.b.reshape(piece, t.shape[:dim] + t.shape[dim + 1:]))
        outs.append(piece)
        start += s
    return tuple(outs)


@converts("cat", "concat", "concatenate")
def _cat(c: Ctx, tensors, dim=0):
    nonempty = [t for t in tensors if c.t(t).numel > 0]
    if not nonempty:
        raise ConversionError("concatenation of empty tensors only")
    tensors = nonempty
    dtype = c.out.dtype
    tensors = [Val(c.b.cast(t, dtype)) for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    return c.add("concat", tensors, {"dim": norm_dim(dim, c.out.rank)})


@converts("stack")
def _stack(c: Ctx, tensors, dim=0):
    dim = norm_dim(dim, c.out.rank)
    pieces = []
    for t in tensors:
        s = c.t(t).shape
        pieces.append(Val(c.b.reshape(t, s[:dim] + (1,) + s[dim:])))
    return pieces[0] if len(pieces) == 1 else c.add("concat", pieces, {"dim": dim})


@converts("constant_pad_nd", "pad")
def _pad(c: Ctx, x, pad, value=0.0, *rest):
    if rest and rest[0] not in (None, "constant"):
        raise ConversionError(f"pad mode {rest[0]!r} is not supported (only constant)")
    rank = c.t(x).rank
    pads = [0] * (2 * rank)
    for i in range(len(pad) // 2):  # torch lists the last dim first
        d = rank - 1 - i
        pads[2 * d], pads[2 * d + 1] = pad[2 * i], pad[2 * i + 1]
    value = 0.0 if value is None else value
    return c.add("pad", [x], {"pads": tuple(pads), "value": float(value) if c.t(x).dtype.is_float else int(value)})


@converts("pixel_shuffle")
def _pixel_shuffle(c: Ctx, x, factor):
    return c.add("pixel_shuffle", [x], {"factor": int(factor)})


@converts("pixel_unshuffle")
def _pixel_unshuffle(c: Ctx, x, factor):
    return c.add("pixel_unshuffle", [x], {"factor": int(factor)})


@converts("upsample_nearest2d", "upsample_nearest1d", "upsample_nearest3d",
          keep=("upsample_nearest1d.vec", "upsample_nearest1d.default", "upsample_nearest3d.vec",
                "upsample_nearest3d.default"))
def _upsample(c: Ctx, x, *args, **_):
    t, out = c.t(x), c.out
    k = t.rank - 2
    scales = []
    for i in range(k):
        s_in, s_out = t.shape[2 + i], out.shape[2 + i]
        if s_out % s_in:
            raise ConversionError(f"upsample_nearest from {s_in} to {s_out} is not an integer scale")
        scales.append(s_out // s_in)
    return c.add("upsample_nearest", [x], {"scales": tuple(scales)})


# -- dropped ---------------------------------------------------------------------------------
DROPPED = frozenset({"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size",
                     "_assert_async", "sym_constrain_range", "_print"})

GETITEM = operator.getitem


@converts("codesign.moe")
def _moe(c: Ctx, x, router, gate_up, down, top_k, normalize, activation):
    from codesign.frontend.moe import expert_region
    tokens = c.t(x)
    flat = tokens.with_shape((tokens.numel // tokens.shape[-1], tokens.shape[-1]))
    region = expert_region(flat, c.t(gate_up), c.t(down), activation)
    xs = Val(c.b.reshape(x, flat.shape))
    out = c.add("moe", [xs, router, gate_up, down],
                {"num_experts": c.t(router).shape[0], "top_k": int(top_k), "normalize": bool(normalize)},
                regions=(region,), hint="moe")
    return Val(c.b.reshape(out, tokens.shape))
